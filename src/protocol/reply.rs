//! Reply bodies, one struct per shape. Field order is the wire's key order.
//!
//! Each body is written by [`WriteJson`]: serde's derive for most of them, and by hand for the
//! two that answer nearly every message ([`CommandOk`], [`QueryOk`]), where serde_json spent
//! more time escaping constant keys than the node spent deciding. The hand-written ones must
//! write exactly what the derive writes; a test compares them.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A reply body that writes itself as compact JSON.
pub trait WriteJson: Serialize {
    fn write_json(&self, out: &mut Vec<u8>) {
        serialize(out, self)
    }
}

impl WriteJson for InitOk<'_> {}
impl WriteJson for Error<'_> {}
impl WriteJson for CommandFailed<'_> {}
impl WriteJson for QueryFailed<'_> {}

use crate::json::{serialize, write_str};

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

/// `{"type":"command_result","in_reply_to":N,"success":false,"error":"...","code":"..."}`,
/// plus `"current_version"` for a version conflict.
#[derive(Serialize)]
pub struct CommandFailed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
    success: bool,
    error: &'a str,
    /// A code the node or an aggregate defines (`validation_failed`, `version_conflict`, ...).
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<u64>,
}

impl<'a> CommandFailed<'a> {
    pub fn new(
        in_reply_to: &'a Value,
        code: &'a str,
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

impl WriteJson for CommandOk<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"command_result\",\"in_reply_to\":");
        serialize(out, self.in_reply_to);
        out.extend_from_slice(b",\"success\":true,\"events\":[");
        for (i, e) in self.events.iter().enumerate() {
            out.extend_from_slice(if i == 0 {
                b"{\"eventType\":"
            } else {
                b",{\"eventType\":"
            });
            write_str(out, e.event_type);
            out.extend_from_slice(b",\"aggregateId\":");
            write_str(out, e.aggregate_id);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
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

impl WriteJson for QueryOk<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"type\":\"query_result\",\"in_reply_to\":");
        serialize(out, self.in_reply_to);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.get().as_bytes());
        out.push(b'}');
    }
}

/// `{"type":"query_result","in_reply_to":N,"data":null,"error":"...","code":"..."}`
#[derive(Serialize)]
pub struct QueryFailed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    in_reply_to: &'a Value,
    data: (),
    error: &'a str,
    /// `unknown_query`, `validation_failed`, or a code of the aggregate's.
    code: &'a str,
}

impl<'a> QueryFailed<'a> {
    pub fn new(in_reply_to: &'a Value, code: &'a str, error: &'a str) -> Self {
        Self {
            kind: "query_result",
            in_reply_to,
            data: (),
            error,
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_hand(body: &impl WriteJson) -> String {
        let mut out = Vec::new();
        body.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_hand_written_bodies_are_what_serde_writes() {
        let odd = "a\"b\\c\u{1}d\u{7f}é\n";
        let ids = [
            serde_json::json!(7),
            serde_json::json!(18446744073709551615u64),
            serde_json::json!(-3),
            serde_json::json!(1.5),
            serde_json::json!("m-1"),
        ];
        for id in &ids {
            for events in [
                vec![],
                vec![EventRef {
                    event_type: "UserCreated",
                    aggregate_id: "user-1",
                }],
                vec![
                    EventRef {
                        event_type: odd,
                        aggregate_id: odd,
                    },
                    EventRef {
                        event_type: "",
                        aggregate_id: "x",
                    },
                ],
            ] {
                let body = CommandOk::new(id, events);
                assert_eq!(by_hand(&body), serde_json::to_string(&body).unwrap());
            }
            for data in [r#"null"#, r#"{"id":"u","name":"A \"B\""}"#, "[1,2]"] {
                let raw = RawValue::from_string(data.to_string()).unwrap();
                let body = QueryOk::new(id, &raw);
                assert_eq!(by_hand(&body), serde_json::to_string(&body).unwrap());
            }
        }
        for s in [odd, "", "plain", "\u{0}\u{1f} \u{2028}"] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn an_envelope_is_src_dest_body_in_that_order() {
        let mut out = Vec::new();
        let id = serde_json::json!(3);
        crate::protocol::write_message(&mut out, "n\"1", "c1", &InitOk::new(&id));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"src\":\"n\\\"1\",\"dest\":\"c1\",\"body\":{\"type\":\"init_ok\",\"in_reply_to\":3}}\n"
        );
    }
}
