//! Property tests: random sequences of User commands and queries, sent as real JSON lines
//! through a [`Node`] (in batches, so group commit is exercised), checked against an independent
//! model of the User domain kept here (it shares no code with the node's domain, engine or
//! projections).
//!
//! For each generated case:
//! * every command reply is the model's (success and events, or the failure code and, for a
//!   version conflict, the current version);
//! * every `GetUser` (during the run and at the end) equals the fold of the user's history;
//! * `GetUserHistory`, `GetUserAtVersion(v)` for every v, and `GetUserAtTime(t)` for times at,
//!   around and between the events, equal the model's replay;
//! * `ListUsers` (whole, and page by page) equals the model's live users in id order;
//! * `projection::verify` finds no problem;
//! * after deleting every snapshot, every temporal answer is unchanged;
//! * for SQLite, after reopening the store, every answer is unchanged.
//!
//! The number of cases is modest so that the file runs in a few seconds in a debug build;
//! `PROPTEST_CASES=N` raises it for a longer local run.

use std::collections::BTreeMap;

use cqrs_node::node::Config;
use cqrs_node::projection;
use cqrs_node::stdio::Lines;
use cqrs_node::store::{EventStore, MemoryStore, SqliteStore, StoreWrite, StreamId, Upto};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

// ---------------------------------------------------------------------------------------------
// Generated input

/// A small pool of ids, so that commands often hit the same users (one id needs escaping).
const IDS: [&str; 4] = ["u1", "u2", "user 3 ☃", "u10"];
const NAMES: [&str; 4] = ["John", "Jane", "John Doe", " Ann "];
const EMAILS: [&str; 3] = ["john@example.com", "jane@x.org", "j@y"];
const BAD_EMAILS: [&str; 4] = ["nope", "a@", "@b", "a b@c"];
/// Other attributes; two are named like the keys the temporal queries add.
const KEYS: [&str; 5] = ["age", "city", "zip", "at_time", "at_version"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Create,
    Update,
    Rename,
    Email,
    Delete,
}

#[derive(Clone, Copy, Debug)]
enum Name {
    Good(usize),
    Empty,
    Blank,
}

#[derive(Clone, Copy, Debug)]
enum Email {
    Good(usize),
    Bad(usize),
}

#[derive(Clone, Copy, Debug)]
enum Expected {
    /// No expectedVersion key.
    Absent,
    /// The model's current version.
    Right,
    /// The current version plus this (wrapping below 0 to a large number).
    Off(i64),
    /// The right version, spelled `expected_version`.
    RightSnake,
}

#[derive(Clone, Copy, Debug)]
enum When {
    /// The clock moves forward by this many milliseconds (0: same instant as before).
    Forward(i64),
    /// This command only is stamped this many milliseconds before the clock.
    Backward(i64),
}

#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    /// Index into IDS; `None`: an empty id.
    user: Option<usize>,
    /// For create and rename always used; for update only if `with_name`.
    name: Name,
    with_name: bool,
    /// For change-email always used (a `None` becomes the first good one).
    email: Option<Email>,
    /// Other attributes: (index into KEYS, value code).
    extra: Vec<(usize, u8)>,
    /// Create: put the other attributes before `name` and `id` in the payload.
    shuffled: bool,
    expected: Expected,
    when: When,
    /// If the user does not exist, send a `CreateUser` instead of `kind`.
    create_if_absent: bool,
    /// The timestamp goes inside the payload rather than beside it.
    time_in_payload: bool,
    /// How the timestamp is written (UTC or an offset).
    time_style: u8,
    /// Sent without msg_id: carried out, not answered.
    silent: bool,
    /// Ask `GetUser` for this user right after.
    query_after: bool,
    /// End the current batch of lines after this step.
    flush: bool,
}

fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        3 => Just(Kind::Create),
        6 => Just(Kind::Update),
        4 => Just(Kind::Rename),
        4 => Just(Kind::Email),
        1 => Just(Kind::Delete),
    ];
    // Most commands go to u1, so that its stream gets long enough for several snapshots.
    let user = prop_oneof![
        24 => Just(Some(0)),
        12 => Just(Some(1)),
        8 => Just(Some(2)),
        4 => Just(Some(3)),
        1 => Just(None),
    ];
    let name = prop_oneof![
        12 => (0..NAMES.len()).prop_map(Name::Good),
        1 => Just(Name::Empty),
        1 => Just(Name::Blank),
    ];
    let email = prop_oneof![
        2 => Just(None),
        6 => (0..EMAILS.len()).prop_map(|i| Some(Email::Good(i))),
        1 => (0..BAD_EMAILS.len()).prop_map(|i| Some(Email::Bad(i))),
    ];
    let extra = prop::collection::vec((0..KEYS.len(), 0u8..6), 0..3);
    let expected = prop_oneof![
        6 => Just(Expected::Absent),
        4 => Just(Expected::Right),
        1 => Just(Expected::RightSnake),
        2 => prop_oneof![(-2i64..0), (1i64..3)].prop_map(Expected::Off),
    ];
    let when = prop_oneof![
        3 => Just(When::Forward(0)),
        12 => (1i64..2000).prop_map(When::Forward),
        1 => (1i64..3000).prop_map(When::Backward),
    ];
    let flags = (
        prop::bool::weighted(0.8),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
    );
    (
        kind,
        user,
        name,
        any::<bool>(),
        email,
        extra,
        expected,
        when,
        flags,
    )
        .prop_map(
            |(kind, user, name, with_name, email, extra, expected, when, flags)| {
                let (
                    create_if_absent,
                    shuffled,
                    time_in_payload,
                    time_style,
                    silent,
                    query_after,
                    flush,
                ) = flags;
                Step {
                    kind,
                    user,
                    name,
                    with_name,
                    email,
                    extra,
                    create_if_absent,
                    shuffled,
                    expected,
                    when,
                    time_in_payload,
                    time_style,
                    silent,
                    query_after,
                    flush,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<Step>,
    snapshot_every: u64,
    cache_size: usize,
    /// Extra query times, in milliseconds after the base time.
    times: Vec<i64>,
}

fn case(max_steps: usize) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(step(), 1..max_steps),
        prop_oneof![Just(1u64), Just(3), Just(100)],
        prop_oneof![Just(0usize), Just(2), Just(100_000)],
        prop::collection::vec(-1000i64..150_000, 0..8),
    )
        .prop_map(|(steps, snapshot_every, cache_size, times)| Case {
            steps,
            snapshot_every,
            cache_size,
            times,
        })
}

// ---------------------------------------------------------------------------------------------
// Times

/// 2024-01-01T00:00:00Z, in nanoseconds; model times are milliseconds after it.
const BASE_NANOS: i128 = 1_704_067_200_000_000_000;

fn nanos(ms: i64) -> i128 {
    BASE_NANOS + i128::from(ms) * 1_000_000
}

/// RFC 3339 text for a model time, in UTC or with an offset (the same instant either way).
fn rfc3339(ms: i64, style: u8) -> String {
    let offset = match style % 3 {
        0 => UtcOffset::UTC,
        1 => UtcOffset::from_hms(2, 0, 0).unwrap(),
        _ => UtcOffset::from_hms(-5, -30, 0).unwrap(),
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos(ms))
        .unwrap()
        .to_offset(offset)
        .format(&Rfc3339)
        .unwrap()
}

fn parse_nanos(s: &str) -> i128 {
    OffsetDateTime::parse(s, &Rfc3339)
        .unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
        .unix_timestamp_nanos()
}

// ---------------------------------------------------------------------------------------------
// The model

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Status {
    #[default]
    Absent,
    Active,
    Deleted,
}

#[derive(Clone, Debug)]
struct Event {
    event_type: &'static str,
    data: Map<String, Value>,
    ms: i64,
    /// The state after this event, as queries show it (`None` once deleted).
    visible: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, Default)]
struct UserModel {
    status: Status,
    attributes: Map<String, Value>,
    events: Vec<Event>,
}

impl UserModel {
    fn version(&self) -> u64 {
        self.events.len() as u64
    }

    fn visible(&self) -> Option<&Map<String, Value>> {
        (self.status == Status::Active).then_some(&self.attributes)
    }

    fn record(&mut self, event_type: &'static str, data: Map<String, Value>, ms: i64) {
        match event_type {
            "UserCreated" => {
                self.status = Status::Active;
                self.attributes = data.clone();
            }
            "UserDeleted" => self.status = Status::Deleted,
            _ => {
                for (k, v) in &data {
                    // A new key goes last; a known one keeps its place.
                    self.attributes.insert(k.clone(), v.clone());
                }
            }
        }
        let visible = self.visible().cloned();
        self.events.push(Event {
            event_type,
            data,
            ms,
            visible,
        });
    }

    /// The visible state after the events with time <= `ms`.
    fn at_time(&self, ms: i64) -> Option<&Map<String, Value>> {
        self.events
            .iter()
            .take_while(|e| e.ms <= ms)
            .last()
            .and_then(|e| e.visible.as_ref())
    }

    /// The visible state after `v` events; `None` for 0 or more than there are.
    fn at_version(&self, v: u64) -> Option<&Map<String, Value>> {
        if v == 0 {
            return None;
        }
        self.events
            .get(v as usize - 1)
            .and_then(|e| e.visible.as_ref())
    }
}

/// What the node must answer to a request.
#[derive(Clone, Debug)]
enum Reply {
    /// Exactly this body (compared as compact JSON text, so key order counts).
    Exact(Value),
    /// A failed command: this code, and for a conflict the current version (the error text
    /// is the node's own).
    Failed {
        msg_id: u64,
        code: &'static str,
        current_version: Option<u64>,
    },
    /// `GetUserHistory` of this user, checked field by field against the model (event times
    /// are compared as instants: their formatting is the node's own).
    History { msg_id: u64, id: &'static str },
}

/// What a command does, according to the model.
type Outcome = Result<Vec<(&'static str, String)>, (&'static str, Option<u64>)>;

#[derive(Default)]
struct Model {
    users: BTreeMap<String, UserModel>,
    /// Milliseconds after the base time.
    clock: i64,
}

fn value_of(code: u8) -> Value {
    // 0..3 as numbers, 3..6 as the same digits in strings: "1" and 1 are different values.
    if code < 3 {
        json!(code)
    } else {
        json!((code - 3).to_string())
    }
}

impl Model {
    /// The command's wire form, and what it must do: applies it to the model.
    fn command(&mut self, step: &Step) -> (Value, Outcome) {
        let ms = match step.when {
            When::Forward(d) => {
                self.clock += d;
                self.clock
            }
            When::Backward(d) => self.clock - d,
        };
        let id = step.user.map_or("", |i| IDS[i]).to_string();
        let user = self.users.get(&id).cloned().unwrap_or_default();
        // Most commands to a user that does not exist yet become its creation.
        let kind = match step.kind {
            _ if user.status == Status::Absent && step.create_if_absent => Kind::Create,
            k => k,
        };
        let name = match step.name {
            Name::Good(i) => json!(NAMES[i]),
            Name::Empty => json!(""),
            Name::Blank => json!("  "),
        };
        let name_ok = matches!(step.name, Name::Good(_));
        let email = match kind {
            Kind::Email => Some(step.email.unwrap_or(Email::Good(0))),
            _ => step.email,
        };
        let email_ok = !matches!(email, Some(Email::Bad(_)));
        let email_value = email.map(|e| match e {
            Email::Good(i) => json!(EMAILS[i]),
            Email::Bad(i) => json!(BAD_EMAILS[i]),
        });
        let mut extra = Map::new();
        for &(k, v) in &step.extra {
            extra.insert(KEYS[k].to_string(), value_of(v));
        }

        // The payload, in the order it is sent.
        let mut payload = Map::new();
        let (kind_name, valid) = match kind {
            Kind::Create => {
                if step.shuffled {
                    payload.extend(extra.clone());
                    if let Some(e) = &email_value {
                        payload.insert("email".into(), e.clone());
                    }
                    payload.insert("name".into(), name.clone());
                    payload.insert("id".into(), json!(id));
                } else {
                    payload.insert("id".into(), json!(id));
                    payload.insert("name".into(), name.clone());
                    if let Some(e) = &email_value {
                        payload.insert("email".into(), e.clone());
                    }
                    payload.extend(extra.clone());
                }
                ("CreateUser", name_ok && email_ok)
            }
            Kind::Update => {
                payload.insert("id".into(), json!(id));
                if step.with_name {
                    payload.insert("name".into(), name.clone());
                }
                payload.extend(extra.clone());
                if let Some(e) = &email_value {
                    payload.insert("email".into(), e.clone());
                }
                ("UpdateUser", (name_ok || !step.with_name) && email_ok)
            }
            Kind::Rename => {
                payload.insert("id".into(), json!(id));
                payload.insert("name".into(), name.clone());
                ("RenameUser", name_ok)
            }
            Kind::Email => {
                payload.insert("id".into(), json!(id));
                payload.insert("email".into(), email_value.clone().unwrap());
                ("ChangeUserEmail", email_ok)
            }
            Kind::Delete => {
                payload.insert("id".into(), json!(id));
                ("DeleteUser", true)
            }
        };
        let valid = valid && !id.is_empty();

        let version = user.version();
        let expected = match step.expected {
            Expected::Absent => None,
            Expected::Right | Expected::RightSnake => Some(version),
            Expected::Off(d) => Some(version.wrapping_add_signed(d)),
        };

        let stamp = rfc3339(ms, step.time_style);
        if step.time_in_payload {
            payload.insert("timestamp".into(), json!(stamp));
        }
        let mut command = Map::new();
        command.insert("type".into(), json!(kind_name));
        command.insert("payload".into(), Value::Object(payload));
        if let Some(v) = expected {
            let key = match step.expected {
                Expected::RightSnake => "expected_version",
                _ => "expectedVersion",
            };
            command.insert(key.into(), json!(v));
        }
        if !step.time_in_payload {
            command.insert("timestamp".into(), json!(stamp));
        }
        let command = Value::Object(command);

        let failed = |code, current_version| Err((code, current_version));
        // Validate, then the time rule, then decide, then the version check.
        if !valid {
            return (command, failed("validation_failed", None));
        }
        if user.events.last().is_some_and(|last| ms < last.ms) {
            return (command, failed("validation_failed", None));
        }
        if kind != Kind::Create {
            match user.status {
                Status::Absent => return (command, failed("not_found", None)),
                Status::Deleted => return (command, failed("deleted", None)),
                Status::Active => {}
            }
        }
        let events: Vec<(&'static str, Map<String, Value>)> = match kind {
            Kind::Create => {
                if user.status != Status::Absent {
                    return (command, failed("already_exists", None));
                }
                let mut attributes = Map::new();
                attributes.insert("id".into(), json!(id));
                attributes.insert("name".into(), name);
                if step.shuffled {
                    attributes.extend(extra);
                    if let Some(e) = email_value {
                        attributes.insert("email".into(), e);
                    }
                } else {
                    if let Some(e) = email_value {
                        attributes.insert("email".into(), e);
                    }
                    attributes.extend(extra);
                }
                vec![("UserCreated", attributes)]
            }
            Kind::Update => {
                let Value::Object(payload) = &command["payload"] else {
                    unreachable!()
                };
                let changes: Map<String, Value> = payload
                    .iter()
                    .filter(|(k, _)| *k != "id" && *k != "timestamp")
                    .filter(|(k, v)| user.attributes.get(*k) != Some(v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if changes.is_empty() {
                    vec![]
                } else {
                    vec![("UserUpdated", changes)]
                }
            }
            Kind::Rename => {
                if user.attributes.get("name") == Some(&name) {
                    vec![]
                } else {
                    let mut data = Map::new();
                    data.insert("name".into(), name);
                    vec![("UserRenamed", data)]
                }
            }
            Kind::Email => {
                let email = email_value.unwrap();
                if user.attributes.get("email") == Some(&email) {
                    vec![]
                } else {
                    let mut data = Map::new();
                    data.insert("email".into(), email);
                    vec![("UserEmailChanged", data)]
                }
            }
            Kind::Delete => vec![("UserDeleted", Map::new())],
        };
        if let Some(v) = expected {
            if v != version {
                return (command, failed("version_conflict", Some(version)));
            }
        }
        let user = self.users.entry(id.clone()).or_default();
        let refs = events
            .iter()
            .map(|(t, _)| (*t, id.clone()))
            .collect::<Vec<_>>();
        for (t, data) in events {
            user.record(t, data, ms);
        }
        (command, Ok(refs))
    }

    fn user(&self, id: &str) -> Option<&UserModel> {
        self.users.get(id)
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to the node

fn envelope(body: Value) -> String {
    json!({"src": "client", "dest": "cqrs", "body": body}).to_string()
}

fn query(msg_id: u64, kind: &str, params: Value) -> String {
    envelope(json!({"type": "query", "msg_id": msg_id,
                    "query": {"type": kind, "params": params}}))
}

fn query_ok(msg_id: u64, data: Value) -> Reply {
    Reply::Exact(json!({"type": "query_result", "in_reply_to": msg_id, "data": data}))
}

/// A visible state with one more key last (replacing an attribute of that name), or null.
fn with_key(state: Option<&Map<String, Value>>, key: &str, value: Value) -> Value {
    match state {
        Some(s) => {
            let mut s = s.clone();
            s.shift_remove(key);
            s.insert(key.into(), value);
            Value::Object(s)
        }
        None => Value::Null,
    }
}

/// Sends lines to the node and returns the reply lines.
fn send<S: EventStore + Send + 'static>(node: &mut Lines<S>, lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    node.handle_lines(lines, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Checks replies against what the model expects, one by one.
fn check(model: &Model, replies: &[String], expected: &[Reply], context: &str) {
    assert_eq!(
        replies.len(),
        expected.len(),
        "{context}: number of replies\n{replies:#?}\nexpected {expected:#?}"
    );
    for (line, want) in replies.iter().zip(expected) {
        let envelope: Value = serde_json::from_str(line).unwrap();
        assert_eq!(keys(&envelope), ["src", "dest", "body"], "{line}");
        assert_eq!(envelope["src"], "cqrs", "{line}");
        assert_eq!(envelope["dest"], "client", "{line}");
        let body = &envelope["body"];
        match want {
            Reply::Exact(want) => assert_eq!(
                body.to_string(),
                want.to_string(),
                "{context}: reply differs from the model"
            ),
            Reply::Failed {
                msg_id,
                code,
                current_version,
            } => {
                let mut want_keys = vec!["type", "in_reply_to", "success", "error", "code"];
                if current_version.is_some() {
                    want_keys.push("current_version");
                }
                assert_eq!(keys(body), want_keys, "{context}: {line}");
                assert_eq!(body["type"], "command_result", "{line}");
                assert_eq!(body["in_reply_to"], json!(msg_id), "{line}");
                assert_eq!(body["success"], false, "{line}");
                assert!(
                    body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{line}"
                );
                assert_eq!(body["code"], *code, "{context}: {line}");
                if let Some(v) = current_version {
                    assert_eq!(body["current_version"], json!(v), "{line}");
                }
            }
            Reply::History { msg_id, id } => {
                assert_eq!(keys(body), ["type", "in_reply_to", "data"], "{line}");
                assert_eq!(body["type"], "query_result", "{line}");
                assert_eq!(body["in_reply_to"], json!(msg_id), "{line}");
                check_history(model, &body["data"], id, line);
            }
        }
    }
}

fn check_history(model: &Model, data: &Value, id: &str, line: &str) {
    let Some(user) = model.user(id).filter(|u| !u.events.is_empty()) else {
        assert_eq!(
            data,
            &Value::Null,
            "history of a user with no events: {line}"
        );
        return;
    };
    assert_eq!(keys(data), ["id", "version", "events"], "{line}");
    assert_eq!(data["id"], id, "{line}");
    assert_eq!(data["version"], json!(user.version()), "{line}");
    let events = data["events"].as_array().unwrap();
    assert_eq!(events.len(), user.events.len(), "{line}");
    for (i, (got, want)) in events.iter().zip(&user.events).enumerate() {
        assert_eq!(
            keys(got),
            ["eventType", "aggregateId", "version", "timestamp", "data"],
            "{line}"
        );
        assert_eq!(got["eventType"], want.event_type, "{line}");
        assert_eq!(got["aggregateId"], id, "{line}");
        assert_eq!(got["version"], json!(i + 1), "{line}");
        let stamp = got["timestamp"].as_str().unwrap();
        assert!(stamp.ends_with('Z'), "history times are UTC: {stamp}");
        assert_eq!(parse_nanos(stamp), nanos(want.ms), "{line}");
        assert_eq!(
            got["data"].to_string(),
            Value::Object(want.data.clone()).to_string(),
            "{line}"
        );
    }
}

/// The SQLite store as the server opens it: keeping in memory as many streams and documents as
/// the case's aggregate cache holds (0, 2 or 100,000), so that small sizes empty it often.
fn sqlite_store(path: &std::path::Path, case: &Case) -> SqliteStore {
    let mut store = SqliteStore::open(path).unwrap();
    store.set_cache_size(case.cache_size);
    store
}

fn config(case: &Case) -> Config {
    Config {
        cache_size: case.cache_size,
        snapshot_every: case.snapshot_every,
        ..Config::default()
    }
}

struct Run<S: EventStore + Send + 'static> {
    node: Lines<S>,
    model: Model,
    next_id: u64,
}

impl<S: EventStore + Send + 'static> Run<S> {
    fn new(store: S, case: &Case) -> Self {
        Self {
            node: Lines::open(store, "cqrs", &config(case)).unwrap(),
            model: Model::default(),
            next_id: 0,
        }
    }

    fn msg_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends the steps in batches, checking every reply against the model.
    fn steps(&mut self, steps: &[Step]) {
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let (command, outcome) = self.model.command(step);
            let msg_id = self.msg_id();
            let mut body = Map::new();
            body.insert("type".into(), json!("command"));
            if !step.silent {
                body.insert("msg_id".into(), json!(msg_id));
            }
            body.insert("command".into(), command);
            lines.push(envelope(Value::Object(body)));
            if !step.silent {
                expected.push(match outcome {
                    Ok(events) => {
                        let events: Vec<Value> = events
                            .iter()
                            .map(|(t, id)| json!({"eventType": t, "aggregateId": id}))
                            .collect();
                        Reply::Exact(json!({"type": "command_result", "in_reply_to": msg_id,
                                            "success": true, "events": events}))
                    }
                    Err((code, current_version)) => Reply::Failed {
                        msg_id,
                        code,
                        current_version,
                    },
                });
            }
            if step.query_after {
                if let Some(i) = step.user {
                    let msg_id = self.msg_id();
                    lines.push(query(msg_id, "GetUser", json!({"userId": IDS[i]})));
                    let state = self.model.user(IDS[i]).and_then(UserModel::visible);
                    expected.push(query_ok(msg_id, json!(state)));
                }
            }
            if step.flush || n + 1 == steps.len() {
                let replies = send(&mut self.node, &lines);
                check(
                    &self.model,
                    &replies,
                    &expected,
                    &format!("batch ending at step {n}"),
                );
                lines.clear();
                expected.clear();
            }
        }
    }

    /// The final queries whose answers come from the projection: GetUser and ListUsers.
    fn projection_queries(&mut self) -> (Vec<String>, Vec<Reply>) {
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        for id in IDS {
            let msg_id = self.msg_id();
            lines.push(query(msg_id, "GetUser", json!({"userId": id})));
            let state = self.model.user(id).and_then(UserModel::visible);
            expected.push(query_ok(msg_id, json!(state)));
        }
        let live: Vec<(String, Map<String, Value>)> = self
            .model
            .users
            .iter()
            .filter_map(|(id, u)| u.visible().map(|s| (id.clone(), s.clone())))
            .collect();
        let msg_id = self.msg_id();
        lines.push(query(msg_id, "ListUsers", json!({})));
        let all: Vec<&Map<String, Value>> = live.iter().map(|(_, s)| s).collect();
        expected.push(query_ok(msg_id, json!({"users": all, "next": null})));
        // Page by page, two at a time: `next` is the page's last id only when more follow.
        let mut after: Option<&str> = None;
        for (i, page) in live.chunks(2).enumerate() {
            let msg_id = self.msg_id();
            let params = match after {
                None => json!({"limit": 2}),
                Some(a) => json!({"limit": 2, "after": a}),
            };
            lines.push(query(msg_id, "ListUsers", params));
            let more = (i + 1) * 2 < live.len();
            let next = if more {
                json!(page.last().unwrap().0)
            } else {
                Value::Null
            };
            let users: Vec<&Map<String, Value>> = page.iter().map(|(_, s)| s).collect();
            expected.push(query_ok(msg_id, json!({"users": users, "next": next})));
            after = page.last().map(|(id, _)| id.as_str());
        }
        (lines, expected)
    }

    /// The final queries that replay the store: history, at-version, at-time.
    fn temporal_queries(&mut self, extra_times: &[i64]) -> (Vec<String>, Vec<Reply>) {
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        let mut times: Vec<i64> = extra_times.to_vec();
        times.extend([-1, self.model.clock + 1, i64::from(i32::MAX)]);
        for u in self.model.users.values() {
            for e in &u.events {
                times.extend([e.ms - 1, e.ms, e.ms + 1]);
            }
        }
        times.sort_unstable();
        times.dedup();
        for id in IDS {
            let user = self.model.user(id).cloned().unwrap_or_default();

            let msg_id = self.msg_id();
            lines.push(query(msg_id, "GetUserHistory", json!({"userId": id})));
            // Timestamps are compared as instants (the node's formatting is its own business).
            expected.push(Reply::History { msg_id, id });

            for v in 0..=user.version() + 1 {
                let msg_id = self.msg_id();
                lines.push(query(
                    msg_id,
                    "GetUserAtVersion",
                    json!({"userId": id, "version": v}),
                ));
                let data = with_key(user.at_version(v), "at_version", json!(v));
                expected.push(query_ok(msg_id, data));
            }
            for (i, &t) in times.iter().enumerate() {
                let msg_id = self.msg_id();
                let given = rfc3339(t, i as u8);
                lines.push(query(
                    msg_id,
                    "GetUserAtTime",
                    json!({"userId": id, "timestamp": given}),
                ));
                let data = with_key(user.at_time(t), "at_time", json!(given));
                expected.push(query_ok(msg_id, data));
            }
        }
        (lines, expected)
    }

    /// Sends the queries, checks the answers, and returns them.
    fn ask(&mut self, lines: &[String], expected: &[Reply], context: &str) -> Vec<String> {
        let replies = send(&mut self.node, lines);
        check(&self.model, &replies, expected, context);
        replies
    }

    /// Runs the whole case and checks everything; returns the final queries and their answers.
    fn run(&mut self, case: &Case) -> (Vec<String>, Vec<String>) {
        self.steps(&case.steps);
        let (mut lines, mut expected) = self.projection_queries();
        self.ask(&lines, &expected, "final GetUser/ListUsers");

        let problems =
            projection::verify(self.node.store(), &cqrs_node::registry().projections()).unwrap();
        assert!(problems.is_empty(), "verify: {problems:#?}");

        // Snapshots were taken where the streams are long enough, so the temporal queries below
        // start from them.
        for (id, user) in &self.model.users {
            let snap = self
                .node
                .store()
                .snapshot(&StreamId::new("User", id.as_str()), Upto::End)
                .unwrap();
            if user.version() >= case.snapshot_every {
                let snap = snap
                    .unwrap_or_else(|| panic!("no snapshot of {id} at version {}", user.version()));
                assert!(snap.version >= 1 && snap.version <= user.version());
            }
        }
        let (t_lines, t_expected) = self.temporal_queries(&case.times);
        let with_snapshots = self.ask(&t_lines, &t_expected, "temporal queries");

        // Snapshots are derived data: without them every answer is the same.
        {
            let mut tx = self.node.store_mut().begin().unwrap();
            tx.clear_snapshots().unwrap();
            tx.commit().unwrap();
        }
        for id in IDS {
            let snap = self
                .node
                .store()
                .snapshot(&StreamId::new("User", id), Upto::End)
                .unwrap();
            assert_eq!(snap, None);
        }
        let without = self.ask(&t_lines, &t_expected, "temporal queries without snapshots");
        assert_eq!(with_snapshots, without);

        lines.extend(t_lines);
        expected.extend(t_expected);
        let replies = self.ask(&lines, &expected, "all final queries");
        (lines, replies)
    }
}

// ---------------------------------------------------------------------------------------------
// The properties

/// `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn memory_node_matches_the_model(case in case(80)) {
        Run::new(MemoryStore::new(), &case).run(&case);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(12)))]

    #[test]
    fn sqlite_node_matches_the_model_and_survives_a_reopen(case in case(40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cqrs.db");
        let mut run = Run::new(sqlite_store(&path, &case), &case);
        let (lines, replies) = run.run(&case);
        let Run { node, model, next_id } = run;
        drop(node);

        // A node reopened on the same file gives the same answers.
        let mut run = Run {
            node: Lines::open(sqlite_store(&path, &case), "cqrs", &config(&case)).unwrap(),
            model,
            next_id,
        };
        let again = send(&mut run.node, &lines);
        prop_assert_eq!(replies, again);
        let problems = projection::verify(run.node.store(), &cqrs_node::registry().projections()).unwrap();
        prop_assert!(problems.is_empty(), "verify after reopen: {:#?}", problems);
    }
}
