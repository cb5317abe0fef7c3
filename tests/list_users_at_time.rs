//! `ListUsersAtTime` against a replay of the log: random histories of many users (enough for the
//! temporal read model's blocks to split again and again), created in an order unrelated to
//! their ids, with creates, renames, email changes, updates and deletes at random times (equal
//! ones included). For random times and pages, and page by page through `next`, every answer
//! (one user's history long enough to be filed in parts) equals the test kit's model (a replay of the events up to that time), in memory and on
//! SQLite; after `projection::rebuild`, and on SQLite after a reopen, the answers are the same
//! and `projection::verify` finds nothing.

use cqrs_node::node::Config;
use cqrs_node::projection;
use cqrs_node::stdio::Lines;
use cqrs_node::store::{EventStore, MemoryStore, SqliteStore};
use cqrs_node::testkit::model::{self as kit};
use proptest::prelude::*;
use serde_json::{json, Value};

fn envelope(body: Value) -> String {
    json!({"src": "client", "dest": "cqrs", "body": body}).to_string()
}

/// 2024-01-01T00:00:00Z plus `ms` milliseconds.
fn at(ms: i64) -> String {
    kit::rfc3339(1_704_067_200_000_000_000 + i128::from(ms) * 1_000_000)
}

#[derive(Clone, Debug)]
struct Op {
    /// Which user (an index into the case's ids).
    user: usize,
    /// 0: rename, 1: email, 2: update, 3: delete (a create when the user does not exist yet).
    kind: u8,
    /// Milliseconds after the previous command (0: the same instant).
    dt: i64,
}

#[derive(Clone, Debug)]
struct Case {
    ids: Vec<String>,
    ops: Vec<Op>,
    /// (time in ms after the start, limit, after: an index into ids or none).
    queries: Vec<(i64, u64, Option<usize>)>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..260).prop_flat_map(|users| {
        let ids = prop::collection::btree_set(0u32..100_000, users)
            .prop_map(|s| s.into_iter().map(|n| format!("u{n}")).collect::<Vec<_>>())
            .prop_shuffle();
        let op = (
            0..users,
            0u8..4,
            prop_oneof![1 => Just(0i64), 3 => 1i64..50],
        );
        let ops = prop::collection::vec(
            op.prop_map(|(user, kind, dt)| Op { user, kind, dt }),
            users..users * 5,
        );
        let queries = prop::collection::vec(
            (-5i64..20_000, 1u64..120, prop::option::of(0..users)),
            1..12,
        );
        (ids, ops, queries).prop_map(|(ids, ops, queries)| Case { ids, ops, queries })
    })
}

struct Run<S: EventStore + Send + 'static> {
    node: Lines<S>,
    model: kit::Model,
    msg_id: u64,
}

impl<S: EventStore + Send + 'static> Run<S> {
    fn new(store: S) -> Self {
        Self {
            node: Lines::open(store, "cqrs", &Config::default()).unwrap(),
            model: kit::Model::default(),
            msg_id: 0,
        }
    }

    /// Sends the lines; checks every reply against the model; returns the replies.
    fn send(&mut self, bodies: Vec<Value>) -> Vec<String> {
        let mut lines = Vec::new();
        let mut expected = Vec::new();
        for mut body in bodies {
            self.msg_id += 1;
            body["msg_id"] = json!(self.msg_id);
            let line = envelope(body);
            expected.extend(self.model.expect(&line).unwrap());
            lines.push(line);
        }
        let mut out = Vec::new();
        self.node.handle_lines(&lines, &mut out).unwrap();
        let replies: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(replies.len(), expected.len());
        for (got, want) in replies.iter().zip(&expected) {
            if let Err(e) = want.check(got) {
                panic!("reply differs from the model: {e}");
            }
        }
        replies
    }

    fn history(&mut self, case: &Case) -> i64 {
        let mut created = vec![false; case.ids.len()];
        let mut now = 0;
        let mut bodies = Vec::new();
        for (n, op) in case.ops.iter().enumerate() {
            now += op.dt;
            let id = &case.ids[op.user];
            let (kind, payload) = if !created[op.user] {
                created[op.user] = true;
                ("CreateUser", json!({"id": id, "name": format!("N{n}")}))
            } else {
                match op.kind {
                    0 => ("RenameUser", json!({"id": id, "name": format!("R{n}")})),
                    1 => (
                        "ChangeUserEmail",
                        json!({"id": id, "email": format!("e{n}@x")}),
                    ),
                    2 => ("UpdateUser", json!({"id": id, "k": n})),
                    // The long history is never cut short.
                    _ if op.user == 0 => ("UpdateUser", json!({"id": id, "k": n})),
                    _ => ("DeleteUser", json!({"id": id})),
                }
            };
            bodies.push(json!({"type": "command", "command":
                {"type": kind, "timestamp": at(now), "payload": payload}}));
            // Batches of different sizes, so that group commit mixes commands.
            if n % 37 == 36 {
                self.send(std::mem::take(&mut bodies));
            }
        }
        self.send(bodies);
        now
    }

    /// The case's queries, each time around the events, and every page through `next` at a
    /// few times; all checked against the model. Returns the replies.
    fn queries(&mut self, case: &Case, end: i64) -> Vec<String> {
        let list = |t: i64, limit: u64, after: Option<&str>| {
            let mut params = json!({"timestamp": at(t), "limit": limit});
            if let Some(a) = after {
                params["after"] = json!(a);
            }
            json!({"type": "query", "query": {"type": "ListUsersAtTime", "params": params}})
        };
        let mut bodies = Vec::new();
        for &(t, limit, after) in &case.queries {
            let after = after.map(|i| case.ids[i].as_str());
            bodies.push(list(t * end.max(1) / 20_000, limit, after));
            bodies.push(list(t, limit, after));
        }
        let mut replies = self.send(bodies);
        // Page by page: every user exactly once, in id order, at a few times.
        for t in [0, end / 3, end / 2, end, end + 1] {
            let mut after: Option<String> = None;
            let mut seen = 0;
            loop {
                let reply = self.send(vec![list(t, 7, after.as_deref())]);
                let v: Value = serde_json::from_str(&reply[0]).unwrap();
                let data = &v["body"]["data"];
                seen += data["users"].as_array().unwrap().len();
                replies.extend(reply);
                match data["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
            let whole = self.send(vec![list(t, 1000, None)]);
            let v: Value = serde_json::from_str(&whole[0]).unwrap();
            assert_eq!(v["body"]["data"]["users"].as_array().unwrap().len(), seen);
        }
        replies
    }

    fn verify(&self) {
        let problems = projection::verify(
            &cqrs_node::registry().read_view(self.node.store()),
            &cqrs_node::registry().projections(),
        )
        .unwrap();
        assert!(problems.is_empty(), "verify: {problems:#?}");
    }

    fn rebuild(&mut self) {
        projection::rebuild(
            &mut cqrs_node::registry().view(self.node.store_mut()),
            &cqrs_node::registry().projections(),
        )
        .unwrap();
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    #[test]
    fn in_memory_it_equals_a_replay_and_after_a_rebuild(case in case()) {
        let mut run = Run::new(MemoryStore::new());
        let end = run.history(&case);
        let first = run.queries(&case, end);
        run.verify();
        run.rebuild();
        run.verify();
        let again = run.queries(&case, end);
        prop_assert_eq!(strip(&first), strip(&again));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(8)))]

    #[test]
    fn on_sqlite_it_equals_a_replay_after_a_rebuild_and_a_reopen(case in case()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cqrs.db");
        let mut run = Run::new(SqliteStore::open(&path).unwrap());
        let end = run.history(&case);
        let first = run.queries(&case, end);
        run.verify();
        let Run { node, model, msg_id } = run;
        drop(node);
        let mut run = Run { node: Lines::open(SqliteStore::open(&path).unwrap(), "cqrs", &Config::default()).unwrap(), model, msg_id };
        let reopened = run.queries(&case, end);
        prop_assert_eq!(strip(&first), strip(&reopened));
        run.rebuild();
        run.verify();
        let rebuilt = run.queries(&case, end);
        prop_assert_eq!(strip(&first), strip(&rebuilt));
    }
}

/// The replies without their `in_reply_to` (the message ids differ from run to run).
fn strip(replies: &[String]) -> Vec<Value> {
    replies
        .iter()
        .map(|r| {
            let mut v: Value = serde_json::from_str(r).unwrap();
            v["body"].as_object_mut().unwrap().remove("in_reply_to");
            v
        })
        .collect()
}
