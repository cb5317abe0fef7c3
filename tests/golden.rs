//! Golden tests: the real binary, JSON lines in, the exact output lines compared.
//!
//! Each scenario is a table of `(request body, reply body)`; [`common::req`] and [`common::rep`]
//! put them into the envelopes `{"src":"client","dest":"cqrs","body":...}` and
//! `{"src":"cqrs","dest":"client","body":...}`, and the whole reply line is compared. The
//! seed cases of issue 2 and the node-id rules spell out whole envelopes.
//!
//! Commands carry explicit timestamps wherever an event time shows in a reply, so that every
//! expected line is exact.

mod common;

use common::{rep, req, tempdir, Node};

// ---------------------------------------------------------------------------------------------
// The seed cases of issue 2, exactly.

const SEED_CREATE: &str = r#"{"src":"client","dest":"cqrs","body":{"type":"command","msg_id":1,"command":{"type":"CreateUser","payload":{"id":"user-123","name":"John"}}}}"#;
const SEED_CREATE_REPLY: &str = r#"{"src":"cqrs","dest":"client","body":{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"user-123"}]}}"#;
const SEED_GET: &str = r#"{"src":"client","dest":"cqrs","body":{"type":"query","msg_id":1,"query":{"type":"GetUser","params":{"userId":"user-123"}}}}"#;
const SEED_GET_REPLY: &str = r#"{"src":"cqrs","dest":"client","body":{"type":"query_result","in_reply_to":1,"data":{"id":"user-123","name":"John"}}}"#;

#[test]
fn seed_create_then_get_and_the_same_answer_after_a_restart() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    node.expect_line(SEED_CREATE, SEED_CREATE_REPLY);
    node.expect_line(SEED_GET, SEED_GET_REPLY);
    node.finish().assert_clean();

    let mut node = Node::on_dir(dir.path());
    node.expect_line(SEED_GET, SEED_GET_REPLY);
    node.finish().assert_clean();
}

#[test]
fn seed_get_user_at_time_after_a_rename() {
    let mut node = Node::in_memory();
    let lines = [
        (
            r#"{"src":"client","dest":"cqrs","body":{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-15T08:00:00Z","payload":{"id":"user-123","name":"John"}}}}"#,
            r#"{"src":"cqrs","dest":"client","body":{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"user-123"}]}}"#,
        ),
        (
            r#"{"src":"client","dest":"cqrs","body":{"type":"command","msg_id":2,"command":{"type":"RenameUser","timestamp":"2024-01-15T08:30:00Z","payload":{"id":"user-123","name":"John Doe"}}}}"#,
            r#"{"src":"cqrs","dest":"client","body":{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"user-123"}]}}"#,
        ),
        (
            r#"{"src":"client","dest":"cqrs","body":{"type":"query","msg_id":3,"query":{"type":"GetUserAtTime","params":{"userId":"user-123","timestamp":"2024-01-15T09:00:00Z"}}}}"#,
            r#"{"src":"cqrs","dest":"client","body":{"type":"query_result","in_reply_to":3,"data":{"id":"user-123","name":"John Doe","at_time":"2024-01-15T09:00:00Z"}}}"#,
        ),
    ];
    for (request, reply) in lines {
        node.expect_line(request, reply);
    }
    node.finish().assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Commands.

#[test]
fn create_user_keeps_id_then_name_then_attributes_in_the_order_given() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","payload":{"email":"ann@example.com","name":"Ann","age":41,"id":"ann","tags":["a",{"b":null}]}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"ann"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":2,"query":{"type":"GetUser","params":{"userId":"ann"}}}"#,
            r#"{"type":"query_result","in_reply_to":2,"data":{"id":"ann","name":"Ann","email":"ann@example.com","age":41,"tags":["a",{"b":null}]}}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"CreateUser","payload":{"id":"ann","name":"Other Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":false,"error":"user 'ann' already exists","code":"already_exists"}"#,
        ),
        (
            r#"{"type":"query","msg_id":4,"query":{"type":"GetUser","params":{"userId":"ann"}}}"#,
            r#"{"type":"query_result","in_reply_to":4,"data":{"id":"ann","name":"Ann","email":"ann@example.com","age":41,"tags":["a",{"b":null}]}}"#,
        ),
        // Unicode survives unchanged.
        (
            r#"{"type":"command","msg_id":5,"command":{"type":"CreateUser","payload":{"id":"zoë","name":"Zoë 🚀"}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"zoë"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUser","params":{"userId":"zoë"}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":{"id":"zoë","name":"Zoë 🚀"}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn update_user_changes_only_what_differs_and_appends_new_attributes() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann","email":"ann@example.com","age":41}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        // age changes, name is the same, city is new.
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"UpdateUser","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","city":"Paris","name":"Ann","age":42}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserUpdated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":3,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":3,"data":{"id":"u1","name":"Ann","email":"ann@example.com","age":42,"city":"Paris"}}"#,
        ),
        // The name can change through UpdateUser too; null is a value like any other.
        (
            r#"{"type":"command","msg_id":4,"command":{"type":"UpdateUser","timestamp":"2024-01-03T00:00:00Z","payload":{"id":"u1","name":"Anne","age":null}}}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":true,"events":[{"eventType":"UserUpdated","aggregateId":"u1"}]}"#,
        ),
        // No-op: the values it already has.
        (
            r#"{"type":"command","msg_id":5,"command":{"type":"UpdateUser","timestamp":"2024-01-04T00:00:00Z","payload":{"id":"u1","name":"Anne","city":"Paris"}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":true,"events":[]}"#,
        ),
        // No-op: nothing but the id.
        (
            r#"{"type":"command","msg_id":6,"command":{"type":"UpdateUser","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":true,"events":[]}"#,
        ),
        (
            r#"{"type":"query","msg_id":7,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":7,"data":{"id":"u1","version":3,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u1","name":"Ann","email":"ann@example.com","age":41}},{"eventType":"UserUpdated","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{"city":"Paris","age":42}},{"eventType":"UserUpdated","aggregateId":"u1","version":3,"timestamp":"2024-01-03T00:00:00Z","data":{"name":"Anne","age":null}}]}}"#,
        ),
        (
            r#"{"type":"query","msg_id":8,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":8,"data":{"id":"u1","name":"Anne","email":"ann@example.com","age":null,"city":"Paris"}}"#,
        ),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"UpdateUser","payload":{"id":"ghost","name":"G"}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"user 'ghost' does not exist","code":"not_found"}"#,
        ),
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"UpdateUser","payload":{"id":"u1","name":" "}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":11,"command":{"type":"UpdateUser","payload":{"id":"u1","email":"not-an-address"}}}"#,
            r#"{"type":"command_result","in_reply_to":11,"success":false,"error":"email must look like an address (local@domain), got \"not-an-address\"","code":"validation_failed"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn rename_user() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann","x":1}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"RenameUser","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","name":"Anne"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"RenameUser","payload":{"id":"u1","name":"Anne"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[]}"#,
        ),
        (
            r#"{"type":"query","msg_id":4,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":4,"data":{"id":"u1","name":"Anne","x":1}}"#,
        ),
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":{"id":"u1","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u1","name":"Ann","x":1}},{"eventType":"UserRenamed","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{"name":"Anne"}}]}}"#,
        ),
        (
            r#"{"type":"command","msg_id":6,"command":{"type":"RenameUser","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":false,"error":"payload.name is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"RenameUser","payload":{"id":"u1","name":""}}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"RenameUser","payload":{"id":"nobody","name":"N"}}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"user 'nobody' does not exist","code":"not_found"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn change_user_email() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann","age":3}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        // A first email is appended after the attributes the user already has.
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"ChangeUserEmail","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","email":"ann@example.com"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserEmailChanged","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"ChangeUserEmail","timestamp":"2024-01-03T00:00:00Z","payload":{"id":"u1","email":"anne@example.org"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserEmailChanged","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":4,"command":{"type":"ChangeUserEmail","payload":{"id":"u1","email":"anne@example.org"}}}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":true,"events":[]}"#,
        ),
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":{"id":"u1","name":"Ann","age":3,"email":"anne@example.org"}}"#,
        ),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":{"id":"u1","version":3,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u1","name":"Ann","age":3}},{"eventType":"UserEmailChanged","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{"email":"ann@example.com"}},{"eventType":"UserEmailChanged","aggregateId":"u1","version":3,"timestamp":"2024-01-03T00:00:00Z","data":{"email":"anne@example.org"}}]}}"#,
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"ChangeUserEmail","payload":{"id":"u1","email":"a b@example.org"}}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":false,"error":"email must look like an address (local@domain), got \"a b@example.org\"","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"ChangeUserEmail","payload":{"id":"u1","email":"a@b@c"}}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"email must look like an address (local@domain), got \"a@b@c\"","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"ChangeUserEmail","payload":{"id":"u1","email":42}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"email must look like an address (local@domain), got 42","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"ChangeUserEmail","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":false,"error":"payload.email is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":11,"command":{"type":"ChangeUserEmail","payload":{"id":"nobody","email":"n@example.org"}}}"#,
            r#"{"type":"command_result","in_reply_to":11,"success":false,"error":"user 'nobody' does not exist","code":"not_found"}"#,
        ),
        // The email rule holds wherever an email is set.
        (
            r#"{"type":"command","msg_id":12,"command":{"type":"CreateUser","payload":{"id":"u2","name":"Bob","email":"bob"}}}"#,
            r#"{"type":"command_result","in_reply_to":12,"success":false,"error":"email must look like an address (local@domain), got \"bob\"","code":"validation_failed"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn delete_user_and_the_id_stays_taken() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u2","name":"Bob"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u2"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"DeleteUser","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserDeleted","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":4,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":4,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"ListUsers","params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":{"users":[{"id":"u2","name":"Bob"}],"next":null}}"#,
        ),
        // The history stays, the deletion included.
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":{"id":"u1","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u1","name":"Ann"}},{"eventType":"UserDeleted","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{}}]}}"#,
        ),
        // Every command on a deleted user: deleted; creating it again: already_exists.
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"DeleteUser","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":false,"error":"user 'u1' was deleted","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"UpdateUser","payload":{"id":"u1","x":1}}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"user 'u1' was deleted","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"RenameUser","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"user 'u1' was deleted","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"ChangeUserEmail","payload":{"id":"u1","email":"a@example.com"}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":false,"error":"user 'u1' was deleted","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":11,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":11,"success":false,"error":"user id 'u1' belonged to a deleted user and cannot be reused","code":"already_exists"}"#,
        ),
        (
            r#"{"type":"command","msg_id":12,"command":{"type":"DeleteUser","payload":{"id":"nobody"}}}"#,
            r#"{"type":"command_result","in_reply_to":12,"success":false,"error":"user 'nobody' does not exist","code":"not_found"}"#,
        ),
        (
            r#"{"type":"command","msg_id":13,"command":{"type":"DeleteUser","payload":{}}}"#,
            r#"{"type":"command_result","in_reply_to":13,"success":false,"error":"payload.id is required","code":"validation_failed"}"#,
        ),
        // Nothing of the refused commands was written.
        (
            r#"{"type":"query","msg_id":14,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":3}}}"#,
            r#"{"type":"query_result","in_reply_to":14,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":15,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":15,"data":{"id":"u1","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u1","name":"Ann"}},{"eventType":"UserDeleted","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{}}]}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Queries.

/// u1: created 2024-01-01 (Ann), renamed 2024-01-02 (Anne), email 2024-01-03, deleted 2024-01-04.
const U1_LIFE: &[(&str, &str)] = &[
    (
        r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann"}}}"#,
        r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":2,"command":{"type":"RenameUser","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","name":"Anne"}}}"#,
        r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":3,"command":{"type":"ChangeUserEmail","timestamp":"2024-01-03T00:00:00Z","payload":{"id":"u1","email":"anne@example.com"}}}"#,
        r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserEmailChanged","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":4,"command":{"type":"DeleteUser","timestamp":"2024-01-04T00:00:00Z","payload":{"id":"u1"}}}"#,
        r#"{"type":"command_result","in_reply_to":4,"success":true,"events":[{"eventType":"UserDeleted","aggregateId":"u1"}]}"#,
    ),
];

#[test]
fn get_user_at_time() {
    let mut node = Node::in_memory();
    node.expect(U1_LIFE);
    node.expect(&[
        // Before the user existed.
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"2023-12-31T23:59:59.999999999Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":null}"#,
        ),
        // Up to and including the given time.
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"2024-01-01T00:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":{"id":"u1","name":"Ann","at_time":"2024-01-01T00:00:00Z"}}"#,
        ),
        (
            r#"{"type":"query","msg_id":7,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"2024-01-02T12:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":7,"data":{"id":"u1","name":"Anne","at_time":"2024-01-02T12:00:00Z"}}"#,
        ),
        // at_time is the timestamp as the request gave it (here 2024-01-03T01:00:00Z).
        (
            r#"{"type":"query","msg_id":8,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"2024-01-03T02:00:00+01:00"}}}"#,
            r#"{"type":"query_result","in_reply_to":8,"data":{"id":"u1","name":"Anne","email":"anne@example.com","at_time":"2024-01-03T02:00:00+01:00"}}"#,
        ),
        // Deleted by then.
        (
            r#"{"type":"query","msg_id":9,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"2024-01-04T00:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":9,"data":null}"#,
        ),
        // Far outside the stored range: clamped, not refused.
        (
            r#"{"type":"query","msg_id":10,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"0001-01-01T00:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":10,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":11,"query":{"type":"GetUserAtTime","params":{"userId":"nobody","timestamp":"2024-01-02T00:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":11,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":12,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"2024-01-02"}}}"#,
            r#"{"type":"query_result","in_reply_to":12,"data":null,"error":"params.timestamp: '2024-01-02' is not an RFC 3339 time (e.g. 2024-01-15T09:00:00Z)","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":13,"query":{"type":"GetUserAtTime","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":13,"data":null,"error":"params.timestamp must be an RFC 3339 string","code":"validation_failed"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn get_user_at_time_far_in_the_future_sees_everything() {
    let mut node = Node::in_memory();
    node.expect(&U1_LIFE[..3]);
    node.expect(&[(
        r#"{"type":"query","msg_id":5,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"9999-12-31T23:59:59Z"}}}"#,
        r#"{"type":"query_result","in_reply_to":5,"data":{"id":"u1","name":"Anne","email":"anne@example.com","at_time":"9999-12-31T23:59:59Z"}}"#,
    )]);
    node.finish().assert_clean();
}

#[test]
fn get_user_at_version() {
    let mut node = Node::in_memory();
    node.expect(U1_LIFE);
    node.expect(&[
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":0}}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":1}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":{"id":"u1","name":"Ann","at_version":1}}"#,
        ),
        (
            r#"{"type":"query","msg_id":7,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":3}}}"#,
            r#"{"type":"query_result","in_reply_to":7,"data":{"id":"u1","name":"Anne","email":"anne@example.com","at_version":3}}"#,
        ),
        // Deleted at version 4; there is no version 5.
        (
            r#"{"type":"query","msg_id":8,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":4}}}"#,
            r#"{"type":"query_result","in_reply_to":8,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":9,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":5}}}"#,
            r#"{"type":"query_result","in_reply_to":9,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":10,"query":{"type":"GetUserAtVersion","params":{"userId":"nobody","version":1}}}"#,
            r#"{"type":"query_result","in_reply_to":10,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":11,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":-1}}}"#,
            r#"{"type":"query_result","in_reply_to":11,"data":null,"error":"params.version must be an integer >= 0","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":12,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":"2"}}}"#,
            r#"{"type":"query_result","in_reply_to":12,"data":null,"error":"params.version must be an integer >= 0","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":13,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":1.5}}}"#,
            r#"{"type":"query_result","in_reply_to":13,"data":null,"error":"params.version must be an integer >= 0","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":14,"query":{"type":"GetUserAtVersion","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":14,"data":null,"error":"params.version must be an integer >= 0","code":"validation_failed"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn get_user_history() {
    let mut node = Node::in_memory();
    node.expect(U1_LIFE);
    node.expect(&[
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":{"id":"u1","version":4,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u1","name":"Ann"}},{"eventType":"UserRenamed","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{"name":"Anne"}},{"eventType":"UserEmailChanged","aggregateId":"u1","version":3,"timestamp":"2024-01-03T00:00:00Z","data":{"email":"anne@example.com"}},{"eventType":"UserDeleted","aggregateId":"u1","version":4,"timestamp":"2024-01-04T00:00:00Z","data":{}}]}}"#,
        ),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUserHistory","params":{"userId":"nobody"}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":null}"#,
        ),
        // Times are shown in UTC, with as many fractional digits as they need.
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"CreateUser","timestamp":"2024-03-01T12:00:00.250+02:00","payload":{"id":"u2","name":"Bob"}}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u2"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":8,"query":{"type":"GetUserHistory","params":{"userId":"u2"}}}"#,
            r#"{"type":"query_result","in_reply_to":8,"data":{"id":"u2","version":1,"events":[{"eventType":"UserCreated","aggregateId":"u2","version":1,"timestamp":"2024-03-01T10:00:00.25Z","data":{"id":"u2","name":"Bob"}}]}}"#,
        ),
        (
            r#"{"type":"query","msg_id":9,"query":{"type":"GetUserHistory","params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":9,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

fn create(msg_id: u32, id: &str) -> (String, String) {
    (
        format!(
            r#"{{"type":"command","msg_id":{msg_id},"command":{{"type":"CreateUser","payload":{{"id":"{id}","name":"N-{id}"}}}}}}"#
        ),
        format!(
            r#"{{"type":"command_result","in_reply_to":{msg_id},"success":true,"events":[{{"eventType":"UserCreated","aggregateId":"{id}"}}]}}"#
        ),
    )
}

fn expect_owned(node: &mut Node, steps: &[(String, String)]) {
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    node.expect_pipelined(&steps);
}

#[test]
fn list_users_orders_by_id_bytes_and_pages_with_after_and_next() {
    let mut node = Node::in_memory();
    // Created out of order; "B" < "a" < ... < "é" in byte order; "gone" is deleted.
    let ids = ["d", "a", "é", "c", "B", "gone", "b"];
    let creates: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| create(i as u32 + 1, id))
        .collect();
    expect_owned(&mut node, &creates);
    node.expect(&[
        (
            r#"{"type":"command","msg_id":20,"command":{"type":"DeleteUser","payload":{"id":"gone"}}}"#,
            r#"{"type":"command_result","in_reply_to":20,"success":true,"events":[{"eventType":"UserDeleted","aggregateId":"gone"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":21,"query":{"type":"ListUsers","params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":21,"data":{"users":[{"id":"B","name":"N-B"},{"id":"a","name":"N-a"},{"id":"b","name":"N-b"},{"id":"c","name":"N-c"},{"id":"d","name":"N-d"},{"id":"é","name":"N-é"}],"next":null}}"#,
        ),
        // params may be left out.
        (
            r#"{"type":"query","msg_id":22,"query":{"type":"ListUsers"}}"#,
            r#"{"type":"query_result","in_reply_to":22,"data":{"users":[{"id":"B","name":"N-B"},{"id":"a","name":"N-a"},{"id":"b","name":"N-b"},{"id":"c","name":"N-c"},{"id":"d","name":"N-d"},{"id":"é","name":"N-é"}],"next":null}}"#,
        ),
        (
            r#"{"type":"query","msg_id":23,"query":{"type":"ListUsers","params":{"limit":2}}}"#,
            r#"{"type":"query_result","in_reply_to":23,"data":{"users":[{"id":"B","name":"N-B"},{"id":"a","name":"N-a"}],"next":"a"}}"#,
        ),
        (
            r#"{"type":"query","msg_id":24,"query":{"type":"ListUsers","params":{"limit":2,"after":"a"}}}"#,
            r#"{"type":"query_result","in_reply_to":24,"data":{"users":[{"id":"b","name":"N-b"},{"id":"c","name":"N-c"}],"next":"c"}}"#,
        ),
        // The last page, exactly full: no more users follow, so next is null.
        (
            r#"{"type":"query","msg_id":25,"query":{"type":"ListUsers","params":{"limit":2,"after":"c"}}}"#,
            r#"{"type":"query_result","in_reply_to":25,"data":{"users":[{"id":"d","name":"N-d"},{"id":"é","name":"N-é"}],"next":null}}"#,
        ),
        (
            r#"{"type":"query","msg_id":26,"query":{"type":"ListUsers","params":{"limit":2,"after":"é"}}}"#,
            r#"{"type":"query_result","in_reply_to":26,"data":{"users":[],"next":null}}"#,
        ),
        // after need not be an existing id (here a deleted one, then one never used).
        (
            r#"{"type":"query","msg_id":27,"query":{"type":"ListUsers","params":{"after":"gone"}}}"#,
            r#"{"type":"query_result","in_reply_to":27,"data":{"users":[{"id":"é","name":"N-é"}],"next":null}}"#,
        ),
        (
            r#"{"type":"query","msg_id":28,"query":{"type":"ListUsers","params":{"after":"bb","limit":1}}}"#,
            r#"{"type":"query_result","in_reply_to":28,"data":{"users":[{"id":"c","name":"N-c"}],"next":"c"}}"#,
        ),
        (
            r#"{"type":"query","msg_id":29,"query":{"type":"ListUsers","params":{"after":null,"limit":null}}}"#,
            r#"{"type":"query_result","in_reply_to":29,"data":{"users":[{"id":"B","name":"N-B"},{"id":"a","name":"N-a"},{"id":"b","name":"N-b"},{"id":"c","name":"N-c"},{"id":"d","name":"N-d"},{"id":"é","name":"N-é"}],"next":null}}"#,
        ),
        (
            r#"{"type":"query","msg_id":30,"query":{"type":"ListUsers","params":{"limit":0}}}"#,
            r#"{"type":"query_result","in_reply_to":30,"data":null,"error":"params.limit must be an integer >= 1 (at most 1000 are returned)","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":31,"query":{"type":"ListUsers","params":{"limit":-3}}}"#,
            r#"{"type":"query_result","in_reply_to":31,"data":null,"error":"params.limit must be an integer >= 1 (at most 1000 are returned)","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":32,"query":{"type":"ListUsers","params":{"limit":2.5}}}"#,
            r#"{"type":"query_result","in_reply_to":32,"data":null,"error":"params.limit must be an integer >= 1 (at most 1000 are returned)","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":33,"query":{"type":"ListUsers","params":{"after":7}}}"#,
            r#"{"type":"query_result","in_reply_to":33,"data":null,"error":"params.after must be a user id (string)","code":"validation_failed"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

/// The expected `ListUsers` reply for users `u0000`..: `ids` is the page, `next` as it must be.
fn page(msg_id: u32, ids: std::ops::Range<usize>, next: Option<usize>) -> String {
    let users: Vec<String> = ids
        .map(|i| format!(r#"{{"id":"u{i:04}","name":"N-u{i:04}"}}"#))
        .collect();
    let next = match next {
        Some(i) => format!(r#""u{i:04}""#),
        None => "null".into(),
    };
    format!(
        r#"{{"type":"query_result","in_reply_to":{msg_id},"data":{{"users":[{}],"next":{next}}}}}"#,
        users.join(",")
    )
}

#[test]
fn list_users_default_limit_is_100_and_at_most_1000_are_returned() {
    let mut node = Node::in_memory();
    let n = 1001;
    let creates: Vec<_> = (0..n)
        .map(|i| create(i as u32 + 1, &format!("u{i:04}")))
        .collect();
    expect_owned(&mut node, &creates);
    let steps = [
        (
            r#"{"type":"query","msg_id":2001,"query":{"type":"ListUsers"}}"#.to_string(),
            page(2001, 0..100, Some(99)),
        ),
        (
            r#"{"type":"query","msg_id":2002,"query":{"type":"ListUsers","params":{"limit":5000}}}"#
                .to_string(),
            page(2002, 0..1000, Some(999)),
        ),
        (
            r#"{"type":"query","msg_id":2003,"query":{"type":"ListUsers","params":{"limit":1000,"after":"u0999"}}}"#
                .to_string(),
            page(2003, 1000..1001, None),
        ),
        (
            r#"{"type":"query","msg_id":2004,"query":{"type":"ListUsers","params":{"limit":1001}}}"#
                .to_string(),
            page(2004, 0..1000, Some(999)),
        ),
    ];
    for (request, reply) in &steps {
        node.expect_line(&req(request), &rep(reply));
    }
    node.finish().assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Failure codes.

#[test]
fn command_validation_failed() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","payload":{"name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":false,"error":"payload.id is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"CreateUser","payload":{"id":"","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":false,"error":"payload.id must not be empty","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"CreateUser","payload":{"id":7,"name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":false,"error":"payload.id must be a string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":4,"command":{"type":"CreateUser","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":false,"error":"payload.name is required","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":5,"command":{"type":"CreateUser","payload":{"id":"u1","name":""}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":6,"command":{"type":"CreateUser","payload":{"id":"u1","name":" \t "}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"CreateUser","payload":{"id":"u1","name":["Ann"]}}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"CreateUser","timestamp":"yesterday","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"timestamp: 'yesterday' is not an RFC 3339 time (e.g. 2024-01-15T09:00:00Z)","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"CreateUser","timestamp":"2300-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"timestamp: '2300-01-01T00:00:00Z' is outside the supported range (years 1677 to 2262)","code":"validation_failed"}"#,
        ),
        // Event times never go backwards within an aggregate.
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"CreateUser","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":11,"command":{"type":"RenameUser","timestamp":"2024-01-01T23:59:59Z","payload":{"id":"u1","name":"Anne"}}}"#,
            r#"{"type":"command_result","in_reply_to":11,"success":false,"error":"timestamp 2024-01-01T23:59:59Z is earlier than the last event of 'u1' (2024-01-02T00:00:00Z); event times never go backwards","code":"validation_failed"}"#,
        ),
        // The same time is not earlier.
        (
            r#"{"type":"command","msg_id":12,"command":{"type":"RenameUser","timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","name":"Anne"}}}"#,
            r#"{"type":"command_result","in_reply_to":12,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
        ),
        // Validation comes before loading: an unknown user with a bad name is invalid.
        (
            r#"{"type":"command","msg_id":13,"command":{"type":"RenameUser","payload":{"id":"nobody","name":""}}}"#,
            r#"{"type":"command_result","in_reply_to":13,"success":false,"error":"name must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":14,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":14,"data":{"id":"u1","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-01-02T00:00:00Z","data":{"id":"u1","name":"Ann"}},{"eventType":"UserRenamed","aggregateId":"u1","version":2,"timestamp":"2024-01-02T00:00:00Z","data":{"name":"Anne"}}]}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn version_conflict_carries_current_version() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","expectedVersion":0,"payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"RenameUser","expectedVersion":1,"payload":{"id":"u1","name":"Anne"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"RenameUser","expectedVersion":1,"payload":{"id":"u1","name":"Annie"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":false,"error":"expected version 1, but the aggregate is at version 2","code":"version_conflict","current_version":2}"#,
        ),
        // The snake_case spelling works the same.
        (
            r#"{"type":"command","msg_id":4,"command":{"type":"UpdateUser","expected_version":5,"payload":{"id":"u1","x":1}}}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":false,"error":"expected version 5, but the aggregate is at version 2","code":"version_conflict","current_version":2}"#,
        ),
        (
            r#"{"type":"command","msg_id":5,"command":{"type":"UpdateUser","expected_version":2,"payload":{"id":"u1","x":1}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":true,"events":[{"eventType":"UserUpdated","aggregateId":"u1"}]}"#,
        ),
        // A no-op is checked too.
        (
            r#"{"type":"command","msg_id":6,"command":{"type":"UpdateUser","expectedVersion":2,"payload":{"id":"u1","x":1}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":false,"error":"expected version 2, but the aggregate is at version 3","code":"version_conflict","current_version":3}"#,
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"UpdateUser","expectedVersion":3,"payload":{"id":"u1","x":1}}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":true,"events":[]}"#,
        ),
        // expectedVersion 0: must not exist yet; for a new id, any other version conflicts.
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"CreateUser","expectedVersion":1,"payload":{"id":"u2","name":"Bob"}}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"expected version 1, but the aggregate is at version 0","code":"version_conflict","current_version":0}"#,
        ),
        // The domain decides before the version check: an existing id is already_exists.
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"CreateUser","expectedVersion":0,"payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"user 'u1' already exists","code":"already_exists"}"#,
        ),
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"RenameUser","expectedVersion":0,"payload":{"id":"nobody","name":"N"}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":false,"error":"user 'nobody' does not exist","code":"not_found"}"#,
        ),
        (
            r#"{"type":"query","msg_id":11,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":11,"data":{"id":"u1","name":"Anne","x":1}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn unknown_command_and_malformed() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"FrobnicateUser","payload":{"id":"u1"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":false,"error":"unknown command type 'FrobnicateUser'","code":"unknown_command"}"#,
        ),
        // unknown_command is decided right after the type: the payload does not matter.
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"createuser"}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":false,"error":"unknown command type 'createuser'","code":"unknown_command"}"#,
        ),
        (
            r#"{"type":"command","msg_id":3}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":false,"error":"body.command must be an object with 'type' and 'payload'","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":4,"command":"CreateUser"}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":false,"error":"body.command must be an object with 'type' and 'payload'","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":5,"command":{"payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":false,"error":"command.type must be a string","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":6,"command":{"type":["CreateUser"],"payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":false,"error":"command.type must be a string","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"CreateUser"}}"#,
            r#"{"type":"command_result","in_reply_to":7,"success":false,"error":"command.payload must be an object","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":8,"command":{"type":"CreateUser","payload":"u1"}}"#,
            r#"{"type":"command_result","in_reply_to":8,"success":false,"error":"command.payload must be an object","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"CreateUser","expectedVersion":-1,"payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"expectedVersion must be an integer >= 0","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":10,"command":{"type":"CreateUser","expected_version":"0","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":10,"success":false,"error":"expectedVersion must be an integer >= 0","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":11,"command":{"type":"CreateUser","expectedVersion":0.5,"payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":11,"success":false,"error":"expectedVersion must be an integer >= 0","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":12,"command":{"type":"CreateUser","timestamp":1705309200,"payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":12,"success":false,"error":"timestamp must be an RFC 3339 string","code":"malformed"}"#,
        ),
        (
            r#"{"type":"command","msg_id":13,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann","timestamp":false}}}"#,
            r#"{"type":"command_result","in_reply_to":13,"success":false,"error":"timestamp must be an RFC 3339 string","code":"malformed"}"#,
        ),
        // None of them wrote anything.
        (
            r#"{"type":"query","msg_id":14,"query":{"type":"ListUsers"}}"#,
            r#"{"type":"query_result","in_reply_to":14,"data":{"users":[],"next":null}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn query_failures() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"query","msg_id":1,"query":{"type":"GetEverything","params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":1,"data":null,"error":"unknown query type 'GetEverything'","code":"unknown_query"}"#,
        ),
        (
            r#"{"type":"query","msg_id":2,"query":{"type":"GetUser","params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":2,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":3,"query":{"type":"GetUser","params":{"userId":""}}}"#,
            r#"{"type":"query_result","in_reply_to":3,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":4,"query":{"type":"GetUser","params":{"userId":42}}}"#,
            r#"{"type":"query_result","in_reply_to":4,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"GetUser"}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":null,"error":"params.userId must be a non-empty string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUser","params":["u1"]}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":null,"error":"query.params must be an object","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":7,"query":{"params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":7,"data":null,"error":"query.type must be a string","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":8}"#,
            r#"{"type":"query_result","in_reply_to":8,"data":null,"error":"body.query must be an object with 'type' and 'params'","code":"validation_failed"}"#,
        ),
        (
            r#"{"type":"query","msg_id":9,"query":"GetUser"}"#,
            r#"{"type":"query_result","in_reply_to":9,"data":null,"error":"body.query must be an object with 'type' and 'params'","code":"validation_failed"}"#,
        ),
        // A well-formed query for nobody is not an error.
        (
            r#"{"type":"query","msg_id":10,"query":{"type":"GetUser","params":{"userId":"nobody"}}}"#,
            r#"{"type":"query_result","in_reply_to":10,"data":null}"#,
        ),
    ]);
    node.finish().assert_clean();
}

// ---------------------------------------------------------------------------------------------
// The protocol: init, node ids, protocol errors, msg_id.

#[test]
fn init_names_the_node_and_its_store() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    let exchange = [
        (
            r#"{"src":"c1","dest":"whoever","body":{"type":"init","msg_id":1,"node_id":"n1","node_ids":["n1","n2"]}}"#,
            r#"{"src":"n1","dest":"c1","body":{"type":"init_ok","in_reply_to":1}}"#,
        ),
        (
            r#"{"src":"c2","dest":"n1","body":{"type":"query","msg_id":2,"query":{"type":"GetUser","params":{"userId":"u1"}}}}"#,
            r#"{"src":"n1","dest":"c2","body":{"type":"query_result","in_reply_to":2,"data":null}}"#,
        ),
        // The reply's src is the node's id whatever the request's dest says.
        (
            r#"{"src":"c2","dest":"someone-else","body":{"type":"command","msg_id":3,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann"}}}}"#,
            r#"{"src":"n1","dest":"c2","body":{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}}"#,
        ),
    ];
    for (request, reply) in exchange {
        node.expect_line(request, reply);
    }
    node.finish().assert_clean();
    assert_eq!(common::db_files(dir.path()), ["n1.db"]);
}

#[test]
fn without_init_the_first_dest_names_the_node_and_a_later_init_renames_it() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    let exchange = [
        (
            r#"{"src":"c1","dest":"first","body":{"type":"query","msg_id":1,"query":{"type":"ListUsers"}}}"#,
            r#"{"src":"first","dest":"c1","body":{"type":"query_result","in_reply_to":1,"data":{"users":[],"next":null}}}"#,
        ),
        (
            r#"{"src":"c1","dest":"second","body":{"type":"command","msg_id":2,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann"}}}}"#,
            r#"{"src":"first","dest":"c1","body":{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}}"#,
        ),
        (
            r#"{"src":"c1","dest":"first","body":{"type":"init","msg_id":3,"node_id":"n9","node_ids":["n9"]}}"#,
            r#"{"src":"n9","dest":"c1","body":{"type":"init_ok","in_reply_to":3}}"#,
        ),
        (
            r#"{"src":"c1","dest":"first","body":{"type":"query","msg_id":4,"query":{"type":"GetUser","params":{"userId":"u1"}}}}"#,
            r#"{"src":"n9","dest":"c1","body":{"type":"query_result","in_reply_to":4,"data":{"id":"u1","name":"Ann"}}}"#,
        ),
    ];
    for (request, reply) in exchange {
        node.expect_line(request, reply);
    }
    node.finish().assert_clean();
    // A later init renames the replies, not the store.
    assert_eq!(common::db_files(dir.path()), ["first.db"]);
}

#[test]
fn a_first_line_that_cannot_be_answered_does_not_name_the_node() {
    let mut node = Node::in_memory();
    node.send("not json");
    node.send(
        r#"{"dest":"nameless","body":{"type":"query","msg_id":1,"query":{"type":"ListUsers"}}}"#,
    );
    node.expect_line(
        r#"{"src":"c","dest":"n3","body":{"type":"query","msg_id":2,"query":{"type":"ListUsers"}}}"#,
        r#"{"src":"n3","dest":"c","body":{"type":"query_result","in_reply_to":2,"data":{"users":[],"next":null}}}"#,
    );
    node.finish().assert_clean();
}

#[test]
fn init_with_node_id_flag_and_without_msg_id() {
    // --node-id names the node from the start; an init without msg_id renames it silently.
    let mut node = Node::spawn(common::cqrs().args(["--in-memory", "--node-id", "flag"]));
    let exchange = [
        (
            r#"{"src":"c","dest":"other","body":{"type":"query","msg_id":1,"query":{"type":"ListUsers"}}}"#,
            r#"{"src":"flag","dest":"c","body":{"type":"query_result","in_reply_to":1,"data":{"users":[],"next":null}}}"#,
        ),
        (
            concat!(
                r#"{"src":"c","dest":"flag","body":{"type":"init","node_id":"n5","node_ids":["n5"]}}"#,
                "\n",
                r#"{"src":"c","dest":"flag","body":{"type":"query","msg_id":2,"query":{"type":"ListUsers"}}}"#
            ),
            r#"{"src":"n5","dest":"c","body":{"type":"query_result","in_reply_to":2,"data":{"users":[],"next":null}}}"#,
        ),
    ];
    for (request, reply) in exchange {
        node.expect_line(request, reply);
    }
    node.finish().assert_clean();
}

#[test]
fn protocol_errors_10_and_12() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"echo","msg_id":1,"echo":"hi"}"#,
            r#"{"type":"error","in_reply_to":1,"code":10,"text":"unsupported message type 'echo'"}"#,
        ),
        (
            r#"{"type":"init_ok","msg_id":2,"in_reply_to":1}"#,
            r#"{"type":"error","in_reply_to":2,"code":10,"text":"unsupported message type 'init_ok'"}"#,
        ),
        (
            r#"{"msg_id":3,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"error","in_reply_to":3,"code":12,"text":"body has no 'type'"}"#,
        ),
        (
            r#"{"type":null,"msg_id":4}"#,
            r#"{"type":"error","in_reply_to":4,"code":12,"text":"body 'type' must be a string"}"#,
        ),
        (
            r#"{"type":"init","msg_id":5}"#,
            r#"{"type":"error","in_reply_to":5,"code":12,"text":"init needs a non-empty string 'node_id'"}"#,
        ),
        (
            r#"{"type":"init","msg_id":6,"node_id":""}"#,
            r#"{"type":"error","in_reply_to":6,"code":12,"text":"init needs a non-empty string 'node_id'"}"#,
        ),
        // The msg_id comes back as it was sent.
        (
            r#"{"type":"query","msg_id":"m-7","query":{"type":"ListUsers"}}"#,
            r#"{"type":"query_result","in_reply_to":"m-7","data":{"users":[],"next":null}}"#,
        ),
        (
            r#"{"type":"query","msg_id":18446744073709551615,"query":{"type":"ListUsers"}}"#,
            r#"{"type":"query_result","in_reply_to":18446744073709551615,"data":{"users":[],"next":null}}"#,
        ),
    ]);
    // A missing dest: error 12.
    node.expect_line(
        r#"{"src":"client","body":{"type":"query","msg_id":9,"query":{"type":"ListUsers"}}}"#,
        &rep(
            r#"{"type":"error","in_reply_to":9,"code":12,"text":"envelope has no string 'dest'"}"#,
        ),
    );
    node.finish().assert_clean();
}

#[test]
fn a_request_without_msg_id_is_carried_out_but_not_answered() {
    let mut node = Node::in_memory();
    node.send(&req(
        r#"{"type":"command","command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann"}}}"#,
    ));
    node.send(&req(
        r#"{"type":"command","msg_id":null,"command":{"type":"RenameUser","payload":{"id":"u1","name":"Anne"}}}"#,
    ));
    // Failures, queries and protocol errors without msg_id are not answered either.
    node.send(&req(
        r#"{"type":"command","command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann"}}}"#,
    ));
    node.send(&req(r#"{"type":"query","query":{"type":"ListUsers"}}"#));
    node.send(&req(r#"{"type":"echo"}"#));
    node.expect(&[(
        r#"{"type":"query","msg_id":1,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
        r#"{"type":"query_result","in_reply_to":1,"data":{"id":"u1","name":"Anne"}}"#,
    )]);
    node.finish().assert_clean();
}

#[test]
fn unknown_keys_are_ignored_everywhere() {
    let mut node = Node::in_memory();
    let exchange = [
        (
            r#"{"id":17,"src":"client","dest":"cqrs","extra":[1],"body":{"type":"command","msg_id":1,"trace":"x","command":{"type":"CreateUser","meta":{"a":1},"payload":{"id":"u1","name":"Ann"}}}}"#,
            r#"{"src":"cqrs","dest":"client","body":{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}}"#,
        ),
        (
            r#"{"id":18,"src":"client","dest":"cqrs","body":{"type":"query","msg_id":2,"query":{"type":"GetUser","params":{"userId":"u1","verbose":true}}}}"#,
            r#"{"src":"cqrs","dest":"client","body":{"type":"query_result","in_reply_to":2,"data":{"id":"u1","name":"Ann"}}}"#,
        ),
    ];
    for (request, reply) in exchange {
        node.expect_line(request, reply);
    }
    node.finish().assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Times, and consistency.

#[test]
fn a_timestamp_in_the_payload_is_the_event_time_and_never_an_attribute() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ann","timestamp":"2024-02-01T00:00:00Z"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":2,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":2,"data":{"id":"u1","name":"Ann"}}"#,
        ),
        // An update carrying nothing but a timestamp changes nothing.
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"UpdateUser","payload":{"id":"u1","timestamp":"2024-02-02T00:00:00Z"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[]}"#,
        ),
        // The command's own timestamp wins over the payload's.
        (
            r#"{"type":"command","msg_id":4,"command":{"type":"UpdateUser","timestamp":"2024-02-03T00:00:00Z","payload":{"id":"u1","timestamp":"2024-02-09T00:00:00Z","city":"Oslo"}}}"#,
            r#"{"type":"command_result","in_reply_to":4,"success":true,"events":[{"eventType":"UserUpdated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":5,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":5,"data":{"id":"u1","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2024-02-01T00:00:00Z","data":{"id":"u1","name":"Ann"}},{"eventType":"UserUpdated","aggregateId":"u1","version":2,"timestamp":"2024-02-03T00:00:00Z","data":{"city":"Oslo"}}]}}"#,
        ),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetUserAtTime","params":{"userId":"u1","timestamp":"2024-02-02T00:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":6,"data":{"id":"u1","name":"Ann","at_time":"2024-02-02T00:00:00Z"}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn a_command_without_timestamp_never_goes_before_the_last_event() {
    // The last event is far in the future: "now" would go backwards, so the event takes its time.
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2200-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"RenameUser","payload":{"id":"u1","name":"Anne"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":3,"query":{"type":"GetUserHistory","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":3,"data":{"id":"u1","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u1","version":1,"timestamp":"2200-01-01T00:00:00Z","data":{"id":"u1","name":"Ann"}},{"eventType":"UserRenamed","aggregateId":"u1","version":2,"timestamp":"2200-01-01T00:00:00Z","data":{"name":"Anne"}}]}}"#,
        ),
    ]);
    node.finish().assert_clean();
}

/// One write holds all of these, so the node finds them waiting together: runs of commands are
/// committed together, and every query sees every command before it.
const PIPELINED: &[(&str, &str)] = &[
    (
        r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ann"}}}"#,
        r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":2,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Again"}}}"#,
        r#"{"type":"command_result","in_reply_to":2,"success":false,"error":"user 'u1' already exists","code":"already_exists"}"#,
    ),
    (
        r#"{"type":"command","msg_id":3,"command":{"type":"RenameUser","expectedVersion":1,"timestamp":"2024-01-02T00:00:00Z","payload":{"id":"u1","name":"Anne"}}}"#,
        r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":4,"command":{"type":"RenameUser","expectedVersion":1,"payload":{"id":"u1","name":"Annie"}}}"#,
        r#"{"type":"command_result","in_reply_to":4,"success":false,"error":"expected version 1, but the aggregate is at version 2","code":"version_conflict","current_version":2}"#,
    ),
    (
        r#"{"type":"command","msg_id":5,"command":{"type":"CreateUser","timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u2","name":"Bob"}}}"#,
        r#"{"type":"command_result","in_reply_to":5,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u2"}]}"#,
    ),
    (
        r#"{"type":"query","msg_id":6,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
        r#"{"type":"query_result","in_reply_to":6,"data":{"id":"u1","name":"Anne"}}"#,
    ),
    (
        r#"{"type":"query","msg_id":7,"query":{"type":"ListUsers"}}"#,
        r#"{"type":"query_result","in_reply_to":7,"data":{"users":[{"id":"u1","name":"Anne"},{"id":"u2","name":"Bob"}],"next":null}}"#,
    ),
    (
        r#"{"type":"command","msg_id":8,"command":{"type":"DeleteUser","timestamp":"2024-01-03T00:00:00Z","payload":{"id":"u2"}}}"#,
        r#"{"type":"command_result","in_reply_to":8,"success":true,"events":[{"eventType":"UserDeleted","aggregateId":"u2"}]}"#,
    ),
    (
        r#"{"type":"command","msg_id":9,"command":{"type":"UpdateUser","payload":{"id":"u2","x":1}}}"#,
        r#"{"type":"command_result","in_reply_to":9,"success":false,"error":"user 'u2' was deleted","code":"deleted"}"#,
    ),
    (
        r#"{"type":"command","msg_id":10,"command":{"type":"ChangeUserEmail","timestamp":"2024-01-03T00:00:00Z","payload":{"id":"u1","email":"anne@example.com"}}}"#,
        r#"{"type":"command_result","in_reply_to":10,"success":true,"events":[{"eventType":"UserEmailChanged","aggregateId":"u1"}]}"#,
    ),
    (
        r#"{"type":"query","msg_id":11,"query":{"type":"ListUsers"}}"#,
        r#"{"type":"query_result","in_reply_to":11,"data":{"users":[{"id":"u1","name":"Anne","email":"anne@example.com"}],"next":null}}"#,
    ),
    (
        r#"{"type":"query","msg_id":12,"query":{"type":"GetUserHistory","params":{"userId":"u2"}}}"#,
        r#"{"type":"query_result","in_reply_to":12,"data":{"id":"u2","version":2,"events":[{"eventType":"UserCreated","aggregateId":"u2","version":1,"timestamp":"2024-01-01T00:00:00Z","data":{"id":"u2","name":"Bob"}},{"eventType":"UserDeleted","aggregateId":"u2","version":2,"timestamp":"2024-01-03T00:00:00Z","data":{}}]}}"#,
    ),
    (
        r#"{"type":"query","msg_id":13,"query":{"type":"GetUserAtVersion","params":{"userId":"u1","version":3}}}"#,
        r#"{"type":"query_result","in_reply_to":13,"data":{"id":"u1","name":"Anne","email":"anne@example.com","at_version":3}}"#,
    ),
];

#[test]
fn read_your_writes_in_a_pipelined_batch_in_memory() {
    let mut node = Node::in_memory();
    node.expect_pipelined(PIPELINED);
    node.finish().assert_clean();
}

#[test]
fn read_your_writes_in_a_pipelined_batch_on_disk() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    node.expect_pipelined(PIPELINED);
    node.finish().assert_clean();
    // And the same state after a restart.
    let mut node = Node::on_dir(dir.path());
    node.expect(&[
        PIPELINED[10],
        PIPELINED[11],
        PIPELINED[12],
        (
            r#"{"type":"query","msg_id":14,"query":{"type":"GetUser","params":{"userId":"u2"}}}"#,
            r#"{"type":"query_result","in_reply_to":14,"data":null}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn a_batch_limited_by_max_batch_gives_the_same_replies() {
    let mut node = Node::spawn(common::cqrs().args(["--in-memory", "--max-batch", "1"]));
    node.expect_pipelined(PIPELINED);
    node.finish().assert_clean();
}
