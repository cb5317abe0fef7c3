//! The crash loop, short: `cqrs-crashloop` kills a durable node with SIGKILL 50 times at random
//! moments and checks, after every restart, that every acknowledged command's event is in the
//! log exactly once, that unacknowledged ones are whole or absent, that `cqrs check` passes and
//! that the node takes new commands. (The long run, 1,000 kills: see docs/reliability.md.)

use std::process::Command;

const CRASHLOOP: &str = env!("CARGO_BIN_EXE_cqrs-crashloop");
const CQRS: &str = env!("CARGO_BIN_EXE_cqrs");

/// The summary line's `key value` pairs.
fn field(summary: &str, key: &str) -> u64 {
    let mut words = summary.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next().unwrap().parse().unwrap();
        }
    }
    panic!("no {key} in {summary}");
}

#[test]
fn fifty_kills_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(CRASHLOOP)
        .args(["--kills", "50", "--seed", "20240101", "--cqrs", CQRS])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    eprintln!("{stdout}");
    assert_eq!(field(&stdout, "kills"), 50);
    assert_eq!(field(&stdout, "acknowledged-events-lost"), 0);
    assert!(field(&stdout, "acknowledged") > 500, "{stdout}");
    assert!(field(&stdout, "events-in-log") > 300, "{stdout}");
}

/// The harness must be able to fail: against a node whose store forgets its write-ahead log
/// at every start (acknowledged commits thrown away), it reports the loss.
#[test]
fn the_crash_loop_notices_a_store_that_loses_acknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("lossy-cqrs");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$prev\" in --data-dir) rm -f \"$a/n1.db-wal\";; esac; prev=\"$a\"; done\nexec '{CQRS}' \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(CRASHLOOP)
        .args(["--kills", "20", "--seed", "5"])
        .arg("--cqrs")
        .arg(&wrapper)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lost") || stderr.contains("GetUser"),
        "{stderr}"
    );
}
