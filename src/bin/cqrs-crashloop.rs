//! `cqrs-crashloop`: kills a durable node with SIGKILL over and over, and checks after every
//! restart that nothing acknowledged was lost.
//!
//! Each round:
//!
//! 1. starts `cqrs` (the binary next to this one, or `--cqrs`) on the store in `--data-dir`,
//!    with random tuning (`--max-batch`, `--snapshot-every`, `--cache-size`);
//! 2. checks the restarted node: the `GetUserHistory` and `GetUser` of the users touched in the
//!    previous round (and a random sample of older ones) equal the model's, and a new command is
//!    accepted;
//! 3. pipelines a random run of commands (creates, renames with the right `expectedVersion`,
//!    updates, email changes, deletes, and commands that must fail: stale versions, unknown or
//!    deleted users, bad values), checking each reply against the model as it comes;
//! 4. kills the node with SIGKILL after a random number of replies or a random delay (now and
//!    then it closes stdin instead, and the node must exit 0 with every command answered);
//! 5. runs `cqrs check` (log without holes, contiguous versions, projections equal to a replay:
//!    exit 0), then reads the whole log and checks it is exactly the model's log for some prefix
//!    of the commands sent: every acknowledged command's event is there exactly once, in order,
//!    and an unacknowledged one is there whole or not at all. The model then forgets the
//!    unacknowledged commands that did not make it.
//!
//! Every command carries its own timestamp, so the model can predict each event exactly.
//! Exit status 0 when every round passed; 1 and a description at the first violation.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use cqrs_node::store::sqlite_file as store_file;
use cqrs_node::store::{SqliteStore, StoreRead};
use cqrs_node::timestamp::Timestamp;
use serde_json::{json, Map, Value};

/// Kill a durable cqrs node at random moments and check that nothing acknowledged is lost.
#[derive(Parser, Debug)]
#[command(name = "cqrs-crashloop")]
struct Args {
    /// How many times to kill the node.
    #[arg(long, default_value_t = 50)]
    kills: u64,
    /// Seed of every random choice (the same seed replays the same commands and choices;
    /// the kill moments still depend on timing).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The store's directory; must be empty or absent (it is kept for inspection).
    #[arg(long)]
    data_dir: PathBuf,
    /// The node binary (default: `cqrs` next to this program).
    #[arg(long)]
    cqrs: Option<PathBuf>,
    /// Most commands sent to one node before it is killed.
    #[arg(long, default_value_t = 300)]
    max_commands: usize,
    /// Longest random delay before a kill, in milliseconds.
    #[arg(long, default_value_t = 30)]
    max_delay_ms: u64,
    /// Print one line per round.
    #[arg(long)]
    verbose: bool,
}

const NODE: &str = "n1";
/// 2024-01-01T00:00:00Z; command `s` happens `s` milliseconds later.
const BASE_NANOS: i64 = 1_704_067_200_000_000_000;
/// How long one node may take to answer before the harness calls it stuck.
const STALL: Duration = Duration::from_secs(60);

/// splitmix64: small, seedable, good enough to pick commands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// One event as the model predicts it and as the store must hold it.
#[derive(Clone, Debug, PartialEq)]
struct Ev {
    user: String,
    version: u64,
    event_type: &'static str,
    nanos: i64,
    data: Map<String, Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Status {
    #[default]
    Absent,
    Active,
    Deleted,
}

#[derive(Clone, Debug, Default)]
struct UserModel {
    status: Status,
    attrs: Map<String, Value>,
    version: u64,
    events: Vec<usize>,
}

impl UserModel {
    /// Applies `ev`, which stands at index `at` of the model's log.
    fn evolve(&mut self, ev: &Ev, at: usize) {
        match ev.event_type {
            "UserCreated" => {
                self.status = Status::Active;
                self.attrs = ev.data.clone();
            }
            "UserDeleted" => self.status = Status::Deleted,
            _ => {
                for (k, v) in &ev.data {
                    self.attrs.insert(k.clone(), v.clone());
                }
            }
        }
        self.version = ev.version;
        self.events.push(at);
    }
}

/// What the node must answer to a command.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// Success; the event it appends, if any.
    Ok(Option<Ev>),
    /// Failure with this code (and `current_version` for a conflict).
    Fail(&'static str, Option<u64>),
}

/// The model: the log every applied command has produced so far, and the users derived from it.
#[derive(Default)]
struct Model {
    log: Vec<Ev>,
    users: HashMap<String, UserModel>,
    /// Every id ever used by a command, oldest first.
    ids: Vec<String>,
    next_user: u64,
    /// Milliseconds after BASE of the next command.
    clock: u64,
}

impl Model {
    fn user(&self, id: &str) -> UserModel {
        self.users.get(id).cloned().unwrap_or_default()
    }

    fn apply(&mut self, ev: Ev) {
        let u = self.users.entry(ev.user.clone()).or_default();
        u.evolve(&ev, self.log.len());
        self.log.push(ev);
    }

    /// Forgets every event from `len` on (commands that were not acknowledged and did not make
    /// it into the store), and recomputes the users they touched.
    fn truncate(&mut self, len: usize) {
        let mut affected = BTreeSet::new();
        while self.log.len() > len {
            let ev = self.log.pop().expect("len < log.len()");
            if let Some(u) = self.users.get_mut(&ev.user) {
                u.events.pop();
            }
            affected.insert(ev.user);
        }
        for id in affected {
            let events = self.users.remove(&id).unwrap_or_default().events;
            let mut u = UserModel::default();
            for i in events {
                u.evolve(&self.log[i], i);
            }
            self.users.insert(id, u);
        }
    }

    fn recent_id(&mut self, rng: &mut Rng) -> Option<String> {
        if self.ids.is_empty() {
            return None;
        }
        // Mostly recent users (likely alive), sometimes any.
        let n = self.ids.len() as u64;
        let i = if rng.chance(80) {
            n - 1 - rng.below(n.min(40))
        } else {
            rng.below(n)
        };
        Some(self.ids[i as usize].clone())
    }

    /// A random command, as the wire's `command` object, and what it must produce. The
    /// model applies it at once: replies and the log are checked against this order.
    fn next_command(&mut self, rng: &mut Rng) -> (Value, Expect) {
        self.clock += 1;
        let nanos = BASE_NANOS + self.clock as i64 * 1_000_000;
        let time = Timestamp(nanos).to_string();
        let roll = rng.below(100);
        let target = self.recent_id(rng);
        let (kind, mut payload, expected_version, expect) = match (roll, target) {
            (0..=24, _) | (_, None) => self.create_new(rng, nanos),
            (25..=27, Some(id)) => {
                // An id already used: taken, unless its creation was lost in a crash.
                let p = json!({"id": id, "name": "again"});
                let u = self.user(&id);
                let e = match u.status {
                    Status::Absent => Expect::Ok(Some(self.ev(&id, "UserCreated", nanos, &p))),
                    _ => Expect::Fail("already_exists", None),
                };
                ("CreateUser", p, None, e)
            }
            (28..=49, Some(id)) => {
                let name = format!("name-{}", rng.below(6));
                let p = json!({"id": id, "name": name});
                let u = self.user(&id);
                // Mostly the right expectedVersion; sometimes a stale one.
                let stale = rng.chance(15);
                let ev = if stale {
                    u.version + 1 + rng.below(2)
                } else {
                    u.version
                };
                let e = self.decide(&id, nanos, Some(ev), |u| {
                    (u.attrs.get("name") != Some(&json!(name)))
                        .then(|| ("UserRenamed", json!({"name": name})))
                });
                ("RenameUser", p, Some(ev), e)
            }
            (50..=69, Some(id)) => {
                let mut p = Map::new();
                p.insert("id".into(), json!(id));
                let mut changes = Map::new();
                if rng.chance(50) {
                    changes.insert("city".into(), json!(format!("city-{}", rng.below(4))));
                }
                if rng.chance(40) {
                    changes.insert("age".into(), json!(rng.below(3)));
                }
                if rng.chance(20) {
                    changes.insert("name".into(), json!(format!("name-{}", rng.below(6))));
                }
                if rng.chance(5) {
                    changes.insert("email".into(), json!("not-an-address"));
                }
                p.extend(changes.clone());
                let e = if changes.get("email") == Some(&json!("not-an-address")) {
                    Expect::Fail("validation_failed", None)
                } else {
                    self.decide(&id, nanos, None, |u| {
                        let changed: Map<String, Value> = changes
                            .iter()
                            .filter(|(k, v)| u.attrs.get(*k) != Some(v))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        (!changed.is_empty()).then(|| ("UserUpdated", Value::Object(changed)))
                    })
                };
                ("UpdateUser", Value::Object(p), None, e)
            }
            (70..=81, Some(id)) => {
                let email = format!("{}@example.org", rng.below(5));
                let p = json!({"id": id, "email": email});
                let e = self.decide(&id, nanos, None, |u| {
                    (u.attrs.get("email") != Some(&json!(email)))
                        .then(|| ("UserEmailChanged", json!({"email": email})))
                });
                ("ChangeUserEmail", p, None, e)
            }
            (82..=89, Some(id)) => {
                let u = self.user(&id);
                let exact = rng.chance(50).then_some(u.version);
                let e = self.decide(&id, nanos, exact, |_| Some(("UserDeleted", json!({}))));
                ("DeleteUser", json!({"id": id}), exact, e)
            }
            (90..=94, _) => {
                let id = format!("ghost-{}", rng.below(1000));
                let e = Expect::Fail("not_found", None);
                ("RenameUser", json!({"id": id, "name": "x"}), None, e)
            }
            (_, Some(id)) => {
                let e = Expect::Fail("validation_failed", None);
                ("RenameUser", json!({"id": id, "name": "   "}), None, e)
            }
        };
        if let Expect::Ok(Some(ev)) = &expect {
            self.apply(ev.clone());
        }
        let mut command = json!({"type": kind, "payload": Value::Null, "timestamp": time});
        command["payload"] = std::mem::take(&mut payload);
        if let Some(v) = expected_version {
            command["expectedVersion"] = json!(v);
        }
        (command, expect)
    }

    fn create_new(
        &mut self,
        rng: &mut Rng,
        nanos: i64,
    ) -> (&'static str, Value, Option<u64>, Expect) {
        let id = format!("u{}", self.next_user);
        self.next_user += 1;
        self.ids.push(id.clone());
        let mut p = Map::new();
        p.insert("id".into(), json!(id));
        p.insert("name".into(), json!(format!("name-{}", rng.below(6))));
        if rng.chance(50) {
            p.insert("email".into(), json!(format!("{id}@example.org")));
        }
        if rng.chance(30) {
            p.insert("city".into(), json!("city-0"));
        }
        let p = Value::Object(p);
        let expected = rng.chance(50).then_some(0);
        let ev = self.ev(&id, "UserCreated", nanos, &p);
        ("CreateUser", p, expected, Expect::Ok(Some(ev)))
    }

    fn ev(&self, id: &str, event_type: &'static str, nanos: i64, data: &Value) -> Ev {
        Ev {
            user: id.to_string(),
            version: self.user(id).version + 1,
            event_type,
            nanos,
            data: data.as_object().cloned().unwrap_or_default(),
        }
    }

    /// The outcome of a command on an existing user: not_found / deleted, then the event (or a
    /// no-op), then the version check.
    fn decide(
        &self,
        id: &str,
        nanos: i64,
        expected: Option<u64>,
        event: impl FnOnce(&UserModel) -> Option<(&'static str, Value)>,
    ) -> Expect {
        let u = self.user(id);
        match u.status {
            Status::Absent => return Expect::Fail("not_found", None),
            Status::Deleted => return Expect::Fail("deleted", None),
            Status::Active => {}
        }
        let event = event(&u);
        if let Some(v) = expected {
            if v != u.version {
                return Expect::Fail("version_conflict", Some(u.version));
            }
        }
        Expect::Ok(event.map(|(t, data)| self.ev(id, t, nanos, &data)))
    }

    /// `GetUserHistory`'s data for a user, as the model has it.
    fn history(&self, id: &str) -> Value {
        let Some(u) = self.users.get(id).filter(|u| !u.events.is_empty()) else {
            return Value::Null;
        };
        let events: Vec<Value> = u
            .events
            .iter()
            .map(|&i| {
                let e = &self.log[i];
                json!({"eventType": e.event_type, "aggregateId": id, "version": e.version,
                       "timestamp": Timestamp(e.nanos).to_string(), "data": e.data})
            })
            .collect();
        json!({"id": id, "version": u.version, "events": events})
    }

    /// `GetUser`'s data for a user, as the model has it.
    fn state(&self, id: &str) -> Value {
        match self.users.get(id) {
            Some(u) if u.status == Status::Active => Value::Object(u.attrs.clone()),
            _ => Value::Null,
        }
    }
}

/// What one round saw.
#[derive(Default)]
struct Totals {
    kills: u64,
    clean_exits: u64,
    sent: u64,
    acked: u64,
    acked_events: u64,
    /// Events of unacknowledged commands found in the store after a kill, and not found.
    unacked_events_applied: u64,
    unacked_events_lost: u64,
    verified_users: u64,
}

type Fail = Box<dyn std::error::Error>;

fn fail<T>(msg: String) -> Result<T, Fail> {
    Err(msg.into())
}

/// A running node: its pid's handle (shared with the killer), its pipes.
struct Running {
    child: Arc<Mutex<Child>>,
    stdin: Option<BufWriter<std::process::ChildStdin>>,
    stdout: BufReader<std::process::ChildStdout>,
    next_msg: u64,
}

impl Running {
    fn start(cqrs: &Path, dir: &Path, rng: &mut Rng) -> Result<Running, Fail> {
        let max_batch = rng.pick(&[1, 4, 64, 1024]).to_string();
        let snapshot_every = rng.pick(&[0, 2, 5, 100]).to_string();
        let cache_size = rng.pick(&[0, 3, 100_000]).to_string();
        let mut child = Command::new(cqrs)
            .args(["--data-dir", dir.to_str().ok_or("data dir is not UTF-8")?])
            .args(["--node-id", NODE, "--max-batch", &max_batch])
            .args([
                "--snapshot-every",
                &snapshot_every,
                "--cache-size",
                &cache_size,
            ])
            .env("CQRS_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cqrs.display()))?;
        let stdin = BufWriter::new(child.stdin.take().unwrap());
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Ok(Running {
            child: Arc::new(Mutex::new(child)),
            stdin: Some(stdin),
            stdout,
            next_msg: 1,
        })
    }

    fn line(&mut self, body: Value) -> (u64, String) {
        let id = self.next_msg;
        self.next_msg += 1;
        let mut body = body;
        body["msg_id"] = json!(id);
        (
            id,
            json!({"src": "crashloop", "dest": NODE, "body": body}).to_string(),
        )
    }

    /// The next whole reply line's body; `None` at the end of output (a cut-off last line
    /// counts as not received).
    fn read(&mut self) -> Result<Option<Value>, Fail> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 || !line.ends_with('\n') {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad reply {line}: {e}"))?;
        if v["src"] != NODE || v["dest"] != "crashloop" {
            return fail(format!("reply with a wrong envelope: {line}"));
        }
        Ok(Some(v["body"].clone()))
    }

    /// Sends one request and waits for its reply.
    fn call(&mut self, body: Value) -> Result<Value, Fail> {
        let (id, line) = self.line(body);
        let w = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(w, "{line}")?;
        w.flush()?;
        let reply = self.read()?.ok_or("the node ended its output")?;
        if reply["in_reply_to"] != id {
            return fail(format!("reply to {id} expected, got {reply}"));
        }
        Ok(reply)
    }
}

/// Kills `child` after `delay` unless told not to first; says whether it killed.
fn killer(
    child: Arc<Mutex<Child>>,
    delay: Duration,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || match rx.recv_timeout(delay) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.lock().unwrap().kill();
            true
        }
        _ => false,
    });
    (tx, handle)
}

fn check_reply(reply: &Value, msg_id: u64, expect: &Expect) -> Result<(), Fail> {
    let want = match expect {
        Expect::Ok(ev) => {
            let events: Vec<Value> = ev
                .iter()
                .map(|e| json!({"eventType": e.event_type, "aggregateId": e.user}))
                .collect();
            json!({"type": "command_result", "in_reply_to": msg_id, "success": true, "events": events})
        }
        Expect::Fail(code, current) => {
            if reply["type"] != "command_result"
                || reply["success"] != false
                || reply["code"] != *code
                || reply["in_reply_to"] != msg_id
                || current.is_some_and(|v| reply["current_version"] != v)
            {
                return fail(format!(
                    "command {msg_id}: expected failure {code} ({current:?}), got {reply}"
                ));
            }
            return Ok(());
        }
    };
    if *reply != want {
        return fail(format!("command {msg_id}: expected {want}, got {reply}"));
    }
    Ok(())
}

/// The verification a restarted node gets before new load: the touched users' histories and
/// states, and one new command.
fn verify_node(
    node: &mut Running,
    model: &mut Model,
    touched: &BTreeSet<String>,
    rng: &mut Rng,
    totals: &mut Totals,
) -> Result<Option<String>, Fail> {
    let mut ids: Vec<String> = touched.iter().cloned().collect();
    for _ in 0..5 {
        if let Some(id) = model
            .ids
            .get(rng.below(model.ids.len().max(1) as u64) as usize)
        {
            ids.push(id.clone());
        }
    }
    for id in &ids {
        for (query, want) in [
            ("GetUserHistory", model.history(id)),
            ("GetUser", model.state(id)),
        ] {
            let got = node.call(
                json!({"type": "query", "query": {"type": query, "params": {"userId": id}}}),
            )?;
            if !same_text(&got["data"], &want) {
                return fail(format!(
                    "after restart, {query} {id}:\n  node:  {}\n  model: {want}",
                    got["data"]
                ));
            }
        }
        totals.verified_users += 1;
    }
    // The node accepts new commands.
    let (command, expect) = model.next_command(rng);
    let msg_id = node.next_msg;
    let reply = node.call(json!({"type": "command", "command": command}))?;
    check_reply(&reply, msg_id, &expect)?;
    totals.sent += 1;
    totals.acked += 1;
    Ok(match expect {
        Expect::Ok(Some(ev)) => {
            totals.acked_events += 1;
            Some(ev.user)
        }
        _ => None,
    })
}

/// Equal as text: same values and the same key order (the protocol fixes the order).
fn same_text(a: &Value, b: &Value) -> bool {
    serde_json::to_string(a).ok() == serde_json::to_string(b).ok()
}

fn run_check(cqrs: &Path, dir: &Path) -> Result<(), Fail> {
    let out = Command::new(cqrs)
        .args([
            "check",
            "--data-dir",
            dir.to_str().unwrap(),
            "--node-id",
            NODE,
        ])
        .env("CQRS_LOG", "error")
        .output()?;
    if !out.status.success() {
        return fail(format!(
            "cqrs check failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Compares the store's whole log with the model's. `acked_len`: the model's log length that
/// acknowledged commands reach; the store may hold more (unacknowledged but applied), up to the
/// model's full log, and must hold exactly the model's events in that range.
fn verify_log(dir: &Path, model: &mut Model, acked_len: usize) -> Result<usize, Fail> {
    let store = SqliteStore::open(store_file(dir, NODE))?;
    let log = store.read_all(0, usize::MAX)?;
    drop(store);
    if log.len() < acked_len {
        return fail(format!(
            "acknowledged events lost: the log holds {} events, acknowledged commands made {acked_len}",
            log.len()
        ));
    }
    if log.len() > model.log.len() {
        return fail(format!(
            "the log holds {} events, more than the {} that every command sent could make",
            log.len(),
            model.log.len()
        ));
    }
    for (i, (got, want)) in log.iter().zip(&model.log).enumerate() {
        let data: Map<String, Value> = serde_json::from_str(&got.data)
            .map_err(|e| format!("event at position {}: data is not JSON: {e}", got.position))?;
        let same = got.position == i as u64 + 1
            && got.stream.category == "User"
            && got.stream.id == want.user
            && got.version == want.version
            && got.event_type == want.event_type
            && got.timestamp.nanos() == want.nanos
            && serde_json::to_string(&data)? == serde_json::to_string(&want.data)?;
        if !same {
            return fail(format!(
                "log position {}: stored {:?}\n  model: {want:?}",
                i + 1,
                got
            ));
        }
    }
    Ok(log.len())
}

/// One round: verify the restarted node, load it, kill it, check the store.
fn round(
    args: &Args,
    cqrs: &Path,
    rng: &mut Rng,
    model: &mut Model,
    touched: &mut BTreeSet<String>,
    totals: &mut Totals,
    last: bool,
) -> Result<String, Fail> {
    let mut node = Running::start(cqrs, &args.data_dir, rng)?;
    let (watchdog, watchdog_done) = killer(node.child.clone(), STALL);
    let new_user = verify_node(&mut node, model, touched, rng, totals)?;
    touched.clear();
    touched.extend(new_user);

    // The load: commands the model applies as they are generated.
    let n = if last {
        0
    } else {
        1 + rng.below(args.max_commands as u64) as usize
    };
    let start_len = model.log.len();
    let mut lines = Vec::with_capacity(n);
    let mut expects = Vec::with_capacity(n);
    let mut log_len_after = Vec::with_capacity(n);
    for _ in 0..n {
        let (command, expect) = model.next_command(rng);
        if let Expect::Ok(Some(ev)) = &expect {
            touched.insert(ev.user.clone());
        }
        let (id, line) = node.line(json!({"type": "command", "command": command}));
        lines.push(line);
        expects.push((id, expect));
        log_len_after.push(model.log.len());
    }
    totals.sent += n as u64;

    // How it ends: after some replies, after a delay, or by closing stdin (clean shutdown).
    let mode = if last { 19 } else { rng.below(20) };
    let (kill_after_replies, delay, close) = match mode {
        0..=9 => (Some(rng.below(n as u64 + 1) as usize), None, false),
        10..=18 => (
            None,
            Some(Duration::from_micros(
                rng.below(args.max_delay_ms * 1000 + 1),
            )),
            false,
        ),
        _ => (None, None, true),
    };

    // The writer: chunks of lines, now and then a short pause, so batches vary in size.
    let mut stdin = node.stdin.take().unwrap();
    let mut wrng = Rng(rng.next());
    let writer = std::thread::spawn(move || {
        let mut i = 0;
        while i < lines.len() {
            let chunk = 1 + wrng.below(32) as usize;
            for line in &lines[i..(i + chunk).min(lines.len())] {
                if writeln!(stdin, "{line}").is_err() {
                    return;
                }
            }
            i += chunk;
            if stdin.flush().is_err() {
                return;
            }
            if wrng.chance(10) {
                std::thread::sleep(Duration::from_micros(wrng.below(2000)));
            }
        }
        if close {
            drop(stdin);
        } else {
            // Keep stdin open: the node must not see an end of input before the kill.
            let _ = stdin.flush();
            std::thread::park_timeout(STALL);
        }
    });
    let delayed = delay.map(|d| killer(node.child.clone(), d));

    let mut acked = 0usize;
    let mut killed = false;
    loop {
        if kill_after_replies == Some(acked) && !killed {
            node.child.lock().unwrap().kill()?;
            killed = true;
        }
        let Some(reply) = node.read()? else { break };
        let Some((id, expect)) = expects.get(acked) else {
            return fail(format!("a reply no command asked for: {reply}"));
        };
        check_reply(&reply, *id, expect)?;
        acked += 1;
    }
    let _ = watchdog.send(());
    if watchdog_done.join().unwrap_or(false) {
        return fail(format!("the node stalled for {STALL:?}"));
    }
    let killed_by_timer = match delayed {
        Some((tx, h)) => {
            let _ = tx.send(());
            h.join().unwrap_or(false)
        }
        None => false,
    };
    let status = node.child.lock().unwrap().wait()?;
    writer.thread().unpark();
    let _ = writer.join();
    let kill = killed || killed_by_timer;
    if kill {
        // Killed, or it had already exited on its own (a failure either way if not by us).
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(9) {
            return fail(format!(
                "the node ended by itself before the kill: {status}"
            ));
        }
        totals.kills += 1;
    } else {
        // End of input: a clean shutdown that answers everything.
        if !status.success() {
            return fail(format!(
                "after the end of input the node exited with {status}"
            ));
        }
        if acked != n {
            return fail(format!("clean shutdown answered {acked} of {n} commands"));
        }
        totals.clean_exits += 1;
    }
    totals.acked += acked as u64;
    let acked_len = if acked == 0 {
        start_len
    } else {
        log_len_after[acked - 1]
    };
    totals.acked_events += (acked_len - start_len) as u64;

    run_check(cqrs, &args.data_dir)?;
    let stored = verify_log(&args.data_dir, model, acked_len)?;
    // Events of unacknowledged commands that made it, and those that did not.
    totals.unacked_events_applied += (stored - acked_len) as u64;
    totals.unacked_events_lost += (model.log.len() - stored) as u64;
    let lost = model.log.len() - stored;
    model.truncate(stored);
    Ok(format!(
        "{} after {acked} of {n} replies; unacknowledged events: {} in the store, {lost} not; log {stored}",
        if kill { "killed" } else { "clean exit" },
        stored - acked_len,
    ))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crashloop: FAILED: {e}");
            eprintln!(
                "crashloop: the store is kept in {}",
                args.data_dir.display()
            );
            std::process::ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), Fail> {
    let cqrs = match &args.cqrs {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory around this program")?
            .join("cqrs"),
    };
    if !cqrs.exists() {
        return fail(format!(
            "{} not found (build it, or give --cqrs)",
            cqrs.display()
        ));
    }
    if args.data_dir.exists() && std::fs::read_dir(&args.data_dir)?.next().is_some() {
        return fail(format!("{} is not empty", args.data_dir.display()));
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let started = Instant::now();
    let mut rng = Rng(args.seed);
    let mut model = Model::default();
    let mut touched = BTreeSet::new();
    let mut totals = Totals::default();
    let mut rounds = 0u64;
    while totals.kills < args.kills {
        rounds += 1;
        let what = round(
            args,
            &cqrs,
            &mut rng,
            &mut model,
            &mut touched,
            &mut totals,
            false,
        )
        .map_err(|e| format!("round {rounds}: {e}"))?;
        if args.verbose {
            eprintln!("round {rounds}: {what}");
        }
    }
    // A last start: everything verified once more, then a clean shutdown.
    round(
        args,
        &cqrs,
        &mut rng,
        &mut model,
        &mut touched,
        &mut totals,
        true,
    )
    .map_err(|e| format!("final round: {e}"))?;
    println!(
        "crashloop: seed {} kills {} clean-exits {} rounds {} commands-sent {} acknowledged {} \
         acknowledged-events {} unacknowledged-events-applied {} unacknowledged-events-lost {} \
         events-in-log {} users-verified {} acknowledged-events-lost 0 elapsed {:.1}s",
        args.seed,
        totals.kills,
        totals.clean_exits,
        rounds + 1,
        totals.sent,
        totals.acked,
        totals.acked_events,
        totals.unacked_events_applied,
        totals.unacked_events_lost,
        model.log.len(),
        totals.verified_users,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
