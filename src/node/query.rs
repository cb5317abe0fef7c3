//! `query`: read a query's JSON ([`prepare`], on a front end's thread), then answer it from the
//! store's read side ([`run`], on the writer thread): through the plug-in that declared its
//! type, or, for `ReadEvents` (the global log, which belongs to no aggregate), here.

use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{Map, Value};

use super::command::code;
use super::{Failure, Reply};
use crate::plugin::{self, Registry, Unreadable};
use crate::store::{Position, StoreError, StoreRead, StreamId};

/// `ReadEvents` page size when none is given, and the largest (larger limits are cut to it).
pub const DEFAULT_EVENTS: u64 = 100;
pub const MAX_EVENTS: u64 = 1000;

/// A query, read and checked.
pub enum Query {
    /// A plug-in's query.
    Plugin(plugin::Query),
    /// A page of the global log: events with a position after `after`, at most `limit`.
    ReadEvents { after: Position, limit: usize },
    /// The version of one aggregate's stream (0: it has no events), answered as a JSON number.
    /// Not a protocol query (no `type` reads as it): a front end asks it beside a query of the
    /// same batch, which reads the same state, for the version an HTTP `ETag` names. It reads
    /// the stream's head only, never its events ([`StoreRead::stream_version`]).
    Version(StreamId),
}

/// A query's JSON object, split into the keys the node reads (see
/// [`super::command::CommandJson`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct QueryJson {
    #[serde(rename = "type", default, deserialize_with = "super::command::present")]
    pub kind: Option<Value>,
    #[serde(default, deserialize_with = "super::command::present")]
    pub params: Option<Value>,
}

impl QueryJson {
    /// The keys of a query object.
    pub fn from_map(mut query: Map<String, Value>) -> Self {
        Self {
            kind: query.swap_remove("type"),
            params: query.swap_remove("params"),
        }
    }
}

/// The failure of a `query` that is not an object.
pub fn not_an_object() -> Failure {
    Failure::new(
        code::VALIDATION_FAILED,
        "body.query must be an object with 'type' and 'params'",
    )
}

/// Reads the JSON form of a query (`{"type", "params"?}`). A type no plug-in declares is
/// `unknown_query`; anything else wrong is `validation_failed` (or the plug-in's own code).
pub fn prepare(registry: &Registry, query: Value) -> Result<Query, Failure> {
    match query {
        Value::Object(query) => prepare_json(registry, QueryJson::from_map(query)),
        _ => Err(not_an_object()),
    }
}

/// [`prepare`], for a query already split into its keys.
pub fn prepare_json(registry: &Registry, query: QueryJson) -> Result<Query, Failure> {
    let bad = |m: &str| Failure::new(code::VALIDATION_FAILED, m);
    let kind = match query.kind {
        Some(Value::String(k)) => k,
        _ => return Err(bad("query.type must be a string")),
    };
    let params = match query.params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("query.params must be an object")),
    };
    if kind == "ReadEvents" {
        return read_events(&params);
    }
    let query = registry.query(&kind, params).map_err(|e| match e {
        Unreadable::Unknown => {
            Failure::new(code::UNKNOWN_QUERY, format!("unknown query type '{kind}'"))
        }
        Unreadable::Rejected(r) => r.into(),
    })?;
    Ok(Query::Plugin(query))
}

/// `ReadEvents`'s params: `after` (a position >= 0, default 0), `limit` (>= 1, default 100,
/// cut to 1000).
fn read_events(params: &Map<String, Value>) -> Result<Query, Failure> {
    let bad = |m: &str| Failure::new(code::VALIDATION_FAILED, m);
    let after = match params.get("after") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("params.after must be a position (an integer >= 0)"))?,
    };
    let limit = match params.get("limit") {
        None | Some(Value::Null) => DEFAULT_EVENTS,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n.min(MAX_EVENTS),
            _ => {
                return Err(bad(
                    "params.limit must be an integer >= 1 (at most 1000 are returned)",
                ))
            }
        },
    } as usize;
    Ok(Query::ReadEvents { after, limit })
}

/// A page of the global log, as `ReadEvents` answers it.
pub fn events_page(
    store: &dyn StoreRead,
    after: Position,
    limit: usize,
) -> Result<Box<RawValue>, StoreError> {
    #[derive(Serialize)]
    struct Entry<'a> {
        position: u64,
        #[serde(rename = "eventType")]
        event_type: &'a str,
        #[serde(rename = "aggregateId")]
        aggregate_id: &'a str,
        version: u64,
        timestamp: String,
        data: &'a RawValue,
    }
    #[derive(Serialize)]
    struct Page<'a> {
        events: Vec<Entry<'a>>,
        next: Option<u64>,
        head: u64,
    }
    // The head first: a page never lists an event past the head it reports.
    let head = store.head()?;
    let events = store.read_all(after, limit)?;
    let data = events
        .iter()
        .map(|e| {
            serde_json::from_str::<&RawValue>(&e.data)
                .map_err(|err| StoreError::Corrupt(format!("event {}: {err}", e.position)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let entries: Vec<Entry> = events
        .iter()
        .zip(data)
        .filter(|(e, _)| e.position <= head)
        .map(|(e, data)| Entry {
            position: e.position,
            event_type: &e.event_type,
            aggregate_id: &e.stream.id,
            version: e.version,
            timestamp: e.timestamp.to_string(),
            data,
        })
        .collect();
    let page = Page {
        next: entries.last().map(|e| e.position),
        events: entries,
        head,
    };
    to_raw_value(&page).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Answers a prepared query (or repeats why it cannot be run).
pub(super) fn run(
    registry: &Registry,
    store: &dyn StoreRead,
    query: &Result<Query, Failure>,
) -> Reply {
    let query = match query {
        Ok(q) => q,
        Err(f) => return Reply::Invalid(f.clone()),
    };
    let answer = match query {
        Query::Plugin(q) => registry.answer(store, q),
        Query::ReadEvents { after, limit } => events_page(store, *after, *limit),
        Query::Version(stream) => store
            .stream_version(stream)
            .and_then(|v| to_raw_value(&v).map_err(|e| StoreError::Corrupt(e.to_string()))),
    };
    match answer {
        Ok(data) => Reply::Data(data),
        Err(e) => {
            tracing::error!("query failed: {e}");
            Reply::Crashed(e.to_string())
        }
    }
}
