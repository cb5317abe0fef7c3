//! Stored data stays readable for ever: the frozen fixtures of tests/fixtures/v1 and v2 (each a
//! SQLite store made by a version of cqrs, its export, a fixed list of requests and the replies
//! that version gave; their generate.sh says how they were made) must be opened, and answered
//! identically, byte for byte, by every later version. v1 predates sealing (personal data in
//! clear); v2 was made by the first version that seals it (XChaCha20-Poly1305, a forgotten user
//! among its users). Each of them is checked as:
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

/// A frozen fixture: its directory under tests/fixtures, what its export holds, and the
/// SHA-256 of each of its files as they were made.
struct Fixture {
    version: &'static str,
    events: u64,
    command_ids: u64,
    files: [(&'static str, &'static str); 5],
}

const V1: Fixture = Fixture {
    version: "v1",
    events: 121,
    command_ids: 6,
    files: [
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
    ],
};

const V2: Fixture = Fixture {
    version: "v2",
    events: 127,
    command_ids: 8,
    files: [
        (
            "commands.jsonl",
            "b80783a95f391ee8ad386368e89b31a4d07dd653acd771a1b242dfe340d0edec",
        ),
        (
            "export.jsonl",
            "8c7d60b779680ed0fd67464c99002050c220764b4b237233a92c77e2d4accacb",
        ),
        (
            "queries.jsonl",
            "8c36809d7350d79995c612de21c89a29a555c78fa0ca8a561953ed7782b324e3",
        ),
        (
            "replies.jsonl",
            "1744b499fe5714f66dd18d8d632f3b91dc1b3264bd0cb3f09a879d9ff0449412",
        ),
        (
            "store.db",
            "eacb2a4a63a2ec9f7859f69caf1e8c0180e43676268d2516ee52bd31d92d443d",
        ),
    ],
};

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(self.version)
            .join(name)
    }
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
fn assert_replies(f: &Fixture, dir: &Path) {
    let queries = std::fs::read(f.path("queries.jsonl")).unwrap();
    let want = std::fs::read_to_string(f.path("replies.jsonl")).unwrap();
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

/// A fixture is frozen: its files are those its version made (SHA-256). Opening `store.db` in
/// place (with `sqlite3`, say) may change it: the tests copy it first, and so should anyone.
fn assert_frozen(f: &Fixture) {
    use sha2::{Digest, Sha256};
    for (name, want) in f.files {
        let digest = Sha256::digest(std::fs::read(f.path(name)).unwrap());
        let got: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            got, want,
            "tests/fixtures/{}/{name} changed: it is frozen",
            f.version
        );
    }
    // Only the store file: a WAL beside it would be read with it.
    for leftover in ["store.db-wal", "store.db-shm"] {
        assert!(
            !f.path(leftover).exists(),
            "tests/fixtures/{}/{leftover}",
            f.version
        );
    }
}

fn assert_store_answers(f: &Fixture) {
    let dir = tempdir();
    std::fs::copy(f.path("store.db"), dir.path().join("n1.db")).unwrap();
    assert_check(dir.path());
    assert_replies(f, dir.path());
    assert_check(dir.path());
}

fn assert_export_answers(f: &Fixture) {
    let dir = tempdir();
    let export = std::fs::read(f.path("export.jsonl")).unwrap();
    let out = run(n1_on(dir.path()).arg("import"), &export);
    let imported = format!(
        ": imported {} events and {} command ids",
        f.events, f.command_ids
    );
    assert!(out.contains(&imported), "{out}");
    assert_check(dir.path());
    assert_replies(f, dir.path());
}

/// The frozen store, exported by the current code: the same events and command ids as the
/// frozen export (the header names the version that wrote it, so it is compared apart). A
/// later version that writes a new export format compares its reading of the fixture here
/// instead.
fn assert_exports_as_frozen(f: &Fixture) {
    let dir = tempdir();
    std::fs::copy(f.path("store.db"), dir.path().join("n1.db")).unwrap();
    let now = run(n1_on(dir.path()).arg("export"), b"");
    let then = std::fs::read_to_string(f.path("export.jsonl")).unwrap();
    let (now_header, now_rest) = now.split_once('\n').unwrap();
    let (then_header, then_rest) = then.split_once('\n').unwrap();
    assert_eq!(now_rest, then_rest);
    let head = format!(r#","head":{}}}"#, f.events);
    assert!(then_header.ends_with(&head), "{then_header}");
    assert!(now_header.ends_with(&head), "{now_header}");
}

#[test]
fn the_v1_files_are_as_they_were_made() {
    assert_frozen(&V1);
}

#[test]
fn the_v1_store_answers_every_query_as_it_did() {
    assert_store_answers(&V1);
}

#[test]
fn the_v1_export_imports_and_answers_every_query_as_it_did() {
    assert_export_answers(&V1);
}

#[test]
fn the_v1_store_exports_as_the_v1_export() {
    assert_exports_as_frozen(&V1);
}

#[test]
fn the_v2_files_are_as_they_were_made() {
    assert_frozen(&V2);
}

#[test]
fn the_v2_store_answers_every_query_as_it_did() {
    assert_store_answers(&V2);
}

#[test]
fn the_v2_export_imports_and_answers_every_query_as_it_did() {
    assert_export_answers(&V2);
}

#[test]
fn the_v2_store_exports_as_the_v2_export() {
    assert_exports_as_frozen(&V2);
}

/// v2's forgotten user (user-7) left nothing readable in its store or export: the frozen
/// files hold the proof that a forget made by that version stays done.
#[test]
fn the_v2_forgotten_user_is_nowhere_in_its_files() {
    for name in ["store.db", "export.jsonl"] {
        let bytes = std::fs::read(V2.path(name)).unwrap();
        for trace in ["Greta", "Forgettable", "forget.example", "Trondheim"] {
            assert!(
                !bytes.windows(trace.len()).any(|w| w == trace.as_bytes()),
                "{trace} in tests/fixtures/v2/{name}"
            );
        }
    }
    // The kept user's data is there, as the control that the scan can find a name.
    let export = std::fs::read(V2.path("export.jsonl")).unwrap();
    assert!(export.windows(10).any(|w| w == b"Hal Keeper"));
}

/// The personal documents of a store's read models, and how many of them are in clear.
fn personal_documents(db: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(substr(value, 1, 1) <> '\"'), 0) FROM documents \
         WHERE collection IN ('users', 'users_at', 'users_at_past')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// v2 was made before the read models were sealed: its documents are in clear, and read as
/// stored. `cqrs rebuild` (docs/forgetting.md) writes them again sealed, and the store still
/// answers every query as it did.
#[test]
fn the_v2_store_rebuilt_has_its_read_models_sealed_and_answers_as_it_did() {
    let dir = tempdir();
    let db = dir.path().join("n1.db");
    std::fs::copy(V2.path("store.db"), &db).unwrap();
    let (documents, clear) = personal_documents(&db);
    assert!(
        documents > 0 && clear == documents,
        "{clear} of {documents}"
    );
    run_cli(cqrs().arg("rebuild").arg("--data-dir").arg(dir.path())).assert_success();
    let (documents, clear) = personal_documents(&db);
    assert!(documents > 0, "the read models were rebuilt");
    assert_eq!(clear, 0, "every personal document is sealed");
    assert_check(dir.path());
    assert_replies(&V2, dir.path());
    assert_check(dir.path());
}
