//! What the store knows of its own file without asking SQLite: the number and version of
//! streams, and the row number of projection documents.
//!
//! With them, a command to a known user runs two statements, both by number (insert the event,
//! rewrite the document by its row number), where it ran four: the stream's number by its text
//! key, the stream's version, the insert, and the document's upsert by its text key.
//!
//! Why an entry stays true: only this connection writes (the lock is exclusive), and every
//! write it makes to what an entry records goes through this store, which updates the entry:
//! an append sets its stream's version, a document written gets its row number, a document
//! deleted or a collection cleared is forgotten. Entries follow the connection's view, a
//! transaction's own writes included; a transaction that ends without a successful commit
//! empties the whole cache, since some entries may then be of writes that were rolled back.
//! Bounded: each kind is emptied when full (an entry is then looked up again once).

use std::collections::HashMap;

use super::*;

/// Entries of each kind kept by default: as many as the node's default aggregate cache.
pub(super) const CAPACITY: usize = 100_000;

/// foldhash, randomly seeded per process: the keys are aggregate ids and document keys chosen
/// by clients.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub(super) struct Known {
    /// Streams by category, then by id.
    streams: Map<String, Map<String, KnownStream>>,
    stream_count: usize,
    /// Row numbers by collection, then by key.
    documents: Map<String, Map<String, i64>>,
    document_count: usize,
    capacity: usize,
}

/// A stream's number and version, as the connection sees them.
#[derive(Clone, Copy, Debug)]
pub(super) struct KnownStream {
    pub(super) stream_no: i64,
    pub(super) version: Version,
}

impl Known {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            streams: Map::default(),
            stream_count: 0,
            documents: Map::default(),
            document_count: 0,
            capacity,
        }
    }

    pub(super) fn stream(&self, stream: &StreamId) -> Option<KnownStream> {
        self.streams.get(&stream.category)?.get(&stream.id).copied()
    }

    pub(super) fn set_stream(&mut self, stream: &StreamId, known: KnownStream) {
        let (category, id) = (stream.category.as_str(), stream.id.as_str());
        if let Some(entry) = self
            .streams
            .get_mut(category)
            .and_then(|ids| ids.get_mut(id))
        {
            *entry = known;
            return;
        }
        if self.capacity == 0 {
            return;
        }
        if self.stream_count >= self.capacity {
            self.streams.clear();
            self.stream_count = 0;
        }
        let ids = match self.streams.get_mut(category) {
            Some(ids) => ids,
            None => self.streams.entry(category.to_string()).or_default(),
        };
        ids.insert(id.to_string(), known);
        self.stream_count += 1;
    }

    /// The row number of a document.
    pub(super) fn document(&self, collection: &str, key: &str) -> Option<i64> {
        self.documents.get(collection)?.get(key).copied()
    }

    pub(super) fn set_document(&mut self, collection: &str, key: &str, doc_no: i64) {
        if let Some(entry) = self
            .documents
            .get_mut(collection)
            .and_then(|k| k.get_mut(key))
        {
            *entry = doc_no;
            return;
        }
        if self.capacity == 0 {
            return;
        }
        if self.document_count >= self.capacity {
            self.documents.clear();
            self.document_count = 0;
        }
        let keys = match self.documents.get_mut(collection) {
            Some(keys) => keys,
            None => self.documents.entry(collection.to_string()).or_default(),
        };
        keys.insert(key.to_string(), doc_no);
        self.document_count += 1;
    }

    pub(super) fn forget_document(&mut self, collection: &str, key: &str) {
        if let Some(keys) = self.documents.get_mut(collection) {
            if keys.remove(key).is_some() {
                self.document_count -= 1;
            }
        }
    }

    pub(super) fn forget_collection(&mut self, collection: &str) {
        if let Some(keys) = self.documents.remove(collection) {
            self.document_count -= keys.len();
        }
    }

    pub(super) fn clear(&mut self) {
        self.streams.clear();
        self.stream_count = 0;
        self.documents.clear();
        self.document_count = 0;
    }
}
