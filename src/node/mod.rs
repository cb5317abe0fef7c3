//! The node: turns requests into work on the engine and writes the replies.
//!
//! One handler per message kind: `init`, `command`, `query`. [`Node::handle`] is the
//! dispatcher. It takes a batch of messages that were already waiting and, if the batch holds a
//! command, runs the whole batch in **one store transaction** (group commit: one fsync per
//! batch). Messages are handled in order, so a query sees every command before it (it reads
//! through the transaction), and the replies are written in request order, all of them only
//! after the commit: nothing is acknowledged, and no state is shown, before it is durable. (A
//! batch whose buffered replies pass [`MAX_BUFFERED_REPLIES`] is cut there into several
//! transactions, so that memory stays bounded.)
//!
//! If the commit fails, nothing of the batch was stored: every command of the batch is answered
//! with error 13, and the other messages are answered again outside the transaction.

mod command;
mod init;
mod query;

use std::io::{self, Write};

use serde_json::Value;

use crate::domain::user::User;
use crate::engine::Repository;
use crate::projection::{self, Projection};
use crate::protocol::{self, reply, Body, ErrorCode, Incoming, Request};
use crate::server::Service;
use crate::store::{EventStore, StoreError, StoreRead, StoreWrite};

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

/// Most bytes of replies held in memory while their transaction is open (a batch of reads of
/// large users would otherwise hold all of its replies at once).
pub const MAX_BUFFERED_REPLIES: usize = 4 << 20;

/// Outside a transaction, replies gathered past this many bytes are written out.
pub const FLUSH_BYTES: usize = 1 << 16;

pub struct Node<S: EventStore> {
    store: S,
    users: Repository<User>,
    projections: Vec<Box<dyn Projection>>,
    /// The `src` of every reply.
    id: String,
}

/// A request made ready for the node: a command's or a query's fields are already read and
/// checked (by [`Node::prepare`], which needs no state, so the server runs it on its reader
/// thread).
pub struct Message {
    to: To,
    work: Work,
}

/// Whom a reply goes to: the request's `src`, and its `msg_id` (no reply without one).
struct To {
    src: String,
    msg_id: Option<Value>,
}

enum Work {
    /// A command, read and checked; taken when [`Node::run_batch`] runs it.
    Command(Option<Result<command::Parsed, command::Failure>>),
    /// Anything else: answered without changing the store.
    Read(Read),
}

enum Read {
    Init {
        node_id: String,
    },
    Query(Result<query::Query, query::Bad>),
    /// Identified but unusable: answered with a protocol error.
    Invalid {
        code: ErrorCode,
        text: String,
    },
}

impl Message {
    fn is_command(&self) -> bool {
        matches!(self.work, Work::Command(_))
    }
}

impl<S: EventStore + Send + 'static> Service for Node<S> {
    type Message = Message;

    fn prepare(request: Request) -> Message {
        Node::<S>::prepare(request)
    }

    fn handle(&mut self, batch: Vec<Message>, out: &mut impl Write) -> io::Result<()> {
        Node::handle(self, batch, out)
    }
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

    /// The store, for changes made around the node (tests, maintenance). The node forgets its
    /// cached aggregates, since the store may change under them.
    pub fn store_mut(&mut self) -> &mut S {
        self.users.forget();
        &mut self.store
    }

    /// Handles a batch of raw lines, writing every reply to `out` (not flushed). Lines that
    /// cannot be answered are reported on stderr.
    pub fn handle_lines<L: AsRef<[u8]>>(
        &mut self,
        lines: &[L],
        out: &mut impl Write,
    ) -> io::Result<()> {
        let mut requests = Vec::with_capacity(lines.len());
        for line in lines {
            match protocol::parse_line(line.as_ref()) {
                Incoming::Request(r) => requests.push(Self::prepare(r)),
                Incoming::Unanswerable(reason) => {
                    tracing::warn!("skipped a line that cannot be answered: {reason}")
                }
            }
        }
        self.handle(requests, out)
    }

    /// Reads a command's or a query's fields (the part of the work that needs no state).
    pub fn prepare(request: Request) -> Message {
        let work = match request.body {
            Body::Command(c) => Work::Command(Some(command::parse(c))),
            Body::Query(q) => Work::Read(Read::Query(query::parse(q))),
            Body::Init { node_id } => Work::Read(Read::Init { node_id }),
            Body::Invalid { code, text } => Work::Read(Read::Invalid { code, text }),
        };
        let to = To {
            src: request.src,
            msg_id: request.msg_id,
        };
        Message { to, work }
    }

    /// Handles a batch of requests in order, writing every reply to `out` (not flushed).
    ///
    /// Replies are put together in one buffer: those of a transaction stay there until it
    /// commits (past [`MAX_BUFFERED_REPLIES`] bytes the batch is cut there, committed and
    /// answered, and the rest runs in a new one); outside transactions the buffer goes to `out`
    /// whenever it passes [`FLUSH_BYTES`].
    pub fn handle(&mut self, mut requests: Vec<Message>, out: &mut impl Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(requests.len().min(1024) * 128);
        let mut start = 0;
        while start < requests.len() {
            let rest = &mut requests[start..];
            if !rest.iter().any(Message::is_command) {
                // Nothing to write: no transaction, queries read the store directly.
                for m in rest.iter() {
                    if let Work::Read(read) = &m.work {
                        answer(&self.store, &mut self.id, &m.to, read, &mut buf);
                        protocol::flush_lines(&mut buf, FLUSH_BYTES, out)?;
                    }
                }
                break;
            }
            // An `init` in the batch renames the node as it goes; if the batch fails, its
            // messages are answered again below, renaming again in order.
            let id_before = self.id.clone();
            let mark = buf.len();
            match self.run_batch(rest, &mut buf) {
                Ok(handled) => {
                    protocol::flush_lines(&mut buf, FLUSH_BYTES, out)?;
                    start += handled;
                }
                Err(e) => {
                    // Nothing of this transaction was stored, its replies are taken back, and
                    // the cache may hold states that never were.
                    buf.truncate(mark);
                    self.users.forget();
                    self.id = id_before;
                    tracing::error!("a batch of {} message(s) failed: {e}", rest.len());
                    let text = format!("{e}; the command was not applied");
                    for m in rest.iter() {
                        match &m.work {
                            Work::Command(_) => crash_reply(&mut buf, &self.id, &m.to, &text),
                            Work::Read(read) => {
                                answer(&self.store, &mut self.id, &m.to, read, &mut buf)
                            }
                        }
                        protocol::flush_lines(&mut buf, FLUSH_BYTES, out)?;
                    }
                    break;
                }
            }
        }
        protocol::flush_lines(&mut buf, 0, out)
    }

    /// Runs requests inside one transaction, appending their replies to `replies`, until they
    /// are all done or this transaction's replies pass [`MAX_BUFFERED_REPLIES`] bytes; commits.
    /// Returns how many it handled.
    fn run_batch(
        &mut self,
        requests: &mut [Message],
        replies: &mut Vec<u8>,
    ) -> Result<usize, StoreError> {
        let start = replies.len();
        let Node {
            store,
            users,
            projections,
            id,
        } = self;
        let mut tx = store.begin()?;
        let mut last = None;
        let mut handled = 0;
        for m in requests.iter_mut() {
            if replies.len() - start >= MAX_BUFFERED_REPLIES {
                break;
            }
            handled += 1;
            match &mut m.work {
                Work::Command(c) => {
                    // Each message of a batch is run once: `handle` moves past what this
                    // transaction handled, or ends the batch when it fails.
                    let c = c.take().expect("a command is run once");
                    let outcome = command::execute(users, projections, &mut tx, c)?;
                    if let Ok(events) = &outcome {
                        last = events.last().map(|e| e.position).or(last);
                    }
                    command::write_outcome(replies, id, &m.to, &outcome)
                }
                Work::Read(read) => answer(&tx, id, &m.to, read, replies),
            }
        }
        if let Some(position) = last {
            projection::set_checkpoints(projections, &mut tx, position)?;
        }
        tx.commit()?;
        Ok(handled)
    }
}

/// Answers anything but a command, reading from `store` (a store, or a transaction).
fn answer(store: &impl StoreRead, id: &mut String, to: &To, read: &Read, out: &mut Vec<u8>) {
    match read {
        Read::Init { node_id } => init::run(id, to, node_id, out),
        Read::Query(q) => query::run(store, id, to, q, out),
        Read::Invalid { code, text } => match &to.msg_id {
            Some(msg_id) => reply(out, id, to, &reply::Error::new(msg_id, *code, text)),
            None => tracing::warn!("unanswerable request (no msg_id): {text}"),
        },
    }
}

/// Appends one reply from node `id` to the request's sender.
fn reply<B: reply::WriteJson>(out: &mut Vec<u8>, id: &str, to: &To, body: &B) {
    protocol::write_message(out, id, &to.src, body)
}

/// Answers with protocol error 13 (the request was not carried out).
fn crash_reply(out: &mut Vec<u8>, id: &str, to: &To, text: &str) {
    if let Some(msg_id) = &to.msg_id {
        reply(
            out,
            id,
            to,
            &reply::Error::new(msg_id, ErrorCode::Crash, text),
        );
    }
}
