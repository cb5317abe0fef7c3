//! [`FaultyStore`]: wraps any [`EventStore`] and makes chosen operations fail on demand, the way
//! a full disk, a file size limit or a failing device would: with [`StoreError::Io`], and
//! without doing the operation.
//!
//! For tests of what the node does when its store fails. The [`Faults`] switchboard is shared
//! (`Arc`), so a test can keep it and turn faults on and off while a node owns the store:
//!
//! ```
//! use cqrs_node::store::{EventStore, FaultyStore, MemoryStore, Op, Plan, StoreWrite};
//!
//! let mut store = FaultyStore::new(MemoryStore::new());
//! let faults = store.faults();
//! faults.set(Op::Commit, Plan::Next(1));
//! assert!(store.begin().unwrap().commit().is_err()); // rolled back
//! assert!(store.begin().unwrap().commit().is_ok());
//! assert_eq!(faults.injected(), 1);
//! ```
//!
//! A failed [`StoreWrite::commit`] drops the inner transaction, so nothing of it is applied:
//! what a real store does when its commit cannot be written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// The operations a fault can be put on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`EventStore::begin`].
    Begin,
    /// [`StoreWrite::append`] (an append that only checks the version too).
    Append,
    /// Every other write of a transaction: documents, checkpoints, snapshots.
    Write,
    /// [`StoreWrite::commit`].
    Commit,
    /// Every read, on the store or inside a transaction.
    Read,
}

/// When an operation fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Never (the default).
    Never,
    /// Every time, until changed.
    Always,
    /// The next `n` times, then never.
    Next(u64),
    /// Succeeds `ok` more times, then fails every time until changed.
    After { ok: u64 },
}

/// The shared switchboard of a [`FaultyStore`].
#[derive(Debug, Default)]
pub struct Faults {
    plans: Mutex<HashMap<Op, Plan>>,
    injected: AtomicU64,
    shared: AtomicBool,
}

impl Faults {
    /// Sets when `op` fails from now on.
    pub fn set(&self, op: Op, plan: Plan) {
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(op, plan);
    }

    /// No more faults anywhere ("the disk has room again").
    pub fn clear(&self) {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Makes the store say it is shared by other writers ([`StoreRead::shared`]), as a database
    /// server that several nodes write to: the engine then treats every state it cached as
    /// possibly stale. A test plays the other writers by writing to the inner store.
    pub fn pretend_shared(&self, shared: bool) {
        self.shared.store(shared, Ordering::SeqCst)
    }

    /// How many operations have failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// `Err` if `op` must fail this time.
    fn check(&self, op: Op) -> Result<()> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let plan = plans.entry(op).or_insert(Plan::Never);
        let fail = match *plan {
            Plan::Never => false,
            Plan::Always => true,
            Plan::Next(0) => {
                *plan = Plan::Never;
                false
            }
            Plan::Next(n) => {
                *plan = if n == 1 {
                    Plan::Never
                } else {
                    Plan::Next(n - 1)
                };
                true
            }
            Plan::After { ok: 0 } => true,
            Plan::After { ok } => {
                *plan = Plan::After { ok: ok - 1 };
                false
            }
        };
        if fail {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io(format!(
                "injected fault on {op:?}: no space left on device"
            )));
        }
        Ok(())
    }
}

/// A store whose operations fail when its [`Faults`] say so; otherwise it is `S`.
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S> FaultyStore<S> {
    /// `inner`, with no fault planned yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            faults: Arc::new(Faults::default()),
        }
    }

    /// The switchboard: keep it to plan faults while someone else owns the store.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped store, to write to it past the faults (another writer, in a test).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A transaction of a [`FaultyStore`].
pub struct FaultyTx<T> {
    inner: T,
    faults: Arc<Faults>,
}

// Every read checks `Op::Read` first, then asks the wrapped store or transaction.
delegate_store_read!(impl[S: StoreRead] FaultyStore<S>, |this| this.inner,
    before: this.faults.check(Op::Read)?,
    shared: this.faults.shared.load(Ordering::SeqCst) || this.inner.shared());
delegate_store_read!(impl[T: StoreRead] FaultyTx<T>, |this| this.inner,
    before: this.faults.check(Op::Read)?,
    shared: this.faults.shared.load(Ordering::SeqCst) || this.inner.shared());

impl<S: EventStore> EventStore for FaultyStore<S> {
    type Tx<'a>
        = FaultyTx<S::Tx<'a>>
    where
        Self: 'a;

    fn begin(&mut self) -> Result<Self::Tx<'_>> {
        self.faults.check(Op::Begin)?;
        Ok(FaultyTx {
            inner: self.inner.begin()?,
            faults: self.faults.clone(),
        })
    }
}

impl<T: StoreWrite> StoreWrite for FaultyTx<T> {
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        self.faults.check(Op::Append)?;
        self.inner.append(stream, expected, events)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        self.faults.check(Op::Write)?;
        self.inner.put_document(collection, key, value)
    }

    fn put_cold_document(&mut self, collection: &str, key: &str, value: &str) -> Result<()> {
        self.faults.check(Op::Write)?;
        self.inner.put_cold_document(collection, key, value)
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
        self.faults.check(Op::Write)?;
        self.inner.clear_collection(collection)
    }

    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()> {
        self.faults.check(Op::Write)?;
        self.inner.set_checkpoint(projection, position)
    }

    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()> {
        self.faults.check(Op::Write)?;
        self.inner.put_snapshot(stream, snapshot)
    }

    fn clear_snapshots(&mut self) -> Result<()> {
        self.faults.check(Op::Write)?;
        self.inner.clear_snapshots()
    }

    fn commit(self) -> Result<()> {
        // On a fault the inner transaction is dropped: rolled back.
        self.faults.check(Op::Commit)?;
        self.inner.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NewEvent {
        NewEvent {
            event_type: "E".into(),
            schema: FIRST_SCHEMA,
            timestamp: Timestamp(1),
            data: "{}".into(),
        }
    }

    #[test]
    fn plans_fail_when_they_say_and_a_failed_commit_applies_nothing() {
        let mut store = FaultyStore::new(MemoryStore::new());
        let faults = store.faults();
        let s = StreamId::new("C", "a");

        faults.set(Op::Commit, Plan::Always);
        for _ in 0..2 {
            let mut tx = store.begin().unwrap();
            tx.append(&s, ExpectedVersion::Any, vec![event()]).unwrap();
            assert!(matches!(tx.commit(), Err(StoreError::Io(_))));
            assert_eq!(store.head().unwrap(), 0);
        }

        faults.set(Op::Append, Plan::After { ok: 1 });
        faults.set(Op::Commit, Plan::Never);
        let mut tx = store.begin().unwrap();
        tx.append(&s, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        assert!(tx.append(&s, ExpectedVersion::Any, vec![event()]).is_err());
        drop(tx);
        assert_eq!(store.head().unwrap(), 0);

        faults.set(Op::Read, Plan::Next(2));
        assert!(store.head().is_err());
        assert!(store.stream_version(&s).is_err());
        assert_eq!(store.head().unwrap(), 0);

        faults.clear();
        let mut tx = store.begin().unwrap();
        tx.append(&s, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(store.head().unwrap(), 1);
        assert_eq!(faults.injected(), 5);
    }

    #[test]
    fn conflicts_pass_through_unchanged() {
        let mut store = FaultyStore::new(MemoryStore::new());
        let s = StreamId::new("C", "a");
        let mut tx = store.begin().unwrap();
        assert_eq!(
            tx.append(&s, ExpectedVersion::Exact(3), vec![event()]),
            Err(StoreError::Conflict {
                expected: 3,
                actual: 0
            })
        );
    }
}
