//! `commandId` (protocol.md, Part 2): a retried command is not executed again and gets the
//! first reply, after restarts and crashes too; a changed command reusing the id is refused;
//! failed commands are not recorded; duplicates in one batch run once. Over pipes.

mod common;

use common::*;
use serde_json::{json, Value};

/// Creates `u1`, in the envelope of the contract's examples (so the node is named `cqrs`).
const CREATE: &str = r#"{"type":"CreateUser","payload":{"id":"u1","name":"A"}}"#;

fn cmd(msg_id: u64, command: &str) -> String {
    format!(r#"{{"type":"command","msg_id":{msg_id},"command":{command}}}"#)
}

fn ok(msg_id: u64, event: &str, id: &str) -> String {
    format!(
        r#"{{"type":"command_result","in_reply_to":{msg_id},"success":true,"events":[{{"eventType":"{event}","aggregateId":"{id}"}}]}}"#
    )
}

fn reused(msg_id: u64, id: &str) -> String {
    format!(
        r#"{{"type":"command_result","in_reply_to":{msg_id},"success":false,"error":"commandId '{id}' was used by a different command (type, payload or expectedVersion); nothing was changed","code":"command_id_reused"}}"#
    )
}

/// The positions and types of the whole log.
fn log(node: &mut Node, msg_id: u64) -> Vec<(u64, String)> {
    let r = node.call(&envelope(
        msg_id,
        json!({"type":"query","query":{"type":"ReadEvents","params":{"limit":1000}}}),
    ));
    r["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["eventType"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_retry_gets_the_first_reply_and_a_changed_command_is_refused() {
    let mut node = Node::in_memory();
    let create =
        r#"{"type":"CreateUser","commandId":"c-1","payload":{"id":"u1","name":"A","email":"a@x"}}"#;
    node.expect(&[
        (&cmd(1, create), &ok(1, "UserCreated", "u1")),
        // The same command again: the first reply, not `already_exists`.
        (&cmd(2, create), &ok(2, "UserCreated", "u1")),
        // The same payload with its keys in another order, and `command_id`: the same command.
        (
            &cmd(
                3,
                r#"{"type":"CreateUser","command_id":"c-1","payload":{"email":"a@x","name":"A","id":"u1"}}"#,
            ),
            &ok(3, "UserCreated", "u1"),
        ),
        // A payload timestamp is not part of what the command changes.
        (
            &cmd(
                4,
                r#"{"type":"CreateUser","commandId":"c-1","timestamp":"2030-01-01T00:00:00Z","payload":{"id":"u1","name":"A","email":"a@x","timestamp":"2030-01-01T00:00:00Z"}}"#,
            ),
            &ok(4, "UserCreated", "u1"),
        ),
        // A different payload, type or expected version with the same id: refused.
        (
            &cmd(
                5,
                r#"{"type":"CreateUser","commandId":"c-1","payload":{"id":"u1","name":"B","email":"a@x"}}"#,
            ),
            &reused(5, "c-1"),
        ),
        (
            &cmd(
                6,
                r#"{"type":"CreateUser","commandId":"c-1","expectedVersion":0,"payload":{"id":"u1","name":"A","email":"a@x"}}"#,
            ),
            &reused(6, "c-1"),
        ),
        (
            &cmd(
                7,
                r#"{"type":"RenameUser","commandId":"c-1","payload":{"id":"u1","name":"A"}}"#,
            ),
            &reused(7, "c-1"),
        ),
        // The aggregate moves on; a retry of the rename still gets its first reply.
        (
            &cmd(
                8,
                r#"{"type":"RenameUser","commandId":"r-1","expectedVersion":1,"payload":{"id":"u1","name":"B"}}"#,
            ),
            &ok(8, "UserRenamed", "u1"),
        ),
        (
            &cmd(9, r#"{"type":"RenameUser","payload":{"id":"u1","name":"C"}}"#),
            &ok(9, "UserRenamed", "u1"),
        ),
        (
            &cmd(
                10,
                r#"{"type":"RenameUser","commandId":"r-1","expectedVersion":1,"payload":{"id":"u1","name":"B"}}"#,
            ),
            &ok(10, "UserRenamed", "u1"),
        ),
        (
            r#"{"type":"query","msg_id":11,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":11,"data":{"id":"u1","name":"C","email":"a@x"}}"#,
        ),
    ]);
    assert_eq!(
        log(&mut node, 12),
        [
            (1, "UserCreated".to_string()),
            (2, "UserRenamed".to_string()),
            (3, "UserRenamed".to_string())
        ]
    );
    node.finish().assert_clean();
}

#[test]
fn a_failed_command_is_not_recorded_and_runs_again_when_retried() {
    let mut node = Node::in_memory();
    let rename = r#"{"type":"RenameUser","commandId":"k","payload":{"id":"u1","name":"B"}}"#;
    node.expect(&[
        (
            &cmd(1, rename),
            r#"{"type":"command_result","in_reply_to":1,"success":false,"error":"user 'u1' does not exist","code":"not_found"}"#,
        ),
        (
            &cmd(2, r#"{"type":"CreateUser","payload":{"id":"u1","name":"A"}}"#),
            &ok(2, "UserCreated", "u1"),
        ),
        (&cmd(3, rename), &ok(3, "UserRenamed", "u1")),
        (&cmd(4, rename), &ok(4, "UserRenamed", "u1")),
    ]);
    assert_eq!(log(&mut node, 5).len(), 2);
    node.finish().assert_clean();
}

#[test]
fn bad_command_ids_are_refused() {
    let mut node = Node::in_memory();
    let long = "x".repeat(201);
    node.expect(&[
        (
            &cmd(1, r#"{"type":"CreateUser","commandId":"","payload":{"id":"u1","name":"A"}}"#),
            r#"{"type":"command_result","in_reply_to":1,"success":false,"error":"commandId must be 1 to 200 bytes long","code":"validation_failed"}"#,
        ),
        (
            &cmd(
                2,
                &format!(
                    r#"{{"type":"CreateUser","commandId":"{long}","payload":{{"id":"u1","name":"A"}}}}"#
                ),
            ),
            r#"{"type":"command_result","in_reply_to":2,"success":false,"error":"commandId must be 1 to 200 bytes long","code":"validation_failed"}"#,
        ),
        (
            &cmd(3, r#"{"type":"CreateUser","commandId":7,"payload":{"id":"u1","name":"A"}}"#),
            r#"{"type":"command_result","in_reply_to":3,"success":false,"error":"commandId must be a string","code":"malformed"}"#,
        ),
        // 200 bytes is allowed (é is two bytes).
        (
            &cmd(
                4,
                &format!(
                    r#"{{"type":"CreateUser","commandId":"{}","payload":{{"id":"u1","name":"A"}}}}"#,
                    "é".repeat(100)
                ),
            ),
            &ok(4, "UserCreated", "u1"),
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn duplicates_in_one_batch_run_once() {
    let mut node = Node::in_memory();
    let line = |i: u64| {
        req(&cmd(
            i,
            r#"{"type":"UpdateUser","commandId":"same","payload":{"id":"u1","n":1}}"#,
        ))
    };
    assert!(is_success(&node.call(&create(1, "u1", "A"))));
    let lines: Vec<String> = (2..52).map(line).collect();
    node.send_all(&lines);
    for i in 2..52 {
        let r = node.recv_body();
        assert_eq!(r["in_reply_to"], i);
        assert_eq!(
            r["events"],
            json!([{"eventType":"UserUpdated","aggregateId":"u1"}]),
            "{r}"
        );
    }
    assert_eq!(log(&mut node, 100).len(), 2);
    node.finish().assert_clean();
}

#[test]
fn the_first_reply_survives_a_restart_a_kill_and_a_rebuild() {
    let dir = tempdir();
    let rename = r#"{"type":"RenameUser","commandId":"r","payload":{"id":"u1","name":"B"}}"#;
    let mut node = Node::on_dir(dir.path());
    node.expect(&[
        (&cmd(1, CREATE), &ok(1, "UserCreated", "u1")),
        (&cmd(2, rename), &ok(2, "UserRenamed", "u1")),
    ]);
    // Acknowledged, then killed: the id was durable with the event.
    node.kill();
    let mut node = Node::on_dir(dir.path());
    node.expect(&[
        (&cmd(3, rename), &ok(3, "UserRenamed", "u1")),
        (
            &cmd(
                4,
                r#"{"type":"RenameUser","payload":{"id":"u1","name":"C"}}"#,
            ),
            &ok(4, "UserRenamed", "u1"),
        ),
    ]);
    node.finish().assert_clean();
    run_cli(
        cqrs()
            .arg("rebuild")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--node-id", "cqrs"]),
    )
    .assert_success();
    let mut node = Node::on_dir(dir.path());
    node.expect(&[(&cmd(5, rename), &ok(5, "UserRenamed", "u1"))]);
    assert_eq!(log(&mut node, 6).len(), 3);
    let r = node.call(&get_user(7, "u1"));
    assert_eq!(r["data"]["name"], "C");
    node.finish().assert_clean();
    run_cli(
        cqrs()
            .arg("check")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--node-id", "cqrs"]),
    )
    .assert_success();
}

#[test]
fn ids_older_than_the_retention_are_forgotten_at_start() {
    let dir = tempdir();
    let rename = r#"{"type":"RenameUser","commandId":"r","payload":{"id":"u1","name":"B"}}"#;
    let spawn = |retention: &str| {
        let mut cmd = cqrs();
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["--command-id-retention", retention]);
        Node::spawn(&mut cmd)
    };
    let mut node = spawn("1d");
    node.expect(&[
        (&cmd(1, CREATE), &ok(1, "UserCreated", "u1")),
        (&cmd(2, rename), &ok(2, "UserRenamed", "u1")),
        (
            &cmd(
                3,
                r#"{"type":"RenameUser","payload":{"id":"u1","name":"C"}}"#,
            ),
            &ok(3, "UserRenamed", "u1"),
        ),
    ]);
    node.finish().assert_clean();
    // Within a day of it: still remembered.
    let mut node = spawn("1d");
    node.expect(&[(&cmd(4, rename), &ok(4, "UserRenamed", "u1"))]);
    assert_eq!(log(&mut node, 5).len(), 3);
    node.finish().assert_clean();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Kept for one second only: forgotten at start, so the retry runs again (B, after C).
    let mut node = spawn("1s");
    node.expect(&[(&cmd(6, rename), &ok(6, "UserRenamed", "u1"))]);
    assert_eq!(log(&mut node, 7).len(), 4);
    let r = node.call(&get_user(8, "u1"));
    assert_eq!(r["data"]["name"], Value::from("B"));
    let end = node.finish();
    end.assert_clean();
    assert!(
        end.stderr
            .contains("command ids older than the retention forgotten"),
        "{}",
        end.stderr
    );
    let bad = run_cli(
        cqrs()
            .args(["--in-memory", "--command-id-retention", "3 weeks"])
            .arg("--data-dir")
            .arg(dir.path()),
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
