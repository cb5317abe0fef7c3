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
//! Commit latency: an fdatasync that also has to record a larger file size costs about twice
//! one that only overwrites blocks the file already has (0.27 against 0.17 ms here). SQLite
//! appends to the WAL until its first checkpoint (1000 pages) and only then starts again at
//! its beginning, so every commit of a fresh WAL pays the larger price. [`WalRoom`] keeps zeroed
//! room past the end of the WAL: when a commit has grown the file, the file is extended by half
//! its size (at least 64 frames) with zeros and synced, so the following commits overwrite in
//! place. SQLite never reads the zeros as a transaction: a WAL frame counts only if its salt
//! matches the WAL header's and its checksum chain holds, so recovery stops at the first zero
//! frame, exactly as it stops at the stale frames an old WAL generation leaves behind.
//!
//! Exclusivity: the connection runs with `locking_mode=EXCLUSIVE` and takes the write lock as
//! it opens, so a second process that opens the same file is refused with
//! [`StoreError::Locked`]. The lock is the operating system's and is released when the process
//! dies, however it dies.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::*;

/// The schema's version, kept in `PRAGMA user_version`. 0: the first layout (events keyed by
/// their stream's category and id as text), migrated in place when such a store is opened.
const SCHEMA_VERSION: i64 = 1;

/// Streams are numbered (`streams`), and events name their stream by number: the events index
/// compares integers instead of two strings, and its entries are a third of the size. B-tree
/// descents on the text keys were ~13% of the time on a 1,000,000-command workload.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    stream_no INTEGER PRIMARY KEY,
    category  TEXT NOT NULL,
    stream    TEXT NOT NULL,
    UNIQUE (category, stream)
);
CREATE TABLE IF NOT EXISTS events (
    position   INTEGER PRIMARY KEY,
    stream_no  INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    timestamp  INTEGER NOT NULL,
    data       TEXT    NOT NULL,
    UNIQUE (stream_no, version)
);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    projection TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    category  TEXT    NOT NULL,
    stream    TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    state     TEXT    NOT NULL,
    PRIMARY KEY (category, stream, version)
) WITHOUT ROWID;
";

/// From schema 0 (events with `category` and `stream` text columns) to 1, around [`SCHEMA`]
/// and in the same transaction: the old events table steps aside, the schema creates the new
/// tables, then streams are numbered in the order they first appear in the log and every event
/// is copied with its position, version, type, time and data.
const MIGRATE_0_TO_1_BEFORE: &str = "ALTER TABLE events RENAME TO events_0;";
const MIGRATE_0_TO_1_AFTER: &str = "
INSERT INTO streams (category, stream)
    SELECT category, stream FROM events_0 GROUP BY category, stream ORDER BY MIN(position);
INSERT INTO events (position, stream_no, version, event_type, timestamp, data)
    SELECT e.position, s.stream_no, e.version, e.event_type, e.timestamp, e.data
    FROM events_0 e JOIN streams s ON s.category = e.category AND s.stream = e.stream
    ORDER BY e.position;
DROP TABLE events_0;
";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    wal: WalRoom,
    /// The newest position, as the last committed transaction left it; `None` when unknown
    /// (at open, and after a transaction that did not commit). Only this connection writes
    /// (the lock is exclusive), so a known head stays true until the next commit.
    head: Option<Position>,
    streams: StreamCache,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, taking the exclusive lock.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        }
        let shown = path.display().to_string();
        let conn = Connection::open(&path).map_err(|e| open_error(&shown, e))?;
        conn.busy_timeout(std::time::Duration::ZERO)
            .map_err(|e| open_error(&shown, e))?;
        // Order matters: exclusive locking before WAL, so that SQLite keeps the WAL index in
        // process memory (no -shm file) and the lock is held from the first transaction on.
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA cache_size = -8192;
             PRAGMA mmap_size = 2147418112;
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
        Ok(Self {
            conn,
            path,
            wal,
            head: None,
            streams: StreamCache::new(STREAM_CACHE),
        })
    }

    /// Keeps the number and version of at most `capacity` streams in memory (default
    /// [`STREAM_CACHE`]; 0: none). See [`StreamCache`].
    pub fn cache_streams(&mut self, capacity: usize) {
        self.streams = StreamCache::new(capacity);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Brings the schema to [`SCHEMA_VERSION`]: creates it in a new store, migrates an older one,
/// and does nothing (no write) to a store that is already there.
fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Io(format!(
            "the store has schema version {version}; this build knows up to {SCHEMA_VERSION} \
             (written by a newer cqrs?)"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let old_events: bool = conn
        .query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('events') WHERE name = 'category'",
            [],
            |r| r.get(0),
        )
        .map_err(sql_error)?;
    let (before, after) = if old_events {
        tracing::info!("migrating the store to schema {SCHEMA_VERSION} (numbered streams)");
        (MIGRATE_0_TO_1_BEFORE, MIGRATE_0_TO_1_AFTER)
    } else {
        ("", "")
    };
    let sql = format!(
        "BEGIN EXCLUSIVE; {before} {SCHEMA} {after} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    );
    conn.execute_batch(&sql).map_err(|e| {
        // Nothing of a failed migration stays: it is one transaction.
        let _ = conn.execute_batch("ROLLBACK");
        sql_error(e)
    })
}

/// Zeroed room past the end of the WAL file, so that commits overwrite blocks the file already
/// has instead of growing it (see the module documentation). Best effort: any failure (a full
/// disk, a file size limit) shrinks the file back to what SQLite wrote and turns the room off
/// for the life of the store; SQLite then appends as it would without it.
struct WalRoom {
    path: PathBuf,
    /// SQLite creates the file when it first reads the database; opened again if it was not there.
    file: Option<File>,
    /// Bytes per WAL frame: a 24-byte header and a page.
    frame: u64,
    /// The file's size as this store last left it; a larger size means SQLite appended.
    reserved: u64,
    enabled: bool,
}

/// The WAL header's size; frames follow it.
const WAL_HEADER: u64 = 32;
/// The least room added at once, in frames.
const WAL_MIN_ROOM: u64 = 64;

impl WalRoom {
    fn new(path: PathBuf, page_size: u64) -> Self {
        // A WAL left by an earlier process (a crash) is as big as it needs to be so far.
        let file = std::fs::OpenOptions::new().write(true).open(&path).ok();
        let reserved = file
            .as_ref()
            .and_then(|mut f| f.seek(SeekFrom::End(0)).ok())
            .unwrap_or(0);
        Self {
            path,
            file,
            frame: 24 + page_size,
            reserved,
            // A write past RLIMIT_FSIZE raises SIGXFSZ, which may kill the process: under a
            // file size limit, add nothing SQLite would not write itself.
            enabled: page_size > 0 && !file_size_limited(),
        }
    }

    /// Called after each successful commit (whose frames are already durable).
    fn after_commit(&mut self) {
        if !self.enabled {
            return;
        }
        if let Err(e) = self.make_room() {
            tracing::debug!(
                "no more room kept ahead of the WAL ({}): {e}",
                self.path.display()
            );
            self.enabled = false;
        }
    }

    fn make_room(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(std::fs::OpenOptions::new().write(true).open(&self.path)?),
        };
        // The size from lseek, not fstat: on Linux 6.13+ (multigrain timestamps), a stat makes
        // the next write stamp the file with a fresh fine-grained time, and the fdatasync of
        // every commit then also commits the inode through the journal (0.25 instead of 0.16
        // ms here): the very cost this room is there to avoid.
        let size = (&*file).seek(SeekFrom::End(0))?;
        if size <= self.reserved {
            return Ok(());
        }
        // Whole frames, so the file keeps the shape SQLite gives it.
        let frames = size.saturating_sub(WAL_HEADER).div_ceil(self.frame);
        let target = WAL_HEADER + (frames + (frames / 2).max(WAL_MIN_ROOM)) * self.frame;
        let zeros = vec![0u8; 256 * 1024];
        let mut at = size;
        let written = (|| {
            while at < target {
                let n = (target - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_data()
        })();
        match written {
            Ok(()) => {
                self.reserved = target;
                Ok(())
            }
            Err(e) => {
                // Only bytes past SQLite's own are cut.
                let _ = file.set_len(size);
                Err(e)
            }
        }
    }
}

/// Whether this process has a finite RLIMIT_FSIZE.
fn file_size_limited() -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) } == 0;
    !ok || r.rlim_cur != libc::RLIM_INFINITY
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

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordedEvent> {
    Ok(RecordedEvent {
        position: r.get::<_, i64>(0)? as Position,
        stream: StreamId {
            category: r.get(1)?,
            id: r.get(2)?,
        },
        version: r.get::<_, i64>(3)? as Version,
        event_type: r.get(4)?,
        timestamp: Timestamp(r.get(5)?),
        data: r.get(6)?,
    })
}

const EVENT_COLUMNS: &str =
    "e.position, s.category, s.stream, e.version, e.event_type, e.timestamp, e.data";

/// The reads, on a connection or inside a transaction (which derefs to its connection).
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
struct StreamCache {
    /// foldhash, randomly seeded per process: the keys are aggregate ids chosen by clients.
    entries: HashMap<StreamId, Known, foldhash::fast::RandomState>,
    capacity: usize,
}

/// A stream's number and version, as the connection sees them.
#[derive(Clone, Copy, Debug)]
struct Known {
    stream_no: i64,
    version: Version,
}

impl StreamCache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::default(),
            capacity,
        }
    }

    fn get(&self, stream: &StreamId) -> Option<Known> {
        self.entries.get(stream).copied()
    }

    fn put(&mut self, stream: &StreamId, known: Known) {
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

    fn clear(&mut self) {
        self.entries.clear();
    }
}

fn read<'c>(conn: &'c Connection, streams: &'c StreamCache) -> Reader<'c> {
    Reader { conn, streams }
}

struct Reader<'c> {
    conn: &'c Connection,
    streams: &'c StreamCache,
}

impl Reader<'_> {
    /// The stream's number and version, if it has events.
    fn known(&self, s: &StreamId) -> Result<Option<Known>> {
        if let Some(known) = self.streams.get(s) {
            return Ok(Some(known));
        }
        match self.stream_no(s)? {
            Some(stream_no) => Ok(Some(Known {
                stream_no,
                version: self.version_of(stream_no)?,
            })),
            None => Ok(None),
        }
    }

    /// The stream's number, if it has events.
    fn stream_no(&self, s: &StreamId) -> Result<Option<i64>> {
        if let Some(known) = self.streams.get(s) {
            return Ok(Some(known.stream_no));
        }
        self.conn
            .prepare_cached("SELECT stream_no FROM streams WHERE category = ?1 AND stream = ?2")
            .and_then(|mut st| {
                st.query_row(params![s.category, s.id], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_error)
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
        Ok(self.known(s)?.map_or(0, |k| k.version))
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
        let Some(stream_no) = self.stream_no(s)? else {
            return Ok(());
        };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT position, version, event_type, timestamp, data FROM events
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
        self.conn
            .prepare_cached("SELECT value FROM documents WHERE collection = ?1 AND key = ?2")
            .and_then(|mut st| {
                st.query_row(params![collection, key], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_error)
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

delegate_store_read!(impl[] SqliteStore, |this| read(&this.conn, &this.streams));
delegate_store_read!(impl[] SqliteTx<'_>, |this| read(this.conn, this.streams));

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
            streams: &mut self.streams,
            done: false,
        };
        tx.head = match tx.committed.take() {
            Some(head) => head,
            None => read(tx.conn, tx.streams).head()?,
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
    /// The store's streams, updated as this transaction appends; emptied unless it commits.
    streams: &'a mut StreamCache,
    /// Committed.
    done: bool,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.streams.clear();
        // Still open: not committed, or a COMMIT that failed and left it open.
        if !self.conn.is_autocommit() {
            let rolled_back = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut st| st.execute([]));
            if let Err(e) = rolled_back {
                tracing::error!("rolling back a transaction failed: {e}");
            }
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
        let known = read(self.conn, self.streams).known(stream)?;
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
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT INTO events (position, stream_no, version, event_type, timestamp, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql_error)?;
        let mut recorded = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let event = RecordedEvent {
                stream: stream.clone(),
                version: actual + 1 + i as Version,
                position: self.head + 1 + i as Position,
                event_type: e.event_type,
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
            ])
            .map_err(sql_error)?;
            recorded.push(event);
        }
        // Only once every row is in: a failure above leaves the transaction unusable anyway
        // (the caller drops it), but the head and the streams must never count rows that were
        // not written.
        self.head += recorded.len() as Position;
        let version = actual + recorded.len() as Version;
        self.streams.put(stream, Known { stream_no, version });
        Ok(recorded)
    }

    fn put_document(&mut self, collection: &str, key: &str, value: Option<&str>) -> Result<()> {
        let result = match value {
            Some(v) => self
                .conn
                .prepare_cached(
                    "INSERT INTO documents (collection, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value",
                )
                .and_then(|mut st| st.execute(params![collection, key, v])),
            None => self
                .conn
                .prepare_cached("DELETE FROM documents WHERE collection = ?1 AND key = ?2")
                .and_then(|mut st| st.execute(params![collection, key])),
        };
        result.map(drop).map_err(sql_error)
    }

    fn clear_collection(&mut self, collection: &str) -> Result<()> {
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

    /// Schema 0, as the first versions of this store wrote it.
    const SCHEMA_0: &str = "
        CREATE TABLE events (
            position   INTEGER PRIMARY KEY,
            category   TEXT    NOT NULL,
            stream     TEXT    NOT NULL,
            version    INTEGER NOT NULL,
            event_type TEXT    NOT NULL,
            timestamp  INTEGER NOT NULL,
            data       TEXT    NOT NULL,
            UNIQUE (category, stream, version)
        );
        CREATE TABLE documents (
            collection TEXT NOT NULL,
            key        TEXT NOT NULL,
            value      TEXT NOT NULL,
            PRIMARY KEY (collection, key)
        ) WITHOUT ROWID;
        CREATE TABLE checkpoints (
            projection TEXT PRIMARY KEY,
            position   INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE snapshots (
            category  TEXT    NOT NULL,
            stream    TEXT    NOT NULL,
            version   INTEGER NOT NULL,
            timestamp INTEGER NOT NULL,
            state     TEXT    NOT NULL,
            PRIMARY KEY (category, stream, version)
        ) WITHOUT ROWID;
        INSERT INTO events VALUES
            (1, 'User', 'b', 1, 'UserCreated', 10, '{\"id\":\"b\"}'),
            (2, 'User', 'a', 1, 'UserCreated', 20, '{\"id\":\"a\"}'),
            (3, 'User', 'b', 2, 'UserRenamed', 30, '{\"name\":\"B\"}'),
            (4, 'Other', 'b', 1, 'Made', 40, '{}');
        INSERT INTO documents VALUES ('users', 'a', '{\"id\":\"a\"}');
        INSERT INTO checkpoints VALUES ('users', 4);
        INSERT INTO snapshots VALUES ('User', 'b', 2, 30, '{}');
    ";

    #[test]
    fn a_store_of_schema_0_is_migrated_with_every_event_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(SCHEMA_0)
            .unwrap();
        let expect = |store: &SqliteStore| {
            let all = store.read_all(0, 100).unwrap();
            let got: Vec<_> = all
                .iter()
                .map(|e| {
                    (
                        e.position,
                        e.stream.category.as_str(),
                        e.stream.id.as_str(),
                        e.version,
                        e.event_type.as_str(),
                        e.timestamp.nanos(),
                        e.data.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (1, "User", "b", 1, "UserCreated", 10, r#"{"id":"b"}"#),
                    (2, "User", "a", 1, "UserCreated", 20, r#"{"id":"a"}"#),
                    (3, "User", "b", 2, "UserRenamed", 30, r#"{"name":"B"}"#),
                    (4, "Other", "b", 1, "Made", 40, "{}"),
                ]
            );
            assert_eq!(
                store.stream_version(&StreamId::new("User", "b")).unwrap(),
                2
            );
            assert_eq!(
                store.stream_version(&StreamId::new("Other", "b")).unwrap(),
                1
            );
            assert_eq!(
                store.stream_version(&StreamId::new("User", "c")).unwrap(),
                0
            );
            let b = store
                .read_stream(&StreamId::new("User", "b"), 0, Upto::End)
                .unwrap();
            assert_eq!(b.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 3]);
            assert_eq!(
                store.document("users", "a").unwrap().as_deref(),
                Some(r#"{"id":"a"}"#)
            );
            assert_eq!(store.checkpoint("users").unwrap(), 4);
            let snap = store
                .snapshot(&StreamId::new("User", "b"), Upto::End)
                .unwrap();
            assert_eq!(snap.map(|s| s.version), Some(2));
            let v: i64 = store
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
        };
        {
            let mut store = SqliteStore::open(&path).unwrap();
            expect(&store);
            // The log goes on where it was: positions and versions follow.
            let mut tx = store.begin().unwrap();
            let new = NewEvent {
                event_type: "UserRenamed".into(),
                timestamp: Timestamp(50),
                data: r#"{"name":"A"}"#.into(),
            };
            let recorded = tx
                .append(
                    &StreamId::new("User", "a"),
                    ExpectedVersion::Exact(1),
                    vec![new],
                )
                .unwrap();
            assert_eq!((recorded[0].position, recorded[0].version), (5, 2));
            assert_eq!(
                tx.append(
                    &StreamId::new("User", "b"),
                    ExpectedVersion::Exact(1),
                    vec![]
                ),
                Err(StoreError::Conflict {
                    expected: 1,
                    actual: 2
                })
            );
            tx.commit().unwrap();
        }
        // Opened again: already at the current schema, nothing migrated twice.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.read_all(0, 100).unwrap().len(), 5);
        assert_eq!(
            store.stream_version(&StreamId::new("User", "a")).unwrap(),
            2
        );
    }

    #[test]
    fn a_store_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        match SqliteStore::open(&path) {
            Err(StoreError::Io(m)) => assert!(m.contains("schema version 99"), "{m}"),
            Err(other) => panic!("wrong error: {other:?}"),
            Ok(_) => panic!("a store of schema 99 was opened"),
        }
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
        assert_eq!(pragma("synchronous"), "2", "2 is FULL");
        assert_eq!(pragma("locking_mode"), "exclusive");
        // The speed settings the module docs describe: a small page cache, reads through a map.
        assert_eq!(pragma("cache_size"), "-8192", "8 MiB");
        assert_ne!(pragma("mmap_size"), "0", "reads go through a memory map");
        assert!(matches!(
            SqliteStore::open(dir.path().join("n1.db")),
            Err(StoreError::Locked(_))
        ));
    }
}
