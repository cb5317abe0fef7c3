//! `command`: validate, load, decide, append, project, commit, reply.
//!
//! A run of commands shares one transaction (group commit). Each command's outcome is decided on
//! its own: a rejected command or a version conflict does not affect the others. Only a store
//! failure aborts the whole run; then nothing of it was written and every command in it gets
//! protocol error 13.

use std::io::{self, Write};

use serde_json::{Map, Value};

use super::Node;
use crate::domain::user::{PayloadError, UserCommand};
use crate::domain::RejectionKind;
use crate::engine::{CommandError, Execute};
use crate::projection;
use crate::protocol::reply::{CommandCode, CommandFailed, CommandOk, EventRef};
use crate::protocol::{Body, Request};
use crate::store::{EventStore, ExpectedVersion, RecordedEvent, StoreError, StoreWrite};
use crate::timestamp::Timestamp;

/// A command as the engine takes it.
struct Parsed {
    command: UserCommand,
    expected: ExpectedVersion,
    time: Option<Timestamp>,
}

/// A failed command's reply.
struct Failure {
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

type Outcome = Result<Vec<RecordedEvent>, Failure>;

/// Reads the wire form of a command. Shape errors are `malformed`; bad values are
/// `validation_failed`; a type no aggregate knows is `unknown_command`.
fn parse(command: Value) -> Result<Parsed, Failure> {
    let malformed = |m: &str| Failure::new(CommandCode::Malformed, m);
    let Value::Object(mut command) = command else {
        return Err(malformed(
            "body.command must be an object with 'type' and 'payload'",
        ));
    };
    let kind = match command.shift_remove("type") {
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
    let mut payload: Map<String, Value> = match command.shift_remove("payload") {
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
    let command = UserCommand::from_payload(kind, payload).map_err(|e| match e {
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

/// Runs the commands in one transaction, then writes their replies.
pub(super) fn run_batch<S: EventStore>(
    node: &mut Node<S>,
    requests: &mut [Request],
    out: &mut impl Write,
) -> io::Result<()> {
    match execute_all(node, requests) {
        Ok(outcomes) => {
            for (request, outcome) in requests.iter().zip(&outcomes) {
                write_outcome(node, request, outcome, out)?;
            }
            Ok(())
        }
        Err(e) => {
            // Nothing of the run was written: the cache may hold states that never committed.
            node.users.forget();
            tracing::error!("a batch of {} command(s) failed: {e}", requests.len());
            let text = format!("{e}; the command was not applied");
            for request in requests {
                node.crash_reply(out, request, &text)?;
            }
            Ok(())
        }
    }
}

fn execute_all<S: EventStore>(
    node: &mut Node<S>,
    requests: &mut [Request],
) -> Result<Vec<Outcome>, StoreError> {
    let Node {
        store,
        users,
        projections,
        ..
    } = node;
    let mut tx = store.begin()?;
    let mut appended = Vec::new();
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        let Body::Command(command) = &mut request.body else {
            unreachable!("run_batch is only given commands")
        };
        let command = std::mem::take(command);
        let outcome = match parse(command) {
            Err(f) => Err(f),
            Ok(p) => match users.execute(
                &mut tx,
                Execute {
                    command: &p.command,
                    expected: p.expected,
                    time: p.time,
                },
            ) {
                Ok(events) => {
                    appended.extend_from_slice(&events);
                    Ok(events)
                }
                Err(e) => Err(failure(e)?),
            },
        };
        outcomes.push(outcome);
    }
    projection::apply_new(projections, &mut tx, &appended)?;
    tx.commit()?;
    Ok(outcomes)
}

fn write_outcome<S: EventStore>(
    node: &Node<S>,
    request: &Request,
    outcome: &Outcome,
    out: &mut impl Write,
) -> io::Result<()> {
    let Some(msg_id) = &request.msg_id else {
        if let Err(f) = outcome {
            tracing::warn!("command without msg_id failed: {}", f.error);
        }
        return Ok(());
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
            node.reply(out, request, &CommandOk::new(msg_id, refs))
        }
        Err(f) => node.reply(
            out,
            request,
            &CommandFailed::new(msg_id, f.code, &f.error, f.current_version),
        ),
    }
}
