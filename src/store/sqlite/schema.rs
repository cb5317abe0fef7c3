//! The tables, and the migrations that bring an older store to them.

use rusqlite::Connection;

use super::*;

/// The schema's version, kept in `PRAGMA user_version`. 0: the first layout (events keyed by
/// their stream's category and id as text); 1: numbered streams, documents keyed by their text
/// key only; 2: numbered documents; 3: each event's data schema (`events.schema`, see
/// [`Schema`]). Older stores are migrated in place when opened.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// Streams are numbered (`streams`), and events name their stream by number: the events index
/// compares integers instead of two strings, and its entries are a third of the size. B-tree
/// descents on the text keys were ~13% of the time on a 1,000,000-command workload (schema 1).
///
/// Documents are numbered too (schema 2): a rewrite of a document the store knows by number
/// (`known.rs`) goes straight to its row, where the text-keyed table (`WITHOUT ROWID`, the
/// document inside the key's B-tree) took a descent comparing strings at every level: 32% of a
/// streamed run's main-thread instructions. Reads by key and in key order use the
/// `(collection, key)` index.
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
    schema     INTEGER NOT NULL DEFAULT 1,
    UNIQUE (stream_no, version)
);
CREATE TABLE IF NOT EXISTS documents (
    doc_no     INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    UNIQUE (collection, key)
);
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

/// From documents keyed by text (schemas 0 and 1) to numbered ones (2), the same way.
const MIGRATE_DOCUMENTS_BEFORE: &str = "ALTER TABLE documents RENAME TO documents_1;";
const MIGRATE_DOCUMENTS_AFTER: &str = "
INSERT INTO documents (collection, key, value)
    SELECT collection, key, value FROM documents_1 ORDER BY collection, key;
DROP TABLE documents_1;
";

/// From events without a data schema (schemas 1 and 2) to 3: every event stored before was
/// written in its type's first schema. (Adding a column with a constant default rewrites no
/// row: SQLite fills the default in as rows are read.)
const MIGRATE_EVENT_SCHEMA: &str =
    "ALTER TABLE events ADD COLUMN schema INTEGER NOT NULL DEFAULT 1;";

/// Brings the schema to [`SCHEMA_VERSION`]: creates it in a new store, migrates an older one,
/// and does nothing (no write) to a store that is already there.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
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
    let old_documents: bool = conn
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'documents'
             AND NOT EXISTS (SELECT 1 FROM pragma_table_info('documents') WHERE name = 'doc_no')",
            [],
            |r| r.get(0),
        )
        .map_err(sql_error)?;
    // Events of schema 0 are copied into a new table, which has the column.
    let no_event_schema: bool = !old_events
        && conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'events'
                 AND NOT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'schema')",
                [],
                |r| r.get(0),
            )
            .map_err(sql_error)?;
    let (mut before, mut after) = (String::new(), String::new());
    if old_events {
        tracing::info!("migrating the store to schema {SCHEMA_VERSION}: numbered streams");
        before.push_str(MIGRATE_0_TO_1_BEFORE);
        after.push_str(MIGRATE_0_TO_1_AFTER);
    }
    if no_event_schema {
        tracing::info!("migrating the store to schema {SCHEMA_VERSION}: event data schemas");
        after.push_str(MIGRATE_EVENT_SCHEMA);
    }
    if old_documents {
        tracing::info!("migrating the store to schema {SCHEMA_VERSION}: numbered documents");
        before.push_str(MIGRATE_DOCUMENTS_BEFORE);
        after.push_str(MIGRATE_DOCUMENTS_AFTER);
    }
    let sql = format!(
        "BEGIN EXCLUSIVE; {before} {SCHEMA} {after} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    );
    conn.execute_batch(&sql).map_err(|e| {
        // Nothing of a failed migration stays: it is one transaction.
        let _ = conn.execute_batch("ROLLBACK");
        sql_error(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables schemas 0 and 1 share, as both wrote them.
    const TABLES_OF_0_AND_1: &str = "
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
    ";

    /// A store of an old schema: the tables it shares with the other old one, then its own
    /// tables and content.
    fn old_store(path: &std::path::Path, own: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(TABLES_OF_0_AND_1).unwrap();
        conn.execute_batch(own).unwrap();
    }

    /// Schema 0's own table, as the first versions of this store wrote it, and a store's content.
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
        old_store(&path, SCHEMA_0);
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
            assert!(all.iter().all(|e| e.schema == FIRST_SCHEMA));
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
                schema: FIRST_SCHEMA,
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

    /// Schema 1's own tables (numbered streams; documents still keyed by text), as this store
    /// wrote them, and a store's content.
    const SCHEMA_1: &str = "
        CREATE TABLE streams (
            stream_no INTEGER PRIMARY KEY,
            category  TEXT NOT NULL,
            stream    TEXT NOT NULL,
            UNIQUE (category, stream)
        );
        CREATE TABLE events (
            position   INTEGER PRIMARY KEY,
            stream_no  INTEGER NOT NULL,
            version    INTEGER NOT NULL,
            event_type TEXT    NOT NULL,
            timestamp  INTEGER NOT NULL,
            data       TEXT    NOT NULL,
            UNIQUE (stream_no, version)
        );
        INSERT INTO streams VALUES (1, 'User', 'b'), (2, 'User', 'a');
        INSERT INTO events VALUES
            (1, 1, 1, 'UserCreated', 10, '{\"id\":\"b\"}'),
            (2, 2, 1, 'UserCreated', 20, '{\"id\":\"a\"}');
        INSERT INTO documents VALUES
            ('users', 'b', '{\"id\":\"b\"}'),
            ('users', 'a', '{\"id\":\"a\"}'),
            ('other', 'a', 'x');
        INSERT INTO checkpoints VALUES ('users', 2);
        PRAGMA user_version = 1;
    ";

    #[test]
    fn a_store_of_schema_1_gets_numbered_documents_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.db");
        old_store(&path, SCHEMA_1);
        let documents = |store: &SqliteStore, c: &str| store.documents(c, None, 10).unwrap();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        {
            let mut store = SqliteStore::open(&path).unwrap();
            let v: i64 = store
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            assert_eq!(
                documents(&store, "users"),
                [pair("a", r#"{"id":"a"}"#), pair("b", r#"{"id":"b"}"#)]
            );
            assert_eq!(documents(&store, "other"), [pair("a", "x")]);
            assert_eq!(store.checkpoint("users").unwrap(), 2);
            assert_eq!(store.read_all(0, 10).unwrap().len(), 2);
            // Documents are rewritten, added and deleted as in any store.
            let mut tx = store.begin().unwrap();
            tx.put_document("users", "a", Some("A")).unwrap();
            tx.put_document("users", "c", Some("C")).unwrap();
            tx.put_document("other", "a", None).unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            documents(&store, "users"),
            [pair("a", "A"), pair("b", r#"{"id":"b"}"#), pair("c", "C")]
        );
        assert!(documents(&store, "other").is_empty());
        assert_eq!(
            store.document("users", "b").unwrap().as_deref(),
            Some(r#"{"id":"b"}"#)
        );
    }

    /// Schema 2's tables (this store's layout before events carried a data schema), as this
    /// store wrote them, and a store's content.
    const SCHEMA_2: &str = "
        CREATE TABLE streams (
            stream_no INTEGER PRIMARY KEY,
            category  TEXT NOT NULL,
            stream    TEXT NOT NULL,
            UNIQUE (category, stream)
        );
        CREATE TABLE events (
            position   INTEGER PRIMARY KEY,
            stream_no  INTEGER NOT NULL,
            version    INTEGER NOT NULL,
            event_type TEXT    NOT NULL,
            timestamp  INTEGER NOT NULL,
            data       TEXT    NOT NULL,
            UNIQUE (stream_no, version)
        );
        CREATE TABLE documents (
            doc_no     INTEGER PRIMARY KEY,
            collection TEXT NOT NULL,
            key        TEXT NOT NULL,
            value      TEXT NOT NULL,
            UNIQUE (collection, key)
        );
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
        INSERT INTO streams VALUES (1, 'User', 'b');
        INSERT INTO events VALUES
            (1, 1, 1, 'UserCreated', 10, '{\"id\":\"b\"}'),
            (2, 1, 2, 'UserRenamed', 20, '{\"name\":\"B\"}');
        INSERT INTO documents VALUES (1, 'users', 'b', '{\"id\":\"b\",\"name\":\"B\"}');
        INSERT INTO checkpoints VALUES ('users', 2);
        PRAGMA user_version = 2;
    ";

    /// Events stored before they carried a schema were all written in their type's first one;
    /// new events keep whatever schema they are appended with, across a reopen.
    #[test]
    fn a_store_of_schema_2_gets_event_schemas_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(SCHEMA_2)
            .unwrap();
        let schemas = |store: &SqliteStore| -> Vec<(u64, u32, String)> {
            store
                .read_all(0, 10)
                .unwrap()
                .into_iter()
                .map(|e| (e.position, e.schema.0, e.data))
                .collect()
        };
        let old = vec![
            (1, 1, r#"{"id":"b"}"#.to_string()),
            (2, 1, r#"{"name":"B"}"#.to_string()),
        ];
        {
            let mut store = SqliteStore::open(&path).unwrap();
            let v: i64 = store
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            assert_eq!(schemas(&store), old);
            let b = store
                .read_stream(&StreamId::new("User", "b"), 0, Upto::End)
                .unwrap();
            assert_eq!(
                b.iter().map(|e| e.schema).collect::<Vec<_>>(),
                [FIRST_SCHEMA; 2]
            );
            let mut tx = store.begin().unwrap();
            let new = NewEvent {
                event_type: "UserRenamed".into(),
                schema: Schema(4),
                timestamp: Timestamp(30),
                data: r#"{"name":"C"}"#.into(),
            };
            tx.append(
                &StreamId::new("User", "b"),
                ExpectedVersion::Exact(2),
                vec![new],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let mut all = old;
        all.push((3, 4, r#"{"name":"C"}"#.to_string()));
        assert_eq!(schemas(&store), all);
        assert_eq!(
            store.document("users", "b").unwrap().as_deref(),
            Some(r#"{"id":"b","name":"B"}"#)
        );
        assert_eq!(store.checkpoint("users").unwrap(), 2);
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
}
