//! The event-store test suite, written once as generic functions over [`EventStore`], for any
//! backend in any crate. [`store_suite!`](crate::store_suite) runs all of it against one store
//! factory, one `#[test]` per case:
//!
//! ```text
//! cqrs_node::store_suite!(memory_store, || (cqrs_node::store::MemoryStore::new(), ()));
//! ```
//!
//! The factory returns a fresh, empty store and a guard kept alive for the test (a temporary
//! directory, a database schema to drop: anything the store needs). `tests/store_suite.rs` runs
//! it against [`MemoryStore`](super::MemoryStore) and [`SqliteStore`](super::SqliteStore) (with
//! three cache sizes); a PostgreSQL store runs it with one more line.
//!
//! These are test helpers: they panic on failure, with a message.

#![allow(clippy::missing_panics_doc)]

use super::{
    EventStore, ExpectedVersion, NewEvent, RecordedEvent, Schema, Snapshot, StoreError, StoreRead,
    StoreWrite, StreamId, Upto, FIRST_SCHEMA,
};
use crate::timestamp::Timestamp;

// ---------------------------------------------------------------------------------------------
// Helpers

pub fn stream(id: &str) -> StreamId {
    StreamId::new("User", id)
}

/// An event of type `kind` at time `t` (nanoseconds) with a small distinguishing payload.
pub fn ev(kind: &str, t: i64, n: u32) -> NewEvent {
    NewEvent {
        event_type: kind.to_string(),
        schema: FIRST_SCHEMA,
        timestamp: Timestamp(t),
        data: format!(r#"{{"n":{n}}}"#),
    }
}

pub fn snap(version: u64, t: i64, state: &str) -> Snapshot {
    Snapshot {
        version,
        timestamp: Timestamp(t),
        state: state.to_string(),
    }
}

/// Appends and commits, panicking on failure.
pub fn append_commit<S: EventStore>(
    store: &mut S,
    s: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Vec<RecordedEvent> {
    let mut tx = store.begin().unwrap();
    let recorded = tx.append(s, expected, events).unwrap();
    tx.commit().unwrap();
    recorded
}

pub fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

pub fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

pub fn ns(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.data.clone()).collect()
}

pub fn data(n: u32) -> String {
    format!(r#"{{"n":{n}}}"#)
}

/// The whole log, read back in one go.
pub fn log(store: &impl StoreRead) -> Vec<RecordedEvent> {
    store.read_all(0, usize::MAX).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Appends, versions, positions

pub fn empty_store_reads_nothing<S: EventStore>(store: &mut S) {
    assert_eq!(store.head().unwrap(), 0);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 0);
    assert!(store
        .read_stream(&stream("a"), 0, Upto::End)
        .unwrap()
        .is_empty());
    assert!(log(store).is_empty());
    assert_eq!(store.snapshot(&stream("a"), Upto::End).unwrap(), None);
    assert_eq!(store.document("users", "a").unwrap(), None);
    assert!(store.documents("users", None, 10).unwrap().is_empty());
    assert_eq!(store.checkpoint("users").unwrap(), 0);
}

pub fn append_to_new_stream<S: EventStore>(store: &mut S) {
    let events = [ev("UserCreated", 10, 1), ev("UserRenamed", 20, 2)];
    let recorded = append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Exact(0),
        events.to_vec(),
    );
    assert_eq!(
        recorded,
        vec![
            RecordedEvent {
                stream: stream("a"),
                version: 1,
                position: 1,
                event_type: "UserCreated".into(),
                schema: FIRST_SCHEMA,
                timestamp: Timestamp(10),
                data: data(1),
            },
            RecordedEvent {
                stream: stream("a"),
                version: 2,
                position: 2,
                event_type: "UserRenamed".into(),
                schema: FIRST_SCHEMA,
                timestamp: Timestamp(20),
                data: data(2),
            },
        ]
    );
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 2);
    assert_eq!(store.head().unwrap(), 2);
    // What is read back is exactly what the append returned.
    assert_eq!(
        store.read_stream(&stream("a"), 0, Upto::End).unwrap(),
        recorded
    );
    assert_eq!(log(store), recorded);
}

pub fn append_to_existing_stream<S: EventStore>(store: &mut S) {
    append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Exact(0),
        vec![ev("E", 1, 1)],
    );
    let second = append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Exact(1),
        vec![ev("E", 2, 2), ev("E", 3, 3)],
    );
    assert_eq!(versions(&second), [2, 3]);
    assert_eq!(positions(&second), [2, 3]);
    let all = store.read_stream(&stream("a"), 0, Upto::End).unwrap();
    assert_eq!(versions(&all), [1, 2, 3]);
    assert_eq!(ns(&all), [data(1), data(2), data(3)]);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 3);
}

pub fn positions_are_global_and_gap_free<S: EventStore>(store: &mut S) {
    // Interleave three streams, some appends in one transaction, some in several.
    append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Any,
        vec![ev("E", 1, 1)],
    );
    {
        let mut tx = store.begin().unwrap();
        let b = tx
            .append(&stream("b"), ExpectedVersion::Any, vec![ev("E", 2, 2)])
            .unwrap();
        let a = tx
            .append(
                &stream("a"),
                ExpectedVersion::Exact(1),
                vec![ev("E", 3, 3), ev("E", 4, 4)],
            )
            .unwrap();
        let c = tx
            .append(&stream("c"), ExpectedVersion::Exact(0), vec![ev("E", 5, 5)])
            .unwrap();
        assert_eq!(positions(&b), [2]);
        assert_eq!(positions(&a), [3, 4]);
        assert_eq!(versions(&a), [2, 3]);
        assert_eq!(positions(&c), [5]);
        assert_eq!(tx.head().unwrap(), 5);
        tx.commit().unwrap();
    }
    let b = append_commit(
        store,
        &stream("b"),
        ExpectedVersion::Exact(1),
        vec![ev("E", 6, 6)],
    );
    assert_eq!(positions(&b), [6]);
    assert_eq!(versions(&b), [2]);

    let all = log(store);
    assert_eq!(positions(&all), [1, 2, 3, 4, 5, 6]);
    let streams: Vec<&str> = all.iter().map(|e| e.stream.id.as_str()).collect();
    assert_eq!(streams, ["a", "b", "a", "a", "c", "b"]);
    assert_eq!(versions(&all), [1, 1, 2, 3, 1, 2]);
    assert_eq!(store.head().unwrap(), 6);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 3);
    assert_eq!(store.stream_version(&stream("b")).unwrap(), 2);
    assert_eq!(store.stream_version(&stream("c")).unwrap(), 1);
}

pub fn categories_are_separate_streams<S: EventStore>(store: &mut S) {
    let user = StreamId::new("User", "x");
    let order = StreamId::new("Order", "x");
    append_commit(store, &user, ExpectedVersion::Exact(0), vec![ev("E", 1, 1)]);
    let o = append_commit(
        store,
        &order,
        ExpectedVersion::Exact(0),
        vec![ev("E", 2, 2)],
    );
    assert_eq!(versions(&o), [1]);
    assert_eq!(o[0].stream, order);
    assert_eq!(store.stream_version(&user).unwrap(), 1);
    assert_eq!(store.stream_version(&order).unwrap(), 1);
    assert_eq!(
        ns(&store.read_stream(&order, 0, Upto::End).unwrap()),
        [data(2)]
    );
}

pub fn unusual_ids_and_data_round_trip<S: EventStore>(store: &mut S) {
    let odd = StreamId::new(
        "Cat égorie",
        "id with 'quotes', \"double\", %, _, \u{1F600}, \0 nul",
    );
    let e = NewEvent {
        event_type: "Ünïcode".into(),
        schema: Schema(u32::MAX),
        timestamp: Timestamp(-1_000_000_000_000_000_000),
        data: r#"{"text":"line\nbreak \u0000 ☃","big":12345678901234567890}"#.into(),
    };
    let last = NewEvent {
        timestamp: Timestamp(i64::MAX),
        ..e.clone()
    };
    let first = NewEvent {
        timestamp: Timestamp(i64::MIN),
        ..e.clone()
    };
    // Times only go forwards: MIN, then negative, then MAX.
    let recorded = append_commit(
        store,
        &odd,
        ExpectedVersion::Exact(0),
        vec![first.clone(), e.clone(), last.clone()],
    );
    let back = store.read_stream(&odd, 0, Upto::End).unwrap();
    assert_eq!(back, recorded);
    assert_eq!(back[0].stream, odd);
    assert_eq!(back[0].event_type, e.event_type);
    assert_eq!(back[0].data, e.data);
    assert_eq!(back[0].timestamp, Timestamp(i64::MIN));
    assert_eq!(back[1].timestamp, e.timestamp);
    assert_eq!(back[2].timestamp, Timestamp(i64::MAX));
    // The extreme times are inside the matching bounds.
    assert_eq!(
        store
            .read_stream(&odd, 0, Upto::Time(Timestamp(i64::MIN)))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .read_stream(&odd, 0, Upto::Time(Timestamp(i64::MAX)))
            .unwrap()
            .len(),
        3
    );
    assert_eq!(store.stream_version(&odd).unwrap(), 3);
    assert_eq!(
        store
            .stream_version(&StreamId::new("Cat égorie", "id"))
            .unwrap(),
        0
    );
}

/// Each event keeps the schema it was appended with, whatever its type, on every read path:
/// the same type in several schemas, schema 0 and the largest, in one stream and across
/// streams, from the store and inside a transaction; a rolled-back append leaves nothing.
pub fn schemas_are_kept_per_event<S: EventStore>(store: &mut S) {
    let with = |kind: &str, schema: u32, n: u32| NewEvent {
        schema: Schema(schema),
        ..ev(kind, n as i64, n)
    };
    let first = vec![
        with("UserCreated", 0, 1),
        with("UserCreated", 1, 2),
        with("UserRenamed", 2, 3),
        with("UserCreated", 2, 4),
    ];
    let mut tx = store.begin().unwrap();
    let a = tx
        .append(&stream("a"), ExpectedVersion::Exact(0), first.clone())
        .unwrap();
    let b = tx
        .append(
            &stream("b"),
            ExpectedVersion::Exact(0),
            vec![with("UserCreated", u32::MAX, 5), with("UserCreated", 7, 6)],
        )
        .unwrap();
    let schemas = |events: &[RecordedEvent]| -> Vec<(String, u32)> {
        events
            .iter()
            .map(|e| (e.event_type.clone(), e.schema.0))
            .collect()
    };
    let want_a = vec![
        ("UserCreated".to_string(), 0),
        ("UserCreated".to_string(), 1),
        ("UserRenamed".to_string(), 2),
        ("UserCreated".to_string(), 2),
    ];
    let want_b = vec![
        ("UserCreated".to_string(), u32::MAX),
        ("UserCreated".to_string(), 7),
    ];
    assert_eq!(schemas(&a), want_a);
    assert_eq!(schemas(&b), want_b);
    assert_eq!(log(&tx), [a.clone(), b.clone()].concat());
    tx.commit().unwrap();
    assert_eq!(log(store), [a.clone(), b.clone()].concat());
    assert_eq!(store.read_stream(&stream("a"), 0, Upto::End).unwrap(), a);
    assert_eq!(store.read_stream(&stream("b"), 0, Upto::End).unwrap(), b);
    let mut lent = Vec::new();
    store
        .visit_stream(&stream("a"), 1, Upto::Version(3), &mut |e| {
            lent.push((e.event_type.to_string(), e.schema.0));
            Ok(())
        })
        .unwrap();
    assert_eq!(lent, want_a[1..3]);
    // Rolled back: the schemas of the committed events are unchanged, nothing else is there.
    let mut tx = store.begin().unwrap();
    tx.append(
        &stream("a"),
        ExpectedVersion::Exact(4),
        vec![with("UserCreated", 9, 7)],
    )
    .unwrap();
    drop(tx);
    assert_eq!(log(store), [a, b].concat());
}

// ---------------------------------------------------------------------------------------------
// Optimistic concurrency

pub fn exact_version_conflict_writes_nothing<S: EventStore>(store: &mut S) {
    append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Exact(0),
        vec![ev("E", 1, 1), ev("E", 2, 2)],
    );
    let mut tx = store.begin().unwrap();
    // Behind, ahead, and "must not exist" on an existing stream.
    for expected in [0, 1, 3, 100] {
        assert_eq!(
            tx.append(
                &stream("a"),
                ExpectedVersion::Exact(expected),
                vec![ev("E", 3, 3), ev("E", 4, 4)]
            ),
            Err(StoreError::Conflict {
                expected,
                actual: 2
            })
        );
    }
    // A stream that does not exist is at version 0.
    assert_eq!(
        tx.append(
            &stream("new"),
            ExpectedVersion::Exact(1),
            vec![ev("E", 3, 3)]
        ),
        Err(StoreError::Conflict {
            expected: 1,
            actual: 0
        })
    );
    // Nothing was written, even inside the transaction.
    assert_eq!(tx.head().unwrap(), 2);
    assert_eq!(tx.stream_version(&stream("a")).unwrap(), 2);
    assert_eq!(tx.stream_version(&stream("new")).unwrap(), 0);
    assert_eq!(log(&tx).len(), 2);

    // The transaction is still usable: the right version goes through, positions stay gap-free.
    let ok = tx
        .append(&stream("a"), ExpectedVersion::Exact(2), vec![ev("E", 3, 3)])
        .unwrap();
    assert_eq!(versions(&ok), [3]);
    assert_eq!(positions(&ok), [3]);
    let new = tx
        .append(
            &stream("new"),
            ExpectedVersion::Exact(0),
            vec![ev("E", 4, 4)],
        )
        .unwrap();
    assert_eq!(positions(&new), [4]);
    // And after the conflict the old expectation is stale in turn.
    assert_eq!(
        tx.append(&stream("a"), ExpectedVersion::Exact(2), vec![ev("E", 5, 5)]),
        Err(StoreError::Conflict {
            expected: 2,
            actual: 3
        })
    );
    tx.commit().unwrap();

    let all = log(store);
    assert_eq!(positions(&all), [1, 2, 3, 4]);
    assert_eq!(ns(&all), [data(1), data(2), data(3), data(4)]);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 3);
    assert_eq!(store.stream_version(&stream("new")).unwrap(), 1);
}

pub fn empty_append_checks_version_only<S: EventStore>(store: &mut S) {
    let mut tx = store.begin().unwrap();
    // On a stream that does not exist.
    assert_eq!(
        tx.append(&stream("a"), ExpectedVersion::Exact(0), vec![]),
        Ok(vec![])
    );
    assert_eq!(
        tx.append(&stream("a"), ExpectedVersion::Exact(1), vec![]),
        Err(StoreError::Conflict {
            expected: 1,
            actual: 0
        })
    );
    assert_eq!(
        tx.append(&stream("a"), ExpectedVersion::Any, vec![]),
        Ok(vec![])
    );
    // It creates nothing.
    assert_eq!(tx.stream_version(&stream("a")).unwrap(), 0);
    assert_eq!(tx.head().unwrap(), 0);
    tx.append(&stream("a"), ExpectedVersion::Exact(0), vec![ev("E", 1, 1)])
        .unwrap();
    // On an existing one.
    assert_eq!(
        tx.append(&stream("a"), ExpectedVersion::Exact(1), vec![]),
        Ok(vec![])
    );
    assert_eq!(
        tx.append(&stream("a"), ExpectedVersion::Exact(0), vec![]),
        Err(StoreError::Conflict {
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(tx.head().unwrap(), 1);
    tx.commit().unwrap();
    assert_eq!(log(store).len(), 1);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 1);
}

pub fn expected_any_always_appends<S: EventStore>(store: &mut S) {
    let first = append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Any,
        vec![ev("E", 1, 1)],
    );
    assert_eq!(versions(&first), [1]);
    let second = append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Any,
        vec![ev("E", 2, 2), ev("E", 3, 3)],
    );
    assert_eq!(versions(&second), [2, 3]);
    assert_eq!(positions(&second), [2, 3]);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// Reading streams

/// Stream "a": versions 1..=5 at times 10, 20, 20, 30, 40; stream "b" interleaved.
pub fn fill_for_reads<S: EventStore>(store: &mut S) {
    let a = stream("a");
    let b = stream("b");
    append_commit(store, &a, ExpectedVersion::Exact(0), vec![ev("E", 10, 1)]);
    append_commit(store, &b, ExpectedVersion::Exact(0), vec![ev("E", 15, 100)]);
    append_commit(
        store,
        &a,
        ExpectedVersion::Exact(1),
        vec![ev("E", 20, 2), ev("E", 20, 3)],
    );
    append_commit(store, &b, ExpectedVersion::Exact(1), vec![ev("E", 25, 101)]);
    append_commit(
        store,
        &a,
        ExpectedVersion::Exact(3),
        vec![ev("E", 30, 4), ev("E", 40, 5)],
    );
}

pub fn read_stream_after_and_upto<S: EventStore>(store: &mut S) {
    fill_for_reads(store);
    let a = stream("a");
    let read = |after, upto| versions(&store.read_stream(&a, after, upto).unwrap());

    assert_eq!(read(0, Upto::End), [1, 2, 3, 4, 5]);
    assert_eq!(read(2, Upto::End), [3, 4, 5]);
    assert_eq!(read(5, Upto::End), Vec::<u64>::new());
    assert_eq!(read(99, Upto::End), Vec::<u64>::new());
    assert_eq!(read(u64::MAX, Upto::End), Vec::<u64>::new());

    assert_eq!(read(0, Upto::Version(0)), Vec::<u64>::new());
    assert_eq!(read(0, Upto::Version(1)), [1]);
    assert_eq!(read(0, Upto::Version(3)), [1, 2, 3]);
    assert_eq!(read(1, Upto::Version(3)), [2, 3]);
    assert_eq!(read(3, Upto::Version(3)), Vec::<u64>::new());
    assert_eq!(read(4, Upto::Version(3)), Vec::<u64>::new());
    assert_eq!(read(0, Upto::Version(99)), [1, 2, 3, 4, 5]);
    assert_eq!(read(0, Upto::Version(u64::MAX)), [1, 2, 3, 4, 5]);

    let at = |t| Upto::Time(Timestamp(t));
    assert_eq!(read(0, at(9)), Vec::<u64>::new());
    assert_eq!(read(0, at(i64::MIN)), Vec::<u64>::new());
    // Inclusive bound, and every event at the bound's time is inside.
    assert_eq!(read(0, at(10)), [1]);
    assert_eq!(read(0, at(19)), [1]);
    assert_eq!(read(0, at(20)), [1, 2, 3]);
    assert_eq!(read(0, at(29)), [1, 2, 3]);
    assert_eq!(read(0, at(30)), [1, 2, 3, 4]);
    assert_eq!(read(0, at(40)), [1, 2, 3, 4, 5]);
    assert_eq!(read(0, at(i64::MAX)), [1, 2, 3, 4, 5]);
    assert_eq!(read(2, at(30)), [3, 4]);
    assert_eq!(read(4, at(20)), Vec::<u64>::new());

    // Other streams are untouched by the bounds, and an unknown stream is empty.
    let b = store.read_stream(&stream("b"), 0, at(20)).unwrap();
    assert_eq!(ns(&b), [data(100)]);
    assert!(store
        .read_stream(&stream("zzz"), 0, Upto::End)
        .unwrap()
        .is_empty());
    // Everything a stream read returns carries its global position.
    let all = store.read_stream(&a, 0, Upto::End).unwrap();
    assert_eq!(positions(&all), [1, 3, 4, 6, 7]);
    assert_eq!(ns(&all), [data(1), data(2), data(3), data(4), data(5)]);
}

pub fn read_all_in_global_order<S: EventStore>(store: &mut S) {
    fill_for_reads(store);
    let all = log(store);
    assert_eq!(positions(&all), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        ns(&all),
        [
            data(1),
            data(100),
            data(2),
            data(3),
            data(101),
            data(4),
            data(5)
        ]
    );
    let page = |after, limit| positions(&store.read_all(after, limit).unwrap());
    assert_eq!(page(0, 3), [1, 2, 3]);
    assert_eq!(page(3, 3), [4, 5, 6]);
    assert_eq!(page(6, 3), [7]);
    assert_eq!(page(7, 3), Vec::<u64>::new());
    assert_eq!(page(100, 3), Vec::<u64>::new());
    assert_eq!(page(u64::MAX, 3), Vec::<u64>::new());
    assert_eq!(page(0, 0), Vec::<u64>::new());
    assert_eq!(page(2, 1), [3]);
    assert_eq!(page(5, usize::MAX), [6, 7]);
    // Paging through the log one event at a time gives the whole log.
    let mut at = 0;
    let mut paged = Vec::new();
    loop {
        let chunk = store.read_all(at, 2).unwrap();
        let Some(last) = chunk.last() else { break };
        at = last.position;
        paged.extend(chunk);
    }
    assert_eq!(paged, all);
}

pub fn head_follows_the_log<S: EventStore>(store: &mut S) {
    assert_eq!(store.head().unwrap(), 0);
    fill_for_reads(store);
    assert_eq!(store.head().unwrap(), 7);
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.head().unwrap(), 7);
    tx.append(&stream("c"), ExpectedVersion::Any, vec![ev("E", 1, 1)])
        .unwrap();
    assert_eq!(tx.head().unwrap(), 8);
    tx.commit().unwrap();
    assert_eq!(store.head().unwrap(), 8);
}

// ---------------------------------------------------------------------------------------------
// Snapshots

pub fn snapshots_newest_inside_upto<S: EventStore>(store: &mut S) {
    let a = stream("a");
    let b = stream("b");
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.snapshot(&a, Upto::End).unwrap(), None);
    tx.put_snapshot(&a, &snap(2, 20, "two")).unwrap();
    tx.put_snapshot(&a, &snap(4, 40, "four")).unwrap();
    tx.put_snapshot(&a, &snap(3, 30, "three")).unwrap();
    tx.put_snapshot(&b, &snap(1, 5, "b-one")).unwrap();
    // A transaction sees its own snapshots.
    assert_eq!(
        tx.snapshot(&a, Upto::End).unwrap(),
        Some(snap(4, 40, "four"))
    );
    tx.commit().unwrap();

    let get = |upto| store.snapshot(&a, upto).unwrap();
    assert_eq!(get(Upto::End), Some(snap(4, 40, "four")));
    assert_eq!(get(Upto::Version(u64::MAX)), Some(snap(4, 40, "four")));
    assert_eq!(get(Upto::Version(4)), Some(snap(4, 40, "four")));
    assert_eq!(get(Upto::Version(3)), Some(snap(3, 30, "three")));
    assert_eq!(get(Upto::Version(2)), Some(snap(2, 20, "two")));
    assert_eq!(get(Upto::Version(1)), None);
    assert_eq!(get(Upto::Version(0)), None);
    let at = |t| Upto::Time(Timestamp(t));
    assert_eq!(get(at(i64::MAX)), Some(snap(4, 40, "four")));
    assert_eq!(get(at(40)), Some(snap(4, 40, "four")));
    assert_eq!(get(at(39)), Some(snap(3, 30, "three")));
    assert_eq!(get(at(30)), Some(snap(3, 30, "three")));
    assert_eq!(get(at(20)), Some(snap(2, 20, "two")));
    assert_eq!(get(at(19)), None);
    assert_eq!(
        store.snapshot(&b, Upto::End).unwrap(),
        Some(snap(1, 5, "b-one"))
    );
    assert_eq!(store.snapshot(&stream("c"), Upto::End).unwrap(), None);

    // Replacing the snapshot at one version.
    let mut tx = store.begin().unwrap();
    tx.put_snapshot(&a, &snap(3, 30, "three again")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        store.snapshot(&a, Upto::Version(3)).unwrap(),
        Some(snap(3, 30, "three again"))
    );
    assert_eq!(
        store.snapshot(&a, Upto::End).unwrap(),
        Some(snap(4, 40, "four"))
    );

    // Clearing them all, every stream.
    let mut tx = store.begin().unwrap();
    tx.clear_snapshots().unwrap();
    assert_eq!(tx.snapshot(&a, Upto::End).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(store.snapshot(&a, Upto::End).unwrap(), None);
    assert_eq!(store.snapshot(&b, Upto::End).unwrap(), None);
    // And new ones can be written after a clear.
    let mut tx = store.begin().unwrap();
    tx.put_snapshot(&a, &snap(5, 50, "five")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        store.snapshot(&a, Upto::End).unwrap(),
        Some(snap(5, 50, "five"))
    );
}

// ---------------------------------------------------------------------------------------------
// Documents and checkpoints

pub fn documents_put_overwrite_delete<S: EventStore>(store: &mut S) {
    let mut tx = store.begin().unwrap();
    tx.put_document("users", "a", Some(r#"{"v":1}"#)).unwrap();
    tx.put_document("other", "a", Some("other-a")).unwrap();
    assert_eq!(
        tx.document("users", "a").unwrap().as_deref(),
        Some(r#"{"v":1}"#)
    );
    tx.put_document("users", "a", Some(r#"{"v":2}"#)).unwrap();
    tx.put_document("users", "b", Some("b")).unwrap();
    tx.commit().unwrap();

    assert_eq!(
        store.document("users", "a").unwrap().as_deref(),
        Some(r#"{"v":2}"#)
    );
    assert_eq!(
        store.document("other", "a").unwrap().as_deref(),
        Some("other-a")
    );
    assert_eq!(store.document("users", "c").unwrap(), None);
    assert_eq!(store.document("nope", "a").unwrap(), None);

    let mut tx = store.begin().unwrap();
    tx.put_document("users", "a", None).unwrap();
    // Deleting what is not there is fine.
    tx.put_document("users", "zzz", None).unwrap();
    tx.put_document("nope", "zzz", None).unwrap();
    tx.commit().unwrap();
    assert_eq!(store.document("users", "a").unwrap(), None);
    assert_eq!(
        store.document("other", "a").unwrap().as_deref(),
        Some("other-a")
    );
    assert_eq!(
        store.documents("users", None, 10).unwrap(),
        vec![("b".to_string(), "b".to_string())]
    );
    // A deleted key can be written again.
    let mut tx = store.begin().unwrap();
    tx.put_document("users", "a", Some("again")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        store.document("users", "a").unwrap().as_deref(),
        Some("again")
    );
}

pub fn documents_by_key_in_the_keys_order<S: EventStore>(store: &mut S) {
    let mut tx = store.begin().unwrap();
    for k in ["a", "b", "c", "d"] {
        tx.put_document("users", k, Some(&format!("doc {k}")))
            .unwrap();
    }
    tx.put_document("other", "e", Some("other e")).unwrap();
    tx.commit().unwrap();
    let docs = |r: &dyn StoreRead, keys: &[&str]| -> Vec<Option<String>> {
        r.documents_by_key("users", keys).unwrap()
    };
    let some = |v: &str| Some(v.to_string());
    assert_eq!(docs(store, &[]), Vec::<Option<String>>::new());
    assert_eq!(docs(store, &["c"]), [some("doc c")]);
    assert_eq!(
        docs(store, &["d", "e", "a", "zz", "a"]),
        [some("doc d"), None, some("doc a"), None, some("doc a")]
    );
    // Inside a transaction: its own writes and deletes over the committed documents.
    let mut tx = store.begin().unwrap();
    tx.put_document("users", "b", None).unwrap();
    tx.put_document("users", "c", Some("new c")).unwrap();
    tx.put_document("users", "e", Some("doc e")).unwrap();
    assert_eq!(
        docs(&tx, &["a", "b", "c", "e", "f"]),
        [some("doc a"), None, some("new c"), some("doc e"), None]
    );
    drop(tx);
    assert_eq!(
        docs(store, &["b", "c", "e"]),
        [some("doc b"), some("doc c"), None]
    );
}

pub fn documents_ordered_by_key_with_after_and_limit<S: EventStore>(store: &mut S) {
    // Byte order: upper case before lower case, '-' before digits, multi-byte UTF-8 last,
    // and a prefix before its extensions.
    let keys = [
        "b", "a", "B", "a-1", "a1", "é", "ab", "aa", "Z", "user-10", "user-2", "",
    ];
    let mut tx = store.begin().unwrap();
    for k in keys {
        tx.put_document("users", k, Some(&format!("doc {k}")))
            .unwrap();
    }
    tx.put_document("other", "0", Some("x")).unwrap();
    tx.commit().unwrap();

    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    let got = store.documents("users", None, usize::MAX).unwrap();
    let got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got_keys, sorted);
    assert_eq!(
        got_keys,
        ["", "B", "Z", "a", "a-1", "a1", "aa", "ab", "b", "user-10", "user-2", "é"]
    );
    for (k, v) in &got {
        assert_eq!(v, &format!("doc {k}"));
    }

    let page = |after: Option<&str>, limit| -> Vec<String> {
        store
            .documents("users", after, limit)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(page(None, 2), ["", "B"]);
    // `after` is exclusive; the empty key is a key like any other.
    assert_eq!(page(Some(""), 2), ["B", "Z"]);
    assert_eq!(page(Some("a"), 3), ["a-1", "a1", "aa"]);
    // `after` need not be a stored key.
    assert_eq!(page(Some("a0"), 2), ["a1", "aa"]);
    assert_eq!(page(Some("user-10"), 10), ["user-2", "é"]);
    assert_eq!(page(Some("é"), 10), Vec::<String>::new());
    assert_eq!(page(Some("\u{10FFFF}"), 10), Vec::<String>::new());
    assert_eq!(page(None, 0), Vec::<String>::new());
    assert_eq!(
        store.documents("other", None, 10).unwrap(),
        vec![("0".to_string(), "x".to_string())]
    );
    assert!(store.documents("none", None, 10).unwrap().is_empty());
}

/// [`StoreRead::document_range`]: every shape of bounds, both directions, limits, keys with a
/// NUL byte in them, an empty range, and what a transaction reads of its own writes (cold
/// documents included).
pub fn document_ranges_seek_both_ways<S: EventStore>(store: &mut S) {
    use crate::store::{Bound, Direction};
    use Bound::{Excluded, Included, Unbounded};
    use Direction::{Ascending, Descending};
    let keys = ["a", "a\0", "a\0\0", "a\u{1}", "ab", "b", "b\0x", "c", "é"];
    let mut tx = store.begin().unwrap();
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            tx.put_document("r", k, Some(&format!("v{i}"))).unwrap();
        } else {
            tx.put_cold_document("r", k, &format!("v{i}")).unwrap();
        }
    }
    tx.put_document("other", "b", Some("x")).unwrap();
    // A cold document rewritten, and an ordinary one rewritten as cold.
    tx.put_cold_document("r", "ab", "v4").unwrap();
    tx.put_cold_document("r", "a", "v0").unwrap();
    let read = |s: &dyn StoreRead, from: Bound<&str>, to: Bound<&str>, d, limit| -> Vec<String> {
        s.document_range("r", from, to, d, limit)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                let i = keys.iter().position(|x| *x == k).unwrap();
                assert_eq!(v, format!("v{i}"), "{k:?}");
                k
            })
            .collect()
    };
    let check = |s: &dyn StoreRead| {
        let all: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(read(s, Unbounded, Unbounded, Ascending, 100), all);
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(read(s, Unbounded, Unbounded, Descending, 100), rev);
        assert_eq!(
            read(s, Included("a\0"), Excluded("ab"), Ascending, 100),
            keys[1..4]
        );
        assert_eq!(
            read(s, Excluded("a\0"), Included("ab"), Ascending, 100),
            keys[2..5]
        );
        assert_eq!(
            read(s, Excluded("a\0"), Included("ab"), Descending, 2),
            ["ab", "a\u{1}"]
        );
        // The newest key at or below a bound: a seek.
        assert_eq!(read(s, Unbounded, Included("b\0"), Descending, 1), ["b"]);
        assert_eq!(
            read(s, Unbounded, Excluded("a"), Descending, 1),
            Vec::<String>::new()
        );
        assert_eq!(read(s, Excluded("c"), Unbounded, Ascending, 1), ["é"]);
        assert_eq!(
            read(s, Excluded("é"), Unbounded, Ascending, 1),
            Vec::<String>::new()
        );
        assert_eq!(read(s, Included("zz"), Unbounded, Ascending, 1), ["é"]);
        assert_eq!(
            read(s, Included("a"), Unbounded, Ascending, 0),
            Vec::<String>::new()
        );
        // Empty ranges, whatever their bounds.
        assert_eq!(
            read(s, Included("b"), Included("a"), Ascending, 9),
            Vec::<String>::new()
        );
        assert_eq!(
            read(s, Excluded("b"), Excluded("b"), Descending, 9),
            Vec::<String>::new()
        );
        assert_eq!(
            read(s, Included("b"), Excluded("b"), Ascending, 9),
            Vec::<String>::new()
        );
        assert_eq!(read(s, Included("b"), Included("b"), Ascending, 9), ["b"]);
        assert!(s
            .document_range("none", Unbounded, Unbounded, Ascending, 9)
            .unwrap()
            .is_empty());
        // `documents` sees the cold documents too.
        assert_eq!(s.documents("r", Some("b"), 10).unwrap().len(), 3);
        assert_eq!(s.document("r", "a\0\0").unwrap().as_deref(), Some("v2"));
    };
    check(&tx);
    tx.commit().unwrap();
    check(store);
    let mut tx = store.begin().unwrap();
    tx.put_cold_document("r", "zz", "gone").unwrap();
    tx.put_document("r", "a", None).unwrap();
    drop(tx);
    check(store);
}

pub fn clear_collection_clears_only_that_one<S: EventStore>(store: &mut S) {
    let mut tx = store.begin().unwrap();
    for k in ["a", "b", "c"] {
        tx.put_document("users", k, Some(k)).unwrap();
        tx.put_document("other", k, Some(k)).unwrap();
    }
    tx.commit().unwrap();
    let mut tx = store.begin().unwrap();
    tx.clear_collection("users").unwrap();
    tx.clear_collection("never-existed").unwrap();
    assert!(tx.documents("users", None, 10).unwrap().is_empty());
    tx.commit().unwrap();
    assert!(store.documents("users", None, 10).unwrap().is_empty());
    assert_eq!(store.document("users", "a").unwrap(), None);
    assert_eq!(store.documents("other", None, 10).unwrap().len(), 3);
    // Refill after a clear.
    let mut tx = store.begin().unwrap();
    tx.put_document("users", "x", Some("x")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        store.documents("users", None, 10).unwrap(),
        vec![("x".to_string(), "x".to_string())]
    );
}

pub fn checkpoints<S: EventStore>(store: &mut S) {
    assert_eq!(store.checkpoint("users").unwrap(), 0);
    let mut tx = store.begin().unwrap();
    tx.set_checkpoint("users", 5).unwrap();
    tx.set_checkpoint("other", 7).unwrap();
    assert_eq!(tx.checkpoint("users").unwrap(), 5);
    tx.commit().unwrap();
    assert_eq!(store.checkpoint("users").unwrap(), 5);
    assert_eq!(store.checkpoint("other").unwrap(), 7);
    assert_eq!(store.checkpoint("third").unwrap(), 0);
    let mut tx = store.begin().unwrap();
    tx.set_checkpoint("users", 9).unwrap();
    // A checkpoint can also go back (a rebuild resets it to 0).
    tx.set_checkpoint("other", 0).unwrap();
    tx.commit().unwrap();
    assert_eq!(store.checkpoint("users").unwrap(), 9);
    assert_eq!(store.checkpoint("other").unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// Writes one of everything, in a transaction.
pub fn write_everything<T: StoreWrite>(tx: &mut T, tag: u32) {
    tx.append(&stream("a"), ExpectedVersion::Any, vec![ev("E", 100, tag)])
        .unwrap();
    tx.append(&stream("t"), ExpectedVersion::Any, vec![ev("E", 100, tag)])
        .unwrap();
    tx.put_document("users", "a", Some(&format!("a{tag}")))
        .unwrap();
    tx.put_document("users", &format!("k{tag}"), Some("new"))
        .unwrap();
    tx.set_checkpoint("users", u64::from(tag)).unwrap();
    tx.put_snapshot(&stream("a"), &snap(2, 100, &format!("s{tag}")))
        .unwrap();
}

pub fn transaction_sees_its_own_writes<S: EventStore>(store: &mut S) {
    let mut tx = store.begin().unwrap();
    write_everything(&mut tx, 1);
    assert_eq!(tx.head().unwrap(), 2);
    assert_eq!(tx.stream_version(&stream("a")).unwrap(), 1);
    assert_eq!(positions(&log(&tx)), [1, 2]);
    assert_eq!(
        versions(&tx.read_stream(&stream("t"), 0, Upto::End).unwrap()),
        [1]
    );
    assert_eq!(tx.document("users", "a").unwrap().as_deref(), Some("a1"));
    assert_eq!(tx.documents("users", None, 10).unwrap().len(), 2);
    assert_eq!(tx.checkpoint("users").unwrap(), 1);
    assert_eq!(
        tx.snapshot(&stream("a"), Upto::End).unwrap(),
        Some(snap(2, 100, "s1"))
    );
    tx.commit().unwrap();
}

pub fn commit_makes_writes_visible<S: EventStore>(store: &mut S) {
    let mut tx = store.begin().unwrap();
    write_everything(&mut tx, 1);
    tx.commit().unwrap();
    assert_eq!(store.head().unwrap(), 2);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 1);
    assert_eq!(store.stream_version(&stream("t")).unwrap(), 1);
    assert_eq!(store.document("users", "a").unwrap().as_deref(), Some("a1"));
    assert_eq!(
        store.document("users", "k1").unwrap().as_deref(),
        Some("new")
    );
    assert_eq!(store.checkpoint("users").unwrap(), 1);
    assert_eq!(
        store.snapshot(&stream("a"), Upto::End).unwrap(),
        Some(snap(2, 100, "s1"))
    );
}

/// The state written by [`write_everything`] with tag 1 and committed.
pub fn committed_state(store: &impl StoreRead) {
    assert_eq!(store.head().unwrap(), 2);
    assert_eq!(positions(&log(store)), [1, 2]);
    assert_eq!(ns(&log(store)), [data(1), data(1)]);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 1);
    assert_eq!(store.stream_version(&stream("t")).unwrap(), 1);
    assert_eq!(store.stream_version(&stream("fresh")).unwrap(), 0);
    assert_eq!(
        store.documents("users", None, 10).unwrap(),
        vec![
            ("a".to_string(), "a1".to_string()),
            ("k1".to_string(), "new".to_string()),
        ]
    );
    assert_eq!(store.documents("extra", None, 10).unwrap(), vec![]);
    assert_eq!(store.checkpoint("users").unwrap(), 1);
    assert_eq!(store.checkpoint("extra").unwrap(), 0);
    assert_eq!(
        store.snapshot(&stream("a"), Upto::End).unwrap(),
        Some(snap(2, 100, "s1"))
    );
    assert_eq!(store.snapshot(&stream("fresh"), Upto::End).unwrap(), None);
}

pub fn rollback_on_drop_of_a_fresh_store<S: EventStore>(store: &mut S) {
    {
        let mut tx = store.begin().unwrap();
        write_everything(&mut tx, 1);
        tx.clear_collection("users").unwrap();
        tx.clear_snapshots().unwrap();
        // dropped without commit
    }
    empty_store_reads_nothing(store);
    assert_eq!(store.stream_version(&stream("t")).unwrap(), 0);
    // Positions and versions start over from 1.
    let again = append_commit(
        store,
        &stream("t"),
        ExpectedVersion::Exact(0),
        vec![ev("E", 1, 9)],
    );
    assert_eq!(positions(&again), [1]);
    assert_eq!(versions(&again), [1]);
    assert_eq!(ns(&log(store)), [data(9)]);
}

pub fn rollback_on_drop_restores_what_was_committed<S: EventStore>(store: &mut S) {
    {
        let mut tx = store.begin().unwrap();
        write_everything(&mut tx, 1);
        tx.commit().unwrap();
    }
    committed_state(store);
    {
        // Overwrite, delete and add one of everything, then walk away.
        let mut tx = store.begin().unwrap();
        write_everything(&mut tx, 2);
        tx.append(
            &stream("fresh"),
            ExpectedVersion::Exact(0),
            vec![ev("E", 1, 3), ev("E", 2, 4)],
        )
        .unwrap();
        tx.put_document("users", "k1", None).unwrap();
        tx.put_document("extra", "x", Some("x")).unwrap();
        tx.set_checkpoint("extra", 3).unwrap();
        tx.put_snapshot(&stream("fresh"), &snap(1, 1, "f")).unwrap();
        tx.put_snapshot(&stream("a"), &snap(3, 100, "s3")).unwrap();
        assert_eq!(tx.head().unwrap(), 6);
        assert_eq!(tx.document("users", "k1").unwrap(), None);
        drop(tx);
    }
    committed_state(store);
    {
        let mut tx = store.begin().unwrap();
        tx.clear_collection("users").unwrap();
        tx.clear_snapshots().unwrap();
        tx.set_checkpoint("users", 0).unwrap();
        assert!(tx.documents("users", None, 10).unwrap().is_empty());
    }
    committed_state(store);

    // Positions and versions go on from what was committed, with no gap.
    let next = append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Exact(1),
        vec![ev("E", 200, 5)],
    );
    assert_eq!(positions(&next), [3]);
    assert_eq!(versions(&next), [2]);
    let fresh = append_commit(
        store,
        &stream("fresh"),
        ExpectedVersion::Exact(0),
        vec![ev("E", 1, 6)],
    );
    assert_eq!(positions(&fresh), [4]);
    assert_eq!(versions(&fresh), [1]);
    assert_eq!(positions(&log(store)), [1, 2, 3, 4]);
    assert_eq!(ns(&log(store)), [data(1), data(1), data(5), data(6)]);
}

pub fn rollback_after_a_conflict<S: EventStore>(store: &mut S) {
    append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Exact(0),
        vec![ev("E", 1, 1)],
    );
    {
        let mut tx = store.begin().unwrap();
        tx.append(&stream("b"), ExpectedVersion::Exact(0), vec![ev("E", 1, 2)])
            .unwrap();
        assert!(matches!(
            tx.append(&stream("a"), ExpectedVersion::Exact(0), vec![ev("E", 1, 3)]),
            Err(StoreError::Conflict { .. })
        ));
        tx.append(&stream("a"), ExpectedVersion::Exact(1), vec![ev("E", 1, 4)])
            .unwrap();
    }
    assert_eq!(ns(&log(store)), [data(1)]);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 1);
    assert_eq!(store.stream_version(&stream("b")).unwrap(), 0);
    let b = append_commit(
        store,
        &stream("b"),
        ExpectedVersion::Exact(0),
        vec![ev("E", 1, 5)],
    );
    assert_eq!(positions(&b), [2]);
}

/// A conflict does not poison its transaction: what came before and after it in the same
/// transaction commits, with gap-free positions (the node relies on this to answer one command
/// of a batch `version_conflict` and commit the others).
pub fn a_conflict_leaves_the_rest_of_the_transaction_to_commit<S: EventStore>(store: &mut S) {
    append_commit(
        store,
        &stream("a"),
        ExpectedVersion::Exact(0),
        vec![ev("E", 1, 1)],
    );
    let mut tx = store.begin().unwrap();
    tx.append(&stream("b"), ExpectedVersion::Exact(0), vec![ev("E", 1, 2)])
        .unwrap();
    assert_eq!(
        tx.append(
            &stream("a"),
            ExpectedVersion::Exact(0),
            vec![ev("E", 1, 3), ev("E", 1, 4)]
        ),
        Err(StoreError::Conflict {
            expected: 0,
            actual: 1
        })
    );
    let c = tx
        .append(&stream("c"), ExpectedVersion::Exact(0), vec![ev("E", 1, 5)])
        .unwrap();
    assert_eq!(positions(&c), [3]);
    tx.put_document("docs", "k", Some("v")).unwrap();
    tx.set_checkpoint("p", 3).unwrap();
    tx.commit().unwrap();
    assert_eq!(ns(&log(store)), [data(1), data(2), data(5)]);
    assert_eq!(positions(&log(store)), [1, 2, 3]);
    assert_eq!(store.stream_version(&stream("a")).unwrap(), 1);
    assert_eq!(store.document("docs", "k").unwrap().as_deref(), Some("v"));
    assert_eq!(store.checkpoint("p").unwrap(), 3);
}

pub fn many_transactions_in_a_row<S: EventStore>(store: &mut S) {
    // Alternate committed and abandoned transactions; only the committed ones remain.
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let s = stream(&format!("s{}", i % 3));
        let mut tx = store.begin().unwrap();
        let recorded = tx
            .append(&s, ExpectedVersion::Any, vec![ev("E", i64::from(i), i)])
            .unwrap();
        if i % 4 != 3 {
            tx.commit().unwrap();
            expected.push(data(i));
            assert_eq!(positions(&recorded), [expected.len() as u64]);
        }
    }
    let all = log(store);
    assert_eq!(ns(&all), expected);
    assert_eq!(
        positions(&all),
        (1..=expected.len() as u64).collect::<Vec<_>>()
    );
    for s in ["s0", "s1", "s2"] {
        let events = store.read_stream(&stream(s), 0, Upto::End).unwrap();
        assert_eq!(
            versions(&events),
            (1..=events.len() as u64).collect::<Vec<_>>()
        );
    }
}

/// Snapshots are the caller's: a stream known to have no events can still have one (a store
/// that remembers which streams have no events must not answer snapshots from that).
pub fn snapshots_do_not_depend_on_events<S: EventStore>(store: &mut S) {
    let c = stream("c");
    assert_eq!(store.stream_version(&c).unwrap(), 0);
    assert_eq!(store.read_stream(&c, 0, Upto::End).unwrap(), []);
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.stream_version(&c).unwrap(), 0);
    tx.put_snapshot(&c, &snap(2, 20, "two")).unwrap();
    assert_eq!(
        tx.snapshot(&c, Upto::End).unwrap(),
        Some(snap(2, 20, "two"))
    );
    tx.commit().unwrap();
    assert_eq!(store.stream_version(&c).unwrap(), 0);
    assert_eq!(
        store.snapshot(&c, Upto::End).unwrap(),
        Some(snap(2, 20, "two"))
    );
}

/// A document written in a transaction that rolled back, then other documents: each key keeps
/// its own value (a store that numbers documents must not reuse a rolled-back number for the
/// wrong key).
pub fn documents_after_a_rollback_keep_their_own_values<S: EventStore>(store: &mut S) {
    {
        let mut tx = store.begin().unwrap();
        tx.put_document("users", "gone", Some("1")).unwrap();
        assert_eq!(tx.document("users", "gone").unwrap().as_deref(), Some("1"));
        // dropped without commit
    }
    let mut tx = store.begin().unwrap();
    tx.put_document("users", "other", Some("2")).unwrap();
    tx.put_document("users", "gone", Some("3")).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        store.document("users", "other").unwrap().as_deref(),
        Some("2")
    );
    assert_eq!(
        store.document("users", "gone").unwrap().as_deref(),
        Some("3")
    );
    assert_eq!(
        store.documents("users", None, 10).unwrap(),
        [
            ("gone".to_string(), "3".to_string()),
            ("other".into(), "2".into())
        ]
    );
}

/// Documents deleted one by one or by clearing their collection, then written again among
/// new ones: each key keeps its own value.
pub fn documents_after_deletes_keep_their_own_values<S: EventStore>(store: &mut S) {
    let mut tx = store.begin().unwrap();
    tx.put_document("c", "a", Some("a1")).unwrap();
    tx.put_document("d", "x", Some("x1")).unwrap();
    tx.commit().unwrap();

    let mut tx = store.begin().unwrap();
    tx.clear_collection("c").unwrap();
    tx.put_document("c", "b", Some("b1")).unwrap();
    tx.put_document("c", "a", Some("a2")).unwrap();
    tx.put_document("d", "x", None).unwrap();
    tx.put_document("d", "y", Some("y1")).unwrap();
    tx.put_document("d", "x", Some("x2")).unwrap();
    tx.commit().unwrap();

    for (c, k, v) in [
        ("c", "a", "a2"),
        ("c", "b", "b1"),
        ("d", "x", "x2"),
        ("d", "y", "y1"),
    ] {
        assert_eq!(store.document(c, k).unwrap().as_deref(), Some(v), "{c}/{k}");
    }
    assert_eq!(store.documents("c", None, 10).unwrap().len(), 2);
    assert_eq!(store.documents("d", None, 10).unwrap().len(), 2);
}

/// What a suite's factory returns: a store and its guard, or maybe one.
pub trait Fixture<S, G> {
    fn into_fixture(self) -> Option<(S, G)>;
}

impl<S: EventStore, G> Fixture<S, G> for (S, G) {
    fn into_fixture(self) -> Option<(S, G)> {
        Some(self)
    }
}

impl<S: EventStore, G> Fixture<S, G> for Option<(S, G)> {
    fn into_fixture(self) -> Option<(S, G)> {
        self
    }
}

/// Runs the whole [`store::testing`](crate::store::testing) suite against the stores that
/// `$factory` makes: `store_suite!(module_name, factory)` expands to a module of that name with
/// one `#[test]` per case. `$factory` is any expression callable as `() -> (store, guard)`, or
/// `() -> Option<(store, guard)>` for a backend that may be missing (`None`: each test returns
/// at once, having said why; see `testkit::postgres`).
#[macro_export]
macro_rules! store_suite {
    ($name:ident, $factory:expr) => {
        $crate::store_suite!(@module $name, $factory;
                empty_store_reads_nothing,
                append_to_new_stream,
                append_to_existing_stream,
                positions_are_global_and_gap_free,
                categories_are_separate_streams,
                unusual_ids_and_data_round_trip,
                schemas_are_kept_per_event,
                exact_version_conflict_writes_nothing,
                empty_append_checks_version_only,
                expected_any_always_appends,
                read_stream_after_and_upto,
                read_all_in_global_order,
                head_follows_the_log,
                snapshots_newest_inside_upto,
                documents_put_overwrite_delete,
                documents_by_key_in_the_keys_order,
                documents_ordered_by_key_with_after_and_limit,
                document_ranges_seek_both_ways,
                clear_collection_clears_only_that_one,
                checkpoints,
                transaction_sees_its_own_writes,
                commit_makes_writes_visible,
                rollback_on_drop_of_a_fresh_store,
                rollback_on_drop_restores_what_was_committed,
                rollback_after_a_conflict,
                a_conflict_leaves_the_rest_of_the_transaction_to_commit,
                many_transactions_in_a_row,
                snapshots_do_not_depend_on_events,
                documents_after_a_rollback_keep_their_own_values,
                documents_after_deletes_keep_their_own_values
        );
    };
    (@module $name:ident, $factory:expr; $($test:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $test() {
                    let Some((mut store, _guard)) =
                        $crate::store::testing::Fixture::into_fixture(($factory)())
                    else {
                        return;
                    };
                    $crate::store::testing::$test(&mut store);
                }
            )*
        }
    };
}
