//! `command`: validate, load, decide, append, project. The node commits and replies.
//!
//! Each command's outcome is decided on its own: a rejected command or a version conflict does
//! not affect the other commands of its batch. Only a store failure aborts the batch's
//! transaction (see [`super::Node::handle`]).

use serde_json::{Map, Value};

use super::To;
use crate::domain::user::{PayloadError, User, UserCommand};
use crate::domain::RejectionKind;
use crate::engine::{CommandError, Execute, Repository};
use crate::projection::{self, Projection};
use crate::protocol::reply::{CommandCode, CommandFailed, CommandOk, EventRef};
use crate::store::{ExpectedVersion, RecordedEvent, StoreError, StoreWrite};
use crate::timestamp::Timestamp;

/// A command as the engine takes it.
pub(super) struct Parsed {
    command: UserCommand,
    expected: ExpectedVersion,
    time: Option<Timestamp>,
}

/// A failed command's reply.
pub(super) struct Failure {
    code: CommandCode,
    error: String,
    current_version: Option<u64>,
}

impl Failure {
    fn new(code: CommandCode, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
            current_version: None,
        }
    }
}

pub(super) type Outcome = Result<Vec<RecordedEvent>, Failure>;

/// Reads the wire form of a command. Shape errors are `malformed`; bad values are
/// `validation_failed`; a type no aggregate knows is `unknown_command`. Needs no state: the
/// server runs it on its reader thread.
pub(super) fn parse(command: Value) -> Result<Parsed, Failure> {
    let malformed = |m: &str| Failure::new(CommandCode::Malformed, m);
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
    if !UserCommand::KINDS.contains(&kind) {
        return Err(Failure::new(
            CommandCode::UnknownCommand,
            format!("unknown command type '{kind}'"),
        ));
    }
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
    let time =
        match command.get("timestamp").or(in_payload.as_ref()) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Timestamp::parse(s).map_err(|e| {
                Failure::new(CommandCode::ValidationFailed, format!("timestamp: {e}"))
            })?),
            Some(_) => return Err(malformed("timestamp must be an RFC 3339 string")),
        };
    let command = UserCommand::from_payload(kind, payload.into()).map_err(|e| match e {
        PayloadError::UnknownCommand => Failure::new(
            CommandCode::UnknownCommand,
            format!("unknown command type '{kind}'"),
        ),
        PayloadError::Invalid(r) => Failure::new(CommandCode::ValidationFailed, r.message),
    })?;
    Ok(Parsed {
        command,
        expected,
        time,
    })
}

fn failure(e: CommandError) -> Result<Failure, StoreError> {
    Ok(match e {
        CommandError::Rejected(r) => Failure::new(
            match r.kind {
                RejectionKind::ValidationFailed => CommandCode::ValidationFailed,
                RejectionKind::AlreadyExists => CommandCode::AlreadyExists,
                RejectionKind::NotFound => CommandCode::NotFound,
                RejectionKind::Deleted => CommandCode::Deleted,
            },
            r.message,
        ),
        CommandError::Conflict { expected, actual } => Failure {
            code: CommandCode::VersionConflict,
            error: format!("expected version {expected}, but the aggregate is at version {actual}"),
            current_version: Some(actual),
        },
        CommandError::Store(e) => return Err(e),
    })
}

/// Runs one command inside `tx` and applies its events to the projections (without moving
/// their checkpoints: the caller does that once per batch). `Err` only for a store failure, which
/// dooms the whole transaction.
pub(super) fn execute<T: StoreWrite>(
    users: &mut Repository<User>,
    projections: &[Box<dyn Projection>],
    tx: &mut T,
    command: Result<Parsed, Failure>,
) -> Result<Outcome, StoreError> {
    let parsed = match command {
        Ok(p) => p,
        Err(f) => return Ok(Err(f)),
    };
    let run = Execute {
        command: parsed.command,
        expected: parsed.expected,
        time: parsed.time,
    };
    let project = |tx: &mut T, user: &User, events: &[RecordedEvent]| {
        projection::apply_command(projections, tx, events, user)
    };
    match users.execute(tx, run, project) {
        Ok(events) => Ok(Ok(events)),
        Err(e) => Ok(Err(failure(e)?)),
    }
}

/// Writes a command's reply (nothing if it has no msg_id).
pub(super) fn write_outcome(out: &mut Vec<u8>, id: &str, to: &To, outcome: &Outcome) {
    let Some(msg_id) = &to.msg_id else {
        if let Err(f) = outcome {
            tracing::warn!("command without msg_id failed: {}", f.error);
        }
        return;
    };
    match outcome {
        Ok(events) => {
            let refs = events
                .iter()
                .map(|e| EventRef {
                    event_type: &e.event_type,
                    aggregate_id: &e.stream.id,
                })
                .collect();
            super::reply(out, id, to, &CommandOk::new(msg_id, refs))
        }
        Err(f) => super::reply(
            out,
            id,
            to,
            &CommandFailed::new(msg_id, f.code, &f.error, f.current_version),
        ),
    }
}
