//! The routes of `../shared/http.md`: how each reads its request into the node's typed
//! requests, and how the node's replies become statuses, headers and bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::guard::{self, Guard};
use super::problem::{codes, Problem};
use super::{feed, App};
use crate::domain::user::User;
use crate::engine::Repository;
use crate::node::{self, Reply, Request};
use crate::protocol::{self, reply, Body as ProtocolBody, Incoming};

type Shared = State<Arc<App>>;
type Answer = Result<Response, Problem>;

/// The router: every route, behind the guard (Host, token) and the body limit.
pub fn router(app: Arc<App>, bound: SocketAddr) -> Router {
    let guard = Arc::new(Guard::new(app.options.token.as_deref(), bound));
    let limit = app.options.max_body;
    let routes: Vec<(&str, MethodRouter<Arc<App>>)> = vec![
        ("/api/v1/commands", post(command)),
        ("/api/v1/rpc", post(rpc)),
        ("/api/v1/users", get(list_users)),
        ("/api/v1/users/{id}", get(get_user)),
        ("/api/v1/users/{id}/history", get(user_history)),
        ("/api/v1/events", get(read_events)),
        ("/api/v1/events/live", get(feed::live)),
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/api/v1/openapi.json", get(openapi)),
        ("/", get(console)),
    ];
    debug_assert!(routes
        .iter()
        .map(|(p, _)| *p)
        .eq(super::openapi::ROUTES.iter().map(|(p, _)| *p)));
    let router = routes
        .into_iter()
        .fold(Router::new(), |r, (path, route)| r.route(path, route));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
        .with_state(app)
}

async fn not_found() -> Problem {
    Problem::not_found("no such route (the routes are listed at /api/v1/openapi.json)")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "this route does not take this method (see the Allow header)",
    )
}

/// A request body read whole, within the limit: 413 past it.
fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Problem> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::PAYLOAD_TOO_LARGE,
                format!("the request body is over {limit} bytes (--max-line-bytes)"),
            )
        } else {
            Problem::malformed(format!("the request body cannot be read: {e}"))
        }
    })
}

/// A JSON object body: 400 `malformed` otherwise.
fn object(bytes: &[u8]) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Problem::malformed("the request body must be a JSON object")),
        Err(e) => Err(Problem::malformed(format!(
            "the request body is not JSON: {e}"
        ))),
    }
}

fn unavailable() -> Problem {
    Problem::unavailable("the node is stopping; nothing was done")
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes")
}

/// A path segment, percent-encoded (everything but RFC 3986's unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A header's text, or 400 `malformed`.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Problem> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| Problem::malformed(format!("the {name} header must be ASCII text"))),
    }
}

/// `If-Match: "N"`: the version N.
fn if_match(text: &str) -> Result<u64, Problem> {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Problem::malformed(format!(
                "If-Match must be one strong ETag of a version, e.g. \"3\" (got {text})"
            ))
        })
}

/// The body's value for a key that has two spellings (the camelCase one wins, as in the
/// protocol), `null` counted as missing.
fn given<'a>(o: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    o.get(camel)
        .or_else(|| o.get(snake))
        .filter(|v| !v.is_null())
}

/// `POST /api/v1/commands`.
async fn command(
    State(app): Shared,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let started = std::time::Instant::now();
    let bytes = body(bytes, app.options.max_body)?;
    let mut command = object(&bytes)?;
    if let Some(key) = header_text(&headers, "idempotency-key")? {
        match given(&command, "commandId", "command_id") {
            Some(Value::String(id)) if id == key => {}
            Some(_) => {
                return Err(Problem::malformed(
                    "the Idempotency-Key header and the body's commandId differ",
                ))
            }
            None => {}
        }
        command.remove("command_id");
        command.insert("commandId".into(), Value::String(key.to_string()));
    }
    let mut from_if_match = false;
    if let Some(text) = header_text(&headers, "if-match")? {
        let version = if_match(text)?;
        match given(&command, "expectedVersion", "expected_version") {
            Some(v) if v.as_u64() != Some(version) => {
                return Err(Problem::malformed(
                    "the If-Match header and the body's expectedVersion differ",
                ))
            }
            _ => {}
        }
        command.remove("expected_version");
        command.insert("expectedVersion".into(), version.into());
        from_if_match = true;
    }
    let created = match (command.get("type"), command.get("payload")) {
        (Some(Value::String(t)), Some(Value::Object(p))) if t == "CreateUser" => {
            p.get("id").and_then(Value::as_str).map(str::to_string)
        }
        _ => None,
    };
    // The type, as a metrics label: only the registered ones (a client picks the text).
    let kind = match command.get("type") {
        Some(Value::String(t)) if app.registry.command_type(t).is_some() => t.clone(),
        _ => "unknown".to_string(),
    };
    let request = Request::Command(node::command::prepare(
        &app.registry,
        Value::Object(command),
    ));
    let metrics = &app.bridge.stats().metrics;
    let reply = app.bridge.one(request).await;
    metrics.command_seconds.observe_duration(started.elapsed());
    let outcome = match &reply {
        Ok(Reply::Done(_)) => "ok",
        Ok(Reply::Refused(f)) => f.code,
        _ => codes::UNAVAILABLE,
    };
    metrics.command(&kind, outcome);
    match reply.map_err(|_| unavailable())? {
        Reply::Done(done) => {
            let body = serde_json::to_vec(&json!({"success": true, "events": done.events}))
                .expect("a reply serialises");
            let status = if created.is_some() {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut r = json_response(status, body);
            r.headers_mut().insert(header::ETAG, etag(done.version));
            if let Some(id) = created {
                let location = format!("/api/v1/users/{}", encode_segment(&id));
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
            }
            Ok(r)
        }
        Reply::Refused(f) => Err(Problem::command(f, from_if_match)),
        Reply::Crashed(text) => Err(Problem::unavailable(text)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> Problem {
    tracing::error!("unexpected reply {reply:?}");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the node gave an unexpected reply",
    )
}

/// A query's request (`{"type", "params"}`), read as the protocol reads it.
fn query_request(app: &App, kind: &str, params: Value) -> Request {
    Request::Query(node::query::prepare(
        &app.registry,
        json!({"type": kind, "params": params}),
    ))
}

/// A query's data, or its problem.
fn data(reply: Reply) -> Result<Box<RawValue>, Problem> {
    match reply {
        Reply::Data(d) => Ok(d),
        Reply::Invalid(f) => Err(Problem::query(f)),
        Reply::Crashed(text) => Err(Problem::unavailable(text)),
        other => Err(unexpected(other)),
    }
}

async fn ask(app: &App, kind: &str, params: Value) -> Result<Box<RawValue>, Problem> {
    let request = query_request(app, kind, params);
    data(app.bridge.one(request).await.map_err(|_| unavailable())?)
}

fn is_null(data: &RawValue) -> bool {
    data.get() == "null"
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, Problem> {
    p.map(|Query(p)| p)
        .map_err(|e| Problem::invalid(format!("the query string cannot be read: {e}")))
}

/// A query-string parameter that must be an integer >= 0.
fn integer(p: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Problem> {
    match p.get(name) {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| Problem::invalid(format!("{name} must be an integer >= 0 (got '{t}')"))),
    }
}

/// The user id of the path, percent-decoded: 422 if it does not decode to UTF-8.
fn user_id(id: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    id.map(|Path(id)| id)
        .map_err(|e| Problem::invalid(format!("the user id in the path cannot be read: {e}")))
}

fn no_user(id: &str) -> Problem {
    Problem::not_found(format!("no user '{id}'"))
}

/// `GET /api/v1/users/{id}`, `?at=T`, `?version=N`.
async fn get_user(
    State(app): Shared,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    p: Params,
) -> Answer {
    let id = user_id(id)?;
    let p = params(p)?;
    let (at, version) = (p.get("at"), integer(&p, "version")?);
    let found = |d: Box<RawValue>| {
        if is_null(&d) {
            Err(no_user(&id))
        } else {
            Ok(json_response(StatusCode::OK, d.get().to_string()))
        }
    };
    match (at, version) {
        (Some(_), Some(_)) => Err(Problem::invalid("give at or version, not both")),
        (Some(at), None) => found(
            ask(
                &app,
                "GetUserAtTime",
                json!({"userId": id, "timestamp": at}),
            )
            .await?,
        ),
        (None, Some(v)) => found(
            ask(
                &app,
                "GetUserAtVersion",
                json!({"userId": id, "version": v}),
            )
            .await?,
        ),
        (None, None) => {
            // GetUser's state carries no version: the stream's, read in the same batch (so of
            // the same state), names it.
            let requests = vec![
                query_request(&app, "GetUser", json!({ "userId": id })),
                Request::Query(Ok(node::query::Query::Version(Repository::<User>::stream(
                    &id,
                )))),
            ];
            let mut replies = app
                .bridge
                .call(requests)
                .await
                .map_err(|_| unavailable())?
                .into_iter();
            let (Some(user), Some(version)) = (replies.next(), replies.next()) else {
                return Err(unavailable());
            };
            let user = data(user)?;
            if is_null(&user) {
                return Err(no_user(&id));
            }
            let version: u64 = serde_json::from_str(data(version)?.get())
                .map_err(|e| Problem::unavailable(e.to_string()))?;
            let tag = etag(version);
            if let Some(none_match) = header_text(&headers, "if-none-match")? {
                let hit = none_match == "*"
                    || none_match
                        .split(',')
                        .map(|t| t.trim().trim_start_matches("W/"))
                        .any(|t| t.as_bytes() == tag.as_bytes());
                if hit {
                    let mut r = StatusCode::NOT_MODIFIED.into_response();
                    r.headers_mut().insert(header::ETAG, tag);
                    return Ok(r);
                }
            }
            let mut r = json_response(StatusCode::OK, user.get().to_string());
            r.headers_mut().insert(header::ETAG, tag);
            Ok(r)
        }
    }
}

/// `GET /api/v1/users/{id}/history`.
async fn user_history(State(app): Shared, id: Result<Path<String>, PathRejection>) -> Answer {
    let id = user_id(id)?;
    let d = ask(&app, "GetUserHistory", json!({ "userId": id })).await?;
    if is_null(&d) {
        return Err(no_user(&id));
    }
    Ok(json_response(StatusCode::OK, d.get().to_string()))
}

/// `GET /api/v1/users?limit=&after=`, and with `at=T`, `ListUsersAtTime`.
async fn list_users(State(app): Shared, p: Params) -> Answer {
    let p = params(p)?;
    let mut q = Map::new();
    if let Some(limit) = integer(&p, "limit")? {
        q.insert("limit".into(), limit.into());
    }
    if let Some(after) = p.get("after") {
        q.insert("after".into(), after.clone().into());
    }
    let kind = match p.get("at") {
        Some(at) => {
            q.insert("timestamp".into(), at.clone().into());
            "ListUsersAtTime"
        }
        None => "ListUsers",
    };
    let d = ask(&app, kind, Value::Object(q)).await?;
    Ok(json_response(StatusCode::OK, d.get().to_string()))
}

/// `GET /api/v1/events?after=&limit=`.
async fn read_events(State(app): Shared, p: Params) -> Answer {
    let p = params(p)?;
    let mut q = Map::new();
    if let Some(after) = integer(&p, "after")? {
        q.insert("after".into(), after.into());
    }
    if let Some(limit) = integer(&p, "limit")? {
        q.insert("limit".into(), limit.into());
    }
    let d = ask(&app, "ReadEvents", Value::Object(q)).await?;
    Ok(json_response(StatusCode::OK, d.get().to_string()))
}

/// `POST /api/v1/rpc`: a protocol body in, the body the stdio node would reply out.
async fn rpc(State(app): Shared, bytes: Result<Bytes, BytesRejection>) -> Answer {
    let bytes = body(bytes, app.options.max_body)?;
    object(&bytes)?;
    // The body inside an envelope: the protocol's own parser reads it, as stdio would.
    let mut line = Vec::with_capacity(bytes.len() + 40);
    line.extend_from_slice(br#"{"src":"http","dest":"cqrs","body":"#);
    line.extend_from_slice(&bytes);
    line.push(b'}');
    let request = match protocol::parse_line(&line) {
        Incoming::Request(r) => r,
        Incoming::Unanswerable(why) => return Err(Problem::malformed(why)),
    };
    enum Own {
        Init,
        Error(protocol::ErrorCode, String),
    }
    let (own, work) = match request.body {
        ProtocolBody::Command(c) => (
            None,
            Some(Request::Command(match c {
                Some(c) => node::command::prepare_json(&app.registry, c),
                None => Err(node::command::not_an_object()),
            })),
        ),
        ProtocolBody::Query(q) => (
            None,
            Some(Request::Query(match q {
                Some(q) => node::query::prepare_json(&app.registry, q),
                None => Err(node::query::not_an_object()),
            })),
        ),
        ProtocolBody::Init { .. } => (Some(Own::Init), None),
        ProtocolBody::Invalid { code, text } => (Some(Own::Error(code, text)), None),
    };
    let reply = match work {
        Some(w) => Some(app.bridge.one(w).await.map_err(|_| unavailable())?),
        None => None,
    };
    let Some(msg_id) = request.msg_id else {
        // No msg_id: carried out, nothing to answer (as on stdio).
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut out = Vec::new();
    use reply::WriteJson;
    match (own, reply) {
        (_, Some(reply)) => crate::stdio::write_reply(&mut out, &msg_id, reply),
        (Some(Own::Init), None) => reply::InitOk::new(&msg_id).write_json(&mut out),
        (Some(Own::Error(code, text)), None) => {
            reply::Error::new(&msg_id, code, &text).write_json(&mut out)
        }
        (None, None) => unreachable!("commands and queries have a reply"),
    }
    Ok(json_response(StatusCode::OK, out))
}

/// `GET /healthz`.
async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// `GET /readyz`: the store answers a read (its head) through the writer.
async fn readyz(State(app): Shared) -> Answer {
    head(&app)
        .await
        .map_err(|p| Problem::unavailable(format!("the store does not answer: {}", p.detail)))?;
    Ok(json_response(StatusCode::OK, r#"{"status":"ready"}"#))
}

/// The store's head, read through the writer.
async fn head(app: &App) -> Result<u64, Problem> {
    let d = ask(app, "ReadEvents", json!({"after": i64::MAX, "limit": 1})).await?;
    let v: Value =
        serde_json::from_str(d.get()).map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok(v["head"].as_u64().unwrap_or(0))
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(State(app): Shared) -> Response {
    let head = head(&app).await.ok();
    let text = app.bridge.stats().metrics.render(
        head,
        app.bridge
            .stats()
            .queued
            .load(std::sync::atomic::Ordering::Relaxed),
        app.feed.clients(),
    );
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /api/v1/openapi.json`.
async fn openapi() -> Response {
    json_response(StatusCode::OK, super::openapi::document().to_string())
}

/// The web console: one static page (HTML, CSS and JS), embedded in the binary.
pub const CONSOLE: &str = include_str!("console.html");

/// `GET /`: the console. It holds no data, so it needs no token: the page asks for the token
/// and sends it with every call it makes.
async fn console() -> Response {
    let mut r = (StatusCode::OK, CONSOLE).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}
