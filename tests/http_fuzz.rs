//! A property test of the HTTP layer: any method, path, query string, header and body the
//! generator makes gets an answer that keeps the contract's promises (an error is a
//! problem+json whose `status` is the response's, no 500), and the node keeps serving.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use cqrs_node::http::{self, routes, App, Options};
use cqrs_node::node::{Config, Node};
use cqrs_node::store::MemoryStore;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

fn router(rt: &tokio::runtime::Runtime) -> (Router, tokio::sync::watch::Sender<bool>) {
    let _guard = rt.enter();
    let registry = Arc::new(cqrs_node::registry());
    let node = Node::open(MemoryStore::new(), registry.clone(), &Config::default()).unwrap();
    let started = http::start(node, 1024).unwrap();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let options = Options {
        token: None,
        max_body: 4096,
        max_batch: 1024,
        feed_buffer: 64,
    };
    let app = App::new(
        registry,
        started.bridge,
        started.appended,
        options,
        stopping,
    );
    (routes::router(app, "127.0.0.1:8080".parse().unwrap()), stop)
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("u1".to_string()),
        Just("%20x%2F".to_string()),
        Just("%ZZ".to_string()),
        "[a-z0-9%._~-]{0,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("/api/v1/commands".to_string()),
            Just("/api/v1/rpc".to_string()),
            Just("/api/v1/users".to_string()),
            segment().prop_map(|s| format!("/api/v1/users/{s}")),
            segment().prop_map(|s| format!("/api/v1/users/{s}/history")),
            Just("/api/v1/events".to_string()),
            Just("/api/v1/events/live".to_string()),
            Just("/healthz".to_string()),
            Just("/readyz".to_string()),
            Just("/metrics".to_string()),
            Just("/api/v1/openapi.json".to_string()),
            "/[a-z/]{0,20}",
        ],
        prop::collection::vec(
            (
                prop_oneof![
                    Just("at"),
                    Just("version"),
                    Just("limit"),
                    Just("after"),
                    Just("x")
                ],
                prop_oneof![
                    Just("1".to_string()),
                    Just("0".to_string()),
                    Just("-1".to_string()),
                    Just("2024-01-10T08:00:00Z".to_string()),
                    Just("99999999999999999999999".to_string()),
                    "[a-z0-9%+]{0,8}",
                ],
            ),
            0..3,
        ),
    )
        .prop_map(|(path, query)| {
            if query.is_empty() {
                path
            } else {
                let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{path}?{}", q.join("&"))
            }
        })
}

fn header() -> impl Strategy<Value = (&'static str, String)> {
    (
        prop_oneof![
            Just("if-match"),
            Just("if-none-match"),
            Just("idempotency-key"),
            Just("last-event-id"),
            Just("authorization"),
        ],
        prop_oneof![
            Just("\"1\"".to_string()),
            Just("*".to_string()),
            Just("5".to_string()),
            "[ -~]{0,12}",
        ],
    )
}

fn body() -> impl Strategy<Value = String> {
    let id = prop_oneof![Just("u1"), Just("u2"), Just("")];
    let kind = prop_oneof![
        Just("CreateUser"),
        Just("RenameUser"),
        Just("DeleteUser"),
        Just("UpdateUser"),
        Just("Nope")
    ];
    prop_oneof![
        "[ -~]{0,40}",
        (kind, id, "[a-zA-Z ]{0,6}", prop::option::of(0u64..4)).prop_map(|(k, id, name, v)| {
            let mut c = serde_json::json!({"type": k, "payload": {"id": id, "name": name}});
            if let Some(v) = v {
                c["expectedVersion"] = v.into();
            }
            c.to_string()
        }),
        Just(
            r#"{"type":"query","msg_id":1,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#
                .to_string()
        ),
        Just("[]".to_string()),
        Just("x".repeat(5000)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_answer_keeps_the_contract(
        requests in prop::collection::vec(
            (prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("HEAD")],
             path(), prop::collection::vec(header(), 0..3), body()),
            1..8,
        )
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (router, _stop) = router(&rt);
        rt.block_on(async {
            for (method, uri, headers, body) in requests {
                let mut r = Request::builder().method(method).uri(&uri);
                for (k, v) in &headers {
                    r = r.header(*k, v.as_str());
                }
                let Ok(request) = r.body(Body::from(body)) else { continue };
                let response = router.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
                prop_assert!(status.as_u16() != 500, "{method} {uri}: 500");
                if kind.as_deref() == Some("text/event-stream") {
                    prop_assert_eq!(status.as_u16(), 200);
                    continue;
                }
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                if status.as_u16() >= 400 {
                    prop_assert_eq!(kind.as_deref(), Some("application/problem+json"), "{} {}", method, uri);
                    if method == "HEAD" {
                        // A HEAD response has no body (HTTP), only the headers of the GET's.
                        prop_assert!(bytes.is_empty());
                        continue;
                    }
                    let p: Value = serde_json::from_slice(&bytes).unwrap();
                    prop_assert_eq!(p["status"].as_u64(), Some(status.as_u16() as u64));
                    prop_assert!(p["code"].as_str().is_some_and(|c| !c.is_empty()));
                    prop_assert!(p["detail"].as_str().is_some());
                } else if method != "HEAD" && status.as_u16() != 204 && status.as_u16() != 304 {
                    let json = kind.as_deref() == Some("application/json");
                    let text = kind.as_deref().is_some_and(|k| k.starts_with("text/plain"));
                    // The console's page, and only it, is HTML.
                    let html = (uri == "/" || uri.starts_with("/?")) && kind.as_deref() == Some("text/html; charset=utf-8");
                    prop_assert!(json || text || html, "{} {}: {:?}", method, uri, kind);
                    if json {
                        prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
                    }
                }
            }
            // The node still serves.
            let create = r#"{"type":"CreateUser","payload":{"id":"after-fuzz","name":"N"}}"#;
            let r = router.clone().oneshot(
                Request::post("/api/v1/commands").body(Body::from(create)).unwrap(),
            ).await.unwrap();
            prop_assert_eq!(r.status().as_u16(), 201);
            Ok(())
        })?;
    }
}
