//! Old event shapes read through the node: a `UserCreated` of schema 0 (`userId`, `fullName`),
//! put into a SQLite store by hand, is seen in the current shape by every read path (the read
//! model after `rebuild`, temporal queries, `GetUserHistory`, `ReadEvents`, the engine deciding
//! a command on it), while the store keeps it as written; an event of a schema newer than the
//! code knows is a clear error, and the node goes on.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

/// Stores a `UserCreated` by hand, after the store's last event, with `schema` and `data`.
fn insert_by_hand(dir: &Path, id: &str, schema: i64, data: &str) {
    let conn = rusqlite::Connection::open(dir.join("n1.db")).unwrap();
    conn.execute(
        "INSERT INTO streams (category, stream) VALUES ('User', ?1)",
        [id],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO events (position, stream_no, version, event_type, timestamp, data, schema)
         SELECT (SELECT COALESCE(MAX(position), 0) + 1 FROM events), stream_no, 1, 'UserCreated',
                1704067200000000000, ?2, ?3
         FROM streams WHERE category = 'User' AND stream = ?1",
        rusqlite::params![id, data, schema],
    )
    .unwrap();
}

/// The schema and data of the user's first event as stored: not upcast, but opened if it was
/// sealed under the user's key (store::seal; an event stored in clear reads as it is).
fn stored(dir: &Path, id: &str) -> (i64, String) {
    use cqrs_node::store::{Sealed, SqliteStore, StoreRead, StreamId, Upto};
    let store = SqliteStore::open(dir.join("n1.db")).unwrap();
    let opened = Sealed::new(&store, cqrs_node::registry().personal());
    let events = opened
        .read_stream(&StreamId::new("User", id), 0, Upto::Version(1))
        .unwrap();
    (i64::from(events[0].schema.0), events[0].data.clone())
}

#[test]
fn an_old_user_created_is_read_in_the_current_shape_everywhere() {
    let dir = tempdir();
    let mut node = Node::spawn(&mut n1_on(dir.path()));
    assert!(is_success(&node.call(&create(1, "new", "New"))));
    node.finish().assert_clean();
    let old = r#"{"userId":"old","fullName":"Old Timer","email":"old@example.com"}"#;
    insert_by_hand(dir.path(), "old", 0, old);
    // The read model is derived data: rebuilt from the log, through the upcasters.
    run_cli(
        cqrs()
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--node-id", "n1", "rebuild"]),
    )
    .assert_success();
    assert_check(dir.path());

    let current = r#"{"id":"old","name":"Old Timer","email":"old@example.com"}"#;
    let mut node = Node::spawn(&mut n1_on(dir.path()));
    let ask = |node: &mut Node, line: String| node.call(&line)["data"].to_string();
    assert_eq!(ask(&mut node, get_user(2, "old")), current);
    assert_eq!(
        ask(
            &mut node,
            query(
                3,
                "GetUserAtVersion",
                json!({"userId": "old", "version": 1})
            )
        ),
        r#"{"id":"old","name":"Old Timer","email":"old@example.com","at_version":1}"#
    );
    let history = ask(
        &mut node,
        query(4, "GetUserHistory", json!({"userId": "old"})),
    );
    assert!(
        history.contains(&format!(r#""data":{current}"#)),
        "{history}"
    );
    let log = ask(&mut node, query(5, "ReadEvents", json!({})));
    assert!(log.contains(&format!(r#""position":2,"eventType":"UserCreated","aggregateId":"old","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{current}"#)), "{log}");
    // The engine decides on the upcast state: the rename applies to the name.
    let renamed = node.call(&envelope(
        6,
        json!({"type": "command", "command": {"type": "RenameUser", "expectedVersion": 1,
            "timestamp": "2024-01-02T00:00:00Z", "payload": {"id": "old", "name": "Renamed"}}}),
    ));
    assert!(is_success(&renamed), "{renamed}");
    assert_eq!(
        ask(&mut node, get_user(7, "old")),
        r#"{"id":"old","name":"Renamed","email":"old@example.com"}"#
    );
    node.finish().assert_clean();
    assert_check(dir.path());
    // The store keeps the event as written.
    assert_eq!(stored(dir.path(), "old"), (0, old.to_string()));
    // And an export carries it as written; an import reads it back the same way.
    let export = run_cli(n1_on(dir.path()).arg("export"));
    export.assert_success();
    assert!(
        export.rest.iter().any(|l| l.contains(&format!(
            r#""schema":0,"timestamp":"2024-01-01T00:00:00Z","data":{old}"#
        ))),
        "{:?}",
        export.rest
    );
    let moved = tempdir();
    let file = export.rest.join("\n") + "\n";
    let mut import = n1_on(moved.path());
    import.arg("import").stdin(std::process::Stdio::piped());
    let mut child = import
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), file.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(stored(moved.path(), "old"), (0, old.to_string()));
    let mut node = Node::spawn(&mut n1_on(moved.path()));
    assert_eq!(
        ask(&mut node, get_user(8, "old")),
        r#"{"id":"old","name":"Renamed","email":"old@example.com"}"#
    );
    assert_eq!(
        ask(
            &mut node,
            query(
                9,
                "GetUserAtVersion",
                json!({"userId": "old", "version": 1})
            )
        ),
        r#"{"id":"old","name":"Old Timer","email":"old@example.com","at_version":1}"#
    );
    node.finish().assert_clean();
}

#[test]
fn an_event_of_a_newer_schema_is_an_error_naming_it_and_the_node_goes_on() {
    let dir = tempdir();
    let mut node = Node::spawn(&mut n1_on(dir.path()));
    assert!(is_success(&node.call(&create(1, "u1", "A"))));
    node.finish().assert_clean();
    insert_by_hand(dir.path(), "future", 2, r#"{"id":"future","name":"F"}"#);

    // The read model is behind the log: the node catches up at start, and refuses to misread.
    let start = run_cli(&mut n1_on(dir.path()));
    assert_eq!(start.status.code(), Some(2), "{start:?}");
    assert!(
        start.stderr.contains(
            "event at position 2 (UserCreated, schema 2): this build knows UserCreated up to \
             schema 1 (written by a newer cqrs?)"
        ),
        "{}",
        start.stderr
    );
    let check = run_cli(n1_on(dir.path()).arg("check"));
    assert_eq!(check.status.code(), Some(2), "{check:?}");

    // With the read model's checkpoint past it (as if it were caught up), the node serves:
    // reads of that stream fail clearly, everything else is answered.
    let conn = rusqlite::Connection::open(dir.path().join("n1.db")).unwrap();
    conn.execute("UPDATE checkpoints SET position = 2", [])
        .unwrap();
    drop(conn);
    let mut node = Node::spawn(&mut n1_on(dir.path()));
    let history = node.call(&query(2, "GetUserHistory", json!({"userId": "future"})));
    assert!(is_crash(&history), "{history}");
    assert!(
        history["text"]
            .as_str()
            .unwrap_or_default()
            .contains("schema 2"),
        "{history}"
    );
    let command = node.call(&envelope(
        3,
        json!({"type": "command", "command": {"type": "RenameUser",
            "payload": {"id": "future", "name": "G"}}}),
    ));
    assert!(is_crash(&command), "{command}");
    assert_eq!(
        node.call(&get_user(4, "u1"))["data"].to_string(),
        r#"{"id":"u1","name":"A"}"#
    );
    node.finish().assert_clean();
    assert_eq!(stored(dir.path(), "future").0, 2);
}
