//! `cqrs-bench`: the end-to-end benchmark of the `cqrs` node, in one command.
//!
//! ```sh
//! cargo run --release --bin cqrs-bench              # the full run (issue 3's sizes)
//! cargo run --release --bin cqrs-bench -- --quick   # a smaller run, well under a minute
//! ```
//!
//! One run: builds (when started by `cargo run`) and locates the release `cqrs`, `cqrs-echo` and
//! `cqrs-workload` binaries next to itself, then
//!
//! 1. generates the workload with `cqrs-workload` (seeded, deterministic);
//! 2. streams it through the echo floor, `cqrs --in-memory` and `cqrs` on SQLite (a temporary
//!    directory): standard input is the workload file, standard output a file; wall time from
//!    spawn to exit, peak RSS and CPU time from `wait4`; every reply is then checked;
//! 3. measures fdatasync on the same disk (write 4 KiB + `File::sync_data`, many times), and the
//!    one-at-a-time latency of durable commands (send one, wait for its reply, repeat), in turn
//!    with the same commands through the *durable floor* (`cqrs-echo --fsync-file`: the pipeline
//!    plus one write + fdatasync per batch, the best a durable command can do here);
//! 4. GetUserAtTime on one 10,000-event stream, with and without snapshots;
//! 5. opening the durable store of step 2 (1,000,000 events at full size) and answering the
//!    first GetUser, from spawn to reply;
//! 6. memory per live user at 1,000,000 users (peak RSS / users), in memory and on SQLite.
//!
//! Every reply of every run is verified against a model of the workload that this program keeps
//! itself (it replays the workload's commands, independently of the node's code): every command
//! must succeed with the right events, every query must return exactly the state the workload
//! implies, byte for byte. A mismatch stops the benchmark with exit status 1: a fast wrong answer
//! never counts. `cqrs-bench verify --workload W --replies R` runs the same check on files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

type Res<T> = Result<T, String>;

/// End-to-end benchmark of the cqrs node (see docs/benchmarks.md).
#[derive(Parser)]
#[command(name = "cqrs-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a file of replies against a workload file; exit 1 on the first mismatches.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    #[arg(long)]
    workload: PathBuf,
    #[arg(long)]
    replies: PathBuf,
    /// The replies come from the echo floor: check only that each request got a reply of the
    /// right type, in order.
    #[arg(long)]
    echo: bool,
    /// Then print the exact reply that a GetUser of this user (msg_id 1, from `c1`) must get
    /// from the final state, as `final-get: <line>`.
    #[arg(long)]
    final_get: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Smaller sizes (a run well under a minute); any size given explicitly still wins.
    #[arg(long)]
    quick: bool,
    /// Users in the streamed workload [full: 100000, quick: 10000].
    #[arg(long)]
    users: Option<u64>,
    /// Changes per user in the streamed workload [full: 9, so 1,000,000 events; quick: 4].
    #[arg(long)]
    updates: Option<u64>,
    /// Users deleted (after their changes) in the streamed workload.
    #[arg(long, default_value_t = 0)]
    deletes: u64,
    /// GetUser queries in the streamed workload [= users].
    #[arg(long)]
    get_queries: Option<u64>,
    /// GetUserAtTime queries in the streamed workload [= users].
    #[arg(long)]
    at_time_queries: Option<u64>,
    /// `grouped` (commands in long runs: the group-commit case) or `interleaved`.
    #[arg(long, default_value = "grouped")]
    order: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Streamed runs per configuration; the median is reported [full: 3, quick: 1].
    #[arg(long)]
    runs: Option<u32>,
    /// Durable commands sent one at a time, each after a write + fdatasync sample of each kind
    /// (0: skip) [full: 2000, quick: 300].
    #[arg(long)]
    latency_commands: Option<u64>,
    /// Events in the one long stream for GetUserAtTime (0: skip).
    #[arg(long, default_value_t = 10_000)]
    stream_events: u64,
    /// GetUserAtTime queries on the long stream [full: 1000, quick: 200].
    #[arg(long)]
    stream_queries: Option<u64>,
    /// Times the durable store is reopened to answer a first GetUser (0: skip).
    #[arg(long, default_value_t = 3)]
    open_runs: u32,
    /// Users for the memory-per-user runs (0: skip) [full: 1000000, quick: 100000].
    #[arg(long)]
    mem_users: Option<u64>,
    /// Where the stores and files go (default: a new directory in the system's temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the working directory at the end.
    #[arg(long)]
    keep: bool,
    /// Where `cqrs`, `cqrs-echo` and `cqrs-workload` are (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` first, even when started by `cargo run`.
    #[arg(long)]
    no_build: bool,
    /// Allow a debug build of this program (figures then mean nothing; for the smoke test).
    #[arg(long)]
    allow_debug: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Verify(v)) => verify_files(&v.workload, &v.replies, v.echo).and_then(|mut s| {
            println!(
                "verified: {} replies ({} commands, {} queries, {} events) match the workload",
                s.replies, s.commands, s.queries, s.model.events
            );
            if let Some(id) = v.final_get {
                let line = get_user_line(&id);
                let expected = s.model.expect(&line)?.ok_or("has a msg_id")?;
                println!("final-get: {}", expected.line);
            }
            Ok(())
        }),
        None => bench(cli.run),
    };
    if let Err(e) = result {
        eprintln!("cqrs-bench: FAILED: {e}");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------------------------------
// The model: what the workload implies, computed without the node's code.
// ------------------------------------------------------------------------------------------

enum Change {
    Create(Map<String, Value>),
    Set(Map<String, Value>),
    Delete,
}

#[derive(Default)]
struct UserModel {
    version: u64,
    last: i64,
    /// Every event: its time and what it changed.
    events: Vec<(i64, Change)>,
}

impl UserModel {
    /// The visible state after the events that pass `keep` (a prefix of the stream).
    fn state(&self, mut keep: impl FnMut(usize, i64) -> bool) -> Option<Map<String, Value>> {
        let mut state: Option<Map<String, Value>> = None;
        for (i, (t, change)) in self.events.iter().enumerate() {
            if !keep(i, *t) {
                break;
            }
            match change {
                Change::Create(attrs) => state = Some(attrs.clone()),
                Change::Set(changes) => {
                    if let Some(s) = state.as_mut() {
                        for (k, v) in changes {
                            s.insert(k.clone(), v.clone());
                        }
                    }
                }
                Change::Delete => state = None,
            }
        }
        state
    }

    fn current(&self) -> Option<Map<String, Value>> {
        self.state(|_, _| true)
    }
}

/// The reply a request must get.
struct Expected {
    msg_id: Value,
    /// The body's `type`.
    kind: &'static str,
    /// The exact line.
    line: String,
}

#[derive(Default)]
struct Model {
    node_id: Option<String>,
    users: HashMap<String, UserModel>,
    commands: u64,
    queries: u64,
    events: u64,
}

fn nanos(s: &str) -> Res<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("bad time '{s}': {e}"))?;
    Ok(t.unix_timestamp_nanos()
        .clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

fn string<'a>(v: Option<&'a Value>, what: &str) -> Res<&'a str> {
    v.and_then(Value::as_str)
        .ok_or_else(|| format!("{what} must be a string"))
}

impl Model {
    /// The reply the node must give to this workload line (None: no reply expected). Errors
    /// mean that the workload itself is outside what the verifier models (e.g. a command that
    /// should fail).
    fn expect(&mut self, line: &str) -> Res<Option<Expected>> {
        let msg: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let src = string(msg.get("src"), "src")?.to_string();
        let dest = msg.get("dest").and_then(Value::as_str);
        let body = msg
            .get("body")
            .and_then(Value::as_object)
            .ok_or("no body")?;
        let kind = string(body.get("type"), "body.type")?;
        if self.node_id.is_none() {
            self.node_id = match kind {
                "init" => body.get("node_id").and_then(Value::as_str),
                _ => dest,
            }
            .map(String::from);
        }
        let msg_id = body.get("msg_id").filter(|v| !v.is_null()).cloned();
        let (reply_kind, reply) = match kind {
            "command" => {
                self.commands += 1;
                let cmd = body.get("command").ok_or("command without 'command'")?;
                ("command_result", self.command(cmd)?)
            }
            "query" => {
                self.queries += 1;
                let q = body.get("query").ok_or("query without 'query'")?;
                ("query_result", self.query(q)?)
            }
            "init" => {
                self.node_id = Some(string(body.get("node_id"), "node_id")?.to_string());
                ("init_ok", Map::new())
            }
            other => return Err(format!("the verifier does not model '{other}' messages")),
        };
        let Some(msg_id) = msg_id else {
            return Ok(None);
        };
        let mut body = Map::new();
        body.insert("type".into(), json!(reply_kind));
        body.insert("in_reply_to".into(), msg_id.clone());
        body.extend(reply);
        let envelope = json!({
            "src": self.node_id.as_deref().unwrap_or(""),
            "dest": src,
            "body": body,
        });
        Ok(Some(Expected {
            msg_id,
            kind: reply_kind,
            line: envelope.to_string(),
        }))
    }

    fn command(&mut self, cmd: &Value) -> Res<Map<String, Value>> {
        let kind = string(cmd.get("type"), "command.type")?;
        let mut payload = cmd
            .get("payload")
            .and_then(Value::as_object)
            .ok_or("command.payload must be an object")?
            .clone();
        let in_payload = payload.shift_remove("timestamp");
        let time = cmd
            .get("timestamp")
            .or(in_payload.as_ref())
            .and_then(Value::as_str)
            .ok_or("the verifier needs a timestamp on every command")?;
        let time = nanos(time)?;
        let expected = cmd
            .get("expectedVersion")
            .or_else(|| cmd.get("expected_version"))
            .and_then(Value::as_u64);
        let id = string(payload.get("id"), "payload.id")?.to_string();
        let user = self.users.entry(id.clone()).or_default();
        if let Some(e) = expected {
            if e != user.version {
                return Err(format!(
                    "workload: {kind} on '{id}' expects version {e}, the model is at {}",
                    user.version
                ));
            }
        }
        if time < user.last {
            return Err(format!("workload: {kind} on '{id}' goes back in time"));
        }
        let current = user.current();
        let active = |what: &str| match &current {
            Some(s) => Ok(s),
            None => Err(format!(
                "workload: {what} on '{id}', which is not a live user"
            )),
        };
        payload.shift_remove("id");
        let changed = |key: &str, value: &Value, s: &Map<String, Value>, c: &mut Map<_, _>| {
            if s.get(key) != Some(value) {
                c.insert(key.to_string(), value.clone());
            }
        };
        let (event, change) = match kind {
            "CreateUser" => {
                if user.version != 0 {
                    return Err(format!("workload: CreateUser on existing '{id}'"));
                }
                let name = payload
                    .shift_remove("name")
                    .ok_or("CreateUser needs a name")?;
                let mut attrs = Map::new();
                attrs.insert("id".into(), json!(id));
                attrs.insert("name".into(), name);
                attrs.extend(payload);
                ("UserCreated", Some(Change::Create(attrs)))
            }
            "RenameUser" | "ChangeUserEmail" | "UpdateUser" => {
                let s = active(kind)?;
                let mut c = Map::new();
                match kind {
                    "RenameUser" => {
                        changed("name", payload.get("name").ok_or("no name")?, s, &mut c)
                    }
                    "ChangeUserEmail" => {
                        changed("email", payload.get("email").ok_or("no email")?, s, &mut c)
                    }
                    _ => {
                        for (k, v) in &payload {
                            changed(k, v, s, &mut c);
                        }
                    }
                }
                let event = match kind {
                    "RenameUser" => "UserRenamed",
                    "ChangeUserEmail" => "UserEmailChanged",
                    _ => "UserUpdated",
                };
                (event, (!c.is_empty()).then_some(Change::Set(c)))
            }
            "DeleteUser" => {
                active(kind)?;
                ("UserDeleted", Some(Change::Delete))
            }
            other => return Err(format!("the verifier does not model command '{other}'")),
        };
        let mut reply = Map::new();
        reply.insert("success".into(), json!(true));
        let events = match change {
            Some(change) => {
                user.events.push((time, change));
                user.version += 1;
                user.last = time;
                self.events += 1;
                json!([{"eventType": event, "aggregateId": id}])
            }
            None => json!([]),
        };
        reply.insert("events".into(), events);
        Ok(reply)
    }

    fn query(&mut self, q: &Value) -> Res<Map<String, Value>> {
        let kind = string(q.get("type"), "query.type")?;
        let params = q
            .get("params")
            .and_then(Value::as_object)
            .ok_or("no params")?;
        let id = string(params.get("userId"), "params.userId")?;
        let user = self.users.get(id);
        let data = match kind {
            "GetUser" => user.and_then(UserModel::current).map(Value::Object),
            "GetUserAtTime" => {
                let given = string(params.get("timestamp"), "params.timestamp")?;
                let t = nanos(given)?;
                user.and_then(|u| u.state(|_, et| et <= t)).map(|mut s| {
                    s.insert("at_time".into(), json!(given));
                    Value::Object(s)
                })
            }
            "GetUserAtVersion" => {
                let v = params
                    .get("version")
                    .and_then(Value::as_u64)
                    .ok_or("params.version")?;
                user.filter(|u| v >= 1 && u.events.len() as u64 >= v)
                    .and_then(|u| u.state(|i, _| (i as u64) < v))
                    .map(|mut s| {
                        s.insert("at_version".into(), json!(v));
                        Value::Object(s)
                    })
            }
            other => return Err(format!("the verifier does not model query '{other}'")),
        };
        let mut reply = Map::new();
        reply.insert("data".into(), data.unwrap_or(Value::Null));
        Ok(reply)
    }
}

/// Checks one reply line against what was expected.
fn check(expected: &Expected, got: &str, echo: bool) -> Res<()> {
    if echo {
        let v: Value = serde_json::from_str(got).map_err(|e| format!("reply not JSON: {e}"))?;
        let body = v.get("body").ok_or("reply without body")?;
        if body.get("in_reply_to") != Some(&expected.msg_id)
            || body.get("type").and_then(Value::as_str) != Some(expected.kind)
        {
            return Err(format!(
                "msg_id {}: expected a {} reply, got {got}",
                expected.msg_id, expected.kind
            ));
        }
        return Ok(());
    }
    if got != expected.line {
        return Err(format!(
            "msg_id {}:\n  expected {}\n  got      {}",
            expected.msg_id,
            cut(&expected.line),
            cut(got)
        ));
    }
    Ok(())
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(400) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

struct Verified {
    commands: u64,
    queries: u64,
    replies: u64,
    model: Model,
}

/// Checks a whole reply file against a workload file (replies in request order).
fn verify_files(workload: &Path, replies: &Path, echo: bool) -> Res<Verified> {
    let open = |p: &Path| {
        File::open(p)
            .map(|f| BufReader::with_capacity(1 << 16, f))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut reqs = open(workload)?;
    let mut reps = open(replies)?;
    let mut model = Model::default();
    let mut errors = Vec::new();
    let (mut line, mut reply) = (String::new(), String::new());
    let mut count = 0u64;
    let mut n = 0u64;
    loop {
        line.clear();
        if reqs.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        n += 1;
        let expected = model
            .expect(line.trim_end_matches('\n'))
            .map_err(|e| format!("workload line {n}: {e}"))?;
        let Some(expected) = expected else { continue };
        reply.clear();
        if reps.read_line(&mut reply).map_err(|e| e.to_string())? == 0 {
            errors.push(format!(
                "msg_id {}: no reply (the replies end after {count})",
                expected.msg_id
            ));
            break;
        }
        count += 1;
        if let Err(e) = check(&expected, reply.trim_end_matches('\n'), echo) {
            errors.push(e);
            if errors.len() >= 5 {
                break;
            }
        }
    }
    reply.clear();
    if errors.is_empty() && reps.read_line(&mut reply).map_err(|e| e.to_string())? > 0 {
        errors.push(format!(
            "more replies than requests: {}",
            cut(reply.trim_end())
        ));
    }
    if !errors.is_empty() {
        return Err(format!(
            "{} does not match {} ({} problem(s) shown):\n{}",
            replies.display(),
            workload.display(),
            errors.len(),
            errors.join("\n")
        ));
    }
    Ok(Verified {
        commands: model.commands,
        queries: model.queries,
        replies: count,
        model,
    })
}

// ------------------------------------------------------------------------------------------
// Processes: spawn, wait4 (exact peak RSS and CPU time), sessions.
// ------------------------------------------------------------------------------------------

struct Exit {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// Waits for the child with `wait4`, which reports its own peak RSS and CPU time.
fn wait_child(child: &Child, started: Instant, what: &str) -> Res<Exit> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("{what}: wait4: {e}"));
        }
    }
    let wall = started.elapsed();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{what}: exited with status {status:#x}"));
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Exit {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    })
}

struct Bins {
    cqrs: PathBuf,
    echo: PathBuf,
    workload: PathBuf,
}

fn command(bin: &Path, args: &[String]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin);
    c.args(args);
    c.env("CQRS_LOG", "warn");
    // A pre_exec hook makes std fork + exec instead of posix_spawn (a vfork that shares this
    // process's memory map). It matters for the peak RSS that wait4 reports: at exec, Linux
    // folds the high-water mark of the memory map being left into the child's ru_maxrss. With
    // a vfork that is this benchmark's own lifetime peak; after a fork it is only this process's
    // RSS at the moment of the fork, which `own_rss` reports (a few MiB).
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe {
        c.pre_exec(|| Ok(()));
    }
    c
}

/// This process's resident set size now, in KiB (a floor under every peak RSS it reports).
fn own_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn get_user_line(id: &str) -> String {
    json!({"src": "c1", "dest": "cqrs",
           "body": {"type": "query", "msg_id": 1,
                    "query": {"type": "GetUser", "params": {"userId": id}}}})
    .to_string()
}

/// Verifies a reply file in a child process (`cqrs-bench verify`), so that the model's memory
/// never inflates this process (and so the peak RSS of the programs it starts later).
fn verify_in_child(
    workload: &Path,
    replies: &Path,
    echo: bool,
    final_get: Option<&str>,
) -> Res<String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = Command::new(me);
    c.arg("verify")
        .arg("--workload")
        .arg(workload)
        .arg("--replies")
        .arg(replies);
    if echo {
        c.arg("--echo");
    }
    if let Some(id) = final_get {
        c.args(["--final-get", id]);
    }
    let out = c.output().map_err(|e| format!("cqrs-bench verify: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `bin` with the workload file as stdin and a file as stdout.
fn run_streamed(bin: &Path, args: &[String], input: &Path, output: &Path) -> Res<Exit> {
    let what = format!("{} {}", bin.display(), args.join(" "));
    let stdin = File::open(input).map_err(|e| e.to_string())?;
    let stdout = File::create(output).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = command(bin, args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    wait_child(&child, started, &what)
}

/// A node with piped stdin/stdout, for request/reply timing.
struct Session {
    child: Child,
    started: Instant,
    input: Option<BufWriter<ChildStdin>>,
    output: BufReader<ChildStdout>,
    what: String,
}

impl Session {
    fn start(bin: &Path, args: &[String]) -> Res<Self> {
        let what = format!("{} {}", bin.display(), args.join(" "));
        let started = Instant::now();
        let mut child = command(bin, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{what}: {e}"))?;
        let input = BufWriter::new(child.stdin.take().expect("piped"));
        let output = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self {
            child,
            started,
            input: Some(input),
            output,
            what,
        })
    }

    fn send(&mut self, line: &str) -> Res<()> {
        let w = self.input.as_mut().expect("open");
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .and_then(|_| w.flush())
            .map_err(|e| format!("{}: write: {e}", self.what))
    }

    fn recv(&mut self) -> Res<String> {
        let mut s = String::new();
        match self.output.read_line(&mut s) {
            Ok(0) => Err(format!("{}: stdout ended", self.what)),
            Ok(_) => {
                s.truncate(s.trim_end_matches('\n').len());
                Ok(s)
            }
            Err(e) => Err(format!("{}: read: {e}", self.what)),
        }
    }

    /// Sends every line (from another thread, so that neither pipe can fill up and block) while
    /// reading and checking one reply per expected one. Returns the time from the first write
    /// to the last reply.
    fn stream(&mut self, lines: &[String], model: &mut Model) -> Res<Duration> {
        let mut expected = Vec::new();
        for l in lines {
            if let Some(e) = model.expect(l)? {
                expected.push(e);
            }
        }
        let mut input = self.input.take().expect("open");
        let start = Instant::now();
        let (input, result) = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let r = lines.iter().try_for_each(|l| {
                    input.write_all(l.as_bytes())?;
                    input.write_all(b"\n")
                });
                (r.and_then(|_| input.flush()), input)
            });
            let mut result = Ok(());
            for e in &expected {
                match self.recv() {
                    Ok(got) => {
                        if let Err(err) = check(e, &got, false) {
                            result = Err(err);
                            break;
                        }
                    }
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            let (w, input) = writer.join().expect("writer thread");
            (input, result.and(w.map_err(|e| e.to_string())))
        });
        let elapsed = start.elapsed();
        self.input = Some(input);
        result?;
        Ok(elapsed)
    }

    /// Sends one line at a time and waits for its reply; returns each round trip.
    fn one_at_a_time(&mut self, lines: &[String], model: &mut Model) -> Res<Vec<Duration>> {
        let mut times = Vec::with_capacity(lines.len());
        for l in lines {
            let expected = model.expect(l)?.ok_or("every line needs a msg_id here")?;
            let t = Instant::now();
            self.send(l)?;
            let got = self.recv()?;
            times.push(t.elapsed());
            check(&expected, &got, false)?;
        }
        Ok(times)
    }

    /// Ends input and waits for a clean exit.
    fn finish(mut self) -> Res<Exit> {
        drop(self.input.take());
        let mut rest = String::new();
        let _ = self.output.read_to_string(&mut rest);
        if !rest.is_empty() {
            return Err(format!("{}: unexpected output: {}", self.what, cut(&rest)));
        }
        wait_child(&self.child, self.started, &self.what)
    }
}

// ------------------------------------------------------------------------------------------
// The benchmark.
// ------------------------------------------------------------------------------------------

struct Sizes {
    users: u64,
    updates: u64,
    gets: u64,
    ats: u64,
    runs: u32,
    latency: u64,
    stream_queries: u64,
    mem_users: u64,
}

impl Sizes {
    fn from(a: &RunArgs) -> Self {
        let q = a.quick;
        let users = a.users.unwrap_or(if q { 10_000 } else { 100_000 });
        Self {
            users,
            updates: a.updates.unwrap_or(if q { 4 } else { 9 }),
            gets: a.get_queries.unwrap_or(users),
            ats: a.at_time_queries.unwrap_or(users),
            runs: a.runs.unwrap_or(if q { 1 } else { 3 }).max(1),
            latency: a.latency_commands.unwrap_or(if q { 300 } else { 2000 }),
            stream_queries: a.stream_queries.unwrap_or(if q { 200 } else { 1000 }),
            mem_users: a.mem_users.unwrap_or(if q { 100_000 } else { 1_000_000 }),
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("cqrs-bench: {}", msg.as_ref());
}

/// `cargo build` the sibling binaries when started by `cargo run`, then find them.
fn locate_bins(a: &RunArgs) -> Res<Bins> {
    if cfg!(debug_assertions) && !a.allow_debug {
        return Err("this is a debug build; benchmark figures need \
                    `cargo run --release --bin cqrs-bench` (or pass --allow-debug)"
            .into());
    }
    let dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("current_exe has no directory")?
            .to_path_buf(),
    };
    if let (false, Some(cargo)) = (a.no_build, std::env::var_os("CARGO")) {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let mut c = Command::new(cargo);
        c.args(["build", "--bins", "--manifest-path"])
            .arg(&manifest);
        if !cfg!(debug_assertions) {
            c.arg("--release");
        }
        progress("building the binaries (cargo build --bins)");
        let ok = c
            .status()
            .map_err(|e| format!("cargo build: {e}"))?
            .success();
        if !ok {
            return Err("cargo build failed".into());
        }
    }
    let find = |name: &str| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{} is missing: run `cargo build --release --bins` first",
                p.display()
            ))
        }
    };
    Ok(Bins {
        cqrs: find("cqrs")?,
        echo: find("cqrs-echo")?,
        workload: find("cqrs-workload")?,
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

struct Workload {
    path: PathBuf,
    messages: u64,
    commands: u64,
}

/// Writes a workload file with `cqrs-workload` and counts its messages.
fn generate(bins: &Bins, path: &Path, flags: &[String]) -> Res<Workload> {
    let mut a = flags.to_vec();
    a.extend(["--out".into(), path.display().to_string()]);
    let status = Command::new(&bins.workload)
        .args(&a)
        .status()
        .map_err(|e| format!("cqrs-workload: {e}"))?;
    if !status.success() {
        return Err(format!("cqrs-workload {} failed", a.join(" ")));
    }
    let mut messages = 0;
    let mut commands = 0;
    let file = File::open(path).map_err(|e| e.to_string())?;
    for line in BufReader::with_capacity(1 << 16, file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        messages += 1;
        commands += u64::from(line.contains("\"type\":\"command\""));
    }
    Ok(Workload {
        path: path.to_path_buf(),
        messages,
        commands,
    })
}

fn read_lines(path: &Path) -> Res<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(text.lines().map(String::from).collect())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Report {
    lines: Vec<String>,
    targets: Vec<(String, String, bool)>,
}

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.lines.push(s);
    }
    fn target(&mut self, what: impl Into<String>, measured: impl Into<String>, met: bool) {
        self.targets.push((what.into(), measured.into(), met));
    }
}

fn machine() -> Vec<String> {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or("?".into(), |k| format!("{:.1} GiB", k as f64 / 1048576.0));
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let git = |a: &[&str]| {
        Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        c if c.is_empty() => std::env::var("CQRS_BENCH_COMMIT")
            .unwrap_or_else(|_| "unknown (not a git checkout; set CQRS_BENCH_COMMIT)".into()),
        c => c,
    };
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    vec![
        format!("date: {now}"),
        format!(
            "commit: {commit}{}",
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
        format!("cpu: {cpu}, {cores} cores; memory: {mem}; kernel: {kernel}"),
        format!(
            "load average at the start (1, 5, 15 min): {} (other work on the machine skews \
             every figure; the ratios to the echo floor and to fdatasync least)",
            load.join(", ")
        ),
    ]
}

fn bench(a: RunArgs) -> Res<()> {
    let bins = locate_bins(&a)?;
    let s = Sizes::from(&a);
    let own_dir = a.dir.is_none();
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("cqrs-bench-{}", std::process::id())),
    };
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = bench_in(&a, &bins, &s, &dir);
    if own_dir && !a.keep {
        let _ = fs::remove_dir_all(&dir);
    } else {
        progress(format!("files kept in {}", dir.display()));
    }
    result
}

fn bench_in(a: &RunArgs, bins: &Bins, s: &Sizes, dir: &Path) -> Res<()> {
    let mut r = Report {
        lines: Vec::new(),
        targets: Vec::new(),
    };
    r.line("# cqrs-bench");
    r.line("");
    for m in machine() {
        r.line(format!("- {m}"));
    }
    r.line(format!(
        "- working directory (stores, fsync probe): {}",
        dir.display()
    ));
    if cfg!(debug_assertions) {
        r.line("- DEBUG BUILD: the figures below mean nothing");
    }
    r.line("");

    // 1. The streamed workload.
    let flags: Vec<String> = vec![
        "--users".into(),
        s.users.to_string(),
        "--updates".into(),
        s.updates.to_string(),
        "--deletes".into(),
        a.deletes.to_string(),
        "--get-queries".into(),
        s.gets.to_string(),
        "--at-time-queries".into(),
        s.ats.to_string(),
        "--order".into(),
        a.order.clone(),
        "--seed".into(),
        a.seed.to_string(),
    ];
    progress(format!(
        "generating the workload: cqrs-workload {}",
        flags.join(" ")
    ));
    let w = generate(bins, &dir.join("workload.jsonl"), &flags)?;
    r.line(format!(
        "## Streamed workload: `cqrs-workload {}`",
        flags.join(" ")
    ));
    r.line("");
    r.line(format!(
        "{} messages: {} commands, {} queries. Standard input is the workload file, standard \
         output a file; wall time from spawn to exit; peak RSS and CPU time from wait4; \
         median of {} run(s). Every reply verified.",
        thousands(w.messages as f64),
        thousands(w.commands as f64),
        thousands((w.messages - w.commands) as f64),
        s.runs
    ));
    r.line("");

    // Rounds of (echo floor, in memory, SQLite), so that each round's ratios compare runs made
    // close together in time (the machine may be busy with something else now and then).
    let configs: [(&'static str, &Path, bool); 3] = [
        ("echo floor", &bins.echo, true),
        ("cqrs --in-memory", &bins.cqrs, false),
        ("cqrs (SQLite)", &bins.cqrs, false),
    ];
    let mut walls = vec![Vec::new(); 3];
    let mut cpus = vec![Vec::new(); 3];
    let mut ratios = vec![Vec::new(); 3];
    let mut rss = [0u64; 3];
    let mut floor_rss = 0u64;
    let mut sqlite_dir = None;
    let mut final_get = None;
    let mut events = 0;
    let probe_id = format!("user-{}", s.users / 2);
    for run in 0..s.runs {
        for (k, (name, bin, echo)) in configs.iter().enumerate() {
            let run_args = match k {
                0 => Vec::new(),
                1 => args(&["--in-memory"]),
                _ => {
                    let d = dir.join(format!("stream-sqlite-{run}"));
                    let _ = fs::remove_dir_all(&d);
                    if let Some(old) = sqlite_dir.replace(d.clone()) {
                        let _ = fs::remove_dir_all(old);
                    }
                    vec!["--data-dir".to_string(), d.display().to_string()]
                }
            };
            progress(format!("streaming through {name} (round {})", run + 1));
            let out = dir.join("replies.jsonl");
            floor_rss = floor_rss.max(own_rss_kib());
            let exit = run_streamed(bin, &run_args, &w.path, &out)?;
            progress(format!(
                "  {:.2} s; verifying the replies",
                exit.wall.as_secs_f64()
            ));
            let get = (k == 2).then_some(probe_id.as_str());
            let text = verify_in_child(&w.path, &out, *echo, get)
                .map_err(|e| format!("{name}: wrong replies: {e}"))?;
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix("final-get: ")) {
                final_get = Some(line.to_string());
            }
            events = verified_events(&text).unwrap_or(events);
            walls[k].push(exit.wall);
            cpus[k].push(exit.cpu);
            rss[k] = rss[k].max(exit.max_rss_kib);
            ratios[k].push(exit.wall.as_secs_f64() / walls[0][run as usize].as_secs_f64());
        }
    }
    let _ = fs::remove_file(dir.join("replies.jsonl"));
    r.line("| program | wall time | messages/s | commands/s | ns/message (wall) | CPU ns/message | peak RSS | time / echo floor |");
    r.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ratio = [0.0; 3];
    for (k, (name, _, _)) in configs.iter().enumerate() {
        let secs = median(walls[k].clone()).as_secs_f64();
        ratio[k] = median_f(ratios[k].clone());
        r.line(format!(
            "| {name} | {secs:.3} s | {} | {} | {:.0} | {:.0} | {} | {:.2} |",
            thousands(w.messages as f64 / secs),
            thousands(w.commands as f64 / secs),
            secs * 1e9 / w.messages as f64,
            median(cpus[k].clone()).as_secs_f64() * 1e9 / w.messages as f64,
            mib(rss[k]),
            ratio[k]
        ));
    }
    r.line("");
    if s.runs > 1 {
        let spread = |k: usize| {
            let v: Vec<String> = walls[k]
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect();
            v.join(" / ")
        };
        r.line(format!(
            "Wall times of each round (s): echo {}; in memory {}; SQLite {}. The ratio is the \
             median of each round's ratio.",
            spread(0),
            spread(1),
            spread(2)
        ));
        r.line("");
    }
    r.line(format!(
        "Peak RSS is wait4's ru_maxrss, which cannot be lower than this benchmark's own RSS when \
         it forks ({}).",
        mib(floor_rss)
    ));
    r.line("");
    r.target(
        "in-memory streamed: node time <= 2x the echo floor",
        format!("{:.2}x", ratio[1]),
        ratio[1] <= 2.0,
    );
    let durable_cps = w.commands as f64 / median(walls[2].clone()).as_secs_f64();
    r.target(
        "SQLite streamed: >= 100,000 commands/s",
        format!("{} commands/s", thousands(durable_cps)),
        durable_cps >= 100_000.0,
    );

    // 2. fdatasync on this disk, and one-at-a-time durable commands, interleaved so that both
    // see the same disk (others may be using it too).
    if s.latency > 0 {
        // Rounds, as for the streamed runs (each on a fresh store, the probes in turn with its
        // commands); the round with the median ratio is shown, the others' ratios beside it.
        let mut rounds = Vec::new();
        for _ in 0..s.runs {
            let lat = latency(bins, dir, s.latency, a.seed)?;
            rounds.push((lat.ratio(), lat));
        }
        rounds.sort_by(|x, y| x.0.total_cmp(&y.0));
        let ratios: Vec<String> = rounds
            .iter()
            .map(|(r, _)| format!("{:.0}%", r * 100.0))
            .collect();
        let lat = rounds.swap_remove(rounds.len() / 2).1;
        r.line(format!(
            "## fdatasync on this disk ({} samples of each: write 4 KiB + File::sync_data, in {})",
            s.latency,
            dir.display()
        ));
        r.line("");
        r.line("Taken in turn with the one-at-a-time commands below (probe, probe, command, ...), in the round shown there.");
        r.line("");
        r.line("| write | p50 | p99 | mean |");
        r.line("| --- | ---: | ---: | ---: |");
        for (name, v) in [
            ("overwrite in place + fdatasync", &lat.overwrite),
            ("append (the file grows) + fdatasync", &lat.append),
            ("overwrite in place + fsync (sync_all)", &lat.fsync),
        ] {
            r.line(format!(
                "| {name} | {} | {} | {} |",
                ms(pct(v, 0.5)),
                ms(pct(v, 0.99)),
                ms(mean(v))
            ));
        }
        r.line("");
        // Throughput against throughput: the mean command time against the mean fdatasync
        // time (both sampled in turn, so they see the same disk), the faster of the two kinds
        // (the stricter target).
        let fsync_time = mean(&lat.overwrite).min(mean(&lat.append));
        r.line(format!(
            "Reference fdatasync time: the faster fdatasync mean, {} (so 1 / fdatasync = {} /s).",
            ms(fsync_time),
            thousands(1.0 / fsync_time.as_secs_f64())
        ));
        r.line("");
        let sorted = &lat.commands;
        let n = sorted.len();
        let total: Duration = sorted.iter().sum();
        let rate = n as f64 / total.as_secs_f64();
        let limit = 1.0 / fsync_time.as_secs_f64();
        r.line(format!(
            "## One-at-a-time durable commands ({n} commands, SQLite, send one, wait for its reply)"
        ));
        r.line("");
        r.line(format!(
            "{} round(s) of {n} commands, each on a fresh store opened by an untimed `init`; the \
             round with the median ratio is shown. Ratios of the rounds: {}.",
            ratios.len(),
            ratios.join(", ")
        ));
        r.line("");
        r.line("| p50 | p90 | p99 | max | mean | commands/s | 1 / fdatasync | ratio |");
        r.line("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        r.line(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
            ms(pct(sorted, 0.5)),
            ms(pct(sorted, 0.9)),
            ms(pct(sorted, 0.99)),
            ms(pct(sorted, 1.0)),
            ms(total / n as u32),
            thousands(rate),
            thousands(limit),
            rate / limit * 100.0
        ));
        r.line("");
        let fsync_rate = 1.0 / mean(&lat.fsync).as_secs_f64();
        r.line(format!(
            "The same {n} commands through the echo floor, one at a time (pipes, no work): p50 \
             {}, p99 {}. Against 1 / (mean fsync) = {} /s, the durable \
             commands reach {:.0}%.",
            ms(pct(&lat.echo, 0.5)),
            ms(pct(&lat.echo, 0.99)),
            thousands(fsync_rate),
            rate / fsync_rate * 100.0
        ));
        r.line("");
        let floor = &lat.durable_echo;
        let floor_rate = floor.len() as f64 / floor.iter().sum::<Duration>().as_secs_f64();
        r.line(format!(
            "The durable floor (`cqrs-echo --fsync-file`: the same pipeline, and one write of \
             4 KiB + fdatasync per batch, no other work), taken in turn with the commands: p50 \
             {}, p99 {}, mean {} ({} /s, {:.0}% of 1 / fdatasync): the best a durable command \
             can do through these pipes on this disk. The durable commands reach {:.0}% of it.",
            ms(pct(floor, 0.5)),
            ms(pct(floor, 0.99)),
            ms(mean(floor)),
            thousands(floor_rate),
            floor_rate / limit * 100.0,
            rate / floor_rate * 100.0
        ));
        r.line("");
        r.target(
            "one-at-a-time durable commands: >= 80% of 1 / fdatasync",
            format!(
                "{:.0}% ({} commands/s vs {} fdatasync/s; {:.0}% of 1 / fsync)",
                rate / limit * 100.0,
                thousands(rate),
                thousands(limit),
                rate / fsync_rate * 100.0
            ),
            rate >= 0.8 * limit,
        );
    }

    // 3. GetUserAtTime on one long stream.
    if a.stream_events > 0 && s.stream_queries > 0 {
        r.line(format!(
            "## GetUserAtTime on one {}-event stream ({} queries at random times inside it, SQLite)",
            thousands(a.stream_events as f64),
            s.stream_queries
        ));
        r.line("");
        r.line("| snapshots | streamed, per query | one at a time p50 | p99 | loading the stream (streamed commands/s) |");
        r.line("| --- | ---: | ---: | ---: | ---: |");
        let mut with_snapshots = None;
        for (label, every) in [("every 100 events (default)", "100"), ("none", "0")] {
            let t = long_stream(bins, dir, a.stream_events, s.stream_queries, a.seed, every)?;
            r.line(format!(
                "| {label} | {} | {} | {} | {} |",
                us(t.streamed),
                us(pct(&t.round_trips, 0.5)),
                us(pct(&t.round_trips, 0.99)),
                thousands(a.stream_events as f64 / t.load.as_secs_f64())
            ));
            with_snapshots.get_or_insert(t);
        }
        r.line("");
        let t = with_snapshots.expect("ran");
        let p50 = pct(&t.round_trips, 0.5);
        r.target(
            format!(
                "GetUserAtTime on a {}-event stream: <= 1 ms",
                thousands(a.stream_events as f64)
            ),
            format!(
                "{} per query streamed, {} round trip p50",
                us(t.streamed),
                us(p50)
            ),
            t.streamed <= Duration::from_millis(1) && p50 <= Duration::from_millis(1),
        );
    }

    // 4. Opening the durable store and answering the first GetUser.
    if let (Some(d), Some(expected), true) = (&sqlite_dir, final_get, a.open_runs > 0) {
        let line = get_user_line(&probe_id);
        let mut times = Vec::new();
        for _ in 0..a.open_runs {
            progress("reopening the durable store for a first GetUser");
            let mut session =
                Session::start(&bins.cqrs, &["--data-dir".into(), d.display().to_string()])?;
            session.send(&line)?;
            let got = session.recv()?;
            times.push(session.started.elapsed());
            if got != expected {
                return Err(format!(
                    "first GetUser after opening: expected {expected}, got {}",
                    cut(&got)
                ));
            }
            session.finish()?;
        }
        let size: u64 = fs::read_dir(d)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        times.sort();
        r.line(format!(
            "## Opening the durable store ({} events, {} users, {:.0} MiB on disk) and answering the first GetUser",
            thousands(events as f64),
            thousands(s.users as f64),
            size as f64 / 1048576.0
        ));
        r.line("");
        r.line(format!(
            "From spawn to the reply, {} runs (page cache warm): min {}, median {}, max {}.",
            times.len(),
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        ));
        r.line("");
        let med = times[times.len() / 2];
        r.target(
            format!(
                "open a store with {} events + first GetUser: <= 1 s{}",
                thousands(events as f64),
                if events < 1_000_000 {
                    " (smaller than the target's 1,000,000 events)"
                } else {
                    ""
                }
            ),
            ms(med),
            med <= Duration::from_secs(1),
        );
    }

    // 5. Memory per live user.
    if s.mem_users > 0 {
        let flags = vec![
            "--users".to_string(),
            s.mem_users.to_string(),
            "--updates".into(),
            "0".into(),
            "--get-queries".into(),
            "1000".into(),
            "--at-time-queries".into(),
            "0".into(),
            "--seed".into(),
            a.seed.to_string(),
        ];
        progress(format!("memory: cqrs-workload {}", flags.join(" ")));
        let w = generate(bins, &dir.join("users.jsonl"), &flags)?;
        r.line(format!(
            "## Memory per live user: {} users created (`cqrs-workload {}`)",
            thousands(s.mem_users as f64),
            flags.join(" ")
        ));
        r.line("");
        r.line("| program | wall time | commands/s | peak RSS | RSS per user |");
        r.line("| --- | ---: | ---: | ---: | ---: |");
        let d = dir.join("mem-sqlite");
        let _ = fs::remove_dir_all(&d);
        for (name, run_args) in [
            ("cqrs --in-memory", args(&["--in-memory"])),
            (
                "cqrs (SQLite)",
                vec!["--data-dir".into(), d.display().to_string()],
            ),
        ] {
            progress(format!(
                "memory: streaming {} users through {name}",
                s.mem_users
            ));
            let out = dir.join("replies.jsonl");
            let exit = run_streamed(&bins.cqrs, &run_args, &w.path, &out)?;
            verify_in_child(&w.path, &out, false, None)
                .map_err(|e| format!("{name}: wrong replies: {e}"))?;
            let per_user = exit.max_rss_kib as f64 * 1024.0 / s.mem_users as f64;
            r.line(format!(
                "| {name} | {:.2} s | {} | {} | {:.0} bytes |",
                exit.wall.as_secs_f64(),
                thousands(w.commands as f64 / exit.wall.as_secs_f64()),
                mib(exit.max_rss_kib),
                per_user
            ));
            r.target(
                format!(
                    "{name}: <= 1 KB of RSS per live user at {} users{}",
                    thousands(s.mem_users as f64),
                    if s.mem_users < 1_000_000 {
                        " (fewer than the target's 1,000,000: fixed costs weigh more)"
                    } else {
                        ""
                    }
                ),
                format!("{per_user:.0} bytes"),
                per_user <= 1024.0,
            );
        }
        let _ = fs::remove_dir_all(&d);
        r.line("");
    }

    r.line("## Targets (issue 3)");
    r.line("");
    r.line("| target | measured | met |");
    r.line("| --- | --- | --- |");
    for (what, measured, met) in std::mem::take(&mut r.targets) {
        r.line(format!(
            "| {what} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        ));
    }
    r.line("");
    r.line("verified: every reply of every run matched the workload.");
    Ok(())
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The event count in `cqrs-bench verify`'s report.
fn verified_events(text: &str) -> Option<u64> {
    let before = text.split(" events)").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len() as u32
}

impl Latency {
    /// The target's ratio: commands per second against 1 / fdatasync (the faster kind).
    fn ratio(&self) -> f64 {
        let fsync_time = mean(&self.overwrite).min(mean(&self.append));
        fsync_time.as_secs_f64() / mean(&self.commands).as_secs_f64()
    }
}

struct Latency {
    /// Round trips, sorted.
    commands: Vec<Duration>,
    /// write 4 KiB at offset 0 + fdatasync (the file's size does not change), sorted.
    overwrite: Vec<Duration>,
    /// write 4 KiB at the end + fdatasync (the size changes, so metadata is synced too), sorted.
    append: Vec<Duration>,
    /// write 4 KiB at offset 0 + fsync (`File::sync_all`: what SQLite's bundled build calls at
    /// each commit, metadata included), sorted.
    fsync: Vec<Duration>,
    /// The same commands' round trips through the echo floor (pipes and thread hand-offs, no
    /// work), sorted.
    echo: Vec<Duration>,
    /// The same commands' round trips through the durable floor (`cqrs-echo --fsync-file`: the
    /// pipeline plus one write + fdatasync per batch, no other work), taken in turn with the
    /// commands, sorted.
    durable_echo: Vec<Duration>,
}

/// One-at-a-time durable commands (creates, then renames), each sent after the last reply, in
/// turn with write + fdatasync samples in the same directory.
fn latency(bins: &Bins, dir: &Path, n: u64, seed: u64) -> Res<Latency> {
    let users = n.div_ceil(2);
    let flags = args(&[
        "--users",
        &users.to_string(),
        "--updates",
        "1",
        "--get-queries",
        "0",
        "--at-time-queries",
        "0",
        "--seed",
        &seed.to_string(),
    ]);
    let w = generate(bins, &dir.join("latency.jsonl"), &flags)?;
    let lines: Vec<String> = read_lines(&w.path)?.into_iter().take(n as usize).collect();
    let d = dir.join("latency-sqlite");
    let _ = fs::remove_dir_all(&d);
    progress(format!(
        "latency: {n} durable commands, one at a time, with fdatasync samples"
    ));
    let block = vec![0xA5u8; 4096];
    let probe = |name: &str| -> Res<File> {
        let path = dir.join(name);
        let f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all_at(&block, 0).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        Ok(f)
    };
    let (fixed, growing, full) = (
        probe("fsync-overwrite")?,
        probe("fsync-append")?,
        probe("fsync-full")?,
    );
    let sample = |f: &File, at: u64, all: bool| -> Res<Duration> {
        let t = Instant::now();
        f.write_all_at(&block, at).map_err(|e| e.to_string())?;
        if all { f.sync_all() } else { f.sync_data() }.map_err(|e| e.to_string())?;
        Ok(t.elapsed())
    };
    let mut session = Session::start(&bins.cqrs, &["--data-dir".into(), d.display().to_string()])?;
    let floor_file = dir.join("durable-floor");
    let mut floor = Session::start(
        &bins.echo,
        &["--fsync-file".into(), floor_file.display().to_string()],
    )?;
    let mut model = Model::default();
    // The handshake first, untimed: the node opens its store when it learns its id, and that
    // open is measured on its own (part 4, "Opening the durable store"), not as part of the
    // first command's round trip.
    let init = init_line(lines.first().ok_or("no command to send")?)?;
    session.one_at_a_time(std::slice::from_ref(&init), &mut model)?;
    floor.send(&init)?;
    floor.recv()?;
    let mut out = Latency {
        commands: Vec::with_capacity(lines.len()),
        overwrite: Vec::with_capacity(lines.len()),
        append: Vec::with_capacity(lines.len()),
        fsync: Vec::with_capacity(lines.len()),
        echo: Vec::with_capacity(lines.len()),
        durable_echo: Vec::with_capacity(lines.len()),
    };
    for (i, line) in lines.iter().enumerate() {
        out.overwrite.push(sample(&fixed, 0, false)?);
        out.append
            .push(sample(&growing, 4096 * (i as u64 + 1), false)?);
        out.fsync.push(sample(&full, 0, true)?);
        let t = session.one_at_a_time(std::slice::from_ref(line), &mut model)?;
        out.commands.extend(t);
        let t = Instant::now();
        floor.send(line)?;
        floor.recv()?;
        out.durable_echo.push(t.elapsed());
    }
    session.finish()?;
    floor.finish()?;
    let _ = fs::remove_file(&floor_file);
    drop((fixed, growing, full));
    let mut echo = Session::start(&bins.echo, &[])?;
    for line in &lines {
        let t = Instant::now();
        echo.send(line)?;
        echo.recv()?;
        out.echo.push(t.elapsed());
    }
    echo.finish()?;
    for name in ["fsync-overwrite", "fsync-append", "fsync-full"] {
        let _ = fs::remove_file(dir.join(name));
    }
    let _ = fs::remove_dir_all(&d);
    out.commands.sort();
    out.overwrite.sort();
    out.append.sort();
    out.fsync.sort();
    out.echo.sort();
    out.durable_echo.sort();
    Ok(out)
}

/// An `init` from the client of `line` to its node, naming the node as `line` addresses it.
fn init_line(line: &str) -> Res<String> {
    let msg: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let src = string(msg.get("src"), "src")?;
    let dest = string(msg.get("dest"), "dest")?;
    Ok(json!({
        "src": src,
        "dest": dest,
        "body": {"type": "init", "msg_id": 0, "node_id": dest, "node_ids": [dest]},
    })
    .to_string())
}

struct LongStream {
    load: Duration,
    streamed: Duration,
    round_trips: Vec<Duration>,
}

/// One user with `events` events, then `queries` GetUserAtTime queries at times inside its
/// stream: all at once (time per query), then one at a time (round trips).
fn long_stream(
    bins: &Bins,
    dir: &Path,
    events: u64,
    queries: u64,
    seed: u64,
    snapshot_every: &str,
) -> Res<LongStream> {
    let flags = args(&[
        "--users",
        "1",
        "--updates",
        &(events - 1).to_string(),
        "--get-queries",
        "0",
        "--at-time-queries",
        &queries.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    let w = generate(bins, &dir.join("stream.jsonl"), &flags)?;
    let lines = read_lines(&w.path)?;
    let (commands, queries) = lines.split_at(events as usize);
    let d = dir.join("stream-sqlite");
    let _ = fs::remove_dir_all(&d);
    progress(format!(
        "GetUserAtTime: {events}-event stream, snapshots every {snapshot_every} (0: none)"
    ));
    let mut session = Session::start(
        &bins.cqrs,
        &[
            "--data-dir".into(),
            d.display().to_string(),
            "--snapshot-every".into(),
            snapshot_every.into(),
        ],
    )?;
    let mut model = Model::default();
    let load = session.stream(commands, &mut model)?;
    let streamed = session.stream(queries, &mut model)? / queries.len() as u32;
    let mut round_trips = session.one_at_a_time(queries, &mut model)?;
    round_trips.sort();
    session.finish()?;
    let _ = fs::remove_dir_all(&d);
    Ok(LongStream {
        load,
        streamed,
        round_trips,
    })
}
