//! What the store knows of its own file without asking SQLite: the number and version of
//! streams, and the row number of projection documents.
//!
//! With them, a command to a known user runs two statements of its own, both by number (insert
//! the event, rewrite the document by its row number), where it ran four: the stream's number by
//! its text key, the stream's version, the insert, and the document's upsert by its text key.
//! (The temporal read model rewrites one more document, by number as well; its batch adds the
//! projections' checkpoints; the tests of `mod.rs` list them.)
//!
//! A stream looked up and not found is kept too, as having no events: a create then looks its
//! stream up once (when its aggregate is loaded), not twice (the load, then the append).
//!
//! Why an entry stays true: only this connection writes (the lock is exclusive), and every
//! write it makes to what an entry records goes through this store, which updates the entry:
//! an append sets its stream's number and version, a document written gets its row number, a
//! document deleted or a collection cleared is forgotten. Entries follow the connection's view, a
//! transaction's own writes included; a transaction that ends without a successful commit
//! empties the whole cache, since some entries may then be of writes that were rolled back.
//! Bounded: each kind is emptied when full (an entry is then looked up again once).

use std::collections::HashMap;

use super::*;

/// Entries of each kind kept by default: as many as the node's default aggregate cache.
pub(super) const CAPACITY: usize = 100_000;

pub(super) struct Known {
    /// By category, then id; `None`: the stream has no events (it was looked up and not found).
    streams: TwoKeys<Option<KnownStream>>,
    /// Row numbers by collection, then key.
    documents: TwoKeys<i64>,
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
            streams: TwoKeys::new(capacity),
            documents: TwoKeys::new(capacity),
        }
    }

    /// `None`: not known; `Some(None)`: known to have no events.
    pub(super) fn stream(&self, stream: &StreamId) -> Option<Option<KnownStream>> {
        self.streams.get(&stream.category, &stream.id)
    }

    pub(super) fn set_stream(&mut self, stream: &StreamId, known: Option<KnownStream>) {
        self.streams.set(&stream.category, &stream.id, known)
    }

    /// The row number of a document.
    pub(super) fn document(&self, collection: &str, key: &str) -> Option<i64> {
        self.documents.get(collection, key)
    }

    pub(super) fn set_document(&mut self, collection: &str, key: &str, doc_no: i64) {
        self.documents.set(collection, key, doc_no)
    }

    pub(super) fn forget_document(&mut self, collection: &str, key: &str) {
        self.documents.forget(collection, key)
    }

    pub(super) fn forget_collection(&mut self, collection: &str) {
        self.documents.forget_all(collection)
    }

    pub(super) fn clear(&mut self) {
        self.streams.clear();
        self.documents.clear();
    }
}

/// foldhash, randomly seeded per process: the keys are aggregate ids and document keys chosen
/// by clients.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Values under two text keys (a few outer ones, many inner ones), looked up by `&str` with
/// nothing allocated; at most `capacity` of them, all dropped when a new one would not fit.
struct TwoKeys<V> {
    maps: Map<String, Map<String, V>>,
    len: usize,
    capacity: usize,
}

impl<V: Copy> TwoKeys<V> {
    fn new(capacity: usize) -> Self {
        Self {
            maps: Map::default(),
            len: 0,
            capacity,
        }
    }

    fn get(&self, outer: &str, inner: &str) -> Option<V> {
        self.maps.get(outer)?.get(inner).copied()
    }

    fn set(&mut self, outer: &str, inner: &str, value: V) {
        if let Some(entry) = self.maps.get_mut(outer).and_then(|m| m.get_mut(inner)) {
            *entry = value;
            return;
        }
        if self.capacity == 0 {
            return;
        }
        if self.len >= self.capacity {
            self.clear();
        }
        let map = match self.maps.get_mut(outer) {
            Some(map) => map,
            None => self.maps.entry(outer.to_string()).or_default(),
        };
        map.insert(inner.to_string(), value);
        self.len += 1;
    }

    fn forget(&mut self, outer: &str, inner: &str) {
        if let Some(map) = self.maps.get_mut(outer) {
            if map.remove(inner).is_some() {
                self.len -= 1;
            }
        }
    }

    fn forget_all(&mut self, outer: &str) {
        if let Some(map) = self.maps.remove(outer) {
            self.len -= map.len();
        }
    }

    fn clear(&mut self) {
        self.maps.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_keys_count_what_they_hold_and_empty_when_full() {
        let mut m = TwoKeys::new(3);
        m.set("a", "x", 1);
        m.set("a", "y", 2);
        m.set("b", "z", 3);
        m.set("a", "x", 4); // a rewrite takes no room
        assert_eq!(
            (m.get("a", "x"), m.get("a", "y"), m.get("b", "z")),
            (Some(4), Some(2), Some(3))
        );
        m.forget("a", "y");
        m.forget("a", "nothing");
        m.set("c", "w", 5); // fits: two were held
        assert_eq!(m.get("c", "w"), Some(5));
        assert_eq!(m.get("a", "x"), Some(4));
        m.forget_all("a");
        m.forget_all("nothing");
        assert_eq!(m.get("a", "x"), None);
        m.set("d", "v", 6); // fits: two were held
        assert_eq!((m.get("b", "z"), m.get("c", "w")), (Some(3), Some(5)));
        m.set("e", "u", 7); // full: everything else goes
        assert_eq!(m.get("e", "u"), Some(7));
        for (o, i) in [("b", "z"), ("c", "w"), ("d", "v")] {
            assert_eq!(m.get(o, i), None);
        }
        let mut none = TwoKeys::new(0);
        none.set("a", "x", 1);
        assert_eq!(none.get("a", "x"), None);
    }
}
