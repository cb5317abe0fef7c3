//! Torn storage: the store's files as a crash leaves them, with the write-ahead log cut short.
//!
//! The store runs SQLite in WAL mode with `locking_mode=EXCLUSIVE` (so no `-shm` file): every
//! commit appends frames to `<id>.db-wal`, and a checkpoint copies them into `<id>.db` when the
//! WAL grows large or the store closes. A crash can leave the WAL cut anywhere (or its tail
//! garbled). Whatever the cut, the store must open, hold exactly the history of some prefix of
//! the committed transactions (never half of one, never a half event), and pass `verify`.

use std::path::Path;

use cqrs_node::node::Config;
use cqrs_node::projection;
use cqrs_node::stdio::Lines;
use cqrs_node::store::{SqliteStore, StoreRead};
use serde_json::json;

/// The whole log, as comparable tuples.
type Log = Vec<(u64, String, u64, String, i64, String)>;

fn dump(store: &impl StoreRead) -> Log {
    store
        .read_all(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.position,
                e.stream.id,
                e.version,
                e.event_type,
                e.timestamp.nanos(),
                e.data,
            )
        })
        .collect()
}

/// A batch of commands over a handful of users: creates, renames, updates, deletes.
fn batch(n: usize, seq: &mut u64) -> Vec<String> {
    (0..n)
        .map(|_| {
            *seq += 1;
            let s = *seq;
            let id = format!("u{}", s % 7);
            let (kind, payload) = match s % 5 {
                0 => ("CreateUser", json!({"id": id, "name": format!("n{s}")})),
                1 => ("RenameUser", json!({"id": id, "name": format!("r{s}")})),
                2 => (
                    "UpdateUser",
                    json!({"id": id, "bio": "b".repeat((s as usize * 97) % 3000)}),
                ),
                3 => (
                    "ChangeUserEmail",
                    json!({"id": id, "email": format!("{s}@x")}),
                ),
                _ if s % 11 == 4 => ("DeleteUser", json!({"id": id})),
                _ => ("CreateUser", json!({"id": format!("v{s}"), "name": "v"})),
            };
            json!({"src": "c", "dest": "n1", "body": {"type": "command", "msg_id": s,
                "command": {"type": kind, "payload": payload,
                            "timestamp": format!("2024-01-01T00:00:00.{s:06}Z")}}})
            .to_string()
        })
        .collect()
}

fn run(node: &mut Lines<SqliteStore>, lines: &[String]) {
    let mut out = Vec::new();
    node.handle_lines(lines, &mut out).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("\"code\":13"));
}

/// Opens a copy of `db` with the WAL `wal`; returns its log, after checking it is consistent.
fn open_copy(db: &[u8], wal: &[u8], what: &str) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.db");
    std::fs::write(&path, db).unwrap();
    std::fs::write(dir.path().join("n1.db-wal"), wal).unwrap();
    let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    let problems = projection::verify(
        &cqrs_node::registry().read_view(&store),
        &cqrs_node::registry().projections(),
    )
    .unwrap();
    assert!(problems.is_empty(), "{what}: {problems:?}");
    dump(&store)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[test]
fn a_cut_or_garbled_wal_leaves_a_prefix_of_whole_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.db");
    let config = Config {
        cache_size: 4,
        snapshot_every: 3,
        ..Config::default()
    };
    let mut seq = 0;

    // Some history checkpointed into the main file (closing checkpoints the WAL).
    {
        let mut node = Lines::open(SqliteStore::open(&path).unwrap(), "n1", &config).unwrap();
        for n in [3, 5, 1] {
            run(&mut node, &batch(n, &mut seq));
        }
    }
    let mut node = Lines::open(SqliteStore::open(&path).unwrap(), "n1", &config).unwrap();
    let mut committed = vec![dump(node.store())];
    assert!(!committed[0].is_empty());
    // Transactions that stay in the WAL: the node is never closed.
    for n in [1, 4, 2, 7, 1, 1, 3, 12, 2, 5, 1, 6, 2, 1, 9, 3] {
        run(&mut node, &batch(n, &mut seq));
        let log = dump(node.store());
        if log != *committed.last().unwrap() {
            committed.push(log);
        }
    }
    // The files as a kill -9 would leave them right now.
    let db = read(&path);
    let wal = read(&dir.path().join("n1.db-wal"));
    assert!(
        !dir.path().join("n1.db-shm").exists(),
        "exclusive locking keeps the WAL index in memory"
    );
    assert!(wal.len() > 32, "the transactions must still be in the WAL");
    let page = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let frame = 24 + page;
    let frames = (wal.len() - 32) / frame;
    assert_eq!((wal.len() - 32) % frame, 0);
    assert!(frames > committed.len(), "{frames} frames");

    // Every frame boundary and the byte after it, the middle of every other page, the end of
    // a frame header now and then, and a few cuts inside the WAL header.
    let mut cuts = vec![0, 1, 8, 31];
    for k in 0..=frames {
        let b = 32 + k * frame;
        cuts.extend([b, b + 1]);
        if k % 2 == 0 {
            cuts.push(b + 24 + page / 2);
        }
        if k % 5 == 0 {
            cuts.extend([b.saturating_sub(1), b + 24]);
        }
    }
    cuts.retain(|&c| c <= wal.len());
    cuts.sort_unstable();
    cuts.dedup();

    let index_of = |log: &Log, what: &str| -> usize {
        committed.iter().position(|c| c == log).unwrap_or_else(|| {
            panic!(
                "{what}: not a prefix of whole transactions ({} events)",
                log.len()
            )
        })
    };
    eprintln!(
        "{} frames of {page} bytes, {} cuts, {} transactions",
        frames,
        cuts.len(),
        committed.len()
    );
    let mut last = 0;
    let mut seen = std::collections::BTreeSet::new();
    for &cut in &cuts {
        // The WAL cut short.
        let what = format!("WAL cut at byte {cut} of {}", wal.len());
        let got = index_of(&open_copy(&db, &wal[..cut], &what), &what);
        assert!(
            got >= last,
            "{what}: went back from transaction {last} to {got}"
        );
        last = got;
        seen.insert(got);
        // Same length, but everything after the cut garbled (a torn write): now and then.
        if cut < wal.len() && (cut - 32.min(cut)) % (4 * frame) < 2 {
            let mut torn = wal.clone();
            for (i, b) in torn[cut..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31) ^ 0x5a;
            }
            let what = format!("WAL garbled from byte {cut}");
            let g = index_of(&open_copy(&db, &torn, &what), &what);
            assert_eq!(
                g, got,
                "{what}: garbage after the cut must count for nothing"
            );
        }
    }
    assert_eq!(
        last,
        committed.len() - 1,
        "the whole WAL holds every transaction"
    );
    assert_eq!(
        seen.len(),
        committed.len(),
        "each committed transaction is a possible end point: {seen:?}"
    );
}
