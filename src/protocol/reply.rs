//! Reply bodies, one struct per shape. Field order is the wire's key order.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// `{"type":"init_ok","in_reply_to":N}`
#[derive(Serialize)]
pub struct InitOk<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
}

impl<'a> InitOk<'a> {
    pub fn new(in_reply_to: &'a Value) -> Self {
        Self {
            kind: "init_ok",
            in_reply_to,
        }
    }
}

/// `{"type":"error","in_reply_to":N,"code":C,"text":"..."}`
#[derive(Serialize)]
pub struct Error<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
    code: u32,
    text: &'a str,
}

impl<'a> Error<'a> {
    pub fn new(in_reply_to: &'a Value, code: super::ErrorCode, text: &'a str) -> Self {
        Self {
            kind: "error",
            in_reply_to,
            code: code as u32,
            text,
        }
    }
}

/// One event in a successful command's reply.
#[derive(Serialize)]
pub struct EventRef<'a> {
    #[serde(rename = "eventType")]
    pub event_type: &'a str,
    #[serde(rename = "aggregateId")]
    pub aggregate_id: &'a str,
}

/// `{"type":"command_result","in_reply_to":N,"success":true,"events":[...]}`
#[derive(Serialize)]
pub struct CommandOk<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
    success: bool,
    events: Vec<EventRef<'a>>,
}

impl<'a> CommandOk<'a> {
    pub fn new(in_reply_to: &'a Value, events: Vec<EventRef<'a>>) -> Self {
        Self {
            kind: "command_result",
            in_reply_to,
            success: true,
            events,
        }
    }
}

/// The `code` of a failed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandCode {
    ValidationFailed,
    AlreadyExists,
    NotFound,
    Deleted,
    VersionConflict,
    UnknownCommand,
    Malformed,
}

/// `{"type":"command_result","in_reply_to":N,"success":false,"error":"...","code":"..."}`,
/// plus `"current_version"` for a version conflict.
#[derive(Serialize)]
pub struct CommandFailed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
    success: bool,
    error: &'a str,
    code: CommandCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<u64>,
}

impl<'a> CommandFailed<'a> {
    pub fn new(
        in_reply_to: &'a Value,
        code: CommandCode,
        error: &'a str,
        current_version: Option<u64>,
    ) -> Self {
        Self {
            kind: "command_result",
            in_reply_to,
            success: false,
            error,
            code,
            current_version,
        }
    }
}

/// `{"type":"query_result","in_reply_to":N,"data":...}`
#[derive(Serialize)]
pub struct QueryOk<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
    data: &'a RawValue,
}

impl<'a> QueryOk<'a> {
    pub fn new(in_reply_to: &'a Value, data: &'a RawValue) -> Self {
        Self {
            kind: "query_result",
            in_reply_to,
            data,
        }
    }
}

/// The `code` of a failed query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryCode {
    UnknownQuery,
    ValidationFailed,
}

/// `{"type":"query_result","in_reply_to":N,"data":null,"error":"...","code":"..."}`
#[derive(Serialize)]
pub struct QueryFailed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
    data: (),
    error: &'a str,
    code: QueryCode,
}

impl<'a> QueryFailed<'a> {
    pub fn new(in_reply_to: &'a Value, code: QueryCode, error: &'a str) -> Self {
        Self {
            kind: "query_result",
            in_reply_to,
            data: (),
            error,
            code,
        }
    }
}
