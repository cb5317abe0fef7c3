//! `cqrs-echo`: the benchmark's *echo floor*.
//!
//! It does everything the `cqrs` node does around the work itself, with the project's own code:
//! the same line reader ([`LineReader`]) on a reader thread, the same bounded queue and batching
//! as `src/server.rs`, the same parser ([`protocol::parse_line`]), the same reply writer
//! ([`protocol::write_message`]) into the same 64 KiB buffered stdout, flushed once per batch.
//! Then, instead of executing a message, it answers with a fixed, well-formed reply:
//! `command_result` with `success: true` and no events for a command, `query_result` with
//! `data: null` for a query, `init_ok` for an init, the protocol error for an invalid request.
//!
//! The node's time divided by this program's time on the same workload is the benchmark's
//! headline ratio: it cancels out how fast the machine is at moving and parsing JSON lines.

use std::io::{self, BufReader, BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use clap::Parser;
use cqrs_node::protocol::{self, reply, Body, Incoming};
use cqrs_node::transport::{self, Frame, LineReader};
use serde_json::value::RawValue;

/// Echo floor for the cqrs benchmark: parses each message and writes a fixed reply.
#[derive(Parser)]
#[command(name = "cqrs-echo", version, about)]
struct Cli {
    /// Most messages handled together (as `cqrs --max-batch`).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_batch: u64,
    /// Longest accepted input line, in bytes (as `cqrs --max-line-bytes`).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..))]
    max_line_bytes: u64,
    /// The reply's `src` (default: the first message's `dest`). Accepted for symmetry with `cqrs`.
    #[arg(long)]
    node_id: Option<String>,
    /// Accepted and ignored, so that the same arguments can be given to `cqrs` and to the floor.
    #[arg(long)]
    in_memory: bool,
}

enum Input {
    Frame(Frame),
    End,
}

fn read_stdin(tx: SyncSender<Input>, max_line: usize) {
    let stdin = io::stdin();
    let mut reader = LineReader::new(BufReader::with_capacity(1 << 16, stdin.lock()), max_line);
    loop {
        let input = match reader.next_frame() {
            Ok(Some(frame)) => Input::Frame(frame),
            Ok(None) => Input::End,
            Err(e) => {
                eprintln!("cqrs-echo: reading stdin failed: {e}");
                Input::End
            }
        };
        let end = matches!(input, Input::End);
        if tx.send(input).is_err() || end {
            return;
        }
    }
}

fn to_incoming(frame: Frame, max_line: usize) -> Incoming {
    match frame {
        Frame::Line(line) | Frame::Cut(line) => protocol::parse_line(&line),
        Frame::TooLong { head, len } => transport::too_long(&head, len, max_line),
    }
}

fn answer(
    out: &mut impl Write,
    id: &mut Option<String>,
    null: &RawValue,
    incoming: Incoming,
) -> io::Result<()> {
    let request = match incoming {
        Incoming::Request(r) => r,
        Incoming::Unanswerable(why) => {
            eprintln!("cqrs-echo: skipped a line that cannot be answered: {why}");
            return Ok(());
        }
    };
    if id.is_none() {
        *id = match &request.body {
            Body::Init { node_id } => Some(node_id.clone()),
            _ => request.dest.clone(),
        };
    }
    let Some(msg_id) = &request.msg_id else {
        return Ok(());
    };
    let src = id.as_deref().unwrap_or("echo");
    let dest = &request.src;
    match &request.body {
        Body::Command(_) => {
            protocol::write_message(out, src, dest, &reply::CommandOk::new(msg_id, Vec::new()))
        }
        Body::Query(_) => {
            protocol::write_message(out, src, dest, &reply::QueryOk::new(msg_id, null))
        }
        Body::Init { .. } => protocol::write_message(out, src, dest, &reply::InitOk::new(msg_id)),
        Body::Invalid { code, text } => {
            protocol::write_message(out, src, dest, &reply::Error::new(msg_id, *code, text))
        }
    }
}

fn run(cli: Cli, rx: Receiver<Input>) -> io::Result<()> {
    let max_line = cli.max_line_bytes as usize;
    let max_batch = cli.max_batch as usize;
    let mut id = cli.node_id;
    let null = RawValue::from_string("null".into()).expect("null is JSON");
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut ended = false;
    while !ended {
        // As src/server.rs: take what is already queued (at most max_batch), answer it, flush.
        let mut batch = Vec::new();
        let mut next = rx.recv().ok();
        while let Some(input) = next {
            match input {
                Input::Frame(f) => batch.push(to_incoming(f, max_line)),
                Input::End => {
                    ended = true;
                    break;
                }
            }
            next = if batch.len() < max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() && !ended {
            break;
        }
        for incoming in batch {
            answer(&mut out, &mut id, &null, incoming)?;
        }
        out.flush()?;
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let cli = Cli::parse();
    let (tx, rx) = sync_channel::<Input>(cli.max_batch.max(1) as usize * 4);
    let max_line = cli.max_line_bytes as usize;
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_stdin(tx, max_line))?;
    run(cli, rx)
}
