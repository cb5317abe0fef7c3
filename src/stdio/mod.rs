//! The stdin/stdout front end: JSON lines in, JSON lines out, one client of the node's writer.
//!
//! * A **reader thread** reads stdin, cuts it into lines ([`LineReader`]), parses each line's
//!   envelope ([`protocol::parse_line`]), reads the body into the worker's request
//!   ([`Service`]: for the node, a command or query read through the registry) and submits the
//!   requests in chunks to the writer ([`writer::Handle::submit`]). The writer's queue is
//!   bounded: when the node falls behind, the reader stops reading.
//! * The **writer thread** (`node::writer`) handles whatever is waiting as one batch (for the
//!   node: one commit) and gives each chunk's replies to its [`Sink`], which writes them as
//!   envelopes to stdout and flushes. Replies are written with blocking writes: when nobody
//!   reads stdout, the writer stops, the queue fills, and the reader stops reading.
//! * **A lone request is handled where it was read**: when the reader has a few messages, no
//!   more input is waiting on stdin, and the writer is idle with nothing queued, the reader hands
//!   them to [`writer::Handle::try_here`], which runs them on the reader thread (see
//!   `node::writer`).
//!
//! Lines that cannot be answered (not JSON, no `src`) are reported on stderr by the reader and
//! go no further. `init` and requests the envelope already refuses (errors 10 and 12) are
//! answered by this front end itself, in their place among the node's replies
//! ([`node::Request::Pass`](crate::node::Request::Pass)); an `init` renames the `src` of every
//! later reply.
//!
//! Until the node's id is known (no `--node-id`), the node cannot be opened (the store file is
//! named after it): requests are held back, bounded by [`MAX_HELD_BYTES`], until one names the
//! node (an `init`'s `node_id`, else a whole line's `dest`).
//!
//! SIGTERM and SIGINT end the run after the batch in hand has been handled and answered; so does
//! the end of input (after everything read was answered).

pub mod lines;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::node::writer::{self, Handle, Sink, Submission, Worker, Writer};
use crate::node::{self, Config, Node, Reply, Request as NodeRequest};
use crate::plugin::Registry;
use crate::protocol::{self, reply, Body, CommandJson, ErrorCode, Incoming, QueryJson, Request};
use crate::store::{EventStore, StoreError};
use lines::{Frame, LineReader};

/// Outside a batch, replies gathered past this many bytes are written out.
pub const FLUSH_BYTES: usize = 1 << 16;

/// What the stdio front end needs of the work behind it: how a body becomes the worker's
/// request (on the reader thread), and how the worker's reply is written as a reply body.
pub trait Service: Send + Sync + 'static {
    type Worker: Worker;

    /// The request for a `command` body (its `command` object's keys; `None`: not an object).
    fn command(&self, command: Option<CommandJson>) -> <Self::Worker as Worker>::Request;
    /// The request for a `query` body (its `query` object's keys; `None`: not an object).
    fn query(&self, query: Option<QueryJson>) -> <Self::Worker as Worker>::Request;
    /// The request that holds the place of a message this front end answers itself.
    fn pass(&self) -> <Self::Worker as Worker>::Request;
    /// Writes the body of a reply to a command or query, as compact JSON.
    fn write(&self, out: &mut Vec<u8>, in_reply_to: &Value, reply: <Self::Worker as Worker>::Reply);
    /// Says on stderr why a request that has no `msg_id` (so no reply) failed, if it did.
    fn log_unanswered(&self, reply: &<Self::Worker as Worker>::Reply) {
        let _ = reply;
    }
}

/// The node's replies as protocol bodies (compact JSON, the contract's key order).
pub fn write_reply(out: &mut Vec<u8>, in_reply_to: &Value, reply: Reply) {
    use reply::WriteJson;
    match reply {
        Reply::Done(done) => {
            let refs = done
                .events
                .iter()
                .map(|e| reply::EventRef {
                    event_type: &e.event_type,
                    aggregate_id: &e.aggregate_id,
                })
                .collect();
            reply::CommandOk::new(in_reply_to, refs).write_json(out)
        }
        Reply::Refused(f) => {
            reply::CommandFailed::new(in_reply_to, f.code, &f.error, f.current_version)
                .write_json(out)
        }
        Reply::Data(data) => reply::QueryOk::new(in_reply_to, &data).write_json(out),
        Reply::Invalid(f) => reply::QueryFailed::new(in_reply_to, f.code, &f.error).write_json(out),
        Reply::Crashed(text) => {
            reply::Error::new(in_reply_to, ErrorCode::Crash, &text).write_json(out)
        }
        Reply::Passed => unreachable!("a passed request is answered by its front end"),
    }
}

/// The node as a stdio [`Service`], over a store of type `S`.
pub struct Nodes<S> {
    registry: Arc<Registry>,
    _store: std::marker::PhantomData<fn() -> S>,
}

impl<S> Nodes<S> {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            _store: std::marker::PhantomData,
        }
    }
}

impl<S: EventStore + Send + 'static> Service for Nodes<S> {
    type Worker = Node<S>;

    fn command(&self, command: Option<CommandJson>) -> NodeRequest {
        NodeRequest::Command(match command {
            Some(c) => node::command::prepare_json(&self.registry, c),
            None => Err(node::command::not_an_object()),
        })
    }

    fn query(&self, query: Option<QueryJson>) -> NodeRequest {
        NodeRequest::Query(match query {
            Some(q) => node::query::prepare_json(&self.registry, q),
            None => Err(node::query::not_an_object()),
        })
    }

    fn pass(&self) -> NodeRequest {
        NodeRequest::Pass
    }

    fn write(&self, out: &mut Vec<u8>, in_reply_to: &Value, reply: Reply) {
        write_reply(out, in_reply_to, reply)
    }

    fn log_unanswered(&self, reply: &Reply) {
        if let Reply::Refused(f) = reply {
            tracing::warn!("command without msg_id failed: {}", f.error);
        }
    }
}

/// Whom a reply goes to, and what this front end answers itself.
struct To {
    src: String,
    msg_id: Option<Value>,
    own: Option<Own>,
}

/// A message answered by the front end.
enum Own {
    /// `init`: renames the node, answered `init_ok`.
    Init(String),
    /// A protocol error.
    Error(ErrorCode, String),
}

/// Reads a parsed request into the worker's request and what its reply needs.
fn prepare<V: Service>(service: &V, request: Request) -> (To, <V::Worker as Worker>::Request) {
    let (own, work) = match request.body {
        Body::Command(c) => (None, service.command(c)),
        Body::Query(q) => (None, service.query(q)),
        Body::Init { node_id } => (Some(Own::Init(node_id)), service.pass()),
        Body::Invalid { code, text } => (Some(Own::Error(code, text)), service.pass()),
    };
    let to = To {
        src: request.src,
        msg_id: request.msg_id,
        own,
    };
    (to, work)
}

/// Writes replies as envelopes: the node's id (renamed by `init`) as `src`.
struct Envelopes {
    id: String,
}

impl Envelopes {
    fn write<V: Service>(
        &mut self,
        service: &V,
        out: &mut Vec<u8>,
        to: &To,
        reply: <V::Worker as Worker>::Reply,
    ) {
        if let Some(Own::Init(node_id)) = &to.own {
            node_id.clone_into(&mut self.id);
        }
        let Some(msg_id) = &to.msg_id else {
            match &to.own {
                Some(Own::Error(_, text)) => {
                    tracing::warn!("unanswerable request (no msg_id): {text}")
                }
                Some(Own::Init(_)) => {}
                None => service.log_unanswered(&reply),
            }
            return;
        };
        let (id, dest) = (self.id.as_str(), to.src.as_str());
        match &to.own {
            Some(Own::Init(_)) => {
                protocol::write_message(out, id, dest, &reply::InitOk::new(msg_id))
            }
            Some(Own::Error(code, text)) => {
                protocol::write_message(out, id, dest, &reply::Error::new(msg_id, *code, text))
            }
            None => {
                protocol::write_envelope(out, id, dest, |out| service.write(out, msg_id, reply))
            }
        }
    }
}

/// Standard output, shared by every chunk's sink (they are called one at a time, in order).
struct Out {
    envelopes: Envelopes,
    buf: Vec<u8>,
    file: BufWriter<File>,
    /// The first write that failed: the run ends with it.
    failed: Option<io::Error>,
}

impl Out {
    fn flush(&mut self, over: usize) {
        if self.failed.is_some() {
            self.buf.clear();
            return;
        }
        let r = protocol::flush_lines(&mut self.buf, over, &mut self.file).and_then(|()| {
            if over == 0 {
                self.file.flush()
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            self.failed = Some(e);
        }
    }
}

/// One chunk's replies, written to stdout.
struct ChunkSink<V: Service> {
    service: Arc<V>,
    out: Arc<Mutex<Out>>,
    /// Set once a write to stdout failed (read by the reader thread without taking `out`).
    failed: Arc<AtomicBool>,
    /// Where each of the chunk's replies goes, in order.
    to: std::vec::IntoIter<To>,
}

impl<V: Service> Sink<<V::Worker as Worker>::Reply> for ChunkSink<V> {
    fn reply(&mut self, reply: <V::Worker as Worker>::Reply) {
        let to = self.to.next().expect("one reply per request");
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let out = &mut *out;
        out.envelopes
            .write(&*self.service, &mut out.buf, &to, reply);
        out.flush(FLUSH_BYTES);
    }

    fn end(self: Box<Self>, last: bool) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush(if last { 0 } else { FLUSH_BYTES });
        if out.failed.is_some() {
            self.failed.store(true, Ordering::SeqCst);
        }
    }
}

/// How the run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// End of input: everything read was answered.
    Input,
    /// SIGTERM or SIGINT: the batch in hand was answered.
    Signal,
    /// Input ended (or a signal came) before any message named the node: nothing was opened.
    Unnamed,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The front end's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node's id; when `None`, the first message that names the node decides it.
    pub node_id: Option<String>,
    /// Most requests handled as one batch.
    pub max_batch: usize,
    /// Longest accepted input line, in bytes.
    pub max_line_bytes: usize,
}

/// What the reader thread tells the main thread.
enum Event<W: Worker> {
    /// The node was opened.
    Opened(Writer<W>, Handle<W>),
    /// stdin ended (or failed): every request read was submitted.
    End,
    /// A signal asked the node to stop.
    Stop,
    Failed(ServeError),
}

/// Serves `service` on stdin/stdout until the end of input or a signal; `open` starts the
/// worker's writer once the node's id is known.
pub fn serve<V: Service>(
    options: &Options,
    service: V,
    open: impl FnOnce(&str) -> Result<V::Worker, ServeError> + Send + 'static,
) -> Result<Ended, ServeError> {
    let (events, rx) = channel::<Event<V::Worker>>();
    watch_signals(events.clone())?;
    let reader = Reader {
        service: Arc::new(service),
        max_line: options.max_line_bytes,
        max_batch: options.max_batch,
        node_id: options.node_id.clone(),
        held: 0,
    };
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || reader.run(open, events))?;

    let mut writer = None;
    let ended = loop {
        match rx.recv() {
            Ok(Event::Opened(w, h)) => writer = Some((w, h)),
            Ok(Event::End) | Err(_) => break Ended::Input,
            Ok(Event::Stop) => break Ended::Signal,
            Ok(Event::Failed(e)) => {
                if let Some((_, h)) = &writer {
                    h.stop();
                }
                return Err(e);
            }
        }
    };
    let Some((writer, handle)) = writer else {
        return Ok(Ended::Unnamed);
    };
    if ended == Ended::Signal {
        tracing::info!("stopping after the batch in hand");
        handle.stop();
    }
    drop(handle);
    // Waits for the batch in hand (the reader thread's too), then closes the node.
    writer.join();
    Ok(ended)
}

fn watch_signals<W: Worker>(events: Sender<Event<W>>) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "signal received");
                let _ = events.send(Event::Stop);
            }
        })?;
    Ok(())
}

/// Most messages submitted in one chunk...
const CHUNK: usize = 256;
/// ... and about the most bytes of input (a chunk closes once it holds this much).
const CHUNK_BYTES: usize = 1 << 20;

/// Chunks waiting for the writer: enough to keep both threads busy, and a bound on memory
/// when the writer falls behind.
const QUEUE: usize = 4;

/// Most messages the reader thread handles itself (see the module's docs): a few clients each
/// waiting for a reply, not a stream, which is better served by both threads.
const INLINE_MAX: usize = 16;

/// Most bytes of input held back, as requests, while no message has named the node yet; past
/// that, such requests are reported on stderr and dropped (they cannot be answered without the
/// node's id).
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// The reader thread's state.
struct Reader<V: Service> {
    service: Arc<V>,
    max_line: usize,
    max_batch: usize,
    /// The node's id, once known (given, or named by a message already read).
    node_id: Option<String>,
    /// Bytes of input held back while the node is not named.
    held: usize,
}

type Chunk<V> = Vec<(To, <<V as Service>::Worker as Worker>::Request)>;

/// The node, once open: where chunks go.
struct Open<V: Service> {
    handle: Handle<V::Worker>,
    out: Arc<Mutex<Out>>,
    failed: Arc<AtomicBool>,
}

impl<V: Service> Reader<V> {
    /// Reads, parses and prepares stdin, and submits it in chunks: a chunk goes out as soon as
    /// no more input is buffered, so a lone line is never held back waiting for more. A few
    /// lone messages may be handled here instead ([`writer::Handle::try_here`]).
    fn run(
        mut self,
        open: impl FnOnce(&str) -> Result<V::Worker, ServeError>,
        events: Sender<Event<V::Worker>>,
    ) {
        let stdin = io::stdin();
        let mut reader = LineReader::new(stdin.lock(), self.max_line);
        let mut open = Some(open);
        let mut node: Option<Open<V>> = None;
        let mut held: Vec<Chunk<V>> = Vec::new();
        let mut chunk: Chunk<V> = Vec::new();
        let mut bytes = 0;
        loop {
            let end = match reader.next_frame() {
                Ok(Some(frame)) => {
                    let len = match &frame {
                        Frame::Line(l) | Frame::Cut(l) | Frame::TooLong { head: l, .. } => l.len(),
                    };
                    bytes += len;
                    if let Some(request) = self.take(frame, len) {
                        chunk.push(prepare(&*self.service, request));
                    }
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::error!("reading stdin failed: {e}");
                    true
                }
            };
            if node.is_none() {
                if let Some(id) = self.node_id.clone() {
                    // The node is named: open it, then send what was held back.
                    let open = open.take().expect("opened once");
                    match self.open(open(&id), id) {
                        Ok((o, writer)) => {
                            let _ = events.send(Event::Opened(writer, o.handle.clone()));
                            node = Some(o);
                        }
                        Err(e) => {
                            let _ = events.send(Event::Failed(e));
                            return;
                        }
                    }
                    let o = node.as_ref().expect("just opened");
                    for c in held.drain(..) {
                        if self.submit(o, c).is_err() {
                            return;
                        }
                    }
                }
            }
            let full = chunk.len() >= CHUNK || bytes >= CHUNK_BYTES;
            if (end || full || !reader.has_buffered()) && !chunk.is_empty() {
                bytes = 0;
                let ready = std::mem::take(&mut chunk);
                match &node {
                    None => held.push(ready),
                    Some(o) => {
                        let r = if !end && ready.len() <= INLINE_MAX && !stdin_ready() {
                            self.here_or_submit(o, ready)
                        } else {
                            self.submit(o, ready)
                        };
                        if r.is_err() {
                            return;
                        }
                        // The flag, not the output's lock: the writer holds that lock while
                        // it writes a chunk's replies, and the reader must not wait for it.
                        if o.failed.load(Ordering::SeqCst) {
                            let e = o
                                .out
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .failed
                                .take();
                            let e = e.unwrap_or_else(|| io::Error::other("writing stdout failed"));
                            let _ = events.send(Event::Failed(e.into()));
                            return;
                        }
                    }
                }
            }
            if end {
                if node.is_none() && !held.is_empty() {
                    let n: usize = held.iter().map(Vec::len).sum();
                    tracing::warn!("no message named the node: {n} request(s) not answered");
                }
                let _ = events.send(Event::End);
                return;
            }
        }
    }

    /// Starts the writer over the worker `open` gave.
    fn open(
        &self,
        worker: Result<V::Worker, ServeError>,
        id: String,
    ) -> Result<(Open<V>, Writer<V::Worker>), ServeError> {
        let (writer, handle) = Writer::start(worker?, self.max_batch, QUEUE)?;
        // Replies go straight to the pipe (a second handle on fd 1), not through std's
        // line-buffered `Stdout`: each chunk's replies are written by one `BufWriter` and
        // flushed whole.
        let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        let out = Out {
            envelopes: Envelopes { id },
            buf: Vec::with_capacity(1 << 16),
            file: BufWriter::with_capacity(1 << 16, stdout),
            failed: None,
        };
        let open = Open {
            handle,
            out: Arc::new(Mutex::new(out)),
            failed: Arc::new(AtomicBool::new(false)),
        };
        Ok((open, writer))
    }

    fn submission(&self, o: &Open<V>, chunk: Chunk<V>) -> Submission<V::Worker> {
        let (to, requests): (Vec<To>, Vec<_>) = chunk.into_iter().unzip();
        Submission {
            requests,
            sink: Box::new(ChunkSink {
                service: self.service.clone(),
                out: o.out.clone(),
                failed: o.failed.clone(),
                to: to.into_iter(),
            }),
        }
    }

    fn submit(&self, o: &Open<V>, chunk: Chunk<V>) -> Result<(), writer::Stopped> {
        o.handle.submit(self.submission(o, chunk))
    }

    /// Handles `chunk` on this thread if the writer is idle with nothing queued; else submits it.
    fn here_or_submit(&self, o: &Open<V>, chunk: Chunk<V>) -> Result<(), writer::Stopped> {
        match o.handle.try_here(self.submission(o, chunk)) {
            Ok(()) => Ok(()),
            Err(back) => o.handle.submit(back),
        }
    }

    /// Parses a frame; the request, if it is one to pass on. Before the node is named, this
    /// request may name it (then `node_id` is set).
    fn take(&mut self, frame: Frame, len: usize) -> Option<Request> {
        // Only a whole line can name the node: the head of an over-long one may not be its
        // envelope.
        let whole = !matches!(frame, Frame::TooLong { .. });
        let request = match to_incoming(frame, self.max_line) {
            Incoming::Request(r) => r,
            Incoming::Unanswerable(why) => {
                tracing::warn!("skipped a line that cannot be answered: {why}");
                return None;
            }
        };
        if self.node_id.is_some() {
            return Some(request);
        }
        let names = match &request.body {
            _ if !whole => None,
            Body::Init { node_id } => Some(node_id.clone()),
            _ => request.dest.clone(),
        };
        match names {
            Some(id) => {
                self.node_id = Some(id);
                Some(request)
            }
            None if self.held + len <= MAX_HELD_BYTES => {
                self.held += len;
                Some(request)
            }
            None => {
                tracing::warn!(
                    src = %request.src,
                    "dropped a request: over {MAX_HELD_BYTES} bytes of input came before any \
                     message named the node (give --node-id, or send init first)"
                );
                None
            }
        }
    }
}

/// Whether more input is waiting on stdin (or it has ended): then the messages in hand are part
/// of a stream, not a lone request.
fn stdin_ready() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n != 0 // on an error, say "ready": the chunk is then queued as before
}

fn to_incoming(frame: Frame, max_line: usize) -> Incoming {
    match frame {
        Frame::Line(line) => protocol::parse_line(&line),
        Frame::TooLong { head, len } => lines::too_long(&head, len, max_line),
        Frame::Cut(line) => match protocol::parse_line(&line) {
            Incoming::Unanswerable(why) => {
                Incoming::Unanswerable(format!("input ended in the middle of a line ({why})"))
            }
            whole => whole,
        },
    }
}

/// A node served line by line in this process, on the caller's thread: what the stdio front
/// end does, without its threads. For tests and tools that feed lines by hand.
pub struct Lines<S: EventStore + Send + 'static> {
    node: Node<S>,
    service: Nodes<S>,
    envelopes: Envelopes,
}

impl<S: EventStore + Send + 'static> Lines<S> {
    /// A node with id `id` over `store`, serving `registry`.
    pub fn with_registry(
        store: S,
        registry: Arc<Registry>,
        id: impl Into<String>,
        config: &Config,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            node: Node::open(store, registry.clone(), config)?,
            service: Nodes::new(registry),
            envelopes: Envelopes { id: id.into() },
        })
    }

    /// A node with id `id` over `store`, serving what the `cqrs` binary serves.
    pub fn open(store: S, id: impl Into<String>, config: &Config) -> Result<Self, StoreError> {
        Self::with_registry(store, Arc::new(crate::registry()), id, config)
    }

    pub fn store(&self) -> &S {
        self.node.store()
    }

    /// See [`Node::store_mut`].
    pub fn store_mut(&mut self) -> &mut S {
        self.node.store_mut()
    }

    /// Handles raw lines as one batch, writing every reply to `out` (not flushed). Lines that
    /// cannot be answered are reported on stderr.
    pub fn handle_lines<L: AsRef<[u8]>>(
        &mut self,
        lines: &[L],
        out: &mut impl Write,
    ) -> io::Result<()> {
        let mut to = Vec::with_capacity(lines.len());
        let mut requests = Vec::with_capacity(lines.len());
        for line in lines {
            match protocol::parse_line(line.as_ref()) {
                Incoming::Request(r) => {
                    let (t, r) = prepare(&self.service, r);
                    to.push(t);
                    requests.push(r);
                }
                Incoming::Unanswerable(reason) => {
                    tracing::warn!("skipped a line that cannot be answered: {reason}")
                }
            }
        }
        let mut buf = Vec::new();
        let mut to = to.into_iter();
        let (service, envelopes) = (&self.service, &mut self.envelopes);
        self.node.handle(requests, &mut |reply| {
            let t = to.next().expect("one reply per request");
            envelopes.write(service, &mut buf, &t, reply);
        });
        out.write_all(&buf)
    }
}
