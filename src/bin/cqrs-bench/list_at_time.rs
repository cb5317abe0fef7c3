//! Run 7: `ListUsersAtTime`, a page of 100 at random times, at 1,000,000 users with 4 events
//! each (issue 14: p99 <= 2 ms). The store is built in this process, straight through the
//! engine and the projections (no pipes, no JSON lines: building it over stdin would take most
//! of the run), in memory and on SQLite; each query is then read and answered by the node's own
//! registry (params read, page answered, JSON written), and every page is checked against the
//! history this run generated.
//!
//! The history: users `user-0`, `user-1`, ... created in that order (so their ids are not in
//! creation order: `user-10` sorts before `user-2`), each with 4 events: created, renamed,
//! email changed, then deleted (1 in 10) or updated. At each step (1 ms apart) either the next
//! user is created (1 in 4) or a random user with events left gets its next one, so creations
//! are spread over the whole history and every user's events over a good part of it.

use std::path::Path;
use std::time::{Duration, Instant};

use cqrs_node::domain::user::{Attributes, User, UserCommand};
use cqrs_node::engine::{Execute, Repository};
use cqrs_node::projection::{self, Projection};
use cqrs_node::store::{
    EventStore, ExpectedVersion, MemoryStore, SqliteStore, StoreRead, StoreWrite,
};
use cqrs_node::timestamp::Timestamp;
use serde_json::{json, Value};

use crate::programs::progress;
use crate::report::{ms, pct, thousands, us, Report};
use crate::{Bench, Res};

/// Events per user.
const EVENTS: u32 = 4;
/// Commands per transaction while building.
const BATCH: usize = 2_000;
/// 2024-01-01T00:00:00Z.
const START: i64 = 1_704_067_200_000_000_000;
const STEP: i64 = 1_000_000;
/// The page asked for.
const PAGE: usize = 100;

pub fn run(b: &Bench, r: &mut Report) -> Res<()> {
    let Bench { a, s, dir, .. } = *b;
    let users = s.list_at_time_users;
    if users == 0 || a.list_at_time_queries == 0 {
        return Ok(());
    }
    let history = History::new(users, a.seed);
    r.line(format!(
        "## ListUsersAtTime: a page of {PAGE} at {} random times, {} users with {EVENTS} events each",
        a.list_at_time_queries,
        thousands(users as f64)
    ));
    r.line("");
    r.line(format!(
        "Built in this process through the engine and the projections ({BATCH} commands per \
         transaction); each query read and answered by the registry (params, page, JSON); every \
         page checked against the generated history. {} of the users are deleted as their last \
         event.",
        thousands((users / 10) as f64)
    ));
    r.line("");
    r.line("| store | building (events/s) | page p50 | p90 | p99 | max | users per page (mean) |");
    r.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut p99s = Vec::new();
    {
        let mut store = MemoryStore::new();
        let t = measure(
            &mut store,
            &history,
            a.list_at_time_queries,
            a.seed,
            "in memory",
        )?;
        p99s.push(t.line(r, "in memory"));
    }
    {
        let path = dir.join("list-at-time.db");
        let _ = std::fs::remove_file(&path);
        let mut store = SqliteStore::open(&path).map_err(|e| e.to_string())?;
        let t = measure(
            &mut store,
            &history,
            a.list_at_time_queries,
            a.seed,
            "SQLite",
        )?;
        p99s.push(t.line(r, "SQLite"));
        drop(store);
        remove_db(&path);
    }
    r.line("");
    let worst = p99s.iter().copied().max().unwrap_or_default();
    r.target(
        format!(
            "ListUsersAtTime, page of {PAGE} at {} users x {EVENTS} events: p99 <= 2 ms",
            thousands(users as f64)
        ),
        format!("p99 {} (worst store)", ms(worst)),
        worst <= Duration::from_millis(2),
    );
    Ok(())
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// The generated history: for each user, the steps of its events.
struct History {
    /// (user, its event number 0..4), in time order; event i is at START + i ms.
    events: Vec<(u32, u8)>,
    /// Each user's event times (steps), by user.
    times: Vec<[u32; EVENTS as usize]>,
    /// The user numbers in id order.
    by_id: Vec<u32>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn id(u: u32) -> String {
    format!("user-{u}")
}

impl History {
    fn new(users: u64, seed: u64) -> Self {
        let users = users as u32;
        let mut rng = Rng(seed ^ 0x5eed_0001);
        let mut events = Vec::with_capacity(users as usize * EVENTS as usize);
        let mut times = vec![[0u32; EVENTS as usize]; users as usize];
        let mut pending: Vec<(u32, u8)> = Vec::new();
        let mut created = 0u32;
        while created < users || !pending.is_empty() {
            let create = created < users && (pending.is_empty() || rng.below(4) == 0);
            let (u, k) = if create {
                created += 1;
                pending.push((created - 1, 1));
                (created - 1, 0)
            } else {
                let i = rng.below(pending.len() as u64) as usize;
                let (u, k) = pending[i];
                if k + 1 == EVENTS as u8 {
                    pending.swap_remove(i);
                } else {
                    pending[i].1 += 1;
                }
                (u, k)
            };
            times[u as usize][k as usize] = events.len() as u32;
            events.push((u, k));
        }
        let mut by_id: Vec<u32> = (0..users).collect();
        by_id.sort_by_cached_key(|&u| id(u));
        Self {
            events,
            times,
            by_id,
        }
    }

    fn command(u: u32, k: u8) -> UserCommand {
        let id = id(u);
        match k {
            0 => {
                let mut attributes = Attributes::new();
                attributes.insert("id".into(), Value::String(id));
                attributes.insert("name".into(), Value::String(format!("N{u}")));
                UserCommand::CreateUser { attributes }
            }
            1 => UserCommand::RenameUser {
                id,
                name: format!("R{u}"),
            },
            2 => UserCommand::ChangeUserEmail {
                id,
                email: format!("u{u}@x.org"),
            },
            _ if u.is_multiple_of(10) => UserCommand::DeleteUser { id },
            _ => {
                let mut changes = Attributes::new();
                changes.insert("team".into(), json!(format!("t{}", u % 7)));
                UserCommand::UpdateUser { id, changes }
            }
        }
    }

    /// The state of user `u` at step `t` (`None`: not created yet, or deleted).
    fn state_at(&self, u: u32, t: i64) -> Option<Value> {
        let times = &self.times[u as usize];
        let done = times.iter().filter(|&&s| i64::from(s) <= t).count();
        if done == 0 || (done == 4 && u.is_multiple_of(10)) {
            return None;
        }
        let mut v =
            json!({"id": id(u), "name": if done >= 2 { format!("R{u}") } else { format!("N{u}") }});
        if done >= 3 {
            v["email"] = json!(format!("u{u}@x.org"));
        }
        if done >= 4 {
            v["team"] = json!(format!("t{}", u % 7));
        }
        Some(v)
    }

    /// The page a query at step `t` must get: users, and next.
    fn page_at(&self, t: i64) -> Value {
        let mut users = Vec::new();
        let mut more = false;
        for &u in &self.by_id {
            if let Some(state) = self.state_at(u, t) {
                if users.len() == PAGE {
                    more = true;
                    break;
                }
                users.push(state);
            }
        }
        let next = match (more, users.last()) {
            (true, Some(last)) => last["id"].clone(),
            _ => Value::Null,
        };
        json!({"users": users, "next": next})
    }
}

struct Timings {
    build_rate: f64,
    sorted: Vec<Duration>,
    mean_users: f64,
}

impl Timings {
    /// Its line of the table; returns its p99.
    fn line(&self, r: &mut Report, store: &str) -> Duration {
        let s = &self.sorted;
        r.line(format!(
            "| {store} | {} | {} | {} | {} | {} | {:.1} |",
            thousands(self.build_rate),
            us(pct(s, 0.5)),
            us(pct(s, 0.9)),
            us(pct(s, 0.99)),
            us(*s.last().expect("queries ran")),
            self.mean_users
        ));
        pct(s, 0.99)
    }
}

fn measure<S: EventStore>(
    store: &mut S,
    history: &History,
    queries: u64,
    seed: u64,
    label: &str,
) -> Res<Timings> {
    let registry = cqrs_node::registry();
    let projections: Vec<Box<dyn Projection>> = registry.projections();
    let mut repo = Repository::<User>::new(100_000, 100);
    let err = |e: &dyn std::fmt::Display| format!("{label}: {e}");
    progress(format!(
        "ListUsersAtTime: building {} events ({label})",
        thousands(history.events.len() as f64)
    ));
    let started = Instant::now();
    for chunk in history.events.chunks(BATCH) {
        let mut tx = store.begin().map_err(|e| err(&e))?;
        for &(u, k) in chunk {
            let step = history.times[u as usize][k as usize];
            let run = Execute {
                command: History::command(u, k),
                expected: ExpectedVersion::Exact(u64::from(k)),
                time: Some(Timestamp(START + i64::from(step) * STEP)),
            };
            repo.execute(&mut tx, run, |tx, state, events| {
                projection::apply_command(&projections, tx, events, state)
            })
            .map_err(|e| err(&e))?;
        }
        let head = tx.head().map_err(|e| err(&e))?;
        projection::set_checkpoints(&projections, &mut tx, head).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
    }
    let build_rate = history.events.len() as f64 / started.elapsed().as_secs_f64();
    progress(format!(
        "ListUsersAtTime: {} queries ({label})",
        thousands(queries as f64)
    ));
    let mut rng = Rng(seed ^ 0x5eed_0002);
    let last = history.events.len() as u64;
    let mut times = Vec::with_capacity(queries as usize);
    let mut listed = 0usize;
    for _ in 0..queries {
        // A random instant of the history (between events, or at one), in nanoseconds.
        let t = START + rng.below(last * STEP as u64 + STEP as u64) as i64 - STEP / 2;
        let given = Timestamp(t).to_string();
        let params = json!({"timestamp": given, "limit": PAGE});
        let Value::Object(params) = params else {
            unreachable!()
        };
        let began = Instant::now();
        let query = registry
            .query("ListUsersAtTime", params)
            .map_err(|e| err(&format!("{e:?}")))?;
        let data = registry.answer(&*store, &query).map_err(|e| err(&e))?;
        times.push(began.elapsed());
        let got: Value = serde_json::from_str(data.get()).map_err(|e| err(&e))?;
        // Steps are whole milliseconds: the last step at or before t.
        let step = (t - START).div_euclid(STEP);
        let mut want = history.page_at(step);
        want["at_time"] = json!(given);
        if got != want {
            return Err(err(&format!(
                "ListUsersAtTime at {given} differs from the history:\n got {got}\nwant {want}"
            )));
        }
        listed += got["users"].as_array().map_or(0, Vec::len);
    }
    times.sort();
    Ok(Timings {
        build_rate,
        sorted: times,
        mean_users: listed as f64 / queries as f64,
    })
}
