//! The one model of the User domain: what the node must answer, and what its store must hold.
//!
//! Written from the contract (`docs/protocol.md`, the project's reading of
//! `../shared/protocol.md`), independently of the node: it uses none of `domain`, `engine`,
//! `projection` or `store`. The property tests, the benchmark's verifier and the crash loop all
//! check the node against it.
//!
//! * [`Model::command`] takes a command as the wire gives it (the `command` object) and applies
//!   it: the [`Outcome`] (success and its events, or the failure code and, for a conflict, the
//!   current version) and the events it appends to the model's [`Model::log`].
//! * [`Model::query`] gives the `data` a query must return: `GetUser`, `ListUsers`,
//!   `GetUserAtTime`, `GetUserAtVersion`, `GetUserHistory`.
//! * [`Model::expect`] works on whole request lines: the exact reply line (envelope included) a
//!   request must get, or for a failed command what its reply must say ([`Expected::check`]).
//! * [`Model::truncate`] forgets the newest events (commands sent but never acknowledged, lost
//!   in a crash).
//!
//! The rules, in the order the node checks them: the command's form (anything malformed is
//! outside the model), `validation_failed` (the id: a non-empty string of at most 256 bytes; a
//! `name`: a string that is not blank; an `email`: `local@domain` with one `@`, something on both
//! sides, no white space or control characters; an attribute name over 256 bytes or a value over
//! 64 KiB of JSON; a timestamp that is not RFC 3339, out of the years 1677 to 2262, or before the
//! user's last event), then `already_exists` (a `CreateUser` on an id ever used), `not_found`,
//! `deleted`, then the events (only what changes: a command that changes nothing succeeds with
//! none), then `version_conflict` (the `expectedVersion` against the user's version). The
//! state is `id`, `name`, then the other attributes in the order they were first set.
//!
//! Outside the model, and reported as errors rather than predicted: malformed commands, unknown
//! command or query types, bad query parameters, commands without a timestamp (the node's clock
//! cannot be predicted), and users pushed past 64 attributes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The longest user id, in bytes.
const MAX_ID_BYTES: usize = 256;
/// The most attributes a user can have (`id` and `name` included).
const MAX_ATTRIBUTES: usize = 64;
/// The longest attribute name, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// The largest attribute value, in bytes of JSON.
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// An instant as RFC 3339 text in UTC, with as many fractional digits as needed
/// (`2024-01-15T09:00:00Z`, `2024-01-15T09:00:00.001Z`): how the node writes event times.
pub fn rfc3339(nanos: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("(no RFC 3339 form for {nanos} ns)"))
}

/// An RFC 3339 time (any offset) in nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i128> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp_nanos)
}

/// An event, as the model predicts it and as the store must hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The user's id (the stream's).
    pub user: String,
    /// Its version in the user's stream: 1 for the first.
    pub version: u64,
    pub event_type: &'static str,
    /// Its time, in nanoseconds since the epoch.
    pub nanos: i128,
    pub data: Map<String, Value>,
}

/// Where a user stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Status {
    /// Never created (or its creation was forgotten: [`Model::truncate`]).
    #[default]
    Absent,
    Active,
    Deleted,
}

/// A user, as the model knows it.
#[derive(Clone, Debug, Default)]
pub struct User {
    status: Status,
    /// `id`, `name`, then the other attributes in the order they were first set (kept, unseen,
    /// once deleted).
    attributes: Map<String, Value>,
    /// Its events: indexes into the model's log, oldest first.
    events: Vec<usize>,
}

impl User {
    pub fn status(&self) -> Status {
        self.status
    }

    /// The number of its events.
    pub fn version(&self) -> u64 {
        self.events.len() as u64
    }

    pub fn attributes(&self) -> &Map<String, Value> {
        &self.attributes
    }

    /// The state as queries show it: `None` unless it exists and is not deleted.
    pub fn visible(&self) -> Option<&Map<String, Value>> {
        (self.status == Status::Active).then_some(&self.attributes)
    }

    /// Its events, as indexes into [`Model::log`], oldest first.
    pub fn events(&self) -> &[usize] {
        &self.events
    }

    /// Applies `event`, which stands at index `at` of the log.
    fn evolve(&mut self, event: &Event, at: usize) {
        match event.event_type {
            "UserCreated" => {
                self.status = Status::Active;
                self.attributes = event.data.clone();
            }
            "UserDeleted" => self.status = Status::Deleted,
            _ => {
                for (k, v) in &event.data {
                    // A new key goes last; a known one keeps its place.
                    self.attributes.insert(k.clone(), v.clone());
                }
            }
        }
        self.events.push(at);
    }
}

/// What a command must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success, with the types of the events appended to user `id` (none for a command that
    /// changes nothing).
    Success {
        id: String,
        events: Vec<&'static str>,
    },
    /// Failure with this code, and for a conflict the current version.
    Failure {
        code: &'static str,
        current_version: Option<u64>,
    },
}

impl Outcome {
    fn failure(code: &'static str) -> Self {
        Outcome::Failure {
            code,
            current_version: None,
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success { .. })
    }
}

/// An event's type and data, before it is appended.
type NewEvent = (&'static str, Map<String, Value>);

/// The command types of the User domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Create,
    Update,
    Rename,
    Email,
    Delete,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Create,
        Kind::Update,
        Kind::Rename,
        Kind::Email,
        Kind::Delete,
    ];

    /// The command's `type` on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Create => "CreateUser",
            Kind::Update => "UpdateUser",
            Kind::Rename => "RenameUser",
            Kind::Email => "ChangeUserEmail",
            Kind::Delete => "DeleteUser",
        }
    }

    fn named(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The reply a request must get ([`Model::expect`]).
#[derive(Clone, Debug)]
pub struct Expected {
    /// The request's `msg_id`, which the reply's `in_reply_to` must be.
    pub msg_id: Value,
    /// The reply body's `type`.
    pub kind: &'static str,
    want: Want,
}

#[derive(Clone, Debug)]
enum Want {
    /// Exactly this line.
    Line(String),
    /// A failed command: this envelope, this code (and current version); the error text is the
    /// node's own.
    Failure {
        src: String,
        dest: String,
        code: &'static str,
        current_version: Option<u64>,
    },
}

/// The first 400 characters of `s`, for messages.
pub fn cut(s: &str) -> &str {
    match s.char_indices().nth(400) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

impl Expected {
    /// The exact reply line, unless the reply is a failure (whose error text is the node's).
    pub fn line(&self) -> Option<&str> {
        match &self.want {
            Want::Line(line) => Some(line),
            Want::Failure { .. } => None,
        }
    }

    /// Checks a reply line: byte for byte, or for a failed command the envelope, the keys in
    /// their order (`type`, `in_reply_to`, `success`, `error`, `code`, and `current_version` for
    /// a conflict), a non-empty error text, the code and the current version.
    pub fn check(&self, got: &str) -> Result<(), String> {
        let (src, dest, code, current_version) = match &self.want {
            Want::Line(line) if line == got => return Ok(()),
            Want::Line(line) => {
                return Err(format!(
                    "msg_id {}:\n  expected {}\n  got      {}",
                    self.msg_id,
                    cut(line),
                    cut(got)
                ))
            }
            Want::Failure {
                src,
                dest,
                code,
                current_version,
            } => (src, dest, *code, *current_version),
        };
        let wrong = |what: &str| {
            Err(format!(
                "msg_id {}: expected a failure with code {code}{}, got {}: {what}",
                self.msg_id,
                current_version.map_or(String::new(), |v| format!(" (current_version {v})")),
                cut(got)
            ))
        };
        let Ok(envelope) = serde_json::from_str::<Value>(got) else {
            return wrong("not JSON");
        };
        if keys(&envelope) != ["src", "dest", "body"] {
            return wrong("the envelope's keys");
        }
        if envelope["src"] != **src || envelope["dest"] != **dest {
            return wrong("the envelope's src or dest");
        }
        let body = &envelope["body"];
        let mut want_keys = vec!["type", "in_reply_to", "success", "error", "code"];
        if current_version.is_some() {
            want_keys.push("current_version");
        }
        if keys(body) != want_keys {
            return wrong("the body's keys");
        }
        if body["type"] != "command_result" || body["in_reply_to"] != self.msg_id {
            return wrong("its type or in_reply_to");
        }
        if body["success"] != false {
            return wrong("success");
        }
        if body["error"].as_str().is_none_or(str::is_empty) {
            return wrong("no error text");
        }
        if body["code"] != code {
            return wrong("the code");
        }
        if current_version.is_some_and(|v| body["current_version"] != v) {
            return wrong("current_version");
        }
        Ok(())
    }

    /// Checks only that a reply line answers the request with a body of the right type (what
    /// the echo floor's replies can be held to).
    pub fn check_kind(&self, got: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(got).map_err(|e| format!("reply not JSON: {e}"))?;
        let body = v.get("body").ok_or("reply without body")?;
        if body.get("in_reply_to") != Some(&self.msg_id)
            || body.get("type").and_then(Value::as_str) != Some(self.kind)
        {
            return Err(format!(
                "msg_id {}: expected a {} reply, got {got}",
                self.msg_id, self.kind
            ));
        }
        Ok(())
    }
}

fn string<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a str, String> {
    v.and_then(Value::as_str)
        .ok_or_else(|| format!("{what} must be a string (outside the model)"))
}

/// A name: a string that is not blank.
fn good_name(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.trim().is_empty())
}

/// An address: `local@domain`, one `@`, something on both sides, no white space or control
/// characters.
fn good_email(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let parts: Vec<&str> = s.split('@').collect();
        parts.len() == 2
            && parts.iter().all(|p| !p.is_empty())
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// The model: every event applied so far, in order, and the users they make.
#[derive(Clone, Debug, Default)]
pub struct Model {
    users: BTreeMap<String, User>,
    log: Vec<Event>,
    /// The node's id, as the requests name it ([`Model::expect`]).
    node_id: Option<String>,
    commands: u64,
    queries: u64,
}

impl Model {
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }

    /// Every user the model has heard of, by id.
    pub fn users(&self) -> impl Iterator<Item = (&str, &User)> {
        self.users.iter().map(|(id, u)| (id.as_str(), u))
    }

    /// Every event, in the order the store must hold them (position `i + 1` at index `i`).
    pub fn log(&self) -> &[Event] {
        &self.log
    }

    /// The commands and queries seen by [`Model::expect`].
    pub fn requests(&self) -> (u64, u64) {
        (self.commands, self.queries)
    }

    /// Forgets every event from index `len` on (commands that were not acknowledged and did
    /// not make it into the store), and recomputes the users they touched.
    pub fn truncate(&mut self, len: usize) {
        let mut affected = BTreeSet::new();
        while self.log.len() > len {
            let event = self.log.pop().expect("len < log.len()");
            affected.insert(event.user);
        }
        for id in affected {
            let kept = self.users.remove(&id).unwrap_or_default().events;
            let mut user = User::default();
            for i in kept.into_iter().filter(|&i| i < len) {
                user.evolve(&self.log[i], i);
            }
            self.users.insert(id, user);
        }
    }

    /// Applies a command, given as the wire's `command` object: what it must do. Errors: the
    /// command is outside the model (see the module's documentation).
    pub fn command(&mut self, command: &Value) -> Result<Outcome, String> {
        let c = command
            .as_object()
            .ok_or("command is not an object (outside the model)")?;
        let kind = string(c.get("type"), "command.type")?;
        let kind =
            Kind::named(kind).ok_or_else(|| format!("the model does not know command '{kind}'"))?;
        let mut payload = c
            .get("payload")
            .and_then(Value::as_object)
            .ok_or("command.payload must be an object (outside the model)")?
            .clone();
        let expected = match c
            .get("expectedVersion")
            .or_else(|| c.get("expected_version"))
        {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or("expectedVersion must be an integer >= 0 (outside the model)")?,
            ),
        };
        // A timestamp in the payload is never an attribute; the command's own wins.
        let in_payload = payload.shift_remove("timestamp");
        let time = string(
            c.get("timestamp").or(in_payload.as_ref()),
            "the timestamp (the model needs one on every command)",
        )?;
        let id = match payload.shift_remove("id") {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_BYTES => id,
            _ => return Ok(Outcome::failure("validation_failed")),
        };
        if !Self::valid(kind, &payload)? {
            return Ok(Outcome::failure("validation_failed"));
        }
        let nanos = match parse_time(time) {
            Some(n) if i64::try_from(n).is_ok() => n,
            _ => return Ok(Outcome::failure("validation_failed")),
        };
        let user = self.users.get(&id).cloned().unwrap_or_default();
        if user
            .events
            .last()
            .is_some_and(|&i| nanos < self.log[i].nanos)
        {
            return Ok(Outcome::failure("validation_failed"));
        }
        match (kind, user.status) {
            (Kind::Create, Status::Absent) => {}
            (Kind::Create, _) => return Ok(Outcome::failure("already_exists")),
            (_, Status::Absent) => return Ok(Outcome::failure("not_found")),
            (_, Status::Deleted) => return Ok(Outcome::failure("deleted")),
            (_, Status::Active) => {}
        }
        let event = Self::decide(kind, &id, payload, &user)?;
        if let Some(v) = expected {
            if v != user.version() {
                return Ok(Outcome::Failure {
                    code: "version_conflict",
                    current_version: Some(user.version()),
                });
            }
        }
        let mut events = Vec::new();
        if let Some((event_type, data)) = event {
            let at = self.log.len();
            let event = Event {
                user: id.clone(),
                version: user.version() + 1,
                event_type,
                nanos,
                data,
            };
            self.users.entry(id.clone()).or_default().evolve(&event, at);
            self.log.push(event);
            events.push(event_type);
        }
        Ok(Outcome::Success { id, events })
    }

    /// The stateless rules on the attributes a command sets (`id` and `timestamp` taken out).
    fn valid(kind: Kind, payload: &Map<String, Value>) -> Result<bool, String> {
        let only = |key: Option<&str>| {
            if payload.keys().any(|k| Some(k.as_str()) != key) {
                return Err(format!(
                    "the model knows no key but 'id' and {key:?} in a {kind:?} payload"
                ));
            }
            Ok(key.and_then(|k| payload.get(k)))
        };
        match kind {
            Kind::Delete => return only(None).map(|_| true),
            Kind::Rename if only(Some("name"))?.is_none() => return Ok(false),
            Kind::Email if only(Some("email"))?.is_none() => return Ok(false),
            Kind::Create if !payload.contains_key("name") => return Ok(false),
            Kind::Create if payload.len() + 1 > MAX_ATTRIBUTES => {
                return Err("a user past 64 attributes is outside the model".into())
            }
            _ => {}
        }
        for (key, value) in payload {
            if key.is_empty() {
                return Err("an empty attribute name is outside the model".into());
            }
            let ok = key.len() <= MAX_NAME_BYTES
                && serde_json::to_string(value).map_or(0, |s| s.len()) <= MAX_VALUE_BYTES
                && (key != "name" || good_name(value))
                && (key != "email" || good_email(value));
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The event a valid command makes on a user it may change (`None`: it changes nothing).
    fn decide(
        kind: Kind,
        id: &str,
        payload: Map<String, Value>,
        user: &User,
    ) -> Result<Option<NewEvent>, String> {
        let changes = |payload: Map<String, Value>| -> Map<String, Value> {
            payload
                .into_iter()
                .filter(|(k, v)| user.attributes.get(k) != Some(v))
                .collect()
        };
        let (event_type, data) = match kind {
            Kind::Create => {
                let mut payload = payload;
                let mut data = Map::new();
                data.insert("id".into(), json!(id));
                data.insert(
                    "name".into(),
                    payload.shift_remove("name").unwrap_or_default(),
                );
                data.extend(payload);
                return Ok(Some(("UserCreated", data)));
            }
            Kind::Delete => return Ok(Some(("UserDeleted", Map::new()))),
            Kind::Update => ("UserUpdated", changes(payload)),
            Kind::Rename => ("UserRenamed", changes(payload)),
            Kind::Email => ("UserEmailChanged", changes(payload)),
        };
        if data.is_empty() {
            return Ok(None);
        }
        let new_keys = data
            .keys()
            .filter(|k| !user.attributes.contains_key(*k))
            .count();
        if user.attributes.len() + new_keys > MAX_ATTRIBUTES {
            return Err("a user past 64 attributes is outside the model".into());
        }
        Ok(Some((event_type, data)))
    }

    /// The `data` a query must return, given as the wire's `query` object. Errors: the query is
    /// outside the model (an unknown type, bad parameters).
    pub fn query(&self, query: &Value) -> Result<Value, String> {
        let kind = string(query.get("type"), "query.type")?;
        let params = query
            .get("params")
            .and_then(Value::as_object)
            .ok_or("query.params must be an object (outside the model)")?;
        if kind == "ListUsers" {
            return self.list_users(params);
        }
        if kind == "ListUsersAtTime" {
            return self.list_users_at_time(params);
        }
        let id = string(params.get("userId"), "params.userId")?;
        let user = self.users.get(id);
        Ok(match kind {
            "GetUser" => json!(user.and_then(User::visible)),
            "GetUserAtTime" => {
                let given = string(params.get("timestamp"), "params.timestamp")?;
                let t = parse_time(given).ok_or("a bad timestamp is outside the model")?;
                let state = user.and_then(|u| self.replay(u, |_, e| e.nanos <= t));
                with_key(state, "at_time", json!(given))
            }
            "GetUserAtVersion" => {
                let v = params
                    .get("version")
                    .and_then(Value::as_u64)
                    .ok_or("params.version must be an integer >= 0 (outside the model)")?;
                let state = user
                    .filter(|u| v >= 1 && u.version() >= v)
                    .and_then(|u| self.replay(u, |n, _| (n as u64) < v));
                with_key(state, "at_version", json!(v))
            }
            "GetUserHistory" => match user.filter(|u| !u.events.is_empty()) {
                None => Value::Null,
                Some(u) => {
                    let events: Vec<Value> = u
                        .events
                        .iter()
                        .map(|&i| {
                            let e = &self.log[i];
                            json!({"eventType": e.event_type, "aggregateId": id,
                                   "version": e.version, "timestamp": rfc3339(e.nanos),
                                   "data": e.data})
                        })
                        .collect();
                    json!({"id": id, "version": u.version(), "events": events})
                }
            },
            other => return Err(format!("the model does not know query '{other}'")),
        })
    }

    /// The visible state after the first events of `user` that pass `keep(index, event)`.
    fn replay(
        &self,
        user: &User,
        keep: impl Fn(usize, &Event) -> bool,
    ) -> Option<Map<String, Value>> {
        let mut state = User::default();
        for (n, &i) in user.events.iter().enumerate() {
            let event = &self.log[i];
            if !keep(n, event) {
                break;
            }
            state.evolve(event, i);
        }
        state.visible().cloned()
    }

    /// `ListUsersAtTime`: `ListUsers` of the users as each one's events up to and including
    /// `timestamp` made them (by replay), with `at_time` (the timestamp as given) last.
    fn list_users_at_time(&self, params: &Map<String, Value>) -> Result<Value, String> {
        let given = string(params.get("timestamp"), "params.timestamp")?;
        let t = parse_time(given).ok_or("a bad timestamp is outside the model")?;
        let (limit, after) = page_params(params)?;
        let mut live = self
            .users
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
            .filter_map(|(id, u)| self.replay(u, |_, e| e.nanos <= t).map(|s| (id, s)));
        let page: Vec<_> = live.by_ref().take(limit).collect();
        let next = match live.next() {
            Some(_) => json!(page.last().map(|(id, _)| id)),
            None => Value::Null,
        };
        let users: Vec<&Map<String, Value>> = page.iter().map(|(_, s)| s).collect();
        Ok(json!({"users": users, "next": next, "at_time": given}))
    }

    /// `ListUsers`: the live users after `after`, by id, `limit` of them (default 100, at most
    /// 1000); `next` is the page's last id when more follow.
    fn list_users(&self, params: &Map<String, Value>) -> Result<Value, String> {
        let (limit, after) = page_params(params)?;
        let mut live = self
            .users
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
            .filter_map(|(id, u)| u.visible().map(|s| (id, s)));
        let page: Vec<_> = live.by_ref().take(limit).collect();
        let next = match live.next() {
            Some(_) => json!(page.last().map(|(id, _)| id)),
            None => Value::Null,
        };
        let users: Vec<&Map<String, Value>> = page.iter().map(|(_, s)| *s).collect();
        Ok(json!({"users": users, "next": next}))
    }

    /// The reply a request line must get (`None`: no reply, as for a request without
    /// `msg_id`); a command is applied. Errors: the request is outside the model.
    ///
    /// The node's id is the `node_id` of an `init`, or else the `dest` of the first message.
    pub fn expect(&mut self, line: &str) -> Result<Option<Expected>, String> {
        let msg: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let src = string(msg.get("src"), "src")?.to_string();
        let dest = msg.get("dest").and_then(Value::as_str);
        let body = msg
            .get("body")
            .and_then(Value::as_object)
            .ok_or("no body")?;
        let kind = string(body.get("type"), "body.type")?;
        if self.node_id.is_none() {
            self.node_id = match kind {
                "init" => body.get("node_id").and_then(Value::as_str),
                _ => dest,
            }
            .map(String::from);
        }
        let msg_id = body.get("msg_id").filter(|v| !v.is_null()).cloned();
        let (reply_kind, reply) = match kind {
            "command" => {
                self.commands += 1;
                let cmd = body.get("command").ok_or("command without 'command'")?;
                let outcome = self.command(cmd)?;
                let (id, events) = match outcome {
                    Outcome::Success { id, events } => (id, events),
                    Outcome::Failure {
                        code,
                        current_version,
                    } => {
                        return Ok(msg_id.map(|msg_id| Expected {
                            msg_id,
                            kind: "command_result",
                            want: Want::Failure {
                                src: self.node_id.clone().unwrap_or_default(),
                                dest: src,
                                code,
                                current_version,
                            },
                        }))
                    }
                };
                let events: Vec<Value> = events
                    .iter()
                    .map(|t| json!({"eventType": t, "aggregateId": id}))
                    .collect();
                let mut reply = Map::new();
                reply.insert("success".into(), json!(true));
                reply.insert("events".into(), json!(events));
                ("command_result", reply)
            }
            "query" => {
                self.queries += 1;
                let q = body.get("query").ok_or("query without 'query'")?;
                let mut reply = Map::new();
                reply.insert("data".into(), self.query(q)?);
                ("query_result", reply)
            }
            "init" => {
                self.node_id = Some(string(body.get("node_id"), "node_id")?.to_string());
                ("init_ok", Map::new())
            }
            other => return Err(format!("the model does not know '{other}' messages")),
        };
        let Some(msg_id) = msg_id else {
            return Ok(None);
        };
        let mut body = Map::new();
        body.insert("type".into(), json!(reply_kind));
        body.insert("in_reply_to".into(), msg_id.clone());
        body.extend(reply);
        let envelope = json!({
            "src": self.node_id.as_deref().unwrap_or(""),
            "dest": src,
            "body": body,
        });
        Ok(Some(Expected {
            msg_id,
            kind: reply_kind,
            want: Want::Line(envelope.to_string()),
        }))
    }
}

/// A visible state with one more key last (replacing an attribute of that name), or null.
/// `limit` (default 100, at most 1000) and `after` of a paged query.
fn page_params(params: &Map<String, Value>) -> Result<(usize, Option<&str>), String> {
    let limit = match params.get("limit") {
        None => 100,
        Some(v) => v
            .as_u64()
            .filter(|&n| n >= 1)
            .ok_or("a limit that is not an integer >= 1 is outside the model")?
            .min(1000) as usize,
    };
    let after = match params.get("after") {
        None => None,
        Some(v) => Some(v.as_str().ok_or("params.after must be a string")?),
    };
    Ok((limit, after))
}

fn with_key(state: Option<Map<String, Value>>, key: &str, value: Value) -> Value {
    match state {
        Some(mut s) => {
            s.shift_remove(key);
            s.insert(key.into(), value);
            Value::Object(s)
        }
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(body: Value) -> String {
        json!({"src": "c", "dest": "n", "body": body}).to_string()
    }

    fn command(msg_id: u64, kind: &str, payload: Value, time: &str) -> String {
        line(json!({"type": "command", "msg_id": msg_id,
                    "command": {"type": kind, "payload": payload, "timestamp": time}}))
    }

    #[test]
    fn the_contracts_examples() {
        let mut m = Model::default();
        let create = command(
            1,
            "CreateUser",
            json!({"id": "user-123", "name": "John"}),
            "2024-01-10T08:00:00Z",
        );
        let e = m.expect(&create).unwrap().unwrap();
        assert_eq!(
            e.line(),
            Some(
                r#"{"src":"n","dest":"c","body":{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"user-123"}]}}"#
            )
        );
        let rename = command(
            2,
            "RenameUser",
            json!({"id": "user-123", "name": "John Doe"}),
            "2024-01-14T12:00:00Z",
        );
        m.expect(&rename).unwrap();
        let history = line(json!({"type": "query", "msg_id": 5,
            "query": {"type": "GetUserHistory", "params": {"userId": "user-123"}}}));
        assert_eq!(
            m.expect(&history).unwrap().unwrap().line(),
            Some(
                r#"{"src":"n","dest":"c","body":{"type":"query_result","in_reply_to":5,"data":{"id":"user-123","version":2,"events":[{"eventType":"UserCreated","aggregateId":"user-123","version":1,"timestamp":"2024-01-10T08:00:00Z","data":{"id":"user-123","name":"John"}},{"eventType":"UserRenamed","aggregateId":"user-123","version":2,"timestamp":"2024-01-14T12:00:00Z","data":{"name":"John Doe"}}]}}}"#
            )
        );
        let at = line(
            json!({"type": "query", "msg_id": 3, "query": {"type": "GetUserAtTime",
            "params": {"userId": "user-123", "timestamp": "2024-01-15T09:00:00Z"}}}),
        );
        assert_eq!(
            m.expect(&at).unwrap().unwrap().line(),
            Some(
                r#"{"src":"n","dest":"c","body":{"type":"query_result","in_reply_to":3,"data":{"id":"user-123","name":"John Doe","at_time":"2024-01-15T09:00:00Z"}}}"#
            )
        );
    }

    #[test]
    fn failures_in_the_order_of_the_rules() {
        let mut m = Model::default();
        let run = |m: &mut Model, kind: &str, payload: Value, time: &str, v: Option<u64>| {
            let mut c = json!({"type": kind, "payload": payload, "timestamp": time});
            if let Some(v) = v {
                c["expectedVersion"] = json!(v);
            }
            m.command(&c).unwrap()
        };
        let fail = |code| Outcome::Failure {
            code,
            current_version: None,
        };
        let t0 = "2024-01-01T00:00:00Z";
        let t1 = "2024-01-01T00:00:01+01:00"; // before t0
        let ok = run(
            &mut m,
            "CreateUser",
            json!({"id": "a", "name": "A"}),
            t0,
            Some(0),
        );
        assert!(ok.is_success());
        let again = run(
            &mut m,
            "CreateUser",
            json!({"id": "a", "name": " "}),
            t0,
            None,
        );
        assert_eq!(again, fail("validation_failed"));
        let again = run(
            &mut m,
            "CreateUser",
            json!({"id": "a", "name": "B"}),
            t1,
            None,
        );
        assert_eq!(again, fail("validation_failed"), "time goes backwards");
        let again = run(
            &mut m,
            "CreateUser",
            json!({"id": "a", "name": "B"}),
            t0,
            Some(7),
        );
        assert_eq!(again, fail("already_exists"));
        let email = json!({"id": "a", "email": "a b@c"});
        assert_eq!(
            run(&mut m, "ChangeUserEmail", email, t0, None),
            fail("validation_failed")
        );
        let same = run(
            &mut m,
            "RenameUser",
            json!({"id": "a", "name": "A"}),
            t0,
            Some(3),
        );
        assert_eq!(
            same,
            Outcome::Failure {
                code: "version_conflict",
                current_version: Some(1)
            },
            "a no-op is version-checked too"
        );
        let same = run(
            &mut m,
            "RenameUser",
            json!({"id": "a", "name": "A"}),
            t0,
            Some(1),
        );
        assert_eq!(
            same,
            Outcome::Success {
                id: "a".into(),
                events: vec![]
            }
        );
        let ghost = run(&mut m, "DeleteUser", json!({"id": "b"}), t0, None);
        assert_eq!(ghost, fail("not_found"));
        assert!(run(&mut m, "DeleteUser", json!({"id": "a"}), t0, None).is_success());
        let gone = run(&mut m, "UpdateUser", json!({"id": "a", "x": 1}), t0, None);
        assert_eq!(gone, fail("deleted"));
        assert_eq!(m.log().len(), 2);
        m.truncate(1);
        assert_eq!(m.user("a").unwrap().status(), Status::Active);
        assert_eq!(m.user("a").unwrap().version(), 1);
    }
}
