//! Golden tests of `ListUsersAtTime` over pipes: the real binary, every shape and error code,
//! the defaults and cut-offs of `ListUsers`, the same answers after a restart and after
//! `cqrs rebuild`, and `cqrs check` seeing a damaged temporal document.

mod common;

use common::{cqrs, rep, req, run_cli, tempdir, Node};

/// The history every test here starts from (each line with its reply).
const HISTORY: &[(&str, &str)] = &[
    (
        r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-10T08:00:00Z","payload":{"id":"a","name":"Ann","email":"ann@x.org"}}}"#,
        r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"a"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":2,"command":{"type":"CreateUser","timestamp":"2024-01-11T08:00:00Z","payload":{"id":"b","name":"Bob"}}}"#,
        r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"b"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":3,"command":{"type":"RenameUser","timestamp":"2024-01-12T00:00:00Z","payload":{"id":"a","name":"Anna"}}}"#,
        r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"a"}]}"#,
    ),
    // Two commands to one user at the same instant: the state at that time is after both.
    (
        r#"{"type":"command","msg_id":4,"command":{"type":"CreateUser","timestamp":"2024-01-12T00:00:00Z","payload":{"id":"c","name":"Cy"}}}"#,
        r#"{"type":"command_result","in_reply_to":4,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"c"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":5,"command":{"type":"UpdateUser","timestamp":"2024-01-12T00:00:00Z","payload":{"id":"c","team":"red"}}}"#,
        r#"{"type":"command_result","in_reply_to":5,"success":true,"events":[{"eventType":"UserUpdated","aggregateId":"c"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":6,"command":{"type":"DeleteUser","timestamp":"2024-01-13T00:00:00Z","payload":{"id":"b"}}}"#,
        r#"{"type":"command_result","in_reply_to":6,"success":true,"events":[{"eventType":"UserDeleted","aggregateId":"b"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":7,"command":{"type":"ChangeUserEmail","timestamp":"2024-01-13T00:00:00Z","payload":{"id":"c","email":"cy@x.org"}}}"#,
        r#"{"type":"command_result","in_reply_to":7,"success":true,"events":[{"eventType":"UserEmailChanged","aggregateId":"c"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":8,"command":{"type":"CreateUser","timestamp":"2024-01-14T00:00:00Z","payload":{"id":"é","name":"Eve"}}}"#,
        r#"{"type":"command_result","in_reply_to":8,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"é"}]}"#,
    ),
];

/// The queries and their exact replies, after [`HISTORY`].
const ANSWERS: &[(&str, &str)] = &[
    // Before anyone existed.
    (
        r#"{"type":"query","msg_id":20,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-09T00:00:00Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":20,"data":{"users":[],"next":null,"at_time":"2024-01-09T00:00:00Z"}}"#,
    ),
    // At the instant of an event: it counts.
    (
        r#"{"type":"query","msg_id":21,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-10T08:00:00Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":21,"data":{"users":[{"id":"a","name":"Ann","email":"ann@x.org"}],"next":null,"at_time":"2024-01-10T08:00:00Z"}}"#,
    ),
    // A time with an offset (2024-01-11T10:00:00Z), given back exactly as written.
    (
        r#"{"type":"query","msg_id":22,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-11T12:00:00+02:00"}}}"#,
        r#"{"type":"query_result","in_reply_to":22,"data":{"users":[{"id":"a","name":"Ann","email":"ann@x.org"},{"id":"b","name":"Bob"}],"next":null,"at_time":"2024-01-11T12:00:00+02:00"}}"#,
    ),
    (
        r#"{"type":"query","msg_id":23,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-12T00:00:00Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":23,"data":{"users":[{"id":"a","name":"Anna","email":"ann@x.org"},{"id":"b","name":"Bob"},{"id":"c","name":"Cy","team":"red"}],"next":null,"at_time":"2024-01-12T00:00:00Z"}}"#,
    ),
    // b deleted at exactly this time: left out.
    (
        r#"{"type":"query","msg_id":24,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-13T00:00:00Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":24,"data":{"users":[{"id":"a","name":"Anna","email":"ann@x.org"},{"id":"c","name":"Cy","team":"red","email":"cy@x.org"}],"next":null,"at_time":"2024-01-13T00:00:00Z"}}"#,
    ),
    (
        r#"{"type":"query","msg_id":25,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2030-01-01T00:00:00.5Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":25,"data":{"users":[{"id":"a","name":"Anna","email":"ann@x.org"},{"id":"c","name":"Cy","team":"red","email":"cy@x.org"},{"id":"é","name":"Eve"}],"next":null,"at_time":"2030-01-01T00:00:00.5Z"}}"#,
    ),
    // Paged as ListUsers: next is the page's last id while more follow.
    (
        r#"{"type":"query","msg_id":26,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2030-01-01T00:00:00Z","limit":1}}}"#,
        r#"{"type":"query_result","in_reply_to":26,"data":{"users":[{"id":"a","name":"Anna","email":"ann@x.org"}],"next":"a","at_time":"2030-01-01T00:00:00Z"}}"#,
    ),
    (
        r#"{"type":"query","msg_id":27,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2030-01-01T00:00:00Z","limit":1,"after":"a"}}}"#,
        r#"{"type":"query_result","in_reply_to":27,"data":{"users":[{"id":"c","name":"Cy","team":"red","email":"cy@x.org"}],"next":"c","at_time":"2030-01-01T00:00:00Z"}}"#,
    ),
    // The last page, exactly full: next is null.
    (
        r#"{"type":"query","msg_id":28,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2030-01-01T00:00:00Z","limit":1,"after":"c"}}}"#,
        r#"{"type":"query_result","in_reply_to":28,"data":{"users":[{"id":"é","name":"Eve"}],"next":null,"at_time":"2030-01-01T00:00:00Z"}}"#,
    ),
    // after need not be a user of that time (a deleted one, one never used).
    (
        r#"{"type":"query","msg_id":29,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-12T12:00:00Z","after":"b"}}}"#,
        r#"{"type":"query_result","in_reply_to":29,"data":{"users":[{"id":"c","name":"Cy","team":"red"}],"next":null,"at_time":"2024-01-12T12:00:00Z"}}"#,
    ),
    (
        r#"{"type":"query","msg_id":30,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2030-01-01T00:00:00Z","after":"bb","limit":null}}}"#,
        r#"{"type":"query_result","in_reply_to":30,"data":{"users":[{"id":"c","name":"Cy","team":"red","email":"cy@x.org"},{"id":"é","name":"Eve"}],"next":null,"at_time":"2030-01-01T00:00:00Z"}}"#,
    ),
    (
        r#"{"type":"query","msg_id":31,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2030-01-01T00:00:00Z","after":null,"limit":5000}}}"#,
        r#"{"type":"query_result","in_reply_to":31,"data":{"users":[{"id":"a","name":"Anna","email":"ann@x.org"},{"id":"c","name":"Cy","team":"red","email":"cy@x.org"},{"id":"é","name":"Eve"}],"next":null,"at_time":"2030-01-01T00:00:00Z"}}"#,
    ),
];

/// Bad params: `validation_failed`, the same texts as `GetUserAtTime` and `ListUsers`.
const ERRORS: &[(&str, &str)] = &[
    (
        r#"{"type":"query","msg_id":40,"query":{"type":"ListUsersAtTime","params":{}}}"#,
        r#"{"type":"query_result","in_reply_to":40,"data":null,"error":"params.timestamp must be an RFC 3339 string","code":"validation_failed"}"#,
    ),
    (
        r#"{"type":"query","msg_id":41,"query":{"type":"ListUsersAtTime"}}"#,
        r#"{"type":"query_result","in_reply_to":41,"data":null,"error":"params.timestamp must be an RFC 3339 string","code":"validation_failed"}"#,
    ),
    (
        r#"{"type":"query","msg_id":42,"query":{"type":"ListUsersAtTime","params":{"timestamp":1704067200}}}"#,
        r#"{"type":"query_result","in_reply_to":42,"data":null,"error":"params.timestamp must be an RFC 3339 string","code":"validation_failed"}"#,
    ),
    (
        r#"{"type":"query","msg_id":43,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-02"}}}"#,
        r#"{"type":"query_result","in_reply_to":43,"data":null,"error":"params.timestamp: '2024-01-02' is not an RFC 3339 time (e.g. 2024-01-15T09:00:00Z)","code":"validation_failed"}"#,
    ),
    (
        r#"{"type":"query","msg_id":44,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-02T00:00:00Z","limit":0}}}"#,
        r#"{"type":"query_result","in_reply_to":44,"data":null,"error":"params.limit must be an integer >= 1 (at most 1000 are returned)","code":"validation_failed"}"#,
    ),
    (
        r#"{"type":"query","msg_id":45,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-02T00:00:00Z","limit":2.5}}}"#,
        r#"{"type":"query_result","in_reply_to":45,"data":null,"error":"params.limit must be an integer >= 1 (at most 1000 are returned)","code":"validation_failed"}"#,
    ),
    (
        r#"{"type":"query","msg_id":46,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-02T00:00:00Z","after":7}}}"#,
        r#"{"type":"query_result","in_reply_to":46,"data":null,"error":"params.after must be a user id (string)","code":"validation_failed"}"#,
    ),
    // The timestamp is checked first.
    (
        r#"{"type":"query","msg_id":47,"query":{"type":"ListUsersAtTime","params":{"limit":0,"after":7}}}"#,
        r#"{"type":"query_result","in_reply_to":47,"data":null,"error":"params.timestamp must be an RFC 3339 string","code":"validation_failed"}"#,
    ),
];

#[test]
fn list_users_at_time_shapes_and_errors() {
    let mut node = Node::in_memory();
    node.expect(HISTORY);
    node.expect(ANSWERS);
    node.expect(ERRORS);
    // A misspelt query type is still unknown_query.
    node.expect(&[(
        r#"{"type":"query","msg_id":50,"query":{"type":"ListUserAtTime","params":{"timestamp":"2024-01-02T00:00:00Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":50,"data":null,"error":"unknown query type 'ListUserAtTime'","code":"unknown_query"}"#,
    )]);
    node.finish().assert_clean();
}

#[test]
fn answers_stay_the_same_after_a_restart_a_rebuild_and_check_sees_damage() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    node.expect(HISTORY);
    node.expect(ANSWERS);
    node.finish().assert_clean();

    let mut node = Node::on_dir(dir.path());
    node.expect(ANSWERS);
    node.finish().assert_clean();

    let check = || run_cli(cqrs().arg("check").arg("--data-dir").arg(dir.path()));
    check().assert_success();
    run_cli(cqrs().arg("rebuild").arg("--data-dir").arg(dir.path())).assert_success();
    check().assert_success();
    let mut node = Node::on_dir(dir.path());
    node.expect(ANSWERS);
    node.finish().assert_clean();

    // Damage the temporal document of a behind the node's back (its name before the rename),
    // sealed again under a's key, so that it opens: check sees it; rebuild repairs it.
    {
        use cqrs_node::store::{EventStore, SqliteStore, StoreRead, StoreWrite};
        let db = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "db"))
            .unwrap();
        let mut store = cqrs_node::registry().view(SqliteStore::open(db).unwrap());
        let doc = store.document("users_at", "a").unwrap().unwrap();
        assert!(doc.contains(r#""name":"Ann""#), "{doc}");
        let forged = doc.replace(r#""name":"Ann""#, r#""name":"Forged""#);
        let mut tx = store.begin().unwrap();
        tx.put_document("users_at", "a", Some(&forged)).unwrap();
        tx.commit().unwrap();
    }
    let end = check();
    assert_eq!(end.status.code(), Some(1), "check must see it: {end:?}");
    assert!(
        end.rest.iter().any(|l| l.contains("users_at")),
        "check names the temporal read model: {:?}",
        end.rest
    );
    run_cli(cqrs().arg("rebuild").arg("--data-dir").arg(dir.path())).assert_success();
    check().assert_success();
    let mut node = Node::on_dir(dir.path());
    node.expect(ANSWERS);
    node.finish().assert_clean();
}

/// The expected page of users `u0000`.. at a time when all exist.
fn page(msg_id: u32, ids: std::ops::Range<usize>, next: Option<usize>) -> String {
    let users: Vec<String> = ids
        .map(|i| format!(r#"{{"id":"u{i:04}","name":"N{i}"}}"#))
        .collect();
    let next = match next {
        Some(i) => format!(r#""u{i:04}""#),
        None => "null".into(),
    };
    format!(
        r#"{{"type":"query_result","in_reply_to":{msg_id},"data":{{"users":[{}],"next":{next},"at_time":"2030-01-01T00:00:00Z"}}}}"#,
        users.join(",")
    )
}

#[test]
fn default_limit_is_100_and_at_most_1000_are_returned() {
    let mut node = Node::in_memory();
    let n = 1001;
    let creates: Vec<String> = (0..n)
        .map(|i| {
            req(&format!(
                r#"{{"type":"command","command":{{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{{"id":"u{i:04}","name":"N{i}"}}}}}}"#
            ))
        })
        .collect();
    // Without msg_id: carried out, not answered.
    node.send_all(&creates);
    let ask = |node: &mut Node, msg_id: u32, params: &str, want: String| {
        let got = node.ask(&req(&format!(
            r#"{{"type":"query","msg_id":{msg_id},"query":{{"type":"ListUsersAtTime","params":{params}}}}}"#
        )));
        common::assert_line(&got, &rep(&want), params);
    };
    let t = r#""timestamp":"2030-01-01T00:00:00Z""#;
    ask(&mut node, 1, &format!("{{{t}}}"), page(1, 0..100, Some(99)));
    ask(
        &mut node,
        2,
        &format!(r#"{{{t},"limit":5000}}"#),
        page(2, 0..1000, Some(999)),
    );
    ask(
        &mut node,
        3,
        &format!(r#"{{{t},"limit":1000,"after":"u0999"}}"#),
        page(3, 1000..1001, None),
    );
    node.finish().assert_clean();
}
