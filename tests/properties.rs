//! Property tests: random sequences of User commands and queries, sent as real JSON lines
//! through a [`Node`] (in batches, so group commit is exercised), checked against the test kit's
//! model of the User domain ([`cqrs_node::testkit::model`], which shares no code with the node's
//! domain, engine or projections; the benchmark and the crash loop check against it too).
//!
//! For each generated case:
//! * every reply is the model's, byte for byte (for a failed command: the failure code and, for a
//!   version conflict, the current version; the error text is the node's own);
//! * every `GetUser` (during the run and at the end) equals the fold of the user's history;
//! * `GetUserHistory`, `GetUserAtVersion(v)` for every v, and `GetUserAtTime(t)` for times at,
//!   around and between the events, equal the model's replay;
//! * `ListUsers` (whole, and page by page) equals the model's live users in id order;
//! * `projection::verify` finds no problem;
//! * after deleting every snapshot, every temporal answer is unchanged;
//! * `ListUsersAtTime` at every time around the events, whole and paged, equals the model's
//!   replay up to that time (tests/list_users_at_time.rs does the same with many users);
//! * for SQLite, after reopening the store, and after rebuilding every read model, every answer
//!   is unchanged.
//!
//! The number of cases is modest so that the file runs in a few seconds in a debug build;
//! `PROPTEST_CASES=N` raises it for a longer local run.

use cqrs_node::node::Config;
use cqrs_node::projection;
use cqrs_node::stdio::Lines;
use cqrs_node::store::{EventStore, MemoryStore, SqliteStore, StoreWrite, StreamId, Upto};
use cqrs_node::testkit::model::{self as kit, Kind, Status};
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

// ---------------------------------------------------------------------------------------------
// The model

/// What the node must answer (the test kit's model), and the generator's clock.
#[derive(Default)]
struct Model {
    kit: kit::Model,
    /// Milliseconds after the base time.
    clock: i64,
}

/// Model times: milliseconds after the base time.
fn ms_of(nanos: i128) -> i64 {
    ((nanos - BASE_NANOS) / 1_000_000) as i64
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
    /// The command's wire form for a step (the version it expects, and whether it becomes a
    /// creation, depend on the model's state).
    fn command(&mut self, step: &Step) -> Value {
        let ms = match step.when {
            When::Forward(d) => {
                self.clock += d;
                self.clock
            }
            When::Backward(d) => self.clock - d,
        };
        let id = step.user.map_or("", |i| IDS[i]).to_string();
        let user = self.kit.user(&id);
        let status = user.map_or(Status::Absent, kit::User::status);
        // Most commands to a user that does not exist yet become its creation.
        let kind = match step.kind {
            _ if status == Status::Absent && step.create_if_absent => Kind::Create,
            k => k,
        };
        let name = match step.name {
            Name::Good(i) => json!(NAMES[i]),
            Name::Empty => json!(""),
            Name::Blank => json!("  "),
        };
        let email = match kind {
            Kind::Email => Some(step.email.unwrap_or(Email::Good(0))),
            _ => step.email,
        };
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
        match kind {
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
            }
            Kind::Rename => {
                payload.insert("id".into(), json!(id));
                payload.insert("name".into(), name.clone());
            }
            Kind::Email => {
                payload.insert("id".into(), json!(id));
                payload.insert("email".into(), email_value.clone().unwrap());
            }
            Kind::Delete => {
                payload.insert("id".into(), json!(id));
            }
        };
        let version = user.map_or(0, kit::User::version);
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
        command.insert("type".into(), json!(kind.name()));
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
        Value::Object(command)
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
fn check(replies: &[String], expected: &[kit::Expected], context: &str) {
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
        if let Err(e) = want.check(line) {
            panic!("{context}: reply differs from the model: {e}");
        }
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

    /// Adds a request line and the reply the model expects to it (none for a request without
    /// `msg_id`); a command is applied to the model.
    fn push(&mut self, line: String, lines: &mut Vec<String>, expected: &mut Vec<kit::Expected>) {
        let reply = self
            .model
            .kit
            .expect(&line)
            .unwrap_or_else(|e| panic!("outside the model: {e}\n{line}"));
        expected.extend(reply);
        lines.push(line);
    }

    /// Sends the steps in batches, checking every reply against the model.
    fn steps(&mut self, steps: &[Step]) {
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let command = self.model.command(step);
            let msg_id = self.msg_id();
            let mut body = Map::new();
            body.insert("type".into(), json!("command"));
            if !step.silent {
                body.insert("msg_id".into(), json!(msg_id));
            }
            body.insert("command".into(), command);
            self.push(envelope(Value::Object(body)), &mut lines, &mut expected);
            if step.query_after {
                if let Some(i) = step.user {
                    let msg_id = self.msg_id();
                    let line = query(msg_id, "GetUser", json!({"userId": IDS[i]}));
                    self.push(line, &mut lines, &mut expected);
                }
            }
            if step.flush || n + 1 == steps.len() {
                let replies = send(&mut self.node, &lines);
                check(&replies, &expected, &format!("batch ending at step {n}"));
                lines.clear();
                expected.clear();
            }
        }
    }

    /// The final queries whose answers come from the projection: GetUser and ListUsers.
    fn projection_queries(&mut self) -> (Vec<String>, Vec<kit::Expected>) {
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        for id in IDS {
            let msg_id = self.msg_id();
            let line = query(msg_id, "GetUser", json!({"userId": id}));
            self.push(line, &mut lines, &mut expected);
        }
        let msg_id = self.msg_id();
        self.push(
            query(msg_id, "ListUsers", json!({})),
            &mut lines,
            &mut expected,
        );
        // Page by page, two at a time: `next` is the page's last id only when more follow.
        let live: Vec<String> = self
            .model
            .kit
            .users()
            .filter(|(_, u)| u.visible().is_some())
            .map(|(id, _)| id.to_string())
            .collect();
        let mut after: Option<&str> = None;
        for page in live.chunks(2) {
            let msg_id = self.msg_id();
            let params = match after {
                None => json!({"limit": 2}),
                Some(a) => json!({"limit": 2, "after": a}),
            };
            self.push(
                query(msg_id, "ListUsers", params),
                &mut lines,
                &mut expected,
            );
            after = page.last().map(String::as_str);
        }
        (lines, expected)
    }

    /// The final queries that replay the store: history, at-version, at-time.
    fn temporal_queries(&mut self, extra_times: &[i64]) -> (Vec<String>, Vec<kit::Expected>) {
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        let mut times: Vec<i64> = extra_times.to_vec();
        times.extend([-1, self.model.clock + 1, i64::from(i32::MAX)]);
        for e in self.model.kit.log() {
            let ms = ms_of(e.nanos);
            times.extend([ms - 1, ms, ms + 1]);
        }
        times.sort_unstable();
        times.dedup();
        // The temporal read model at every time: whole, then paged (pages of 1 and 2, from
        // every id and from ids that are none).
        for (i, &t) in times.iter().enumerate() {
            let given = rfc3339(t, i as u8);
            let mut ask = |params: Value, run: &mut Self| {
                let msg_id = run.msg_id();
                let line = query(msg_id, "ListUsersAtTime", params);
                run.push(line, &mut lines, &mut expected);
            };
            ask(json!({"timestamp": given}), self);
            let limit = 1 + i % 2;
            ask(json!({"timestamp": given, "limit": limit}), self);
            for after in IDS.iter().chain(&["", "\u{10FFFF}"]).step_by(1 + i % 3) {
                ask(
                    json!({"timestamp": given, "limit": limit, "after": after}),
                    self,
                );
            }
        }
        for id in IDS {
            let version = self.model.kit.user(id).map_or(0, kit::User::version);

            let msg_id = self.msg_id();
            let line = query(msg_id, "GetUserHistory", json!({"userId": id}));
            self.push(line, &mut lines, &mut expected);

            for v in 0..=version + 1 {
                let msg_id = self.msg_id();
                let line = query(
                    msg_id,
                    "GetUserAtVersion",
                    json!({"userId": id, "version": v}),
                );
                self.push(line, &mut lines, &mut expected);
            }
            for (i, &t) in times.iter().enumerate() {
                let msg_id = self.msg_id();
                let given = rfc3339(t, i as u8);
                let line = query(
                    msg_id,
                    "GetUserAtTime",
                    json!({"userId": id, "timestamp": given}),
                );
                self.push(line, &mut lines, &mut expected);
            }
        }
        (lines, expected)
    }

    /// Sends the queries, checks the answers, and returns them.
    fn ask(&mut self, lines: &[String], expected: &[kit::Expected], context: &str) -> Vec<String> {
        let replies = send(&mut self.node, lines);
        check(&replies, expected, context);
        replies
    }

    /// Runs the whole case and checks everything; returns the final queries and their answers.
    fn run(&mut self, case: &Case) -> (Vec<String>, Vec<String>) {
        self.steps(&case.steps);
        let (mut lines, mut expected) = self.projection_queries();
        self.ask(&lines, &expected, "final GetUser/ListUsers");

        let problems = projection::verify(
            &cqrs_node::registry().read_view(self.node.store()),
            &cqrs_node::registry().projections(),
        )
        .unwrap();
        assert!(problems.is_empty(), "verify: {problems:#?}");

        // Snapshots were taken where the streams are long enough, so the temporal queries below
        // start from them.
        for (id, user) in self.model.kit.users() {
            let snap = self
                .node
                .store()
                .snapshot(&StreamId::new("User", id), Upto::End)
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
        prop_assert_eq!(&replies, &again);
        let problems = projection::verify(&cqrs_node::registry().read_view(run.node.store()), &cqrs_node::registry().projections()).unwrap();
        prop_assert!(problems.is_empty(), "verify after reopen: {:#?}", problems);

        // Every read model rebuilt from the log (the temporal one too) gives the same answers.
        projection::rebuild(&mut cqrs_node::registry().view(run.node.store_mut()), &cqrs_node::registry().projections()).unwrap();
        let rebuilt = send(&mut run.node, &lines);
        prop_assert_eq!(replies, rebuilt);
    }
}
