//! [`PostgresStore`]: a store in a PostgreSQL database that any number of nodes share.
//!
//! See docs/postgres.md for the schema and the reasons; in short:
//!
//! * **One writer at a time, in commit order.** A transaction begins by locking the single row
//!   of `head` (`SELECT ... FOR UPDATE`), which holds the newest position. Every writing
//!   transaction of every node takes that lock first and takes no other lock it could wait on
//!   before it, so transactions never deadlock, positions are assigned `head + 1, ...` under
//!   the lock (gap-free), and they commit in the order they took it (commit order = position
//!   order: a reader that has seen position P never misses an event committed later).
//! * **Versions known exactly under the lock.** While a transaction holds the head, no other
//!   writer can move a stream; so what this store knows of stream versions is exact once it has
//!   caught up with what the other nodes appended since its last transaction (one query over
//!   the events after the position it last saw, run only when the head moved under it). An
//!   append checks its expected version against that, without a round trip; a stale aggregate
//!   cache in the engine shows up as a [`StoreError::Conflict`], and the engine decides again.
//! * **Few round trips.** Appends, documents and checkpoints are kept in the transaction and
//!   written at commit by one statement (arrays, `unnest`), followed by `COMMIT`: a batch of
//!   1,000 commands costs a handful of round trips, not thousands. The streams' new versions
//!   are written with `UPDATE streams ... WHERE version = <the version it was at>`, a last
//!   check that nothing moved them outside the lock (it never aborts anything: a row that does
//!   not match is counted and the commit refused).
//! * **Durable.** [`StoreWrite::commit`] returns once PostgreSQL's `COMMIT` returned; with
//!   `synchronous_commit = on` (the default; `remote_apply`/`remote_write` with replicas) the
//!   transaction is flushed to the server's WAL by then. The store refuses a session where it
//!   is `off` ([`PostgresStore::open`]).
//! * **Faults.** A lost connection (server stopped, restarted, network) is a
//!   [`StoreError::Io`] (retry later): the transaction is gone, nothing of it is stored (except
//!   when the connection broke during `COMMIT` itself: then the outcome is unknown to the
//!   client, as with any database server), and the next transaction connects again.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use ::postgres::types::ToSql;
use ::postgres::{Client, NoTls, Statement};

use super::*;

/// The schema's version, in the table `schema_version`.
pub const SCHEMA_VERSION: i32 = 1;

/// The tables (in the store's PostgreSQL schema; `{schema}` is replaced by its quoted name).
/// `streams` and `documents` rows are rewritten by nearly every command: room left in their
/// pages (fillfactor 80) lets PostgreSQL write the new row version beside the old one without
/// touching the indexes (a HOT update). Categories, stream ids, collections and document keys are `bytea`: any bytes (a NUL
/// included, which `text` refuses), compared byte by byte (the order `documents` promises).
const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS schema_version (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    id       integer PRIMARY KEY CHECK (id = 1),
    position bigint  NOT NULL
);
INSERT INTO head (id, position) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS streams (
    stream_no bigserial PRIMARY KEY,
    category  bytea  NOT NULL,
    stream    bytea  NOT NULL,
    version   bigint NOT NULL,
    UNIQUE (category, stream)
) WITH (fillfactor = 80);
CREATE TABLE IF NOT EXISTS events (
    position   bigint PRIMARY KEY,
    stream_no  bigint NOT NULL,
    version    bigint NOT NULL,
    event_type text   NOT NULL,
    schema     bigint NOT NULL,
    timestamp  bigint NOT NULL,
    data       text   NOT NULL,
    UNIQUE (stream_no, version)
);
CREATE TABLE IF NOT EXISTS documents (
    collection bytea NOT NULL,
    key        bytea NOT NULL,
    value      text  NOT NULL,
    PRIMARY KEY (collection, key)
) WITH (fillfactor = 80);
CREATE TABLE IF NOT EXISTS checkpoints (
    projection text   PRIMARY KEY,
    position   bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    category  bytea  NOT NULL,
    stream    bytea  NOT NULL,
    version   bigint NOT NULL,
    timestamp bigint NOT NULL,
    state     text   NOT NULL,
    PRIMARY KEY (category, stream, version)
);
"#;

/// Everything a transaction wrote but has not sent yet is sent by this one statement at commit
/// (each part does nothing when its arrays are empty). New streams are inserted first and the
/// events of a new stream find its number through the `new_streams` rows.
const COMMIT_SQL: &str = "
WITH moved AS (
    UPDATE streams s SET version = u.new
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(no, old, new)
    WHERE s.stream_no = u.no AND s.version = u.old
    RETURNING 1
), new_streams AS (
    INSERT INTO streams (category, stream, version)
    SELECT * FROM unnest($4::bytea[], $5::bytea[], $6::bigint[])
    RETURNING stream_no, category, stream
), new_events AS (
    INSERT INTO events (position, stream_no, version, event_type, schema, timestamp, data)
    SELECT u.position, COALESCE(u.stream_no, n.stream_no), u.version, u.event_type, u.schema,
           u.ts, u.data
    FROM unnest($7::bigint[], $8::bigint[], $9::bytea[], $10::bytea[], $11::bigint[],
                $12::text[], $23::bigint[], $13::bigint[], $14::text[])
         AS u(position, stream_no, category, stream, version, event_type, schema, ts, data)
    LEFT JOIN new_streams n ON u.stream_no IS NULL AND n.category = u.category AND n.stream = u.stream
    RETURNING 1
), put_documents AS (
    INSERT INTO documents (collection, key, value)
    SELECT * FROM unnest($15::bytea[], $16::bytea[], $17::text[])
    ON CONFLICT (collection, key) DO UPDATE SET value = EXCLUDED.value
    RETURNING 1
), deleted_documents AS (
    DELETE FROM documents d
    USING unnest($18::bytea[], $19::bytea[]) AS u(collection, key)
    WHERE d.collection = u.collection AND d.key = u.key
    RETURNING 1
), put_checkpoints AS (
    INSERT INTO checkpoints (projection, position)
    SELECT * FROM unnest($20::text[], $21::bigint[])
    ON CONFLICT (projection) DO UPDATE SET position = EXCLUDED.position
    RETURNING 1
), moved_head AS (
    UPDATE head SET position = $22 WHERE id = 1 AND $22 <> position RETURNING 1
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM new_events),
       ARRAY(SELECT category FROM new_streams), ARRAY(SELECT stream FROM new_streams),
       ARRAY(SELECT stream_no FROM new_streams)";

/// The prepared statements of one connection.
struct Statements {
    stream_version: Statement,
    visit_stream: Statement,
    read_all: Statement,
    head: Statement,
    snapshot: Statement,
    document: Statement,
    documents_by_key: Statement,
    documents_first: Statement,
    documents_after: Statement,
    checkpoint: Statement,
    put_snapshot: Statement,
    changed_streams: Statement,
    commit: Statement,
}

impl Statements {
    fn prepare(c: &mut Client) -> Result<Self, ::postgres::Error> {
        Ok(Self {
            stream_version: c.prepare(
                "SELECT stream_no, version FROM streams WHERE category = $1 AND stream = $2",
            )?,
            visit_stream: c.prepare(
                "SELECT e.position, e.version, e.event_type, e.timestamp, e.data, e.schema
                 FROM streams s JOIN events e ON e.stream_no = s.stream_no
                 WHERE s.category = $1 AND s.stream = $2
                   AND e.version > $3 AND e.version <= $4 AND e.timestamp <= $5
                 ORDER BY e.version",
            )?,
            read_all: c.prepare(
                "SELECT s.category, s.stream, e.version, e.position, e.event_type, e.timestamp,
                        e.data, e.schema
                 FROM events e JOIN streams s ON s.stream_no = e.stream_no
                 WHERE e.position > $1 ORDER BY e.position LIMIT $2",
            )?,
            head: c.prepare("SELECT position FROM head WHERE id = 1")?,
            snapshot: c.prepare(
                "SELECT version, timestamp, state FROM snapshots
                 WHERE category = $1 AND stream = $2 AND version <= $3 AND timestamp <= $4
                 ORDER BY version DESC LIMIT 1",
            )?,
            document: c
                .prepare("SELECT value FROM documents WHERE collection = $1 AND key = $2")?,
            documents_by_key: c.prepare(
                "SELECT key, value FROM documents WHERE collection = $1 AND key = ANY($2)",
            )?,
            documents_first: c.prepare(
                "SELECT key, value FROM documents WHERE collection = $1 ORDER BY key LIMIT $2",
            )?,
            documents_after: c.prepare(
                "SELECT key, value FROM documents WHERE collection = $1 AND key > $2
                 ORDER BY key LIMIT $3",
            )?,
            checkpoint: c.prepare("SELECT position FROM checkpoints WHERE projection = $1")?,
            put_snapshot: c.prepare(
                "INSERT INTO snapshots (category, stream, version, timestamp, state)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (category, stream, version)
                 DO UPDATE SET timestamp = EXCLUDED.timestamp, state = EXCLUDED.state",
            )?,
            changed_streams: c.prepare(
                "SELECT s.category, s.stream, s.stream_no, s.version FROM streams s
                 WHERE s.stream_no IN (SELECT e.stream_no FROM events e WHERE e.position > $1)",
            )?,
            commit: c.prepare(COMMIT_SQL)?,
        })
    }
}

struct Conn {
    client: Client,
    st: Statements,
    /// Statements made from their parts (a key range's bounds), prepared once each.
    built: HashMap<String, Statement>,
}

/// What the store knows of a stream: its number (`None`: it has no events) and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Known {
    no: Option<i64>,
    version: Version,
}

/// A store in a PostgreSQL database (see the module docs).
pub struct PostgresStore {
    url: String,
    schema: String,
    conn: RefCell<Option<Conn>>,
    /// Streams' numbers and versions as of position `known_head` (bounded by `capacity`).
    known: RefCell<HashMap<StreamId, Known>>,
    /// The head when `known` was last true; `None`: unknown (start, or after a failed commit).
    known_head: Option<Position>,
    /// `known` holds every stream (then a stream it does not hold has no events).
    complete: std::cell::Cell<bool>,
    capacity: usize,
    /// A transaction sends what it keeps once it holds this many events and documents.
    send_at: usize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A schema name quoted as an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("a negative number: {n}")))
}

/// Whether an error means the connection is gone (it is then dropped and made again).
fn connection_lost(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O error or a protocol error, not an answer from the server.
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }
    }
}

fn pg_error(e: &::postgres::Error) -> StoreError {
    match e.code().map(|c| c.code()) {
        Some("XX001" | "XX002") => StoreError::Corrupt(e.to_string()),
        _ => {
            let text = match e.as_db_error() {
                Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
                None => format!("PostgreSQL: {e}"),
            };
            StoreError::Io(text)
        }
    }
}

fn upto_bounds(upto: Upto) -> (i64, i64) {
    match upto {
        Upto::End => (i64::MAX, i64::MAX),
        Upto::Version(v) => (to_i64(v), i64::MAX),
        Upto::Time(t) => (i64::MAX, t.nanos()),
    }
}

/// An event's schema as stored (an integer that fits a `u32`, or the store is damaged).
fn schema_of(n: i64) -> Result<Schema> {
    u32::try_from(n)
        .ok()
        .map(Schema)
        .ok_or_else(|| StoreError::Corrupt(format!("an event's schema is {n}")))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}

impl PostgresStore {
    /// Connects to the database at `url` (libpq's forms: `postgresql://user@host/db`, or
    /// `host=/socket/dir dbname=db user=u`), creates or migrates the tables in `schema` (under
    /// an advisory lock, so nodes starting together do it once), and checks that the session
    /// commits synchronously.
    pub fn open(url: &str, schema: &str) -> Result<Self> {
        if schema.is_empty() {
            return Err(StoreError::Io("the PostgreSQL schema name is empty".into()));
        }
        let store = Self {
            url: url.to_string(),
            schema: schema.to_string(),
            conn: RefCell::new(None),
            known: RefCell::new(HashMap::new()),
            known_head: None,
            complete: std::cell::Cell::new(false),
            capacity: 100_000,
            send_at: SEND_AT,
        };
        store.with_conn(|_| Ok(()))?;
        Ok(store)
    }

    /// Keeps the number and version of at most `capacity` streams in memory (default
    /// 100,000).
    pub fn set_cache_size(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.known.get_mut().clear();
    }

    /// Sends a transaction's writes to the server once it holds `n` events and documents
    /// (default 20,000), as well as at commit. For tests: small values exercise the early sends.
    pub fn set_send_at(&mut self, n: usize) {
        self.send_at = n.max(1);
    }

    /// The PostgreSQL schema the store's tables are in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn connect(&self) -> Result<Conn> {
        let mut client = Client::connect(&self.url, NoTls).map_err(|e| {
            StoreError::Io(format!("cannot connect to PostgreSQL: {}", pg_error(&e)))
        })?;
        let err = |e: ::postgres::Error| pg_error(&e);
        let schema = quote_ident(&self.schema);
        // A migration under a lock of the schema's own (a session lock, released at once):
        // nodes that start together create the tables once, and a node of an older build
        // never runs against a newer schema.
        let lock: i64 = client
            .query_one("SELECT hashtextextended($1, 7355608)", &[&self.schema])
            .map_err(err)?
            .get(0);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&lock])
            .map_err(err)?;
        let migrated = (|| -> Result<()> {
            let sql = format!(
                "BEGIN; SET LOCAL client_min_messages TO warning; \
                 CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}; \
                 {TABLES} COMMIT;"
            );
            client.batch_execute(&sql).map_err(err)?;
            client
                .batch_execute(&format!("SET search_path TO {schema}"))
                .map_err(err)?;
            let version: Option<i32> = client
                .query_opt("SELECT max(version) FROM schema_version", &[])
                .map_err(err)?
                .and_then(|r| r.get(0));
            match version {
                None => {
                    client
                        .execute(
                            "INSERT INTO schema_version (version) VALUES ($1)",
                            &[&SCHEMA_VERSION],
                        )
                        .map_err(err)?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Io(format!(
                        "the PostgreSQL schema {} has schema version {v}; this build knows up \
                         to {SCHEMA_VERSION} (written by a newer cqrs?)",
                        self.schema
                    )))
                }
                Some(_) => {}
            }
            Ok(())
        })();
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&lock]);
        migrated?;
        unlocked.map_err(err)?;
        // A reply promises the events are durable: refuse a session that would not wait for
        // the WAL flush.
        let mode: String = client
            .query_one("SHOW synchronous_commit", &[])
            .map_err(err)?
            .get(0);
        if mode == "off" {
            return Err(StoreError::Io(
                "PostgreSQL's synchronous_commit is off: a COMMIT would return before the \
                 transaction is durable; set it to on (see docs/postgres.md)"
                    .into(),
            ));
        }
        let st = Statements::prepare(&mut client).map_err(err)?;
        Ok(Conn {
            client,
            st,
            built: HashMap::new(),
        })
    }

    /// Runs `f` on the connection (connecting first if there is none); a lost connection is
    /// dropped, to be made again next time.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, ::postgres::Error>) -> Result<T> {
        let mut slot = self.conn.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.connect()?);
        }
        let conn = slot.as_mut().expect("connected just above");
        f(conn).map_err(|e| {
            if connection_lost(&e) {
                tracing::warn!("lost the connection to PostgreSQL: {e}");
                *slot = None;
            }
            pg_error(&e)
        })
    }

    /// Like [`Self::with_conn`], for `f` that may fail with a [`StoreError`] of its own.
    fn with_conn_try<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, Failure>) -> Result<T> {
        let mut out = None;
        let r = self.with_conn(|c| match f(c) {
            Ok(v) => {
                out = Some(Ok(v));
                Ok(())
            }
            Err(Failure::Pg(e)) => Err(e),
            Err(Failure::Store(e)) => {
                out = Some(Err(e));
                Ok(())
            }
        });
        r?;
        out.expect("set by the closure")
    }

    fn read_stream_version(&self, stream: &StreamId) -> Result<Known> {
        self.with_conn(|c| {
            c.client
                .query_opt(
                    &c.st.stream_version,
                    &[&stream.category.as_bytes(), &stream.id.as_bytes()],
                )
                .map(|row| match row {
                    Some(r) => Known {
                        no: Some(r.get(0)),
                        version: r.get::<_, i64>(1) as u64,
                    },
                    None => Known {
                        no: None,
                        version: 0,
                    },
                })
        })
    }

    /// Up to `limit` committed documents of `collection` with keys between `from` and `to`, in
    /// byte order of the keys (largest first if `descending`): one indexed seek.
    fn key_range(
        &self,
        collection: &str,
        from: std::ops::Bound<&str>,
        to: std::ops::Bound<&str>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut sql = String::from("SELECT key, value FROM documents WHERE collection = $1");
        let mut keys: Vec<&[u8]> = Vec::new();
        for (bound, inclusive, exclusive) in [(from, ">=", ">"), (to, "<=", "<")] {
            let (op, key) = match bound {
                Included(k) => (inclusive, k),
                Excluded(k) => (exclusive, k),
                Unbounded => continue,
            };
            keys.push(key.as_bytes());
            sql.push_str(&format!(" AND key {op} ${}", keys.len() + 1));
        }
        sql.push_str(if descending {
            " ORDER BY key DESC"
        } else {
            " ORDER BY key"
        });
        sql.push_str(&format!(" LIMIT ${}", keys.len() + 2));
        let c_bytes = collection.as_bytes();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&c_bytes];
        for k in &keys {
            params.push(k);
        }
        params.push(&limit);
        let rows = self.with_conn(|c| {
            let st = match c.built.get(&sql) {
                Some(st) => st.clone(),
                None => {
                    let st = c.client.prepare(&sql)?;
                    c.built.insert(sql.clone(), st.clone());
                    st
                }
            };
            c.client.query(&st, &params)
        })?;
        rows.iter()
            .map(|r| Ok((utf8(r.get(0), "a document key")?, r.get(1))))
            .collect()
    }

    /// Keeps what is known of a stream (true as of `known_head`); when full, forgets all.
    fn remember(&self, stream: StreamId, known: Known) {
        if self.capacity == 0 {
            self.complete.set(false);
            return;
        }
        let mut map = self.known.borrow_mut();
        if map.len() >= self.capacity && !map.contains_key(&stream) {
            map.clear();
            self.complete.set(false);
        }
        map.insert(stream, known);
    }
}

/// An error inside a closure run on the connection: the server's, or the store's own.
enum Failure {
    Pg(::postgres::Error),
    Store(StoreError),
}

impl From<::postgres::Error> for Failure {
    fn from(e: ::postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// The reads, on the store's connection: outside a transaction they see what is committed; a
/// transaction's own writes still in memory are added by [`PostgresTx`].
impl StoreRead for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self.read_stream_version(stream)?.version)
    }

    fn visit_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
        visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
    ) -> Result<()> {
        let (max_version, max_time) = upto_bounds(upto);
        let rows = self.with_conn(|c| {
            c.client.query(
                &c.st.visit_stream,
                &[
                    &stream.category.as_bytes(),
                    &stream.id.as_bytes(),
                    &to_i64(after),
                    &max_version,
                    &max_time,
                ],
            )
        })?;
        for r in &rows {
            visit(EventView {
                position: to_u64(r.get(0))?,
                version: to_u64(r.get(1))?,
                event_type: r.get(2),
                schema: schema_of(r.get(5))?,
                timestamp: crate::timestamp::Timestamp(r.get(3)),
                data: r.get(4),
            })?;
        }
        Ok(())
    }

    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with_conn(|c| c.client.query(&c.st.read_all, &[&to_i64(after), &limit]))?;
        rows.iter()
            .map(|r| {
                Ok(RecordedEvent {
                    stream: StreamId {
                        category: utf8(r.get(0), "a category")?,
                        id: utf8(r.get(1), "a stream id")?,
                    },
                    version: to_u64(r.get(2))?,
                    position: to_u64(r.get(3))?,
                    event_type: r.get(4),
                    schema: schema_of(r.get(7))?,
                    timestamp: crate::timestamp::Timestamp(r.get(5)),
                    data: r.get(6),
                })
            })
            .collect()
    }

    fn head(&self) -> Result<Position> {
        let head: i64 =
            self.with_conn(|c| c.client.query_one(&c.st.head, &[]).map(|r| r.get(0)))?;
        to_u64(head)
    }

    fn snapshot(&self, stream: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
        let (max_version, max_time) = upto_bounds(upto);
        let row = self.with_conn(|c| {
            c.client.query_opt(
                &c.st.snapshot,
                &[
                    &stream.category.as_bytes(),
                    &stream.id.as_bytes(),
                    &max_version,
                    &max_time,
                ],
            )
        })?;
        row.map(|r| {
            Ok(Snapshot {
                version: to_u64(r.get(0))?,
                timestamp: crate::timestamp::Timestamp(r.get(1)),
                state: r.get(2),
            })
        })
        .transpose()
    }

    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        self.with_conn(|c| {
            c.client
                .query_opt(&c.st.document, &[&collection.as_bytes(), &key.as_bytes()])
                .map(|r| r.map(|r| r.get(0)))
        })
    }

    /// One statement for all the keys.
    fn documents_by_key(&self, collection: &str, keys: &[&str]) -> Result<Vec<Option<String>>> {
        if keys.len() < 2 {
            return keys.iter().map(|k| self.document(collection, k)).collect();
        }
        let wanted: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let rows = self.with_conn(|c| {
            c.client
                .query(&c.st.documents_by_key, &[&collection.as_bytes(), &wanted])
        })?;
        let mut found: HashMap<Vec<u8>, String> = HashMap::with_capacity(rows.len());
        for r in rows {
            found.insert(r.get(0), r.get(1));
        }
        Ok(keys
            .iter()
            .map(|k| found.get(k.as_bytes()).cloned())
            .collect())
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with_conn(|c| match after {
            None => c
                .client
                .query(&c.st.documents_first, &[&collection.as_bytes(), &limit]),
            Some(a) => c.client.query(
                &c.st.documents_after,
                &[&collection.as_bytes(), &a.as_bytes(), &limit],
            ),
        })?;
        rows.iter()
            .map(|r| Ok((utf8(r.get(0), "a document key")?, r.get(1))))
            .collect()
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
        self.key_range(
            collection,
            from,
            to,
            direction == Direction::Descending,
            limit,
        )
    }

    fn checkpoint(&self, projection: &str) -> Result<Position> {
        let p: Option<i64> = self.with_conn(|c| {
            c.client
                .query_opt(&c.st.checkpoint, &[&projection])
                .map(|r| r.map(|r| r.get(0)))
        })?;
        p.map_or(Ok(0), to_u64)
    }
}

impl EventStore for PostgresStore {
    type Tx<'a> = PostgresTx<'a>;

    fn begin(&mut self) -> Result<PostgresTx<'_>> {
        // BEGIN and the head's lock in one round trip.
        let head = self.with_conn(|c| {
            let messages = c
                .client
                .simple_query("BEGIN; SELECT position FROM head WHERE id = 1 FOR UPDATE")?;
            Ok(messages.into_iter().find_map(|m| match m {
                ::postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            }))
        });
        let head = match head {
            Ok(Some(text)) => text
                .parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("the head is {text}"))),
            Ok(None) => Err(StoreError::Corrupt("the head row is missing".into())),
            Err(e) => Err(e),
        };
        let mut tx = PostgresTx {
            store: self,
            open: true,
            base: 0,
            head: 0,
            streams: HashMap::new(),
            events: Vec::new(),
            documents: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
        };
        // From here on the transaction rolls back when dropped.
        let head = head?;
        tx.base = head;
        tx.head = head;
        tx.catch_up(head)?;
        Ok(tx)
    }

    /// A read-only transaction at REPEATABLE READ: its statements share one snapshot. (Were
    /// the connection lost inside it, the reads after go on outside any snapshot, on the new
    /// connection, and the COMMIT there is a warning, not an error.)
    fn begin_reads(&self) -> Result<()> {
        self.with_conn(|c| {
            c.client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        })
    }

    fn end_reads(&self) -> Result<()> {
        self.with_conn(|c| c.client.batch_execute("COMMIT"))
    }
}

/// A stream this transaction appended to.
struct Touched {
    /// Its number, `None` for a stream this transaction creates.
    no: Option<i64>,
    /// Its version when the transaction began.
    old: Version,
    /// Its version now.
    version: Version,
}

/// A transaction on a [`PostgresStore`]: it holds the head's lock from `begin` to the end;
/// rolled back when dropped without `commit`.
pub struct PostgresTx<'a> {
    store: &'a mut PostgresStore,
    /// A transaction is open on the connection.
    open: bool,
    /// The head when it began.
    base: Position,
    /// The newest position, this transaction's appends included.
    head: Position,
    streams: HashMap<StreamId, Touched>,
    events: Vec<RecordedEvent>,
    /// Documents written (`Some`) or deleted (`None`), by collection and key: sent at commit,
    /// in key order (two transactions never wait for each other's rows in opposite orders).
    documents: BTreeMap<(String, String), Option<String>>,
    checkpoints: BTreeMap<String, Position>,
}

impl PostgresTx<'_> {
    /// Brings what the store knows of streams up to `head` (the other nodes' appends since its
    /// last transaction), or forgets it if that is too much.
    fn catch_up(&mut self, head: Position) -> Result<()> {
        let store = &mut *self.store;
        let known_head = match store.known_head {
            Some(h) if h <= head && head - h <= store.capacity as u64 / 2 => h,
            _ => return self.load_all(head),
        };
        if known_head == head {
            return Ok(());
        }
        let rows = store.with_conn(|c| {
            c.client
                .query(&c.st.changed_streams, &[&to_i64(known_head)])
        })?;
        for r in &rows {
            let stream = StreamId {
                category: utf8(r.get(0), "a category")?,
                id: utf8(r.get(1), "a stream id")?,
            };
            let known = Known {
                no: Some(r.get(2)),
                version: to_u64(r.get(3))?,
            };
            if store.complete.get() {
                store.remember(stream, known);
            } else if let Some(k) = store.known.get_mut().get_mut(&stream) {
                *k = known;
            }
        }
        store.known_head = Some(head);
        Ok(())
    }

    /// Starts what the store knows again at `head`: every stream if they fit in its capacity
    /// (then a stream it does not know has no events, and creating one costs no lookup),
    /// otherwise none.
    fn load_all(&mut self, head: Position) -> Result<()> {
        let store = &mut *self.store;
        store.known.get_mut().clear();
        store.complete.set(false);
        store.known_head = Some(head);
        if store.capacity == 0 {
            return Ok(());
        }
        let limit = i64::try_from(store.capacity).unwrap_or(i64::MAX - 1) + 1;
        let rows = store.with_conn(|c| {
            c.client.query(
                "SELECT category, stream, stream_no, version FROM streams LIMIT $1",
                &[&limit],
            )
        })?;
        if rows.len() > store.capacity {
            return Ok(());
        }
        let map = store.known.get_mut();
        for r in &rows {
            let stream = StreamId {
                category: utf8(r.get(0), "a category")?,
                id: utf8(r.get(1), "a stream id")?,
            };
            map.insert(
                stream,
                Known {
                    no: Some(r.get(2)),
                    version: to_u64(r.get(3))?,
                },
            );
        }
        store.complete.set(true);
        Ok(())
    }

    /// The stream as this transaction sees it: its own appends, what the store knows (exact:
    /// the head is locked and the store caught up), or the table.
    fn known(&self, stream: &StreamId) -> Result<Known> {
        if let Some(t) = self.streams.get(stream) {
            return Ok(Known {
                no: t.no,
                version: t.version,
            });
        }
        if let Some(k) = self.store.known.borrow().get(stream) {
            return Ok(*k);
        }
        if self.store.complete.get() {
            return Ok(Known {
                no: None,
                version: 0,
            });
        }
        let k = self.store.read_stream_version(stream)?;
        self.store.remember(stream.clone(), k);
        Ok(k)
    }

    fn rollback(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        // What the store knows is unchanged: this transaction's appends are only in
        // `self.streams`, and what it looked up is committed state. (If a failed COMMIT did
        // commit, the next catch-up finds its events after `known_head`.)
        // On the connection the transaction is on; a lost one took the transaction with it.
        let mut slot = self.store.conn.borrow_mut();
        if let Some(c) = slot.as_mut() {
            if let Err(e) = c.client.batch_execute("ROLLBACK") {
                tracing::debug!("rolling back a PostgreSQL transaction: {e}");
                if connection_lost(&e) {
                    *slot = None;
                }
            }
        }
    }
}

impl Drop for PostgresTx<'_> {
    fn drop(&mut self) {
        self.rollback();
    }
}

impl StoreRead for PostgresTx<'_> {
    fn shared(&self) -> bool {
        true
    }

    fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self.known(stream)?.version)
    }

    fn visit_stream(
        &self,
        stream: &StreamId,
        after: Version,
        upto: Upto,
        visit: &mut dyn FnMut(EventView<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut last = after;
        self.store.visit_stream(stream, after, upto, &mut |e| {
            last = e.version;
            visit(e)
        })?;
        if !self.streams.contains_key(stream) {
            return Ok(());
        }
        for e in self.events.iter().filter(|e| &e.stream == stream) {
            if e.version <= last {
                continue;
            }
            if !upto.includes(e.version, e.timestamp) {
                break;
            }
            visit(EventView {
                position: e.position,
                version: e.version,
                event_type: &e.event_type,
                schema: e.schema,
                timestamp: e.timestamp,
                data: &e.data,
            })?;
        }
        Ok(())
    }

    fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        let mut events = self.store.read_all(after, limit)?;
        for e in &self.events {
            if events.len() >= limit {
                break;
            }
            if e.position > after {
                events.push(e.clone());
            }
        }
        Ok(events)
    }

    fn head(&self) -> Result<Position> {
        Ok(self.head)
    }

    fn snapshot(&self, stream: &StreamId, upto: Upto) -> Result<Option<Snapshot>> {
        self.store.snapshot(stream, upto)
    }

    fn document(&self, collection: &str, key: &str) -> Result<Option<String>> {
        match self
            .documents
            .get(&(collection.to_string(), key.to_string()))
        {
            Some(v) => Ok(v.clone()),
            None => self.store.document(collection, key),
        }
    }

    /// The transaction's own writes, the rest from the server in one statement.
    fn documents_by_key(&self, collection: &str, keys: &[&str]) -> Result<Vec<Option<String>>> {
        let mine = |k: &str| self.documents.get(&(collection.to_string(), k.to_string()));
        let asked: Vec<&str> = keys.iter().copied().filter(|k| mine(k).is_none()).collect();
        let mut stored = self.store.documents_by_key(collection, &asked)?.into_iter();
        Ok(keys
            .iter()
            .map(|k| match mine(k) {
                Some(v) => v.clone(),
                None => stored.next().flatten(),
            })
            .collect())
    }

    fn documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let pending = self
            .documents
            .range((collection.to_string(), String::new())..)
            .take_while(|((c, _), _)| c == collection)
            .filter(|((_, k), _)| after.is_none_or(|a| k.as_str() > a));
        // Enough stored rows to fill `limit` after the pending deletes and overwrites.
        let extra = pending.clone().count();
        let stored = self
            .store
            .documents(collection, after, limit.saturating_add(extra))?;
        let mut merged: BTreeMap<String, String> = stored.into_iter().collect();
        for ((_, k), v) in pending {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
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
        self.key_range(
            collection,
            from,
            to,
            direction == Direction::Descending,
            limit,
        )
    }

    fn checkpoint(&self, projection: &str) -> Result<Position> {
        match self.checkpoints.get(projection) {
            Some(p) => Ok(*p),
            None => self.store.checkpoint(projection),
        }
    }
}

impl PostgresTx<'_> {
    /// [`PostgresStore::key_range`] with this transaction's own document writes laid over it.
    fn key_range(
        &self,
        collection: &str,
        from: std::ops::Bound<&str>,
        to: std::ops::Bound<&str>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        use std::ops::RangeBounds;
        let pending: Vec<(&String, &Option<String>)> = self
            .documents
            .range((collection.to_string(), String::new())..)
            .take_while(|((c, _), _)| c == collection)
            .filter(|((_, k), _)| RangeBounds::<str>::contains(&(from, to), k.as_str()))
            .map(|((_, k), v)| (k, v))
            .collect();
        // Enough stored rows to fill `limit` after the pending deletes and overwrites.
        let stored = self.store.key_range(
            collection,
            from,
            to,
            descending,
            limit.saturating_add(pending.len()),
        )?;
        let mut merged: BTreeMap<String, String> = stored.into_iter().collect();
        for (k, v) in pending {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(if descending {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        })
    }
}

impl StoreWrite for PostgresTx<'_> {
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let known = self.known(stream)?;
        if let ExpectedVersion::Exact(expected) = expected {
            if expected != known.version {
                return Err(StoreError::Conflict {
                    expected,
                    actual: known.version,
                });
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut recorded = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            recorded.push(RecordedEvent {
                stream: stream.clone(),
                version: known.version + 1 + i as Version,
                position: self.head + 1 + i as Position,
                event_type: e.event_type,
                schema: e.schema,
                timestamp: e.timestamp,
                data: e.data,
            });
        }
        self.head += recorded.len() as Position;
        let version = known.version + recorded.len() as Version;
        self.streams
            .entry(stream.clone())
            .and_modify(|t| t.version = version)
            .or_insert(Touched {
                no: known.no,
                old: known.version,
                version,
            });
        self.events.extend(recorded.iter().cloned());
        self.send_if_big()?;
        Ok(recorded)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        self.documents.insert(
            (collection.to_string(), key.to_string()),
            value.map(str::to_string),
        );
        self.send_if_big()
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
        self.documents.retain(|(c, _), _| c != collection);
        self.store.with_conn(|c| {
            c.client
                .execute(
                    "DELETE FROM documents WHERE collection = $1",
                    &[&collection.as_bytes()],
                )
                .map(drop)
        })
    }

    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()> {
        self.checkpoints.insert(projection.to_string(), position);
        Ok(())
    }

    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()> {
        self.store.with_conn(|c| {
            c.client
                .execute(
                    &c.st.put_snapshot,
                    &[
                        &stream.category.as_bytes(),
                        &stream.id.as_bytes(),
                        &to_i64(snapshot.version),
                        &snapshot.timestamp.nanos(),
                        &snapshot.state,
                    ],
                )
                .map(drop)
        })
    }

    fn clear_snapshots(&mut self) -> Result<()> {
        self.store
            .with_conn(|c| c.client.execute("DELETE FROM snapshots", &[]).map(drop))
    }

    fn commit(mut self) -> Result<()> {
        self.finish()
    }
}

impl PostgresTx<'_> {
    /// The commit: everything kept in memory sent by one statement, then `COMMIT`; what the
    /// transaction wrote is then what the store knows, up to its head.
    fn finish(&mut self) -> Result<()> {
        let sent = self
            .send()
            .and_then(|()| self.store.with_conn(|c| c.client.batch_execute("COMMIT")));
        if let Err(e) = sent {
            self.rollback();
            return Err(e);
        }
        self.open = false;
        let streams = std::mem::take(&mut self.streams);
        let store = &mut *self.store;
        store.known_head = Some(self.head);
        for (s, t) in streams {
            match t.no {
                Some(no) => store.remember(
                    s,
                    Known {
                        no: Some(no),
                        version: t.version,
                    },
                ),
                None => {
                    store.known.get_mut().remove(&s);
                    store.complete.set(false);
                }
            }
        }
        Ok(())
    }

    /// Sends what was kept in memory (a commit, or a transaction grown past
    /// [`SEND_AT`]): positions are final already, since the head is locked.
    fn send(&mut self) -> Result<()> {
        if self.events.is_empty() && self.documents.is_empty() && self.checkpoints.is_empty() {
            return Ok(());
        }
        let (mut moved_no, mut moved_old, mut moved_new) = (vec![], vec![], vec![]);
        let (mut new_c, mut new_s, mut new_v) = (vec![], vec![], vec![]);
        for (s, t) in &self.streams {
            match t.no {
                // Sent already, and not appended to since.
                Some(_) if t.old == t.version => {}
                Some(no) => {
                    moved_no.push(no);
                    moved_old.push(to_i64(t.old));
                    moved_new.push(to_i64(t.version));
                }
                None => {
                    new_c.push(s.category.as_bytes());
                    new_s.push(s.id.as_bytes());
                    new_v.push(to_i64(t.version));
                }
            }
        }
        let n = self.events.len();
        let mut e_schema: Vec<i64> = Vec::with_capacity(n);
        let (mut e_pos, mut e_no, mut e_c, mut e_s, mut e_v, mut e_t, mut e_ts, mut e_d) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for e in &self.events {
            let no = self.streams.get(&e.stream).and_then(|t| t.no);
            e_pos.push(to_i64(e.position));
            e_no.push(no);
            // The text key only for new streams, whose number the statement finds.
            let (c, s): (&[u8], &[u8]) = match no {
                Some(_) => (&[], &[]),
                None => (e.stream.category.as_bytes(), e.stream.id.as_bytes()),
            };
            e_c.push(c);
            e_s.push(s);
            e_v.push(to_i64(e.version));
            e_t.push(e.event_type.as_str());
            e_schema.push(i64::from(e.schema.0));
            e_ts.push(e.timestamp.nanos());
            e_d.push(e.data.as_str());
        }
        let (mut put_c, mut put_k, mut put_v, mut del_c, mut del_k) =
            (vec![], vec![], vec![], vec![], vec![]);
        for ((c, k), v) in &self.documents {
            match v {
                Some(v) => {
                    put_c.push(c.as_bytes());
                    put_k.push(k.as_bytes());
                    put_v.push(v.as_str());
                }
                None => {
                    del_c.push(c.as_bytes());
                    del_k.push(k.as_bytes());
                }
            }
        }
        let cp_names: Vec<&str> = self.checkpoints.keys().map(String::as_str).collect();
        let cp_positions: Vec<i64> = self.checkpoints.values().map(|p| to_i64(*p)).collect();
        let head = to_i64(self.head);
        let params: [&(dyn ToSql + Sync); 23] = [
            &moved_no,
            &moved_old,
            &moved_new,
            &new_c,
            &new_s,
            &new_v,
            &e_pos,
            &e_no,
            &e_c,
            &e_s,
            &e_v,
            &e_t,
            &e_ts,
            &e_d,
            &put_c,
            &put_k,
            &put_v,
            &del_c,
            &del_k,
            &cp_names,
            &cp_positions,
            &head,
            &e_schema,
        ];
        let expect_moved = moved_no.len() as i64;
        let result = self.store.with_conn_try(|c| {
            let row = c.client.query_one(&c.st.commit, &params)?;
            let (moved, inserted): (i64, i64) = (row.get(0), row.get(1));
            let created: (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<i64>) =
                (row.get(2), row.get(3), row.get(4));
            if moved != expect_moved || inserted != n as i64 {
                return Err(Failure::Store(StoreError::Io(format!(
                    "a stream moved outside the head's lock ({moved} of {expect_moved} \
                     streams, {inserted} of {n} events): nothing was stored"
                ))));
            }
            Ok(created)
        })?;
        // Sent: the streams are at their new versions in the table, with their numbers.
        let (categories, ids, numbers) = result;
        for ((c, s), no) in categories.into_iter().zip(ids).zip(numbers) {
            // Written from strings, so UTF-8.
            let (Ok(category), Ok(id)) = (String::from_utf8(c), String::from_utf8(s)) else {
                continue;
            };
            if let Some(t) = self.streams.get_mut(&StreamId { category, id }) {
                t.no = Some(no);
            }
        }
        for t in self.streams.values_mut() {
            t.old = t.version;
        }
        self.events.clear();
        self.documents.clear();
        self.checkpoints.clear();
        Ok(())
    }

    /// Sends what was kept in memory once it reaches [`SEND_AT`] events and documents.
    fn send_if_big(&mut self) -> Result<()> {
        if self.events.len() + self.documents.len() >= self.store.send_at {
            self.send()?;
        }
        Ok(())
    }
}

/// A transaction sends what it keeps in memory once it holds this many events and documents
/// (an import: one transaction for the whole file), instead of at commit only.
const SEND_AT: usize = 20_000;
