//! Bad input, end to end: whatever comes in, the node answers what it can identify with a clear
//! error, writes nothing on stdout for what it cannot, keeps serving, and exits 0 at the end of
//! its input.

mod common;

use common::{assert_line, rep, req, tempdir, Node};
use serde_json::{json, Value};

/// Creates the user `probe`, whose reading tells that the node still serves, with its state.
const PROBE_CREATE: (&str, &str) = (
    r#"{"type":"command","msg_id":"setup","command":{"type":"CreateUser","payload":{"id":"probe","name":"Probe"}}}"#,
    r#"{"type":"command_result","in_reply_to":"setup","success":true,"events":[{"eventType":"UserCreated","aggregateId":"probe"}]}"#,
);

fn probe_request(n: usize) -> String {
    req(&format!(
        r#"{{"type":"query","msg_id":"probe-{n}","query":{{"type":"GetUser","params":{{"userId":"probe"}}}}}}"#
    ))
}

fn probe_reply(n: usize) -> String {
    rep(&format!(
        r#"{{"type":"query_result","in_reply_to":"probe-{n}","data":{{"id":"probe","name":"Probe"}}}}"#
    ))
}

/// A node that already holds the user `probe`.
fn probed(mut node: Node) -> Node {
    node.expect(&[PROBE_CREATE]);
    node
}

/// Sends `bad` (a line, newline added) and then a probe: the probe's reply must be the very next
/// line, so `bad` put nothing on stdout, and the node still serves.
#[track_caller]
fn assert_silent(node: &mut Node, n: usize, bad: &[u8]) {
    let mut bytes = bad.to_vec();
    bytes.push(b'\n');
    bytes.extend_from_slice(probe_request(n).as_bytes());
    bytes.push(b'\n');
    node.send_raw(&bytes);
    let got = node.recv();
    assert_line(
        &got,
        &probe_reply(n),
        &format!(
            "after the line {:?} (which must not be answered)",
            String::from_utf8_lossy(&bad[..bad.len().min(200)])
        ),
    );
}

/// Checks that `line` is an `error` reply to `msg_id` with `code`, in the contract's key order,
/// and a text that says something; returns the text.
#[track_caller]
fn assert_protocol_error(line: &str, msg_id: Value, code: u64) -> String {
    let v: Value = serde_json::from_str(line).expect("a JSON reply");
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&v), ["src", "dest", "body"], "{line}");
    assert_eq!(v["src"], "cqrs", "{line}");
    assert_eq!(v["dest"], "client", "{line}");
    let body = &v["body"];
    assert_eq!(
        keys(body),
        ["type", "in_reply_to", "code", "text"],
        "{line}"
    );
    assert_eq!(body["type"], "error", "{line}");
    assert_eq!(body["in_reply_to"], msg_id, "{line}");
    assert_eq!(body["code"], code, "{line}");
    let text = body["text"].as_str().expect("text is a string").to_string();
    assert!(!text.trim().is_empty(), "{line}");
    text
}

fn warnings(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count()
}

#[test]
fn lines_that_cannot_be_answered_are_skipped_and_reported_on_stderr() {
    let bad: &[&[u8]] = &[
        b"",
        b"   \t ",
        b"hello",
        b"{",
        b"}",
        b"{}",
        b"{\"src\":\"client\",\"dest\":\"cqrs\",\"body\":{\"type\":\"query\",\"msg_id\":1,",
        b"{'src':'client'}",
        b"\xff\xfe\x00\x01 binary",
        // Valid JSON that is not an object.
        b"null",
        b"42",
        b"\"a string\"",
        b"true",
        b"[]",
        b"[1,2,3]",
        // An array of the right length is still not an envelope.
        br#"["client","cqrs",{"type":"query","msg_id":2,"query":{"type":"ListUsers"}}]"#,
        // No src, or no usable one: nobody to answer.
        br#"{"dest":"cqrs","body":{"type":"query","msg_id":3,"query":{"type":"ListUsers"}}}"#,
        br#"{"src":7,"dest":"cqrs","body":{"type":"query","msg_id":4,"query":{"type":"ListUsers"}}}"#,
        br#"{"src":null,"dest":"cqrs","body":{"type":"query","msg_id":5,"query":{"type":"ListUsers"}}}"#,
        br#"{"src":["client"],"dest":"cqrs","body":{"type":"query","msg_id":6,"query":{"type":"ListUsers"}}}"#,
        // No body object.
        br#"{"src":"client","dest":"cqrs"}"#,
        br#"{"src":"client","dest":"cqrs","body":null}"#,
        br#"{"src":"client","dest":"cqrs","body":"query"}"#,
        br#"{"src":"client","dest":"cqrs","body":[{"type":"query","msg_id":7}]}"#,
        // Invalid UTF-8 inside a string.
        b"{\"src\":\"client\",\"dest\":\"cqrs\",\"body\":{\"type\":\"query\",\"msg_id\":8,\"query\":{\"type\":\"GetUser\",\"params\":{\"userId\":\"\xff\"}}}}",
        // Two messages on one line.
        br#"{"src":"client","dest":"cqrs","body":{"type":"query","msg_id":9,"query":{"type":"ListUsers"}}} {"src":"client","dest":"cqrs","body":{"type":"query","msg_id":10,"query":{"type":"ListUsers"}}}"#,
        // Trailing garbage.
        br#"{"src":"client","dest":"cqrs","body":{"type":"query","msg_id":11,"query":{"type":"ListUsers"}}}x"#,
    ];
    let mut node = probed(Node::in_memory());
    for (n, line) in bad.iter().enumerate() {
        assert_silent(&mut node, n, line);
    }
    let end = node.finish();
    end.assert_clean();
    assert!(
        warnings(&end.stderr) >= bad.len() - 2, // blank lines may be skipped quietly
        "every skipped line is reported on stderr; stderr:\n{}",
        end.stderr
    );
}

#[test]
fn wrong_types_get_a_clear_reply() {
    let mut node = probed(Node::in_memory());
    node.expect(&[
        // Envelope and body.
        (
            r#"{"type":17,"msg_id":1}"#,
            r#"{"type":"error","in_reply_to":1,"code":12,"text":"body 'type' must be a string"}"#,
        ),
        (
            r#"{"type":{"name":"query"},"msg_id":2}"#,
            r#"{"type":"error","in_reply_to":2,"code":12,"text":"body 'type' must be a string"}"#,
        ),
        (
            r#"{"type":"init","msg_id":3,"node_id":5}"#,
            r#"{"type":"error","in_reply_to":3,"code":12,"text":"init needs a non-empty string 'node_id'"}"#,
        ),
        // Command shape.
        (
            r#"{"type":"command","msg_id":4,"command":["CreateUser",{"id":"u1","name":"A"}]}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":false,"error":"body.command must be an object with 'type' and 'payload'","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":5,"command":null}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":false,"error":"body.command must be an object with 'type' and 'payload'","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":6,"command":{"type":1,"payload":{"id":"u1","name":"A"}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":false,"error":"command.type must be a string","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"CreateUser","payload":[["id","u1"]]}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":false,"error":"command.payload must be an object","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"CreateUser","payload":null}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"command.payload must be an object","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"CreateUser","expectedVersion":true,"payload":{"id":"u1","name":"A"}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"expectedVersion must be an integer >= 0","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"CreateUser","expectedVersion":1e3,"payload":{"id":"u1","name":"A"}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":false,"error":"expectedVersion must be an integer >= 0","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":11,"command":{"type":"CreateUser","timestamp":{"at":"2024-01-01T00:00:00Z"},"payload":{"id":"u1","name":"A"}}}"#,
            r#"{"type":"command_result","in_reply_to":11,"success":false,"error":"timestamp must be an RFC 3339 string","code":"malformed"}"#,
        ),
        // Payload values.
        (
            r#"{"type":"command","msg_id":12,"command":{"type":"CreateUser","payload":{"id":null,"name":"A"}}}"#,
            r#"{"type":"command_result","in_reply_to":12,"success":false,"error":"payload.id must be a string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":13,"command":{"type":"CreateUser","payload":{"id":{"v":"u1"},"name":"A"}}}"#,
            r#"{"type":"command_result","in_reply_to":13,"success":false,"error":"payload.id must be a string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":14,"command":{"type":"CreateUser","payload":{"id":"u1","name":null}}}"#,
            r#"{"type":"command_result","in_reply_to":14,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":15,"command":{"type":"CreateUser","payload":{"id":"u1","name":42}}}"#,
            r#"{"type":"command_result","in_reply_to":15,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":16,"command":{"type":"CreateUser","payload":{"id":"u1","name":"A","email":["a@b"]}}}"#,
            r#"{"type":"command_result","in_reply_to":16,"success":false,"error":"email must look like an address (local@domain), got [\"a@b\"]","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":17,"command":{"type":"RenameUser","payload":{"id":"probe","name":{"first":"P"}}}}"#,
            r#"{"type":"command_result","in_reply_to":17,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":18,"command":{"type":"UpdateUser","payload":{"id":"probe","name":false}}}"#,
            r#"{"type":"command_result","in_reply_to":18,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":19,"command":{"type":"ChangeUserEmail","payload":{"id":"probe","email":null}}}"#,
            r#"{"type":"command_result","in_reply_to":19,"success":false,"error":"email must look like an address (local@domain), got null","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":20,"command":{"type":"DeleteUser","payload":{"id":1}}}"#,
            r#"{"type":"command_result","in_reply_to":20,"success":false,"error":"payload.id must be a string","code":"validation_failed"}"#,
        ),
        // Query shape and params.
        (
            r#"{"type":"query","msg_id":21,"query":["GetUser"]}"#,
            r#"{"type":"query_result","in_reply_to":21,"data":null,"error":"body.query must be an object with 'type' and 'params'","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":22,"query":{"type":false,"params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":22,"data":null,"error":"query.type must be a string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":23,"query":{"type":"GetUser","params":"probe"}}"#,
            r#"{"type":"query_result","in_reply_to":23,"data":null,"error":"query.params must be an object","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":24,"query":{"type":"GetUser","params":{"userId":["probe"]}}}"#,
            r#"{"type":"query_result","in_reply_to":24,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":25,"query":{"type":"GetUserAtTime","params":{"userId":"probe","timestamp":1705309200}}}"#,
            r#"{"type":"query_result","in_reply_to":25,"data":null,"error":"params.timestamp must be an RFC 3339 string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":26,"query":{"type":"GetUserAtVersion","params":{"userId":"probe","version":null}}}"#,
            r#"{"type":"query_result","in_reply_to":26,"data":null,"error":"params.version must be an integer >= 0","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":27,"query":{"type":"ListUsers","params":{"limit":"10"}}}"#,
            r#"{"type":"query_result","in_reply_to":27,"data":null,"error":"params.limit must be an integer >= 1 (at most 1000 are returned)","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":28,"query":{"type":"ListUsers","params":{"after":{"id":"a"}}}}"#,
            r#"{"type":"query_result","in_reply_to":28,"data":null,"error":"params.after must be a user id (string)","code":"validation_failed"}"#,
        ),
    ]);
    node.send(&probe_request(0));
    assert_line(&node.recv(), &probe_reply(0), "the node still serves");
    node.finish().assert_clean();
}

#[test]
fn missing_fields_get_a_clear_reply() {
    let mut node = probed(Node::in_memory());
    node.expect(&[
        (
            r#"{"msg_id":1}"#,
            r#"{"type":"error","in_reply_to":1,"code":12,"text":"body has no 'type'"}"#,
        ),
        (
            r#"{"type":"init","msg_id":2,"node_ids":["n1"]}"#,
            r#"{"type":"error","in_reply_to":2,"code":12,"text":"init needs a non-empty string 'node_id'"}"#,
        ),
        (
            r#"{"type":"command","msg_id":3}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":false,"error":"body.command must be an object with 'type' and 'payload'","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":4,"command":{}}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":false,"error":"command.type must be a string","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":5,"command":{"type":"RenameUser"}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":false,"error":"command.payload must be an object","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":6,"command":{"type":"CreateUser","payload":{}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":false,"error":"payload.id is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"CreateUser","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":false,"error":"payload.name is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"UpdateUser","payload":{"name":"X"}}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"payload.id is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"RenameUser","payload":{"id":"probe"}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"payload.name is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"ChangeUserEmail","payload":{"id":"probe"}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":false,"error":"payload.email is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":11,"command":{"type":"DeleteUser","payload":{"userId":"probe"}}}"#,
            r#"{"type":"command_result","in_reply_to":11,"success":false,"error":"payload.id is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":12}"#,
            r#"{"type":"query_result","in_reply_to":12,"data":null,"error":"body.query must be an object with 'type' and 'params'","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":13,"query":{}}"#,
            r#"{"type":"query_result","in_reply_to":13,"data":null,"error":"query.type must be a string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":14,"query":{"type":"GetUserHistory"}}"#,
            r#"{"type":"query_result","in_reply_to":14,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":15,"query":{"type":"GetUserAtTime","params":{"timestamp":"2024-01-01T00:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":15,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":16,"query":{"type":"GetUserAtVersion","params":{"version":1}}}"#,
            r#"{"type":"query_result","in_reply_to":16,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
    ]);
    // A missing dest is a malformed request; the node answers it all the same.
    node.expect_line(
        r#"{"src":"client","body":{"type":"query","msg_id":17,"query":{"type":"ListUsers"}}}"#,
        &rep(
            r#"{"type":"error","in_reply_to":17,"code":12,"text":"envelope has no string 'dest'"}"#,
        ),
    );
    node.expect_line(
        r#"{"src":"client","dest":null,"body":{"type":"query","msg_id":18,"query":{"type":"ListUsers"}}}"#,
        &rep(r#"{"type":"error","in_reply_to":18,"code":12,"text":"envelope has no string 'dest'"}"#),
    );
    node.send(&probe_request(0));
    assert_line(&node.recv(), &probe_reply(0), "the node still serves");
    node.finish().assert_clean();
}

#[test]
fn unknown_message_command_and_query_types() {
    let mut node = probed(Node::in_memory());
    node.expect(&[
        (
            r#"{"type":"read","msg_id":1,"key":"probe"}"#,
            r#"{"type":"error","in_reply_to":1,"code":10,"text":"unsupported message type 'read'"}"#,
        ),
        (
            r#"{"type":"Command","msg_id":2,"command":{"type":"CreateUser","payload":{"id":"u1","name":"A"}}}"#,
            r#"{"type":"error","in_reply_to":2,"code":10,"text":"unsupported message type 'Command'"}"#,
        ),
        (
            r#"{"type":"","msg_id":3}"#,
            r#"{"type":"error","in_reply_to":3,"code":10,"text":"unsupported message type ''"}"#,
        ),
        (
            r#"{"type":"command","msg_id":4,"command":{"type":"DropAllUsers","payload":{}}}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":false,"error":"unknown command type 'DropAllUsers'","code":"unknown_command"}"#,
        ),
        (
            r#"{"type":"command","msg_id":5,"command":{"type":"","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":false,"error":"unknown command type ''","code":"unknown_command"}"#,
        ),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"getUser","params":{"userId":"probe"}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":null,"error":"unknown query type 'getUser'","code":"unknown_query"}"#,
        ),
        (
            r#"{"type":"query","msg_id":7,"query":{"type":"CreateUser","params":{"id":"u1","name":"A"}}}"#,
            r#"{"type":"query_result","in_reply_to":7,"data":null,"error":"unknown query type 'CreateUser'","code":"unknown_query"}"#,
        ),
        // Nothing was created along the way.
        (
            r#"{"type":"query","msg_id":8,"query":{"type":"ListUsers"}}"#,
            r#"{"type":"query_result","in_reply_to":8,"data":{"users":[{"id":"probe","name":"Probe"}],"next":null}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

/// A command line for `body`, as compact JSON.
fn line_of(body: Value) -> String {
    req(&body.to_string())
}

fn create_with(msg_id: u32, id: &str, attributes: Value) -> String {
    let mut payload = json!({"id": id, "name": "N"});
    for (k, v) in attributes.as_object().unwrap() {
        payload[k] = v.clone();
    }
    line_of(
        json!({"type":"command","msg_id":msg_id,"command":{"type":"CreateUser","payload":payload}}),
    )
}

fn failed(msg_id: u32, error: &str) -> String {
    rep(&json!({"type":"command_result","in_reply_to":msg_id,"success":false,"error":error,"code":"validation_failed"}).to_string())
}

fn created(msg_id: u32, id: &str) -> String {
    rep(&json!({"type":"command_result","in_reply_to":msg_id,"success":true,"events":[{"eventType":"UserCreated","aggregateId":id}]}).to_string())
}

#[test]
fn very_long_strings_hit_the_limits() {
    let kb100 = "x".repeat(100 * 1024);
    let big_json = 100 * 1024 + 2; // the string's JSON: its quotes around it
    let too_big = |key: &str, size: usize| {
        format!("attribute '{key}' is {size} bytes of JSON; the limit is 65536")
    };
    let mut node = probed(Node::in_memory());
    let steps = [
        // A 100 KB name, however it is set.
        (
            create_with(1, "u1", json!({"name": kb100})),
            failed(1, &too_big("name", big_json)),
        ),
        (
            line_of(
                json!({"type":"command","msg_id":2,"command":{"type":"RenameUser","payload":{"id":"probe","name":kb100}}}),
            ),
            failed(2, &too_big("name", big_json)),
        ),
        (
            line_of(
                json!({"type":"command","msg_id":3,"command":{"type":"UpdateUser","payload":{"id":"probe","name":kb100}}}),
            ),
            failed(3, &too_big("name", big_json)),
        ),
        // Any other attribute, and the email.
        (
            create_with(4, "u1", json!({"bio": kb100})),
            failed(4, &too_big("bio", big_json)),
        ),
        (
            line_of(
                json!({"type":"command","msg_id":5,"command":{"type":"UpdateUser","payload":{"id":"probe","bio":kb100}}}),
            ),
            failed(5, &too_big("bio", big_json)),
        ),
        (
            line_of(
                json!({"type":"command","msg_id":6,"command":{"type":"ChangeUserEmail","payload":{"id":"probe","email":format!("a@{kb100}")}}}),
            ),
            failed(6, &too_big("email", big_json + 2)),
        ),
        // Exactly at the limit: 65536 bytes of JSON is accepted, one more is not.
        (
            create_with(7, "at-limit", json!({"bio": "y".repeat(65534)})),
            created(7, "at-limit"),
        ),
        (
            create_with(8, "over-limit", json!({"bio": "y".repeat(65535)})),
            failed(8, &too_big("bio", 65537)),
        ),
        // The id: at most 256 bytes.
        (
            create_with(9, &"i".repeat(256), json!({})),
            created(9, &"i".repeat(256)),
        ),
        (
            create_with(10, &"i".repeat(257), json!({})),
            failed(10, "payload.id is 257 bytes long; the limit is 256"),
        ),
        (
            create_with(11, &"i".repeat(100 * 1024), json!({})),
            failed(11, "payload.id is 102400 bytes long; the limit is 256"),
        ),
        // A long attribute name.
        (
            create_with(12, "u12", json!({ "k".repeat(257): 1 })),
            failed(12, "attribute names must be 1 to 256 bytes long"),
        ),
    ];
    for (request, reply) in &steps {
        node.expect_line(request, reply);
    }
    // The accepted big value reads back whole.
    let got: Value = serde_json::from_str(&node.ask(&req(
        r#"{"type":"query","msg_id":20,"query":{"type":"GetUser","params":{"userId":"at-limit"}}}"#,
    )))
    .unwrap();
    assert_eq!(
        got["body"]["data"],
        json!({"id":"at-limit","name":"N","bio":"y".repeat(65534)})
    );
    node.send(&probe_request(0));
    assert_line(&node.recv(), &probe_reply(0), "the node still serves");
    node.finish().assert_clean();
}

#[test]
fn too_many_attributes() {
    let mut node = probed(Node::in_memory());
    let attrs = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("a{i}"), json!(i)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    // 64 in all (id and name included) is the most.
    node.expect_line(&create_with(1, "u62", attrs(62)), &created(1, "u62"));
    node.expect_line(
        &create_with(2, "u63", attrs(63)),
        &failed(2, "a user has at most 64 attributes"),
    );
    node.expect_line(
        &line_of(
            json!({"type":"command","msg_id":3,"command":{"type":"UpdateUser","payload":{"id":"u62","one_more":1}}}),
        ),
        &failed(3, "a user has at most 64 attributes"),
    );
    node.send(&probe_request(0));
    assert_line(&node.recv(), &probe_reply(0), "the node still serves");
    node.finish().assert_clean();
}

/// A request line of exactly `len` bytes: a `GetUser` for `probe`, padded with an unknown key.
fn padded_request(msg_id: &str, len: usize) -> String {
    let line = |pad: &str| {
        req(&format!(
            r#"{{"type":"query","msg_id":"{msg_id}","query":{{"type":"GetUser","params":{{"userId":"probe"}}}},"pad":"{pad}"}}"#
        ))
    };
    let bare = line("").len();
    assert!(len >= bare, "{len} is too short for a request");
    let l = line(&"p".repeat(len - bare));
    assert_eq!(l.len(), len);
    l
}

#[test]
fn a_line_over_the_default_limit_gets_error_12_and_the_node_goes_on() {
    let mut node = probed(Node::in_memory());
    // 2 MiB against the default --max-line-bytes of 1 MiB.
    let long = padded_request("big", 2 * 1024 * 1024);
    let got = node.ask(&long);
    let text = assert_protocol_error(&got, json!("big"), 12);
    assert_eq!(
        text,
        "the line is 2097152 bytes long; the limit is 1048576 bytes"
    );
    // A long line with nothing to answer to: skipped.
    let anonymous = format!(r#"{{"junk":"{}"}}"#, "z".repeat(2 * 1024 * 1024));
    assert_silent(&mut node, 1, anonymous.as_bytes());
    // A long command is not carried out.
    let long_create = create_with(3, "huge", json!({"bio": "b".repeat(1 << 20)}));
    let got = node.ask(&long_create);
    assert_protocol_error(&got, json!(3), 12);
    node.expect(&[(
        r#"{"type":"query","msg_id":4,"query":{"type":"GetUser","params":{"userId":"huge"}}}"#,
        r#"{"type":"query_result","in_reply_to":4,"data":null}"#,
    )]);
    node.finish().assert_clean();
}

#[test]
fn max_line_bytes_is_exact() {
    let mut node = probed(Node::spawn(common::cqrs().args([
        "--in-memory",
        "--max-line-bytes",
        "300",
    ])));
    let at = padded_request("at", 300);
    node.expect_line(
        &at,
        &rep(r#"{"type":"query_result","in_reply_to":"at","data":{"id":"probe","name":"Probe"}}"#),
    );
    let over = padded_request("over", 301);
    node.expect_line(
        &over,
        &rep(r#"{"type":"error","in_reply_to":"over","code":12,"text":"the line is 301 bytes long; the limit is 300 bytes"}"#),
    );
    node.send(&probe_request(0));
    assert_line(&node.recv(), &probe_reply(0), "the node still serves");
    node.finish().assert_clean();
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deep_nesting() {
    let mut node = probed(Node::in_memory());
    // Within what the parser takes: stored and read back as sent.
    let fine = nested(100);
    node.expect_line(
        &req(&format!(
            r#"{{"type":"command","msg_id":1,"command":{{"type":"CreateUser","payload":{{"id":"deep","name":"D","x":{fine}}}}}}}"#
        )),
        &created(1, "deep"),
    );
    node.expect_line(
        &req(r#"{"type":"query","msg_id":2,"query":{"type":"GetUser","params":{"userId":"deep"}}}"#),
        &rep(&format!(
            r#"{{"type":"query_result","in_reply_to":2,"data":{{"id":"deep","name":"D","x":{fine}}}}}"#
        )),
    );
    // Deeper than the parser goes: a clear error, nothing applied.
    let too_deep = nested(1000);
    let got = node.ask(&req(&format!(
        r#"{{"type":"command","msg_id":3,"command":{{"type":"CreateUser","payload":{{"id":"deeper","name":"D","x":{too_deep}}}}}}}"#
    )));
    assert_protocol_error(&got, json!(3), 12);
    // Far deeper, and with nobody to answer: no crash (no stack overflow), nothing on stdout.
    assert_silent(&mut node, 4, nested(500_000).as_bytes());
    assert_silent(
        &mut node,
        5,
        format!("{}1", "{\"a\":".repeat(200_000)).as_bytes(),
    );
    node.expect(&[(
        r#"{"type":"query","msg_id":6,"query":{"type":"GetUser","params":{"userId":"deeper"}}}"#,
        r#"{"type":"query_result","in_reply_to":6,"data":null}"#,
    )]);
    node.finish().assert_clean();
}

#[test]
fn a_whole_last_line_without_newline_is_answered() {
    let mut node = probed(Node::in_memory());
    node.send_raw(probe_request(0).as_bytes());
    node.close_stdin();
    assert_line(
        &node.recv(),
        &probe_reply(0),
        "the last line, without newline",
    );
    node.finish().assert_clean();
}

#[test]
fn a_cut_off_last_line_is_skipped_and_the_node_exits_0() {
    let dir = tempdir();
    let mut node = probed(Node::on_dir(dir.path()));
    let whole = req(
        r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","payload":{"id":"cut","name":"C"}}}"#,
    );
    let cut = &whole[..whole.len() - 5];
    node.send_raw(cut.as_bytes());
    let end = node.finish();
    end.assert_clean();
    assert!(
        end.stderr.contains("WARN"),
        "the cut-off line is reported on stderr:\n{}",
        end.stderr
    );
    // Nothing of it was applied.
    let mut node = Node::on_dir(dir.path());
    node.expect(&[(
        r#"{"type":"query","msg_id":2,"query":{"type":"ListUsers"}}"#,
        r#"{"type":"query_result","in_reply_to":2,"data":{"users":[{"id":"probe","name":"Probe"}],"next":null}}"#,
    )]);
    node.finish().assert_clean();
}

#[test]
fn an_extra_top_level_id_key_is_ignored() {
    let mut node = probed(Node::in_memory());
    node.expect_line(
        r#"{"id":0,"src":"client","dest":"cqrs","body":{"type":"command","msg_id":1,"command":{"type":"RenameUser","payload":{"id":"probe","name":"P2"}}}}"#,
        r#"{"src":"cqrs","dest":"client","body":{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"probe"}]}}"#,
    );
    node.expect_line(
        r#"{"src":"client","dest":"cqrs","body":{"type":"query","msg_id":2,"query":{"type":"GetUser","params":{"userId":"probe"}}},"id":"x-1"}"#,
        r#"{"src":"cqrs","dest":"client","body":{"type":"query_result","in_reply_to":2,"data":{"id":"probe","name":"P2"}}}"#,
    );
    node.finish().assert_clean();
}

#[test]
fn bad_lines_inside_a_pipelined_run_of_commands_break_nothing() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    let create = |n: u32| {
        req(&format!(
            r#"{{"type":"command","msg_id":{n},"command":{{"type":"CreateUser","payload":{{"id":"u{n}","name":"N{n}"}}}}}}"#
        ))
    };
    let lines = [
        create(1),
        "garbage".to_string(),
        create(2),
        r#"{"src":"client","dest":"cqrs","body":{"type":"nope","msg_id":"e1"}}"#.to_string(),
        create(3),
        r#"[1]"#.to_string(),
        req(r#"{"type":"command","msg_id":"m1","command":{"type":"CreateUser","payload":[]}}"#),
        create(4),
        req(r#"{"type":"query","msg_id":"q","query":{"type":"ListUsers"}}"#),
    ];
    node.send_all(&lines);
    let expected = [
        created(1, "u1"),
        created(2, "u2"),
        rep(
            r#"{"type":"error","in_reply_to":"e1","code":10,"text":"unsupported message type 'nope'"}"#,
        ),
        created(3, "u3"),
        rep(
            r#"{"type":"command_result","in_reply_to":"m1","success":false,"error":"command.payload must be an object","code":"malformed"}"#,
        ),
        created(4, "u4"),
        rep(
            r#"{"type":"query_result","in_reply_to":"q","data":{"users":[{"id":"u1","name":"N1"},{"id":"u2","name":"N2"},{"id":"u3","name":"N3"},{"id":"u4","name":"N4"}],"next":null}}"#,
        ),
    ];
    for (i, want) in expected.iter().enumerate() {
        assert_line(&node.recv(), want, &format!("reply {i}"));
    }
    node.finish().assert_clean();
    // The store is sound afterwards.
    let check = common::run_cli(
        common::cqrs()
            .arg("check")
            .arg("--data-dir")
            .arg(dir.path()),
    );
    check.assert_success();
}
