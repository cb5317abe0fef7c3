//! Every read, from the store or inside a transaction.

use std::cell::RefCell;

use rusqlite::{params, Connection, OptionalExtension};

use super::*;

/// The reads, on a connection or inside a transaction (which derefs to its connection).
pub(super) fn read<'c>(conn: &'c Connection, known: &'c RefCell<Known>) -> Reader<'c> {
    Reader { conn, known }
}

pub(super) struct Reader<'c> {
    conn: &'c Connection,
    /// Looked up first, and told what a lookup found (see `known.rs`).
    known: &'c RefCell<Known>,
}

impl Reader<'_> {
    /// The stream's number and version, if it has events.
    pub(super) fn stream(&self, s: &StreamId) -> Result<Option<KnownStream>> {
        if let Some(known) = self.known.borrow().stream(s) {
            return Ok(known);
        }
        let stream_no: Option<i64> = self
            .conn
            .prepare_cached("SELECT stream_no FROM streams WHERE category = ?1 AND stream = ?2")
            .and_then(|mut st| {
                st.query_row(params![s.category, s.id], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_error)?;
        let found = match stream_no {
            Some(stream_no) => Some(KnownStream {
                stream_no,
                version: self.version_of(stream_no)?,
            }),
            None => None,
        };
        self.known.borrow_mut().set_stream(s, found);
        Ok(found)
    }

    fn version_of(&self, stream_no: i64) -> Result<Version> {
        self.conn
            .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_no = ?1")
            .and_then(|mut st| st.query_row([stream_no], |r| r.get::<_, i64>(0)))
            .map(|v| v as Version)
            .map_err(sql_error)
    }
}

impl StoreRead for Reader<'_> {
    fn stream_version(&self, s: &StreamId) -> Result<Version> {
        Ok(self.stream(s)?.map_or(0, |k| k.version))
    }

    fn visit_stream(
        &self,
        s: &StreamId,
        after: Version,
        upto: Upto,
        visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
    ) -> Result<()> {
        // Bounded by version in SQL; a time bound is applied while stepping, in version order:
        // times never go backwards within a stream, so the first later event ends the read
        // (filtering on time in SQL would walk the index to the stream's end).
        let (max_version, max_time) = bounds(upto);
        let Some(KnownStream { stream_no, .. }) = self.stream(s)? else {
            return Ok(());
        };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT position, version, event_type, timestamp, data, schema FROM events
                 WHERE stream_no = ?1 AND version > ?2 AND version <= ?3
                 ORDER BY version",
            )
            .map_err(sql_error)?;
        let mut rows = st
            .query(params![stream_no, to_i64(after), max_version])
            .map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let text = |i: usize| -> Result<&str> {
                row.get_ref(i)
                    .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
                    .map_err(sql_error)
            };
            let timestamp: i64 = row.get(3).map_err(sql_error)?;
            if timestamp > max_time {
                break;
            }
            visit(EventView {
                position: row.get::<_, i64>(0).map_err(sql_error)? as Position,
                version: row.get::<_, i64>(1).map_err(sql_error)? as Version,
                event_type: text(2)?,
                schema: schema_of(row.get(5).map_err(sql_error)?)?,
                timestamp: Timestamp(timestamp),
                data: text(4)?,
            })?;
        }
        Ok(())
    }

    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e JOIN streams s ON s.stream_no = e.stream_no
             WHERE e.position > ?1 ORDER BY e.position LIMIT ?2"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(sql_error)?;
        let rows = st
            .query_map(params![to_i64(after), to_i64(limit as u64)], event_from_row)
            .map_err(sql_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
    }

    fn head(&self) -> Result<Position> {
        self.conn
            .prepare_cached("SELECT COALESCE(MAX(position), 0) FROM events")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map(|p| p as Position)
            .map_err(sql_error)
    }

    fn snapshot(&self, s: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
        let (max_version, max_time) = bounds(upto);
        self.conn
            .prepare_cached(
                "SELECT version, timestamp, state FROM snapshots
                 WHERE category = ?1 AND stream = ?2 AND version <= ?3 AND timestamp <= ?4
                 ORDER BY version DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row(params![s.category, s.id, max_version, max_time], |r| {
                    Ok(Snapshot {
                        version: r.get::<_, i64>(0)? as Version,
                        timestamp: Timestamp(r.get(1)?),
                        state: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(sql_error)
    }

    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        let known = self.known.borrow().document(collection, key);
        let value = match known {
            Some(doc_no) => self
                .conn
                .prepare_cached("SELECT value FROM documents WHERE doc_no = ?1")
                .and_then(|mut st| st.query_row([doc_no], |r| r.get(0)).optional()),
            None => self
                .conn
                .prepare_cached("SELECT value FROM documents WHERE collection = ?1 AND key = ?2")
                .and_then(|mut st| {
                    st.query_row(params![collection, key], |r| r.get(0))
                        .optional()
                }),
        };
        value.map_err(sql_error)
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT key, value FROM documents
                 WHERE collection = ?1 AND (?2 IS NULL OR key > ?2)
                 ORDER BY key LIMIT ?3",
            )
            .map_err(sql_error)?;
        let rows = st
            .query_map(params![collection, after, to_i64(limit as u64)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(sql_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
    }

    fn document_range(
        &self,
        collection: &str,
        from: Bound<&str>,
        to: Bound<&str>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        if empty_range(from, to) {
            return Ok(Vec::new());
        }
        // One statement per shape of the bounds (each cached), so that SQLite sees every bound
        // as a range on the (collection, key) index (`?2 IS NULL OR key > ?2` is not one);
        // absent bounds are left out of the text, and only what the text names is bound.
        // A bound parameter as the LIMIT of an ORDER BY lets SQLite's planner look at its value,
        // so such a statement is prepared again each time it is bound anew (it was 6% of a
        // streamed run): a seek (limit 1, as the projections' writes ask) has its limit in the
        // text instead.
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&collection];
        let mut sql = String::from("SELECT key, value FROM documents WHERE collection = ?");
        let limit_value = to_i64(limit as u64);
        for (bound, below) in [(&from, true), (&to, false)] {
            let (op, key) = match (bound, below) {
                (Bound::Included(k), true) => (">=", k),
                (Bound::Excluded(k), true) => (">", k),
                (Bound::Included(k), false) => ("<=", k),
                (Bound::Excluded(k), false) => ("<", k),
                (Bound::Unbounded, _) => continue,
            };
            sql.push_str(" AND key ");
            sql.push_str(op);
            sql.push_str(" ?");
            values.push(key);
        }
        sql.push_str(match direction {
            Direction::Ascending => " ORDER BY key ASC",
            Direction::Descending => " ORDER BY key DESC",
        });
        if limit == 1 {
            sql.push_str(" LIMIT 1");
        } else {
            sql.push_str(" LIMIT ?");
            values.push(&limit_value);
        }
        let mut st = self.conn.prepare_cached(&sql).map_err(sql_error)?;
        let rows = st
            .query_map(values.as_slice(), |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql_error)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql_error)
    }

    fn checkpoint(&self, projection: &str) -> Result<Position> {
        self.conn
            .prepare_cached("SELECT position FROM checkpoints WHERE projection = ?1")
            .and_then(|mut st| {
                st.query_row([projection], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|p| p.unwrap_or(0) as Position)
            .map_err(sql_error)
    }
}

/// SQL bounds (max version, max time) for an [`Upto`].
fn bounds(upto: Upto) -> (i64, i64) {
    match upto {
        Upto::End => (i64::MAX, i64::MAX),
        Upto::Version(v) => (to_i64(v), i64::MAX),
        Upto::Time(t) => (i64::MAX, t.nanos()),
    }
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordedEvent> {
    Ok(RecordedEvent {
        position: r.get::<_, i64>(0)? as Position,
        stream: StreamId {
            category: r.get(1)?,
            id: r.get(2)?,
        },
        version: r.get::<_, i64>(3)? as Version,
        event_type: r.get(4)?,
        schema: Schema(r.get(7)?),
        timestamp: Timestamp(r.get(5)?),
        data: r.get(6)?,
    })
}

/// An event's schema as stored (an integer that fits a `u32`, or the store is damaged).
fn schema_of(n: i64) -> Result<Schema> {
    u32::try_from(n)
        .map(Schema)
        .map_err(|_| StoreError::Corrupt(format!("an event's schema is {n}")))
}

const EVENT_COLUMNS: &str =
    "e.position, s.category, s.stream, e.version, e.event_type, e.timestamp, e.data, e.schema";
