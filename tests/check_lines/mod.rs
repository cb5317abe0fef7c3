//! The checker shared by the proptest side (tests/fuzz_lines.rs) and the cargo-fuzz target
//! (fuzz/fuzz_targets/handle_line.rs, which includes this file by path): input lines through an
//! in-memory node, and what their replies must be, judged without the node's own parser.
//!
//! No panic; every reply is a JSON envelope `{"src","dest","body"}` whose body has a `type` and
//! an `in_reply_to`; every line that is JSON with a string `src`, an object `body` and a non-null
//! `msg_id` gets exactly one reply, in order, to that `src`, with that `in_reply_to`, from the
//! node's current id (an `init` renames it); other lines get none. A batch holding a line nested
//! deeper than the parser goes is only checked for well-formed replies.

use cqrs_node::node::Config;
use cqrs_node::stdio::Lines;
use cqrs_node::store::MemoryStore;
use serde_json::Value;

/// What a line must get.
#[derive(Debug)]
enum Expect {
    /// Exactly one reply, to this `src`, with this `in_reply_to`.
    One(String, Value),
    /// No reply.
    None,
}

/// Deeper than the parser goes: such a line may be answered with error 12 (when its envelope
/// can be made out) or not.
fn too_deep(line: &[u8]) -> bool {
    line.iter().filter(|&&b| b == b'[' || b == b'{').count() > 127
}

/// The expectation for one line, and the node id after it (an `init` renames the node).
fn expect(line: &[u8], id: &mut String) -> Expect {
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(line) else {
        return Expect::None;
    };
    let (Some(Value::String(src)), Some(Value::Object(body))) =
        (envelope.get("src"), envelope.get("body"))
    else {
        return Expect::None;
    };
    if let (Some(Value::String(_)), Some("init"), Some(Value::String(node_id))) = (
        envelope.get("dest"),
        body.get("type").and_then(Value::as_str),
        body.get("node_id"),
    ) {
        if !node_id.is_empty() {
            *id = node_id.clone();
        }
    }
    match body.get("msg_id") {
        None | Some(Value::Null) => Expect::None,
        // As echoed: printed, then read back (serde_json's float parsing is not always exact,
        // so a float can move by a unit in the last place on the way).
        Some(msg_id) => Expect::One(
            src.clone(),
            serde_json::from_str(&msg_id.to_string()).unwrap(),
        ),
    }
}

/// A fresh in-memory node (a tiny cache and frequent snapshots, to reach those paths) and the id
/// its replies must come from.
pub struct Checker {
    node: Lines<MemoryStore>,
    id: String,
}

impl Checker {
    pub fn new() -> Self {
        let config = Config {
            cache_size: 2,
            snapshot_every: 2,
            ..Config::default()
        };
        Checker {
            node: Lines::open(MemoryStore::new(), "n1", &config).unwrap(),
            id: "n1".to_string(),
        }
    }

    /// Hands `batch` to the node as one batch and checks every reply; the first thing wrong.
    pub fn batch<L: AsRef<[u8]>>(&mut self, batch: &[L]) -> Result<(), String> {
        let mut out = Vec::new();
        self.node
            .handle_lines(batch, &mut out)
            .map_err(|e| format!("handle_lines failed: {e}"))?;
        let text = String::from_utf8(out).map_err(|_| "replies are not UTF-8".to_string())?;
        let mut replies = Vec::new();
        for line in text.lines() {
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("a reply is not JSON: {e}"))?;
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            if keys != ["src", "dest", "body"] || !v["body"]["type"].is_string() {
                return Err(format!("malformed reply: {line}"));
            }
            if v["body"].get("in_reply_to").is_none() {
                return Err(format!("reply without in_reply_to: {line}"));
            }
            replies.push(v);
        }
        if batch.iter().any(|l| too_deep(l.as_ref())) {
            for l in batch {
                expect(l.as_ref(), &mut self.id);
            }
            return Ok(());
        }
        let mut next = replies.iter();
        for line in batch {
            let line = line.as_ref();
            if let Expect::One(src, msg_id) = expect(line, &mut self.id) {
                let shown = String::from_utf8_lossy(line);
                let reply = next.next().ok_or_else(|| format!("no reply to {shown}"))?;
                let want = (
                    &Value::String(src),
                    &msg_id,
                    &Value::String(self.id.clone()),
                );
                let got = (&reply["dest"], &reply["body"]["in_reply_to"], &reply["src"]);
                if got != want {
                    return Err(format!(
                        "reply {reply} to {shown}: want (dest, in_reply_to, src) {want:?}"
                    ));
                }
            }
        }
        let extra: Vec<&Value> = next.collect();
        if !extra.is_empty() {
            return Err(format!("replies nobody asked for: {extra:?}"));
        }
        Ok(())
    }
}
