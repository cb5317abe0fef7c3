//! `query`: read models answer `GetUser` and `ListUsers`; the temporal and audit queries
//! (`GetUserAtTime`, `GetUserAtVersion`, `GetUserHistory`) replay the user's stream from the
//! store, starting at the newest snapshot that fits.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{Map, Value};

use crate::domain::user::User;
use crate::engine::Repository;
use crate::projection::users::COLLECTION;
use crate::protocol::reply::{QueryCode, QueryFailed, QueryOk};
use crate::protocol::Request;
use crate::store::{StoreError, StoreRead, Upto};
use crate::timestamp::Timestamp;

/// `ListUsers` page size when none is given, and the largest allowed.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

enum QueryError {
    Bad(QueryCode, String),
    Store(StoreError),
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        QueryError::Store(e)
    }
}

fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Bad(QueryCode::ValidationFailed, msg.into())
}

type Answer = Result<Box<RawValue>, QueryError>;

pub(super) fn run(
    store: &impl StoreRead,
    id: &str,
    request: &Request,
    query: &Value,
    out: &mut impl Write,
) -> io::Result<()> {
    let answer = answer(store, query);
    let Some(msg_id) = &request.msg_id else {
        return Ok(());
    };
    match answer {
        Ok(data) => super::reply(out, id, request, &QueryOk::new(msg_id, &data)),
        Err(QueryError::Bad(code, error)) => {
            super::reply(out, id, request, &QueryFailed::new(msg_id, code, &error))
        }
        Err(QueryError::Store(e)) => {
            tracing::error!("query failed: {e}");
            super::crash_reply(out, id, request, &e.to_string())
        }
    }
}

fn answer(store: &impl StoreRead, query: &Value) -> Answer {
    let Value::Object(query) = query else {
        return Err(invalid(
            "body.query must be an object with 'type' and 'params'",
        ));
    };
    let kind = match query.get("type") {
        Some(Value::String(k)) => k.as_str(),
        _ => return Err(invalid("query.type must be a string")),
    };
    let empty = Map::new();
    let params = match query.get("params") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(invalid("query.params must be an object")),
    };
    match kind {
        "GetUser" => get_user(store, params),
        "ListUsers" => list_users(store, params),
        "GetUserAtTime" => get_user_at_time(store, params),
        "GetUserAtVersion" => get_user_at_version(store, params),
        "GetUserHistory" => get_user_history(store, params),
        other => Err(QueryError::Bad(
            QueryCode::UnknownQuery,
            format!("unknown query type '{other}'"),
        )),
    }
}

fn user_id(params: &Map<String, Value>) -> Result<&str, QueryError> {
    match params.get("userId") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        _ => Err(invalid("params.userId must be a non-empty string")),
    }
}

fn raw(value: &impl Serialize) -> Answer {
    to_raw_value(value).map_err(|e| QueryError::Store(StoreError::Corrupt(e.to_string())))
}

fn raw_doc(doc: String) -> Answer {
    RawValue::from_string(doc)
        .map_err(|e| QueryError::Store(StoreError::Corrupt(format!("users document: {e}"))))
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

fn get_user(store: &impl StoreRead, params: &Map<String, Value>) -> Answer {
    match store.document(COLLECTION, user_id(params)?)? {
        Some(doc) => raw_doc(doc),
        None => Ok(null()),
    }
}

fn list_users(store: &impl StoreRead, params: &Map<String, Value>) -> Answer {
    let limit = match params.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n.min(MAX_LIMIT),
            _ => {
                return Err(invalid(
                    "params.limit must be an integer >= 1 (at most 1000 are returned)",
                ))
            }
        },
    } as usize;
    let after = match params.get("after") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => Some(a.as_str()),
        Some(_) => return Err(invalid("params.after must be a user id (string)")),
    };
    let mut docs = store.documents(COLLECTION, after, limit + 1)?;
    let more = docs.len() > limit;
    docs.truncate(limit);
    let next = if more {
        docs.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    let users = docs
        .into_iter()
        .map(|(_, d)| raw_doc(d))
        .collect::<Result<Vec<_>, _>>()?;
    #[derive(Serialize)]
    struct Page {
        users: Vec<Box<RawValue>>,
        next: Option<String>,
    }
    raw(&Page { users, next })
}

/// The user's visible state at `upto`, with one more key appended; `null` when not visible.
fn state_at(store: &impl StoreRead, id: &str, upto: Upto, key: &str, value: Value) -> Answer {
    let loaded = Repository::<User>::load_at(store, id, upto)?;
    if let Upto::Version(v) = upto {
        if loaded.version < v {
            return Ok(null());
        }
    }
    if loaded.state.visible().is_none() {
        return Ok(null());
    }
    let mut data = loaded.state.attributes;
    // Always the last key, even if the user has an attribute of that name.
    data.shift_remove(key);
    data.insert(key.to_string(), value);
    raw(&data)
}

fn get_user_at_time(store: &impl StoreRead, params: &Map<String, Value>) -> Answer {
    let id = user_id(params)?;
    let given = match params.get("timestamp") {
        Some(Value::String(s)) => s,
        _ => return Err(invalid("params.timestamp must be an RFC 3339 string")),
    };
    let at =
        Timestamp::parse_clamped(given).map_err(|e| invalid(format!("params.timestamp: {e}")))?;
    state_at(
        store,
        id,
        Upto::Time(at),
        "at_time",
        Value::String(given.clone()),
    )
}

fn get_user_at_version(store: &impl StoreRead, params: &Map<String, Value>) -> Answer {
    let id = user_id(params)?;
    let version = params
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("params.version must be an integer >= 0"))?;
    state_at(
        store,
        id,
        Upto::Version(version),
        "at_version",
        Value::from(version),
    )
}

fn get_user_history(store: &impl StoreRead, params: &Map<String, Value>) -> Answer {
    let id = user_id(params)?;
    let events = store.read_stream(&Repository::<User>::stream(id), 0, Upto::End)?;
    if events.is_empty() {
        return Ok(null());
    }
    #[derive(Serialize)]
    struct Entry<'a> {
        #[serde(rename = "eventType")]
        event_type: &'a str,
        #[serde(rename = "aggregateId")]
        aggregate_id: &'a str,
        version: u64,
        timestamp: String,
        data: Box<RawValue>,
    }
    #[derive(Serialize)]
    struct History<'a> {
        id: &'a str,
        version: u64,
        events: Vec<Entry<'a>>,
    }
    let entries = events
        .iter()
        .map(|e| {
            Ok(Entry {
                event_type: &e.event_type,
                aggregate_id: &e.stream.id,
                version: e.version,
                timestamp: e.timestamp.to_string(),
                data: raw_doc(e.data.clone())?,
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    raw(&History {
        id,
        version: events.last().map_or(0, |e| e.version),
        events: entries,
    })
}
