//! `ReadEvents`, the global log (protocol.md, Part 2), over pipes: exact shapes, paging, bounds,
//! bad params.

mod common;

use common::*;
use serde_json::{json, Value};

fn read(msg_id: u64, params: &str) -> String {
    format!(
        r#"{{"type":"query","msg_id":{msg_id},"query":{{"type":"ReadEvents","params":{params}}}}}"#
    )
}

#[test]
fn the_log_reads_back_exactly_in_pages() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            &read(1, "{}"),
            r#"{"type":"query_result","in_reply_to":1,"data":{"events":[],"next":null,"head":0}}"#,
        ),
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"CreateUser","timestamp":"2024-01-10T08:00:00Z","payload":{"id":"user-123","name":"John"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"user-123"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"RenameUser","timestamp":"2024-01-14T12:00:00Z","payload":{"id":"user-123","name":"John Doe"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"user-123"}]}"#,
        ),
        (
            &read(4, r#"{"after":0,"limit":1}"#),
            r#"{"type":"query_result","in_reply_to":4,"data":{"events":[{"position":1,"eventType":"UserCreated","aggregateId":"user-123","version":1,"timestamp":"2024-01-10T08:00:00Z","data":{"id":"user-123","name":"John"}}],"next":1,"head":2}}"#,
        ),
        (
            &read(5, r#"{"after":1}"#),
            r#"{"type":"query_result","in_reply_to":5,"data":{"events":[{"position":2,"eventType":"UserRenamed","aggregateId":"user-123","version":2,"timestamp":"2024-01-14T12:00:00Z","data":{"name":"John Doe"}}],"next":2,"head":2}}"#,
        ),
        (
            &read(6, r#"{"after":2}"#),
            r#"{"type":"query_result","in_reply_to":6,"data":{"events":[],"next":null,"head":2}}"#,
        ),
        (
            &read(7, r#"{"after":99,"limit":null}"#),
            r#"{"type":"query_result","in_reply_to":7,"data":{"events":[],"next":null,"head":2}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn bad_params_are_validation_failed_and_change_nothing() {
    let mut node = Node::in_memory();
    let limit = "params.limit must be an integer >= 1 (at most 1000 are returned)";
    let after = "params.after must be a position (an integer >= 0)";
    for (i, (params, error)) in [
        (r#"{"limit":0}"#, limit),
        (r#"{"limit":-3}"#, limit),
        (r#"{"limit":1.5}"#, limit),
        (r#"{"limit":"10"}"#, limit),
        (r#"{"after":-1}"#, after),
        (r#"{"after":"0"}"#, after),
        (r#"{"after":2.5}"#, after),
    ]
    .into_iter()
    .enumerate()
    {
        let id = i as u64 + 1;
        node.expect_line(
            &req(&read(id, params)),
            &rep(&format!(
                r#"{{"type":"query_result","in_reply_to":{id},"data":null,"error":"{error}","code":"validation_failed"}}"#
            )),
        );
    }
    node.finish().assert_clean();
}

#[test]
fn a_page_is_at_most_1000_events_and_paging_reads_every_event_once_in_order() {
    let mut node = Node::in_memory();
    let n = 1203;
    let creates: Vec<String> = (0..n)
        .map(|i| create(i + 1, &format!("u{i}"), "x"))
        .collect();
    node.send_all(&creates);
    for _ in 0..n {
        assert!(is_success(&node.recv_body()));
    }
    let page = node.call(&envelope(
        9000,
        json!({"type":"query","query":{"type":"ReadEvents","params":{"limit":5000}}}),
    ));
    assert_eq!(page["data"]["events"].as_array().unwrap().len(), 1000);
    assert_eq!(page["data"]["next"], 1000);
    assert_eq!(page["data"]["head"], n);
    let mut after = Value::from(0);
    let mut seen = Vec::new();
    let mut msg_id = 10_000;
    loop {
        msg_id += 1;
        let r = node.call(&envelope(
            msg_id,
            json!({"type":"query","query":{"type":"ReadEvents","params":{"after":after,"limit":250}}}),
        ));
        let events = r["data"]["events"].as_array().unwrap().clone();
        if events.is_empty() {
            assert_eq!(r["data"]["next"], Value::Null);
            break;
        }
        for e in &events {
            seen.push((e["position"].as_u64().unwrap(), e["aggregateId"].clone()));
        }
        after = r["data"]["next"].clone();
        assert_eq!(after, events.last().unwrap()["position"]);
    }
    let want: Vec<(u64, Value)> = (0..n).map(|i| (i + 1, json!(format!("u{i}")))).collect();
    assert_eq!(seen, want);
    node.finish().assert_clean();
}

#[test]
fn the_log_survives_a_restart_and_positions_go_on() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    assert!(is_success(&node.call(&create(1, "a", "A"))));
    node.finish().assert_clean();
    let mut node = Node::on_dir(dir.path());
    assert!(is_success(&node.call(&create(1, "b", "B"))));
    let r = node.call(&envelope(
        2,
        json!({"type":"query","query":{"type":"ReadEvents"}}),
    ));
    let ids: Vec<(u64, &str)> = r["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["aggregateId"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [(1, "a"), (2, "b")]);
    node.finish().assert_clean();
}
