//! [`MemoryStore`]: the whole store in memory. Writes no file; everything is gone when the
//! process ends. For tests and for `--in-memory` runs.
//!
//! A transaction writes straight into the store and keeps an undo log; dropping it without
//! `commit` plays the undo log backwards.
//!
//! Layout, chosen for speed and memory per stream (every answer is the same as with plain maps):
//!
//! * Each stream owns its events, contiguously: a vector of compact entries (time, type as a
//!   small index, position in the log, end of its data; the version is the index + 1) and one
//!   growing string holding all their data end to end (grown by half, not doubled, as it is most
//!   of a stream's memory). Replaying a stream (temporal queries, loading an aggregate) then reads
//!   two sequential runs of memory instead of taking a cache miss per event and another per data
//!   string, and an append writes into the stream's own buffers instead of allocating a string
//!   per event. The [`RecordedEvent`]s handed out are built on the way out.
//! * Stream ids live in an [`IndexSet`], so that the log names a stream by index and a stream's
//!   key is kept once; each stream's events sit at the same index in a separate list, so that the
//!   set's entries stay small (growing the set copies them all).
//! * The global log only says where each event lives: (stream index, index in that stream), 8
//!   bytes per event.
//! * Both lists are made of fixed-size chunks, so that growing them never copies (or page-faults
//!   in twice the size of) what is already there.
//! * Documents: a hash map per collection for point reads and writes, plus an ordered set of the
//!   keys (sharing them through `Arc<str>`) for the range reads of [`StoreRead::documents`].
//! * Hashing: foldhash, randomly seeded per process (keys such as user ids come from clients).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

use indexmap::{IndexMap, IndexSet};

use super::*;

type Hasher = foldhash::fast::RandomState;

/// Events per chunk of the log (a power of two).
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// Undo entries a transaction's buffer keeps for the next one (bigger buffers are freed).
const UNDO_KEEP: usize = 4096;

/// An event as its stream keeps it; its version is its index in the stream + 1.
struct Meta {
    timestamp: Timestamp,
    /// End of its data in [`Stream::data`]; the data starts where the previous event's ends.
    end: usize,
    /// Index in the global log (its position - 1).
    log_index: u32,
    /// Index of its type and schema in [`MemoryStore::types`].
    event_type: u32,
}

/// A stream's events, in version order, and their data end to end.
struct Stream {
    events: Vec<Meta>,
    data: String,
}

impl Stream {
    /// Where the data of the event at this index starts.
    fn data_start(&self, index: usize) -> usize {
        index.checked_sub(1).map_or(0, |i| self.events[i].end)
    }

    /// The data of the event at this index.
    fn data(&self, index: usize) -> &str {
        &self.data[self.data_start(index)..self.events[index].end]
    }
}

/// Where an event of the global log is kept.
#[derive(Clone, Copy)]
struct Entry {
    /// Index of its stream in [`MemoryStore::streams`].
    stream: u32,
    /// Index of the event in its stream's [`Stream::events`].
    index: u32,
}

/// A list in chunks of [`CHUNK`] items (every chunk but the last is full), so that growing it
/// never copies what is already there.
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    fn get(&self, index: usize) -> &T {
        &self.chunks[index >> CHUNK_BITS][index & (CHUNK - 1)]
    }

    fn get_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index >> CHUNK_BITS][index & (CHUNK - 1)]
    }

    fn push(&mut self, event: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(event),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(event);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn truncate(&mut self, len: usize) {
        while self.len > len {
            let last = self.chunks.last_mut().expect("a non-empty list has chunks");
            if last.is_empty() {
                self.chunks.pop();
                continue;
            }
            let n = last.len().min(self.len - len);
            last.truncate(last.len() - n);
            self.len -= n;
        }
    }
}

/// One collection's documents.
#[derive(Default)]
struct Collection {
    docs: IndexMap<Arc<str>, Box<str>, Hasher>,
    /// The keys of `docs`, in byte order.
    order: BTreeSet<Arc<str>>,
}

impl Collection {
    /// Sets a document, returning the previous value and the key as stored.
    fn put(&mut self, key: &str, value: Box<str>) -> (Arc<str>, Option<Box<str>>) {
        if let Some((_, k, v)) = self.docs.get_full_mut(key) {
            return (k.clone(), Some(std::mem::replace(v, value)));
        }
        let k: Arc<str> = Arc::from(key);
        self.docs.insert(k.clone(), value);
        self.order.insert(k.clone());
        (k, None)
    }

    /// Deletes a document, returning the key as it was stored and its value.
    fn remove(&mut self, key: &str) -> Option<(Arc<str>, Box<str>)> {
        let (_, k, v) = self.docs.swap_remove_full(key)?;
        self.order.remove(key);
        Some((k, v))
    }

    /// Puts back what [`Collection::put`] or [`Collection::remove`] changed.
    fn restore(&mut self, key: Arc<str>, old: Option<Box<str>>) {
        match old {
            Some(v) => {
                if let Some(slot) = self.docs.get_mut(&*key) {
                    *slot = v;
                } else {
                    self.order.insert(key.clone());
                    self.docs.insert(key, v);
                }
            }
            None => {
                self.remove(&key);
            }
        }
    }
}

#[derive(Default)]
pub struct MemoryStore {
    /// The global log; the event at index `i` has position `i + 1`.
    log: Chunked<Entry>,
    /// Every stream that has events. Its events are at the same index in `contents`, kept apart
    /// so that the set's entries stay small (growing the set copies them all).
    streams: IndexSet<StreamId, Hasher>,
    contents: Chunked<Stream>,
    /// Event types with their schema, named by index in the events: the schema costs an event
    /// no memory of its own.
    types: IndexSet<(Box<str>, Schema), Hasher>,
    /// Collections are never removed (clearing one empties it), so their indexes are stable.
    collections: IndexMap<Box<str>, Collection, Hasher>,
    /// `None`: never set, or set only by a transaction that rolled back.
    checkpoints: IndexMap<Box<str>, Option<Position>, Hasher>,
    /// Each stream's snapshots, ordered by version.
    snapshots: HashMap<StreamId, BTreeMap<Version, Snapshot>, Hasher>,
    /// The undo buffer of the last transaction, kept empty for the next one.
    spare_undo: Vec<Undo>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn stream(&self, id: &StreamId) -> Option<&Stream> {
        Some(self.contents.get(self.streams.get_index_of(id)?))
    }

    /// The event at this index of a stream, as handed out.
    ///
    /// (`visit_stream` builds its views inline instead of through one shared helper, keeping each
    /// event's data offset from the one before: a shared helper made the in-memory replay
    /// benchmarks 7-11% slower.)
    fn recorded(&self, id: StreamId, stream: &Stream, index: usize) -> RecordedEvent {
        let e = &stream.events[index];
        RecordedEvent {
            stream: id,
            version: index as Version + 1,
            position: e.log_index as Position + 1,
            event_type: self.types[e.event_type as usize].0.to_string(),
            schema: self.types[e.event_type as usize].1,
            timestamp: e.timestamp,
            data: stream.data(index).to_string(),
        }
    }
}

impl StoreRead for MemoryStore {
    fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self.stream(stream).map_or(0, |s| s.events.len() as Version))
    }

    fn visit_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
        visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
    ) -> Result<()> {
        let Some(s) = self.stream(stream) else {
            return Ok(());
        };
        let from = usize::try_from(after).map_or(s.events.len(), |a| a.min(s.events.len()));
        let mut start = s.data_start(from);
        for (i, e) in s.events[from..].iter().enumerate() {
            let version = (from + i) as Version + 1;
            if !upto.includes(version, e.timestamp) {
                break;
            }
            let (event_type, schema) = &self.types[e.event_type as usize];
            visit(EventView {
                position: e.log_index as Position + 1,
                version,
                event_type,
                schema: *schema,
                timestamp: e.timestamp,
                data: &s.data[start..e.end],
            })?;
            start = e.end;
        }
        Ok(())
    }

    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let start = usize::try_from(after).map_or(self.log.len, |a| a.min(self.log.len));
        let end = start + limit.min(self.log.len - start);
        Ok((start..end)
            .map(|i| {
                let at = self.log.get(i);
                let s = at.stream as usize;
                let id = self
                    .streams
                    .get_index(s)
                    .expect("a logged event's stream exists");
                self.recorded(id.clone(), self.contents.get(s), at.index as usize)
            })
            .collect())
    }

    fn head(&self) -> Result<Position> {
        Ok(self.log.len as Position)
    }

    fn snapshot(&self, stream: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
        Ok(self.snapshots.get(stream).and_then(|s| {
            s.values()
                .rev()
                .find(|snap| upto.includes(snap.version, snap.timestamp))
                .cloned()
        }))
    }

    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .collections
            .get(collection)
            .and_then(|c| c.docs.get(key))
            .map(|v| v.to_string()))
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let Some(c) = self.collections.get(collection) else {
            return Ok(Vec::new());
        };
        let lower = after.map_or(Unbounded, Excluded);
        Ok(c.order
            .range::<str, _>((lower, Unbounded))
            .take(limit)
            .map(|k| (k.to_string(), c.docs[&**k].to_string()))
            .collect())
    }

    fn document_range(
        &self,
        collection: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let Some(c) = self.collections.get(collection) else {
            return Ok(Vec::new());
        };
        if empty_range(from, to) {
            return Ok(Vec::new());
        }
        let range = c.order.range::<str, _>((from, to));
        let doc = |k: &Arc<str>| (k.to_string(), c.docs[&**k].to_string());
        Ok(match direction {
            Direction::Ascending => range.take(limit).map(doc).collect(),
            Direction::Descending => range.rev().take(limit).map(doc).collect(),
        })
    }

    fn checkpoint(&self, projection: &str) -> Result<Position> {
        Ok(self
            .checkpoints
            .get(projection)
            .copied()
            .flatten()
            .unwrap_or(0))
    }
}

impl EventStore for MemoryStore {
    type Tx<'a> = MemoryTx<'a>;

    fn begin(&mut self) -> Result<MemoryTx<'_>> {
        let undo = std::mem::take(&mut self.spare_undo);
        Ok(MemoryTx { store: self, undo })
    }
}

/// One write, remembered so that it can be taken back.
enum Undo {
    /// `n` events (and their data) were appended to the stream at this index (and to the log);
    /// `created`: the stream did not exist before (it is then the last one in the set).
    Append {
        stream: u32,
        n: u32,
        created: bool,
    },
    /// A document of the collection at this index was written or deleted; its old value.
    Document(u32, Arc<str>, Option<Box<str>>),
    /// The collection at this index was cleared; its old content.
    Collection(u32, Box<Collection>),
    /// The checkpoint at this index was set; its old value.
    Checkpoint(u32, Option<Position>),
    Snapshot(Box<(StreamId, Version, Option<Snapshot>)>),
    /// Boxed, like the other big variants: an undo entry is written per write, keep it small.
    #[allow(clippy::box_collection)]
    Snapshots(Box<HashMap<StreamId, BTreeMap<Version, Snapshot>, Hasher>>),
}

/// A transaction on a [`MemoryStore`].
pub struct MemoryTx<'a> {
    store: &'a mut MemoryStore,
    undo: Vec<Undo>,
}

impl Drop for MemoryTx<'_> {
    fn drop(&mut self) {
        let s = &mut *self.store;
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Append { stream, n, created } => {
                    s.log.truncate(s.log.len - n as usize);
                    let stream = stream as usize;
                    let st = s.contents.get_mut(stream);
                    let keep = st.events.len() - n as usize;
                    let data_len = st.data_start(keep);
                    st.events.truncate(keep);
                    st.data.truncate(data_len);
                    if created {
                        debug_assert!(st.events.is_empty() && stream + 1 == s.streams.len());
                        s.streams.pop();
                        s.contents.truncate(stream);
                    }
                }
                Undo::Document(c, key, old) => {
                    s.collections[c as usize].restore(key, old);
                }
                Undo::Collection(c, old) => {
                    s.collections[c as usize] = *old;
                }
                Undo::Checkpoint(p, old) => {
                    s.checkpoints[p as usize] = old;
                }
                Undo::Snapshot(b) => {
                    let (stream, v, old) = *b;
                    let snaps = s.snapshots.entry(stream).or_default();
                    match old {
                        Some(o) => snaps.insert(v, o),
                        None => snaps.remove(&v),
                    };
                }
                Undo::Snapshots(old) => s.snapshots = *old,
            }
        }
        if self.undo.capacity() <= UNDO_KEEP {
            s.spare_undo = std::mem::take(&mut self.undo);
        }
    }
}

delegate_store_read!(impl[] MemoryTx<'_>, |this| this.store);

/// An event type and schema, looked up in [`MemoryStore::types`] without building its key: it
/// hashes as the key's tuple does.
struct TypeKey<'a>(&'a str, Schema);

impl std::hash::Hash for TypeKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl indexmap::Equivalent<(Box<str>, Schema)> for TypeKey<'_> {
    fn equivalent(&self, key: &(Box<str>, Schema)) -> bool {
        *key.0 == *self.0 && key.1 == self.1
    }
}

/// Indexes are kept as `u32`: a store holds fewer than 2^32 events (and so streams).
fn index(i: usize) -> Result<u32> {
    u32::try_from(i).map_err(|_| StoreError::Io("the in-memory store is full".into()))
}

impl StoreWrite for MemoryTx<'_> {
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let s = &mut *self.store;
        let found = s.streams.get_index_of(stream);
        let actual = found.map_or(0, |i| s.contents.get(i).events.len() as Version);
        if let ExpectedVersion::Exact(expected) = expected {
            if expected != actual {
                return Err(StoreError::Conflict { expected, actual });
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Every index below fits once these do: there are no more streams or types than events.
        let n = index(events.len())?;
        let first = index(s.log.len)?;
        index(s.log.len + events.len())?;
        index(s.types.len() + events.len())?;
        let bytes: usize = events.iter().map(|e| e.data.len()).sum();
        let (slot, created) = match found {
            Some(i) => {
                let st = s.contents.get_mut(i);
                st.events.reserve(events.len());
                if st.data.capacity() - st.data.len() < bytes {
                    // Grown by half rather than doubled: a stream's data is most of its memory.
                    st.data.reserve_exact(bytes.max(st.data.len() / 2));
                }
                (i, false)
            }
            None => {
                // Sized exactly: most streams are created by one event and few grow much.
                let st = Stream {
                    events: Vec::with_capacity(events.len()),
                    data: String::with_capacity(bytes),
                };
                s.contents.push(st);
                (s.streams.insert_full(stream.clone()).0, true)
            }
        };
        let slot32 = slot as u32;
        let st = s.contents.get_mut(slot);
        let mut recorded = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let key = TypeKey(e.event_type.as_str(), e.schema);
            let event_type = match s.types.get_index_of(&key) {
                Some(t) => t,
                None => s.types.insert_full((key.0.into(), key.1)).0,
            };
            let version = actual + 1 + i as Version;
            st.data.push_str(&e.data);
            st.events.push(Meta {
                timestamp: e.timestamp,
                end: st.data.len(),
                log_index: first + i as u32,
                event_type: event_type as u32,
            });
            s.log.push(Entry {
                stream: slot32,
                index: (actual + i as Version) as u32,
            });
            recorded.push(RecordedEvent {
                stream: stream.clone(),
                version,
                position: first as Position + 1 + i as Position,
                event_type: e.event_type,
                schema: e.schema,
                timestamp: e.timestamp,
                data: e.data,
            });
        }
        self.undo.push(Undo::Append {
            stream: slot32,
            n,
            created,
        });
        Ok(recorded)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        let s = &mut *self.store;
        let c = match s.collections.get_index_of(collection) {
            Some(c) => c,
            None if value.is_none() => return Ok(()),
            None => {
                s.collections
                    .insert_full(collection.into(), Collection::default())
                    .0
            }
        };
        let col = &mut s.collections[c];
        let (key, old) = match value {
            Some(v) => col.put(key, v.into()),
            None => match col.remove(key) {
                Some((key, old)) => (key, Some(old)),
                None => return Ok(()),
            },
        };
        self.undo.push(Undo::Document(index(c)?, key, old));
        Ok(())
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
        let Some((c, _, col)) = self.store.collections.get_full_mut(collection) else {
            return Ok(());
        };
        let old = std::mem::take(col);
        self.undo.push(Undo::Collection(index(c)?, Box::new(old)));
        Ok(())
    }

    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()> {
        let checkpoints = &mut self.store.checkpoints;
        let (p, old) = match checkpoints.get_full_mut(projection) {
            Some((p, _, slot)) => (p, slot.replace(position)),
            None => (
                checkpoints.insert_full(projection.into(), Some(position)).0,
                None,
            ),
        };
        self.undo.push(Undo::Checkpoint(index(p)?, old));
        Ok(())
    }

    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()> {
        let old = self
            .store
            .snapshots
            .entry(stream.clone())
            .or_default()
            .insert(snapshot.version, snapshot.clone());
        self.undo.push(Undo::Snapshot(Box::new((
            stream.clone(),
            snapshot.version,
            old,
        ))));
        Ok(())
    }

    fn clear_snapshots(&mut self) -> Result<()> {
        let old = std::mem::take(&mut self.store.snapshots);
        self.undo.push(Undo::Snapshots(Box::new(old)));
        Ok(())
    }

    fn commit(mut self) -> Result<()> {
        self.undo.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> NewEvent {
        NewEvent {
            event_type: format!("T{}", n % 3),
            schema: Schema(1 + (n % 2) as u32),
            timestamp: Timestamp(n as i64),
            data: format!("{{\"n\":{n}}}"),
        }
    }

    fn all(store: &MemoryStore) -> Vec<RecordedEvent> {
        store.read_all(0, usize::MAX).unwrap()
    }

    /// Appends across chunk boundaries, rolled back and committed, in several streams: the log
    /// and every stream read back exactly as a plain list would have them.
    #[test]
    fn log_chunks_survive_appends_and_rollbacks_across_boundaries() {
        let mut store = MemoryStore::new();
        let streams: Vec<StreamId> = (0..3)
            .map(|i| StreamId::new("C", format!("s{i}")))
            .collect();
        let mut expected: Vec<RecordedEvent> = Vec::new();
        let mut n = 0;
        for round in 0..12 {
            let mut tx = store.begin().unwrap();
            let mut batch = Vec::new();
            for (k, stream) in streams.iter().enumerate() {
                // Sizes chosen so that batches start and end on and around chunk boundaries.
                let size = [CHUNK - 1, 1, CHUNK / 2 + 1, 0, CHUNK][(round + k) % 5];
                let events: Vec<NewEvent> = (0..size).map(|i| ev(n + i)).collect();
                n += size;
                batch.extend(tx.append(stream, ExpectedVersion::Any, events).unwrap());
            }
            // A stream created and dropped by the same transaction.
            batch.extend(
                tx.append(
                    &StreamId::new("C", format!("new{round}")),
                    ExpectedVersion::Exact(0),
                    vec![ev(0)],
                )
                .unwrap(),
            );
            assert_eq!(
                tx.head().unwrap(),
                (expected.len() + batch.len()) as Position
            );
            if round % 3 == 1 {
                drop(tx);
            } else {
                tx.commit().unwrap();
                expected.extend(batch);
                let mut tx = store.begin().unwrap();
                tx.append(&streams[0], ExpectedVersion::Any, vec![ev(1)])
                    .unwrap();
            }
            assert_eq!(store.head().unwrap(), expected.len() as Position);
            assert_eq!(all(&store), expected);
        }
        assert!(expected.len() > 3 * CHUNK);
        for (p, e) in expected.iter().enumerate() {
            assert_eq!(e.position, p as Position + 1);
        }
        let created = (0..12).map(|round| StreamId::new("C", format!("new{round}")));
        for stream in streams.iter().cloned().chain(created) {
            let mine: Vec<_> = expected
                .iter()
                .filter(|e| e.stream == stream)
                .cloned()
                .collect();
            assert_eq!(store.read_stream(&stream, 0, Upto::End).unwrap(), mine);
            assert_eq!(
                store.stream_version(&stream).unwrap(),
                mine.len() as Version
            );
        }
        let tail = store.read_all(CHUNK as Position - 2, 5).unwrap();
        assert_eq!(tail, expected[CHUNK - 2..CHUNK + 3]);
        assert!(store
            .read_all(expected.len() as Position + 7, 5)
            .unwrap()
            .is_empty());
    }

    /// One key written, deleted and written again in a transaction that rolls back.
    #[test]
    fn document_rewrites_roll_back_in_order() {
        let mut store = MemoryStore::new();
        let mut tx = store.begin().unwrap();
        tx.put_document("c", "b", Some("1")).unwrap();
        tx.put_document("c", "d", Some("2")).unwrap();
        tx.commit().unwrap();
        let before = store.documents("c", None, usize::MAX).unwrap();

        let mut tx = store.begin().unwrap();
        tx.put_document("c", "a", Some("x")).unwrap();
        tx.put_document("c", "a", None).unwrap();
        tx.put_document("c", "a", Some("y")).unwrap();
        tx.put_document("c", "b", None).unwrap();
        tx.put_document("c", "b", Some("z")).unwrap();
        tx.put_document("c", "d", Some("w")).unwrap();
        tx.put_document("c", "e", None).unwrap();
        tx.put_document("other", "k", None).unwrap();
        assert_eq!(
            tx.documents("c", None, usize::MAX).unwrap(),
            [("a", "y"), ("b", "z"), ("d", "w")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        tx.clear_collection("c").unwrap();
        tx.put_document("c", "d", Some("v")).unwrap();
        assert_eq!(tx.document("c", "b").unwrap(), None);
        drop(tx);

        assert_eq!(store.documents("c", None, usize::MAX).unwrap(), before);
        assert_eq!(store.documents("c", Some("b"), 10).unwrap(), before[1..]);
        assert_eq!(store.document("c", "a").unwrap(), None);
        assert_eq!(store.document("c", "b").unwrap().as_deref(), Some("1"));
        assert!(store.documents("other", None, 10).unwrap().is_empty());
    }
}
