//! Arbitrary bytes, split at newlines, as a batch of input lines to an in-memory node.
//!
//! Checks: no panic; every reply is a JSON envelope `{"src","dest","body"}` whose body has a
//! `type` and an `in_reply_to`; and, unless a line is nested deeper than the parser goes, every
//! line that is JSON with a string `src`, an object `body` and a non-null `msg_id` gets exactly
//! one reply, in order, with that `dest` and `in_reply_to`, and no other line gets one.
//!
//! The first byte picks how the lines are cut into batches (one `handle_lines` call each).

#![no_main]

use cqrs_node::node::{Config, Node};
use cqrs_node::store::MemoryStore;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The `(dest, in_reply_to)` a line must get, if any, judged without the node's parser.
fn expected(line: &[u8]) -> Option<(Value, Value)> {
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    match (envelope.get("src"), envelope.get("body")) {
        (Some(src @ Value::String(_)), Some(Value::Object(body))) => match body.get("msg_id") {
            None | Some(Value::Null) => None,
            // As echoed: printed, then read back (serde_json's float parsing is not always
            // exact, so a float can move by a unit in the last place on the way).
            Some(id) => Some((src.clone(), serde_json::from_str(&id.to_string()).unwrap())),
        },
        _ => None,
    }
}

fn too_deep(line: &[u8]) -> bool {
    line.iter().filter(|&&b| b == b'[' || b == b'{').count() > 127
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let per_batch = 1 + (mode as usize % 8);
    let mut node = Node::open(
        MemoryStore::new(),
        "n1",
        &Config {
            cache_size: 2,
            snapshot_every: 2,
        },
    )
    .unwrap();
    for batch in lines.chunks(if mode >= 128 { usize::MAX } else { per_batch }) {
        let mut out = Vec::new();
        node.handle_lines(batch, &mut out).unwrap();
        let replies: Vec<Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Value = serde_json::from_slice(l).expect("a reply is JSON");
                let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
                assert_eq!(keys, ["src", "dest", "body"]);
                assert!(v["body"]["type"].is_string());
                assert!(v["body"].get("in_reply_to").is_some());
                v
            })
            .collect();
        if batch.iter().any(|l| too_deep(l)) {
            continue;
        }
        let want: Vec<(Value, Value)> = batch.iter().filter_map(|l| expected(l)).collect();
        assert_eq!(replies.len(), want.len(), "one reply per answerable line");
        for (reply, (dest, id)) in replies.iter().zip(&want) {
            assert_eq!(&reply["dest"], dest);
            assert_eq!(&reply["body"]["in_reply_to"], id);
        }
    }
});
