//! `command`: read a command's JSON ([`prepare`], on a front end's thread), then run it
//! ([`execute`], on the writer thread): load, decide, append, project. The node commits and
//! replies.
//!
//! Each command's outcome is decided on its own: a rejected command or a version conflict does
//! not affect the other commands of its batch. Only a store failure aborts the batch's
//! transaction (see [`super::Node::handle`]).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Done, Reply};
use crate::domain::Rejection;
use crate::engine::CommandError;
use crate::plugin::{Command, Registry, Runners};
use crate::projection::Projection;
use crate::store::{EventStore, ExpectedVersion, Position, StoreError, StoreWrite};
use crate::timestamp::Timestamp;

/// The codes the node itself gives a failed command (an aggregate's rejections carry their own,
/// see [`crate::domain::code`]).
pub mod code {
    pub const MALFORMED: &str = "malformed";
    pub const UNKNOWN_COMMAND: &str = "unknown_command";
    pub const VERSION_CONFLICT: &str = "version_conflict";
    pub const UNKNOWN_QUERY: &str = "unknown_query";
    pub const COMMAND_ID_REUSED: &str = "command_id_reused";
    pub use crate::domain::code::VALIDATION_FAILED;
}

/// Longest `commandId`, in bytes.
pub const MAX_COMMAND_ID_BYTES: usize = 200;

/// The store collection that remembers command ids: one document per id (kept in the store
/// beside the events, so that it commits in their transaction; not a projection, so `rebuild`
/// leaves it alone).
pub const COMMAND_IDS: &str = "command_ids";

/// A client's id for one intended change, and the fingerprint of the command that carries it
/// (SHA-256 of its type, payload and expected version, in a canonical form: object keys
/// sorted, the payload's `timestamp` left out), so that a retry can be told from a different
/// command reusing the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandId {
    pub id: String,
    pub fingerprint: String,
}

/// What the store keeps of a command id.
#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    fingerprint: String,
    /// When the first command with this id succeeded (nanoseconds since the epoch).
    time: i64,
    reply: Done,
}

/// Why a command or a query failed: a code, a human-readable reason, and for a version
/// conflict the version the aggregate is at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub error: String,
    pub current_version: Option<u64>,
}

impl Failure {
    pub fn new(code: &'static str, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
            current_version: None,
        }
    }

    /// What stands in a batch for a command that has been run (never answered).
    pub(super) fn already_run() -> Self {
        Self::new(code::MALFORMED, "this command was already run")
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        Failure::new(r.code, r.message)
    }
}

/// A command's JSON object, split into the keys the node reads (every other key is ignored).
/// Each is `Some` when the key was given, even as `null`. A front end fills it from a parsed
/// object ([`CommandJson::from_map`]) or straight from the text (it implements `Deserialize`;
/// a key given twice is an error there, where a map keeps the last one: fall back to the map).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(from = "CommandKeys")]
pub struct CommandJson {
    /// `type`.
    pub kind: Option<Value>,
    pub payload: Option<Value>,
    /// `expectedVersion`, or `expected_version` if that is not given.
    pub expected: Option<Value>,
    pub timestamp: Option<Value>,
    /// `commandId`, or `command_id` if that is not given.
    pub command_id: Option<Value>,
}

/// Every key of [`CommandJson`] as it may be spelled.
#[derive(serde::Deserialize)]
struct CommandKeys {
    #[serde(rename = "type", default, deserialize_with = "present")]
    kind: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<Value>,
    #[serde(rename = "expectedVersion", default, deserialize_with = "present")]
    expected: Option<Value>,
    #[serde(rename = "expected_version", default, deserialize_with = "present")]
    expected_snake: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    timestamp: Option<Value>,
    #[serde(rename = "commandId", default, deserialize_with = "present")]
    command_id: Option<Value>,
    #[serde(rename = "command_id", default, deserialize_with = "present")]
    command_id_snake: Option<Value>,
}

impl From<CommandKeys> for CommandJson {
    fn from(k: CommandKeys) -> Self {
        Self {
            kind: k.kind,
            payload: k.payload,
            expected: k.expected.or(k.expected_snake),
            timestamp: k.timestamp,
            command_id: k.command_id.or(k.command_id_snake),
        }
    }
}

/// A key's value as given, `null` included (serde's `Option` would read `null` as "missing").
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(d).map(Some)
}

impl CommandJson {
    /// The keys of a command object.
    pub fn from_map(mut command: Map<String, Value>) -> Self {
        // Taken out in any order (swap_remove): only the payload's order matters.
        CommandKeys {
            kind: command.swap_remove("type"),
            payload: command.swap_remove("payload"),
            expected: command.swap_remove("expectedVersion"),
            expected_snake: command.swap_remove("expected_version"),
            timestamp: command.swap_remove("timestamp"),
            command_id: command.swap_remove("commandId"),
            command_id_snake: command.swap_remove("command_id"),
        }
        .into()
    }
}

/// The failure of a `command` that is not an object.
pub fn not_an_object() -> Failure {
    Failure::new(
        code::MALFORMED,
        "body.command must be an object with 'type' and 'payload'",
    )
}

/// Reads the JSON form of a command (`{"type", "payload", "expectedVersion"?, "timestamp"?,
/// "commandId"?}`). Shape errors are `malformed`; bad values are `validation_failed`; a type no
/// plug-in declares is `unknown_command`. Needs no state: front ends run it on their own
/// threads.
pub fn prepare(registry: &Registry, command: Value) -> Result<Command, Failure> {
    match command {
        Value::Object(command) => prepare_json(registry, CommandJson::from_map(command)),
        _ => Err(not_an_object()),
    }
}

/// [`prepare`], for a command already split into its keys.
pub fn prepare_json(registry: &Registry, command: CommandJson) -> Result<Command, Failure> {
    let malformed = |m: &str| Failure::new(code::MALFORMED, m);
    let kind = match command.kind {
        Some(Value::String(k)) => k,
        _ => return Err(malformed("command.type must be a string")),
    };
    let kind = kind.as_str();
    let unknown = || {
        Failure::new(
            code::UNKNOWN_COMMAND,
            format!("unknown command type '{kind}'"),
        )
    };
    let Some(of) = registry.command_type(kind) else {
        return Err(unknown());
    };
    let mut payload: Map<String, Value> = match command.payload {
        Some(Value::Object(p)) => p,
        _ => return Err(malformed("command.payload must be an object")),
    };
    let expected = match command.expected {
        None | Some(Value::Null) => ExpectedVersion::Any,
        Some(v) => ExpectedVersion::Exact(
            v.as_u64()
                .ok_or_else(|| malformed("expectedVersion must be an integer >= 0"))?,
        ),
    };
    let command_id = match command.command_id {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.is_empty() || id.len() > MAX_COMMAND_ID_BYTES => {
            return Err(Failure::new(
                code::VALIDATION_FAILED,
                format!("commandId must be 1 to {MAX_COMMAND_ID_BYTES} bytes long"),
            ))
        }
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(malformed("commandId must be a string")),
    };
    // A timestamp in the payload is never an attribute; the command's own one wins.
    let in_payload = payload.shift_remove("timestamp");
    let command_id = command_id.map(|id| CommandId {
        fingerprint: fingerprint(kind, &payload, expected),
        id,
    });
    let time = match command.timestamp.as_ref().or(in_payload.as_ref()) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            Timestamp::parse(s)
                .map_err(|e| Failure::new(code::VALIDATION_FAILED, format!("timestamp: {e}")))?,
        ),
        Some(_) => return Err(malformed("timestamp must be an RFC 3339 string")),
    };
    let mut command = registry.command(of, kind, payload, expected, time)?;
    command.command_id = command_id;
    Ok(command)
}

/// The fingerprint of a command (see [`CommandId`]).
fn fingerprint(kind: &str, payload: &Map<String, Value>, expected: ExpectedVersion) -> String {
    fn object(m: &Map<String, Value>, out: &mut String) {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        out.push('{');
        for (i, k) in keys.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("a string serialises"));
            out.push(':');
            canonical(&m[k], out);
        }
        out.push('}');
    }
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => object(m, out),
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = serde_json::to_string(kind).expect("a string serialises");
    text.push('\n');
    object(payload, &mut text);
    text.push('\n');
    if let ExpectedVersion::Exact(v) = expected {
        text.push_str(&v.to_string());
    }
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The reply to a command that did not produce events.
fn failure(e: CommandError) -> Result<Failure, StoreError> {
    Ok(match e {
        CommandError::Rejected(r) => r.into(),
        CommandError::Conflict { expected, actual } => Failure {
            code: code::VERSION_CONFLICT,
            error: format!("expected version {expected}, but the aggregate is at version {actual}"),
            current_version: Some(actual),
        },
        CommandError::Store(e) => return Err(e),
    })
}

/// Runs one command inside `tx` and applies its events to the projections (without moving
/// their checkpoints: the caller does that once per batch): its reply, and the position of the
/// last event it appended. `Err` only for a store failure, which dooms the whole transaction.
///
/// A command with a `commandId` that a succeeded command already had is not run: the same
/// fingerprint gets the first command's reply again (read through the transaction, so a
/// duplicate later in the same batch sees it too), another one `command_id_reused`. A command
/// that succeeds records its id, fingerprint and reply in the same transaction; a failed one
/// records nothing.
pub(super) fn execute<T: StoreWrite>(
    runners: &mut Runners,
    projections: &[Box<dyn Projection>],
    tx: &mut T,
    command: Result<Command, Failure>,
) -> Result<(Reply, Option<Position>), StoreError> {
    let mut command = match command {
        Ok(c) => c,
        Err(f) => return Ok((Reply::Refused(f), None)),
    };
    let id = command.command_id.take();
    if let Some(id) = &id {
        if let Some(doc) = tx.document(COMMAND_IDS, &id.id)? {
            let first: Remembered = serde_json::from_str(&doc)
                .map_err(|e| StoreError::Corrupt(format!("command id '{}': {e}", id.id)))?;
            let reply = if first.fingerprint == id.fingerprint {
                Reply::Done(Done {
                    repeated: true,
                    ..first.reply
                })
            } else {
                Reply::Refused(Failure::new(
                    code::COMMAND_ID_REUSED,
                    format!(
                        "commandId '{}' was used by a different command (type, payload or \
                         expectedVersion); nothing was changed",
                        id.id
                    ),
                ))
            };
            return Ok((reply, None));
        }
    }
    match runners.execute(tx, command, projections) {
        Ok(executed) => {
            let last = executed.events.last().map(|e| e.position);
            let done = Done::from(executed);
            if let Some(id) = id {
                let remembered = Remembered {
                    fingerprint: id.fingerprint,
                    time: Timestamp::now().0,
                    reply: done.clone(),
                };
                let doc = serde_json::to_string(&remembered).expect("a record serialises");
                tx.put_document(COMMAND_IDS, &id.id, Some(&doc))?;
            }
            Ok((Reply::Done(done), last))
        }
        Err(e) => Ok((Reply::Refused(failure(e)?), None)),
    }
}

/// Forgets the command ids first used longer than `keep` ago; returns how many.
pub(super) fn forget_ids_older_than<S: EventStore>(
    store: &mut S,
    keep: std::time::Duration,
) -> Result<u64, StoreError> {
    let cutoff = Timestamp::now()
        .0
        .saturating_sub(i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX));
    let mut old = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.documents(COMMAND_IDS, after.as_deref(), 10_000)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (id, doc) in page {
            let r: Remembered = serde_json::from_str(&doc)
                .map_err(|e| StoreError::Corrupt(format!("command id '{id}': {e}")))?;
            if r.time < cutoff {
                old.push(id);
            }
        }
    }
    if old.is_empty() {
        return Ok(0);
    }
    let mut tx = store.begin()?;
    for id in &old {
        tx.put_document(COMMAND_IDS, id, None)?;
    }
    tx.commit()?;
    Ok(old.len() as u64)
}
