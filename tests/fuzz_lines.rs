//! Random and mutated input lines through an in-memory node (the proptest side of the fuzz
//! target in `fuzz/`): no panic, every reply well-formed, and every line that is JSON, carries a
//! string `src`, an object `body` and a non-null `msg_id` gets exactly one reply, in order, to
//! that `src`, with that `in_reply_to`; other lines get none.

mod check_lines;

use check_lines::Checker;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Runs `batches` through a fresh node and checks every reply (tests/check_lines).
fn check(batches: &[Vec<Vec<u8>>]) -> Result<(), TestCaseError> {
    let mut checker = Checker::new();
    for batch in batches {
        checker.batch(batch).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z@. ]{0,8}".prop_map(Value::from),
        Just(json!("")),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!("2024-01-15T09:00:00Z")),
        Just(json!("not-a-time")),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::vec(("[a-zA-Z_]{1,8}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request the node understands, or nearly: every message kind, command and query type.
fn request() -> impl Strategy<Value = Value> {
    let user = prop_oneof![Just("u1"), Just("u2"), Just("u3"), Just("")];
    let command = (
        prop_oneof![
            Just("CreateUser"),
            Just("UpdateUser"),
            Just("RenameUser"),
            Just("ChangeUserEmail"),
            Just("DeleteUser"),
            Just("FrobUser"),
        ],
        user.clone(),
        prop::option::of("[a-z ]{0,6}"),
        prop::option::of(prop_oneof![Just("a@b"), Just("bad"), Just("x@y.z")]),
        prop::option::of(0u64..4),
        prop::option::of(prop_oneof![
            Just("2024-01-01T00:00:00Z"),
            Just("2030-01-01T00:00:00Z"),
            Just("1999-12-31T23:59:59.5+01:00"),
            Just("yesterday"),
        ]),
    )
        .prop_map(|(kind, id, name, email, version, time)| {
            let mut payload = json!({"id": id});
            if let Some(n) = name {
                payload["name"] = json!(n);
            }
            if let Some(e) = email {
                payload["email"] = json!(e);
            }
            let mut c = json!({"type": kind, "payload": payload});
            if let Some(v) = version {
                c["expectedVersion"] = json!(v);
            }
            if let Some(t) = time {
                c["timestamp"] = json!(t);
            }
            json!({"type": "command", "command": c})
        });
    let query = (
        prop_oneof![
            Just("GetUser"),
            Just("GetUserAtTime"),
            Just("GetUserAtVersion"),
            Just("GetUserHistory"),
            Just("ListUsers"),
            Just("Nope"),
        ],
        user,
        prop::option::of(any_json()),
    )
        .prop_map(|(kind, id, extra)| {
            let mut params = json!({"userId": id, "timestamp": "2025-01-01T00:00:00Z",
                                    "version": 1, "limit": 2});
            if let Some(x) = extra {
                params["after"] = x;
            }
            json!({"type": "query", "query": {"type": kind, "params": params}})
        });
    let other = prop_oneof![
        Just(json!({"type": "init", "node_id": "n2", "node_ids": ["n2"]})),
        Just(json!({"type": "init", "node_id": ""})),
        Just(json!({"type": "echo", "echo": 1})),
        Just(json!({})),
    ];
    (
        prop_oneof![4 => command, 3 => query, 1 => other],
        prop::option::weighted(0.9, json_leaf()),
        prop_oneof![Just("c1"), Just("c2")],
        prop::option::weighted(0.95, Just("n1")),
    )
        .prop_map(|(mut body, msg_id, src, dest)| {
            if let Some(id) = msg_id {
                body["msg_id"] = id;
            }
            let mut envelope = json!({"src": src, "body": body});
            if let Some(d) = dest {
                envelope["dest"] = json!(d);
            }
            envelope
        })
}

/// Every path into a JSON value (object keys and array indexes).
fn paths(v: &Value, at: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                at.push(json!(k));
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(json!(i));
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, step| match step {
        Value::String(k) => &mut v[k.as_str()],
        Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the value at (path index) with another.
    Replace(usize, Value),
    /// Remove the key at (path index), if it is one.
    Remove(usize),
    /// Flip a byte of the text.
    Flip(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Cut the text short.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => (any::<usize>(), prop::sample::select(b"{}[]\",:\\ 0a".to_vec()))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(request: &Value, mutations: &[Mutation]) -> Vec<u8> {
    let mut v = request.clone();
    let mut text: Option<Vec<u8>> = None;
    for m in mutations {
        match (m, &mut text) {
            (Mutation::Replace(i, x), None) => {
                let mut all = Vec::new();
                paths(&v, &mut Vec::new(), &mut all);
                let path = &all[i % all.len()];
                *at_path(&mut v, path) = x.clone();
            }
            (Mutation::Remove(i), None) => {
                let mut all = Vec::new();
                paths(&v, &mut Vec::new(), &mut all);
                let path = &all[i % all.len()];
                if let Some((Value::String(k), parent)) = path.split_last() {
                    if let Value::Object(m) = at_path(&mut v, parent) {
                        m.remove(k);
                    }
                }
            }
            (byte_level, t) => {
                let bytes = t.get_or_insert_with(|| serde_json::to_vec(&v).unwrap());
                let n = bytes.len().max(1);
                match byte_level {
                    Mutation::Flip(i, b) if !bytes.is_empty() => bytes[i % n] ^= b | 1,
                    Mutation::Insert(i, b) => bytes.insert(i % (n + 1).min(bytes.len() + 1), *b),
                    Mutation::Truncate(i) => bytes.truncate(i % n),
                    _ => {}
                }
            }
        }
    }
    text.unwrap_or_else(|| serde_json::to_vec(&v).unwrap())
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => request().prop_map(|r| serde_json::to_vec(&r).unwrap()),
        6 => (request(), prop::collection::vec(mutation(), 1..4))
            .prop_map(|(r, m)| mutate(&r, &m)),
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_answerable_line_gets_exactly_one_reply(
        batches in prop::collection::vec(prop::collection::vec(line(), 1..12), 1..4)
    ) {
        check(&batches)?;
    }
}

#[test]
fn fixed_cases() {
    let lines: Vec<&[u8]> = vec![
        br#"{"src":"a","src":"b","dest":"n1","body":{"type":"query","msg_id":1}}"#,
        br#"{"src":"c","dest":"n1","body":{"type":"init","msg_id":{"x":[1]},"node_id":"n9"}}"#,
        br#"{"src":"c","dest":"n1","body":{"type":"command","msg_id":1.5,"command":{"type":"CreateUser","payload":{"id":"a","name":"A"}}}}"#,
        br#"{"src":"c","dest":"n1","body":{"type":"command","msg_id":"s","command":[]}}"#,
        br#"{"src":"c","body":{"type":"command","msg_id":2}}"#,
        br#"["c","n1",{"type":"query","msg_id":3}]"#,
        b"\xff\xfe",
        br#"{"src":"c","dest":"n1","body":{"type":"query","msg_id":null}}"#,
        // Found by cargo fuzz: bytes that are not UTF-8 in the value of an unknown key.
        b"{\"src\":\"c1\",\"d@st\":\"n\xa0\xa0\",\"body\":{\"type\":\"query\",\"msg_id\":2}}",
        br#"{"src":"c","dest":"n1","body":{"type":"query","msg_id":9.999999999992001e+46}}"#,
    ];
    let batches: Vec<Vec<Vec<u8>>> = vec![lines.iter().map(|l| l.to_vec()).collect()];
    check(&batches).unwrap();
}

/// The cargo-fuzz seed corpus (fuzz/corpus/handle_line: valid and invalid requests, and every
/// input the fuzzer found a fault with), replayed on the stable toolchain the way the fuzz
/// target reads it: the first byte picks the batch size, the rest is lines.
#[test]
fn the_fuzz_corpus_replays_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/handle_line");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let Some((&mode, rest)) = data.split_first() else {
            continue;
        };
        let lines: Vec<Vec<u8>> = rest.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        let per_batch = if mode >= 128 {
            usize::MAX
        } else {
            1 + mode as usize % 8
        };
        let batches: Vec<Vec<Vec<u8>>> = lines.chunks(per_batch).map(<[_]>::to_vec).collect();
        check(&batches).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 40, "only {n} corpus files in {}", dir.display());
}
