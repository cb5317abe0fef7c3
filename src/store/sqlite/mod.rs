//! [`SqliteStore`]: the default, embedded, durable store. One SQLite database file.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so when
//! [`StoreWrite::commit`] returns `Ok` the transaction's WAL frames have been fsync'd and
//! survive a kill -9 or a power cut. A crash before that leaves no trace of the transaction:
//! SQLite ignores WAL frames after the last valid commit frame, so a half-written transaction is
//! never read back.
//!
//! Memory: the database file is read through a memory map (up to SQLite's 2 GiB limit), and
//! SQLite's own page cache is small (8 MiB): it mostly holds the pages a transaction changes.
//! A big page cache costs more than it saves: when a B-tree page splits, SQLite parks a page
//! under a temporary page number past 1 GiB, and at the end of that transaction it then walks
//! every page of its cache to drop the ones "past the end of the file" (`pcache1TruncateUnsafe`).
//! With the 64 MiB cache this store had, that walk was ~3% of the time on a 1,000,000-command
//! workload; with 8 MiB plus the map the workload runs ~10% faster. The price: pages read
//! through the map count in the process's RSS as file-backed memory (the kernel's page cache,
//! which it can reclaim), and an I/O error while reading the database file through the map
//! raises SIGBUS instead of an error code (writes, to the WAL, do not go through the map).
//!
//! Exclusivity: the connection runs with `locking_mode=EXCLUSIVE` and takes the write lock as
//! it opens, so a second process that opens the same file is refused with
//! [`StoreError::Locked`]. The lock is the operating system's and is released when the process
//! dies, however it dies.
//!
//! Layout: [`schema`] (the tables and their migrations), [`read`] (every read, from the store or
//! inside a transaction), [`known`] (what the store knows of its own file without asking
//! SQLite), [`wal_room`] (zeroed room kept past the end of the WAL); the store and its
//! transactions are here.

mod known;
mod read;
mod schema;
mod wal_room;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use rusqlite::{params, CachedStatement, Connection, ErrorCode};

use super::*;
use known::{Known, KnownStream};
use read::read;
use schema::migrate;
use wal_room::WalRoom;

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    wal: WalRoom,
    /// The newest position, as the last committed transaction left it; `None` when unknown
    /// (at open, and after a transaction that did not commit). Only this connection writes
    /// (the lock is exclusive), so a known head stays true until the next commit.
    head: Option<Position>,
    /// What it knows of its own file without asking SQLite; reads add what they look up.
    known: RefCell<Known>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, taking the exclusive lock.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Io(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    // create_dir_all's EEXIST: a file stands where a directory must be.
                    format!(
                        "{} is not a directory (it, or a folder above it, is a file)",
                        dir.display()
                    )
                } else {
                    format!("cannot create the directory {}: {e}", dir.display())
                })
            })?;
        }
        let shown = path.display().to_string();
        let conn = Connection::open(&path).map_err(|e| open_error(&shown, e))?;
        conn.busy_timeout(std::time::Duration::ZERO)
            .map_err(|e| open_error(&shown, e))?;
        // Room for every statement this store runs (about 20; rusqlite keeps 16 by default), so
        // that none is parsed again after being pushed out by the others.
        conn.set_prepared_statement_cache_capacity(64);
        // secure_delete: a deleted or rewritten row's bytes are zeroed in its page (and freed
        // pages too), so that a destroyed key or a forgotten user's document leaves nothing
        // behind in the file (docs/forgetting.md).
        // wal_autocheckpoint: SQLite's default, 1,000 pages (about 4 MB), said here because it
        // bounds how long the WAL keeps pages written before a forget (docs/forgetting.md).
        // 10,000 was tried (fewer copies of pages rewritten between checkpoints): alternating
        // runs of 200,000 streamed commands showed no difference beyond the noise
        // (docs/benchmarks.md, session 10), so the smaller window stays.
        // Order matters: exclusive locking before WAL, so that SQLite keeps the WAL index in
        // process memory (no -shm file) and the lock is held from the first transaction on.
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA cache_size = -8192;
             PRAGMA mmap_size = 2147418112;
             PRAGMA secure_delete = ON;
             PRAGMA wal_autocheckpoint = 1000;
             BEGIN EXCLUSIVE; COMMIT;",
        )
        .map_err(|e| open_error(&shown, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| open_error(&shown, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io(format!(
                "{shown}: could not switch to WAL mode (got {mode})"
            )));
        }
        migrate(&conn).map_err(|e| match e {
            StoreError::Io(m) => StoreError::Io(format!("{shown}: {m}")),
            other => other,
        })?;
        let page_size: u64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| open_error(&shown, e))?;
        let wal_path = match conn.path() {
            Some(p) if !p.is_empty() => PathBuf::from(format!("{p}-wal")),
            _ => PathBuf::from(format!("{}-wal", path.display())),
        };
        let wal = WalRoom::new(wal_path, page_size);
        let known = known_streams(&conn, known::CAPACITY)?;
        Ok(Self {
            conn,
            path,
            wal,
            head: None,
            known: RefCell::new(known),
        })
    }

    /// Keeps the number and version of at most `capacity` streams, and the row number of at
    /// most `capacity` documents, in memory (default 100,000; 0: none), so that appending to a
    /// known stream or rewriting a known document looks nothing up by its text key (see
    /// `known.rs`).
    pub fn set_cache_size(&mut self, capacity: usize) {
        self.known = RefCell::new(known_streams(&self.conn, capacity).unwrap_or_else(|e| {
            tracing::warn!("streams not read at once ({e}): each is looked up when used");
            Known::new(capacity)
        }));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the store knows on opening: every stream (number and version) when there are at most
/// `capacity`, so that a create looks nothing up (see `known.rs`); else nothing yet.
fn known_streams(conn: &Connection, capacity: usize) -> Result<Known> {
    let mut known = Known::new(capacity);
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM streams", [], |r| r.get(0))
        .map_err(sql_error)?;
    if usize::try_from(count).map_or(true, |n| n > capacity) {
        return Ok(known);
    }
    let mut st = conn
        .prepare(
            "SELECT s.category, s.stream, s.stream_no,
                    (SELECT COALESCE(MAX(version), 0) FROM events e WHERE e.stream_no = s.stream_no)
             FROM streams s",
        )
        .map_err(sql_error)?;
    let streams = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                KnownStream {
                    stream_no: r.get(2)?,
                    version: r.get::<_, i64>(3)? as Version,
                },
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql_error)?;
    known.know_all_streams(streams.into_iter());
    Ok(known)
}

fn open_error(path: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Locked(path.to_string())
        }
        _ => sql_error(e),
    }
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Io(e.to_string()),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

delegate_store_read!(impl[] SqliteStore, |this| read(&this.conn, &this.known));
delegate_store_read!(impl[] SqliteTx<'_>, |this| read(this.conn, this.known));

impl EventStore for SqliteStore {
    type Tx<'a> = SqliteTx<'a>;

    fn begin(&mut self) -> Result<SqliteTx<'_>> {
        // BEGIN, COMMIT and ROLLBACK run as cached statements: rusqlite's `Transaction` parses
        // them anew each time, ~7% of the CPU time of a one-command transaction.
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut st| st.execute([]))
            .map_err(sql_error)?;
        // From here on the guard rolls back if anything fails.
        let mut tx = SqliteTx {
            conn: &self.conn,
            head: 0,
            wal: &mut self.wal,
            committed: &mut self.head,
            known: &self.known,
            held: Held::default(),
            done: false,
        };
        tx.head = match tx.committed.take() {
            Some(head) => head,
            None => read(tx.conn, tx.known).head()?,
        };
        Ok(tx)
    }
}

/// A transaction on a [`SqliteStore`]; rolled back when dropped without `commit`.
pub struct SqliteTx<'a> {
    conn: &'a Connection,
    /// The newest position, including this transaction's appends.
    head: Position,
    wal: &'a mut WalRoom,
    /// The store's known head: set again only by a successful commit.
    committed: &'a mut Option<Position>,
    /// What the store knows, updated as this transaction writes; emptied unless it commits.
    known: &'a RefCell<Known>,
    held: Held<'a>,
    /// Committed.
    done: bool,
}

/// The statements a transaction runs for nearly every command, taken from rusqlite's statement
/// cache the first time and held until the transaction ends (when they go back to it). Taking
/// a statement from that cache and giving it back hashes its SQL text twice (SipHash): ~9% of a
/// streamed run's main-thread instructions when it was done for every command.
#[derive(Default)]
struct Held<'c> {
    insert_event: Option<CachedStatement<'c>>,
    update_document: Option<CachedStatement<'c>>,
}

/// The statement in `slot`, prepared (or taken from the cache) the first time.
fn held<'s, 'c>(
    slot: &'s mut Option<CachedStatement<'c>>,
    conn: &'c Connection,
    sql: &str,
) -> Result<&'s mut CachedStatement<'c>> {
    if slot.is_none() {
        *slot = Some(conn.prepare_cached(sql).map_err(sql_error)?);
    }
    Ok(slot.as_mut().expect("set just above"))
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let capacity = self.known.borrow().capacity();
        self.known.borrow_mut().clear();
        // Still open: not committed, or a COMMIT that failed and left it open.
        if !self.conn.is_autocommit() {
            let rolled_back = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut st| st.execute([]));
            if let Err(e) = rolled_back {
                tracing::error!("rolling back a transaction failed: {e}");
                return;
            }
        }
        // Back to what is committed: know every stream again, as on opening (else every
        // create would look its stream up for the rest of the process).
        match known_streams(self.conn, capacity) {
            Ok(known) => *self.known.borrow_mut() = known,
            Err(e) => tracing::warn!("reading the streams again after a rollback: {e}"),
        }
    }
}

impl StoreWrite for SqliteTx<'_> {
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let known = read(self.conn, self.known).stream(stream)?;
        let actual = known.map_or(0, |k| k.version);
        if let ExpectedVersion::Exact(expected) = expected {
            if expected != actual {
                return Err(StoreError::Conflict { expected, actual });
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stream_no = match known {
            Some(k) => k.stream_no,
            None => self
                .conn
                .prepare_cached("INSERT INTO streams (category, stream) VALUES (?1, ?2)")
                .and_then(|mut st| st.insert(params![stream.category, stream.id]))
                .map_err(sql_error)?,
        };
        let st = held(
            &mut self.held.insert_event,
            self.conn,
            "INSERT INTO events (position, stream_no, version, event_type, timestamp, data, schema)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut recorded = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let event = RecordedEvent {
                stream: stream.clone(),
                version: actual + 1 + i as Version,
                position: self.head + 1 + i as Position,
                event_type: e.event_type,
                schema: e.schema,
                timestamp: e.timestamp,
                data: e.data,
            };
            st.execute(params![
                to_i64(event.position),
                stream_no,
                to_i64(event.version),
                event.event_type,
                event.timestamp.nanos(),
                event.data,
                i64::from(event.schema.0),
            ])
            .map_err(sql_error)?;
            recorded.push(event);
        }
        // Only once every row is in: a failure above leaves the transaction unusable anyway
        // (the caller drops it), but the head and the streams must never count rows that were
        // not written.
        self.head += recorded.len() as Position;
        let version = actual + recorded.len() as Version;
        let known = Some(KnownStream { stream_no, version });
        self.known.borrow_mut().set_stream(stream, known);
        Ok(recorded)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        let Some(value) = value else {
            self.known.borrow_mut().forget_document(collection, key);
            return self
                .conn
                .prepare_cached("DELETE FROM documents WHERE collection = ?1 AND key = ?2")
                .and_then(|mut st| st.execute(params![collection, key]))
                .map(drop)
                .map_err(sql_error);
        };
        let known = self.known.borrow().document(collection, key);
        if let Some(doc_no) = known {
            let sql = "UPDATE documents SET value = ?2 WHERE doc_no = ?1";
            return held(&mut self.held.update_document, self.conn, sql)?
                .execute(params![doc_no, value])
                .map(drop)
                .map_err(sql_error);
        }
        // Not known: most often a new document. (`RETURNING` would say the row number of an
        // upsert in one statement, but SQLite runs it through a temporary table: it doubled the
        // cost of a create.)
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO documents (collection, key, value) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![collection, key, value]))
            .map_err(sql_error)?;
        if inserted == 1 {
            let doc_no = self.conn.last_insert_rowid();
            self.known
                .borrow_mut()
                .set_document(collection, key, doc_no);
            return Ok(());
        }
        // There already, but not known (the store was reopened, or what it knows was emptied).
        self.conn
            .prepare_cached("UPDATE documents SET value = ?3 WHERE collection = ?1 AND key = ?2")
            .and_then(|mut st| st.execute(params![collection, key, value]))
            .map(drop)
            .map_err(sql_error)
    }

    fn put_cold_document(&mut self, collection: &str, key: &str, value: &str) -> Result<()> {
        // An upsert by the text key; the row number is not remembered (a row it already knew
        // keeps its number: the upsert updates the row in place).
        self.conn
            .prepare_cached(
                "INSERT INTO documents (collection, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut st| st.execute(params![collection, key, value]))
            .map(drop)
            .map_err(sql_error)
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
        self.known.borrow_mut().forget_collection(collection);
        self.conn
            .execute("DELETE FROM documents WHERE collection = ?1", [collection])
            .map(drop)
            .map_err(sql_error)
    }

    fn set_checkpoint(&mut self, projection: &str, position: Position) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO checkpoints (projection, position) VALUES (?1, ?2)
                 ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
            )
            .and_then(|mut st| st.execute(params![projection, to_i64(position)]))
            .map(drop)
            .map_err(sql_error)
    }

    fn put_snapshot(&mut self, stream: &StreamId, snapshot: &Snapshot) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO snapshots (category, stream, version, timestamp, state)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    stream.category,
                    stream.id,
                    to_i64(snapshot.version),
                    snapshot.timestamp.nanos(),
                    snapshot.state
                ])
            })
            .map(drop)
            .map_err(sql_error)
    }

    fn clear_snapshots(&mut self) -> Result<()> {
        self.conn
            .execute("DELETE FROM snapshots", [])
            .map(drop)
            .map_err(sql_error)
    }

    fn commit(mut self) -> Result<()> {
        self.conn
            .prepare_cached("COMMIT")
            .and_then(|mut st| st.execute([]))
            .map_err(sql_error)?;
        self.done = true;
        *self.committed = Some(self.head);
        self.wal.after_commit();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// The SQL of every statement run on this thread's traced connections.
        static STATEMENTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn record(event: rusqlite::trace::TraceEvent<'_>) {
        if let rusqlite::trace::TraceEvent::Stmt(_, sql) = event {
            let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            STATEMENTS.with_borrow_mut(|s| s.push(sql));
        }
    }

    /// The statements run since the last call.
    fn statements() -> Vec<String> {
        STATEMENTS.with_borrow_mut(std::mem::take)
    }

    /// A new store in `dir` whose statements [`statements`] lists.
    fn traced_store(dir: &tempfile::TempDir) -> SqliteStore {
        let store = SqliteStore::open(dir.path().join("n1.db")).unwrap();
        store.conn.trace_v2(
            rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
            Some(record),
        );
        statements();
        store
    }

    // The statements of a command, as the trace shows them (whitespace folded).
    const BEGIN: &str = "BEGIN IMMEDIATE";
    const HEAD: &str = "SELECT COALESCE(MAX(position), 0) FROM events";
    const FIND_STREAM: &str = "SELECT stream_no FROM streams WHERE category = ?1 AND stream = ?2";
    const NEW_STREAM: &str = "INSERT INTO streams (category, stream) VALUES (?1, ?2)";
    const INSERT_EVENT: &str = "INSERT INTO events (position, stream_no, version, event_type, \
                                timestamp, data, schema) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    const NEW_DOCUMENT: &str =
        "INSERT OR IGNORE INTO documents (collection, key, value) VALUES (?1, ?2, ?3)";
    const REWRITE_DOCUMENT: &str = "UPDATE documents SET value = ?2 WHERE doc_no = ?1";
    const CHECKPOINT: &str = "INSERT INTO checkpoints (projection, position) VALUES (?1, ?2) \
                              ON CONFLICT (projection) DO UPDATE SET position = excluded.position";
    const COMMIT: &str = "COMMIT";
    /// A create's statements inside its transaction: nothing looked up (the store read its
    /// streams on opening: one not known has no events), everything written.
    const CREATE: &[&str] = &[BEGIN, HEAD, NEW_STREAM, INSERT_EVENT, NEW_DOCUMENT];
    /// A command to a known user: its two writes, by number.
    const CHANGE: &[&str] = &[BEGIN, INSERT_EVENT, REWRITE_DOCUMENT];
    /// A create through the node: the same, and the new user's key written to the key store
    /// (store::seal), between its event and its document. Nothing is looked up for the key: a
    /// new stream has none, and a known user's key is in the node's memory.
    const SEALED_CREATE: &[&str] = &[
        BEGIN,
        HEAD,
        NEW_STREAM,
        INSERT_EVENT,
        NEW_DOCUMENT,
        NEW_DOCUMENT,
    ];

    /// What `known.rs` promises: a create looks its stream up once (the engine's load asks
    /// whether it has events; the append then knows), and a command to a known stream and
    /// document runs no lookup at all: the event's insert and the document's rewrite by row
    /// number.
    #[test]
    fn a_command_looks_nothing_up_by_text_once_its_stream_and_document_are_known() {
        use crate::domain::user::User;
        use crate::engine::Repository;
        let dir = tempfile::tempdir().unwrap();
        let mut store = traced_store(&dir);
        let stream = StreamId::new("User", "u1");

        // A create, as the engine and the users projection run it.
        let mut tx = store.begin().unwrap();
        let loaded = Repository::<User>::load_at(&tx, "u1", Upto::End).unwrap();
        assert_eq!(loaded.version, 0);
        tx.append(&stream, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.put_document("users", "u1", Some("{}")).unwrap();
        tx.commit().unwrap();
        assert_eq!(statements(), [CREATE, &[COMMIT]].concat());

        // The next command to it: the aggregate is cached by the engine, so no load.
        let mut tx = store.begin().unwrap();
        tx.append(&stream, ExpectedVersion::Exact(1), vec![event()])
            .unwrap();
        tx.put_document("users", "u1", Some("{\"n\":1}")).unwrap();
        tx.commit().unwrap();
        assert_eq!(statements(), [CHANGE, &[COMMIT]].concat());
        assert_eq!(store.stream_version(&stream).unwrap(), 2);
        assert_eq!(
            store.document("users", "u1").unwrap().as_deref(),
            Some("{\"n\":1}")
        );
    }

    /// An event of type `E`.
    fn event() -> NewEvent {
        NewEvent {
            event_type: "E".into(),
            schema: FIRST_SCHEMA,
            timestamp: Timestamp(1),
            data: "{}".into(),
        }
    }

    /// A store with more streams than its cache holds reads none of them on opening: a create
    /// then looks its stream up by its text key, once.
    #[test]
    fn a_create_looks_its_stream_up_when_the_streams_do_not_all_fit_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = traced_store(&dir);
        for id in ["u1", "u2"] {
            let mut tx = store.begin().unwrap();
            tx.append(
                &StreamId::new("User", id),
                ExpectedVersion::Exact(0),
                vec![event()],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        store.set_cache_size(1);
        statements();
        let stream = StreamId::new("User", "u3");
        let mut tx = store.begin().unwrap();
        assert_eq!(tx.stream_version(&stream).unwrap(), 0);
        tx.append(&stream, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(
            statements(),
            [BEGIN, FIND_STREAM, NEW_STREAM, INSERT_EVENT, COMMIT]
        );
        // With room for every stream, the next opening reads them all: nothing is looked up.
        store.set_cache_size(10);
        statements();
        let stream = StreamId::new("User", "u4");
        let mut tx = store.begin().unwrap();
        assert_eq!(tx.stream_version(&stream).unwrap(), 0);
        assert_eq!(tx.stream_version(&StreamId::new("User", "u2")).unwrap(), 1);
        tx.append(&stream, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(statements(), [BEGIN, NEW_STREAM, INSERT_EVENT, COMMIT]);
    }

    /// A transaction rolled back (dropped uncommitted) leaves the store knowing every stream
    /// again, as committed: the next create still looks nothing up, and what the rolled-back
    /// one appended is not known. (Before, a rollback left the store looking up every create
    /// for the rest of the process.)
    #[test]
    fn after_a_rollback_a_create_still_looks_nothing_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = traced_store(&dir);
        let (u1, u2, u3) = (
            StreamId::new("User", "u1"),
            StreamId::new("User", "u2"),
            StreamId::new("User", "u3"),
        );
        let mut tx = store.begin().unwrap();
        tx.append(&u1, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.commit().unwrap();
        let mut tx = store.begin().unwrap();
        tx.append(&u2, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.append(&u1, ExpectedVersion::Exact(1), vec![event()])
            .unwrap();
        drop(tx);
        statements();
        let mut tx = store.begin().unwrap();
        assert_eq!(tx.stream_version(&u2).unwrap(), 0, "rolled back");
        assert_eq!(tx.stream_version(&u1).unwrap(), 1, "rolled back");
        tx.append(&u3, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.append(&u1, ExpectedVersion::Exact(1), vec![event()])
            .unwrap();
        tx.commit().unwrap();
        // The head is read again (once: a rollback forgets it), no stream is looked up.
        assert_eq!(
            statements(),
            [BEGIN, HEAD, NEW_STREAM, INSERT_EVENT, INSERT_EVENT, COMMIT]
        );
        let mut tx = store.begin().unwrap();
        tx.append(&u2, ExpectedVersion::Exact(0), vec![event()])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(statements(), [BEGIN, NEW_STREAM, INSERT_EVENT, COMMIT]);
        assert_eq!(store.stream_version(&u1).unwrap(), 2);
        assert_eq!(store.stream_version(&u2).unwrap(), 1);
    }

    /// The same through the node, as a client's commands run: each command's own two writes
    /// by number once its user is known, and the temporal read model's rewrite of the user's
    /// recent document (by number too), plus the three projections' checkpoints, once per batch
    /// (here each command is a batch of its own, as one-at-a-time clients send them). A create
    /// also writes the user's key, inserts the recent document and lists the user in its index
    /// block: the block below the id (a seek; the first create finds none), the block written
    /// (the first block, new).
    #[test]
    fn a_command_through_the_node_runs_its_two_writes_and_the_batch_checkpoint() {
        use crate::node::Config;
        use crate::stdio::Lines;
        let dir = tempfile::tempdir().unwrap();
        let mut node = Lines::open(traced_store(&dir), "n1", &Config::default()).unwrap();
        let command = |msg_id: u64, command: &str| {
            format!(
                r#"{{"src":"c1","dest":"n1","body":{{"type":"command","msg_id":{msg_id},"command":{command}}}}}"#
            )
        };
        let create = command(
            1,
            r#"{"type":"CreateUser","expectedVersion":0,"timestamp":"2024-01-01T00:00:00Z","payload":{"id":"u1","name":"Ada","email":"ada@example.com"}}"#,
        );
        let rename = command(
            2,
            r#"{"type":"RenameUser","expectedVersion":1,"timestamp":"2024-01-01T00:00:01Z","payload":{"id":"u1","name":"Ada L."}}"#,
        );
        statements(); // the node's opening

        let mut out = Vec::new();
        node.handle_lines(&[create], &mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains(r#""success":true"#));
        const BLOCK_BELOW: &str = "SELECT key, value FROM documents WHERE collection = ? AND \
                                   key <= ? ORDER BY key DESC LIMIT 1";
        let temporal_create = [NEW_DOCUMENT, BLOCK_BELOW, NEW_DOCUMENT];
        assert_eq!(
            statements(),
            [
                SEALED_CREATE,
                &temporal_create,
                &[CHECKPOINT, CHECKPOINT, CHECKPOINT, COMMIT]
            ]
            .concat()
        );

        out.clear();
        node.handle_lines(&[rename], &mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains(r#""success":true"#));
        assert_eq!(
            statements(),
            [
                CHANGE,
                &[REWRITE_DOCUMENT, CHECKPOINT, CHECKPOINT, CHECKPOINT, COMMIT]
            ]
            .concat()
        );
    }

    /// The settings the durability promise rests on ("a reply goes out only once its transaction
    /// is fsync'd; a second process is refused"): WAL, a sync of the WAL at every commit, and the
    /// exclusive lock held from the moment the store opens.
    #[test]
    fn opens_in_wal_mode_with_full_sync_and_the_exclusive_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("n1.db")).unwrap();
        let pragma = |name: &str| -> String {
            store
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t.to_lowercase(),
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("secure_delete"), "1", "deleted bytes are zeroed");
        assert_eq!(pragma("synchronous"), "2", "2 is FULL");
        assert_eq!(pragma("locking_mode"), "exclusive");
        // The speed settings the module docs describe: a small page cache, reads through a map.
        assert_eq!(pragma("cache_size"), "-8192", "8 MiB");
        assert_eq!(pragma("wal_autocheckpoint"), "1000", "pages");
        assert_ne!(pragma("mmap_size"), "0", "reads go through a memory map");
        assert!(matches!(
            SqliteStore::open(dir.path().join("n1.db")),
            Err(StoreError::Locked(_))
        ));
    }
}
