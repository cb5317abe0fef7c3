//! The `User` plug-in: the five user commands (read by [`UserCommand::from_payload`]), the
//! users read model, and the user queries.
//!
//! `GetUser` and `ListUsers` read the users projection; the temporal and audit queries
//! (`GetUserAtTime`, `GetUserAtVersion`, `GetUserHistory`) replay the user's stream from the
//! store, starting at the newest snapshot that fits.

use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{Map, Value};

use super::{null, Plugin};
use crate::domain::user::{PayloadError, User, UserCommand};
use crate::domain::Rejection;
use crate::engine::Repository;
use crate::projection::users::{UsersProjection, COLLECTION};
use crate::projection::users_at::{self, UsersAtIndexProjection, UsersAtProjection};
use crate::projection::Projection;
use crate::store::{StoreError, StoreRead, Upto};
use crate::timestamp::Timestamp;

/// `ListUsers` page size when none is given, and the largest allowed.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

/// The User aggregate, as a node serves it.
pub struct UserPlugin;

/// A user query, read and checked.
pub enum UserQuery {
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
    ListUsersAtTime {
        at: Timestamp,
        given: String,
        limit: usize,
        after: Option<String>,
    },
}

const QUERIES: &[&str] = &[
    "GetUser",
    "ListUsers",
    "GetUserAtTime",
    "GetUserAtVersion",
    "GetUserHistory",
    "ListUsersAtTime",
];

impl Plugin for UserPlugin {
    type Aggregate = User;
    type Query = UserQuery;

    fn commands(&self) -> &'static [&'static str] {
        UserCommand::KINDS
    }

    fn command(&self, kind: &str, payload: Map<String, Value>) -> Result<UserCommand, Rejection> {
        UserCommand::from_payload(kind, payload.into()).map_err(|e| match e {
            PayloadError::Invalid(r) => r,
            // The registry routes only the types of `commands()` here.
            PayloadError::UnknownCommand => {
                Rejection::invalid(format!("unknown command type '{kind}'"))
            }
        })
    }

    fn queries(&self) -> &'static [&'static str] {
        QUERIES
    }

    fn query(&self, kind: &str, mut params: Map<String, Value>) -> Result<UserQuery, Rejection> {
        let bad = |m: &str| Rejection::invalid(m);
        let user_id = |params: &mut Map<String, Value>| match params.swap_remove("userId") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id),
            _ => Err(bad("params.userId must be a non-empty string")),
        };
        // `limit` and `after` of ListUsers (and ListUsersAtTime).
        let page = |params: &mut Map<String, Value>| {
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
            Ok((limit, after))
        };
        let time = |params: &mut Map<String, Value>| {
            let given = match params.swap_remove("timestamp") {
                Some(Value::String(s)) => s,
                _ => return Err(bad("params.timestamp must be an RFC 3339 string")),
            };
            let at = Timestamp::parse_clamped(&given)
                .map_err(|e| Rejection::invalid(format!("params.timestamp: {e}")))?;
            Ok((at, given))
        };
        let params = &mut params;
        Ok(match kind {
            "GetUser" => UserQuery::GetUser {
                user_id: user_id(params)?,
            },
            "ListUsers" => {
                let (limit, after) = page(params)?;
                UserQuery::ListUsers { limit, after }
            }
            "GetUserAtTime" => {
                let user_id = user_id(params)?;
                let (at, given) = time(params)?;
                UserQuery::GetUserAtTime { user_id, at, given }
            }
            "ListUsersAtTime" => {
                let (at, given) = time(params)?;
                let (limit, after) = page(params)?;
                UserQuery::ListUsersAtTime {
                    at,
                    given,
                    limit,
                    after,
                }
            }
            "GetUserAtVersion" => {
                let user_id = user_id(params)?;
                let version = params
                    .get("version")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("params.version must be an integer >= 0"))?;
                UserQuery::GetUserAtVersion { user_id, version }
            }
            _ => UserQuery::GetUserHistory {
                user_id: user_id(params)?,
            },
        })
    }

    fn answer(
        &self,
        store: &dyn StoreRead,
        query: &UserQuery,
    ) -> Result<Box<RawValue>, StoreError> {
        match query {
            UserQuery::GetUser { user_id } => get_user(store, user_id),
            UserQuery::ListUsers { limit, after } => list_users(store, *limit, after.as_deref()),
            UserQuery::GetUserAtTime { user_id, at, given } => state_at(
                store,
                user_id,
                Upto::Time(*at),
                "at_time",
                Value::String(given.clone()),
            ),
            UserQuery::GetUserAtVersion { user_id, version } => state_at(
                store,
                user_id,
                Upto::Version(*version),
                "at_version",
                Value::from(*version),
            ),
            UserQuery::GetUserHistory { user_id } => get_user_history(store, user_id),
            UserQuery::ListUsersAtTime {
                at,
                given,
                limit,
                after,
            } => list_users_at_time(store, *at, given, *limit, after.as_deref()),
        }
    }

    fn projections(&self) -> Vec<Box<dyn Projection>> {
        vec![
            Box::new(UsersProjection),
            Box::new(UsersAtProjection::new()),
            Box::new(UsersAtIndexProjection::new()),
        ]
    }
}

type Answer = Result<Box<RawValue>, StoreError>;

fn raw(value: &impl Serialize) -> Answer {
    to_raw_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn raw_doc(doc: String) -> Answer {
    RawValue::from_string(doc).map_err(|e| StoreError::Corrupt(format!("users document: {e}")))
}

fn get_user(store: &dyn StoreRead, user_id: &str) -> Answer {
    match store.document(COLLECTION, user_id)? {
        Some(doc) => raw_doc(doc),
        None => Ok(null()),
    }
}

fn list_users(store: &dyn StoreRead, limit: usize, after: Option<&str>) -> Answer {
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

/// `ListUsersAtTime`: a page of the temporal read model, shaped as `ListUsers`' with
/// `at_time` last.
fn list_users_at_time(
    store: &dyn StoreRead,
    at: Timestamp,
    given: &str,
    limit: usize,
    after: Option<&str>,
) -> Answer {
    let page = users_at::list_at(store, at, limit, after)?;
    let next = if page.more {
        page.users.last().map(|(id, _)| id.clone())
    } else {
        None
    };
    let users = page
        .users
        .into_iter()
        .map(|(_, d)| {
            RawValue::from_string(d)
                .map_err(|e| StoreError::Corrupt(format!("{} document: {e}", users_at::RECENT)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    #[derive(Serialize)]
    struct Page<'a> {
        users: Vec<Box<RawValue>>,
        next: Option<String>,
        at_time: &'a str,
    }
    raw(&Page {
        users,
        next,
        at_time: given,
    })
}

/// The user's visible state at `upto`, with one more key appended; `null` when not visible.
fn state_at(store: &dyn StoreRead, id: &str, upto: Upto, key: &str, value: Value) -> Answer {
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

fn get_user_history(store: &dyn StoreRead, id: &str) -> Answer {
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
