//! The node's core: typed requests in, typed replies out, no transport.
//!
//! [`Node`] owns the store, the aggregates' repositories and the projections. It takes a batch of
//! [`Request`]s and answers each with a [`Reply`], in order ([`Node::handle`]). If the batch
//! holds a command, the whole batch runs in **one store transaction** (group commit: one fsync
//! per batch); a query in it reads through the transaction, so it sees every command before it.
//! Replies are handed out only after the commit: nothing is acknowledged, and no state is
//! shown, before it is durable. (A batch whose replies pass [`MAX_BUFFERED_REPLIES`] bytes is cut
//! there into several transactions, so that memory stays bounded.) If the commit fails, nothing
//! of the batch was stored: every command of the batch is answered [`Reply::Crashed`], and the
//! other requests are answered again outside the transaction.
//!
//! Front ends do not call `Node` directly: [`writer::Writer`] runs it on one writer thread and
//! hands out [`writer::Handle`]s, through which any number of front ends submit requests over a
//! bounded channel; whatever is waiting when the writer is free is handled as one batch.
//!
//! What a front end needs before that, [`command::prepare`] and [`query::prepare`], reads a
//! command's or query's JSON into a typed request through the [`Registry`]: it needs no state,
//! so it runs on the front end's own threads.
//!
//! One handler file per request kind: [`command`], [`query`].

pub mod command;
pub mod query;
pub mod writer;

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::engine::Executed;
use crate::plugin::{Registry, Runners};
use crate::projection::{self, Projection};
use crate::store::Version;
use crate::store::{EventStore, Sealed, StoreError, StoreRead, StoreWrite, Upcasted};

pub use command::{CommandId, Failure};

/// Tuning knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Aggregates kept in memory between commands.
    pub cache_size: usize,
    /// A snapshot every this many events of a stream (0: never).
    pub snapshot_every: u64,
    /// How long a `commandId` is remembered (`None`: for ever). Older ones are forgotten when
    /// the node opens its store.
    pub command_id_retention: Option<std::time::Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_size: 100_000,
            snapshot_every: 100,
            command_id_retention: None,
        }
    }
}

/// Most bytes of replies held in memory while their transaction is open (a batch of reads of
/// large users would otherwise hold all of its replies at once).
pub const MAX_BUFFERED_REPLIES: usize = 4 << 20;

/// A request, read and checked by a front end.
pub enum Request {
    /// A command, or why it cannot be run (answered with that failure, in its place).
    Command(Result<crate::plugin::Command, Failure>),
    /// A query, or why it cannot be run.
    Query(Result<query::Query, Failure>),
    /// Nothing for the node to do: the front end answers it itself (a protocol message, say),
    /// and needs only its place in the order of replies ([`Reply::Passed`]).
    Pass,
}

/// The answer to one [`Request`].
#[derive(Debug)]
pub enum Reply {
    /// A command that succeeded: its events (none if it changed nothing) and the aggregate's
    /// version after it, durable. (For a retried `commandId`: the first reply, again.)
    Done(Done),
    /// A command that was refused, or could not be read.
    Refused(Failure),
    /// A query's data.
    Data(Box<RawValue>),
    /// A query that could not be read.
    Invalid(Failure),
    /// The store failed: nothing of the request was applied (the protocol's error 13).
    Crashed(String),
    /// The place of a [`Request::Pass`].
    Passed,
}

/// A command that succeeded, as its reply tells it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Done {
    pub events: Vec<Appended>,
    /// The aggregate's version after the command.
    pub version: Version,
    /// The first reply of a retried `commandId`, given again: its events were appended by the
    /// first command, not this one (so front ends do not count them again). Never stored.
    #[serde(skip)]
    pub repeated: bool,
}

/// One event a command appended, as its reply names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Appended {
    #[serde(rename = "eventType")]
    pub event_type: String,
    #[serde(rename = "aggregateId")]
    pub aggregate_id: String,
}

impl From<Executed> for Done {
    fn from(e: Executed) -> Self {
        Done {
            events: e
                .events
                .into_iter()
                .map(|e| Appended {
                    event_type: e.event_type,
                    aggregate_id: e.stream.id,
                })
                .collect(),
            version: e.version,
            repeated: false,
        }
    }
}

impl Reply {
    /// About how many bytes this reply takes when written.
    fn size(&self) -> usize {
        match self {
            Reply::Done(e) => 64 + 48 * e.events.len(),
            Reply::Data(d) => 48 + d.get().len(),
            _ => 96,
        }
    }
}

pub struct Node<S: EventStore> {
    /// Read through the registry's view ([`Registry::view`]): personal data sealed on the way in
    /// and opened on the way out, and every event in its type's current schema.
    store: Upcasted<Sealed<S>>,
    registry: Arc<Registry>,
    runners: Runners,
    projections: Vec<Box<dyn Projection>>,
}

impl<S: EventStore> Node<S> {
    /// A node serving `registry`'s aggregates over `store`, its projections caught up with the
    /// log.
    pub fn open(store: S, registry: Arc<Registry>, config: &Config) -> Result<Self, StoreError> {
        let mut store = registry.view(store);
        let wrapped = crate::store::master::open(&mut store, registry.master_key())?;
        if wrapped > 0 {
            tracing::info!(
                wrapped,
                "the keys in clear are now wrapped by the master key"
            );
        }
        let projections = registry.projections();
        let applied = projection::catch_up(&mut store, &projections)?;
        if applied > 0 {
            tracing::info!(applied, "projections caught up with the log");
        }
        if let Some(keep) = config.command_id_retention {
            let forgotten = command::forget_ids_older_than(&mut store, keep)?;
            if forgotten > 0 {
                tracing::info!(forgotten, "command ids older than the retention forgotten");
            }
        }
        Ok(Self {
            store,
            runners: registry.runners(config.cache_size, config.snapshot_every),
            registry,
            projections,
        })
    }

    /// The store, its events as stored.
    pub fn store(&self) -> &S {
        self.store.inner().inner()
    }

    /// The store, for changes made around the node (tests, maintenance). The node forgets its
    /// cached aggregates, since the store may change under them.
    pub fn store_mut(&mut self) -> &mut S {
        self.runners.forget();
        self.store.inner_mut().inner_mut()
    }

    /// Handles a batch of requests in order, handing each reply to `deliver` (in request order)
    /// once it is final: after its transaction committed, for a batch with commands.
    pub fn handle(&mut self, mut requests: Vec<Request>, deliver: &mut dyn FnMut(Reply)) {
        let mut start = 0;
        while start < requests.len() {
            let rest = &mut requests[start..];
            if !rest.iter().any(|r| matches!(r, Request::Command(_))) {
                // Nothing to write: no transaction, queries read the store directly. Several
                // of them read one state of it (on a store others write to, a read-only
                // snapshot: two round trips, not spent on a lone query).
                let queries = rest
                    .iter()
                    .filter(|r| matches!(r, Request::Query(_)))
                    .count();
                let reads = queries > 1 && self.store().shared();
                if reads {
                    if let Err(e) = self.store().begin_reads() {
                        tracing::warn!("could not begin a read-only snapshot: {e}");
                    }
                }
                for r in rest.iter() {
                    deliver(answer(&self.registry, &self.store, r));
                }
                if reads {
                    if let Err(e) = self.store().end_reads() {
                        tracing::warn!("could not end a read-only snapshot: {e}");
                    }
                }
                return;
            }
            let mut replies = Vec::with_capacity(rest.len().min(1024));
            match self.run_batch(rest, &mut replies) {
                Ok(()) => {
                    start += replies.len();
                    replies.into_iter().for_each(&mut *deliver);
                }
                Err(e) => {
                    // Nothing of this transaction was stored, its replies are taken back, and
                    // the caches may hold states that never were.
                    self.runners.forget();
                    tracing::error!("a batch of {} request(s) failed: {e}", rest.len());
                    let text = format!("{e}; the command was not applied");
                    for r in rest.iter() {
                        deliver(match r {
                            Request::Command(_) => Reply::Crashed(text.clone()),
                            other => answer(&self.registry, &self.store, other),
                        });
                    }
                    return;
                }
            }
        }
    }

    /// Runs requests inside one transaction, pushing their replies, until they are all done or
    /// the replies pass [`MAX_BUFFERED_REPLIES`] bytes; commits.
    fn run_batch(
        &mut self,
        requests: &mut [Request],
        replies: &mut Vec<Reply>,
    ) -> Result<(), StoreError> {
        let Node {
            store,
            registry,
            runners,
            projections,
        } = self;
        let mut tx = store.begin()?;
        let mut last = None;
        let mut bytes = 0;
        for r in requests.iter_mut() {
            if bytes >= MAX_BUFFERED_REPLIES {
                break;
            }
            let reply = match r {
                Request::Command(c) => {
                    // Each request of a batch is run once: `handle` moves past what this
                    // transaction handled, or ends the batch when it fails.
                    let c = std::mem::replace(c, Err(Failure::already_run()));
                    let (reply, position) = command::execute(runners, projections, &mut tx, c)?;
                    last = position.or(last);
                    reply
                }
                other => answer(registry, &tx, other),
            };
            bytes += reply.size();
            replies.push(reply);
        }
        if let Some(position) = last {
            projection::set_checkpoints(projections, &mut tx, position)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Answers anything but a command, reading from `store` (a store, or a transaction).
fn answer(registry: &Registry, store: &dyn StoreRead, request: &Request) -> Reply {
    match request {
        Request::Query(q) => query::run(registry, store, q),
        Request::Pass => Reply::Passed,
        Request::Command(_) => unreachable!("commands are run in a transaction"),
    }
}
