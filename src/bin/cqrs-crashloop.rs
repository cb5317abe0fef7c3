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
//! Every command carries its own timestamp, so the model can predict each event exactly. The
//! model is the test kit's ([`cqrs_node::testkit::model`], shared with the property tests and the
//! benchmark), and the node runs under the kit's harness ([`cqrs_node::testkit::process`]).
//! Exit status 0 when every round passed; 1 and a description at the first violation.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use cqrs_node::store::sqlite_file as store_file;
use cqrs_node::store::{SqliteStore, StoreRead};
use cqrs_node::testkit::model::{self, Model, Status};
use cqrs_node::testkit::process::{Next, Options, Process, Timer};
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

/// The load: the model, and what the generator needs besides it.
#[derive(Default)]
struct Load {
    /// Every command applied so far, and the log they make.
    model: Model,
    /// Every id ever used by a command, oldest first.
    ids: Vec<String>,
    next_user: u64,
    /// Milliseconds after BASE of the next command.
    clock: u64,
}

impl Load {
    /// `(status, version)` of a user.
    fn user(&self, id: &str) -> (Status, u64) {
        self.model
            .user(id)
            .map_or((Status::Absent, 0), |u| (u.status(), u.version()))
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

    /// A random command, as the wire's `command` object: creates, renames (mostly with the right
    /// `expectedVersion`, sometimes a stale one), updates, email changes and deletes, and
    /// commands that must fail. What each must do is the model's to say, when it is sent.
    fn next_command(&mut self, rng: &mut Rng) -> Value {
        self.clock += 1;
        let nanos = BASE_NANOS + self.clock as i64 * 1_000_000;
        let time = model::rfc3339(i128::from(nanos));
        let roll = rng.below(100);
        let target = self.recent_id(rng);
        let (kind, mut payload, expected_version) = match (roll, target) {
            (0..=24, _) | (_, None) => self.create_new(rng),
            // An id already used: taken, unless its creation was lost in a crash.
            (25..=27, Some(id)) => ("CreateUser", json!({"id": id, "name": "again"}), None),
            (28..=49, Some(id)) => {
                let name = format!("name-{}", rng.below(6));
                let (_, version) = self.user(&id);
                // Mostly the right expectedVersion; sometimes a stale one.
                let stale = rng.chance(15);
                let ev = if stale {
                    version + 1 + rng.below(2)
                } else {
                    version
                };
                ("RenameUser", json!({"id": id, "name": name}), Some(ev))
            }
            (50..=69, Some(id)) => {
                let mut p = Map::new();
                p.insert("id".into(), json!(id));
                if rng.chance(50) {
                    p.insert("city".into(), json!(format!("city-{}", rng.below(4))));
                }
                if rng.chance(40) {
                    p.insert("age".into(), json!(rng.below(3)));
                }
                if rng.chance(20) {
                    p.insert("name".into(), json!(format!("name-{}", rng.below(6))));
                }
                if rng.chance(5) {
                    p.insert("email".into(), json!("not-an-address"));
                }
                ("UpdateUser", Value::Object(p), None)
            }
            (70..=81, Some(id)) => {
                let email = format!("{}@example.org", rng.below(5));
                ("ChangeUserEmail", json!({"id": id, "email": email}), None)
            }
            (82..=89, Some(id)) => {
                let (_, version) = self.user(&id);
                let exact = rng.chance(50).then_some(version);
                ("DeleteUser", json!({"id": id}), exact)
            }
            (90..=94, _) => {
                let id = format!("ghost-{}", rng.below(1000));
                ("RenameUser", json!({"id": id, "name": "x"}), None)
            }
            (_, Some(id)) => ("RenameUser", json!({"id": id, "name": "   "}), None),
        };
        let mut command = json!({"type": kind, "payload": Value::Null, "timestamp": time});
        command["payload"] = std::mem::take(&mut payload);
        if let Some(v) = expected_version {
            command["expectedVersion"] = json!(v);
        }
        command
    }

    fn create_new(&mut self, rng: &mut Rng) -> (&'static str, Value, Option<u64>) {
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
        let expected = rng.chance(50).then_some(0);
        ("CreateUser", Value::Object(p), expected)
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

/// A running node, and the `msg_id` of its next request.
struct Running {
    process: Process,
    next_msg: u64,
}

impl Running {
    fn start(cqrs: &Path, dir: &Path, rng: &mut Rng) -> Result<Running, Fail> {
        let max_batch = rng.pick(&[1, 4, 64, 1024]).to_string();
        let snapshot_every = rng.pick(&[0, 2, 5, 100]).to_string();
        let cache_size = rng.pick(&[0, 3, 100_000]).to_string();
        let mut cmd = Command::new(cqrs);
        // SQLite in the data directory, whatever the environment says.
        cmd.env_remove("CQRS_POSTGRES_URL");
        cmd.args(["--data-dir", dir.to_str().ok_or("data dir is not UTF-8")?])
            .args(["--node-id", NODE, "--max-batch", &max_batch])
            .args([
                "--snapshot-every",
                &snapshot_every,
                "--cache-size",
                &cache_size,
            ])
            .env("CQRS_LOG", "error");
        Ok(Running {
            process: Process::spawn(&mut cmd, Options::direct())?,
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

    /// The next whole reply line; `None` at the end of output (a cut-off last line counts as
    /// not received).
    fn read(&mut self) -> Result<Option<String>, Fail> {
        Ok(match self.process.read()? {
            Next::Line(line) => Some(line),
            Next::Cut(_) | Next::End => None,
        })
    }

    /// Sends one request, waits for its reply and checks it against the model (which applies
    /// a command).
    fn call(&mut self, body: Value, model: &mut Model) -> Result<(), Fail> {
        let (_, line) = self.line(body);
        let expected = model.expect(&line)?.ok_or("a request without msg_id")?;
        self.process.send(&line)?;
        let reply = self.read()?.ok_or("the node ended its output")?;
        expected.check(&reply)?;
        Ok(())
    }
}

/// The verification a restarted node gets before new load: the touched users' histories and
/// states, and one new command. Returns the user that command changed, if any.
fn verify_node(
    node: &mut Running,
    load: &mut Load,
    touched: &BTreeSet<String>,
    rng: &mut Rng,
    totals: &mut Totals,
) -> Result<Option<String>, Fail> {
    let mut ids: Vec<String> = touched.iter().cloned().collect();
    for _ in 0..5 {
        if let Some(id) = load
            .ids
            .get(rng.below(load.ids.len().max(1) as u64) as usize)
        {
            ids.push(id.clone());
        }
    }
    for id in &ids {
        for query in ["GetUserHistory", "GetUser"] {
            node.call(
                json!({"type": "query", "query": {"type": query, "params": {"userId": id}}}),
                &mut load.model,
            )
            .map_err(|e| format!("after restart, {query} {id}: {e}"))?;
        }
        totals.verified_users += 1;
    }
    // The node accepts new commands.
    let command = load.next_command(rng);
    let before = load.model.log().len();
    node.call(
        json!({"type": "command", "command": command}),
        &mut load.model,
    )?;
    totals.sent += 1;
    totals.acked += 1;
    let log = load.model.log();
    Ok((log.len() > before).then(|| {
        totals.acked_events += 1;
        log[before].user.clone()
    }))
}

fn run_check(cqrs: &Path, dir: &Path) -> Result<(), Fail> {
    let out = Command::new(cqrs)
        .env_remove("CQRS_POSTGRES_URL")
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
fn verify_log(dir: &Path, model: &Model, acked_len: usize) -> Result<usize, Fail> {
    let store = SqliteStore::open(store_file(dir, NODE))?;
    // Opened as the node reads it (personal data is sealed on disk).
    let log = cqrs_node::registry()
        .read_view(&store)
        .read_all(0, usize::MAX)?;
    drop(store);
    if log.len() < acked_len {
        return fail(format!(
            "acknowledged events lost: the log holds {} events, acknowledged commands made {acked_len}",
            log.len()
        ));
    }
    if log.len() > model.log().len() {
        return fail(format!(
            "the log holds {} events, more than the {} that every command sent could make",
            log.len(),
            model.log().len()
        ));
    }
    for (i, (got, want)) in log.iter().zip(model.log()).enumerate() {
        let data: Map<String, Value> = serde_json::from_str(&got.data)
            .map_err(|e| format!("event at position {}: data is not JSON: {e}", got.position))?;
        let same = got.position == i as u64 + 1
            && got.stream.category == "User"
            && got.stream.id == want.user
            && got.version == want.version
            && got.event_type == want.event_type
            && i128::from(got.timestamp.nanos()) == want.nanos
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
    load: &mut Load,
    touched: &mut BTreeSet<String>,
    totals: &mut Totals,
    last: bool,
) -> Result<String, Fail> {
    let mut node = Running::start(cqrs, &args.data_dir, rng)?;
    let watchdog = node.process.killer().after(STALL);
    let new_user = verify_node(&mut node, load, touched, rng, totals)?;
    touched.clear();
    touched.extend(new_user);

    // The load: commands the model applies as they are generated.
    let n = if last {
        0
    } else {
        1 + rng.below(args.max_commands as u64) as usize
    };
    let model_len = |load: &Load| load.model.log().len();
    let start_len = model_len(load);
    let mut lines = Vec::with_capacity(n);
    let mut expects = Vec::with_capacity(n);
    let mut log_len_after = Vec::with_capacity(n);
    for _ in 0..n {
        let command = load.next_command(rng);
        let (_, line) = node.line(json!({"type": "command", "command": command}));
        let before = model_len(load);
        let expect = load
            .model
            .expect(&line)?
            .ok_or("a command without msg_id")?;
        if let Some(event) = load.model.log().get(before) {
            touched.insert(event.user.clone());
        }
        lines.push(line);
        expects.push(expect);
        log_len_after.push(model_len(load));
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
    let mut stdin = BufWriter::new(node.process.take_stdin().ok_or("stdin closed")?);
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
    let delayed = delay.map(|d| node.process.killer().after(d));

    let mut acked = 0usize;
    let mut killed = false;
    loop {
        if kill_after_replies == Some(acked) && !killed {
            node.process.killer().kill()?;
            killed = true;
        }
        let Some(reply) = node.read()? else { break };
        let Some(expect) = expects.get(acked) else {
            return fail(format!("a reply no command asked for: {reply}"));
        };
        expect.check(&reply)?;
        acked += 1;
    }
    if watchdog.stop() {
        return fail(format!("the node stalled for {STALL:?}"));
    }
    let killed_by_timer = delayed.is_some_and(Timer::stop);
    let status = node.process.wait()?.status;
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
    let stored = verify_log(&args.data_dir, &load.model, acked_len)?;
    // Events of unacknowledged commands that made it, and those that did not.
    totals.unacked_events_applied += (stored - acked_len) as u64;
    totals.unacked_events_lost += (model_len(load) - stored) as u64;
    let lost = model_len(load) - stored;
    load.model.truncate(stored);
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
    let mut load = Load::default();
    let mut touched = BTreeSet::new();
    let mut totals = Totals::default();
    let mut rounds = 0u64;
    while totals.kills < args.kills {
        rounds += 1;
        let what = round(
            args,
            &cqrs,
            &mut rng,
            &mut load,
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
        &mut load,
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
        load.model.log().len(),
        totals.verified_users,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
