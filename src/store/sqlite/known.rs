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
//! stream up once (when its aggregate is loaded), not twice (the load, then the append). And
//! when the store opens with no more streams than fit, all of them are read at once
//! ([`Known::know_all_streams`]): from then on a stream that is not known has no events, and a
//! create looks nothing up at all, until the cache is emptied (a rollback, or full).
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
    /// Every stream of the store is in `streams` (see [`Known::know_all_streams`]).
    all_streams: bool,
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
            all_streams: false,
        }
    }

    /// Most streams, and most documents, kept.
    pub(super) fn capacity(&self) -> usize {
        self.streams.capacity
    }

    /// Takes every stream of the store (category, id, number, version), if they fit: then a
    /// stream not known has no events. Whether they did.
    pub(super) fn know_all_streams(
        &mut self,
        streams: impl ExactSizeIterator<Item = (String, String, KnownStream)>,
    ) -> bool {
        if streams.len() > self.streams.capacity {
            return false;
        }
        self.streams.clear();
        for (category, id, known) in streams {
            self.streams.set(&category, &id, Some(known));
        }
        self.all_streams = true;
        true
    }

    /// `None`: not known; `Some(None)`: known to have no events.
    pub(super) fn stream(&self, stream: &StreamId) -> Option<Option<KnownStream>> {
        match self.streams.get(&stream.category, &stream.id) {
            None if self.all_streams => Some(None),
            known => known,
        }
    }

    pub(super) fn set_stream(&mut self, stream: &StreamId, known: Option<KnownStream>) {
        if known.is_none() && self.all_streams {
            return; // a stream not known has no events already
        }
        if self.streams.set(&stream.category, &stream.id, known) {
            self.all_streams = false;
        }
    }

    /// The row number of a document.
    pub(super) fn document(&self, collection: &str, key: &str) -> Option<i64> {
        self.documents.get(collection, key)
    }

    pub(super) fn set_document(&mut self, collection: &str, key: &str, doc_no: i64) {
        self.documents.set(collection, key, doc_no);
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
        self.all_streams = false;
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

    /// Sets a value; whether the others were dropped to make room (or it was not kept).
    fn set(&mut self, outer: &str, inner: &str, value: V) -> bool {
        if let Some(entry) = self.maps.get_mut(outer).and_then(|m| m.get_mut(inner)) {
            *entry = value;
            return false;
        }
        if self.capacity == 0 {
            return true;
        }
        let emptied = self.len >= self.capacity;
        if emptied {
            self.clear();
        }
        let map = match self.maps.get_mut(outer) {
            Some(map) => map,
            None => self.maps.entry(outer.to_string()).or_default(),
        };
        map.insert(inner.to_string(), value);
        self.len += 1;
        emptied
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

    fn stream(id: &str) -> StreamId {
        StreamId::new("User", id)
    }

    fn known(stream_no: i64, version: Version) -> KnownStream {
        KnownStream { stream_no, version }
    }

    /// A stream missing from the cache has no events only while the cache holds every stream:
    /// from `know_all_streams` until it is emptied (cleared, or full).
    #[test]
    fn a_stream_not_known_has_no_events_only_while_every_stream_is_known() {
        let mut k = Known::new(3);
        assert!(k.stream(&stream("a")).is_none(), "not known: ask SQLite");
        let all = |n: i64| {
            let v: Vec<_> = (1..=n)
                .map(|i| ("User".to_string(), format!("s{i}"), known(i, 1)))
                .collect();
            v.into_iter()
        };
        assert!(!k.know_all_streams(all(4)), "4 streams do not fit in 3");
        assert!(k.stream(&stream("a")).is_none());
        assert!(k.know_all_streams(all(2)));
        assert_eq!(k.stream(&stream("s1")).unwrap().unwrap().stream_no, 1);
        assert!(matches!(k.stream(&stream("a")), Some(None)), "no events");
        k.set_stream(&stream("a"), None);
        k.set_stream(&stream("a"), Some(known(3, 1))); // created: 3 of 3
        assert_eq!(k.stream(&stream("a")).unwrap().unwrap().version, 1);
        assert!(matches!(k.stream(&stream("b")), Some(None)));
        k.set_stream(&stream("b"), Some(known(4, 1))); // full: emptied
        assert!(k.stream(&stream("c")).is_none(), "ask SQLite again");
        assert!(k.know_all_streams(all(1)));
        k.clear(); // a rollback
        assert!(k.stream(&stream("c")).is_none());
        assert!(k.stream(&stream("s1")).is_none());
    }

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
