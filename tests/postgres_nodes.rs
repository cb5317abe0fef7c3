//! Several `cqrs --postgres` processes on one database (docs/postgres.md, ../shared/postgres.md):
//! shared truth, optimistic locking across nodes, one gap-free global log seen the same from
//! every node, commandId across nodes, a node killed mid-stream, PostgreSQL restarted
//! mid-stream. Over pipes, the real binary.
//!
//! They need PostgreSQL: `CQRS_POSTGRES_URL` (each test in a schema of its own, so they run in
//! parallel; without it they say they are skipped, and fail under CI=true). The restart test
//! runs a cluster of its own (`scripts/pg-test-cluster`), since it stops it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::*;
use cqrs_node::testkit::postgres::{self as pg, Schema};
use serde_json::{json, Value};

/// `cqrs --postgres URL --postgres-schema NAME --node-id ID`.
fn pg_cmd(url: &str, schema: &str, id: &str) -> Command {
    let mut cmd = cqrs();
    cmd.args([
        "--postgres",
        url,
        "--postgres-schema",
        schema,
        "--node-id",
        id,
    ]);
    cmd
}

fn node(s: &Schema, id: &str) -> Node {
    Node::spawn(&mut pg_cmd(&s.url, &s.name, id))
}

fn rename(msg_id: u64, id: &str, name: &str, expected: Option<u64>) -> String {
    let mut c = json!({"type": "RenameUser", "payload": {"id": id, "name": name}});
    if let Some(v) = expected {
        c["expectedVersion"] = json!(v);
    }
    envelope(msg_id, json!({"type": "command", "command": c}))
}

/// The whole global log as one node serves it, page by page (`ReadEvents`).
fn read_log(n: &mut Node) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let r = n.call(&query(
            1,
            "ReadEvents",
            json!({"after": after, "limit": 500}),
        ));
        let events = r["data"]["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return all;
        }
        after = events.last().unwrap()["position"].as_u64().unwrap();
        all.extend(events);
    }
}

/// Positions 1, 2, 3, ... with no gap, and each stream's versions 1, 2, 3, ...
#[track_caller]
fn assert_gap_free(log: &[Value]) {
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e["position"].as_u64(), Some(i as u64 + 1), "log: {e}");
        let v = versions
            .entry(e["aggregateId"].as_str().unwrap().to_string())
            .or_default();
        *v += 1;
        assert_eq!(e["version"].as_u64(), Some(*v), "versions: {e}");
    }
}

/// `cqrs check` on the schema: the log's shape and every projection equal to a replay.
#[track_caller]
fn assert_check(s: &Schema) {
    let mut cmd = cqrs();
    cmd.args(["--postgres", &s.url, "--postgres-schema", &s.name, "check"]);
    let done = run_cli(&mut cmd);
    assert!(
        done.status.success(),
        "check failed: {:?} {}\n{}",
        done.status,
        done.rest.join("\n"),
        done.stderr
    );
}

#[test]
fn created_on_one_node_read_on_the_others() {
    let Some(s) = Schema::new("created_on_one") else {
        return;
    };
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|id| node(&s, id)).collect();
    assert!(is_success(&nodes[0].call(&create(1, "u1", "Ann"))));
    // Read your writes on every node, at once (no waiting for anything to spread).
    for n in nodes.iter_mut() {
        let r = n.call(&get_user(2, "u1"));
        assert_eq!(r["data"], json!({"id": "u1", "name": "Ann"}), "{r}");
    }
    // A change on the third node is seen on the first, and on the second in a list.
    assert!(is_success(&nodes[2].call(&rename(3, "u1", "Bea", Some(1)))));
    assert_eq!(nodes[0].call(&get_user(4, "u1"))["data"]["name"], "Bea");
    let list = nodes[1].call(&query(5, "ListUsers", json!({})));
    assert_eq!(list["data"].to_string().matches("Bea").count(), 1, "{list}");
    // The first node's cached state is stale now: a command there is decided on the new one.
    let r = nodes[0].call(&rename(6, "u1", "Cid", Some(2)));
    assert!(is_success(&r), "{r}");
    let history = nodes[1].call(&query(7, "GetUserHistory", json!({"userId": "u1"})));
    assert_eq!(
        history["data"]["events"].as_array().map(Vec::len),
        Some(3),
        "{history}"
    );
    // Creating it again fails on every node.
    for (i, n) in nodes.iter_mut().enumerate() {
        let r = n.call(&create(8 + i as u64, "u1", "Dup"));
        assert_eq!(r["success"], false, "{r}");
    }
    for n in nodes {
        assert!(n.finish().status.success());
    }
    assert_check(&s);
}

/// `ForgetUser` on one node is a forget on every node at once: the other node, which read the
/// user (and holds its state in its aggregate cache), answers `null` for it at every time and
/// version, lists its events with no data, refuses a command on it (`deleted`: its stale cache
/// is caught by the version check) and the id's reuse; no table of the schema holds the user's
/// data in clear, and its key's row holds the tombstone. The other user still reads back on both nodes.
#[test]
fn a_forget_on_one_node_is_a_forget_on_every_node() {
    let Some(s) = Schema::new("forget_across") else {
        return;
    };
    let mut a = node(&s, "a");
    let mut b = node(&s, "b");
    let personal = json!({"id": "g1", "name": "Gudrun Vanishing", "email": "gudrun@gone.example"});
    assert!(is_success(&a.call(&command(1, "CreateUser", personal))));
    assert!(is_success(&a.call(&rename(
        2,
        "g1",
        "Gudrun V. Vanishing",
        Some(1)
    ))));
    assert!(is_success(&a.call(&create(3, "k1", "Karl Staying"))));
    // b reads the user (and its history, so its state is cached there).
    assert_eq!(
        b.call(&get_user(4, "g1"))["data"]["name"],
        "Gudrun V. Vanishing"
    );
    let before = b.call(&query(
        5,
        "GetUserAtVersion",
        json!({"userId": "g1", "version": 1}),
    ));
    assert_eq!(before["data"]["name"], "Gudrun Vanishing", "{before}");
    // b changes the user too: it keeps the user's key, valid at version 3 (store::seal's
    // KeyCache), which the forget on a destroys.
    let r = b.call(&rename(50, "g1", "Gudrun B. Vanishing", Some(2)));
    assert!(is_success(&r), "{r}");

    let r = a.call(&command(6, "ForgetUser", json!({"id": "g1"})));
    assert!(is_success(&r), "{r}");

    for n in [&mut a, &mut b] {
        assert_eq!(n.call(&get_user(7, "g1"))["data"], Value::Null);
        for version in [1, 2, 3] {
            let r = n.call(&query(
                8,
                "GetUserAtVersion",
                json!({"userId": "g1", "version": version}),
            ));
            assert_eq!(r["data"], Value::Null, "{r}");
        }
        let r = n.call(&query(
            9,
            "GetUserAtTime",
            json!({"userId": "g1", "timestamp": "2999-01-01T00:00:00Z"}),
        ));
        assert_eq!(r["data"], Value::Null, "{r}");
        let history = n.call(&query(10, "GetUserHistory", json!({"userId": "g1"})));
        let events = history["data"]["events"].as_array().unwrap().clone();
        let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
        assert_eq!(
            data,
            [&Value::Null, &Value::Null, &Value::Null, &json!({})],
            "{history}"
        );
        let list = n.call(&query(11, "ListUsers", json!({})));
        assert_eq!(
            list["data"]["users"],
            json!([{"id": "k1", "name": "Karl Staying"}]),
            "{list}"
        );
        let log = read_log(n);
        assert!(
            !serde_json::to_string(&log).unwrap().contains("Gudrun"),
            "{log:?}"
        );
    }
    // b's cached state and key predate the forget: the version check catches them (the
    // rename is decided again on the forgotten state: refused, nothing sealed is stored).
    let r = b.call(&rename(12, "g1", "Back Again", None));
    assert_eq!(r["code"], "deleted", "{r}");
    let r = b.call(&create(13, "g1", "Reused"));
    assert_eq!(r["code"], "already_exists", "{r}");
    // A forget from b too changes nothing more.
    let r = b.call(&command(14, "ForgetUser", json!({"id": "g1"})));
    assert_eq!(r["events"], json!([]), "{r}");

    // Nothing of the user in clear in any table of the schema, and no key row for it.
    let mut client = postgres::Client::connect(&s.url, postgres::NoTls).unwrap();
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&s.name],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(tables.len() >= 5, "{tables:?}");
    for table in &tables {
        let rows = client
            .query(
                &format!("SELECT t::text FROM \"{}\".\"{table}\" t", s.name),
                &[],
            )
            .unwrap();
        let hex = |s: &str| -> String { s.bytes().map(|b| format!("{b:02x}")).collect() };
        let mut seen_karls_key = false;
        for row in rows {
            let text: String = row.get(0);
            // bytea columns print as hex: look for the hex of the names too. Karl is live,
            // and his data is sealed too (events, snapshots, read models): not in clear either.
            for trace in ["Gudrun", "gone.example", "Vanishing", "Karl Staying"] {
                assert!(
                    !text.contains(trace) && !text.contains(&hex(trace)),
                    "{trace} in {table}: {text}"
                );
            }
            seen_karls_key |= text.contains("User/k1") || text.contains(&hex("User/k1"));
        }
        if table == "documents" {
            assert!(seen_karls_key, "the scan reads the documents' keys");
        }
    }
    // The key's row holds the tombstone (the empty string) instead of the key: the old row
    // version is a dead tuple until vacuum (docs/forgetting.md).
    let keys = client
        .query(
            &format!(
                "SELECT value FROM \"{}\".documents WHERE collection = $1 AND key = $2",
                s.name
            ),
            &[&b"keys".as_slice(), &b"User/g1".as_slice()],
        )
        .unwrap();
    let values: Vec<String> = keys.iter().map(|row| row.get(0)).collect();
    assert_eq!(values, [""], "the key is destroyed");
    for n in [a, b] {
        assert!(n.finish().status.success());
    }
    assert_check(&s);
}

#[test]
fn the_same_expected_version_from_two_nodes_at_once_one_wins() {
    let Some(s) = Schema::new("same_expected") else {
        return;
    };
    let mut a = node(&s, "n1");
    let mut b = node(&s, "n2");
    assert!(is_success(&a.call(&create(1, "u1", "v0"))));
    let mut version = 1;
    for round in 0..30u64 {
        // Both sent before either reply is read: the two nodes race for the same version.
        a.send(&rename(
            100 + round,
            "u1",
            &format!("a{round}"),
            Some(version),
        ));
        b.send(&rename(
            100 + round,
            "u1",
            &format!("b{round}"),
            Some(version),
        ));
        let (ra, rb) = (a.recv_body(), b.recv_body());
        let wins = [&ra, &rb].iter().filter(|r| is_success(r)).count();
        assert_eq!(wins, 1, "round {round}: exactly one wins: {ra} {rb}");
        let loser = if is_success(&ra) { &rb } else { &ra };
        assert_eq!(loser["code"], "version_conflict", "{loser}");
        assert_eq!(loser["current_version"], version + 1, "{loser}");
        version += 1;
    }
    let log = read_log(&mut a);
    assert_eq!(log.len() as u64, version);
    assert_gap_free(&log);
    assert_eq!(read_log(&mut b), log);
    drop((a, b));
    assert_check(&s);
}

/// Three nodes rename the same four users as fast as they can, with no expected version, for
/// a few seconds: every command succeeds (a node that loses a race decides again), every
/// acknowledged rename is in the log exactly once, versions and positions are contiguous, and
/// every node serves the same log and the same read model, equal to a replay.
#[test]
fn nodes_hammering_the_same_users_lose_nothing() {
    let Some(s) = Schema::new("hammer") else {
        return;
    };
    let users = ["u0", "u1", "u2", "u3"];
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|id| node(&s, id)).collect();
    for (i, u) in users.iter().enumerate() {
        assert!(is_success(&nodes[i % 3].call(&create(1, u, "first"))));
    }
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let start = std::time::Instant::now();
    let mut seq = 0u64;
    while start.elapsed() < std::time::Duration::from_secs(4) {
        // A chunk to every node, then every reply: the nodes run at the same time.
        let mut sent: Vec<Vec<String>> = vec![Vec::new(); nodes.len()];
        for (k, n) in nodes.iter_mut().enumerate() {
            let lines: Vec<String> = (0..40)
                .map(|_| {
                    seq += 1;
                    let name = format!("n{k}-{seq}");
                    sent[k].push(name.clone());
                    rename(seq, users[(seq % 4) as usize], &name, None)
                })
                .collect();
            n.send_all(&lines);
        }
        for (k, n) in nodes.iter_mut().enumerate() {
            for name in &sent[k] {
                let r = n.recv_body();
                assert!(is_success(&r), "every command succeeds: {r}");
                acked.insert(name.clone());
            }
        }
    }
    let log = read_log(&mut nodes[0]);
    assert_gap_free(&log);
    let renames: Vec<&str> = log
        .iter()
        .filter(|e| e["eventType"] == "UserRenamed")
        .map(|e| e["data"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(renames.len(), acked.len(), "each acknowledged rename once");
    assert_eq!(
        renames.iter().copied().collect::<BTreeSet<_>>().len(),
        acked.len()
    );
    assert!(renames.iter().all(|n| acked.contains(*n)));
    // The read model: each user's last rename, on every node.
    for n in nodes.iter_mut().skip(1) {
        assert_eq!(read_log(n), log, "every node serves the same log");
    }
    for u in users {
        let last = log
            .iter()
            .rev()
            .find(|e| e["aggregateId"] == u)
            .map(|e| e["data"]["name"].clone())
            .unwrap();
        for n in nodes.iter_mut() {
            assert_eq!(n.call(&get_user(9, u))["data"]["name"], last);
        }
    }
    eprintln!("{} renames acknowledged by 3 nodes", acked.len());
    for n in nodes {
        assert!(n.finish().status.success());
    }
    assert_check(&s);
}

#[test]
fn a_command_id_retried_on_another_node_gets_the_first_reply() {
    let Some(s) = Schema::new("command_id") else {
        return;
    };
    let mut a = node(&s, "n1");
    let mut b = node(&s, "n2");
    let with_id = |msg_id: u64, name: &str| {
        envelope(
            msg_id,
            json!({"type": "command", "command": {"type": "CreateUser", "commandId": "c-1",
                   "payload": {"id": "u1", "name": name}}}),
        )
    };
    let first = a.call(&with_id(1, "Ann"));
    assert!(is_success(&first), "{first}");
    // The retry, on the other node: the first reply, not already_exists.
    let again = b.call(&with_id(1, "Ann"));
    assert_eq!(again, first);
    // The same id for another command: refused, on either node.
    let other = b.call(&with_id(2, "Bob"));
    assert_eq!(other["code"], "command_id_reused", "{other}");
    assert_eq!(read_log(&mut a).len(), 1);
}

/// A node killed (SIGKILL) while it streams commands: everything it acknowledged is there for
/// the other node, nothing is half stored, and the log stays gap-free.
#[test]
fn a_node_killed_mid_stream_loses_nothing_it_acknowledged() {
    let Some(s) = Schema::new("kill_node") else {
        return;
    };
    let mut a = node(&s, "n1");
    let mut b = node(&s, "n2");
    let lines: Vec<String> = (0..3000)
        .map(|i| create(i + 1, &format!("k{i}"), "x"))
        .collect();
    a.send_all(&lines);
    let mut acked = Vec::new();
    for _ in 0..300 {
        let r = a.recv_body();
        assert!(is_success(&r), "{r}");
        acked.push(r["events"][0]["aggregateId"].as_str().unwrap().to_string());
    }
    a.kill();
    // The other node goes on, and sees every acknowledged create.
    assert!(is_success(&b.call(&create(1, "after", "y"))));
    for id in &acked {
        assert_eq!(b.call(&get_user(2, id))["data"]["id"], id.as_str());
    }
    let log = read_log(&mut b);
    assert!(log.len() > acked.len());
    assert_gap_free(&log);
    drop(b);
    assert_check(&s);
}

/// PostgreSQL stopped at once (as a crash) and started again while a node sends commands one
/// at a time: the commands in between get error 13, the node stays up and answers again once
/// the server is back, and every acknowledged command is stored (an error 13 means not stored,
/// except possibly for the one whose COMMIT was in flight when the server died: its client
/// cannot know, as with any database server).
#[test]
fn postgres_restarted_mid_stream_the_node_stays_up_and_loses_nothing() {
    // Runs only where the PostgreSQL tests run (it needs the binaries, not that server).
    let Some(cluster) = pg::Cluster::start("postgres_restarted_mid_stream") else {
        return;
    };
    let url = cluster.url.clone();
    let mut n = Node::spawn(&mut pg_cmd(&url, "cqrs", "n1"));
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    let call = |n: &mut Node, i: u64, acked: &mut Vec<String>, failed: &mut Vec<String>| {
        let id = format!("r{i}");
        let r = n.call(&create(i, &id, "x"));
        if is_success(&r) {
            acked.push(id);
        } else {
            assert!(is_crash(&r), "a store failure is error 13: {r}");
            failed.push(id);
        }
    };
    for i in 0..50 {
        call(&mut n, i, &mut acked, &mut failed);
    }
    cluster.halt();
    for i in 50..60 {
        call(&mut n, i, &mut acked, &mut failed);
    }
    assert!(failed.len() >= 10, "commands while the server is down fail");
    cluster.resume();
    for i in 60..120 {
        call(&mut n, i, &mut acked, &mut failed);
    }
    assert!(
        acked.len() >= 100,
        "the node answers again: {} acked",
        acked.len()
    );
    // Every acknowledged create is stored, seen from this node and from a new one.
    let mut fresh = Node::spawn(&mut pg_cmd(&url, "cqrs", "n2"));
    for id in &acked {
        assert_eq!(fresh.call(&get_user(1, id))["data"]["id"], id.as_str());
    }
    let stored_failures: Vec<&String> = failed
        .iter()
        .filter(|id| fresh.call(&get_user(1, id))["data"] != Value::Null)
        .collect();
    assert!(
        stored_failures.len() <= 1 && stored_failures.iter().all(|id| **id == failed[0]),
        "only the command in flight at the crash may be stored: {stored_failures:?}"
    );
    let log = read_log(&mut fresh);
    assert_gap_free(&log);
    assert!(n.finish().status.success(), "the node stayed up");
}
