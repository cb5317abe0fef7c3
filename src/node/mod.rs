//! The node: turns requests into work on the engine and writes the replies.
//!
//! One handler per message kind: [`init`], [`command`], [`query`]. [`Node::handle`] is the
//! dispatcher. It takes a batch of lines that were already waiting, and runs each run of
//! consecutive commands in one store transaction (group commit): one fsync for the run, and the
//! run's replies are written only after that commit. Any other message ends a run, so replies
//! keep the order of the requests and a query always sees every command before it.

mod command;
mod init;
mod query;

use std::io::{self, Write};

use serde::Serialize;

use crate::domain::user::User;
use crate::engine::Repository;
use crate::projection::{self, Projection};
use crate::protocol::{self, reply, Body, ErrorCode, Incoming, Request};
use crate::store::{EventStore, StoreError};

/// Tuning knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Aggregates kept in memory between commands.
    pub cache_size: usize,
    /// A snapshot every this many events of a stream (0: never).
    pub snapshot_every: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_size: 100_000,
            snapshot_every: 100,
        }
    }
}

pub struct Node<S: EventStore> {
    store: S,
    users: Repository<User>,
    projections: Vec<Box<dyn Projection>>,
    /// The `src` of every reply.
    id: String,
}

impl<S: EventStore> Node<S> {
    /// A node over `store`, its projections caught up with the log.
    pub fn open(mut store: S, id: impl Into<String>, config: &Config) -> Result<Self, StoreError> {
        let projections = projection::all();
        let applied = projection::catch_up(&mut store, &projections)?;
        if applied > 0 {
            tracing::info!(applied, "projections caught up with the log");
        }
        Ok(Self {
            store,
            users: Repository::new(config.cache_size, config.snapshot_every),
            projections,
            id: id.into(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles a batch of raw lines, writing every reply to `out` (not flushed).
    pub fn handle_lines<L: AsRef<[u8]>>(
        &mut self,
        lines: &[L],
        out: &mut impl Write,
    ) -> io::Result<()> {
        let incoming: Vec<Incoming> = lines
            .iter()
            .map(|l| protocol::parse_line(l.as_ref()))
            .collect();
        self.handle(incoming, out)
    }

    /// Handles a batch of parsed lines in order, writing every reply to `out` (not flushed).
    pub fn handle(&mut self, incoming: Vec<Incoming>, out: &mut impl Write) -> io::Result<()> {
        let mut commands: Vec<Request> = Vec::new();
        for item in incoming {
            match item {
                Incoming::Unanswerable(reason) => {
                    tracing::warn!("skipped a line that cannot be answered: {reason}")
                }
                Incoming::Request(r) if matches!(r.body, Body::Command(_)) => commands.push(r),
                Incoming::Request(r) => {
                    if !commands.is_empty() {
                        command::run_batch(self, &mut std::mem::take(&mut commands), out)?;
                    }
                    self.handle_one(r, out)?;
                }
            }
        }
        if !commands.is_empty() {
            command::run_batch(self, &mut commands, out)?;
        }
        Ok(())
    }

    fn handle_one(&mut self, mut request: Request, out: &mut impl Write) -> io::Result<()> {
        match &request.body {
            Body::Init { node_id } => init::run(self, &request, node_id, out),
            Body::Query(q) => query::run(self, &request, q, out),
            Body::Invalid { code, text } => {
                let Some(msg_id) = &request.msg_id else {
                    tracing::warn!("unanswerable request (no msg_id): {text}");
                    return Ok(());
                };
                self.reply(out, &request, &reply::Error::new(msg_id, *code, text))
            }
            Body::Command(_) => command::run_batch(self, std::slice::from_mut(&mut request), out),
        }
    }

    fn reply<B: Serialize>(&self, out: &mut impl Write, to: &Request, body: &B) -> io::Result<()> {
        protocol::write_message(out, &self.id, &to.src, body)
    }

    /// Answers with protocol error 13 (the request was not carried out).
    fn crash_reply(&self, out: &mut impl Write, to: &Request, text: &str) -> io::Result<()> {
        match &to.msg_id {
            Some(id) => self.reply(out, to, &reply::Error::new(id, ErrorCode::Crash, text)),
            None => Ok(()),
        }
    }
}
