//! Helpers for the reliability tests that run the real `cqrs` binary: spawning it, talking to
//! it line by line, and checking its store afterwards.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};

use serde_json::{json, Value};

pub const CQRS: &str = env!("CARGO_BIN_EXE_cqrs");

/// A running node with a pipe on each side.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// `cqrs` with `args`; stderr is dropped unless `CQRS_TEST_STDERR` is set.
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_with(args, |_| {})
    }

    /// Like [`Proc::spawn`], letting `setup` change the command first.
    pub fn spawn_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Proc {
        let mut cmd = Command::new(CQRS);
        cmd.args(args)
            .env("CQRS_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("CQRS_TEST_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("spawn cqrs");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    /// A node on the durable store `dir`, id `n1`.
    pub fn durable(dir: &Path, extra: &[&str]) -> Proc {
        let mut args = vec!["--data-dir", dir.to_str().unwrap(), "--node-id", "n1"];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next reply's body; panics at end of output.
    pub fn recv(&mut self) -> Value {
        self.try_recv().expect("the node ended its output")
    }

    /// The next reply's body, `None` at end of output.
    pub fn try_recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        assert!(line.ends_with('\n'), "a reply cut off: {line}");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        Some(v["body"].clone())
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv()
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Every reply left, then the exit status.
    pub fn finish(mut self) -> (Vec<Value>, ExitStatus) {
        self.close_stdin();
        let mut rest = Vec::new();
        while let Some(v) = self.try_recv() {
            rest.push(v);
        }
        (rest, self.child.wait().unwrap())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cqrs check` on the store of node `n1` in `dir`: its exit status and its output.
pub fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(CQRS)
        .args([
            "check",
            "--data-dir",
            dir.to_str().unwrap(),
            "--node-id",
            "n1",
        ])
        .env("CQRS_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn assert_check(dir: &Path) {
    let (ok, out) = check(dir);
    assert!(ok, "cqrs check failed:\n{out}");
}

pub fn envelope(msg_id: u64, mut body: Value) -> String {
    body["msg_id"] = json!(msg_id);
    json!({"src": "c1", "dest": "n1", "body": body}).to_string()
}

pub fn command(msg_id: u64, kind: &str, payload: Value) -> String {
    envelope(
        msg_id,
        json!({"type": "command", "command": {"type": kind, "payload": payload}}),
    )
}

pub fn create(msg_id: u64, id: &str, name: &str) -> String {
    command(msg_id, "CreateUser", json!({"id": id, "name": name}))
}

pub fn query(msg_id: u64, kind: &str, params: Value) -> String {
    envelope(
        msg_id,
        json!({"type": "query", "query": {"type": kind, "params": params}}),
    )
}

pub fn get_user(msg_id: u64, id: &str) -> String {
    query(msg_id, "GetUser", json!({"userId": id}))
}

pub fn is_success(body: &Value) -> bool {
    body["type"] == "command_result" && body["success"] == true
}

pub fn is_crash(body: &Value) -> bool {
    body["type"] == "error" && body["code"] == 13
}
