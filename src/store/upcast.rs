//! Upcasters: stored events stay readable for ever.
//!
//! Every event is stored with the [`Schema`] its data was written in, and is never rewritten.
//! When an aggregate changes the shape of one of its event types, it registers an
//! [`Upcaster`] for that type: a function from data of the old schema to data of the next one
//! (the type's current schema is then one past its newest upcaster's `from`). [`Upcasted`] wraps
//! a store and applies them as events are read, so that whatever reads the log through it (the
//! engine's replays, projections' catch-up, rebuild and check, temporal queries,
//! `GetUserHistory`, `ReadEvents`) sees every event in its type's current schema only.
//!
//! An event of a schema newer than the code knows, or older with no chain of upcasters up to
//! the current one, is never read as if it were current: the read fails with
//! [`StoreError::Corrupt`], naming the event. The same check guards appends through the wrapper
//! (an import of such an event is refused before it is stored).
//!
//! An upcaster changes an event's data, not its type, stream, version, time or position.
//! Events of types no aggregate registered upcasters for are in [`FIRST_SCHEMA`] (or refused).

use std::ops::{Bound, Deref};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::*;

/// Brings an event's data (a JSON object) from one schema to the next; an `Err` says why the
/// data cannot be read (the event is then reported as corrupt).
pub type UpcastFn = fn(Map<String, Value>) -> Result<Map<String, Value>, String>;

/// One step of an event type's history: data of schema `from` becomes data of `from + 1`.
#[derive(Clone, Copy, Debug)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: Schema,
    pub upcast: UpcastFn,
}

/// The current schema of `event_type` given a list of upcasters: one past the newest `from`
/// registered for it, else [`FIRST_SCHEMA`].
pub fn current(upcasters: &[Upcaster], event_type: &str) -> Schema {
    upcasters
        .iter()
        .filter(|u| u.event_type == event_type)
        .map(|u| Schema(u.from.0 + 1))
        .max()
        .unwrap_or(FIRST_SCHEMA)
}

/// An event type, its current schema, and its upcasters by the schema they start from.
type TypeHistory = (&'static str, Schema, Vec<(Schema, UpcastFn)>);

/// Every registered upcaster, by event type.
#[derive(Clone, Debug)]
pub struct Upcasters {
    /// Each event type with upcasters: its current schema and its steps, ordered by `from`.
    types: Vec<TypeHistory>,
    /// The newest current schema of any type: while it is [`FIRST_SCHEMA`], an event in
    /// [`FIRST_SCHEMA`] is current whatever its type, with nothing looked up.
    newest: Schema,
}

impl Default for Upcasters {
    fn default() -> Self {
        Self {
            types: Vec::new(),
            newest: FIRST_SCHEMA,
        }
    }
}

impl Upcasters {
    /// None: every event must be in [`FIRST_SCHEMA`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds upcasters. Panics if one event type gets two upcasters from the same schema (a
    /// programming error, found at start).
    pub fn add(&mut self, upcasters: &[Upcaster]) {
        for u in upcasters {
            let at = match self.types.iter().position(|t| t.0 == u.event_type) {
                Some(at) => at,
                None => {
                    self.types.push((u.event_type, FIRST_SCHEMA, Vec::new()));
                    self.types.len() - 1
                }
            };
            let (_, current, steps) = &mut self.types[at];
            assert!(
                steps.iter().all(|(from, _)| *from != u.from),
                "two upcasters of '{}' from schema {}",
                u.event_type,
                u.from
            );
            steps.push((u.from, u.upcast));
            steps.sort_by_key(|(from, _)| *from);
            *current = (*current).max(Schema(u.from.0 + 1));
            self.newest = self.newest.max(*current);
        }
    }

    /// The current schema of an event type.
    pub fn current(&self, event_type: &str) -> Schema {
        self.find(event_type).map_or(FIRST_SCHEMA, |t| t.1)
    }

    fn find(&self, event_type: &str) -> Option<&TypeHistory> {
        self.types.iter().find(|t| t.0 == event_type)
    }

    /// Whether the event at `position` can be read in its type's current schema: `Ok(None)` if
    /// it is in it already, `Ok(Some(data))` brought to it, else why not (a corrupt event).
    pub fn upcast(
        &self,
        position: Position,
        event_type: &str,
        schema: Schema,
        data: &str,
    ) -> Result<Option<(Schema, String)>> {
        if schema == FIRST_SCHEMA && self.newest == FIRST_SCHEMA {
            return Ok(None);
        }
        let corrupt = |why: String| {
            StoreError::Corrupt(format!(
                "event at position {position} ({event_type}, schema {schema}): {why}"
            ))
        };
        let steps = self.path(event_type, schema).map_err(corrupt)?;
        if steps.is_empty() {
            return Ok(None);
        }
        if data == "null" {
            // A forgotten event's data (store::seal): nothing left to bring forward.
            return Ok(Some((self.current(event_type), data.to_string())));
        }
        let mut object: Map<String, Value> = serde_json::from_str(data)
            .map_err(|e| corrupt(format!("its data is not a JSON object: {e}")))?;
        let mut at = schema;
        for step in steps {
            object = step(object)
                .map_err(|e| corrupt(format!("the upcaster from schema {at} refused it: {e}")))?;
            at = Schema(at.0 + 1);
        }
        let data = serde_json::to_string(&object).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some((at, data)))
    }

    /// Whether an event of this type and schema can be read (brought to the current schema).
    pub fn readable(&self, event_type: &str, schema: Schema) -> Result<(), String> {
        if schema == FIRST_SCHEMA && self.newest == FIRST_SCHEMA {
            return Ok(());
        }
        self.path(event_type, schema).map(drop)
    }

    /// The steps from `schema` to the type's current schema (none if it is current).
    fn path(&self, event_type: &str, schema: Schema) -> Result<Vec<UpcastFn>, String> {
        let (current, steps) = match self.find(event_type) {
            Some((_, current, steps)) => (*current, &steps[..]),
            None => (FIRST_SCHEMA, &[][..]),
        };
        if schema > current {
            return Err(format!(
                "this build knows {event_type} up to schema {current} (written by a newer cqrs?)"
            ));
        }
        let mut path = Vec::new();
        let mut at = schema;
        while at < current {
            match steps.iter().find(|(from, _)| *from == at) {
                Some((_, f)) => path.push(*f),
                None => {
                    return Err(format!(
                        "no upcaster of {event_type} from schema {at} (its current schema is \
                         {current})"
                    ))
                }
            }
            at = Schema(at.0 + 1);
        }
        Ok(path)
    }
}

/// A store (or a transaction: see [`EventStore::begin`]) whose events are read in their type's
/// current schema. Everything else is the inner store's, forwarded method by method.
pub struct Upcasted<S, U = Arc<Upcasters>> {
    inner: S,
    upcasters: U,
}

impl<S> Upcasted<S> {
    pub fn new(inner: S, upcasters: Arc<Upcasters>) -> Self {
        Self { inner, upcasters }
    }
}

impl<S, U> Upcasted<S, U> {
    /// The store itself: its events as stored.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: StoreRead, U: Deref<Target = Upcasters>> StoreRead for Upcasted<S, U> {
    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        self.inner.stream_version(stream)
    }

    fn visit_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
        visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
    ) -> Result<()> {
        let upcasters = &*self.upcasters;
        self.inner
            .visit_stream(stream, after, upto, &mut |e| match upcasters.upcast(
                e.position,
                e.event_type,
                e.schema,
                e.data,
            )? {
                None => visit(e),
                Some((schema, data)) => visit(EventView {
                    schema,
                    data: &data,
                    ..e
                }),
            })
    }

    /// Not forwarded: read through [`Upcasted::visit_stream`], so that it is upcast.
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

    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let mut events = self.inner.read_all(after, limit)?;
        for e in &mut events {
            if let Some((schema, data)) =
                self.upcasters
                    .upcast(e.position, &e.event_type, e.schema, &e.data)?
            {
                e.schema = schema;
                e.data = data;
            }
        }
        Ok(events)
    }

    fn head(&self) -> Result<Position> {
        self.inner.head()
    }

    fn snapshot(&self, stream: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
        self.inner.snapshot(stream, upto)
    }

    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        self.inner.document(collection, key)
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        self.inner.documents(collection, after, limit)
    }

    fn document_range(
        &self,
        collection: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        self.inner
            .document_range(collection, from, to, direction, limit)
    }

    fn checkpoint(&self, projection: &str) -> Result<Position> {
        self.inner.checkpoint(projection)
    }
}

impl<T: StoreWrite, U: Deref<Target = Upcasters>> StoreWrite for Upcasted<T, U> {
    /// Refuses (as [`StoreError::Corrupt`], writing nothing) an event that could not be read
    /// back: of a schema newer than the code knows, or older with no upcasters to the current.
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        for e in &events {
            self.upcasters
                .readable(&e.event_type, e.schema)
                .map_err(|why| {
                    StoreError::Corrupt(format!(
                        "an event of {}/{} ({}, schema {}) would be unreadable: {why}",
                        stream.category, stream.id, e.event_type, e.schema
                    ))
                })?;
        }
        self.inner.append(stream, expected, events)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        self.inner.put_document(collection, key, value)
    }

    fn put_cold_document(&mut self, collection: &str, key: &str, value: &str) -> Result<()> {
        self.inner.put_cold_document(collection, key, value)
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
        self.inner.clear_collection(collection)
    }

    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()> {
        self.inner.set_checkpoint(projection, position)
    }

    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()> {
        self.inner.put_snapshot(stream, snapshot)
    }

    fn clear_snapshots(&mut self) -> Result<()> {
        self.inner.clear_snapshots()
    }

    fn commit(self) -> Result<()> {
        self.inner.commit()
    }
}

impl<S: EventStore> EventStore for Upcasted<S> {
    type Tx<'a>
        = Upcasted<S::Tx<'a>, &'a Upcasters>
    where
        Self: 'a;

    fn begin(&mut self) -> Result<Self::Tx<'_>> {
        Ok(Upcasted {
            inner: self.inner.begin()?,
            upcasters: &*self.upcasters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// `{"fullName": x}` (schema 1) becomes `{"name": x}` (schema 2); schema 2 adds `"tags": []`
    /// (schema 3).
    fn rename_full_name(mut data: Map<String, Value>) -> Result<Map<String, Value>, String> {
        let name = data.shift_remove("fullName").ok_or("no fullName")?;
        data.insert("name".into(), name);
        Ok(data)
    }

    fn add_tags(mut data: Map<String, Value>) -> Result<Map<String, Value>, String> {
        data.insert("tags".into(), Value::Array(Vec::new()));
        Ok(data)
    }

    const UPCASTERS: &[Upcaster] = &[
        Upcaster {
            event_type: "Made",
            from: Schema(2),
            upcast: add_tags,
        },
        Upcaster {
            event_type: "Made",
            from: FIRST_SCHEMA,
            upcast: rename_full_name,
        },
    ];

    fn event(kind: &str, schema: u32, data: &str) -> NewEvent {
        NewEvent {
            event_type: kind.into(),
            schema: Schema(schema),
            timestamp: crate::timestamp::Timestamp(1),
            data: data.into(),
        }
    }

    fn upcasters() -> Arc<Upcasters> {
        let mut u = Upcasters::new();
        u.add(UPCASTERS);
        Arc::new(u)
    }

    #[test]
    fn the_current_schema_is_one_past_the_newest_upcaster() {
        let u = upcasters();
        assert_eq!(u.current("Made"), Schema(3));
        assert_eq!(current(UPCASTERS, "Made"), Schema(3));
        assert_eq!(u.current("Other"), FIRST_SCHEMA);
        assert_eq!(current(UPCASTERS, "Other"), FIRST_SCHEMA);
    }

    /// Every read path of the wrapper (a stream lent, a stream copied, the global log, inside a
    /// transaction too) sees events in their current schema; the store keeps them as written.
    #[test]
    fn every_read_sees_the_current_schema_and_the_store_keeps_what_was_written() {
        let mut store = Upcasted::new(MemoryStore::new(), upcasters());
        let s = StreamId::new("C", "a");
        let mut tx = store.begin().unwrap();
        let old = [
            event("Made", 1, r#"{"id":"a","fullName":"Ada"}"#),
            event("Made", 2, r#"{"id":"a","name":"Bob"}"#),
            event("Made", 3, r#"{"id":"a","name":"Cy","tags":[1]}"#),
            event("Other", 1, r#"{"x":1}"#),
        ];
        tx.append(&s, ExpectedVersion::Exact(0), old.to_vec())
            .unwrap();
        let expected = [
            (3, r#"{"id":"a","name":"Ada","tags":[]}"#),
            (3, r#"{"id":"a","name":"Bob","tags":[]}"#),
            (3, r#"{"id":"a","name":"Cy","tags":[1]}"#),
            (1, r#"{"x":1}"#),
        ];
        let shapes = |events: Vec<RecordedEvent>| -> Vec<(u32, String)> {
            events.into_iter().map(|e| (e.schema.0, e.data)).collect()
        };
        let want: Vec<(u32, String)> = expected.iter().map(|(s, d)| (*s, d.to_string())).collect();
        assert_eq!(shapes(tx.read_all(0, 10).unwrap()), want);
        tx.commit().unwrap();
        assert_eq!(shapes(store.read_all(0, 10).unwrap()), want);
        assert_eq!(shapes(store.read_stream(&s, 0, Upto::End).unwrap()), want);
        let mut lent = Vec::new();
        store
            .visit_stream(&s, 1, Upto::Version(3), &mut |e| {
                lent.push((e.schema.0, e.data.to_string()));
                Ok(())
            })
            .unwrap();
        assert_eq!(lent, want[1..3]);
        // As stored: untouched.
        let stored: Vec<(u32, String)> = store
            .inner()
            .read_all(0, 10)
            .unwrap()
            .into_iter()
            .map(|e| (e.schema.0, e.data))
            .collect();
        let written: Vec<(u32, String)> =
            old.iter().map(|e| (e.schema.0, e.data.clone())).collect();
        assert_eq!(stored, written);
    }

    #[test]
    fn a_newer_or_unreachable_schema_is_a_corrupt_event_and_is_not_appended() {
        let mut inner = MemoryStore::new();
        let s = StreamId::new("C", "a");
        let mut tx = inner.begin().unwrap();
        tx.append(
            &s,
            ExpectedVersion::Any,
            vec![
                event("Made", 4, r#"{"id":"a"}"#),
                event("Other", 2, r#"{}"#),
                event("Made", 1, r#"{"id":"a"}"#),
                event("Made", 0, r#"{"id":"a"}"#),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
        let store = Upcasted::new(inner, upcasters());
        let read = |after: u64| store.read_all(after, 1).unwrap_err();
        let messages = [
            "event at position 1 (Made, schema 4): this build knows Made up to schema 3 \
             (written by a newer cqrs?)",
            "event at position 2 (Other, schema 2): this build knows Other up to schema 1 \
             (written by a newer cqrs?)",
            "event at position 3 (Made, schema 1): the upcaster from schema 1 refused it: no \
             fullName",
            "event at position 4 (Made, schema 0): no upcaster of Made from schema 0 (its \
             current schema is 3)",
        ];
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(read(i as u64), StoreError::Corrupt(m.to_string()));
        }
        assert!(matches!(
            store.read_stream(&s, 0, Upto::End),
            Err(StoreError::Corrupt(_))
        ));

        let mut store = store;
        let mut tx = store.begin().unwrap();
        let refused = tx.append(
            &StreamId::new("C", "b"),
            ExpectedVersion::Exact(0),
            vec![event("Made", 3, "{}"), event("Made", 9, "{}")],
        );
        assert!(matches!(refused, Err(StoreError::Corrupt(m)) if m.contains("schema 9")));
        assert_eq!(tx.head().unwrap(), 4, "nothing of the refused append");
    }

    /// A step that works from any schema: it moves `at` on by one and notes where it was.
    fn step(mut data: Map<String, Value>) -> Result<Map<String, Value>, String> {
        let at = data["at"].as_u64().ok_or("no at")?;
        data["trail"]
            .as_array_mut()
            .ok_or("no trail")?
            .push(at.into());
        data["at"] = (at + 1).into();
        Ok(data)
    }

    proptest::proptest! {
        /// For any upcasters (some steps missing) and events of any schema: every read path
        /// gives an event in its type's current schema, having gone through each step from its
        /// own schema exactly once in order, or fails as corrupt exactly when a step is missing
        /// or the schema is newer than the current one; the store keeps what was written.
        #[test]
        fn reads_go_through_every_step_or_fail(
            steps in proptest::collection::btree_set((0usize..2, 0u32..6), 0..8),
            events in proptest::collection::vec((0usize..3, 0u32..8), 1..20),
        ) {
            const TYPES: [&str; 3] = ["A", "B", "C"];
            let list: Vec<Upcaster> = steps
                .iter()
                .map(|&(t, from)| Upcaster { event_type: TYPES[t], from: Schema(from), upcast: step })
                .collect();
            let mut upcasters = Upcasters::new();
            upcasters.add(&list);
            let mut inner = MemoryStore::new();
            let mut tx = inner.begin().unwrap();
            let written: Vec<NewEvent> = events
                .iter()
                .map(|&(t, schema)| {
                    event(TYPES[t], schema, &format!(r#"{{"at":{schema},"trail":[]}}"#))
                })
                .collect();
            let s = StreamId::new("C", "a");
            tx.append(&s, ExpectedVersion::Any, written.clone()).unwrap();
            tx.commit().unwrap();
            let store = Upcasted::new(inner, Arc::new(upcasters));
            for (i, &(t, schema)) in events.iter().enumerate() {
                let current = current(&list, TYPES[t]);
                let reachable = schema <= current.0
                    && (schema..current.0).all(|k| steps.contains(&(t, k)));
                let got = store.read_all(i as u64, 1);
                let mut lent = None;
                let visited = store.visit_stream(&s, i as u64, Upto::Version(i as u64 + 1), &mut |e| {
                    lent = Some((e.schema, e.data.to_string()));
                    Ok(())
                });
                if reachable {
                    let trail: Vec<u32> = (schema..current.0).collect();
                    let want = serde_json::json!({"at": current.0, "trail": trail}).to_string();
                    let got = got.unwrap();
                    proptest::prop_assert_eq!((got[0].schema, got[0].data.clone()), (current, want.clone()));
                    visited.unwrap();
                    proptest::prop_assert_eq!(lent, Some((current, want)));
                } else {
                    proptest::prop_assert!(matches!(got, Err(StoreError::Corrupt(_))));
                    proptest::prop_assert!(matches!(visited, Err(StoreError::Corrupt(_))));
                }
            }
            let stored: Vec<(Schema, String)> = store.inner().read_all(0, 100).unwrap()
                .into_iter().map(|e| (e.schema, e.data)).collect();
            let kept: Vec<(Schema, String)> = written.into_iter().map(|e| (e.schema, e.data)).collect();
            proptest::prop_assert_eq!(stored, kept);
        }
    }

    #[test]
    #[should_panic(expected = "two upcasters of 'Made' from schema 1")]
    fn two_upcasters_from_one_schema_are_refused() {
        let mut u = Upcasters::new();
        u.add(UPCASTERS);
        u.add(&UPCASTERS[1..]);
    }
}
