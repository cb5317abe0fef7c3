//! SQLite append by batch size: one transaction (one commit, one fsync: `synchronous=FULL`) of
//! 1, 10, 100 or 1000 events, each event the creation of a new stream (as a batch of CreateUser
//! commands appends them). The store file is in the system's temp directory. The in-memory store
//! runs the same batches for comparison.
//!
//! `cargo bench --bench store`

use std::hint::black_box;
use std::time::Duration;

use cqrs_node::store::{
    EventStore, ExpectedVersion, MemoryStore, NewEvent, SqliteStore, StoreWrite, StreamId,
};
use cqrs_node::timestamp::Timestamp;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn event(i: u64) -> NewEvent {
    NewEvent {
        event_type: "UserCreated".into(),
        schema: cqrs_node::store::FIRST_SCHEMA,
        timestamp: Timestamp(1_704_067_200_000_000_000 + i as i64),
        data: format!(
            r#"{{"id":"user-{i}","name":"Ada Lovelace {i}.0","email":"u{i}@example.com"}}"#
        ),
    }
}

/// One transaction of `batch` appends to new streams, committed.
fn append_batch<S: EventStore>(store: &mut S, next: &mut u64, batch: u64) {
    let mut tx = store.begin().unwrap();
    for _ in 0..batch {
        let i = *next;
        *next += 1;
        let stream = StreamId::new("User", format!("user-{i}"));
        black_box(
            tx.append(&stream, ExpectedVersion::Exact(0), vec![event(i)])
                .unwrap(),
        );
    }
    tx.commit().unwrap();
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("append");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    for batch in [1u64, 10, 100, 1000] {
        g.throughput(Throughput::Elements(batch));
        let mut sqlite = SqliteStore::open(dir.path().join(format!("b{batch}.db"))).unwrap();
        let mut next = 0;
        g.bench_with_input(BenchmarkId::new("sqlite", batch), &batch, |b, &n| {
            b.iter(|| append_batch(&mut sqlite, &mut next, n))
        });
        let mut memory = MemoryStore::new();
        let mut next = 0;
        g.bench_with_input(BenchmarkId::new("memory", batch), &batch, |b, &n| {
            b.iter(|| append_batch(&mut memory, &mut next, n))
        });
    }
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
