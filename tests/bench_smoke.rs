//! Smoke test of the benchmark tooling (debug build, tiny sizes, no timing assertions): the
//! workload generator is deterministic, the verifier accepts the node's real replies and rejects
//! wrong ones, and the whole `cqrs-bench` run goes through on a tiny workload.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin(name: &str) -> PathBuf {
    match name {
        "cqrs" => env!("CARGO_BIN_EXE_cqrs"),
        "cqrs-echo" => env!("CARGO_BIN_EXE_cqrs-echo"),
        "cqrs-bench" => env!("CARGO_BIN_EXE_cqrs-bench"),
        "cqrs-workload" => env!("CARGO_BIN_EXE_cqrs-workload"),
        _ => unreachable!(),
    }
    .into()
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env("CQRS_LOG", "warn")
        // The store is the one the flags name, not one from the caller's environment.
        .env_remove("CQRS_POSTGRES_URL")
        .output()
        .unwrap()
}

fn workload(args: &[&str]) -> Vec<u8> {
    let out = run("cqrs-workload", args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const SMALL: &[&str] = &[
    "--users",
    "40",
    "--updates",
    "3",
    "--deletes",
    "5",
    "--get-queries",
    "60",
    "--at-time-queries",
    "60",
    "--order",
    "interleaved",
];

/// Pipes `input` through `program args`, returns stdout.
fn pipe(program: &Path, args: &[&str], input: &Path) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .env("CQRS_LOG", "warn")
        .env_remove("CQRS_POSTGRES_URL")
        .stdin(std::fs::File::open(input).unwrap())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn verify(dir: &Path, workload: &Path, replies: &[u8], echo: bool) -> Output {
    let path = dir.join("replies.jsonl");
    std::fs::write(&path, replies).unwrap();
    let (w, r) = (workload.display().to_string(), path.display().to_string());
    let mut args = vec!["verify", "--workload", &w, "--replies", &r];
    if echo {
        args.push("--echo");
    }
    run("cqrs-bench", &args)
}

fn assert_rejected(out: &Output, why: &str) {
    assert!(!out.status.success(), "the verifier accepted {why}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{why}: {err}");
}

#[test]
fn the_workload_is_deterministic_and_seeded() {
    let a = workload(SMALL);
    assert_eq!(a, workload(SMALL));
    let mut other_seed = SMALL.to_vec();
    other_seed.extend(["--seed", "7"]);
    assert_ne!(a, workload(&other_seed));
    let lines = a.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    // 40 creates, 40 x 3 changes, 5 deletes, 120 queries.
    assert_eq!(lines, 40 + 120 + 5 + 120);
    let grouped = workload(&[
        "--users",
        "3",
        "--updates",
        "1",
        "--get-queries",
        "1",
        "--at-time-queries",
        "0",
    ]);
    let text = String::from_utf8(grouped).unwrap();
    let kinds: Vec<&str> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let body = &v["body"];
            let k = body["command"]["type"]
                .as_str()
                .or(body["query"]["type"].as_str());
            match k.unwrap() {
                "CreateUser" => "create",
                "GetUser" => "get",
                _ => "change",
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["create", "create", "create", "change", "change", "change", "get"]
    );
}

#[test]
fn the_verifier_accepts_the_nodes_replies_and_rejects_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("workload.jsonl");
    std::fs::write(&w, workload(SMALL)).unwrap();
    let good = pipe(&bin("cqrs"), &["--in-memory"], &w);
    let out = verify(dir.path(), &w, &good, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified: 285 replies"));
    let text = String::from_utf8(good.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // A GetUserAtTime answer with another name.
    let i = lines
        .iter()
        .position(|l| l.contains("\"at_time\"") && l.contains("\"name\":\""))
        .expect("some GetUserAtTime finds a user");
    let mut bad = lines.clone();
    let changed = lines[i].replacen("\"name\":\"", "\"name\":\"X", 1);
    bad[i] = &changed;
    assert_rejected(
        &verify(dir.path(), &w, bad.join("\n").as_bytes(), false),
        "a wrong name",
    );

    // A GetUser answered null when the user exists (or the other way round).
    let i = lines
        .iter()
        .position(|l| {
            l.contains("\"query_result\"")
                && !l.contains("\"at_time\"")
                && !l.contains("\"data\":null")
        })
        .expect("some GetUser finds a user");
    let mut bad = lines.clone();
    let v: serde_json::Value = serde_json::from_str(lines[i]).unwrap();
    let nulled = format!(
        r#"{{"src":"cqrs","dest":"c1","body":{{"type":"query_result","in_reply_to":{},"data":null}}}}"#,
        v["body"]["in_reply_to"]
    );
    bad[i] = &nulled;
    assert_rejected(
        &verify(dir.path(), &w, bad.join("\n").as_bytes(), false),
        "a null user",
    );

    // A failed command.
    let i = lines
        .iter()
        .position(|l| l.contains("\"success\":true"))
        .unwrap();
    let mut bad = lines.clone();
    let failed = lines[i].replacen("\"success\":true", "\"success\":false", 1);
    bad[i] = &failed;
    assert_rejected(
        &verify(dir.path(), &w, bad.join("\n").as_bytes(), false),
        "a failure",
    );

    // Replies out of order, one missing, one too many.
    let mut bad = lines.clone();
    bad.swap(3, 4);
    assert_rejected(
        &verify(dir.path(), &w, bad.join("\n").as_bytes(), false),
        "swapped replies",
    );
    let mut bad = lines.clone();
    bad.pop();
    assert_rejected(
        &verify(dir.path(), &w, bad.join("\n").as_bytes(), false),
        "a missing reply",
    );
    let mut bad = lines.clone();
    bad.push(lines[0]);
    assert_rejected(
        &verify(dir.path(), &w, bad.join("\n").as_bytes(), false),
        "an extra reply",
    );

    // The echo floor answers every message with a well-formed reply, but not the right state.
    let echo = pipe(&bin("cqrs-echo"), &[], &w);
    let out = verify(dir.path(), &w, &echo, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_rejected(
        &verify(dir.path(), &w, &echo, false),
        "the echo floor's replies",
    );
}

#[test]
fn a_tiny_benchmark_run_goes_through_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let bins = bin("cqrs");
    let bin_dir = bins.parent().unwrap().display().to_string();
    let work = dir.path().display().to_string();
    let out = run(
        "cqrs-bench",
        &[
            "--allow-debug",
            "--no-build",
            "--bin-dir",
            &bin_dir,
            "--dir",
            &work,
            "--users",
            "30",
            "--updates",
            "2",
            "--deletes",
            "3",
            "--order",
            "interleaved",
            "--runs",
            "1",
            "--latency-commands",
            "10",
            "--stream-events",
            "60",
            "--stream-queries",
            "5",
            "--open-runs",
            "1",
            "--mem-users",
            "50",
            "--list-at-time-users",
            "300",
            "--list-at-time-queries",
            "20",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in [
        "| echo floor |",
        "| cqrs --in-memory |",
        "| cqrs (SQLite) |",
        "## fdatasync",
        "## One-at-a-time durable commands",
        "## GetUserAtTime on one 60-event stream",
        "## Opening the durable store (93 events",
        "## Memory per live user: 50 users",
        "## ListUsersAtTime: a page of 100 at 20 random times, 300 users with 4 events each",
        "| in memory |",
        "| SQLite |",
        "## Targets (issue 3)",
        "verified: every reply of every run matched the workload.",
    ] {
        assert!(stdout.contains(section), "no '{section}' in:\n{stdout}");
    }
}
