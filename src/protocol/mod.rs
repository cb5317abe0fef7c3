//! The wire: JSON-lines envelopes in, JSON-lines envelopes out. Types only, no behaviour.
//!
//! Incoming lines are parsed into a [`Request`] ([`parse_line`]); replies are the body structs of
//! [`reply`], written by [`write_message`]. Keys are serialised in declaration order, so every
//! reply has exactly the key order that `shared/protocol.md` shows.

pub mod reply;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Protocol-level error codes of the Maelstrom family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body's `type` is not one this node serves.
    NotSupported = 10,
    /// The request cannot be understood (missing `type`, wrong field types, line too long...).
    MalformedRequest = 12,
    /// The node failed internally (e.g. the store could not commit); the request was not applied.
    Crash = 13,
}

/// A request the node can answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Who to answer.
    pub src: String,
    pub dest: Option<String>,
    /// The body's `msg_id`, echoed as `in_reply_to`. Without one, the request is carried out but
    /// not answered.
    pub msg_id: Option<Value>,
    pub body: Body,
}

/// What the request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Init {
        node_id: String,
    },
    /// The body's `command` field, as sent (`Null` when missing).
    Command(Value),
    /// The body's `query` field, as sent (`Null` when missing).
    Query(Value),
    /// Identified but unusable: answered with a protocol error.
    Invalid {
        code: ErrorCode,
        text: String,
    },
}

/// One input line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request(Request),
    /// Cannot be answered (not JSON, not an envelope, no `src`): reported on stderr only.
    Unanswerable(String),
}

#[derive(Deserialize)]
struct RawEnvelope {
    src: Option<Value>,
    dest: Option<Value>,
    body: Option<Value>,
}

/// Parses one line. Unknown keys are ignored anywhere.
pub fn parse_line(line: &[u8]) -> Incoming {
    // Only an object is an envelope (serde would also take a 3-element array for the struct).
    if line.trim_ascii_start().first() != Some(&b'{') {
        return Incoming::Unanswerable("not a JSON envelope: a message is a JSON object".into());
    }
    // JSON is UTF-8. (Parsing bytes, serde would skip an unknown key's value unchecked and
    // answer a line that is not JSON.)
    let Ok(text) = std::str::from_utf8(line) else {
        return Incoming::Unanswerable("not a JSON envelope: the line is not UTF-8".into());
    };
    let raw: RawEnvelope = match serde_json::from_str(text) {
        Ok(r) => r,
        // Valid JSON, perhaps, but nested deeper than the parser goes: answer it if its
        // envelope can be made out.
        Err(e) if nesting_depth(line) > MAX_DEPTH => {
            return identify(
                line,
                ErrorCode::MalformedRequest,
                format!("the message is nested deeper than {MAX_DEPTH} levels ({e})"),
            )
        }
        // Valid JSON with a key given twice is refused by the struct; read it as a map, where
        // the last one counts, as it does everywhere else in a message.
        Err(e) => match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(mut map) => RawEnvelope {
                src: map.remove("src"),
                dest: map.remove("dest"),
                body: map.remove("body"),
            },
            Err(_) => return Incoming::Unanswerable(format!("not a JSON envelope: {e}")),
        },
    };
    let Some(Value::String(src)) = raw.src else {
        return Incoming::Unanswerable("envelope has no string 'src' to reply to".into());
    };
    let dest = match raw.dest {
        Some(Value::String(d)) => Some(d),
        _ => None,
    };
    let Some(Value::Object(mut body)) = raw.body else {
        return Incoming::Unanswerable("envelope has no object 'body'".into());
    };
    let msg_id = body.remove("msg_id").filter(|v| !v.is_null());
    let body = parse_body(&mut body, dest.is_some());
    Incoming::Request(Request {
        src,
        dest,
        msg_id,
        body,
    })
}

/// The deepest nesting of arrays and objects the parser accepts (serde_json's limit).
pub const MAX_DEPTH: usize = 127;

/// The deepest nesting of `[`/`{` in `line`, skipping strings; a cheap scan, no parse.
fn nesting_depth(line: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in line {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A request that cannot be parsed but must still be answered (too long, too deep): a protocol
/// error `code` if `head` (the line, or its first bytes) names a string `src` and a `msg_id`;
/// else a line that cannot be answered. Best effort: the first `"src":` and `"msg_id":` found.
pub fn identify(head: &[u8], code: ErrorCode, text: String) -> Incoming {
    match (sniff(head, b"\"src\""), sniff(head, b"\"msg_id\"")) {
        (Some(Value::String(src)), Some(msg_id)) => Incoming::Request(Request {
            src,
            dest: sniff(head, b"\"dest\"").and_then(|d| d.as_str().map(String::from)),
            msg_id: Some(msg_id),
            body: Body::Invalid { code, text },
        }),
        _ => Incoming::Unanswerable(text),
    }
}

/// Best effort: the JSON string or number after the first `"key":` in `head`.
fn sniff(head: &[u8], key: &[u8]) -> Option<Value> {
    let at = head.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &head[at..];
    let colon = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let value = &rest[colon + 1..];
    let v = serde_json::Deserializer::from_slice(value)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    (v.is_string() || v.is_number()).then_some(v)
}

fn parse_body(body: &mut Map<String, Value>, has_dest: bool) -> Body {
    let invalid = |text: &str| Body::Invalid {
        code: ErrorCode::MalformedRequest,
        text: text.to_string(),
    };
    if !has_dest {
        return invalid("envelope has no string 'dest'");
    }
    let kind = match body.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return invalid("body 'type' must be a string"),
        None => return invalid("body has no 'type'"),
    };
    match kind {
        "init" => match body.get("node_id") {
            Some(Value::String(id)) if !id.is_empty() => Body::Init {
                node_id: id.clone(),
            },
            _ => invalid("init needs a non-empty string 'node_id'"),
        },
        "command" => Body::Command(body.remove("command").unwrap_or(Value::Null)),
        "query" => Body::Query(body.remove("query").unwrap_or(Value::Null)),
        other => Body::Invalid {
            code: ErrorCode::NotSupported,
            text: format!("unsupported message type '{other}'"),
        },
    }
}

/// Appends one envelope to `out` as a line of compact JSON: `{"src":..,"dest":..,"body":..}`.
/// Replies are gathered in memory (a batch's, until its commit) and written out together.
pub fn write_message<B: reply::WriteJson>(out: &mut Vec<u8>, src: &str, dest: &str, body: &B) {
    write_envelope(out, src, dest, |out| body.write_json(out))
}

/// [`write_message`] with a body that `body` writes.
pub fn write_envelope(out: &mut Vec<u8>, src: &str, dest: &str, body: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"{\"src\":");
    crate::json::write_str(out, src);
    out.extend_from_slice(b",\"dest\":");
    crate::json::write_str(out, dest);
    out.extend_from_slice(b",\"body\":");
    body(out);
    out.extend_from_slice(b"}\n");
}

/// Writes the lines gathered in `buf` to `out` and empties it, if it holds more than `over`
/// bytes (0: whatever it holds).
pub fn flush_lines(
    buf: &mut Vec<u8>,
    over: usize,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    if buf.len() > over {
        out.write_all(buf)?;
        buf.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Request {
        match parse_line(line.as_bytes()) {
            Incoming::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_command_and_ignores_unknown_keys() {
        let r = req(
            r#"{"id":7,"src":"c","dest":"n","body":{"type":"command","msg_id":3,"command":{"type":"X"},"extra":1}}"#,
        );
        assert_eq!(r.src, "c");
        assert_eq!(r.dest.as_deref(), Some("n"));
        assert_eq!(r.msg_id, Some(Value::from(3)));
        assert_eq!(r.body, Body::Command(serde_json::json!({"type":"X"})));
    }

    #[test]
    fn unknown_type_is_not_supported_and_missing_type_is_malformed() {
        let r = req(r#"{"src":"c","dest":"n","body":{"type":"frob","msg_id":1}}"#);
        assert!(matches!(
            r.body,
            Body::Invalid {
                code: ErrorCode::NotSupported,
                ..
            }
        ));
        let r = req(r#"{"src":"c","dest":"n","body":{"msg_id":1}}"#);
        assert!(matches!(
            r.body,
            Body::Invalid {
                code: ErrorCode::MalformedRequest,
                ..
            }
        ));
    }

    #[test]
    fn unanswerable_lines() {
        for line in [
            "not json",
            "[1,2]",
            r#"["c","n",{"type":"query","msg_id":1,"query":{"type":"ListUsers"}}]"#,
            r#"{"dest":"n","body":{}}"#,
            r#"{"src":"c","dest":"n","body":3}"#,
        ] {
            assert!(
                matches!(parse_line(line.as_bytes()), Incoming::Unanswerable(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn a_too_deep_message_is_answered_when_its_envelope_can_be_made_out() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let line = format!(
            r#"{{"src":"c","dest":"n","body":{{"type":"command","msg_id":4,"command":{{"type":"CreateUser","payload":{{"id":"a","name":"A","x":{deep}}}}}}}}}"#
        );
        assert!(serde_json::from_str::<Value>(&line).is_err());
        let r = req(&line);
        assert_eq!(r.src, "c");
        assert_eq!(r.dest.as_deref(), Some("n"));
        assert_eq!(r.msg_id, Some(Value::from(4)));
        assert!(matches!(
            r.body,
            Body::Invalid {
                code: ErrorCode::MalformedRequest,
                ..
            }
        ));
        // Too deep and nothing to answer: stderr only.
        assert!(matches!(
            parse_line(deep.as_bytes()),
            Incoming::Unanswerable(_)
        ));
        // Brackets inside strings do not count.
        assert_eq!(nesting_depth(br#"{"a":"[[[[{{{\"[["}"#), 1);
        assert_eq!(nesting_depth(b"[[1],[[2]]]"), 3);
    }

    #[test]
    fn a_key_given_twice_counts_once_the_last_time() {
        let r = req(
            r#"{"src":"a","src":"b","dest":"n","dest":"m","body":{"type":"query","msg_id":1,"msg_id":2}}"#,
        );
        assert_eq!(r.src, "b");
        assert_eq!(r.dest.as_deref(), Some("m"));
        assert_eq!(r.msg_id, Some(Value::from(2)));
        assert!(matches!(r.body, Body::Query(Value::Null)));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_not_json() {
        let line = b"{\"src\":\"c\",\"x\":\"\xe9\",\"dest\":\"n\",\"body\":{\"type\":\"query\",\"msg_id\":1}}";
        assert!(matches!(parse_line(line), Incoming::Unanswerable(_)));
    }
}
