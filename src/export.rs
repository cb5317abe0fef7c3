//! `cqrs export` and `cqrs import`: a store's source of truth as JSON lines (docs/export.md).
//!
//! What is written is what no replay can make again: the global log, every event as stored
//! (its schema and data untouched: upcasting happens when events are read, not here), and the
//! command ids (so that a retry after an import still gets its first reply). Read models,
//! checkpoints and snapshots are derived data: an import rebuilds the read models.
//!
//! ```text
//! {"format":"cqrs-export","formatVersion":1,"node":"0.1.0","head":3}
//! {"position":1,"category":"User","stream":"u1","version":1,"type":"UserCreated","schema":1,"timestamp":"2024-01-10T08:00:00Z","data":{"id":"u1","name":"Ada"}}
//! ...
//! {"commandId":"c-1","record":{"fingerprint":"...","time":1704873600000000000,"reply":{...}}}
//! {"end":true,"events":3,"commandIds":1}
//! ```
//!
//! The header, the events in global order (positions 1 to `head`, no gap), the command ids in
//! byte order of their id, and an end line with the counts: a file cut anywhere has no end
//! line, or counts that do not match, and is refused as a whole.
//!
//! [`import`] loads such a file into an empty store in **one** transaction, checking every line
//! as it goes (each error names its line), rebuilds the read models in the same transaction,
//! and commits: a store gets the whole file or nothing.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::node::command::COMMAND_IDS;
use crate::projection::{self, Projection};
use crate::store::{
    EventStore, ExpectedVersion, NewEvent, Position, Schema, StoreError, StoreRead, StoreWrite,
    StreamId, Upcasted, Version,
};
use crate::timestamp::Timestamp;

/// The name in every export's header.
pub const FORMAT: &str = "cqrs-export";
/// The version of the format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Events (and command ids) read from the store per step.
const PAGE: usize = 10_000;
/// How often progress is logged (stderr), in lines.
const PROGRESS_EVERY: u64 = 100_000;

/// What an export or an import moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub events: u64,
    #[serde(rename = "commandIds")]
    pub command_ids: u64,
}

/// Why an export or an import failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not a complete, valid export (an import wrote nothing).
    #[error("line {line}: {message}")]
    Input { line: u64, message: String },
    /// The target store already holds events or command ids.
    #[error("{0}")]
    NotEmpty(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the export, or reading the file, failed.
    #[error("{0}")]
    Io(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    #[serde(rename = "formatVersion")]
    format_version: u32,
    /// The crate version that wrote it (for people; not checked).
    node: String,
    head: Position,
}

/// One event line, as written.
#[derive(Serialize)]
struct EventOut<'a> {
    position: Position,
    category: &'a str,
    stream: &'a str,
    version: Version,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema: u32,
    timestamp: String,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct CommandIdOut<'a> {
    #[serde(rename = "commandId")]
    command_id: &'a str,
    record: &'a RawValue,
}

#[derive(Serialize)]
struct EndOut {
    end: bool,
    #[serde(flatten)]
    counts: Counts,
}

/// A key that is there, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Any line after the header, as read: which keys it has says what it is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn<'a> {
    position: Option<Position>,
    category: Option<String>,
    stream: Option<String>,
    version: Option<Version>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    schema: Option<u32>,
    timestamp: Option<String>,
    /// Present, even as `null` (a forgotten user's event), is `Some`.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(rename = "commandId")]
    command_id: Option<String>,
    #[serde(borrow)]
    record: Option<&'a RawValue>,
    end: Option<bool>,
    events: Option<u64>,
    #[serde(rename = "commandIds")]
    command_ids: Option<u64>,
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

fn line(out: &mut impl Write, value: &impl Serialize) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, value).map_err(|e| Error::Io(e.to_string()))?;
    out.write_all(b"\n").map_err(io)
}

/// Writes `store`'s log and command ids to `out` (flushed at the end), events as stored, all
/// read inside one transaction (rolled back: it writes nothing), so that on a store that other
/// nodes write to, the command ids exported are those of the events exported.
pub fn export<S: EventStore>(store: &mut S, out: &mut impl Write) -> Result<Counts, Error> {
    let tx = store.begin()?;
    export_from(&tx, out)
}

/// [`export`], reading from `store` as it is (a transaction, or a store no one else writes).
pub fn export_from(store: &impl StoreRead, out: &mut impl Write) -> Result<Counts, Error> {
    let head = store.head()?;
    let header = Header {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        node: env!("CARGO_PKG_VERSION").into(),
        head,
    };
    line(out, &header)?;
    let mut counts = Counts {
        events: 0,
        command_ids: 0,
    };
    let mut at = 0;
    while at < head {
        let events = store.read_all(at, PAGE.min((head - at) as usize))?;
        if events.is_empty() {
            return Err(
                StoreError::Corrupt(format!("the log ends at {at}, its head is {head}")).into(),
            );
        }
        for e in &events {
            if e.position != at + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the log has no event at position {}",
                    at + 1
                ))
                .into());
            }
            at = e.position;
            let data: &RawValue = serde_json::from_str(&e.data).map_err(|err| {
                StoreError::Corrupt(format!("event at position {at}: its data: {err}"))
            })?;
            line(
                out,
                &EventOut {
                    position: e.position,
                    category: &e.stream.category,
                    stream: &e.stream.id,
                    version: e.version,
                    event_type: &e.event_type,
                    schema: e.schema.0,
                    timestamp: e.timestamp.to_string(),
                    data,
                },
            )?;
            counts.events += 1;
            if counts.events.is_multiple_of(PROGRESS_EVERY) {
                tracing::info!("export: {} of {head} events", counts.events);
            }
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = store.documents(COMMAND_IDS, after.as_deref(), PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (id, record) in &page {
            let record: &RawValue = serde_json::from_str(record).map_err(|err| {
                StoreError::Corrupt(format!("command id '{id}': its record: {err}"))
            })?;
            line(
                out,
                &CommandIdOut {
                    command_id: id,
                    record,
                },
            )?;
            counts.command_ids += 1;
        }
    }
    line(out, &EndOut { end: true, counts })?;
    out.flush().map_err(io)?;
    Ok(counts)
}

/// Reads an export from `input` into `store`, which must hold no event and no command id,
/// in one transaction, and rebuilds `projections` in it. On any error nothing is stored.
pub fn import<S: EventStore>(
    store: &mut Upcasted<S>,
    input: impl BufRead,
    projections: &[Box<dyn Projection>],
) -> Result<Counts, Error> {
    let head = store.head()?;
    if head > 0 {
        return Err(Error::NotEmpty(format!(
            "the store is not empty (its log has {head} events): import only fills an empty store"
        )));
    }
    if !store.documents(COMMAND_IDS, None, 1)?.is_empty() {
        return Err(Error::NotEmpty(
            "the store is not empty (it remembers command ids): import only fills an empty store"
                .into(),
        ));
    }
    let mut tx = store.begin()?;
    let counts = read_into(&mut tx, input)?;
    projection::rebuild_in(projections, &mut tx)?;
    tx.commit()?;
    Ok(counts)
}

/// Where the reading is.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Part {
    Events,
    CommandIds,
    Ended,
}

fn read_into<T: StoreWrite>(tx: &mut T, mut input: impl BufRead) -> Result<Counts, Error> {
    let mut buf = String::new();
    let mut n: u64 = 0;
    // The next line, without its newline; None at the end of the file.
    let mut next = |buf: &mut String, n: &mut u64| -> Result<bool, Error> {
        buf.clear();
        let read = input.read_line(buf).map_err(|e| Error::Input {
            line: *n + 1,
            message: format!("cannot be read: {e}"),
        })?;
        if read == 0 {
            return Ok(false);
        }
        *n += 1;
        if buf.ends_with('\n') {
            buf.pop();
        }
        Ok(true)
    };
    let bad = |line: u64, message: String| Error::Input { line, message };

    if !next(&mut buf, &mut n)? {
        return Err(bad(1, "the file is empty (no header)".into()));
    }
    let header: Header =
        serde_json::from_str(&buf).map_err(|e| bad(1, format!("not an export header: {e}")))?;
    if header.format != FORMAT {
        return Err(bad(
            1,
            format!("the format is '{}', not '{FORMAT}'", header.format),
        ));
    }
    if header.format_version > FORMAT_VERSION || header.format_version == 0 {
        return Err(bad(
            1,
            format!(
                "format version {} (this cqrs reads version {FORMAT_VERSION})",
                header.format_version
            ),
        ));
    }

    let mut counts = Counts {
        events: 0,
        command_ids: 0,
    };
    let mut streams: HashMap<StreamId, (Version, Timestamp)> = HashMap::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut part = Part::Events;
    while next(&mut buf, &mut n)? {
        if part == Part::Ended {
            return Err(bad(n, "a line after the end line".into()));
        }
        let l: LineIn = serde_json::from_str(&buf).map_err(|e| bad(n, format!("{e}")))?;
        if let Some(end) = l.end {
            if !end || l.position.is_some() || l.command_id.is_some() {
                return Err(bad(
                    n,
                    "an end line is {\"end\":true,\"events\":N,\"commandIds\":M}".into(),
                ));
            }
            let said = Counts {
                events: l
                    .events
                    .ok_or_else(|| bad(n, "the end line has no 'events'".into()))?,
                command_ids: l
                    .command_ids
                    .ok_or_else(|| bad(n, "the end line has no 'commandIds'".into()))?,
            };
            if said != counts {
                return Err(bad(
                    n,
                    format!(
                        "the end line counts {} events and {} command ids, the file holds {} \
                         and {}",
                        said.events, said.command_ids, counts.events, counts.command_ids
                    ),
                ));
            }
            if counts.events != header.head {
                return Err(bad(
                    n,
                    format!(
                        "the header's head is {}, the file holds {} events",
                        header.head, counts.events
                    ),
                ));
            }
            part = Part::Ended;
        } else if let Some(id) = l.command_id {
            let record = l
                .record
                .ok_or_else(|| bad(n, format!("command id '{id}' has no 'record'")))?;
            if l.position.is_some() || l.events.is_some() || l.command_ids.is_some() {
                return Err(bad(
                    n,
                    "a command id line is {\"commandId\",\"record\"}".into(),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(bad(n, format!("command id '{id}' is given twice")));
            }
            if counts.events != header.head {
                return Err(bad(
                    n,
                    format!(
                        "command ids start after {} events, the header's head is {}",
                        counts.events, header.head
                    ),
                ));
            }
            part = Part::CommandIds;
            tx.put_document(COMMAND_IDS, &id, Some(record.get()))?;
            counts.command_ids += 1;
        } else {
            if part != Part::Events {
                return Err(bad(n, "an event after the command ids".into()));
            }
            let event = event_of(l).map_err(|m| bad(n, m))?;
            let position = counts.events + 1;
            if event.position != position {
                return Err(bad(
                    n,
                    format!(
                        "position {} where {position} comes next (positions run from 1 without \
                         a gap)",
                        event.position
                    ),
                ));
            }
            if event.position > header.head {
                return Err(bad(
                    n,
                    format!(
                        "position {} is past the header's head {}",
                        position, header.head
                    ),
                ));
            }
            let (version, last) = streams
                .get(&event.stream)
                .copied()
                .unwrap_or((0, Timestamp(i64::MIN)));
            if event.version != version + 1 {
                return Err(bad(
                    n,
                    format!(
                        "version {} of {}/{} where {} comes next",
                        event.version,
                        event.stream.category,
                        event.stream.id,
                        version + 1
                    ),
                ));
            }
            if event.new.timestamp < last {
                return Err(bad(
                    n,
                    format!(
                        "the time of {}/{} goes backwards at version {}",
                        event.stream.category, event.stream.id, event.version
                    ),
                ));
            }
            let time = event.new.timestamp;
            let recorded = tx
                .append(
                    &event.stream,
                    ExpectedVersion::Exact(version),
                    vec![event.new],
                )
                .map_err(|e| match e {
                    StoreError::Corrupt(m) => bad(n, m),
                    other => Error::Store(other),
                })?;
            // The store numbers the log itself: on an empty store, as the file does.
            let given = recorded.first().map(|r| r.position);
            if given != Some(position) {
                return Err(StoreError::Corrupt(format!(
                    "line {n}: the store gave the event position {given:?}, the file {position}"
                ))
                .into());
            }
            streams.insert(event.stream, (event.version, time));
            counts.events += 1;
            if counts.events.is_multiple_of(PROGRESS_EVERY) {
                tracing::info!("import: {} of {} events", counts.events, header.head);
            }
        }
    }
    if part != Part::Ended {
        return Err(bad(
            n,
            format!(
                "the file ends without its end line (cut short? {} events and {} command ids \
                 read)",
                counts.events, counts.command_ids
            ),
        ));
    }
    Ok(counts)
}

struct EventIn {
    position: Position,
    stream: StreamId,
    version: Version,
    new: NewEvent,
}

fn event_of(l: LineIn<'_>) -> Result<EventIn, String> {
    if l.events.is_some() || l.command_ids.is_some() || l.record.is_some() {
        return Err(
            "an event line has position, category, stream, version, type, schema, \
                    timestamp and data"
                .into(),
        );
    }
    let missing = |key: &str| format!("an event line needs '{key}'");
    let timestamp = l.timestamp.ok_or_else(|| missing("timestamp"))?;
    let data = l.data.ok_or_else(|| missing("data"))?;
    // `null`: the data of a forgotten stream's event (store::seal).
    if !data.get().starts_with('{') && data.get() != "null" {
        return Err("an event's data is a JSON object (or null, once forgotten)".into());
    }
    Ok(EventIn {
        position: l.position.ok_or_else(|| missing("position"))?,
        stream: StreamId::new(
            l.category.ok_or_else(|| missing("category"))?,
            l.stream.ok_or_else(|| missing("stream"))?,
        ),
        version: l.version.ok_or_else(|| missing("version"))?,
        new: NewEvent {
            event_type: l.event_type.ok_or_else(|| missing("type"))?,
            schema: Schema(l.schema.ok_or_else(|| missing("schema"))?),
            timestamp: Timestamp::parse(&timestamp).map_err(|e| format!("timestamp: {e}"))?,
            data: data.get().to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Upcaster, Upcasters};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn upcasted(store: MemoryStore) -> Upcasted<MemoryStore> {
        Upcasted::new(store, Arc::new(Upcasters::new()))
    }

    fn exported(store: &impl StoreRead) -> String {
        let mut out = Vec::new();
        export_from(store, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A store with the given streams' events (stream index, time step, schema, data) and
    /// command ids.
    fn store_of(events: &[(u8, i64, u32, String)], ids: &[(String, String)]) -> MemoryStore {
        let mut store = MemoryStore::new();
        let mut tx = store.begin().unwrap();
        let mut times: HashMap<u8, i64> = HashMap::new();
        for (s, dt, schema, data) in events {
            let t = times.entry(*s).or_insert(i64::MIN / 2);
            *t += dt;
            tx.append(
                &StreamId::new(if s % 2 == 0 { "User" } else { "Other" }, format!("s\"{s}")),
                ExpectedVersion::Any,
                vec![NewEvent {
                    event_type: format!("T{}", s % 3),
                    schema: Schema(*schema),
                    timestamp: Timestamp(*t),
                    data: data.clone(),
                }],
            )
            .unwrap();
        }
        for (id, record) in ids {
            tx.put_document(COMMAND_IDS, id, Some(record)).unwrap();
        }
        tx.commit().unwrap();
        store
    }

    proptest! {
        /// Export, import into an empty store, export again: the same bytes, and the same log
        /// and command ids in the store (times to the nanosecond, odd text, any schema).
        #[test]
        fn export_import_export_is_the_same_bytes(
            events in prop::collection::vec(
                (0u8..6, 0i64..1_000_000_000_000, 0u32..4, "[a-z\"\\\\ é\u{1F600}]{0,8}"),
                0..40),
            ids in prop::collection::btree_map("[a-z0-9\"\u{e9}-]{1,6}", 0u32..1000, 0..5),
        ) {
            let events: Vec<(u8, i64, u32, String)> = events
                .into_iter()
                .map(|(s, dt, schema, text)| {
                    (s, dt, schema + 1, serde_json::json!({ "t": text, "s": s }).to_string())
                })
                .collect();
            let ids: Vec<(String, String)> = ids
                .into_iter()
                .map(|(id, n)| (id, format!(r#"{{"n":{n}}}"#)))
                .collect();
            let source = store_of(&events, &ids);
            let first = exported(&source);
            // Schemas 1 to 4 of every type are readable (an upcaster that changes nothing
            // from each of 1, 2 and 3): the import checks that each event can be read back.
            fn same(
                data: serde_json::Map<String, serde_json::Value>,
            ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
                Ok(data)
            }
            let mut upcasters = Upcasters::new();
            for event_type in ["T0", "T1", "T2"] {
                for from in 1..4 {
                    upcasters.add(&[Upcaster { event_type, from: Schema(from), upcast: same }]);
                }
            }
            let mut target = Upcasted::new(MemoryStore::new(), Arc::new(upcasters));
            let counts = import(&mut target, first.as_bytes(), &[]).unwrap();
            prop_assert_eq!(counts.events, events.len() as u64);
            prop_assert_eq!(counts.command_ids, ids.len() as u64);
            prop_assert_eq!(exported(target.inner()), first);
            prop_assert_eq!(
                target.inner().read_all(0, usize::MAX).unwrap(),
                source.read_all(0, usize::MAX).unwrap()
            );
        }
    }

    fn sample() -> String {
        let events = vec![
            (0, 5, 1, r#"{"id":"a"}"#.to_string()),
            (1, 5, 1, r#"{"id":"b"}"#.to_string()),
            (0, 5, 1, r#"{"name":"A"}"#.to_string()),
        ];
        exported(&store_of(&events, &[("c1".into(), "{}".into())]))
    }

    fn import_text(text: &str) -> (Result<Counts, Error>, Upcasted<MemoryStore>) {
        let mut target = upcasted(MemoryStore::new());
        let result = import(&mut target, text.as_bytes(), &[]);
        (result, target)
    }

    /// A file cut short, a line changed, one added: refused, naming the line, nothing stored.
    #[test]
    fn a_damaged_file_is_refused_with_its_line_and_leaves_the_store_empty() {
        let good = sample();
        let lines: Vec<&str> = good.lines().collect();
        assert_eq!(lines.len(), 6, "{good}");
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "line 1: the file is empty"),
            (
                lines[..4].join("\n"),
                "line 4: the file ends without its end line",
            ),
            (good[..good.len() - 10].to_string(), "line 6: "),
            (
                [&lines[..2], &lines[3..]].concat().join("\n"),
                "line 3: position 3 where 2 comes next",
            ),
            (
                good.replace(r#""version":2"#, r#""version":3"#),
                "line 4: version 3 of User/s\"0 where 2 comes next",
            ),
            (
                good.replace("cqrs-export", "other"),
                "line 1: the format is 'other'",
            ),
            (
                good.replace(r#""formatVersion":1"#, r#""formatVersion":2"#),
                "line 1: format version 2",
            ),
            (
                good.replace(r#""events":3"#, r#""events":4"#),
                "line 6: the end line counts 4 events",
            ),
            (
                format!("{good}{}\n", lines[5]),
                "line 7: a line after the end line",
            ),
            (
                good.replace(r#""schema":1,"#, r#""schema":1,"extra":0,"#),
                "line 2: unknown field `extra`",
            ),
            (
                good.replace(r#""schema":1,"#, r#""schema":2,"#),
                "line 2: an event of User/s\"0 (T0, schema 2) would be unreadable",
            ),
            (
                good.replacen(r#""timestamp":""#, r#""timestamp":"x"#, 1),
                "line 2: timestamp: 'x",
            ),
        ];
        for (text, want) in cases {
            let (result, target) = import_text(&text);
            let message = result.expect_err(want).to_string();
            assert!(
                message.starts_with(want),
                "{message}\nwanted: {want}\n{text}"
            );
            assert_eq!(target.head().unwrap(), 0);
            assert!(target.documents(COMMAND_IDS, None, 1).unwrap().is_empty());
        }
        // The target is still usable: the good file goes in.
        let (result, target) = import_text(&good);
        assert_eq!(result.unwrap().events, 3);
        assert_eq!(exported(target.inner()), good);
    }

    #[test]
    fn a_store_with_events_or_command_ids_is_refused() {
        let mut full = upcasted(store_of(&[(0, 1, 1, "{}".into())], &[]));
        let m = import(&mut full, sample().as_bytes(), &[]).unwrap_err();
        assert!(matches!(m, Error::NotEmpty(_)), "{m}");
        assert_eq!(full.head().unwrap(), 1);
        let mut ids = upcasted(store_of(&[], &[("c".into(), "{}".into())]));
        assert!(matches!(
            import(&mut ids, sample().as_bytes(), &[]),
            Err(Error::NotEmpty(_))
        ));
    }
}
