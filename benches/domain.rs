//! Micro-benchmarks of the pure parts: the User aggregate's `decide` and `evolve`, building a
//! command from its payload, event (de)serialisation, and the users projection's `apply`.
//!
//! `cargo bench --bench domain`

use std::collections::HashMap;
use std::hint::black_box;
use std::ops::RangeBounds;

use cqrs_node::domain::user::{Attributes, User, UserCommand, UserEvent};
use cqrs_node::domain::{Aggregate, DomainEvent};
use cqrs_node::projection::users::UsersProjection;
use cqrs_node::projection::{Documents, Projection};
use cqrs_node::store::{Bound, Direction, RecordedEvent, StoreError, StreamId};
use cqrs_node::timestamp::Timestamp;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

fn attrs(v: serde_json::Value) -> Attributes {
    match v {
        serde_json::Value::Object(m) => m.into(),
        _ => unreachable!(),
    }
}

fn created() -> UserEvent {
    UserEvent::UserCreated {
        attributes: attrs(json!({"id": "user-42", "name": "Ada Lovelace 42.0",
                                 "email": "u42@example.com", "plan": "free"})),
    }
}

fn live_user() -> User {
    let mut u = User::default();
    u.evolve(&created());
    u
}

fn decide_evolve(c: &mut Criterion) {
    let mut g = c.benchmark_group("user");
    let absent = User::default();
    let user = live_user();
    let create = UserCommand::from_payload(
        "CreateUser",
        attrs(json!({"id": "user-42", "name": "Ada Lovelace 42.0", "email": "u42@example.com"})),
    )
    .unwrap();
    let rename = UserCommand::from_payload(
        "RenameUser",
        attrs(json!({"id": "user-42", "name": "Grace Hopper 42.1"})),
    )
    .unwrap();
    let update = UserCommand::from_payload(
        "UpdateUser",
        attrs(json!({"id": "user-42", "visits": 3, "city": "Lisbon"})),
    )
    .unwrap();
    g.bench_function("from_payload/CreateUser", |b| {
        b.iter(|| {
            let p = attrs(json!({"id": "user-42", "name": "Ada Lovelace 42.0",
                                 "email": "u42@example.com"}));
            UserCommand::from_payload("CreateUser", black_box(p)).unwrap()
        })
    });
    g.bench_function("decide/CreateUser", |b| {
        b.iter(|| black_box(&absent).decide(black_box(&create)).unwrap())
    });
    g.bench_function("decide/RenameUser", |b| {
        b.iter(|| black_box(&user).decide(black_box(&rename)).unwrap())
    });
    g.bench_function("decide/UpdateUser", |b| {
        b.iter(|| black_box(&user).decide(black_box(&update)).unwrap())
    });
    let renamed = UserEvent::UserRenamed {
        name: "Grace Hopper 42.1".into(),
    };
    g.bench_function("evolve/UserCreated", |b| {
        let e = created();
        b.iter(|| {
            let mut u = User::default();
            u.evolve(black_box(&e));
            u
        })
    });
    g.bench_function("evolve/UserRenamed", |b| {
        let mut u = live_user();
        b.iter(|| u.evolve(black_box(&renamed)))
    });
    g.bench_function("event/to_data UserCreated", |b| {
        let e = created();
        b.iter(|| black_box(&e).to_data())
    });
    g.bench_function("event/from_data UserCreated", |b| {
        let data = created().to_data();
        b.iter(|| UserEvent::from_data("UserCreated", black_box(&data)).unwrap())
    });
    g.bench_function("snapshot/to+from", |b| {
        let u = live_user();
        b.iter(|| User::from_snapshot(&black_box(&u).to_snapshot()).unwrap())
    });
    g.finish();
}

/// Documents in a plain hash map: the projection's own cost, without a store's.
#[derive(Default)]
struct MapDocs(HashMap<(String, String), String>);

impl Documents for MapDocs {
    fn get(&self, c: &str, k: &str) -> Result<Option<String>, StoreError> {
        Ok(self.0.get(&(c.to_string(), k.to_string())).cloned())
    }
    fn put(&mut self, c: &str, k: &str, v: Option<&str>) -> Result<(), StoreError> {
        let key = (c.to_string(), k.to_string());
        match v {
            Some(v) => self.0.insert(key, v.to_string()),
            None => self.0.remove(&key),
        };
        Ok(())
    }
    fn range(
        &self,
        c: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // A scan: this projection's benchmark reads no ranges.
        let mut docs: Vec<(String, String)> = self
            .0
            .iter()
            .filter(|((col, k), _)| {
                col == c && RangeBounds::<&str>::contains(&(from, to), &k.as_str())
            })
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        docs.sort();
        if direction == Direction::Descending {
            docs.reverse();
        }
        docs.truncate(limit);
        Ok(docs)
    }
    fn put_cold(&mut self, c: &str, k: &str, v: &str) -> Result<(), StoreError> {
        self.put(c, k, Some(v))
    }
}

fn recorded(e: &UserEvent, version: u64) -> RecordedEvent {
    RecordedEvent {
        stream: StreamId::new("User", "user-42"),
        version,
        position: version,
        event_type: e.event_type().to_string(),
        schema: cqrs_node::store::FIRST_SCHEMA,
        timestamp: Timestamp(1_704_067_200_000_000_000),
        data: e.to_data(),
    }
}

fn projection_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("projection");
    let p = UsersProjection;
    let create = recorded(&created(), 1);
    let rename = recorded(
        &UserEvent::UserRenamed {
            name: "Grace Hopper 42.1".into(),
        },
        2,
    );
    g.bench_function("users/apply UserCreated", |b| {
        b.iter(|| {
            let mut docs = MapDocs::default();
            p.apply(&mut docs, black_box(&create)).unwrap();
            docs
        })
    });
    g.bench_function("users/apply UserRenamed", |b| {
        let mut docs = MapDocs::default();
        p.apply(&mut docs, &create).unwrap();
        b.iter(|| p.apply(&mut docs, black_box(&rename)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, decide_evolve, projection_apply);
criterion_main!(benches);
