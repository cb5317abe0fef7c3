//! Durability end to end: clean restarts, kill -9 in the middle of a stream, a second process on
//! the same store, where the files go (`--in-memory`, the default directory, `CQRS_DATA_DIR`),
//! and `cqrs rebuild` / `cqrs check`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use common::{assert_line, cqrs, n1_on, rep, req, run_cli, tempdir, tree, Node};
use serde_json::{json, Value};

/// A history with versions 1..=4, and a second user, on `dir`.
const HISTORY: &[(&str, &str)] = &[
    (
        r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann","email":"ann@example.com"}}}"#,
        r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":2,"command":{"type":"UpdateUser","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","age":40}}}"#,
        r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserUpdated","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":3,"command":{"type":"RenameUser","timestamp":"2024-01-03T00:00:00Z","payload":{"id":"u1","name":"Anne"}}}"#,
        r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":4,"command":{"type":"ChangeUserEmail","timestamp":"2024-01-04T00:00:00Z","payload":{"id":"u1","email":"anne@example.com"}}}"#,
        r#"{"type":"command_result","in_reply_to":4,"success":true,"events":[{"eventType":"UserEmailChanged","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":5,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u2","name":"Bob"}}}"#,
        r#"{"type":"command_result","in_reply_to":5,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u2"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":6,"command":{"type":"DeleteUser","timestamp":"2024-01-05T00:00:00Z","payload":{"id":"u2"}}}"#,
        r#"{"type":"command_result","in_reply_to":6,"success":true,"events":[{"eventType":"UserDeleted","aggregateId":"u2"}]}"#,
    ),
];

/// What the node must answer about [`HISTORY`], before and after any restart.
const READS: &[(&str, &str)] = &[
    (
        r#"{"type":"query","msg_id":10,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
        r#"{"type":"query_result","in_reply_to":10,"data":{"id":"u1","name":"Anne","email":"anne@example.com","age":40}}"#,
    ),
    (
        r#"{"type":"query","msg_id":11,"query":{"type":"GetUser","params":{"userId":"u2"}}}"#,
        r#"{"type":"query_result","in_reply_to":11,"data":null}"#,
    ),
    (
        r#"{"type":"query","msg_id":12,"query":{"type":"ListUsers"}}"#,
        r#"{"type":"query_result","in_reply_to":12,"data":{"users":[{"id":"u1","name":"Anne","email":"anne@example.com","age":40}],"next":null}}"#,
    ),
    (
        r#"{"type":"query","msg_id":13,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
        r#"{"type":"query_result","in_reply_to":13,"data":{"id":"u1","version":4,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u1","name":"Ann","email":"ann@example.com"}},{"eventType":"UserUpdated","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{"age":40}},{"eventType":"UserRenamed","aggregateId":"u1","version":3,"timestamp":"2024-01-03T00:00:00Z","data":{"name":"Anne"}},{"eventType":"UserEmailChanged","aggregateId":"u1","version":4,"timestamp":"2024-01-04T00:00:00Z","data":{"email":"anne@example.com"}}]}}"#,
    ),
    (
        r#"{"type":"query","msg_id":14,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":2}}}"#,
        r#"{"type":"query_result","in_reply_to":14,"data":{"id":"u1","name":"Ann","email":"ann@example.com","age":40,"at_version":2}}"#,
    ),
    (
        r#"{"type":"query","msg_id":15,"query":{"type":"GetUserAtTime","params":{"userId":"u2","timestamp":"2024-01-04T00:00:00Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":15,"data":{"id":"u2","name":"Bob","at_time":"2024-01-04T00:00:00Z"}}"#,
    ),
    (
        r#"{"type":"query","msg_id":16,"query":{"type":"GetUserHistory","params":{"userId":"u2"}}}"#,
        r#"{"type":"query_result","in_reply_to":16,"data":{"id":"u2","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u2","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u2","name":"Bob"}},{"eventType":"UserDeleted","aggregateId":"u2","version":2,"timestamp":"2024-01-05T00:00:00Z","data":{}}]}}"#,
    ),
];

/// After a restart, versions are where they were: conflicts name them, and the next version
/// is the one after.
const AFTER_RESTART: &[(&str, &str)] = &[
    (
        r#"{"type":"command","msg_id":20,"command":{"type":"RenameUser","expectedVersion":1,"payload":{"id":"u1","name":"X"}}}"#,
        r#"{"type":"command_result","in_reply_to":20,"success":false,"error":"expected version 1, but the aggregate is at version 4","code":"version_conflict","current_version":4}"#,
    ),
    (
        r#"{"type":"command","msg_id":21,"command":{"type":"CreateUser","payload":{"id":"u2","name":"Bob"}}}"#,
        r#"{"type":"command_result","in_reply_to":21,"success":false,"error":"user id 'u2' belonged to a deleted user and cannot be reused","code":"already_exists"}"#,
    ),
    (
        r#"{"type":"command","msg_id":22,"command":{"type":"RenameUser","timestamp":"2024-01-03T12:00:00Z","payload":{"id":"u1","name":"X"}}}"#,
        r#"{"type":"command_result","in_reply_to":22,"success":false,"error":"timestamp 2024-01-03T12:00:00Z is earlier than the last event of 'u1' (2024-01-04T00:00:00Z); event times never go backwards","code":"validation_failed"}"#,
    ),
    (
        r#"{"type":"command","msg_id":23,"command":{"type":"RenameUser","expectedVersion":4,"timestamp":"2024-01-06T00:00:00Z","payload":{"id":"u1","name":"Annie"}}}"#,
        r#"{"type":"command_result","in_reply_to":23,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"query","msg_id":24,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":5}}}"#,
        r#"{"type":"query_result","in_reply_to":24,"data":{"id":"u1","name":"Annie","email":"anne@example.com","age":40,"at_version":5}}"#,
    ),
];

#[test]
fn data_and_versions_survive_a_clean_restart() {
    // With the default snapshots, and with a snapshot every 2 events (restarts then load from
    // snapshots).
    for extra in [&[][..], &["--snapshot-every", "2"][..]] {
        let dir = tempdir();
        let node = || {
            Node::spawn(
                cqrs()
                    .arg("--data-dir")
                    .arg(dir.path())
                    .args(extra)
                    .args(["--cache-size", "0"]),
            )
        };
        let mut n = node();
        n.expect(HISTORY);
        n.expect(READS);
        n.finish().assert_clean();

        let mut n = node();
        n.expect(READS);
        n.finish().assert_clean();

        let mut n = node();
        n.expect(AFTER_RESTART);
        n.finish().assert_clean();

        let mut n = node();
        n.expect(&AFTER_RESTART[4..]);
        n.expect(&READS[1..2]);
        n.finish().assert_clean();
        run_cli(cqrs().arg("check").arg("--data-dir").arg(dir.path())).assert_success();
    }
}

const USERS: usize = 20;

/// The i-th command of the stream: the first [`USERS`] create users, the rest update them in
/// turn with `{"seq": i}`.
fn stream_command(i: usize) -> String {
    let user = i % USERS;
    if i < USERS {
        req(&format!(
            r#"{{"type":"command","msg_id":{i},"command":{{"type":"CreateUser","payload":{{"id":"u{user}","name":"N{user}"}}}}}}"#
        ))
    } else {
        req(&format!(
            r#"{{"type":"command","msg_id":{i},"command":{{"type":"UpdateUser","payload":{{"id":"u{user}","seq":{i}}}}}}}"#
        ))
    }
}

/// Reads a reply: its `in_reply_to`, and whether it is a success.
fn acknowledged(line: &str) -> (usize, bool) {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let body = &v["body"];
    assert_eq!(body["type"], "command_result", "{line}");
    (
        body["in_reply_to"].as_u64().expect("a numeric in_reply_to") as usize,
        body["success"] == true,
    )
}

/// The commands of the stream that the store holds, from the users' histories; checks that each
/// history is the stream's commands for that user, in order, whole.
fn applied_commands(node: &mut Node, total: usize) -> BTreeSet<usize> {
    let mut applied = BTreeSet::new();
    for user in 0..USERS {
        let line = node.ask(&req(&format!(
            r#"{{"type":"query","msg_id":"h{user}","query":{{"type":"GetUserHistory","params":{{"userId":"u{user}"}}}}}}"#
        )));
        let v: Value = serde_json::from_str(&line).unwrap();
        let data = &v["body"]["data"];
        if data.is_null() {
            continue;
        }
        let events = data["events"].as_array().unwrap();
        assert_eq!(data["version"], events.len(), "{line}");
        for (k, event) in events.iter().enumerate() {
            let i = user + k * USERS; // the stream's k-th command for this user
            assert!(i < total, "more events than commands: {line}");
            assert_eq!(event["version"], k + 1);
            if k == 0 {
                assert_eq!(event["eventType"], "UserCreated");
                assert_eq!(
                    event["data"],
                    json!({"id": format!("u{user}"), "name": format!("N{user}")})
                );
            } else {
                assert_eq!(event["eventType"], "UserUpdated");
                assert_eq!(
                    event["data"],
                    json!({ "seq": i }),
                    "u{user} event {}",
                    k + 1
                );
            }
            applied.insert(i);
        }
    }
    applied
}

#[test]
fn kill_9_in_a_stream_of_pipelined_commands_loses_nothing_acknowledged() {
    const TOTAL: usize = 20_000;
    const KILL_AFTER: usize = 500;
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());

    let mut stdin = node.take_stdin();
    let writer = std::thread::spawn(move || {
        for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(100) {
            let mut bytes = Vec::new();
            for &i in chunk {
                bytes.extend_from_slice(stream_command(i).as_bytes());
                bytes.push(b'\n');
            }
            if stdin.write_all(&bytes).is_err() {
                return; // the node was killed
            }
        }
    });

    let mut acked = BTreeSet::new();
    for expected in 0..KILL_AFTER {
        let (i, ok) = acknowledged(&node.recv());
        assert!(ok, "command {i} failed");
        assert_eq!(i, expected, "replies come in order");
        acked.insert(i);
    }
    node.kill();
    // Whole lines the node wrote before it died were sent after their commit: acknowledged too.
    for line in node.drain().into_iter().flatten() {
        let (i, ok) = acknowledged(&line);
        assert!(ok, "command {i} failed");
        acked.insert(i);
    }
    writer.join().expect("writer thread");
    drop(node);

    // The store opens cleanly, as it was left.
    run_cli(cqrs().arg("check").arg("--data-dir").arg(dir.path())).assert_success();

    let mut node = Node::on_dir(dir.path());
    let applied = applied_commands(&mut node, TOTAL);
    let missing: Vec<_> = acked.difference(&applied).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?} ({} acknowledged)",
        acked.len()
    );
    // Commands commit in order, a batch at a time: what is there is a prefix of the stream.
    let n = applied.len();
    assert_eq!(
        applied.iter().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>(),
        "the store holds a prefix of the stream"
    );
    eprintln!(
        "kill -9: {} commands acknowledged, {n} in the store, of {TOTAL} sent",
        acked.len()
    );

    // The node goes on from there: the next versions follow.
    let version_of_u0 = n.div_ceil(USERS); // commands 0, 20, 40, ... below n
    node.expect_line(
        &req(&format!(
            r#"{{"type":"command","msg_id":"next","command":{{"type":"UpdateUser","expectedVersion":{version_of_u0},"payload":{{"id":"u0","seq":"after"}}}}}}"#
        )),
        &rep(
            r#"{"type":"command_result","in_reply_to":"next","success":true,"events":[{"eventType":"UserUpdated","aggregateId":"u0"}]}"#,
        ),
    );
    node.expect_line(
        &req(r#"{"type":"query","msg_id":"get","query":{"type":"GetUser","params":{"userId":"u0"}}}"#),
        &rep(
            r#"{"type":"query_result","in_reply_to":"get","data":{"id":"u0","name":"N0","seq":"after"}}"#,
        ),
    );
    node.finish().assert_clean();
    run_cli(cqrs().arg("check").arg("--data-dir").arg(dir.path())).assert_success();
}

/// `cqrs --data-dir DIR --node-id n1`.
fn node_n1(dir: &Path) -> Node {
    Node::spawn(&mut n1_on(dir))
}

#[track_caller]
fn assert_refused(end: &common::Finished, what: &str) {
    assert!(
        !end.status.success(),
        "{what}: a second process on the store must be refused"
    );
    assert!(
        end.stderr.contains("in use by another process") && end.stderr.contains("n1.db"),
        "{what}: stderr must say the store is in use:\n{}",
        end.stderr
    );
    assert!(
        end.rest.is_empty(),
        "{what}: nothing on stdout: {:?}",
        end.rest
    );
}

#[test]
fn a_second_process_on_the_same_store_is_refused_and_the_first_goes_on() {
    let dir = tempdir();
    let mut first = node_n1(dir.path());
    let create = r#"{"src":"client","dest":"n1","body":{"type":"command","msg_id":1,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann"}}}}"#;
    first.expect_line(
        create,
        r#"{"src":"n1","dest":"client","body":{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}}"#,
    );

    // The same node id by flag: refused at start.
    let second = node_n1(dir.path());
    assert_refused(&second.finish(), "--node-id n1");

    // The same node id from the first message's dest.
    let mut third = Node::on_dir(dir.path());
    third.send_lossy(
        r#"{"src":"client","dest":"n1","body":{"type":"query","msg_id":1,"query":{"type":"ListUsers"}}}"#,
    );
    assert_refused(&third.finish(), "dest n1");

    // The offline tools too.
    for tool in ["check", "rebuild"] {
        let end = run_cli(
            cqrs()
                .arg(tool)
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--node-id", "n1"]),
        );
        assert_refused(&end, tool);
    }

    // The first one never noticed.
    first.expect_line(
        r#"{"src":"client","dest":"n1","body":{"type":"command","msg_id":2,"command":{"type":"RenameUser","payload":{"id":"u1","name":"Anne"}}}}"#,
        r#"{"src":"n1","dest":"client","body":{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}}"#,
    );
    first.expect_line(
        r#"{"src":"client","dest":"n1","body":{"type":"query","msg_id":3,"query":{"type":"GetUser","params":{"userId":"u1"}}}}"#,
        r#"{"src":"n1","dest":"client","body":{"type":"query_result","in_reply_to":3,"data":{"id":"u1","name":"Anne"}}}"#,
    );
    first.finish().assert_clean();

    // Once it is gone, the store is free again.
    let mut again = node_n1(dir.path());
    again.expect_line(
        r#"{"src":"client","dest":"n1","body":{"type":"query","msg_id":4,"query":{"type":"GetUser","params":{"userId":"u1"}}}}"#,
        r#"{"src":"n1","dest":"client","body":{"type":"query_result","in_reply_to":4,"data":{"id":"u1","name":"Anne"}}}"#,
    );
    again.finish().assert_clean();
}

#[test]
fn nodes_with_different_ids_share_a_data_directory() {
    let dir = tempdir();
    let mut a = Node::on_dir(dir.path());
    let mut b = Node::on_dir(dir.path());
    let mut c = Node::on_dir(dir.path());
    for (node, id) in [(&mut a, "n1"), (&mut b, "n2"), (&mut c, "odd/id")] {
        node.expect_line(
            &format!(
                r#"{{"src":"client","dest":"{id}","body":{{"type":"command","msg_id":1,"command":{{"type":"CreateUser","payload":{{"id":"u1","name":"{id}"}}}}}}}}"#
            ),
            &format!(
                r#"{{"src":"{id}","dest":"client","body":{{"type":"command_result","in_reply_to":1,"success":true,"events":[{{"eventType":"UserCreated","aggregateId":"u1"}}]}}}}"#
            ),
        );
    }
    for node in [a, b, c] {
        node.finish().assert_clean();
    }
    // One file per node id; odd bytes are percent-encoded.
    assert_eq!(
        common::db_files(dir.path()),
        ["n1.db", "n2.db", "odd%2Fid.db"]
    );
    for id in ["n1", "n2", "odd/id"] {
        let mut node = Node::on_dir(dir.path());
        node.expect_line(
            &format!(
                r#"{{"src":"client","dest":"{id}","body":{{"type":"query","msg_id":2,"query":{{"type":"GetUser","params":{{"userId":"u1"}}}}}}}}"#
            ),
            &format!(
                r#"{{"src":"{id}","dest":"client","body":{{"type":"query_result","in_reply_to":2,"data":{{"id":"u1","name":"{id}"}}}}}}"#
            ),
        );
        node.finish().assert_clean();
    }
}

#[test]
fn in_memory_writes_no_file_at_all() {
    let cwd = tempdir();
    let elsewhere = tempdir();
    let env_dir = elsewhere.path().join("from-env");
    for args in [
        &["--in-memory"][..],
        &["--in-memory", "--data-dir", "explicit"][..],
        &["--in-memory", "--node-id", "cqrs"][..],
    ] {
        let mut node = Node::spawn(
            cqrs()
                .current_dir(cwd.path())
                .env("CQRS_DATA_DIR", &env_dir)
                .args(args),
        );
        node.expect(HISTORY);
        node.expect(READS);
        node.finish().assert_clean();
        assert_eq!(
            tree(cwd.path()),
            Vec::<std::path::PathBuf>::new(),
            "{args:?}"
        );
        assert!(!env_dir.exists(), "{args:?}");
    }
    // Nothing survives either.
    let mut node = Node::spawn(cqrs().current_dir(cwd.path()).arg("--in-memory"));
    node.expect(&[(
        r#"{"type":"query","msg_id":1,"query":{"type":"ListUsers"}}"#,
        r#"{"type":"query_result","in_reply_to":1,"data":{"users":[],"next":null}}"#,
    )]);
    node.finish().assert_clean();
    assert_eq!(tree(cwd.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn the_default_data_directory_is_cqrs_data_in_the_working_directory() {
    let cwd = tempdir();
    let mut node = Node::spawn(cqrs().current_dir(cwd.path()));
    node.expect(HISTORY);
    node.finish().assert_clean();
    assert_eq!(common::db_files(&cwd.path().join("cqrs-data")), ["cqrs.db"]);

    let mut node = Node::spawn(cqrs().current_dir(cwd.path()));
    node.expect(READS);
    node.finish().assert_clean();
    run_cli(cqrs().current_dir(cwd.path()).arg("check")).assert_success();
}

#[test]
fn cqrs_data_dir_from_the_environment() {
    let cwd = tempdir();
    let data = tempdir();
    let store = data.path().join("nested").join("store");
    let mut node = Node::spawn(cqrs().current_dir(cwd.path()).env("CQRS_DATA_DIR", &store));
    node.expect(HISTORY);
    node.finish().assert_clean();
    assert_eq!(common::db_files(&store), ["cqrs.db"]);
    assert_eq!(tree(cwd.path()), Vec::<std::path::PathBuf>::new());

    let mut node = Node::spawn(cqrs().current_dir(cwd.path()).env("CQRS_DATA_DIR", &store));
    node.expect(READS);
    node.finish().assert_clean();
    for tool in ["rebuild", "check"] {
        run_cli(
            cqrs()
                .current_dir(cwd.path())
                .env("CQRS_DATA_DIR", &store)
                .arg(tool),
        )
        .assert_success();
    }
    // --data-dir wins over the environment.
    let other = data.path().join("other");
    let mut node = Node::spawn(
        cqrs()
            .current_dir(cwd.path())
            .env("CQRS_DATA_DIR", &store)
            .arg("--data-dir")
            .arg(&other),
    );
    node.expect(&[(
        r#"{"type":"query","msg_id":1,"query":{"type":"ListUsers"}}"#,
        r#"{"type":"query_result","in_reply_to":1,"data":{"users":[],"next":null}}"#,
    )]);
    node.finish().assert_clean();
    assert_eq!(common::db_files(&other), ["cqrs.db"]);
}

/// Every answer [`rebuild_and_check`] compares: for each user, GetUser; then ListUsers pages.
fn answers(node: &mut Node, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        out.push(node.ask(&req(&format!(
            r#"{{"type":"query","msg_id":{n},"query":{{"type":"GetUser","params":{{"userId":"{id}"}}}}}}"#
        ))));
    }
    let mut after = Value::Null;
    loop {
        let line = node.ask(&req(&json!({"type":"query","msg_id":"page","query":{"type":"ListUsers","params":{"limit":7,"after":after}}}).to_string()));
        let v: Value = serde_json::from_str(&line).unwrap();
        after = v["body"]["data"]["next"].clone();
        out.push(line);
        if after.is_null() {
            return out;
        }
    }
}

#[test]
fn rebuild_then_check_pass_and_answers_do_not_change() {
    let dir = tempdir();
    let ids: Vec<String> = (0..40).map(|i| format!("user-{i:02}")).collect();
    let mut lines = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        lines.push(req(&format!(
            r#"{{"type":"command","msg_id":{i},"command":{{"type":"CreateUser","payload":{{"id":"{id}","name":"N{i}","n":{i}}}}}}}"#
        )));
        if i % 3 == 0 {
            lines.push(req(&format!(
                r#"{{"type":"command","command":{{"type":"RenameUser","payload":{{"id":"{id}","name":"R{i}"}}}}}}"#
            )));
        }
        if i % 4 == 0 {
            lines.push(req(&format!(
                r#"{{"type":"command","command":{{"type":"ChangeUserEmail","payload":{{"id":"{id}","email":"{id}@example.com"}}}}}}"#
            )));
        }
        if i % 5 == 0 {
            lines.push(req(&format!(
                r#"{{"type":"command","command":{{"type":"DeleteUser","payload":{{"id":"{id}"}}}}}}"#
            )));
        }
    }
    let node_cmd = || {
        let mut c = cqrs();
        c.arg("--data-dir")
            .arg(dir.path())
            .args(["--snapshot-every", "2"]);
        c
    };
    let mut node = Node::spawn(&mut node_cmd());
    node.send_all(&lines);
    for _ in 0..ids.len() {
        let (_, ok) = acknowledged(&node.recv());
        assert!(ok);
    }
    let before = answers(&mut node, &ids);
    node.finish().assert_clean();
    assert_line(
        &before[1],
        &rep(
            r#"{"type":"query_result","in_reply_to":1,"data":{"id":"user-01","name":"N1","n":1}}"#,
        ),
        "a sample answer",
    );

    let check = || run_cli(cqrs().arg("check").arg("--data-dir").arg(dir.path()));
    let end = check();
    end.assert_success();
    assert!(
        end.rest.iter().all(|l| l.ends_with(": ok")),
        "{:?}",
        end.rest
    );
    let rebuilt = run_cli(cqrs().arg("rebuild").arg("--data-dir").arg(dir.path()));
    rebuilt.assert_success();
    // 40 creates, 14 renames, 10 email changes, 8 deletes: every event of the log, once.
    assert!(
        rebuilt
            .rest
            .iter()
            .any(|l| l.ends_with(": rebuilt from 72 events")),
        "{:?}",
        rebuilt.rest
    );
    check().assert_success();

    let mut node = Node::spawn(&mut node_cmd());
    assert_eq!(answers(&mut node, &ids), before);
    node.finish().assert_clean();

    // check can fail: tamper with the read model behind the node's back...
    {
        use cqrs_node::store::{EventStore, SqliteStore, StoreWrite};
        let mut store = SqliteStore::open(dir.path().join("cqrs.db")).unwrap();
        let mut tx = store.begin().unwrap();
        tx.put_document(
            "users",
            "user-01",
            Some(r#"{"id":"user-01","name":"Forged"}"#),
        )
        .unwrap();
        tx.put_document("users", "user-02", None).unwrap();
        tx.commit().unwrap();
    }
    let end = check();
    assert_eq!(
        end.status.code(),
        Some(1),
        "check must see the damage: {end:?}"
    );
    assert!(!end.rest.is_empty(), "check names the problems");
    // ...and rebuild repairs it.
    run_cli(cqrs().arg("rebuild").arg("--data-dir").arg(dir.path())).assert_success();
    check().assert_success();
    let mut node = Node::spawn(&mut node_cmd());
    assert_eq!(answers(&mut node, &ids), before);
    node.finish().assert_clean();
}
