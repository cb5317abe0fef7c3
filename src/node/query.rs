//! `query`: read models answer `GetUser` and `ListUsers`; the temporal and audit queries
//! (`GetUserAtTime`, `GetUserAtVersion`, `GetUserHistory`) replay the user's stream from the
//! store, starting at the newest snapshot that fits.

use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{Map, Value};

use super::To;
use crate::domain::user::User;
use crate::engine::Repository;
use crate::projection::users::COLLECTION;
use crate::protocol::reply::{QueryCode, QueryFailed, QueryOk};
use crate::store::{StoreError, StoreRead, Upto};
use crate::timestamp::Timestamp;

/// `ListUsers` page size when none is given, and the largest allowed.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

/// A parsed query's answer: its `data`, or the store failure that stopped it (a query that
/// cannot be run was already turned away by [`parse`]).
type Answer = Result<Box<RawValue>, StoreError>;

/// A query, read and checked: [`parse`] needs no state, so the server runs it on its reader
/// thread, and the main thread only reads the store.
pub(super) enum Query {
    GetUser {
        user_id: String,
    },
    ListUsers {
        limit: usize,
        after: Option<String>,
    },
    GetUserAtTime {
        user_id: String,
        at: Timestamp,
        given: String,
    },
    GetUserAtVersion {
        user_id: String,
        version: u64,
    },
    GetUserHistory {
        user_id: String,
    },
}

/// A query that cannot be run: the code and the text of its reply.
pub(super) type Bad = (QueryCode, String);

fn bad(msg: impl Into<String>) -> Bad {
    (QueryCode::ValidationFailed, msg.into())
}

/// Reads the wire form of a query (`body.query`).
pub(super) fn parse(query: Value) -> Result<Query, Bad> {
    let Value::Object(mut query) = query else {
        return Err(bad("body.query must be an object with 'type' and 'params'"));
    };
    let kind = match query.swap_remove("type") {
        Some(Value::String(k)) => k,
        _ => return Err(bad("query.type must be a string")),
    };
    let mut params = match query.swap_remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("query.params must be an object")),
    };
    let mut user_id = || match params.swap_remove("userId") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        _ => Err(bad("params.userId must be a non-empty string")),
    };
    Ok(match kind.as_str() {
        "GetUser" => Query::GetUser {
            user_id: user_id()?,
        },
        "ListUsers" => {
            let limit = match params.get("limit") {
                None | Some(Value::Null) => DEFAULT_LIMIT,
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 1 => n.min(MAX_LIMIT),
                    _ => {
                        return Err(bad(
                            "params.limit must be an integer >= 1 (at most 1000 are returned)",
                        ))
                    }
                },
            } as usize;
            let after = match params.swap_remove("after") {
                None | Some(Value::Null) => None,
                Some(Value::String(a)) => Some(a),
                Some(_) => return Err(bad("params.after must be a user id (string)")),
            };
            Query::ListUsers { limit, after }
        }
        "GetUserAtTime" => {
            let user_id = user_id()?;
            let given = match params.swap_remove("timestamp") {
                Some(Value::String(s)) => s,
                _ => return Err(bad("params.timestamp must be an RFC 3339 string")),
            };
            let at = Timestamp::parse_clamped(&given)
                .map_err(|e| bad(format!("params.timestamp: {e}")))?;
            Query::GetUserAtTime { user_id, at, given }
        }
        "GetUserAtVersion" => {
            let user_id = user_id()?;
            let version = params
                .get("version")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("params.version must be an integer >= 0"))?;
            Query::GetUserAtVersion { user_id, version }
        }
        "GetUserHistory" => Query::GetUserHistory {
            user_id: user_id()?,
        },
        other => {
            return Err((
                QueryCode::UnknownQuery,
                format!("unknown query type '{other}'"),
            ))
        }
    })
}

pub(super) fn run(
    store: &impl StoreRead,
    id: &str,
    to: &To,
    query: &Result<Query, Bad>,
    out: &mut Vec<u8>,
) {
    let Some(msg_id) = &to.msg_id else {
        // Nobody to answer, and a read changes nothing: nothing to do.
        return;
    };
    let query = match query {
        Ok(q) => q,
        Err((code, error)) => {
            return super::reply(out, id, to, &QueryFailed::new(msg_id, *code, error))
        }
    };
    match answer(store, query) {
        Ok(data) => super::reply(out, id, to, &QueryOk::new(msg_id, &data)),
        Err(e) => {
            tracing::error!("query failed: {e}");
            super::crash_reply(out, id, to, &e.to_string())
        }
    }
}

fn answer(store: &impl StoreRead, query: &Query) -> Answer {
    match query {
        Query::GetUser { user_id } => get_user(store, user_id),
        Query::ListUsers { limit, after } => list_users(store, *limit, after.as_deref()),
        Query::GetUserAtTime { user_id, at, given } => state_at(
            store,
            user_id,
            Upto::Time(*at),
            "at_time",
            Value::String(given.clone()),
        ),
        Query::GetUserAtVersion { user_id, version } => state_at(
            store,
            user_id,
            Upto::Version(*version),
            "at_version",
            Value::from(*version),
        ),
        Query::GetUserHistory { user_id } => get_user_history(store, user_id),
    }
}

fn raw(value: &impl Serialize) -> Answer {
    to_raw_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn raw_doc(doc: String) -> Answer {
    RawValue::from_string(doc).map_err(|e| StoreError::Corrupt(format!("users document: {e}")))
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

fn get_user(store: &impl StoreRead, user_id: &str) -> Answer {
    match store.document(COLLECTION, user_id)? {
        Some(doc) => raw_doc(doc),
        None => Ok(null()),
    }
}

fn list_users(store: &impl StoreRead, limit: usize, after: Option<&str>) -> Answer {
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

fn get_user_history(store: &impl StoreRead, id: &str) -> Answer {
    #[derive(Serialize)]
    struct Entry<'a> {
        #[serde(rename = "eventType")]
        event_type: String,
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
    // Each event is lent by the store and copied once, into its entry.
    let mut events = Vec::new();
    store.visit_stream(&Repository::<User>::stream(id), 0, Upto::End, &mut |e| {
        events.push(Entry {
            event_type: e.event_type.to_string(),
            aggregate_id: id,
            version: e.version,
            timestamp: e.timestamp.to_string(),
            data: raw_doc(e.data.to_string())?,
        });
        Ok(())
    })?;
    let Some(last) = events.last() else {
        return Ok(null());
    };
    raw(&History {
        id,
        version: last.version,
        events,
    })
}
