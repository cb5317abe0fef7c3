//! `cqrs-workload`: writes a seeded, deterministic JSON-lines workload for the `cqrs` node.
//!
//! The workload is: `--users` users created, `--updates` changes per user (RenameUser,
//! ChangeUserEmail or UpdateUser, each with the right `expectedVersion` and a later
//! `timestamp`), optionally `--deletes` of them deleted after their changes, then `--get-queries`
//! GetUser and `--at-time-queries` GetUserAtTime queries at times inside the users' streams.
//! Every command in it must succeed; `cqrs-bench verify` replays the workload in a model of its
//! own and checks every reply against it.
//!
//! `--order grouped` (the default) writes all creates, then the changes round by round, then the
//! deletes, then the queries: long runs of commands, the best case for group commit.
//! `--order interleaved` mixes every kind of message at random (still in a valid order: a user's
//! changes come after its creation, queries only ask about users created so far, or about any id
//! when there are no users).
//!
//! The same flags and seed always give the same bytes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use cqrs_node::timestamp::Timestamp;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Order {
    /// Creates, then changes round by round, then deletes, then queries.
    Grouped,
    /// Every kind of message mixed at random.
    Interleaved,
}

/// Writes a deterministic JSON-lines workload for the cqrs node.
#[derive(Parser, Debug)]
#[command(name = "cqrs-workload", version, about)]
struct Cli {
    /// Users created.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Changes per user after its creation (renames, email changes, updates).
    #[arg(long, default_value_t = 4)]
    updates: u64,
    /// Users deleted after their changes (spread evenly over the users).
    #[arg(long, default_value_t = 0)]
    deletes: u64,
    /// GetUser queries.
    #[arg(long, default_value_t = 1000)]
    get_queries: u64,
    /// GetUserAtTime queries, at times inside the users' streams.
    #[arg(long, default_value_t = 1000)]
    at_time_queries: u64,
    #[arg(long, value_enum, default_value_t = Order::Grouped)]
    order: Order,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Time of the first event (RFC 3339); later events are 1 to 1000 ms apart.
    #[arg(long, default_value = "2024-01-01T00:00:00Z")]
    start: String,
    /// The envelopes' `src` (the client).
    #[arg(long, default_value = "c1")]
    src: String,
    /// The envelopes' `dest` (the node).
    #[arg(long, default_value = "cqrs")]
    dest: String,
    /// User ids are this prefix and a number.
    #[arg(long, default_value = "user-")]
    id_prefix: String,
    /// Where to write (default: standard output).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// splitmix64: tiny, fast, and good enough to pick workload shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the tiny modulo bias does not matter here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo) as u64 + 1)) as i64
    }
}

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Barbara",
    "Chloé",
    "Dmitri",
    "Edsger",
    "Frances",
    "Grace",
    "Hedy",
    "Ivan",
    "Jean",
    "Katherine",
    "Leslie",
    "Margaret",
    "Niklaus",
    "Ole-Johan",
    "Peter",
    "Radia",
    "Søren",
    "Tony",
    "Ursula",
    "Whitfield",
    "Xiaolin",
    "Yukihiro",
    "Zoë",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Lamarr",
    "Sutherland",
    "Sammet",
    "Johnson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Dahl",
    "Naur",
    "Perlman",
    "Hoare",
    "Le Guin",
    "Diffie",
    "Matsumoto",
];
const CITIES: &[&str] = &[
    "Lisbon",
    "Kraków",
    "Montréal",
    "Nairobi",
    "Osaka",
    "Quito",
    "Reykjavík",
    "Tbilisi",
];

/// What the generator remembers of each user (enough to stay valid, not the state itself).
#[derive(Clone, Copy, Default)]
struct UserTrack {
    version: u64,
    created_at: i64,
    last_at: i64,
    /// Changes still to come, the delete included.
    remaining: u64,
    deleted: bool,
}

struct Gen<W: Write> {
    cli: Cli,
    rng: Rng,
    out: W,
    msg_id: u64,
    /// The workload's clock, in nanoseconds: every command is later than the one before.
    clock: i64,
    users: Vec<UserTrack>,
    created: u64,
}

impl<W: Write> Gen<W> {
    fn id(&self, i: u64) -> String {
        format!("{}{}", self.cli.id_prefix, i)
    }

    fn to_delete(&self, i: u64) -> bool {
        let (n, d) = (self.cli.users, self.cli.deletes.min(self.cli.users));
        // `d` users, spread evenly: user i is deleted when the multiples of d step over it.
        d > 0 && (i * d) / n != ((i + 1) * d) / n
    }

    fn emit(&mut self, body_type: &str, key: &str, inner: Value) -> io::Result<()> {
        self.msg_id += 1;
        let line = json!({
            "src": self.cli.src,
            "dest": self.cli.dest,
            "body": {"type": body_type, "msg_id": self.msg_id, key: inner},
        });
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }

    fn tick(&mut self) -> Timestamp {
        self.clock += self.rng.between(1, 1000) * 1_000_000;
        Timestamp(self.clock)
    }

    fn command(
        &mut self,
        kind: &str,
        version: u64,
        at: Timestamp,
        payload: Value,
    ) -> io::Result<()> {
        let command = json!({
            "type": kind,
            "expectedVersion": version,
            "timestamp": at.to_string(),
            "payload": payload,
        });
        self.emit("command", "command", command)
    }

    fn name(&mut self, i: u64, version: u64) -> String {
        let first = FIRST[self.rng.below(FIRST.len() as u64) as usize];
        let last = LAST[self.rng.below(LAST.len() as u64) as usize];
        // The version makes every new name differ from the one before: no change is a no-op.
        format!("{first} {last} {i}.{version}")
    }

    fn create(&mut self) -> io::Result<()> {
        let i = self.created;
        self.created += 1;
        let at = self.tick();
        let id = self.id(i);
        let name = self.name(i, 0);
        let mut payload = json!({"id": id, "name": name, "email": format!("u{i}@example.com")});
        if self.rng.below(4) == 0 {
            payload["plan"] = json!("free");
        }
        let remaining = self.cli.updates + u64::from(self.to_delete(i));
        self.users[i as usize] = UserTrack {
            version: 1,
            created_at: at.0,
            last_at: at.0,
            remaining,
            deleted: false,
        };
        self.command("CreateUser", 0, at, payload)
    }

    /// The next change of user `i`: its delete once its updates are done.
    fn change(&mut self, i: u64) -> io::Result<()> {
        let track = self.users[i as usize];
        let at = self.tick();
        let id = self.id(i);
        let v = track.version;
        let (kind, payload) = if track.remaining == 1 && self.to_delete(i) {
            ("DeleteUser", json!({"id": id}))
        } else {
            match self.rng.below(3) {
                0 => ("RenameUser", json!({"id": id, "name": self.name(i, v)})),
                1 => (
                    "ChangeUserEmail",
                    json!({"id": id, "email": format!("u{i}.v{v}@example.org")}),
                ),
                _ => {
                    let city = CITIES[self.rng.below(CITIES.len() as u64) as usize];
                    // `visits` changes every time, so the update is never a no-op.
                    let mut p = json!({"id": id, "visits": v, "city": city});
                    if self.rng.below(4) == 0 {
                        p["name"] = json!(self.name(i, v));
                    }
                    ("UpdateUser", p)
                }
            }
        };
        let t = &mut self.users[i as usize];
        t.version += 1;
        t.last_at = at.0;
        t.remaining -= 1;
        t.deleted = kind == "DeleteUser";
        self.command(kind, v, at, payload)
    }

    /// A user to ask about: any created one (or `user-0` when there is none).
    fn someone(&mut self) -> u64 {
        match self.created {
            0 => 0,
            n => self.rng.below(n),
        }
    }

    fn get_user(&mut self) -> io::Result<()> {
        let i = self.someone();
        let q = json!({"type": "GetUser", "params": {"userId": self.id(i)}});
        self.emit("query", "query", q)
    }

    fn get_user_at_time(&mut self) -> io::Result<()> {
        let i = self.someone();
        let t = if self.created == 0 {
            UserTrack {
                created_at: self.clock,
                last_at: self.clock,
                ..Default::default()
            }
        } else {
            self.users[i as usize]
        };
        let at = match self.rng.below(16) {
            // Before the user existed: the answer is null.
            0 => t.created_at - 1_000_000_000,
            // Exactly at an event's time: that event is included.
            1 => t.created_at,
            2 => t.last_at,
            _ => self.rng.between(t.created_at, t.last_at),
        };
        let q = json!({"type": "GetUserAtTime",
                       "params": {"userId": self.id(i), "timestamp": Timestamp(at).to_string()}});
        self.emit("query", "query", q)
    }

    fn grouped(&mut self) -> io::Result<()> {
        for _ in 0..self.cli.users {
            self.create()?;
        }
        for _ in 0..self.cli.updates + 1 {
            for i in 0..self.cli.users {
                if self.users[i as usize].remaining > 0 {
                    self.change(i)?;
                }
            }
        }
        for _ in 0..self.cli.get_queries {
            self.get_user()?;
        }
        for _ in 0..self.cli.at_time_queries {
            self.get_user_at_time()?;
        }
        Ok(())
    }

    fn interleaved(&mut self) -> io::Result<()> {
        // Users (created) that still have changes to come; `changes` is their total.
        let mut pending: Vec<u64> = Vec::new();
        let mut changes = 0u64;
        let (mut gets, mut ats) = (self.cli.get_queries, self.cli.at_time_queries);
        loop {
            let creates = self.cli.users - self.created;
            let total = creates + changes + gets + ats;
            if total == 0 {
                return Ok(());
            }
            let mut r = self.rng.below(total);
            if r < creates {
                let i = self.created;
                self.create()?;
                let left = self.users[i as usize].remaining;
                if left > 0 {
                    pending.push(i);
                    changes += left;
                }
                continue;
            }
            r -= creates;
            if r < changes {
                let k = self.rng.below(pending.len() as u64) as usize;
                let i = pending[k];
                self.change(i)?;
                changes -= 1;
                if self.users[i as usize].remaining == 0 {
                    pending.swap_remove(k);
                }
                continue;
            }
            r -= changes;
            if r < gets {
                gets -= 1;
                self.get_user()?;
            } else {
                ats -= 1;
                self.get_user_at_time()?;
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let start = Timestamp::parse(&cli.start).map_err(|e| format!("--start: {e}"))?;
    let out: Box<dyn Write> = match &cli.out {
        Some(path) => Box::new(File::create(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let mut gen = Gen {
        rng: Rng(cli.seed),
        users: vec![UserTrack::default(); cli.users as usize],
        out: BufWriter::with_capacity(1 << 16, out),
        msg_id: 0,
        clock: start.0,
        created: 0,
        cli,
    };
    match gen.cli.order {
        Order::Grouped => gen.grouped()?,
        Order::Interleaved => gen.interleaved()?,
    }
    gen.out.flush()?;
    Ok(())
}
