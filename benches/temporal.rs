//! Temporal replay on one 10,000-event stream: `Repository::<User>::load_at` up to a time (what
//! GetUserAtTime does) and to the end (a cold aggregate load), with a snapshot every 100 events
//! and without snapshots, on SQLite and in memory.
//!
//! `cargo bench --bench temporal`

use std::hint::black_box;

use cqrs_node::domain::user::{User, UserEvent};
use cqrs_node::domain::{Aggregate, DomainEvent};
use cqrs_node::engine::Repository;
use cqrs_node::store::{
    EventStore, ExpectedVersion, MemoryStore, NewEvent, Snapshot, SqliteStore, StoreRead,
    StoreWrite, Upto,
};
use cqrs_node::timestamp::Timestamp;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;

const EVENTS: u64 = 10_000;
const T0: i64 = 1_704_067_200_000_000_000;
const ID: &str = "user-1";

/// The time of event `v` (1-based): one second apart.
fn time(v: u64) -> Timestamp {
    Timestamp(T0 + v as i64 * 1_000_000_000)
}

/// Writes one user's 10,000 events, with a snapshot every `every` events (0: none).
fn fill<S: EventStore>(store: &mut S, every: u64) {
    let stream = Repository::<User>::stream(ID);
    let mut state = User::default();
    let mut tx = store.begin().unwrap();
    for v in 1..=EVENTS {
        let e = match v {
            1 => UserEvent::UserCreated {
                attributes: match json!({"id": ID, "name": "Ada", "email": "a@example.com"}) {
                    serde_json::Value::Object(m) => m.into(),
                    _ => unreachable!(),
                },
            },
            _ if v % 2 == 0 => UserEvent::UserRenamed {
                name: format!("Ada {v}"),
            },
            _ => UserEvent::UserEmailChanged {
                email: format!("a{v}@example.com"),
            },
        };
        let new = NewEvent {
            event_type: e.event_type().to_string(),
            schema: cqrs_node::store::FIRST_SCHEMA,
            timestamp: time(v),
            data: e.to_data(),
        };
        tx.append(&stream, ExpectedVersion::Exact(v - 1), vec![new])
            .unwrap();
        state.evolve(&e);
        if every > 0 && v % every == 0 {
            let snap = Snapshot {
                version: v,
                timestamp: time(v),
                state: state.to_snapshot(),
            };
            tx.put_snapshot(&stream, &snap).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn load(store: &impl StoreRead, upto: Upto) -> u64 {
    let l = Repository::<User>::load_at(store, ID, upto).unwrap();
    black_box(l.state.visible().map(|a| a.len()));
    l.version
}

fn temporal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("replay 10k");
    g.sample_size(20);
    // Just before the last snapshot boundary: the worst case with snapshots (99 events after
    // the snapshot), close to the whole stream without.
    let late = Upto::Time(time(EVENTS - 1));
    let middle = Upto::Time(time(EVENTS / 2 + 50));
    for (label, every) in [("snapshots every 100", 100), ("no snapshots", 0)] {
        let mut sqlite = SqliteStore::open(dir.path().join(format!("s{every}.db"))).unwrap();
        fill(&mut sqlite, every);
        let mut memory = MemoryStore::new();
        fill(&mut memory, every);
        for (at, upto) in [
            ("at time, late", late),
            ("at time, middle", middle),
            ("to end", Upto::End),
        ] {
            g.bench_function(BenchmarkId::new(format!("sqlite, {label}"), at), |b| {
                b.iter(|| load(&sqlite, upto))
            });
            g.bench_function(BenchmarkId::new(format!("memory, {label}"), at), |b| {
                b.iter(|| load(&memory, upto))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, temporal);
criterion_main!(benches);
