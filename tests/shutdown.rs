//! Shutdown: SIGTERM, SIGINT and the end of input finish the batch in hand, commit it, answer
//! it, and exit 0. Every success printed is durable; nothing is applied without its answer.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const N: u64 = 3000;

/// Sends N creates (`u0`...) from a thread, as fast as the node takes them.
fn flood(node: &mut Node) -> std::thread::JoinHandle<()> {
    let mut stdin = node.take_stdin();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(&mut stdin);
        for i in 0..N {
            if writeln!(w, "{}", create(i, &format!("u{i}"), "x")).is_err() {
                return; // the node has gone: fine
            }
        }
        let _ = w.flush();
        // Keep stdin open: only the signal may end the node.
        std::thread::park_timeout(Duration::from_secs(120));
    })
}

/// Reads every reply left and waits for the node to exit. A watchdog kills a node that hangs
/// (a guard against a stuck test, not a timing assertion: the test then fails on the status).
fn wait(node: Node) -> (Vec<Value>, std::process::ExitStatus) {
    let pid = node.pid();
    let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if cancelled.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill(2) on our own child, still unreaped (we have not waited yet).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let end = node.finish();
    let _ = cancel.send(());
    watchdog.join().unwrap();
    (end.bodies(), end.status)
}

/// The ids of the users a fresh node on `dir` holds, among u0..uN.
fn stored_users(dir: &std::path::Path) -> BTreeSet<u64> {
    let mut node = Node::durable(dir);
    let mut present = BTreeSet::new();
    let mut after = Value::Null;
    loop {
        let r = node.call(&query(
            1,
            "ListUsers",
            json!({"limit": 1000, "after": after}),
        ));
        for u in r["data"]["users"].as_array().unwrap() {
            let id = u["id"].as_str().unwrap();
            present.insert(id[1..].parse::<u64>().unwrap());
        }
        after = r["data"]["next"].clone();
        if after.is_null() {
            break;
        }
    }
    present
}

fn stop_with(sig: i32) {
    let dir = tempdir();
    let mut node = Node::durable(dir.path());
    let writer = flood(&mut node);
    // Some replies first, so that the signal lands while work is in hand.
    let mut acked = BTreeSet::new();
    for _ in 0..20 {
        let r = node.recv_body();
        assert!(is_success(&r), "{r}");
        acked.insert(r["in_reply_to"].as_u64().unwrap());
    }
    node.signal(sig);
    let (rest, status) = wait(node);
    writer.thread().unpark();
    assert_eq!(status.code(), Some(0), "signal {sig}: {status:?}");
    for r in &rest {
        assert!(is_success(r), "{r}");
        acked.insert(r["in_reply_to"].as_u64().unwrap());
    }
    // Replies come in order: the acknowledged commands are a prefix.
    let k = acked.len() as u64;
    assert_eq!(acked, (0..k).collect(), "signal {sig}");
    // Durable, and nothing applied without being answered (the batch in hand was answered).
    assert_eq!(stored_users(dir.path()), acked, "signal {sig}");
    assert_check(dir.path());
    eprintln!("signal {sig}: {k} of {N} commands answered and durable");
}

#[test]
fn sigterm_finishes_the_batch_in_hand_and_exits_0() {
    stop_with(libc::SIGTERM);
}

#[test]
fn sigint_finishes_the_batch_in_hand_and_exits_0() {
    stop_with(libc::SIGINT);
}

/// A client that sends one create at a time and waits for its reply (requests that the reader
/// thread handles itself), stopped by a signal `after` some time: exit 0, and the users stored
/// are exactly those answered (the request in hand is finished and answered; none after it is
/// run).
fn stop_one_at_a_time(sig: i32, after: Duration) {
    let dir = tempdir();
    let mut node = Node::durable(dir.path());
    let pid = node.pid();
    let signaller = std::thread::spawn(move || {
        std::thread::sleep(after);
        // SAFETY: kill(2) on our own child, unreaped until `wait` below.
        unsafe { libc::kill(pid, sig) };
    });
    let mut acked = BTreeSet::new();
    for i in 0..N {
        node.send_lossy(&create(i, &format!("u{i}"), "x"));
        match node.recv_or_end() {
            Some(Ok(line)) => {
                let r = body_of(&line);
                assert!(is_success(&r), "{r}");
                assert_eq!(r["in_reply_to"], i, "{r}");
                acked.insert(i);
            }
            Some(Err(cut)) => panic!("a cut-off reply: {cut:?}"),
            None => break, // the node has exited
        }
    }
    signaller.join().unwrap();
    let (rest, status) = wait(node);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(status.code(), Some(0), "signal {sig}: {status:?}");
    assert_eq!(stored_users(dir.path()), acked, "signal {sig}");
    assert_check(dir.path());
    eprintln!(
        "signal {sig} after {after:?}: {} commands answered one at a time, all durable",
        acked.len()
    );
}

#[test]
fn a_signal_between_lone_requests_finishes_the_one_in_hand() {
    for (sig, ms) in [
        (libc::SIGTERM, 50),
        (libc::SIGINT, 120),
        (libc::SIGTERM, 200),
    ] {
        stop_one_at_a_time(sig, Duration::from_millis(ms));
    }
}

#[test]
fn a_signal_while_idle_exits_0_at_once() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempdir();
        let mut node = Node::durable(dir.path());
        assert!(is_success(&node.call(&create(1, "a", "A"))));
        node.signal(sig);
        let (rest, status) = wait(node);
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(status.code(), Some(0), "signal {sig}");
        assert_eq!(
            stored_users_named(dir.path(), "a"),
            json!({"id": "a", "name": "A"})
        );
    }
}

fn stored_users_named(dir: &std::path::Path, id: &str) -> Value {
    let mut node = Node::durable(dir);
    node.call(&get_user(1, id))["data"].clone()
}

#[test]
fn end_of_input_answers_everything_and_exits_0() {
    let dir = tempdir();
    let mut node = Node::durable(dir.path());
    let mut stdin = node.take_stdin();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(&mut stdin);
        for i in 0..N {
            writeln!(w, "{}", create(i, &format!("u{i}"), "x")).unwrap();
        }
        // Dropping stdin is the end of input.
    });
    let (replies, status) = wait(node);
    writer.join().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(replies.len() as u64, N);
    for (i, r) in replies.iter().enumerate() {
        assert!(is_success(r) && r["in_reply_to"] == i, "{r}");
    }
    assert_eq!(stored_users(dir.path()), (0..N).collect());
    assert_check(dir.path());
}
