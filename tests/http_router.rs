//! The HTTP front end in process: the router, called with `tower::ServiceExt::oneshot`, in
//! front of a real node (in memory) on its writer thread. Every route and status code of
//! `../shared/http.md`, the exact bodies and headers; the live feed with a slow client.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use cqrs_node::http::{self, routes, App, Options};
use cqrs_node::node::{Config, Node};
use cqrs_node::store::MemoryStore;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;

struct Test {
    router: Router,
    _stop: watch::Sender<bool>,
}

fn options() -> Options {
    Options {
        token: None,
        max_body: 1 << 20,
        max_batch: 1024,
        feed_buffer: http::feed::BUFFER,
    }
}

fn start(options: Options) -> Test {
    let registry = Arc::new(cqrs_node::registry());
    let node = Node::open(MemoryStore::new(), registry.clone(), &Config::default()).unwrap();
    let started = http::start(node, options.max_batch).unwrap();
    let (bridge, appended) = (started.bridge, started.appended);
    let (stop, stopping) = watch::channel(false);
    let app = App::new(registry, bridge, appended, options, stopping);
    Test {
        router: routes::router(app, "127.0.0.1:8080".parse().unwrap()),
        _stop: stop,
    }
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    /// A problem+json of this status and code.
    #[track_caller]
    fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let p = self.json();
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(&keys[..5], ["type", "title", "status", "detail", "code"]);
        assert_eq!(p["status"], status);
        assert_eq!(p["code"], code, "{p}");
        assert!(!p["detail"].as_str().unwrap().is_empty());
        p
    }
}

impl Test {
    async fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Got {
        let mut r = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let response = self
            .router
            .clone()
            .oneshot(r.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Got {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, uri: &str) -> Got {
        self.call("GET", uri, &[], "").await
    }

    async fn command(&self, command: Value) -> Got {
        self.call("POST", "/api/v1/commands", &[], &command.to_string())
            .await
    }

    async fn create(&self, id: &str, name: &str, at: &str) -> Got {
        self.command(
            json!({"type": "CreateUser", "timestamp": at, "payload": {"id": id, "name": name}}),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_201_with_location_and_etag() {
    let t = start(options());
    let got = t.create("user-123", "John", "2024-01-10T08:00:00Z").await;
    assert_eq!(got.status, StatusCode::CREATED);
    assert_eq!(got.header("location"), Some("/api/v1/users/user-123"));
    assert_eq!(got.header("etag"), Some("\"1\""));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.body,
        r#"{"success":true,"events":[{"eventType":"UserCreated","aggregateId":"user-123"}]}"#
    );
    // Another command: 200, the new version as ETag.
    let got = t
        .command(json!({"type": "RenameUser", "payload": {"id": "user-123", "name": "John Doe"}}))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("etag"), Some("\"2\""));
    assert_eq!(got.header("location"), None);
    // An id that needs encoding in the Location, and decoding in the path.
    let got = t.create("a b/c", "Odd", "2024-01-10T08:00:00Z").await;
    assert_eq!(got.header("location"), Some("/api/v1/users/a%20b%2Fc"));
    let got = t.get("/api/v1/users/a%20b%2Fc").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, r#"{"id":"a b/c","name":"Odd"}"#);
    // No CORS unless configured.
    assert!(got
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("access-control")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commands_get_their_status_by_code() {
    let t = start(options());
    t.create("u1", "Ann", "2024-01-10T08:00:00Z").await;
    // already_exists: 409.
    t.create("u1", "Ann", "2024-01-10T08:00:00Z")
        .await
        .problem(409, "already_exists");
    // version_conflict from the body: 409 with current_version.
    let p = t
        .command(json!({"type": "RenameUser", "expectedVersion": 5, "payload": {"id": "u1", "name": "B"}}))
        .await
        .problem(409, "version_conflict");
    assert_eq!(p["current_version"], 1);
    let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
    assert_eq!(keys.last().unwrap().as_str(), "current_version");
    // from If-Match: 412.
    let got = t
        .call(
            "POST",
            "/api/v1/commands",
            &[("if-match", "\"7\"")],
            &json!({"type": "RenameUser", "payload": {"id": "u1", "name": "B"}}).to_string(),
        )
        .await;
    assert_eq!(got.problem(412, "version_conflict")["current_version"], 1);
    // If-Match that matches: applied.
    let got = t
        .call(
            "POST",
            "/api/v1/commands",
            &[("if-match", "\"1\"")],
            &json!({"type": "RenameUser", "payload": {"id": "u1", "name": "B"}}).to_string(),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("etag"), Some("\"2\""));
    // If-Match and a different expectedVersion; If-Match that is no ETag: 400.
    t.call(
        "POST",
        "/api/v1/commands",
        &[("if-match", "\"2\"")],
        &json!({"type": "RenameUser", "expectedVersion": 1, "payload": {"id": "u1", "name": "C"}})
            .to_string(),
    )
    .await
    .problem(400, "malformed");
    t.call(
        "POST",
        "/api/v1/commands",
        &[("if-match", "2")],
        &json!({"type": "RenameUser", "payload": {"id": "u1", "name": "C"}}).to_string(),
    )
    .await
    .problem(400, "malformed");
    // not_found: 404; validation_failed: 422; unknown_command: 400.
    t.command(json!({"type": "RenameUser", "payload": {"id": "nobody", "name": "X"}}))
        .await
        .problem(404, "not_found");
    t.command(json!({"type": "CreateUser", "payload": {"id": "u2", "name": ""}}))
        .await
        .problem(422, "validation_failed");
    t.command(json!({"type": "Explode", "payload": {}}))
        .await
        .problem(400, "unknown_command");
    // deleted: 410.
    t.command(json!({"type": "DeleteUser", "payload": {"id": "u1"}}))
        .await;
    t.command(json!({"type": "RenameUser", "payload": {"id": "u1", "name": "Z"}}))
        .await
        .problem(410, "deleted");
    // Bodies that are not JSON, not an object, or no command: 400 malformed.
    for body in [
        "{not json",
        "[1,2]",
        "\"text\"",
        "{\"type\":\"CreateUser\"}",
        "",
    ] {
        t.call("POST", "/api/v1/commands", &[], body)
            .await
            .problem(400, "malformed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_gives_every_retry_the_first_reply() {
    let t = start(options());
    let body = json!({"type": "CreateUser", "payload": {"id": "u1", "name": "Ann"}}).to_string();
    let key = [("idempotency-key", "k-1")];
    let first = t.call("POST", "/api/v1/commands", &key, &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    t.command(json!({"type": "RenameUser", "payload": {"id": "u1", "name": "Bo"}}))
        .await;
    let again = t.call("POST", "/api/v1/commands", &key, &body).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    // The same key on another command: 422 command_id_reused.
    let other = json!({"type": "CreateUser", "payload": {"id": "u2", "name": "Cy"}}).to_string();
    t.call("POST", "/api/v1/commands", &key, &other)
        .await
        .problem(422, "command_id_reused");
    // The header and the body's commandId differ: 400; they agree: fine.
    let with_id =
        json!({"type": "CreateUser", "commandId": "k-2", "payload": {"id": "u3", "name": "D"}})
            .to_string();
    t.call("POST", "/api/v1/commands", &key, &with_id)
        .await
        .problem(400, "malformed");
    let got = t
        .call(
            "POST",
            "/api/v1/commands",
            &[("idempotency-key", "k-2")],
            &with_id,
        )
        .await;
    assert_eq!(got.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_queries_answer_the_protocols_data() {
    let t = start(options());
    t.create("user-123", "John", "2024-01-10T08:00:00Z").await;
    t.command(
        json!({"type": "RenameUser", "timestamp": "2024-01-14T12:00:00Z",
                     "payload": {"id": "user-123", "name": "John Doe"}}),
    )
    .await;
    let got = t.get("/api/v1/users/user-123").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, r#"{"id":"user-123","name":"John Doe"}"#);
    assert_eq!(got.header("etag"), Some("\"2\""));
    // If-None-Match with the current ETag: 304; with an old one: 200.
    let got = t
        .call(
            "GET",
            "/api/v1/users/user-123",
            &[("if-none-match", "\"2\"")],
            "",
        )
        .await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.header("etag"), Some("\"2\""));
    assert_eq!(got.body, "");
    let got = t
        .call(
            "GET",
            "/api/v1/users/user-123",
            &[("if-none-match", "\"1\"")],
            "",
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    // As of a time, and a version.
    let got = t
        .get("/api/v1/users/user-123?at=2024-01-12T00:00:00Z")
        .await;
    assert_eq!(
        got.body,
        r#"{"id":"user-123","name":"John","at_time":"2024-01-12T00:00:00Z"}"#
    );
    let got = t.get("/api/v1/users/user-123?version=1").await;
    assert_eq!(
        got.body,
        r#"{"id":"user-123","name":"John","at_version":1}"#
    );
    // Null data: 404.
    t.get("/api/v1/users/user-123?at=2020-01-01T00:00:00Z")
        .await
        .problem(404, "not_found");
    t.get("/api/v1/users/user-123?version=9")
        .await
        .problem(404, "not_found");
    t.get("/api/v1/users/nobody")
        .await
        .problem(404, "not_found");
    t.get("/api/v1/users/nobody/history")
        .await
        .problem(404, "not_found");
    // Bad parameters: 422.
    for uri in [
        "/api/v1/users/user-123?version=x",
        "/api/v1/users/user-123?version=-1",
        "/api/v1/users/user-123?at=yesterday",
        "/api/v1/users/user-123?at=2024-01-12T00:00:00Z&version=1",
        "/api/v1/users?limit=0",
        "/api/v1/users?limit=ten",
        "/api/v1/events?after=-3",
        "/api/v1/events?limit=0",
        "/api/v1/events/live?after=x",
        "/api/v1/users/%8a",
        "/api/v1/users/%FF/history",
    ] {
        t.get(uri).await.problem(422, "validation_failed");
    }
    // History.
    let h = t.get("/api/v1/users/user-123/history").await.json();
    assert_eq!(h["id"], "user-123");
    assert_eq!(h["version"], 2);
    assert_eq!(h["events"][1]["data"], json!({"name": "John Doe"}));
    // The list, paged.
    t.create("user-200", "Zed", "2024-01-10T08:00:00Z").await;
    let got = t.get("/api/v1/users?limit=1").await;
    assert_eq!(
        got.body,
        r#"{"users":[{"id":"user-123","name":"John Doe"}],"next":"user-123"}"#
    );
    let got = t.get("/api/v1/users?limit=1&after=user-123").await;
    assert_eq!(
        got.body,
        r#"{"users":[{"id":"user-200","name":"Zed"}],"next":null}"#
    );
    // The global log.
    let got = t.get("/api/v1/events?after=1&limit=1").await;
    assert_eq!(
        got.body,
        r#"{"events":[{"position":2,"eventType":"UserRenamed","aggregateId":"user-123","version":2,"timestamp":"2024-01-14T12:00:00Z","data":{"name":"John Doe"}}],"next":2,"head":3}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_list_as_of_a_time_is_list_users_at_time() {
    let t = start(options());
    assert_eq!(
        t.create("b", "Bea", "2024-01-10T00:00:00Z").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        t.create("a", "Al", "2024-01-12T00:00:00Z").await.status,
        StatusCode::CREATED
    );
    let got = t
        .command(
            json!({"type": "RenameUser", "timestamp": "2024-01-14T00:00:00Z",
                        "payload": {"id": "b", "name": "Bee"}}),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    // Before a's creation and b's rename; after both; paged.
    assert_eq!(
        t.get("/api/v1/users?at=2024-01-11T00:00:00Z").await.body,
        r#"{"users":[{"id":"b","name":"Bea"}],"next":null,"at_time":"2024-01-11T00:00:00Z"}"#
    );
    assert_eq!(
        t.get("/api/v1/users?at=2024-01-15T00:00:00Z").await.body,
        r#"{"users":[{"id":"a","name":"Al"},{"id":"b","name":"Bee"}],"next":null,"at_time":"2024-01-15T00:00:00Z"}"#
    );
    assert_eq!(
        t.get("/api/v1/users?at=2024-01-15T00:00:00Z&limit=1")
            .await
            .body,
        r#"{"users":[{"id":"a","name":"Al"}],"next":"a","at_time":"2024-01-15T00:00:00Z"}"#
    );
    assert_eq!(
        t.get("/api/v1/users?at=2024-01-13T00:00:00Z&limit=1&after=a")
            .await
            .body,
        r#"{"users":[{"id":"b","name":"Bea"}],"next":null,"at_time":"2024-01-13T00:00:00Z"}"#
    );
    t.get("/api/v1/users?at=yesterday")
        .await
        .problem(422, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_problems() {
    let t = start(options());
    t.get("/nothing/here").await.problem(404, "not_found");
    t.get("/api/v1/users/a/b/c").await.problem(404, "not_found");
    let got = t.call("DELETE", "/api/v1/users/u1", &[], "").await;
    got.problem(405, "method_not_allowed");
    assert!(got.header("allow").unwrap().contains("GET"));
    t.get("/api/v1/commands")
        .await
        .problem(405, "method_not_allowed");
    assert_eq!(t.get("/healthz").await.body, r#"{"status":"ok"}"#);
    assert_eq!(t.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_the_probes() {
    let t = start(Options {
        token: Some("s3cret".into()),
        ..options()
    });
    for uri in [
        "/api/v1/users",
        "/api/v1/events",
        "/nothing",
        "/api/v1/events/live",
    ] {
        let got = t.get(uri).await;
        got.problem(401, "unauthorized");
        assert!(got
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        t.call("GET", uri, &[("authorization", "Bearer wrong")], "")
            .await
            .problem(401, "unauthorized");
    }
    t.command(json!({"type": "CreateUser", "payload": {"id": "u", "name": "N"}}))
        .await
        .problem(401, "unauthorized");
    let got = t
        .call(
            "GET",
            "/api/v1/users",
            &[("authorization", "Bearer s3cret")],
            "",
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(t.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(t.get("/readyz").await.status, StatusCode::OK);
    // The console's page holds no data: served without the token; what it calls needs it.
    let page = t.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Bearer"));
    t.get("/metrics").await.problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_at_the_root() {
    let t = start(options());
    let got = t.get("/").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(got.body.contains("<title>cqrs-node console</title>"));
    // What the page calls exists.
    for path in [
        "/api/v1/events/live",
        "/api/v1/users?limit=",
        "/metrics",
        "/api/v1/commands",
    ] {
        assert!(got.body.contains(path), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_checked_and_the_body_is_limited() {
    let t = start(Options {
        max_body: 256,
        ..options()
    });
    t.call("GET", "/api/v1/users", &[("host", "evil.example:8080")], "")
        .await
        .problem(403, "host_not_allowed");
    let ok = t
        .call("GET", "/api/v1/users", &[("host", "localhost:8080")], "")
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let big = json!({"type": "CreateUser", "payload": {"id": "u", "name": "x".repeat(300)}});
    t.command(big).await.problem(413, "payload_too_large");
    t.call("POST", "/api/v1/rpc", &[], &"{}".repeat(200))
        .await
        .problem(413, "payload_too_large");
    // Within the limit: fine.
    let got = t.create("u", "small", "2024-01-10T08:00:00Z").await;
    assert_eq!(got.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_answers_what_stdio_would() {
    let t = start(options());
    let rpc = |body: &'static str| t.call("POST", "/api/v1/rpc", &[], body);
    let got = rpc(r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-10T08:00:00Z","payload":{"id":"user-123","name":"John"}}}"#).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body,
        r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"user-123"}]}"#
    );
    let got = rpc(r#"{"type":"command","msg_id":2,"command":{"type":"RenameUser","expectedVersion":3,"payload":{"id":"user-123","name":"J"}}}"#).await;
    assert_eq!(
        got.body,
        r#"{"type":"command_result","in_reply_to":2,"success":false,"error":"expected version 3, but the aggregate is at version 1","code":"version_conflict","current_version":1}"#
    );
    let got = rpc(
        r#"{"type":"query","msg_id":3,"query":{"type":"GetUser","params":{"userId":"user-123"}}}"#,
    )
    .await;
    assert_eq!(
        got.body,
        r#"{"type":"query_result","in_reply_to":3,"data":{"id":"user-123","name":"John"}}"#
    );
    let got = rpc(r#"{"type":"query","msg_id":4,"query":{"type":"Nope"}}"#).await;
    assert_eq!(
        got.body,
        r#"{"type":"query_result","in_reply_to":4,"data":null,"error":"unknown query type 'Nope'","code":"unknown_query"}"#
    );
    let got = rpc(r#"{"type":"init","msg_id":5,"node_id":"n1","node_ids":["n1"]}"#).await;
    assert_eq!(got.body, r#"{"type":"init_ok","in_reply_to":5}"#);
    let got = rpc(r#"{"type":"dance","msg_id":6}"#).await;
    let v = got.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["in_reply_to"], 6);
    assert_eq!(v["code"], 10);
    // No msg_id: carried out, nothing to say.
    let got = rpc(
        r#"{"type":"command","command":{"type":"CreateUser","payload":{"id":"u9","name":"N"}}}"#,
    )
    .await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(t.get("/api/v1/users/u9").await.status, StatusCode::OK);
    rpc("[1]").await.problem(400, "malformed");
    let _ = &rpc;
    rpc("nope").await.problem(400, "malformed");
}

/// Reads SSE messages from a body until `want` events came; their positions.
async fn read_feed(body: &mut Body, want: usize) -> Vec<(u64, Value)> {
    let mut text = String::new();
    let mut got = Vec::new();
    while got.len() < want {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
            .await
            .expect("an event within 30 s")
            .expect("the feed goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if message.starts_with(':') {
                continue;
            }
            let mut lines = message.lines();
            let id: u64 = lines
                .next()
                .unwrap()
                .strip_prefix("id: ")
                .unwrap()
                .parse()
                .unwrap();
            let kind = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_string();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["position"], id);
            assert_eq!(data["eventType"], kind.as_str());
            got.push((id, data));
        }
    }
    got
}

async fn open_feed(t: &Test, uri: &str, headers: &[(&str, &str)]) -> Body {
    let mut r = Request::builder().uri(uri);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let response = t
        .router
        .clone()
        .oneshot(r.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    response.into_body()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_live_client_catches_up_from_the_store_in_order() {
    // A buffer of 8 messages: a client that does not read while 300 events are appended falls
    // far behind it, and must catch up from the store.
    let t = start(Options {
        feed_buffer: 8,
        ..options()
    });
    t.create("first", "F", "2024-01-10T08:00:00Z").await;
    // From the head: only what comes next.
    let mut from_head = open_feed(&t, "/api/v1/events/live", &[]).await;
    // From the start, by ?after, and by Last-Event-ID (which wins over ?after).
    let mut from_zero = open_feed(&t, "/api/v1/events/live?after=0", &[]).await;
    let mut resumed = open_feed(
        &t,
        "/api/v1/events/live?after=0",
        &[("last-event-id", "150")],
    )
    .await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let router = t.router.clone();
            tokio::spawn(async move {
                for i in 0..75 {
                    let body = json!({"type": "CreateUser", "payload": {"id": format!("w{w}-{i}"), "name": "N"}});
                    let r = router
                        .clone()
                        .oneshot(
                            Request::post("/api/v1/commands")
                                .body(Body::from(body.to_string()))
                                .unwrap(),
                        )
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::CREATED);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let all = read_feed(&mut from_zero, 301).await;
    let positions: Vec<u64> = all.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (1..=301).collect::<Vec<_>>());
    assert_eq!(all[0].1["aggregateId"], "first");
    let next = read_feed(&mut from_head, 300).await;
    assert_eq!(
        next.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        (2..=301).collect::<Vec<_>>()
    );
    let rest = read_feed(&mut resumed, 151).await;
    assert_eq!(
        rest.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        (151..=301).collect::<Vec<_>>()
    );
    // Every event is the log's, as ReadEvents has it.
    let page = t.get("/api/v1/events?after=0&limit=1000").await.json();
    let logged: Vec<Value> = page["events"].as_array().unwrap().clone();
    let fed: Vec<Value> = all.into_iter().map(|(_, d)| d).collect();
    assert_eq!(fed, logged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
    let t = start(options());
    let got = t.get("/api/v1/openapi.json").await;
    assert_eq!(got.status, StatusCode::OK);
    let doc = got.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: Vec<(String, Vec<String>)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, m)| (p.clone(), m.as_object().unwrap().keys().cloned().collect()))
        .collect();
    let listed: Vec<(String, Vec<String>)> = http::openapi::ROUTES
        .iter()
        .map(|(p, m)| (p.to_string(), m.iter().map(|m| m.to_string()).collect()))
        .collect();
    assert_eq!(documented, listed);
    for (path, methods) in http::openapi::ROUTES {
        let uri = path.replace("{id}", "someone");
        for method in ["get", "post", "put", "delete", "patch"] {
            let mut r = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri);
            if *path == "/api/v1/events/live" {
                r = r.uri("/api/v1/events/live?after=0");
            }
            let response = t
                .router
                .clone()
                .oneshot(r.body(Body::from("{}")).unwrap())
                .await
                .unwrap();
            let status = response.status();
            if methods.contains(&method) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
                if status == StatusCode::NOT_FOUND {
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    let p: Value = serde_json::from_slice(&body).unwrap();
                    let detail = p["detail"].as_str().unwrap();
                    assert!(!detail.starts_with("no such route"), "{method} {uri}: {p}");
                }
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands_batches_and_the_head() {
    let t = start(options());
    t.create("u1", "A", "2024-01-10T08:00:00Z").await;
    t.create("u1", "A", "2024-01-10T08:00:00Z").await;
    t.command(json!({"type": "Bogus", "payload": {}})).await;
    // A retried commandId gets its first reply again: its event is counted once.
    let retried = json!({"type": "CreateUser", "commandId": "m-1",
        "payload": {"id": "u2", "name": "B", "email": "b@example.com"}});
    for _ in 0..2 {
        assert_eq!(t.command(retried.clone()).await.status, StatusCode::CREATED);
    }
    let got = t.get("/metrics").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = got.body;
    for line in [
        "cqrs_commands_total{type=\"CreateUser\",outcome=\"ok\"} 3",
        "cqrs_commands_total{type=\"CreateUser\",outcome=\"already_exists\"} 1",
        "cqrs_commands_total{type=\"unknown\",outcome=\"unknown_command\"} 1",
        "cqrs_command_duration_seconds_count 5",
        "cqrs_events_appended_total 2",
        "cqrs_store_head_position 2",
        "cqrs_requests_queued 0",
        "cqrs_live_feed_clients 0",
        "# TYPE cqrs_commit_duration_seconds histogram",
        "cqrs_batch_size_bucket{le=\"+Inf\"}",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    // Every sample line is `name{labels} value` with a number for value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_user_over_http_answers_as_on_stdio() {
    let t = start(options());
    t.create("u1", "Ann", "2024-01-10T08:00:00Z").await;
    let forget =
        json!({"type": "ForgetUser", "timestamp": "2024-01-11T08:00:00Z", "payload": {"id": "u1"}});
    let got = t.command(forget.clone()).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body,
        r#"{"success":true,"events":[{"eventType":"UserForgotten","aggregateId":"u1"}]}"#
    );
    let got = t.command(forget).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, r#"{"success":true,"events":[]}"#);
    t.command(json!({"type": "RenameUser", "payload": {"id": "u1", "name": "B"}}))
        .await
        .problem(410, "deleted");
    t.create("u1", "Ann", "2024-01-12T08:00:00Z")
        .await
        .problem(409, "already_exists");
    t.command(json!({"type": "ForgetUser", "payload": {"id": "nobody"}}))
        .await
        .problem(404, "not_found");
    let got = t.get("/api/v1/users/u1").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND, "{}", got.body);
}
