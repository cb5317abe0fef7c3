//! However the input is paced, the node answers the same: the same replies, in the order of the
//! requests.
//!
//! The node has two ways to handle a request: a lone one is handled by the thread that read it,
//! a stream is queued for the writer thread (src/stdio, src/node/writer.rs). A mix of both must
//! never run a request before one sent earlier. The workload here makes order visible: each user's commands carry
//! the `expectedVersion` their place in the stream implies (one out of order is a conflict
//! instead of a success), and GetUser queries between them answer the state so far. Its
//! replies, sent all at once, are the reference; the same workload sent in bursts of random
//! sizes, single lines, waits for replies and short pauses must give them byte for byte.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_cqrs-workload");

fn workload(seed: u64) -> Vec<String> {
    let out = Command::new(WORKLOAD)
        .args(["--users", "40", "--updates", "12", "--get-queries", "300"])
        .args(["--at-time-queries", "100", "--order", "interleaved"])
        .args(["--seed", &seed.to_string()])
        .stderr(Stdio::null())
        .output()
        .expect("run cqrs-workload");
    assert!(out.status.success(), "cqrs-workload failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// All lines in one write; every reply.
fn all_at_once(cmd: &mut Command, lines: &[String]) -> Vec<String> {
    let mut node = Node::spawn(cmd);
    node.send_all(lines);
    let replies = node.recv_n(lines.len());
    node.finish().assert_clean();
    replies
}

/// The lines in bursts of 1 to 40 (mostly single lines), sometimes waiting for every reply so
/// far before the next burst, sometimes pausing up to 300 µs, sometimes going straight on.
fn paced(cmd: &mut Command, lines: &[String], seed: u64) -> Vec<String> {
    let mut rng = Rng(seed | 1);
    let mut node = Node::spawn(cmd);
    let mut replies = Vec::with_capacity(lines.len());
    let mut sent = 0;
    while sent < lines.len() {
        let burst = match rng.below(4) {
            0 => 1 + rng.below(40) as usize,
            _ => 1,
        };
        let end = (sent + burst).min(lines.len());
        node.send_all(&lines[sent..end]);
        sent = end;
        match rng.below(3) {
            0 => {
                let missing = sent - replies.len();
                replies.extend(node.recv_n(missing));
            }
            1 => std::thread::sleep(Duration::from_micros(rng.below(300))),
            _ => {}
        }
    }
    let missing = lines.len() - replies.len();
    replies.extend(node.recv_n(missing));
    node.finish().assert_clean();
    replies
}

fn assert_same(reference: &[String], got: &[String], what: &str) {
    assert_eq!(reference.len(), got.len(), "{what}: number of replies");
    for (i, (want, got)) in reference.iter().zip(got).enumerate() {
        assert_eq!(got, want, "{what}: reply {i} differs");
    }
}

#[test]
fn pacing_changes_no_reply_in_memory() {
    let lines = workload(7);
    let reference = all_at_once(cqrs().args(["--in-memory", "--node-id", "cqrs"]), &lines);
    assert!(
        reference.iter().all(|r| !r.contains("\"type\":\"error\"")),
        "the workload is valid: every request succeeds when sent at once"
    );
    for seed in [1, 2, 3] {
        let got = paced(
            cqrs().args(["--in-memory", "--node-id", "cqrs"]),
            &lines,
            seed,
        );
        assert_same(&reference, &got, &format!("in memory, pacing seed {seed}"));
    }
}

#[test]
fn pacing_changes_no_reply_on_sqlite() {
    let lines = workload(11);
    let dir = tempdir();
    let reference = all_at_once(
        cqrs()
            .arg("--data-dir")
            .arg(dir.path().join("reference"))
            .args(["--node-id", "cqrs"]),
        &lines,
    );
    assert!(
        reference.iter().all(|r| !r.contains("\"type\":\"error\"")),
        "the workload is valid: every request succeeds when sent at once"
    );
    for seed in [4, 5] {
        let got = paced(
            cqrs()
                .arg("--data-dir")
                .arg(dir.path().join(format!("paced-{seed}")))
                .args(["--node-id", "cqrs"]),
            &lines,
            seed,
        );
        assert_same(&reference, &got, &format!("on SQLite, pacing seed {seed}"));
    }
}
