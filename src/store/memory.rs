//! [`MemoryStore`]: the whole store in memory. Writes no file; everything is gone when the
//! process ends. For tests and for `--in-memory` runs.
//!
//! A transaction writes straight into the store and keeps an undo log; dropping it without
//! `commit` plays the undo log backwards.

use std::collections::{BTreeMap, HashMap};

use super::*;

#[derive(Default)]
pub struct MemoryStore {
    /// The global log; the event at index `i` has position `i + 1`.
    log: Vec<RecordedEvent>,
    /// Indexes into `log` of each stream's events, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    documents: HashMap<String, BTreeMap<String, String>>,
    checkpoints: HashMap<String, Position>,
    /// Each stream's snapshots, ordered by version.
    snapshots: HashMap<StreamId, BTreeMap<Version, Snapshot>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StoreRead for MemoryStore {
    fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self.streams.get(stream).map_or(0, |s| s.len() as Version))
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
    ) -> Result<Vec<RecordedEvent>> {
        let Some(indexes) = self.streams.get(stream) else {
            return Ok(Vec::new());
        };
        Ok(indexes
            .iter()
            .skip(after as usize)
            .map(|&i| &self.log[i])
            .take_while(|e| upto.includes(e.version, e.timestamp))
            .cloned()
            .collect())
    }

    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let start = (after as usize).min(self.log.len());
        Ok(self.log[start..].iter().take(limit).cloned().collect())
    }

    fn head(&self) -> Result<Position> {
        Ok(self.log.len() as Position)
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
            .documents
            .get(collection)
            .and_then(|c| c.get(key))
            .cloned())
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(c) = self.documents.get(collection) else {
            return Ok(Vec::new());
        };
        let lower = after.map_or(Unbounded, |a| Excluded(a.to_string()));
        Ok(c.range((lower, Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn checkpoint(&self, projection: &str) -> Result<Position> {
        Ok(self.checkpoints.get(projection).copied().unwrap_or(0))
    }
}

impl EventStore for MemoryStore {
    type Tx<'a> = MemoryTx<'a>;

    fn begin(&mut self) -> Result<MemoryTx<'_>> {
        Ok(MemoryTx {
            store: self,
            undo: Vec::new(),
        })
    }
}

/// One write, remembered so that it can be taken back.
enum Undo {
    /// Events were appended to this stream (and to the log).
    Append(StreamId, usize),
    Document(String, String, Option<String>),
    Collection(String, BTreeMap<String, String>),
    Checkpoint(String, Option<Position>),
    Snapshot(StreamId, Version, Option<Snapshot>),
    Snapshots(HashMap<StreamId, BTreeMap<Version, Snapshot>>),
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
                Undo::Append(stream, n) => {
                    s.log.truncate(s.log.len() - n);
                    let indexes = s.streams.get_mut(&stream).expect("appended stream exists");
                    indexes.truncate(indexes.len() - n);
                    if indexes.is_empty() {
                        s.streams.remove(&stream);
                    }
                }
                Undo::Document(c, k, old) => {
                    let col = s.documents.entry(c).or_default();
                    match old {
                        Some(v) => col.insert(k, v),
                        None => col.remove(&k),
                    };
                }
                Undo::Collection(c, old) => {
                    s.documents.insert(c, old);
                }
                Undo::Checkpoint(p, old) => match old {
                    Some(v) => {
                        s.checkpoints.insert(p, v);
                    }
                    None => {
                        s.checkpoints.remove(&p);
                    }
                },
                Undo::Snapshot(stream, v, old) => {
                    let snaps = s.snapshots.entry(stream).or_default();
                    match old {
                        Some(o) => snaps.insert(v, o),
                        None => snaps.remove(&v),
                    };
                }
                Undo::Snapshots(old) => s.snapshots = old,
            }
        }
    }
}

impl StoreRead for MemoryTx<'_> {
    fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.store.stream_version(stream)
    }
    fn read_stream(&self, s: &StreamId, after: Version, upto: Upto) -> Result<Vec<RecordedEvent>> {
        self.store.read_stream(s, after, upto)
    }
    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.store.read_all(after, limit)
    }
    fn head(&self) -> Result<Position> {
        self.store.head()
    }
    fn snapshot(&self, stream: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
        self.store.snapshot(stream, upto)
    }
    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        self.store.document(collection, key)
    }
    fn documents(
        &self,
        c: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        self.store.documents(c, after, limit)
    }
    fn checkpoint(&self, projection: &str) -> Result<Position> {
        self.store.checkpoint(projection)
    }
}

impl StoreWrite for MemoryTx<'_> {
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Vec<RecordedEvent>> {
        let actual = self.store.stream_version(stream)?;
        if let ExpectedVersion::Exact(expected) = expected {
            if expected != actual {
                return Err(StoreError::Conflict { expected, actual });
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let s = &mut *self.store;
        let indexes = s.streams.entry(stream.clone()).or_default();
        let mut recorded = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let event = RecordedEvent {
                stream: stream.clone(),
                version: actual + 1 + i as Version,
                position: s.log.len() as Position + 1,
                event_type: e.event_type.clone(),
                timestamp: e.timestamp,
                data: e.data.clone(),
            };
            indexes.push(s.log.len());
            s.log.push(event.clone());
            recorded.push(event);
        }
        self.undo.push(Undo::Append(stream.clone(), events.len()));
        Ok(recorded)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        let col = self
            .store
            .documents
            .entry(collection.to_string())
            .or_default();
        let old = match value {
            Some(v) => col.insert(key.to_string(), v.to_string()),
            None => col.remove(key),
        };
        self.undo
            .push(Undo::Document(collection.to_string(), key.to_string(), old));
        Ok(())
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
        let old = self.store.documents.remove(collection).unwrap_or_default();
        self.undo
            .push(Undo::Collection(collection.to_string(), old));
        Ok(())
    }

    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()> {
        let old = self
            .store
            .checkpoints
            .insert(projection.to_string(), position);
        self.undo
            .push(Undo::Checkpoint(projection.to_string(), old));
        Ok(())
    }

    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()> {
        let old = self
            .store
            .snapshots
            .entry(stream.clone())
            .or_default()
            .insert(snapshot.version, snapshot.clone());
        self.undo
            .push(Undo::Snapshot(stream.clone(), snapshot.version, old));
        Ok(())
    }

    fn clear_snapshots(&mut self) -> Result<()> {
        let old = std::mem::take(&mut self.store.snapshots);
        self.undo.push(Undo::Snapshots(old));
        Ok(())
    }

    fn commit(mut self) -> Result<()> {
        self.undo.clear();
        Ok(())
    }
}
