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

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// What a node left behind when it ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Stdout lines not read before the end.
    pub rest: Vec<String>,
    pub stderr: String,
}

impl Finished {
    /// Asserts a clean exit (status 0) with no unread reply.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert!(
            self.status.success(),
            "the node exited with {}; stderr:\n{}",
            self.status,
            self.stderr
        );
        assert!(
            self.rest.is_empty(),
            "unexpected output lines: {:#?}\nstderr:\n{}",
            self.rest,
            self.stderr
        );
    }

    /// Asserts a subcommand's success (status 0), showing its output when not.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "exit {}; stdout:\n{}\nstderr:\n{}",
            self.status,
            self.rest.join("\n"),
            self.stderr
        );
    }

    /// The bodies of the unread replies ([`Finished::rest`]).
    pub fn bodies(&self) -> Vec<Value> {
        self.rest.iter().map(|l| body_of(l)).collect()
    }
}

/// The `body` of a reply line; panics if the line is not JSON.
pub fn body_of(line: &str) -> Value {
    let mut v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v["body"].take()
}

/// A running `cqrs` process.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Stdout lines; `Err` holds a cut-off last line.
    lines: Receiver<Result<String, String>>,
    /// When reading on demand: how many more lines the stdout thread may read.
    demand: Sender<usize>,
    on_demand: bool,
    stdout_thread: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<String>>,
}

impl Node {
    /// Spawns `cmd` with all three standard streams piped; stdout is read eagerly.
    pub fn spawn(cmd: &mut Command) -> Node {
        Self::start(cmd, false)
    }

    /// Like [`Node::spawn`], but stdout is read only as the test asks for lines: unread
    /// replies stay in the pipe, and a node that writes more than it holds must wait.
    pub fn spawn_on_demand(cmd: &mut Command) -> Node {
        Self::start(cmd, true)
    }

    fn start(cmd: &mut Command, on_demand: bool) -> Node {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        let (demand, wanted) = mpsc::channel::<usize>();
        let stdout_thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut credit = if on_demand { 0 } else { usize::MAX };
            loop {
                while credit == 0 {
                    match wanted.recv() {
                        Ok(n) => credit = n,
                        Err(_) => return,
                    }
                }
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                credit -= 1;
                let item = if line.pop() == Some(b'\n') {
                    Ok(String::from_utf8(line).expect("the node's output is UTF-8"))
                } else {
                    // Only a killed node may leave half a line.
                    Err(String::from_utf8_lossy(&line).into_owned())
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        let stderr_thread = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        Node {
            stdin: child.stdin.take(),
            child,
            lines,
            demand,
            on_demand,
            stdout_thread: Some(stdout_thread),
            stderr_thread: Some(stderr_thread),
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
        self.child.id() as i32
    }

    /// Sends signal `sig` to the node.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Writes raw bytes to the node's stdin and flushes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to the node failed: {e}"));
    }

    /// Writes one line (a newline is added).
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// Writes one line, ignoring a failure (for a node that may already have exited).
    pub fn send_lossy(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    /// Writes all lines in a single write, so that the node finds them waiting together.
    pub fn send_all<S: AsRef<str>>(&mut self, lines: &[S]) {
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l.as_ref().as_bytes());
            bytes.push(b'\n');
        }
        self.send_raw(&bytes);
    }

    /// When reading on demand, lets the stdout thread read `n` more lines.
    fn want(&mut self, n: usize) {
        if self.on_demand {
            // Fails only when the thread has ended (end of stdout): the receive then says so.
            let _ = self.demand.send(n);
        }
    }

    /// The next reply line; panics if none comes within [`TIMEOUT`] or stdout ends.
    pub fn recv(&mut self) -> String {
        self.want(1);
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(cut)) => panic!("the node's output ended in the middle of a line: {cut:?}"),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("no reply within {TIMEOUT:?}: the node hangs")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                let stderr = self.take_stderr();
                panic!("the node closed stdout (exit {status:?}) instead of replying; stderr:\n{stderr}")
            }
        }
    }

    /// The next line if one is already there or comes within [`TIMEOUT`]; `None` at the end of
    /// stdout. A cut-off last line (from a killed node) comes as `Err`.
    pub fn recv_or_end(&mut self) -> Option<Result<String, String>> {
        self.want(1);
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("no reply and no end within {TIMEOUT:?}: the node hangs")
            }
            Err(RecvTimeoutError::Disconnected) => None,
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
        self.stdin.take().expect("stdin is still open")
    }

    /// Gives back a stdin handle taken with [`Node::take_stdin`] (if it is still there).
    pub fn restore_stdin(&mut self, stdin: Option<ChildStdin>) {
        self.stdin = stdin;
    }

    /// Closes stdin: the end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the node");
        self.child.wait().expect("reap the node");
    }

    /// Waits for the process to exit (panics after [`TIMEOUT`]).
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the node did not exit within {TIMEOUT:?} after the end of its input");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn take_stderr(&mut self) -> String {
        self.stderr_thread
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default()
    }

    /// Ends the input, reads what is left up to the end of stdout, waits for the exit, and
    /// collects it all.
    pub fn finish(mut self) -> Finished {
        self.close_stdin();
        let rest = self
            .drain()
            .into_iter()
            .map(|l| l.unwrap_or_else(|cut| panic!("output ends in a cut-off line: {cut:?}")))
            .collect();
        let status = self.wait();
        if let Some(t) = self.stdout_thread.take() {
            t.join().expect("stdout reader");
        }
        let stderr = self.take_stderr();
        Finished {
            status,
            rest,
            stderr,
        }
    }

    /// Everything the node still writes until stdout ends (stdin must already be closed or
    /// the process killed). From here on, stdout is read eagerly.
    pub fn drain(&mut self) -> Vec<Result<String, String>> {
        self.want(usize::MAX);
        self.on_demand = false;
        std::iter::from_fn(|| self.recv_or_end()).collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
