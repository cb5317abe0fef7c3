//! Store failures seen from the node: a [`FaultyStore`] makes begin, append, projection writes,
//! commit or reads fail, the way a full disk or a failing device would.
//!
//! What must hold: a command whose write fails gets protocol error 13 (never a success), nothing
//! of its batch is visible, queries keep being answered, and once the fault is gone commands
//! succeed again and decide against the state that was really committed (the aggregate cache is
//! forgotten on a failed commit).

use std::sync::Arc;

use cqrs_node::node::Config;
use cqrs_node::projection;
use cqrs_node::stdio::Lines;
use cqrs_node::store::{
    EventStore, Faults, FaultyStore, MemoryStore, Op, Plan, SqliteStore, StoreRead,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Ids of the test's requests start here, so that replies can be matched.
fn envelope(msg_id: u64, body: Value) -> String {
    let mut body = body;
    body["msg_id"] = json!(msg_id);
    json!({"src": "c1", "dest": "n1", "body": body}).to_string()
}

fn at(seq: u64) -> String {
    format!("2024-01-01T00:{:02}:{:02}Z", seq / 60 % 60, seq % 60)
}

fn command(msg_id: u64, kind: &str, payload: Value, expected: Option<u64>) -> String {
    let mut c = json!({"type": kind, "payload": payload, "timestamp": at(msg_id)});
    if let Some(v) = expected {
        c["expectedVersion"] = json!(v);
    }
    envelope(msg_id, json!({"type": "command", "command": c}))
}

fn query(msg_id: u64, kind: &str, params: Value) -> String {
    envelope(
        msg_id,
        json!({"type": "query", "query": {"type": kind, "params": params}}),
    )
}

/// Handles `lines` as one batch and returns the reply bodies, checking each names `c1`.
fn send<S: EventStore + Send + 'static>(node: &mut Lines<S>, lines: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    node.handle_lines(lines, &mut out)
        .expect("writing to a Vec");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["dest"], "c1", "{l}");
            v["body"].clone()
        })
        .collect()
}

fn is_crash(body: &Value, msg_id: u64) -> bool {
    body["type"] == "error" && body["code"] == 13 && body["in_reply_to"] == msg_id
}

fn assert_ok(body: &Value, msg_id: u64, events: &[(&str, &str)]) {
    let want: Vec<Value> = events
        .iter()
        .map(|(t, id)| json!({"eventType": t, "aggregateId": id}))
        .collect();
    assert_eq!(
        body,
        &json!({"type": "command_result", "in_reply_to": msg_id, "success": true, "events": want})
    );
}

fn faulty_node<S: EventStore + Send + 'static>(inner: S) -> (Lines<FaultyStore<S>>, Arc<Faults>) {
    let store = FaultyStore::new(inner);
    let faults = store.faults();
    let config = Config {
        cache_size: 16,
        snapshot_every: 2,
        ..Config::default()
    };
    (Lines::open(store, "n1", &config).unwrap(), faults)
}

fn assert_consistent(store: &impl StoreRead) {
    let registry = cqrs_node::registry();
    let problems = projection::verify(&registry.read_view(store), &registry.projections()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// The scenario of a failed commit, on any inner store.
fn failed_commit_then_recovery<S: EventStore + Send + 'static>(inner: S) -> Lines<FaultyStore<S>> {
    let (mut node, faults) = faulty_node(inner);
    let r = send(
        &mut node,
        &[command(
            1,
            "CreateUser",
            json!({"id": "a", "name": "Ann"}),
            Some(0),
        )],
    );
    assert_ok(&r[0], 1, &[("UserCreated", "a")]);

    faults.set(Op::Commit, Plan::Always);
    let r = send(
        &mut node,
        &[
            command(2, "RenameUser", json!({"id": "a", "name": "Bea"}), Some(1)),
            command(3, "CreateUser", json!({"id": "b", "name": "Bob"}), None),
            query(4, "GetUser", json!({"userId": "a"})),
            query(5, "GetUser", json!({"userId": "b"})),
            query(6, "GetUserHistory", json!({"userId": "a"})),
        ],
    );
    assert_eq!(r.len(), 5, "{r:?}");
    assert!(is_crash(&r[0], 2), "{}", r[0]);
    assert!(is_crash(&r[1], 3), "{}", r[1]);
    assert_eq!(r[2]["data"], json!({"id": "a", "name": "Ann"}));
    assert_eq!(r[3]["data"], Value::Null);
    assert_eq!(r[4]["data"]["version"], 1);
    assert!(faults.injected() >= 1);
    assert_eq!(node.store().inner().head().unwrap(), 1);

    // Room again: the very same commands succeed, decided against what was committed (a stale
    // cache would see "Bea" already and answer the rename with no event).
    faults.clear();
    let r = send(
        &mut node,
        &[
            command(7, "RenameUser", json!({"id": "a", "name": "Bea"}), Some(1)),
            command(8, "CreateUser", json!({"id": "b", "name": "Bob"}), None),
            query(9, "GetUser", json!({"userId": "a"})),
        ],
    );
    assert_ok(&r[0], 7, &[("UserRenamed", "a")]);
    assert_ok(&r[1], 8, &[("UserCreated", "b")]);
    assert_eq!(r[2]["data"], json!({"id": "a", "name": "Bea"}));
    assert_consistent(node.store().inner());
    node
}

#[test]
fn a_failed_commit_is_error_13_and_leaves_nothing_on_a_memory_store() {
    failed_commit_then_recovery(MemoryStore::new());
}

#[test]
fn a_failed_commit_is_error_13_and_leaves_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1.db");
    let node = failed_commit_then_recovery(SqliteStore::open(&path).unwrap());
    drop(node);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.head().unwrap(), 3);
    assert_consistent(&store);
}

#[test]
fn a_fault_anywhere_in_the_transaction_fails_the_whole_batch() {
    for (op, plan) in [
        (Op::Begin, Plan::Next(1)),
        (Op::Append, Plan::After { ok: 1 }),
        (Op::Append, Plan::After { ok: 2 }),
        (Op::Write, Plan::Next(1)),
        (Op::Write, Plan::After { ok: 3 }),
        // The batch reads through the transaction only to load `b` (whether its stream has
        // events; it has none, so nothing more is read): fail that read.
        (Op::Read, Plan::Next(1)),
        (Op::Commit, Plan::Next(1)),
    ] {
        let (mut node, faults) = faulty_node(MemoryStore::new());
        let r = send(
            &mut node,
            &[command(
                1,
                "CreateUser",
                json!({"id": "a", "name": "A"}),
                None,
            )],
        );
        assert_ok(&r[0], 1, &[("UserCreated", "a")]);
        faults.set(op, plan);
        let batch = [
            command(2, "UpdateUser", json!({"id": "a", "city": "Oslo"}), Some(1)),
            command(3, "CreateUser", json!({"id": "b", "name": "B"}), None),
            command(4, "RenameUser", json!({"id": "a", "name": "C"}), None),
        ];
        let r = send(&mut node, &batch);
        assert_eq!(r.len(), 3, "{op:?} {plan:?}: {r:?}");
        for (i, body) in r.iter().enumerate() {
            assert!(is_crash(body, 2 + i as u64), "{op:?} {plan:?}: {body}");
        }
        faults.clear();
        assert_eq!(node.store().inner().head().unwrap(), 1, "{op:?} {plan:?}");
        assert_consistent(node.store().inner());

        // The same batch again, now that the fault is gone.
        let again: Vec<String> = batch
            .iter()
            .map(|l| l.replace("\"msg_id\":", "\"msg_id\":1"))
            .collect();
        let r = send(&mut node, &again);
        assert_eq!(r[0]["success"], true, "{op:?} {plan:?}: {}", r[0]);
        assert_eq!(r[1]["success"], true, "{op:?} {plan:?}: {}", r[1]);
        assert_eq!(r[2]["success"], true, "{op:?} {plan:?}: {}", r[2]);
        assert_eq!(node.store().inner().head().unwrap(), 4);
        assert_consistent(node.store().inner());
    }
}

#[test]
fn a_failed_read_answers_a_query_with_error_13_and_the_node_goes_on() {
    let (mut node, faults) = faulty_node(MemoryStore::new());
    send(
        &mut node,
        &[command(
            1,
            "CreateUser",
            json!({"id": "a", "name": "A"}),
            None,
        )],
    );
    faults.set(Op::Read, Plan::Next(1));
    let r = send(
        &mut node,
        &[
            query(2, "GetUser", json!({"userId": "a"})),
            query(3, "GetUser", json!({"userId": "a"})),
        ],
    );
    assert!(is_crash(&r[0], 2), "{}", r[0]);
    assert_eq!(r[1]["data"], json!({"id": "a", "name": "A"}));
}

#[test]
fn a_store_that_cannot_be_read_at_start_is_an_error_not_a_panic() {
    let store = FaultyStore::new(MemoryStore::new());
    store.faults().set(Op::Read, Plan::Always);
    assert!(Lines::open(store, "n1", &Config::default()).is_err());
}

/// A step of the random test: a batch of commands, and maybe a fault on it.
#[derive(Clone, Debug)]
struct Step {
    commands: Vec<(u8, u8)>,
    fault: Option<(Op, Plan)>,
}

fn step() -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        Just(Op::Begin),
        Just(Op::Append),
        Just(Op::Write),
        Just(Op::Commit),
        Just(Op::Read),
    ];
    let plan = prop_oneof![
        Just(Plan::Next(1)),
        Just(Plan::Always),
        (0u64..6).prop_map(|ok| Plan::After { ok }),
    ];
    (
        prop::collection::vec((0u8..5, 0u8..4), 1..6),
        prop::option::weighted(0.4, (op, plan)),
    )
        .prop_map(|(commands, fault)| Step { commands, fault })
}

fn line(seq: u64, kind: u8, user: u8) -> String {
    let id = format!("u{user}");
    let (kind, payload) = match kind {
        0 => ("CreateUser", json!({"id": id, "name": format!("n{seq}")})),
        1 => (
            "RenameUser",
            json!({"id": id, "name": format!("n{}", seq % 3)}),
        ),
        2 => (
            "UpdateUser",
            json!({"id": id, "city": format!("c{}", seq % 2)}),
        ),
        3 => (
            "ChangeUserEmail",
            json!({"id": id, "email": format!("{seq}@x")}),
        ),
        _ => ("DeleteUser", json!({"id": id})),
    };
    command(seq, kind, payload, None)
}

/// The whole log, opened (each store seals under keys of its own, with random nonces).
fn dump(store: &impl StoreRead) -> Vec<(String, u64, String, String)> {
    cqrs_node::registry()
        .read_view(store)
        .read_all(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.stream.id, e.version, e.event_type, e.data))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random batches with random faults: the faulty node ends exactly where a healthy node ends
    /// when given only the batches that succeeded, and every reply of a failed batch is 13.
    #[test]
    fn failed_batches_leave_no_trace(steps in prop::collection::vec(step(), 1..12)) {
        let (mut node, faults) = faulty_node(MemoryStore::new());
        let mut reference = Lines::open(MemoryStore::new(), "n1", &Config::default()).unwrap();
        let mut seq = 0;
        for s in steps {
            let lines: Vec<String> = s.commands.iter().map(|&(k, u)| {
                seq += 1;
                line(seq, k, u)
            }).collect();
            faults.clear();
            if let Some((op, plan)) = s.fault {
                faults.set(op, plan);
            }
            let before = faults.injected();
            let got = send(&mut node, &lines);
            faults.clear();
            prop_assert_eq!(got.len(), lines.len());
            if faults.injected() > before {
                for (i, body) in got.iter().enumerate() {
                    prop_assert_eq!(&body["type"], "error", "{}", body);
                    prop_assert_eq!(&body["code"], 13);
                    prop_assert_eq!(&body["in_reply_to"], &Value::from(seq - lines.len() as u64 + 1 + i as u64));
                }
            } else {
                let want = send(&mut reference, &lines);
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(dump(node.store().inner()), dump(reference.store()));
        }
        assert_consistent(node.store().inner());
    }
}

/// A batch whose replies pass the node's reply buffer is cut into transactions: each part is
/// committed and answered on its own, and a failure affects only the part it hits (and the
/// rest of the batch), never what was already acknowledged.
#[test]
fn a_batch_cut_for_its_large_replies_fails_only_from_the_failed_part_on() {
    let (mut node, faults) = faulty_node(MemoryStore::new());
    let mut big = json!({"id": "big", "name": "Big"});
    for i in 0..16 {
        big[format!("a{i}")] = json!("v".repeat(64_000));
    }
    let r = send(&mut node, &[command(1, "CreateUser", big, None)]);
    assert_ok(&r[0], 1, &[("UserCreated", "big")]);

    let mut batch = vec![command(
        2,
        "CreateUser",
        json!({"id": "a", "name": "A"}),
        None,
    )];
    for i in 3..13 {
        batch.push(query(i, "GetUser", json!({"userId": "big"})));
    }
    batch.push(command(
        13,
        "CreateUser",
        json!({"id": "b", "name": "B"}),
        None,
    ));
    batch.push(query(14, "GetUser", json!({"userId": "b"})));
    // The first transaction commits; the next one fails.
    faults.set(Op::Commit, Plan::After { ok: 1 });
    let r = send(&mut node, &batch);
    faults.clear();
    assert_eq!(r.len(), batch.len());
    assert_ok(&r[0], 2, &[("UserCreated", "a")]);
    for (i, body) in r[1..11].iter().enumerate() {
        assert_eq!(body["in_reply_to"], 3 + i as u64);
        assert_eq!(body["data"]["id"], "big");
    }
    assert!(is_crash(&r[11], 13), "{}", r[11]);
    assert_eq!(r[12]["data"], Value::Null, "{}", r[12]);
    assert_eq!(faults.injected(), 1, "the batch was cut in two");
    assert_eq!(node.store().inner().head().unwrap(), 2);
    assert_consistent(node.store().inner());
}

/// An `init` inside a batch whose commit fails: its rename happens once, in order, so the
/// replies before it still come from the old id, and those after it from the new one.
#[test]
fn a_failed_batch_with_an_init_keeps_the_reply_ids_in_order() {
    let (mut node, faults) = faulty_node(MemoryStore::new());
    faults.set(Op::Commit, Plan::Next(1));
    let lines = [
        command(1, "CreateUser", json!({"id": "a", "name": "A"}), None),
        query(2, "GetUser", json!({"userId": "a"})),
        envelope(
            3,
            json!({"type": "init", "node_id": "n2", "node_ids": ["n2"]}),
        ),
        query(4, "GetUser", json!({"userId": "a"})),
    ];
    let mut out = Vec::new();
    node.handle_lines(&lines, &mut out).unwrap();
    let replies: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let srcs: Vec<&str> = replies.iter().map(|r| r["src"].as_str().unwrap()).collect();
    assert_eq!(srcs, ["n1", "n1", "n2", "n2"], "{replies:?}");
    assert!(is_crash(&replies[0]["body"], 1));
    assert_eq!(replies[1]["body"]["data"], Value::Null);
    assert_eq!(replies[2]["body"]["type"], "init_ok");
}
