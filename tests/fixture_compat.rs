//! Stored data stays readable for ever: the frozen fixture of tests/fixtures/v1 (a SQLite store
//! made by cqrs 0.1.0, its export, a fixed list of requests and the replies that version gave;
//! generate.sh says how they were made) must be opened, and answered identically, byte for
//! byte, by every later version:
//!
//! * a copy of `store.db` (migrated in place by the current code if its SQLite schema is older);
//! * a fresh store filled by `cqrs import` from `export.jsonl`.
//!
//! When this test fails, the change broke a promise to every existing store: fix the change
//! (an upcaster, a migration), never the fixture.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(name)
}

/// The node's stdout for `input`, on the store of `n1` in `dir`.
fn run(cmd: &mut Command, input: &[u8]) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every reply equals the frozen one, line by line (the first difference shown).
fn assert_replies(dir: &Path) {
    let queries = std::fs::read(fixture("queries.jsonl")).unwrap();
    let want = std::fs::read_to_string(fixture("replies.jsonl")).unwrap();
    let got = run(&mut n1_on(dir), &queries);
    let requests: Vec<String> = String::from_utf8(queries)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "one reply per request"
    );
    for ((got, want), request) in got.lines().zip(want.lines()).zip(&requests) {
        assert_line(got, want, request);
    }
    assert_eq!(got, want);
}

/// The fixture is frozen: its files are those cqrs 0.1.0 made (SHA-256). Opening `store.db` in
/// place (with `sqlite3`, say) may change it: the tests copy it first, and so should anyone.
#[test]
fn the_fixture_files_are_as_they_were_made() {
    use sha2::{Digest, Sha256};
    let frozen = [
        (
            "commands.jsonl",
            "b8be2ab634e9bb64b21e7cc61ce154c3f38e2fd065a38540093f1f4936764dc8",
        ),
        (
            "export.jsonl",
            "68336e51ac3a5a7751401e68976dc91daafb8f70de771a6fb4513d631c8ac3cc",
        ),
        (
            "queries.jsonl",
            "7fd6c747e223c638cea6683e9c6249166b5c15bd043c32899188cdbc12d4e49a",
        ),
        (
            "replies.jsonl",
            "8344374d629d813fe9fa3bbc724d85027bbe675d6ed87e438436ece0754fe9f8",
        ),
        (
            "store.db",
            "f076b42be67e5ca13b030f4a85e94f81e117925924b30a86b902264385ffe925",
        ),
    ];
    for (name, want) in frozen {
        let digest = Sha256::digest(std::fs::read(fixture(name)).unwrap());
        let got: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want, "tests/fixtures/v1/{name} changed: v1 is frozen");
    }
    // Only the store file: a WAL beside it would be read with it.
    for leftover in ["store.db-wal", "store.db-shm"] {
        assert!(!fixture(leftover).exists(), "tests/fixtures/v1/{leftover}");
    }
}

#[test]
fn the_frozen_store_answers_every_query_as_it_did() {
    let dir = tempdir();
    std::fs::copy(fixture("store.db"), dir.path().join("n1.db")).unwrap();
    assert_check(dir.path());
    assert_replies(dir.path());
    assert_check(dir.path());
}

#[test]
fn the_frozen_export_imports_and_answers_every_query_as_it_did() {
    let dir = tempdir();
    let export = std::fs::read(fixture("export.jsonl")).unwrap();
    let out = run(n1_on(dir.path()).arg("import"), &export);
    assert!(
        out.contains(": imported 121 events and 6 command ids"),
        "{out}"
    );
    assert_check(dir.path());
    assert_replies(dir.path());
}

/// The frozen store, exported by the current code: the same events and command ids as the
/// frozen export (the header names the version that wrote it, so it is compared apart). A
/// later version that writes a new export format compares its reading of v1 here instead.
#[test]
fn the_frozen_store_exports_as_the_frozen_export() {
    let dir = tempdir();
    std::fs::copy(fixture("store.db"), dir.path().join("n1.db")).unwrap();
    let now = run(n1_on(dir.path()).arg("export"), b"");
    let then = std::fs::read_to_string(fixture("export.jsonl")).unwrap();
    let (now_header, now_rest) = now.split_once('\n').unwrap();
    let (then_header, then_rest) = then.split_once('\n').unwrap();
    assert_eq!(now_rest, then_rest);
    assert!(then_header.ends_with(r#","head":121}"#), "{then_header}");
    assert!(now_header.ends_with(r#","head":121}"#), "{now_header}");
}
