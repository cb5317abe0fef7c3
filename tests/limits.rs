//! Limits against hostile input, on the real binary: memory stays bounded whatever the input
//! and however slowly the replies are read.
//!
//! * an over-long line is skipped as it streams by, never read into memory whole;
//! * when nobody reads stdout the node stops, its input queue fills, it stops reading stdin:
//!   backpressure all the way to the client, no unbounded queue; once stdout is read again,
//!   every reply arrives, in order;
//! * input that does not name the node (no `dest`, no `init`) is not held without bound while
//!   the node waits to learn its id.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// A value from /proc/<pid>/status, in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Writes `lines` from a thread, counting the bytes written so far; the thread hands stdin
/// back, still open.
fn writer(
    stdin: std::process::ChildStdin,
    lines: Vec<Vec<u8>>,
) -> (
    Arc<AtomicU64>,
    std::thread::JoinHandle<Option<std::process::ChildStdin>>,
) {
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let handle = std::thread::spawn(move || {
        let mut stdin = stdin;
        for line in lines {
            // Small writes, so that the count follows what the node has taken.
            for piece in line.chunks(64 * 1024) {
                if stdin.write_all(piece).is_err() {
                    return None;
                }
                w.fetch_add(piece.len() as u64, Ordering::SeqCst);
            }
        }
        // Kept open: the caller decides when the input ends.
        Some(stdin)
    });
    (written, handle)
}

/// Watches the node while the writer runs: returns the largest RSS seen once the writer has
/// stopped making progress (or after `limit`).
fn peak_rss_until_stalled(pid: i32, written: &AtomicU64, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut peak = 0;
    let mut last = (0, Instant::now());
    while start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
        peak = peak.max(status_bytes(pid, "VmRSS"));
        let now = written.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    peak
}

/// The process's peak RSS (VmHWM) once it has not grown for a second (or after `limit`).
fn peak_rss_once_steady(pid: i32, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut last = (status_bytes(pid, "VmHWM"), Instant::now());
    while start.elapsed() < limit && last.1.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
        let now = status_bytes(pid, "VmHWM");
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    last.0
}

#[test]
fn a_huge_line_is_skipped_as_it_streams_by() {
    let mut node = Node::spawn_on_demand(cqrs().arg("--in-memory"));
    // 64 MiB against the default 1 MiB limit; its head names the request, so it is answered.
    let head = r#"{"src":"c1","dest":"n1","body":{"type":"query","msg_id":1,"pad":""#;
    let mut line = head.as_bytes().to_vec();
    line.resize(64 * MIB as usize, b'x');
    line.extend_from_slice(b"\"}}\n");
    let stdin = node.take_stdin();
    let next = get_user(2, "nobody") + "\n";
    let (_, w) = writer(stdin, vec![line, next.into_bytes()]);
    let r = node.recv_body();
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["code"], 12);
    assert_eq!(r["in_reply_to"], 1);
    let r = node.recv_body();
    assert_eq!(r["in_reply_to"], 2, "the node goes on: {r}");
    node.restore_stdin(w.join().unwrap());
    let peak = status_bytes(node.pid(), "VmHWM");
    assert!(
        peak < 40 * MIB,
        "peak RSS {} MiB for a 64 MiB line",
        peak / MIB
    );
    eprintln!("64 MiB line: peak RSS {} MiB", peak / MIB);
}

#[test]
fn a_client_that_does_not_read_its_replies_cannot_make_the_node_grow() {
    let mut node = Node::spawn_on_demand(cqrs().args(["--in-memory", "--node-id", "n1"]));
    // A user whose every read is a 1 MiB reply: one unread reply fills the stdout pipe.
    create_big_user(&mut node);

    // Then, without reading a reply: a read of that user, and 256 MiB of requests padded to
    // 256 KiB each.
    let n = 1024;
    let mut lines = vec![(get_user(1, "big") + "\n").into_bytes()];
    let pad = "p".repeat(256 * 1024);
    for i in 2..n + 2 {
        let line = envelope(
            i,
            serde_json::json!({"type": "query", "pad": pad,
                               "query": {"type": "GetUser", "params": {"userId": "nobody"}}}),
        );
        lines.push((line + "\n").into_bytes());
    }
    let total: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let stdin = node.take_stdin();
    let (written, w) = writer(stdin, lines);

    let peak = peak_rss_until_stalled(node.pid(), &written, Duration::from_secs(30));
    let taken = written.load(Ordering::SeqCst);
    eprintln!(
        "not reading stdout: the node took {} of {} MiB of input, peak RSS {} MiB",
        taken / MIB,
        total / MIB,
        peak / MIB
    );
    assert!(
        taken < total / 2,
        "the node read {taken} of {total} bytes while nobody read its replies"
    );
    assert!(
        peak < 100 * MIB,
        "RSS {} MiB while stdout was not read",
        peak / MIB
    );

    // Now read: every reply arrives, in order.
    let mut line = String::new();
    for i in 1..n + 2 {
        line = node
            .recv_or_end()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("reply {i} missing"));
        let prefix = format!(r#""in_reply_to":{i},"#);
        assert!(
            line[..80].contains(&prefix),
            "reply {i} expected, got {}",
            &line[..80]
        );
    }
    assert!(line.contains("query_result"));
    let stdin = w.join().unwrap();
    drop(stdin);
    let end = node.finish();
    assert!(end.rest.is_empty());
    assert!(end.status.success());
}

/// A user whose every read is a reply of about 1 MiB.
fn create_big_user(node: &mut Node) {
    let mut attrs = serde_json::Map::new();
    attrs.insert("id".into(), "big".into());
    attrs.insert("name".into(), "Big".into());
    for i in 0..16 {
        attrs.insert(format!("a{i}"), "v".repeat(64_000).into());
    }
    let r = node.call(&command(0, "CreateUser", attrs.into()));
    assert!(is_success(&r), "{r}");
}

#[test]
fn a_batch_of_large_replies_is_not_held_in_memory_whole() {
    // A command, then 800 reads of a 1 MiB user, sent at once: one batch, one transaction,
    // whose replies wait for its commit. They must not all wait in memory (800 MiB).
    let mut node = Node::spawn_on_demand(cqrs().args(["--in-memory", "--node-id", "n1"]));
    create_big_user(&mut node);
    let n = 800;
    let mut data = create(1, "small", "S") + "\n";
    for i in 2..n + 2 {
        data += &(get_user(i, "big") + "\n");
    }
    let stdin = node.take_stdin();
    let (written, w) = writer(stdin, vec![data.into_bytes()]);
    peak_rss_until_stalled(node.pid(), &written, Duration::from_secs(30));
    // The input is all read long before the node is done (wrongly) buffering replies: it stalls
    // only once its stdout pipe is full, so wait for its peak to stop growing.
    let peak = peak_rss_once_steady(node.pid(), Duration::from_secs(30));
    eprintln!(
        "a command and {n} reads of 1 MiB, unread: peak RSS {} MiB",
        peak / MIB
    );
    // About 30 MiB once the big user is stored (debug build); the replies of a whole chunk of
    // 256 reads, held until the chunk's last one, made it 270 MiB.
    assert!(peak < 80 * MIB, "RSS {} MiB", peak / MIB);
    let r = node.recv_body();
    assert!(is_success(&r) && r["in_reply_to"] == 1, "{r}");
    for i in 2..n + 2 {
        let line = node
            .recv_or_end()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("reply {i} missing"));
        let prefix = format!(r#""in_reply_to":{i},"data":{{"id":"big""#);
        assert!(line[..120].contains(&prefix), "reply {i}: {}", &line[..120]);
    }
    node.restore_stdin(w.join().unwrap());
    let end = node.finish();
    assert!(end.rest.is_empty());
    assert!(end.status.success());
}

#[test]
fn input_that_names_no_node_is_not_held_without_bound() {
    // No --node-id: the node waits for a message that names it. 256 MiB of requests without a
    // `dest` must not pile up in memory meanwhile.
    let mut node = Node::spawn_on_demand(cqrs().arg("--in-memory"));
    let pad = "p".repeat(256 * 1024);
    let line = format!(r#"{{"src":"c1","body":{{"type":"query","msg_id":1,"pad":"{pad}"}}}}"#);
    let lines: Vec<Vec<u8>> = (0..1024)
        .map(|_| format!("{line}\n").into_bytes())
        .collect();
    let stdin = node.take_stdin();
    let (written, w) = writer(stdin, lines);
    let peak = peak_rss_until_stalled(node.pid(), &written, Duration::from_secs(30));
    node.restore_stdin(w.join().unwrap());
    eprintln!("256 MiB naming no node: peak RSS {} MiB", peak / MIB);
    assert!(peak < 200 * MIB, "RSS {} MiB", peak / MIB);
    // Then a message that names the node: it is answered, and so are the first requests that
    // were held (error 12: no dest), up to the bound.
    node.send(&get_user(7, "nobody"));
    let end = node.finish();
    let replies = end.bodies();
    let last = replies.last().expect("an answer");
    assert_eq!(last["in_reply_to"], 7, "{last}");
    assert_eq!(last["type"], "query_result");
    let held = replies.len() - 1;
    assert!(held > 0 && held < 1024, "{held} held requests answered");
    for r in &replies[..held] {
        assert_eq!(r["code"], 12, "{r}");
    }
    assert!(end.status.success());
}

/// The node turns transparent huge pages off for itself (docs/benchmarks.md: mimalloc kept
/// faulting 2 MiB pages back in). Linux reports it in /proc/<pid>/status as `THP_enabled: 0`
/// on kernels that have the field; elsewhere there is nothing to check.
#[test]
fn the_node_runs_without_transparent_huge_pages() {
    let mut node = Node::in_memory();
    // A reply means main() has run past its first line.
    let reply = node.call(&get_user(1, "nobody"));
    assert_eq!(reply["type"], "query_result");
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
    node.finish().assert_clean();
    match thp {
        Some(line) => assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}"),
        None => eprintln!("this kernel does not report THP_enabled; nothing to check"),
    }
}
