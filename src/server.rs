//! Runs a node on standard input and output.
//!
//! A reader thread turns stdin into [`Frame`]s and queues them (bounded: when the node falls
//! behind, the reader stops reading). The main thread takes whatever is already queued, up to
//! `max_batch` messages, hands it to the node as one batch (one commit for its commands), writes
//! the replies and flushes. It never waits for more input while it has something to do, so a
//! lone command is never held back. Replies are written with blocking writes: when nobody reads
//! stdout, the node stops, the queue fills, and the reader stops reading.
//!
//! SIGTERM and SIGINT end the node after the batch in hand has been committed and answered; so
//! does the end of input. Exit status 0.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use crate::node::{Config, Node};
use crate::protocol::{self, Body, Incoming};
use crate::store::{EventStore, MemoryStore, SqliteStore, StoreError};
use crate::transport::{self, Frame, LineReader};

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
    /// The node's id; when `None`, the first message decides it.
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

enum Input {
    /// Frames that were read together.
    Frames(Vec<Frame>),
    /// stdin ended (or failed).
    End,
    /// A signal asked the node to stop.
    Stop,
}

/// Serves stdin/stdout until the end of input or a signal.
pub fn serve(options: Options) -> Result<(), ServeError> {
    // A few chunks in flight: enough to keep both threads busy, and a bound on memory when the
    // node falls behind (each chunk holds at most CHUNK lines or about CHUNK_BYTES bytes).
    let (tx, rx) = sync_channel::<Input>(4);
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(tx.clone(), stop.clone())?;
    let max_line = options.max_line_bytes;
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_stdin(tx, max_line))?;

    // Until the node's id is known, hold the input back (parsed, and bounded).
    let mut held = Vec::new();
    let node_id = match options.node_id.clone() {
        Some(id) => id,
        None => match wait_for_id(&rx, &mut held, max_line) {
            Some(id) => id,
            // Input ended (or a signal came) before any message named the node: nothing to
            // store, nobody to answer.
            None => return Ok(()),
        },
    };
    match &options.store {
        StoreChoice::Memory => run(MemoryStore::new(), node_id, &options, rx, held, &stop),
        StoreChoice::Sqlite { data_dir } => {
            let path = store_file(data_dir, &node_id);
            let store = SqliteStore::open(&path)?;
            tracing::info!(path = %path.display(), "store opened");
            run(store, node_id, &options, rx, held, &stop)
        }
    }
}

fn watch_signals(tx: SyncSender<Input>, stop: Arc<AtomicBool>) -> io::Result<()> {
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

/// Most frames sent to the main thread in one message...
const CHUNK: usize = 256;
/// ... and about the most bytes (a chunk closes once it holds this much).
const CHUNK_BYTES: usize = 1 << 20;

/// Reads stdin and sends what was read in chunks: a chunk goes out as soon as no more input is
/// buffered, so a lone line is never held back waiting for more.
fn read_stdin(tx: SyncSender<Input>, max_line: usize) {
    let stdin = io::stdin();
    let mut reader = LineReader::new(stdin.lock(), max_line);
    let mut chunk = Vec::new();
    let mut bytes = 0;
    loop {
        let end = match reader.next_frame() {
            Ok(Some(frame)) => {
                bytes += match &frame {
                    Frame::Line(l) | Frame::Cut(l) | Frame::TooLong { head: l, .. } => l.len(),
                };
                chunk.push(frame);
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
            if tx.send(Input::Frames(std::mem::take(&mut chunk))).is_err() {
                return;
            }
        }
        if end {
            let _ = tx.send(Input::End);
            return;
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

/// Most bytes of input held back, as requests, while no message has named the node yet; past
/// that, such requests are reported on stderr and dropped (they cannot be answered without the
/// node's id). Lines that cannot be answered at all are never held.
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// Reads until a message names the node (an `init`'s `node_id`, else a `dest`). The requests
/// read so far, that message and the rest of its chunk included, are left in `held`, parsed.
fn wait_for_id(rx: &Receiver<Input>, held: &mut Vec<Incoming>, max_line: usize) -> Option<String> {
    let mut bytes = 0;
    loop {
        let Ok(Input::Frames(frames)) = rx.recv() else {
            for item in held.drain(..) {
                if let Incoming::Request(r) = item {
                    tracing::warn!(src = %r.src, "no message named the node: a request was not answered");
                }
            }
            return None;
        };
        let mut frames = frames.into_iter();
        while let Some(frame) = frames.next() {
            let (len, whole) = match &frame {
                Frame::Line(l) | Frame::Cut(l) => (l.len(), true),
                Frame::TooLong { head, .. } => (head.len(), false),
            };
            let incoming = to_incoming(frame, max_line);
            let id = match &incoming {
                Incoming::Request(r) if whole => match &r.body {
                    Body::Init { node_id } => Some(node_id.clone()),
                    _ => r.dest.clone(),
                },
                _ => None,
            };
            match incoming {
                Incoming::Unanswerable(why) => {
                    tracing::warn!("skipped a line that cannot be answered: {why}")
                }
                request if id.is_some() => {
                    held.push(request);
                    held.extend(frames.map(|f| to_incoming(f, max_line)));
                    return id;
                }
                request if bytes + len <= MAX_HELD_BYTES => {
                    bytes += len;
                    held.push(request);
                }
                Incoming::Request(r) => tracing::warn!(
                    src = %r.src,
                    "dropped a request: over {MAX_HELD_BYTES} bytes of input came before any \
                     message named the node (give --node-id, or send init first)"
                ),
            }
        }
    }
}

fn run<S: EventStore>(
    store: S,
    node_id: String,
    options: &Options,
    rx: Receiver<Input>,
    held: Vec<Incoming>,
    stop: &AtomicBool,
) -> Result<(), ServeError> {
    let mut node = Node::open(store, node_id, &options.config)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let max_line = options.max_line_bytes;

    node.handle(held, &mut out)?;
    out.flush()?;

    let mut ended = false;
    while !ended && !stop.load(Ordering::SeqCst) {
        let mut batch = Vec::new();
        let mut next = rx.recv().ok();
        while let Some(input) = next {
            match input {
                Input::Frames(frames) => {
                    batch.extend(frames.into_iter().map(|f| to_incoming(f, max_line)))
                }
                Input::End | Input::Stop => {
                    ended = true;
                    break;
                }
            }
            next = if batch.len() < options.max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() && !ended {
            break; // every sender is gone
        }
        node.handle(batch, &mut out)?;
        out.flush()?;
    }
    tracing::info!("input ended; every acknowledged event is durable");
    Ok(())
}
