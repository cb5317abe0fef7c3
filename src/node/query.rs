//! `query`: read a query's JSON ([`prepare`], on a front end's thread), then answer it from the
//! store's read side through the plug-in that declared it ([`run`], on the writer thread).

use serde_json::{Map, Value};

use super::command::code;
use super::{Failure, Reply};
use crate::plugin::{Query, Registry, Unreadable};
use crate::store::StoreRead;

/// Reads the JSON form of a query (`{"type", "params"?}`). A type no plug-in declares is
/// `unknown_query`; anything else wrong is `validation_failed` (or the plug-in's own code).
pub fn prepare(registry: &Registry, query: Value) -> Result<Query, Failure> {
    let bad = |m: &str| Failure::new(code::VALIDATION_FAILED, m);
    let Value::Object(mut query) = query else {
        return Err(bad("body.query must be an object with 'type' and 'params'"));
    };
    let kind = match query.swap_remove("type") {
        Some(Value::String(k)) => k,
        _ => return Err(bad("query.type must be a string")),
    };
    let params = match query.swap_remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("query.params must be an object")),
    };
    registry.query(&kind, params).map_err(|e| match e {
        Unreadable::Unknown => {
            Failure::new(code::UNKNOWN_QUERY, format!("unknown query type '{kind}'"))
        }
        Unreadable::Rejected(r) => r.into(),
    })
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
    match registry.answer(store, query) {
        Ok(data) => Reply::Data(data),
        Err(e) => {
            tracing::error!("query failed: {e}");
            Reply::Crashed(e.to_string())
        }
    }
}
