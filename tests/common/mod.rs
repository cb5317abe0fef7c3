//! The one harness for the end-to-end tests: it spawns the real `cqrs` binary and talks to it
//! over pipes.
//!
//! What it offers:
//! * spawning: [`cqrs`] (a command line with a clean environment), [`n1_on`] (a node with id
//!   `n1` on a data directory), then [`Node::spawn`] or [`Node::spawn_on_demand`] (see below);
//!   shortcuts [`Node::in_memory`], [`Node::on_dir`], [`Node::durable`]; [`run_cli`] for a
//!   subcommand run to completion; [`tempdir`] for a temporary data directory;
//! * a raw-line API: [`Node::send`], [`Node::send_all`], [`Node::send_raw`], [`Node::recv`],
//!   [`Node::ask`], and the exact-line checks [`Node::expect`], [`Node::expect_line`],
//!   [`Node::expect_pipelined`] with the envelopes [`req`] / [`rep`] and [`assert_line`];
//! * a JSON API on the same process: [`Node::recv_body`], [`Node::try_recv_body`],
//!   [`Node::call`] give the reply's `body` as a [`Value`], with the request builders
//!   [`envelope`], [`command`], [`create`], [`query`], [`get_user`] and the predicates
//!   [`is_success`], [`is_crash`];
//! * the end of a process: [`Node::finish`] (end of input, exit, what is left: [`Finished`]),
//!   [`Node::kill`] (SIGKILL), [`Node::signal`], [`Node::drain`]; [`assert_check`] runs
//!   `cqrs check` on the store of `n1`.
//!
//! It is a thin layer over [`cqrs_node::testkit::process`], the harness that the benchmark and
//! the crash loop use too: the same calls, with a panic where the harness reports an error.
//! Every read has a deadline ([`TIMEOUT`]), so a node that hangs fails the test instead of
//! hanging it; a [`Node`] that is dropped while still running is killed. Its stderr is always
//! collected (into [`Finished::stderr`]).
//!
//! Stdout is read by a thread, in one of two ways chosen at spawn time:
//! * [`Node::spawn`] reads it eagerly: the node never waits for the test to read its replies;
//! * [`Node::spawn_on_demand`] reads a line only when the test asks for one, so replies the test
//!   has not asked for stay in the pipe and the node feels the backpressure of a client that
//!   does not read (as the limits and reliability tests need).

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command};
use std::time::Duration;

use cqrs_node::testkit::process::{self, Next, Options, Process, Stdout};
use serde_json::{json, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cqrs");

/// How long to wait for one reply, or for the node to exit, before calling it hung. Generous:
/// a healthy node answers in milliseconds, but CI machines are slow and shared.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The request envelope of the contract's examples: from `client` to `cqrs`.
pub fn req(body: &str) -> String {
    format!(r#"{{"src":"client","dest":"cqrs","body":{body}}}"#)
}

/// The reply envelope for [`req`]: from `cqrs` to `client`, compact JSON as the node writes it.
pub fn rep(body: &str) -> String {
    format!(r#"{{"src":"cqrs","dest":"client","body":{body}}}"#)
}

/// Asserts that a reply line is exactly `want`, showing both lines unescaped when not (long
/// lines around their first difference).
#[track_caller]
pub fn assert_line(got: &str, want: &str, context: &str) {
    if got == want {
        return;
    }
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "\n{}\nexpected: {}\n     got: {}\n(first difference at byte {at}; lengths {} and {})\n",
        clip(context, 0, 300),
        clip(want, at, 600),
        clip(got, at, 600),
        want.len(),
        got.len()
    );
}

/// `s`, or the part of it around byte `at` when it is longer than `max`.
pub fn clip(s: &str, at: usize, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let floor = |mut i: usize| {
        i = i.min(s.len());
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(at.saturating_sub(max / 2));
    let end = floor(start + max);
    format!(
        "{}{}{}",
        if start > 0 { "[...]" } else { "" },
        &s[start..end],
        if end < s.len() { "[...]" } else { "" }
    )
}

/// A `cqrs` command line with a clean environment (no `CQRS_*` variables from the caller).
pub fn cqrs() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("CQRS_DATA_DIR")
        .env_remove("CQRS_NODE_ID")
        .env_remove("CQRS_POSTGRES_URL")
        .env("CQRS_LOG", "info");
    cmd
}

/// `cqrs --data-dir DIR --node-id n1`: the store `DIR/n1.db`, whatever the messages' `dest`.
pub fn n1_on(dir: &Path) -> Command {
    let mut cmd = cqrs();
    cmd.arg("--data-dir").arg(dir).args(["--node-id", "n1"]);
    cmd
}

/// Runs a subcommand to completion (`cqrs rebuild ...`, `cqrs check ...`), with stdin closed.
pub fn run_cli(cmd: &mut Command) -> Finished {
    let node = Node::spawn(cmd);
    node.finish()
}

/// `cqrs check` on the store of node `n1` in `dir` must succeed.
#[track_caller]
pub fn assert_check(dir: &Path) {
    run_cli(
        cqrs()
            .arg("check")
            .arg("--data-dir")
            .arg(dir)
            .args(["--node-id", "n1"]),
    )
    .assert_success();
}

/// What a node left behind when it ended: its exit status, the stdout lines not read before the
/// end ([`Finished::rest`], [`Finished::bodies`]) and its stderr; [`Finished::assert_clean`]
/// (status 0, no unread reply) and [`Finished::assert_success`] check it.
pub use cqrs_node::testkit::process::Finished;

/// The `body` of a reply line; panics if the line is not JSON.
pub fn body_of(line: &str) -> Value {
    let mut v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v["body"].take()
}

/// The harness's result, or a panic with its message.
#[track_caller]
fn ok<T>(r: Result<T, process::Error>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A running `cqrs` process.
pub struct Node {
    process: Process,
}

impl Node {
    /// Spawns `cmd` with all three standard streams piped; stdout is read eagerly.
    pub fn spawn(cmd: &mut Command) -> Node {
        Self::start(cmd, Stdout::Eager)
    }

    /// Like [`Node::spawn`], but stdout is read only as the test asks for lines: unread
    /// replies stay in the pipe, and a node that writes more than it holds must wait.
    pub fn spawn_on_demand(cmd: &mut Command) -> Node {
        Self::start(cmd, Stdout::OnDemand)
    }

    fn start(cmd: &mut Command, stdout: Stdout) -> Node {
        Node {
            process: ok(Process::spawn(cmd, Options::captured(stdout, TIMEOUT))),
        }
    }

    /// `cqrs --in-memory`.
    pub fn in_memory() -> Node {
        Self::spawn(cqrs().arg("--in-memory"))
    }

    /// `cqrs --data-dir DIR`.
    pub fn on_dir(dir: &Path) -> Node {
        Self::spawn(cqrs().arg("--data-dir").arg(dir))
    }

    /// `cqrs --data-dir DIR --node-id n1` ([`n1_on`]), read on demand.
    pub fn durable(dir: &Path) -> Node {
        Self::spawn_on_demand(&mut n1_on(dir))
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Sends signal `sig` to the node.
    #[track_caller]
    pub fn signal(&self, sig: i32) {
        ok(self.process.signal(sig));
    }

    /// Writes raw bytes to the node's stdin and flushes.
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        ok(self.process.send_raw(bytes));
    }

    /// Writes one line (a newline is added).
    #[track_caller]
    pub fn send(&mut self, line: &str) {
        ok(self.process.send(line));
    }

    /// Writes one line, ignoring a failure (for a node that may already have exited).
    pub fn send_lossy(&mut self, line: &str) {
        let _ = self.process.send(line);
    }

    /// Writes all lines in a single write, so that the node finds them waiting together.
    #[track_caller]
    pub fn send_all<S: AsRef<str>>(&mut self, lines: &[S]) {
        ok(self.process.send_all(lines));
    }

    /// The next reply line; panics if none comes within [`TIMEOUT`] or stdout ends.
    #[track_caller]
    pub fn recv(&mut self) -> String {
        ok(self.process.recv())
    }

    /// The next line if one is already there or comes within [`TIMEOUT`]; `None` at the end of
    /// stdout. A cut-off last line (from a killed node) comes as `Err`.
    #[track_caller]
    pub fn recv_or_end(&mut self) -> Option<Result<String, String>> {
        match ok(self.process.read()) {
            Next::Line(line) => Some(Ok(line)),
            Next::Cut(cut) => Some(Err(cut)),
            Next::End => None,
        }
    }

    /// The next `n` reply lines.
    pub fn recv_n(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.recv()).collect()
    }

    /// Sends one line and returns the next reply line.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.recv()
    }

    /// The next reply's body; panics as [`Node::recv`] does.
    pub fn recv_body(&mut self) -> Value {
        body_of(&self.recv())
    }

    /// The next reply's body, `None` at the end of stdout; panics on a cut-off reply.
    pub fn try_recv_body(&mut self) -> Option<Value> {
        self.recv_or_end()
            .map(|l| body_of(&l.unwrap_or_else(|cut| panic!("a reply cut off: {cut}"))))
    }

    /// Sends a request line and returns its reply's body.
    pub fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv_body()
    }

    /// In lock-step: for each `(request body, reply body)`, sends `req(request)` and checks that
    /// the next line is exactly `rep(reply)`.
    #[track_caller]
    pub fn expect(&mut self, steps: &[(&str, &str)]) {
        for (i, (request, reply)) in steps.iter().enumerate() {
            let got = self.ask(&req(request));
            assert_line(
                &got,
                &rep(reply),
                &format!("step {i}: wrong reply to\n    {request}"),
            );
        }
    }

    /// Sends `request` (a whole line) and checks the reply is exactly `reply` (a whole line).
    #[track_caller]
    pub fn expect_line(&mut self, request: &str, reply: &str) {
        let got = self.ask(request);
        assert_line(&got, reply, &format!("wrong reply to\n    {request}"));
    }

    /// Pipelined: sends every request in one write, then checks the replies in order.
    #[track_caller]
    pub fn expect_pipelined(&mut self, steps: &[(&str, &str)]) {
        let requests: Vec<String> = steps.iter().map(|(r, _)| req(r)).collect();
        self.send_all(&requests);
        for (i, (request, reply)) in steps.iter().enumerate() {
            let got = self.recv();
            assert_line(
                &got,
                &rep(reply),
                &format!("step {i}: wrong reply to\n    {request}"),
            );
        }
    }

    /// Takes the stdin handle (e.g. to write from another thread). The node sees the end of
    /// input when it is dropped.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.process.take_stdin().expect("stdin is still open")
    }

    /// Gives back a stdin handle taken with [`Node::take_stdin`] (if it is still there).
    pub fn restore_stdin(&mut self, stdin: Option<ChildStdin>) {
        self.process.restore_stdin(stdin);
    }

    /// Closes stdin: the end of input.
    pub fn close_stdin(&mut self) {
        self.process.close_stdin();
    }

    /// SIGKILL, then waits for the process to be gone.
    #[track_caller]
    pub fn kill(&mut self) {
        ok(self.process.kill());
    }

    /// Ends the input, reads what is left up to the end of stdout, waits for the exit (panics
    /// after [`TIMEOUT`]), and collects it all.
    #[track_caller]
    pub fn finish(self) -> Finished {
        ok(self.process.finish())
    }

    /// Everything the node still writes until stdout ends (stdin must already be closed or
    /// the process killed). From here on, stdout is read eagerly.
    #[track_caller]
    pub fn drain(&mut self) -> Vec<Result<String, String>> {
        let (lines, cut) = ok(self.process.drain());
        lines.into_iter().map(Ok).chain(cut.map(Err)).collect()
    }
}

/// The files directly in `dir`, by name, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every path under `dir`, recursively, relative to it.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temp dir")
}

/// The store files (`*.db`) directly in `dir`, by name, sorted.
pub fn db_files(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(".db"))
        .collect()
}

/// A request line from `c1` to `n1` with `body`, given `msg_id`.
pub fn envelope(msg_id: u64, mut body: Value) -> String {
    body["msg_id"] = json!(msg_id);
    json!({"src": "c1", "dest": "n1", "body": body}).to_string()
}

/// A `command` request of type `kind`.
pub fn command(msg_id: u64, kind: &str, payload: Value) -> String {
    envelope(
        msg_id,
        json!({"type": "command", "command": {"type": kind, "payload": payload}}),
    )
}

/// `CreateUser` with an id and a name.
pub fn create(msg_id: u64, id: &str, name: &str) -> String {
    command(msg_id, "CreateUser", json!({"id": id, "name": name}))
}

/// A `query` request of type `kind`.
pub fn query(msg_id: u64, kind: &str, params: Value) -> String {
    envelope(
        msg_id,
        json!({"type": "query", "query": {"type": kind, "params": params}}),
    )
}

/// `GetUser` of `id`.
pub fn get_user(msg_id: u64, id: &str) -> String {
    query(msg_id, "GetUser", json!({"userId": id}))
}

/// A successful command result.
pub fn is_success(body: &Value) -> bool {
    body["type"] == "command_result" && body["success"] == true
}

/// Error 13: the store failed while committing.
pub fn is_crash(body: &Value) -> bool {
    body["type"] == "error" && body["code"] == 13
}
