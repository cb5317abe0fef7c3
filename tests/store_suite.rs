//! The event-store test suite (`cqrs_node::store::testing`, written once in the library as
//! generic functions over `EventStore`), run against every store this crate has: [`MemoryStore`]
//! and [`SqliteStore`] (in a fresh temporary directory per test, with three cache sizes). Any
//! other backend, in any crate, runs it with one `store_suite!` line.
//!
//! SQLite-only behaviour (reopening, the exclusive lock) is tested in the `sqlite_only` module.

use cqrs_node::store::testing::*;
use cqrs_node::store::{
    EventStore, ExpectedVersion, MemoryStore, PostgresStore, SqliteStore, StoreError, StoreRead,
    StoreWrite, Upto,
};
use cqrs_node::testkit::postgres::Schema;
use cqrs_node::timestamp::Timestamp;

// ---------------------------------------------------------------------------------------------
// The suite, run against every store.

fn memory() -> (MemoryStore, ()) {
    (MemoryStore::new(), ())
}

fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    (store, dir)
}

/// SQLite with room for two streams and two documents in what it keeps in memory, so that it
/// is emptied again and again.
fn sqlite_small_cache() -> (SqliteStore, tempfile::TempDir) {
    let (mut store, dir) = sqlite();
    store.set_cache_size(2);
    (store, dir)
}

/// SQLite keeping nothing in memory: every stream and document is looked up by its key.
fn sqlite_no_cache() -> (SqliteStore, tempfile::TempDir) {
    let (mut store, dir) = sqlite();
    store.set_cache_size(0);
    (store, dir)
}

cqrs_node::store_suite!(memory_store, memory);
cqrs_node::store_suite!(sqlite_store, sqlite);
cqrs_node::store_suite!(sqlite_store_small_cache, sqlite_small_cache);
cqrs_node::store_suite!(sqlite_store_no_cache, sqlite_no_cache);

/// PostgreSQL (`CQRS_POSTGRES_URL`; skipped without it, except under CI=true), a schema per
/// test, dropped after it.
fn postgres_with_cache(cache: usize) -> Option<(PostgresStore, Schema)> {
    let schema = Schema::new("store_suite")?;
    let mut store = PostgresStore::open(&schema.url, &schema.name).unwrap();
    store.set_cache_size(cache);
    Some((store, schema))
}

cqrs_node::store_suite!(postgres_store, || postgres_with_cache(100_000));
cqrs_node::store_suite!(postgres_store_small_cache, || postgres_with_cache(2));
cqrs_node::store_suite!(postgres_store_no_cache, || postgres_with_cache(0));

// ---------------------------------------------------------------------------------------------
// SQLite only: durability across reopen, and the exclusive lock.

mod sqlite_only {
    use super::*;

    #[test]
    fn data_survives_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("dir").join("store.db");
        {
            let mut store = SqliteStore::open(&path).unwrap();
            assert_eq!(store.path(), path.as_path());
            let mut tx = store.begin().unwrap();
            write_everything(&mut tx, 1);
            tx.commit().unwrap();
            // An abandoned transaction must not reach the file either.
            let mut tx = store.begin().unwrap();
            write_everything(&mut tx, 2);
            drop(tx);
        }
        {
            let mut store = SqliteStore::open(&path).unwrap();
            committed_state(&store);
            // Positions and versions go on after the reopen.
            let next = append_commit(
                &mut store,
                &stream("a"),
                ExpectedVersion::Exact(1),
                vec![ev("E", 200, 7)],
            );
            assert_eq!(positions(&next), [3]);
            assert_eq!(versions(&next), [2]);
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.head().unwrap(), 3);
        assert_eq!(ns(&log(&store)), [data(1), data(1), data(7)]);
        assert_eq!(
            store
                .read_stream(&stream("a"), 0, Upto::Time(Timestamp(100)))
                .unwrap()
                .len(),
            1
        );
    }

    /// SQLite tracks POSIX locks per inode inside one process, so a second connection in the
    /// same process is refused exactly as a second process is (the binary tests cover the
    /// cross-process case).
    #[test]
    fn a_second_open_while_the_first_is_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut first = SqliteStore::open(&path).unwrap();
        match SqliteStore::open(&path) {
            Err(StoreError::Locked(p)) => assert!(p.contains("store.db"), "{p}"),
            Err(other) => panic!("expected Locked, got {other:?}"),
            Ok(_) => panic!("a second open of a store in use must be refused"),
        }
        // The refused open did not disturb the first one.
        append_commit(
            &mut first,
            &stream("a"),
            ExpectedVersion::Exact(0),
            vec![ev("E", 1, 1)],
        );
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::Locked(_))
        ));
        drop(first);
        // Once the first is closed the store opens again, with its data.
        let second = SqliteStore::open(&path).unwrap();
        assert_eq!(second.head().unwrap(), 1);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        match SqliteStore::open(&path) {
            Err(StoreError::Corrupt(_)) => {}
            Err(other) => panic!("expected Corrupt, got {other:?}"),
            Ok(_) => panic!("garbage must not open as a store"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: reads that see one state while another node commits.

mod postgres_only {
    use super::*;

    #[test]
    fn reads_begun_together_do_not_see_another_writers_commit_until_they_end() {
        let Some(schema) = Schema::new("store_suite") else {
            return;
        };
        let reader = PostgresStore::open(&schema.url, &schema.name).unwrap();
        let mut writer = PostgresStore::open(&schema.url, &schema.name).unwrap();
        let s = stream("u1");
        append_commit(&mut writer, &s, ExpectedVersion::Any, vec![ev("A", 1, 1)]);

        reader.begin_reads().unwrap();
        assert_eq!(reader.stream_version(&s).unwrap(), 1);
        append_commit(
            &mut writer,
            &s,
            ExpectedVersion::Exact(1),
            vec![ev("B", 2, 2)],
        );
        // The snapshot holds: the second event is not there for any read of it.
        assert_eq!(reader.stream_version(&s).unwrap(), 1);
        assert_eq!(reader.head().unwrap(), 1);
        assert_eq!(reader.read_all(0, 10).unwrap().len(), 1);
        reader.end_reads().unwrap();

        // Ended: the reads see what is committed again.
        assert_eq!(reader.stream_version(&s).unwrap(), 2);
        assert_eq!(reader.head().unwrap(), 2);
        // And without begin_reads, each read sees the newest commit.
        append_commit(
            &mut writer,
            &s,
            ExpectedVersion::Exact(2),
            vec![ev("C", 3, 3)],
        );
        assert_eq!(reader.stream_version(&s).unwrap(), 3);
    }
}
