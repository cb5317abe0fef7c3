//! `command`: read a command's JSON ([`prepare`], on a front end's thread), then run it
//! ([`execute`], on the writer thread): load, decide, append, project. The node commits and
//! replies.
//!
//! Each command's outcome is decided on its own: a rejected command or a version conflict does
//! not affect the other commands of its batch. Only a store failure aborts the batch's
//! transaction (see [`super::Node::handle`]).

use serde_json::{Map, Value};

use super::Reply;
use crate::domain::Rejection;
use crate::engine::CommandError;
use crate::plugin::{Command, Registry, Runners};
use crate::projection::Projection;
use crate::store::{ExpectedVersion, StoreError, StoreWrite};
use crate::timestamp::Timestamp;

/// The codes the node itself gives a failed command (an aggregate's rejections carry their own,
/// see [`crate::domain::code`]).
pub mod code {
    pub const MALFORMED: &str = "malformed";
    pub const UNKNOWN_COMMAND: &str = "unknown_command";
    pub const VERSION_CONFLICT: &str = "version_conflict";
    pub const UNKNOWN_QUERY: &str = "unknown_query";
    pub use crate::domain::code::VALIDATION_FAILED;
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

/// Reads the JSON form of a command (`{"type", "payload", "expectedVersion"?, "timestamp"?}`).
/// Shape errors are `malformed`; bad values are `validation_failed`; a type no plug-in declares
/// is `unknown_command`. Needs no state: front ends run it on their own threads.
pub fn prepare(registry: &Registry, command: Value) -> Result<Command, Failure> {
    let malformed = |m: &str| Failure::new(code::MALFORMED, m);
    let Value::Object(mut command) = command else {
        return Err(malformed(
            "body.command must be an object with 'type' and 'payload'",
        ));
    };
    // The command's own keys are taken out in any order (swap_remove): only the payload's
    // order matters.
    let kind = match command.swap_remove("type") {
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
    let mut payload: Map<String, Value> = match command.swap_remove("payload") {
        Some(Value::Object(p)) => p,
        _ => return Err(malformed("command.payload must be an object")),
    };
    let expected = match command
        .get("expectedVersion")
        .or_else(|| command.get("expected_version"))
    {
        None | Some(Value::Null) => ExpectedVersion::Any,
        Some(v) => ExpectedVersion::Exact(
            v.as_u64()
                .ok_or_else(|| malformed("expectedVersion must be an integer >= 0"))?,
        ),
    };
    // A timestamp in the payload is never an attribute; the command's own one wins.
    let in_payload = payload.shift_remove("timestamp");
    let time = match command.get("timestamp").or(in_payload.as_ref()) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            Timestamp::parse(s)
                .map_err(|e| Failure::new(code::VALIDATION_FAILED, format!("timestamp: {e}")))?,
        ),
        Some(_) => return Err(malformed("timestamp must be an RFC 3339 string")),
    };
    Ok(registry.command(of, kind, payload, expected, time)?)
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
/// their checkpoints: the caller does that once per batch). `Err` only for a store failure,
/// which dooms the whole transaction.
pub(super) fn execute<T: StoreWrite>(
    runners: &mut Runners,
    projections: &[Box<dyn Projection>],
    tx: &mut T,
    command: Result<Command, Failure>,
) -> Result<Reply, StoreError> {
    let command = match command {
        Ok(c) => c,
        Err(f) => return Ok(Reply::Refused(f)),
    };
    match runners.execute(tx, command, projections) {
        Ok(done) => Ok(Reply::Done(done)),
        Err(e) => Ok(Reply::Refused(failure(e)?)),
    }
}
