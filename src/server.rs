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
//! Lines that cannot be answered (not JSON, no `src`) are reported on stderr by the reader and
//! go no further.
//!
//! Until the node's id is known (no `--node-id`), the service cannot be opened (the store file
//! is named after it): requests are held back, bounded by [`MAX_HELD_BYTES`], until one names the
//! node (an `init`'s `node_id`, else a whole line's `dest`).
//!
//! SIGTERM and SIGINT end the run after the batch in hand has been handled and answered; so does
//! the end of input. Exit status 0.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use crate::node::{Config, Node};
use crate::protocol::{self, Body, Incoming, Request};
use crate::store::{MemoryStore, SqliteStore, StoreError};
use crate::transport::{self, Frame, LineReader};

/// The work behind the pipeline.
pub trait Service {
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
            let store = SqliteStore::open(&path)?;
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
        let stop = Arc::new(AtomicBool::new(false));
        watch_signals(tx.clone(), stop.clone())?;
        let reader = Reader {
            max_line: self.max_line_bytes,
            named: self.node_id.is_some(),
            held: 0,
        };
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || reader.run(tx, S::prepare))?;

        let mut held = Vec::new();
        let node_id = match self.node_id.clone() {
            Some(id) => id,
            None => loop {
                match rx.recv() {
                    Ok(Input::Messages(m)) => held.extend(m),
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
        let mut service = open(node_id)?;
        let stdout = io::stdout();
        let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
        if !held.is_empty() {
            service.handle(held, &mut out)?;
            out.flush()?;
        }

        let mut ended = false;
        while !ended && !stop.load(Ordering::SeqCst) {
            let mut batch = Vec::new();
            let mut next = rx.recv().ok();
            while let Some(input) = next {
                match input {
                    Input::Messages(m) => batch.extend(m),
                    Input::Named(_) => {}
                    Input::End | Input::Stop => {
                        ended = true;
                        break;
                    }
                }
                next = if batch.len() < self.max_batch {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if batch.is_empty() && !ended {
                break; // every sender is gone
            }
            service.handle(batch, &mut out)?;
            out.flush()?;
        }
        tracing::info!("input ended; every acknowledged event is durable");
        Ok(())
    }
}

fn watch_signals<M: Send + 'static>(
    tx: SyncSender<Input<M>>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "stopping after the batch in hand");
                stop.store(true, Ordering::SeqCst);
                let _ = tx.send(Input::Stop);
            }
        })?;
    Ok(())
}

/// Most messages sent to the main thread in one chunk...
const CHUNK: usize = 256;
/// ... and about the most bytes of input (a chunk closes once it holds this much).
const CHUNK_BYTES: usize = 1 << 20;

/// Most bytes of input held back, as requests, while no message has named the node yet; past
/// that, such requests are reported on stderr and dropped (they cannot be answered without the
/// node's id).
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// The reader thread's state.
struct Reader {
    max_line: usize,
    /// Whether the node's id is known (given, or named by a message already read).
    named: bool,
    /// Bytes of input held back while not `named`.
    held: usize,
}

impl Reader {
    /// Reads, parses and prepares stdin, and sends it in chunks: a chunk goes out as soon as no
    /// more input is buffered, so a lone line is never held back waiting for more.
    fn run<M: Send>(mut self, tx: SyncSender<Input<M>>, prepare: fn(Request) -> M) {
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
                if tx
                    .send(Input::Messages(std::mem::take(&mut chunk)))
                    .is_err()
                {
                    return;
                }
            }
            if end {
                let _ = tx.send(Input::End);
                return;
            }
        }
    }

    /// Parses a frame; the request, if it is one to pass on. Before the node is named, sends
    /// [`Input::Named`] (after the chunk so far) when this request names it.
    fn take<M>(
        &mut self,
        frame: Frame,
        len: usize,
        tx: &SyncSender<Input<M>>,
        chunk: &mut Vec<M>,
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
