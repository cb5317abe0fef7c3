//! Runs a [`Service`] (the node, or the benchmark's echo floor) on standard input and output.
//!
//! Two threads share the work, so that reading and parsing overlap with handling:
//!
//! * the **reader thread** reads stdin, cuts it into lines ([`LineReader`]), parses each line
//!   ([`protocol::parse_line`]), lets the service prepare it ([`Service::prepare`]: anything
//!   that needs no state, such as reading a command's fields) and queues the result in chunks.
//!   The queue is bounded: when the main thread falls behind, the reader stops reading.
//! * the **main thread** takes whatever is already queued, up to `max_batch` messages, hands it
//!   to the service as one batch (for the node: one commit for its commands), writes the replies
//!   and flushes. It never waits for more input while it has something to do, so a lone command
//!   is never held back. Replies are written with blocking writes: when nobody reads stdout, the
//!   main thread stops, the queue fills, and the reader stops reading.
//!
//! **A lone request is handled where it was read.** When the reader has a few messages, no more
//! input is waiting on stdin, and the main thread is idle with nothing queued, the reader
//! handles them itself instead of queueing them: a client that sends one request and waits for
//! its reply then costs no hand-off between threads (waking the main thread took about as long
//! as the rest of the round trip without a commit; see docs/benchmarks.md, *One at a time*).
//! Order is kept: the service and stdout sit behind one lock, the main thread handles a chunk
//! under it and counts it as done before letting go, and the reader handles in place only when
//! every chunk it sent is done. Under a stream of input the reader keeps reading and the main
//! thread keeps handling, as above.
//!
//! Lines that cannot be answered (not JSON, no `src`) are reported on stderr by the reader and
//! go no further.
//!
//! Until the node's id is known (no `--node-id`), the service cannot be opened (the store file
//! is named after it): requests are held back, bounded by [`MAX_HELD_BYTES`], until one names the
//! node (an `init`'s `node_id`, else a whole line's `dest`).
//!
//! SIGTERM and SIGINT end the run after the batch in hand has been handled and answered; so does
//! the end of input. Exit status 0.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::node::{Config, Node};
use crate::protocol::{self, Body, Incoming, Request};
use crate::store::{MemoryStore, SqliteStore, StoreError};
use crate::transport::{self, Frame, LineReader};

/// The work behind the pipeline.
pub trait Service: Send + 'static {
    /// A request made ready on the reader thread.
    type Message: Send + 'static;

    /// Runs on the reader thread, in parallel with [`Service::handle`] on the main thread: only
    /// work that needs no state (the service does not exist yet when the first messages arrive).
    fn prepare(request: Request) -> Self::Message;

    /// Handles a batch in order, writing every reply to `out` (the caller flushes).
    fn handle(&mut self, batch: Vec<Self::Message>, out: &mut impl Write) -> io::Result<()>;
}

/// Where the events go.
#[derive(Clone, Debug)]
pub enum StoreChoice {
    /// Nothing on disk.
    Memory,
    /// One SQLite file per node id in this directory.
    Sqlite { data_dir: PathBuf },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub store: StoreChoice,
    /// The node's id; when `None`, the first message that names the node decides it.
    pub node_id: Option<String>,
    pub config: Config,
    /// Most messages handled as one batch.
    pub max_batch: usize,
    /// Longest accepted input line, in bytes.
    pub max_line_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The file that holds a node's store: the node id, with every byte other than
/// `[A-Za-z0-9_-]` (and a leading `.`) percent-encoded, plus `.db`.
pub fn store_file(data_dir: &std::path::Path, node_id: &str) -> PathBuf {
    let mut name = String::new();
    for (i, b) in node_id.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    data_dir.join(format!("{name}.db"))
}

/// Serves the node on stdin/stdout until the end of input or a signal.
pub fn serve(options: Options) -> Result<(), ServeError> {
    let pipeline = Pipeline {
        node_id: options.node_id.clone(),
        max_batch: options.max_batch,
        max_line_bytes: options.max_line_bytes,
    };
    match &options.store {
        StoreChoice::Memory => {
            pipeline.run(|id| Ok(Node::open(MemoryStore::new(), id, &options.config)?))
        }
        StoreChoice::Sqlite { data_dir } => pipeline.run(|id| {
            let path = store_file(data_dir, &id);
            let mut store = SqliteStore::open(&path)?;
            store.set_cache_size(options.config.cache_size);
            tracing::info!(path = %path.display(), "store opened");
            Ok(Node::open(store, id, &options.config)?)
        }),
    }
}

/// The reader thread, the queue and the main loop, for any [`Service`].
pub struct Pipeline {
    /// The node's id; when `None`, the first message that names the node decides it.
    pub node_id: Option<String>,
    /// Most messages handled as one batch.
    pub max_batch: usize,
    /// Longest accepted input line, in bytes.
    pub max_line_bytes: usize,
}

enum Input<M> {
    /// Messages that were read together.
    Messages(Vec<M>),
    /// The node's id, from the first message that names it (which is in the next chunk).
    Named(String),
    /// stdin ended (or failed).
    End,
    /// A signal asked the node to stop.
    Stop,
    /// The reader thread failed to write replies it handled itself.
    Failed(io::Error),
}

/// What the two threads share.
struct Shared<S> {
    /// The service, once open, and stdout: whoever holds this lock handles requests.
    handler: Mutex<Option<Handler<S>>>,
    /// Chunks sent to the main thread and not yet handled (changed only under `handler`).
    pending: AtomicUsize,
    /// A signal asked the node to stop.
    stop: AtomicBool,
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Option<Handler<S>>> {
        // A panic while handling ends the process (the main thread's, or the reader's through
        // the closed channel), so a poisoned lock only means "stopping": use it as it is.
        self.handler.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Handler<S> {
    service: S,
    out: BufWriter<File>,
}

impl<S: Service> Handler<S> {
    /// Handles a batch, writes its replies and flushes them.
    fn handle(&mut self, batch: Vec<S::Message>) -> io::Result<()> {
        self.service.handle(batch, &mut self.out)?;
        self.out.flush()
    }
}

impl Pipeline {
    /// Reads stdin until its end or a signal; `open` makes the service once the node's id is
    /// known.
    pub fn run<S: Service>(
        &self,
        open: impl FnOnce(String) -> Result<S, ServeError>,
    ) -> Result<(), ServeError> {
        // A few chunks in flight: enough to keep both threads busy, and a bound on memory when
        // the main thread falls behind (a chunk holds at most CHUNK messages or about
        // CHUNK_BYTES bytes of input).
        let (tx, rx) = sync_channel::<Input<S::Message>>(4);
        let shared = Arc::new(Shared::<S> {
            handler: Mutex::new(None),
            pending: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        watch_signals(tx.clone(), shared.clone())?;
        let reader = Reader {
            max_line: self.max_line_bytes,
            named: self.node_id.is_some(),
            held: 0,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || reader.run(tx, S::prepare))?;

        let mut held = Vec::new();
        let mut held_chunks = 0;
        let node_id = match self.node_id.clone() {
            Some(id) => id,
            None => loop {
                match rx.recv() {
                    Ok(Input::Messages(m)) => {
                        held.extend(m);
                        held_chunks += 1;
                    }
                    Ok(Input::Named(id)) => break id,
                    // Input ended (or a signal came) before any message named the node:
                    // nothing to store, nobody to answer.
                    _ => {
                        if !held.is_empty() {
                            tracing::warn!(
                                "no message named the node: {} request(s) not answered",
                                held.len()
                            );
                        }
                        return Ok(());
                    }
                }
            },
        };
        let service = open(node_id)?;
        // Replies go straight to the pipe (a second handle on fd 1), not through std's
        // line-buffered `Stdout`: each batch is written by one `BufWriter` and flushed whole.
        let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        let mut handler = Handler {
            service,
            out: BufWriter::with_capacity(1 << 16, stdout),
        };
        if !held.is_empty() {
            handler.handle(held)?;
        }
        {
            let mut slot = shared.lock();
            shared.pending.fetch_sub(held_chunks, Ordering::SeqCst);
            *slot = Some(handler);
        }

        let result = self.main_loop(&rx, &shared);
        // Wait for a batch the reader thread may be handling, then close the service.
        drop(shared.lock().take());
        result?;
        tracing::info!("input ended; every acknowledged event is durable");
        Ok(())
    }

    /// Handles what the reader thread queues until the end of input, a signal or a failure.
    fn main_loop<S: Service>(
        &self,
        rx: &std::sync::mpsc::Receiver<Input<S::Message>>,
        shared: &Shared<S>,
    ) -> Result<(), ServeError> {
        let mut ended = false;
        while !ended && !shared.stop.load(Ordering::SeqCst) {
            let mut batch = Vec::new();
            let mut chunks = 0;
            let mut next = rx.recv().ok();
            while let Some(input) = next {
                match input {
                    Input::Messages(m) => {
                        batch.extend(m);
                        chunks += 1;
                    }
                    Input::Named(_) => {}
                    Input::End | Input::Stop => {
                        ended = true;
                        break;
                    }
                    Input::Failed(e) => return Err(e.into()),
                }
                next = if batch.len() < self.max_batch {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if chunks == 0 {
                if !ended {
                    break; // every sender is gone
                }
                continue;
            }
            let mut slot = shared.lock();
            let handler = slot
                .as_mut()
                .expect("the service is open until the main loop ends");
            let result = handler.handle(batch);
            shared.pending.fetch_sub(chunks, Ordering::SeqCst);
            drop(slot);
            result?;
        }
        Ok(())
    }
}

fn watch_signals<S: Service>(
    tx: SyncSender<Input<S::Message>>,
    shared: Arc<Shared<S>>,
) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "stopping after the batch in hand");
                shared.stop.store(true, Ordering::SeqCst);
                let _ = tx.send(Input::Stop);
            }
        })?;
    Ok(())
}

/// Most messages sent to the main thread in one chunk...
const CHUNK: usize = 256;
/// ... and about the most bytes of input (a chunk closes once it holds this much).
const CHUNK_BYTES: usize = 1 << 20;

/// Most messages the reader thread handles itself (see the module's docs): a few clients each
/// waiting for a reply, not a stream, which is better served by both threads.
const INLINE_MAX: usize = 16;

/// Most bytes of input held back, as requests, while no message has named the node yet; past
/// that, such requests are reported on stderr and dropped (they cannot be answered without the
/// node's id).
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// The reader thread's state.
struct Reader<S> {
    max_line: usize,
    /// Whether the node's id is known (given, or named by a message already read).
    named: bool,
    /// Bytes of input held back while not `named`.
    held: usize,
    shared: Arc<Shared<S>>,
}

impl<S: Service> Reader<S> {
    /// Reads, parses and prepares stdin, and sends it in chunks: a chunk goes out as soon as no
    /// more input is buffered, so a lone line is never held back waiting for more. A few lone
    /// messages may be handled here instead ([`Reader::handle_here`]).
    fn run(mut self, tx: SyncSender<Input<S::Message>>, prepare: fn(Request) -> S::Message) {
        let stdin = io::stdin();
        let mut reader = LineReader::new(stdin.lock(), self.max_line);
        let mut chunk = Vec::new();
        let mut bytes = 0;
        loop {
            let end = match reader.next_frame() {
                Ok(Some(frame)) => {
                    let len = match &frame {
                        Frame::Line(l) | Frame::Cut(l) | Frame::TooLong { head: l, .. } => l.len(),
                    };
                    bytes += len;
                    if let Some(request) = self.take(frame, len, &tx, &mut chunk) {
                        chunk.push(prepare(request));
                    }
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::error!("reading stdin failed: {e}");
                    true
                }
            };
            let full = chunk.len() >= CHUNK || bytes >= CHUNK_BYTES;
            if (end || full || !reader.has_buffered()) && !chunk.is_empty() {
                bytes = 0;
                let mut ready = std::mem::take(&mut chunk);
                if !end && ready.len() <= INLINE_MAX && !stdin_ready() {
                    match self.handle_here(ready) {
                        Ok(None) => continue,
                        Ok(Some(back)) => ready = back,
                        Err(e) => {
                            let _ = tx.send(Input::Failed(e));
                            return;
                        }
                    }
                }
                self.shared.pending.fetch_add(1, Ordering::SeqCst);
                if tx.send(Input::Messages(ready)).is_err() {
                    return;
                }
            }
            if end {
                let _ = tx.send(Input::End);
                return;
            }
        }
    }

    /// Handles `chunk` on this thread if the main thread is idle and has nothing queued (so
    /// that order is kept); otherwise gives the chunk back, to be queued.
    fn handle_here(&self, chunk: Vec<S::Message>) -> io::Result<Option<Vec<S::Message>>> {
        let mut slot = match self.shared.handler.try_lock() {
            Ok(slot) => slot,
            Err(_) => return Ok(Some(chunk)),
        };
        let idle = self.shared.pending.load(Ordering::SeqCst) == 0
            && !self.shared.stop.load(Ordering::SeqCst);
        match slot.as_mut() {
            Some(handler) if idle => handler.handle(chunk).map(|()| None),
            _ => Ok(Some(chunk)),
        }
    }

    /// Parses a frame; the request, if it is one to pass on. Before the node is named, sends
    /// [`Input::Named`] (after the chunk so far) when this request names it.
    fn take(
        &mut self,
        frame: Frame,
        len: usize,
        tx: &SyncSender<Input<S::Message>>,
        chunk: &mut Vec<S::Message>,
    ) -> Option<Request> {
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
        if self.named {
            return Some(request);
        }
        let names = match &request.body {
            _ if !whole => None,
            Body::Init { node_id } => Some(node_id.clone()),
            _ => request.dest.clone(),
        };
        match names {
            Some(id) => {
                self.named = true;
                if !chunk.is_empty() {
                    let _ = tx.send(Input::Messages(std::mem::take(chunk)));
                }
                let _ = tx.send(Input::Named(id));
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
        Frame::TooLong { head, len } => transport::too_long(&head, len, max_line),
        Frame::Cut(line) => match protocol::parse_line(&line) {
            Incoming::Unanswerable(why) => {
                Incoming::Unanswerable(format!("input ended in the middle of a line ({why})"))
            }
            whole => whole,
        },
    }
}
