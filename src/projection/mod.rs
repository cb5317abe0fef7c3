//! Projections: read models built from the global log, kept as documents in the store.
//!
//! A projection is *inline*: the node applies each batch's events to every projection inside the
//! same transaction that appends them, and records the projection's checkpoint (the last global
//! position it has applied) in that transaction too. So a projection is never behind what was
//! acknowledged, and a crash can never leave it half-applied. At start the node still runs
//! [`catch_up`] from each checkpoint (for a projection added later, or one reset by hand), and
//! `cqrs rebuild` replays the whole log into fresh documents ([`rebuild`]); [`verify`] checks that
//! the maintained documents equal a full replay.

pub mod users;
pub mod users_at;

use std::any::Any;

use crate::store::{
    Bound, Direction, EventStore, MemoryStore, PersonalDocuments, Position, RecordedEvent,
    StoreError, StoreRead, StoreWrite,
};

/// The document reads and writes a projection may make: object-safe, so that a node can hold
/// any list of projections.
pub trait Documents {
    fn get(&self, collection: &str, key: &str) -> Result<Option<String>, StoreError>;
    fn put(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<(), StoreError>;
    /// [`StoreRead::document_range`].
    fn range(
        &self,
        collection: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// [`StoreWrite::put_cold_document`].
    fn put_cold(&mut self, collection: &str, key: &str, value: &str) -> Result<(), StoreError>;
}

impl<T: StoreWrite> Documents for T {
    fn get(&self, collection: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.document(collection, key)
    }
    fn put(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.put_document(collection, key, value)
    }
    fn range(
        &self,
        collection: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.document_range(collection, from, to, direction, limit)
    }
    fn put_cold(&mut self, collection: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.put_cold_document(collection, key, value)
    }
}

/// A read model.
pub trait Projection: Send {
    /// Unique name, used for its checkpoint.
    fn name(&self) -> &'static str;
    /// The document collections it owns (cleared by a rebuild).
    fn collections(&self) -> &'static [&'static str];
    /// Those of its collections whose documents hold personal data: the store seals each
    /// document under the key of the stream it belongs to, as it seals the stream's events
    /// ([`crate::store::seal`]), and a forget must delete them.
    fn personal(&self) -> &'static [PersonalDocuments] {
        &[]
    }
    /// Applies one event (events of other categories are ignored).
    fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), StoreError>;

    /// Applies the events that one command just appended to one stream, given the state the
    /// aggregate reached (e.g. a `User`, behind `dyn Any`). The default applies the events one by
    /// one; a read model that is a function of the aggregate's state can write it directly
    /// instead of reading, decoding and evolving. Either way the result must equal [`apply`]'s:
    /// [`verify`] and the property tests compare the two.
    ///
    /// [`apply`]: Projection::apply
    fn apply_command(
        &self,
        docs: &mut dyn Documents,
        events: &[RecordedEvent],
        state: &dyn Any,
    ) -> Result<(), StoreError> {
        let _ = state;
        events.iter().try_for_each(|e| self.apply(docs, e))
    }
}

/// [`Projection::apply_command`] for every projection: the events one command appended, and the
/// state its aggregate reached.
pub fn apply_command<T: StoreWrite + ?Sized>(
    projections: &[Box<dyn Projection>],
    tx: &mut T,
    events: &[RecordedEvent],
    state: &dyn Any,
) -> Result<(), StoreError> {
    let mut docs = Through(tx);
    for p in projections {
        p.apply_command(&mut docs, events, state)?;
    }
    Ok(())
}

/// A transaction of any kind (a `dyn StoreWrite` too) as [`Documents`].
struct Through<'a, T: ?Sized>(&'a mut T);

impl<T: StoreWrite + ?Sized> Documents for Through<'_, T> {
    fn get(&self, collection: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.0.document(collection, key)
    }
    fn put(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.0.put_document(collection, key, value)
    }
    fn range(
        &self,
        collection: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.0
            .document_range(collection, from, to, direction, limit)
    }
    fn put_cold(&mut self, collection: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.0.put_cold_document(collection, key, value)
    }
}

/// Records that every projection has applied the log up to `position`.
pub fn set_checkpoints<T: StoreWrite + ?Sized>(
    projections: &[Box<dyn Projection>],
    tx: &mut T,
    position: Position,
) -> Result<(), StoreError> {
    for p in projections {
        tx.set_checkpoint(p.name(), position)?;
    }
    Ok(())
}

/// Events read per step while catching up.
const CHUNK: usize = 10_000;

/// Brings every projection from its checkpoint up to the head of the log, inside `tx`.
fn catch_up_in<T: StoreWrite>(
    projections: &[Box<dyn Projection>],
    tx: &mut T,
) -> Result<u64, StoreError> {
    let mut applied = 0;
    for p in projections {
        applied += catch_up_one(p.as_ref(), tx)?;
    }
    Ok(applied)
}

/// Brings one projection from its checkpoint up to the head of the log, inside `tx`.
fn catch_up_one<T: StoreWrite>(p: &dyn Projection, tx: &mut T) -> Result<u64, StoreError> {
    let mut applied = 0;
    let mut at = tx.checkpoint(p.name())?;
    loop {
        let events = tx.read_all(at, CHUNK)?;
        let Some(last) = events.last() else { break };
        at = last.position;
        for e in &events {
            p.apply(tx, e)?;
        }
        applied += events.len() as u64;
        tx.set_checkpoint(p.name(), at)?;
    }
    Ok(applied)
}

/// Brings every projection up to the head of the log; returns how many events were applied.
pub fn catch_up<S: EventStore>(
    store: &mut S,
    projections: &[Box<dyn Projection>],
) -> Result<u64, StoreError> {
    let head = store.head()?;
    let behind = projections
        .iter()
        .map(|p| store.checkpoint(p.name()))
        .collect::<Result<Vec<Position>, _>>()?
        .into_iter()
        .any(|cp| cp < head);
    if !behind {
        return Ok(0);
    }
    let mut tx = store.begin()?;
    let applied = catch_up_in(projections, &mut tx)?;
    tx.commit()?;
    Ok(applied)
}

/// Throws every projection's documents away and replays the whole log into them, atomically;
/// returns how many events the log holds (each was replayed into every projection).
pub fn rebuild<S: EventStore>(
    store: &mut S,
    projections: &[Box<dyn Projection>],
) -> Result<u64, StoreError> {
    let mut tx = store.begin()?;
    let events = rebuild_in(projections, &mut tx)?;
    tx.commit()?;
    Ok(events)
}

/// [`rebuild`], inside a transaction (an import's, say): nothing is visible until it commits.
pub fn rebuild_in<T: StoreWrite>(
    projections: &[Box<dyn Projection>],
    tx: &mut T,
) -> Result<u64, StoreError> {
    for p in projections {
        for c in p.collections() {
            tx.clear_collection(c)?;
        }
        tx.set_checkpoint(p.name(), 0)?;
    }
    catch_up_in(projections, tx)?;
    tx.head()
}

/// The projections this store has never built: checkpoint 0 and not a document, while the log
/// has events. A store written by an older version lacks the projections added since; a node
/// builds them from the log when it opens the store ([`catch_up`]). [`verify`] passes over
/// them (there is nothing to compare yet); [`check`] builds them in a transaction it rolls
/// back, and compares.
pub fn unbuilt<'p>(
    store: &impl StoreRead,
    projections: &'p [Box<dyn Projection>],
) -> Result<Vec<&'p str>, StoreError> {
    let mut names = Vec::new();
    if store.head()? == 0 {
        return Ok(names);
    }
    for p in projections {
        if store.checkpoint(p.name())? != 0 {
            continue;
        }
        let mut empty = true;
        for c in p.collections() {
            empty &= store.documents(c, None, 1)?.is_empty();
        }
        if empty {
            names.push(p.name());
        }
    }
    Ok(names)
}

/// What `cqrs check` found: the projections the store had never built, and every difference
/// ([`verify`]), empty when all is well.
#[derive(Debug, Default)]
pub struct Checked {
    pub unbuilt: Vec<String>,
    pub problems: Vec<String>,
}

/// [`verify`], with the projections the store has never built ([`unbuilt`]) first built from
/// the log in a transaction that is then rolled back: they are checked as a node would build
/// them when it opens the store, and the store is left as it was. (On a shared store that
/// transaction writes checkpoints: it happens only before any node of this version opened
/// the store, since a node builds what is missing when it opens it.) `projections` makes a
/// fresh set each time it is called: the replay never uses the objects that built the store
/// (a projection may keep what it wrote in memory, and must not hand it to the replay).
pub fn check<S: EventStore>(
    store: &mut S,
    projections: impl Fn() -> Vec<Box<dyn Projection>>,
) -> Result<Checked, StoreError> {
    let builders = projections();
    let unbuilt: Vec<String> = unbuilt(store, &builders)?
        .into_iter()
        .map(str::to_string)
        .collect();
    if unbuilt.is_empty() {
        let problems = verify(store, &projections())?;
        return Ok(Checked { unbuilt, problems });
    }
    let mut tx = store.begin()?;
    for p in &builders {
        if unbuilt.iter().any(|name| name == p.name()) {
            catch_up_one(p.as_ref(), &mut tx)?;
        }
    }
    let problems = verify(&tx, &projections())?;
    drop(tx); // rolled back: the store is as it was
    Ok(Checked { unbuilt, problems })
}

/// Differences between what a store holds and what a full replay of its log gives: the
/// projections' documents and checkpoints, and the log's own shape (gap-free positions,
/// contiguous stream versions, times that never go backwards within a stream). Empty: all good.
/// Projections the store has never built ([`unbuilt`]) are left out.
pub fn verify(
    store: &impl StoreRead,
    projections: &[Box<dyn Projection>],
) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let mut replay = MemoryStore::new();
    let mut streams = std::collections::HashMap::new();
    let mut at = 0;
    {
        let mut tx = replay.begin()?;
        loop {
            let events = store.read_all(at, CHUNK)?;
            if events.is_empty() {
                break;
            }
            for e in &events {
                if e.position != at + 1 {
                    problems.push(format!("log: position {} follows {at}", e.position));
                }
                at = e.position;
                let (version, time) = streams.entry(e.stream.clone()).or_insert((0, e.timestamp));
                if e.version != *version + 1 {
                    problems.push(format!(
                        "stream {}/{}: version {} follows {}",
                        e.stream.category, e.stream.id, e.version, version
                    ));
                }
                if e.timestamp < *time {
                    problems.push(format!(
                        "stream {}/{}: time goes backwards at version {}",
                        e.stream.category, e.stream.id, e.version
                    ));
                }
                *version = e.version;
                *time = e.timestamp;
            }
            for p in projections {
                for e in &events {
                    p.apply(&mut tx, e)?;
                }
            }
        }
        tx.commit()?;
    }
    if store.head()? != at {
        problems.push(format!(
            "log: head is {} but the log ends at {at}",
            store.head()?
        ));
    }
    let unbuilt = unbuilt(store, projections)?;
    for p in projections {
        if unbuilt.contains(&p.name()) {
            continue;
        }
        let cp = store.checkpoint(p.name())?;
        if cp != at {
            problems.push(format!(
                "projection {}: checkpoint {cp}, log head {at}",
                p.name()
            ));
        }
        for c in p.collections() {
            let expected = replay.documents(c, None, usize::MAX)?;
            let actual = store.documents(c, None, usize::MAX)?;
            if expected != actual {
                let first = expected
                    .iter()
                    .zip(actual.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(expected.len().min(actual.len()));
                problems.push(format!(
                    "projection {}: collection {c} differs from a replay ({} documents stored, \
                     {} replayed; first difference at #{first})",
                    p.name(),
                    actual.len(),
                    expected.len()
                ));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::store::testing::{ev, stream};
    use crate::store::{ExpectedVersion, MemoryStore};

    /// Counts its applies into a document; `drift` makes each apply write a fresh number, so
    /// that building it twice (in the store, and in a replay) never agrees.
    struct Counting {
        applies: Arc<AtomicU64>,
        drift: bool,
    }

    impl Projection for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn collections(&self) -> &'static [&'static str] {
            &["counted"]
        }
        fn apply(&self, docs: &mut dyn Documents, e: &RecordedEvent) -> Result<(), StoreError> {
            let n = self.applies.fetch_add(1, Ordering::Relaxed);
            let value = if self.drift { n } else { e.version };
            docs.put("counted", &e.stream.id, Some(&value.to_string()))
        }
    }

    /// A store whose log has events and whose projection `counting` was never built.
    fn unbuilt_store() -> MemoryStore {
        let mut store = MemoryStore::new();
        let mut tx = store.begin().unwrap();
        for id in ["a", "b"] {
            let events = vec![ev("Happened", 1, 1), ev("Happened", 2, 2)];
            tx.append(&stream(id), ExpectedVersion::Exact(0), events)
                .unwrap();
        }
        tx.commit().unwrap();
        store
    }

    /// The projection, and its count of applies.
    fn counting(drift: bool) -> (Vec<Box<dyn Projection>>, Arc<AtomicU64>) {
        let applies = Arc::new(AtomicU64::new(0));
        (counting_into(drift, applies.clone()), applies)
    }

    /// The projection, counting its applies into `applies`.
    fn counting_into(drift: bool, applies: Arc<AtomicU64>) -> Vec<Box<dyn Projection>> {
        vec![Box::new(Counting { applies, drift })]
    }

    #[test]
    fn check_builds_an_unbuilt_projection_and_leaves_the_store_as_it_was() {
        let mut store = unbuilt_store();
        let applies = Arc::new(AtomicU64::new(0));
        let made = AtomicU64::new(0);
        let projections = || {
            made.fetch_add(1, Ordering::Relaxed);
            counting_into(false, applies.clone())
        };
        let checked = check(&mut store, projections).unwrap();
        assert_eq!(checked.unbuilt, ["counting"]);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        // Built in the store's transaction (4 events) and in the replay (4 more), each by a
        // set of its own.
        assert_eq!(applies.load(Ordering::Relaxed), 8);
        assert_eq!(made.load(Ordering::Relaxed), 2);
        assert_eq!(store.checkpoint("counting").unwrap(), 0, "rolled back");
        assert!(store.documents("counted", None, 10).unwrap().is_empty());
        // A second check finds it unbuilt still.
        assert_eq!(
            check(&mut store, projections).unwrap().unbuilt,
            ["counting"]
        );
    }

    #[test]
    fn check_compares_an_unbuilt_projection_once_built_with_a_replay() {
        let mut store = unbuilt_store();
        // One count across both sets: the replay's numbers follow the build's.
        let applies = Arc::new(AtomicU64::new(0));
        let checked = check(&mut store, || counting_into(true, applies.clone())).unwrap();
        assert_eq!(checked.unbuilt, ["counting"]);
        assert_eq!(checked.problems.len(), 1, "{:?}", checked.problems);
        assert!(
            checked.problems[0].starts_with("projection counting: collection counted differs"),
            "{:?}",
            checked.problems
        );
        // verify alone passes over it (there is nothing built to compare).
        assert!(verify(&store, &counting(true).0).unwrap().is_empty());
    }
}
