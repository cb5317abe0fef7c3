//! The event store: the source of truth.
//!
//! Three traits, one per role:
//!
//! * [`StoreRead`]: everything that can be read, from the store or from inside a transaction
//!   (a transaction sees its own writes).
//! * [`StoreWrite`]: a transaction. Appends to streams with an optimistic version check, writes
//!   projection documents, checkpoints and snapshots. **Nothing is visible to a new reader and
//!   nothing is durable until [`StoreWrite::commit`] returns `Ok`**; dropping a transaction
//!   without committing rolls back every write made through it.
//! * [`EventStore`]: opens transactions.
//!
//! Three implementations run the same test suite ([`testing`], run by `tests/store_suite.rs`):
//! [`MemoryStore`] (no file at all), [`SqliteStore`] (WAL, `synchronous=FULL`: durable on
//! disk once `commit` returns) and [`PostgresStore`] (a PostgreSQL database that many nodes
//! share; durable once PostgreSQL's `COMMIT` returned).
//!
//! **Positions.** Every appended event gets a global position: 1 for the store's first event,
//! then one more per event, in commit order, never reused. A position is assigned only inside
//! the transaction that commits it, and every store has exactly one transaction open at a time
//! ([`EventStore::begin`] takes `&mut self`: the node's writer thread is the only writer), so
//! positions are gap-free and a reader that has seen position P and asks for what comes after
//! it ([`StoreRead::read_all`]) can never miss an event committed later: nothing can commit
//! below a position that is already visible. [`MemoryStore`] assigns `head + 1` in its one
//! transaction; [`SqliteStore`] does the same under SQLite's exclusive write lock (and the file
//! is locked to one process). A store shared by several writers must give the same guarantee
//! by its own means ([`PostgresStore`]: every writing transaction locks the single head row
//! first and assigns positions under that lock, so transactions of all nodes take positions
//! one after the other, in commit order).
//!
//! **Conflicts do not poison a transaction.** [`StoreWrite::append`] checks the expected
//! version before it writes anything; on [`StoreError::Conflict`] nothing was written and the
//! transaction goes on, so one command's conflict does not undo the other commands of its
//! batch. (The memory store checks its map; SQLite reads the stream's version, cached or from
//! its row, before the insert; a store whose conflict surfaces as a failed statement must wrap
//! the append in a savepoint.)
//!
//! **Errors say whether a retry can help**: [`StoreError::retry`].
//!
//! The shared test suite, [`testing`], runs against any store: one line per backend.
//!
//! Projection documents live in the store beside the events so that a projection's state and its
//! checkpoint commit in the same transaction as the events that produced them (an *inline*
//! projection). Snapshots are derived data: deleting them changes no answer.

/// Implements [`StoreRead`] for a type by asking another `StoreRead`: `$inner` is an expression
/// of `$this` (the `&self`), and the optional `before` runs first in every method (a fault
/// check, say; it may return early with `?`); `shared`, if given, answers
/// [`StoreRead::shared`] (by default, `$inner`'s answer). Used by the transactions and wrappers below.
macro_rules! delegate_store_read {
    (impl[$($gen:tt)*] $ty:ty, |$this:ident| $inner:expr $(, before: $before:expr)?) => {
        delegate_store_read!(impl[$($gen)*] $ty, |$this| $inner $(, before: $before)?,
            shared: $inner.shared());
    };
    (impl[$($gen:tt)*] $ty:ty, |$this:ident| $inner:expr $(, before: $before:expr)?,
        shared: $shared:expr) => {
        impl<$($gen)*> StoreRead for $ty {
            fn shared(&self) -> bool {
                let $this = self;
                $shared
            }
            fn stream_version(&self, s: &StreamId) -> Result<Version> {
                let $this = self;
                $($before;)?
                $inner.stream_version(s)
            }
            fn visit_stream(
                &self,
                s: &StreamId,
                after: Version,
                upto: Upto,
                visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
            ) -> Result<()> {
                let $this = self;
                $($before;)?
                $inner.visit_stream(s, after, upto, visit)
            }
            fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
                let $this = self;
                $($before;)?
                $inner.read_all(after, limit)
            }
            fn head(&self) -> Result<Position> {
                let $this = self;
                $($before;)?
                $inner.head()
            }
            fn snapshot(&self, s: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
                let $this = self;
                $($before;)?
                $inner.snapshot(s, upto)
            }
            fn document(&self, c: &str, k: &str) -> Result<Option<String>> {
                let $this = self;
                $($before;)?
                $inner.document(c, k)
            }
            fn documents(
                &self,
                c: &str,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Vec<(String, String)>> {
                let $this = self;
                $($before;)?
                $inner.documents(c, after, limit)
            }
            fn documents_by_key(&self, c: &str, keys: &[&str]) -> Result<Vec<Option<String>>> {
                let $this = self;
                $($before;)?
                $inner.documents_by_key(c, keys)
            }
            fn document_range(
                &self,
                c: &str,
                from: Bound<&str>,
                to: Bound<&str>,
                direction: Direction,
                limit: usize,
            ) -> Result<Vec<(String, String)>> {
                let $this = self;
                $($before;)?
                $inner.document_range(c, from, to, direction, limit)
            }
            fn checkpoint(&self, p: &str) -> Result<Position> {
                let $this = self;
                $($before;)?
                $inner.checkpoint(p)
            }
        }
    };
}

// A store lent is a store to read: so a wrapper can read one it does not own
// (`Registry::read_view`).
delegate_store_read!(impl['a, T: StoreRead + ?Sized] &'a T, |this| (**this));
delegate_store_read!(impl['a, T: StoreRead + ?Sized] &'a mut T, |this| (**this));

/// A store lent mutably is a store: so a wrapper can write through one it does not own (a
/// rebuild through `Registry::view` of a node's store).
impl<T: EventStore> EventStore for &mut T {
    type Tx<'a>
        = T::Tx<'a>
    where
        Self: 'a;

    fn begin(&mut self) -> Result<Self::Tx<'_>> {
        (**self).begin()
    }

    fn begin_reads(&self) -> Result<()> {
        (**self).begin_reads()
    }

    fn end_reads(&self) -> Result<()> {
        (**self).end_reads()
    }
}

mod faulty;
pub mod master;
mod memory;
mod postgres;
pub mod seal;
mod sqlite;
pub mod testing;
pub mod upcast;

pub use faulty::{Faults, FaultyStore, FaultyTx, Op, Plan};
pub use master::MasterKey;
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use seal::{Personal, PersonalDocuments, Sealed};
pub use sqlite::SqliteStore;
pub use upcast::{Upcasted, Upcaster, Upcasters};

/// The file that holds a node's SQLite store in `data_dir`: the node id, with every byte other
/// than `[A-Za-z0-9_-]` (and a leading `.`) percent-encoded, plus `.db`.
pub fn sqlite_file(data_dir: &std::path::Path, node_id: &str) -> std::path::PathBuf {
    let mut name = String::new();
    for (i, b) in node_id.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    data_dir.join(format!("{name}.db"))
}

use crate::timestamp::Timestamp;

pub use std::ops::Bound;

/// Which end of a key range [`StoreRead::document_range`] starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Smallest key first.
    Ascending,
    /// Largest key first.
    Descending,
}

/// Whether a key range is empty whatever the keys (its lower bound above its upper bound, or
/// equal and not both included): [`StoreRead::document_range`] answers nothing for it.
pub fn empty_range(from: Bound<&str>, to: Bound<&str>) -> bool {
    use Bound::{Excluded, Included};
    match (from, to) {
        (Included(a), Included(b)) => a > b,
        (Included(a) | Excluded(a), Included(b) | Excluded(b)) => a >= b,
        _ => false,
    }
}

/// A stream's version: the number of events in it. 0 means the stream does not exist.
pub type Version = u64;

/// A position in the global log, 1 for the first event ever appended. 0 means "before any".
pub type Position = u64;

/// Names one stream: the aggregate's category (e.g. `User`) and its id (e.g. `user-123`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub category: String,
    pub id: String,
}

impl StreamId {
    pub fn new(category: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            category: category.into(),
            id: id.into(),
        }
    }
}

/// What the writer believes a stream's version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must be at exactly this version (0: must not exist yet).
    Exact(Version),
}

/// The version of an event type's data shape. Each event is stored with the schema its data
/// was written in; an event type starts at [`FIRST_SCHEMA`] and its aggregate moves it to the
/// next one by registering an upcaster ([`upcast`]), which brings data of the older schema to the
/// newer one as events are read. So stored events are never rewritten, and old ones stay
/// readable for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Schema(pub u32);

/// The schema of every event type until its shape first changes (and of every event stored
/// before events carried a schema).
pub const FIRST_SCHEMA: Schema = Schema(1);

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An event about to be appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    /// The schema its data is written in.
    pub schema: Schema,
    pub timestamp: Timestamp,
    /// The event's data, a JSON object as text.
    pub data: String,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: StreamId,
    /// 1 for the stream's first event.
    pub version: Version,
    /// Position in the global log, unique and gap-free within one store.
    pub position: Position,
    pub event_type: String,
    /// The schema its data is in.
    pub schema: Schema,
    pub timestamp: Timestamp,
    /// JSON object as text.
    pub data: String,
}

/// An event of a stream, lent by the store while it reads ([`StoreRead::visit_stream`]): the
/// same fields as a [`RecordedEvent`] but the stream's, and nothing copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventView<'a> {
    pub position: Position,
    pub version: Version,
    pub event_type: &'a str,
    pub schema: Schema,
    pub timestamp: Timestamp,
    pub data: &'a str,
}

impl EventView<'_> {
    /// The event, copied out, in `stream`.
    pub fn to_recorded(&self, stream: &StreamId) -> RecordedEvent {
        RecordedEvent {
            stream: stream.clone(),
            version: self.version,
            position: self.position,
            event_type: self.event_type.to_string(),
            schema: self.schema,
            timestamp: self.timestamp,
            data: self.data.to_string(),
        }
    }
}

/// How far to read a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upto {
    /// Every event.
    End,
    /// Events with `version <= v`.
    Version(Version),
    /// Events with `timestamp <= t` (within a stream times never go backwards, so this is a prefix).
    Time(Timestamp),
}

impl Upto {
    /// Whether an event at this version and time falls inside the bound.
    pub fn includes(self, version: Version, timestamp: Timestamp) -> bool {
        match self {
            Upto::End => true,
            Upto::Version(v) => version <= v,
            Upto::Time(t) => timestamp <= t,
        }
    }
}

/// An aggregate's state after `version` events, serialised by its aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub version: Version,
    /// Time of the event at `version`.
    pub timestamp: Timestamp,
    pub state: String,
}

/// What went wrong in the store, grouped by what the caller should do
/// ([`StoreError::retry`] says it in one word).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The stream was not at the expected version: re-read and decide again.
    #[error("version conflict: expected version {expected}, but the stream is at {actual}")]
    Conflict { expected: Version, actual: Version },
    /// Another process holds the store: stop it, or use another data directory or node id.
    #[error("the store {0} is in use by another process")]
    Locked(String),
    /// Reading or writing failed (disk full, I/O error, read-only file, a database server out of
    /// reach). Nothing of the failed transaction is visible; the same write may succeed later.
    #[error("storage failure: {0}")]
    Io(String),
    /// What is stored cannot be understood: a bug, or a file damaged outside the store's control.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store's keys are wrapped by an operator's master key that this process was not given
    /// (or it was given another one): start it with the store's `--master-key-file`.
    #[error("master key: {0}")]
    MasterKey(String),
}

/// Whether doing the same again can help, after a [`StoreError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// At once, after re-reading: the state moved (a version conflict).
    AfterReread,
    /// Later: the failure is outside the data (disk, server, lock holder) and may pass.
    Later,
    /// No: the store holds something it cannot read; an operator must look.
    Never,
}

impl StoreError {
    /// What a caller can do about this error.
    pub fn retry(&self) -> Retry {
        match self {
            StoreError::Conflict { .. } => Retry::AfterReread,
            StoreError::Locked(_) | StoreError::Io(_) => Retry::Later,
            StoreError::Corrupt(_) | StoreError::MasterKey(_) => Retry::Never,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Reads, from a store or from inside a transaction.
pub trait StoreRead {
    /// Whether writers other than this process may append to the store (a database server
    /// shared by several nodes). When false, what this process last wrote or read of a stream
    /// is still its state; when true, any cached state may be stale.
    fn shared(&self) -> bool {
        false
    }

    /// The stream's version (0 if it has no events).
    fn stream_version(&self, stream: &StreamId) -> Result<Version>;

    /// The stream's events with `version > after`, inside `upto`, oldest first, each lent to
    /// `visit` (nothing copied); an error from `visit` stops the read and is returned.
    fn visit_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
        visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
    ) -> Result<()>;

    /// The same events as [`StoreRead::visit_stream`], copied out.
    fn read_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
    ) -> Result<Vec<RecordedEvent>> {
        let mut events = Vec::new();
        self.visit_stream(stream, after, upto, &mut |e| {
            events.push(e.to_recorded(stream));
            Ok(())
        })?;
        Ok(events)
    }

    /// Up to `limit` events of the global log with `position > after`, in log order.
    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// The position of the newest event (0 if the log is empty).
    fn head(&self) -> Result<Position>;

    /// The newest snapshot of the stream whose version and time fall inside `upto`.
    fn snapshot(&self, stream: &StreamId, upto: Upto) -> Result<Option<Snapshot>>;

    /// One projection document.
    fn document(&self, collection: &str, key: &str) -> Result<Option<String>>;

    /// The documents of `keys` (each key's, in their order): [`StoreRead::document`] for
    /// each, which a store with a round trip per read answers with one.
    fn documents_by_key(&self, collection: &str, keys: &[&str]) -> Result<Vec<Option<String>>> {
        keys.iter().map(|k| self.document(collection, k)).collect()
    }

    /// Up to `limit` documents of a collection with `key > after`, ordered by key (byte order).
    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>>;

    /// Up to `limit` documents of a collection whose keys lie between `from` (the lower bound)
    /// and `to` (the upper bound), in byte order of the keys: smallest first (`Ascending`) or
    /// largest first (`Descending`). A seek, not a scan: "the newest version of X at or before
    /// T" is one descending read with `limit` 1. An empty range ([`empty_range`]) reads nothing.
    fn document_range(
        &self,
        collection: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>>;

    /// The last global position a projection has applied (0 if none).
    fn checkpoint(&self, projection: &str) -> Result<Position>;
}

/// A transaction. See the module docs for when its writes become visible and durable.
pub trait StoreWrite: StoreRead {
    /// Appends `events` to `stream` if it is at `expected`, all of them or none, and returns
    /// them as recorded (taken by value: their type and data move into the recorded events
    /// instead of being copied). On [`StoreError::Conflict`] nothing was written and the
    /// transaction can go on. An empty `events` only checks the version.
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>>;

    /// Writes (`Some`) or deletes (`None`) a projection document.
    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()>;

    /// Writes a document that is seldom rewritten or read back by its key (a temporal read
    /// model's versions: written once, read by [`StoreRead::document_range`]). The same as
    /// `put_document(collection, key, Some(value))`, but the store need not remember where the
    /// document is (SQLite: its row number is not kept in memory, so that millions of them do
    /// not push out the documents that are rewritten all the time).
    fn put_cold_document(&mut self, collection: &str, key: &str, value: &str) -> Result<()> {
        self.put_document(collection, key, Some(value))
    }

    /// Deletes every document of a collection.
    fn clear_collection(&mut self, collection: &str) -> Result<()>;

    /// Records the last global position a projection has applied.
    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()>;

    /// Stores a snapshot of a stream (replacing one at the same version).
    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()>;

    /// Deletes every snapshot.
    fn clear_snapshots(&mut self) -> Result<()>;

    /// Makes every write of this transaction visible and durable, atomically.
    fn commit(self) -> Result<()>
    where
        Self: Sized;
}

/// An event store: reads, and transactions for writes.
pub trait EventStore: StoreRead {
    type Tx<'a>: StoreWrite
    where
        Self: 'a;

    /// Starts a transaction. One at a time per store.
    fn begin(&mut self) -> Result<Self::Tx<'_>>;

    /// Makes the reads that follow, until [`EventStore::end_reads`], see one state of the
    /// store, as the reads of a transaction do (so that several queries answered together, or
    /// one query that reads twice, cannot straddle another writer's commit). A store that only
    /// this process writes needs nothing: between two of its own transactions it does not
    /// change. A shared store opens a read-only snapshot.
    fn begin_reads(&self) -> Result<()> {
        Ok(())
    }

    /// Ends what [`EventStore::begin_reads`] began.
    fn end_reads(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_says_whether_a_retry_can_help() {
        let conflict = StoreError::Conflict {
            expected: 1,
            actual: 2,
        };
        assert_eq!(conflict.retry(), Retry::AfterReread);
        assert_eq!(StoreError::Io("disk full".into()).retry(), Retry::Later);
        assert_eq!(StoreError::Locked("f".into()).retry(), Retry::Later);
        assert_eq!(StoreError::Corrupt("bad".into()).retry(), Retry::Never);
    }
}
