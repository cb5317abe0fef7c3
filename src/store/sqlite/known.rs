//! What the store knows of its own file without asking SQLite.

use std::collections::HashMap;

use super::*;

/// Streams kept by default in a [`StreamCache`]: as many as the node's default aggregate cache.
pub const STREAM_CACHE: usize = 100_000;

/// The number and version of streams this store has appended to or looked up, so that an
/// append to a known stream needs no query for either (two of the five statements of a typical
/// command), and reading its events none for its number.
///
/// Why an entry stays true: only this connection writes (the lock is exclusive), and its only
/// write to a stream's number or version is [`StoreWrite::append`], which updates the entry.
/// Entries follow the connection's view, including a transaction's own appends; a transaction
/// that ends without a successful commit empties the cache, since some entries may then be of
/// appends that were rolled back. Bounded: emptied when full (each entry is then looked up
/// again once).
pub(super) struct StreamCache {
    /// foldhash, randomly seeded per process: the keys are aggregate ids chosen by clients.
    entries: HashMap<StreamId, Known, foldhash::fast::RandomState>,
    capacity: usize,
}

/// A stream's number and version, as the connection sees them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Known {
    pub(super) stream_no: i64,
    pub(super) version: Version,
}

impl StreamCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::default(),
            capacity,
        }
    }

    pub(super) fn get(&self, stream: &StreamId) -> Option<Known> {
        self.entries.get(stream).copied()
    }

    pub(super) fn put(&mut self, stream: &StreamId, known: Known) {
        if let Some(entry) = self.entries.get_mut(stream) {
            *entry = known;
            return;
        }
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        self.entries.insert(stream.clone(), known);
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }
}
