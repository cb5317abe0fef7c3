//! `cqrs-echo`: the benchmark's *echo floor*.
//!
//! It does everything the `cqrs` node does around the work itself, with the very same code: it is
//! a [`Service`] served by the node's own stdio front end (src/stdio: the line reader and the
//! parser on the reader thread, the envelopes, the 64 KiB buffered stdout flushed once per chunk)
//! and a [`Worker`] on the node's own writer thread (src/node/writer.rs: the bounded queue, the
//! batching, the lone request handled where it was read). Then, instead of executing a message,
//! it answers with a fixed, well-formed reply:
//! `command_result` with `success: true` and no events for a command, `query_result` with
//! `data: null` for a query, `init_ok` for an init, the protocol error for an invalid request.
//!
//! The node's time divided by this program's time on the same workload is the benchmark's
//! headline ratio: it cancels out how fast the machine is at moving and parsing JSON lines.
//!
//! With `--fsync-file PATH` it is the *durable floor*: before answering a batch it writes 4 KiB
//! at the start of that file and calls fdatasync, as the benchmark's fdatasync probe does and
//! as a node must do at least once per commit. Its one-at-a-time round trip is the shortest a
//! durable command can have through this pipeline on this disk.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use clap::Parser;
use cqrs_node::node::writer::Worker;
use cqrs_node::protocol::reply::{self, WriteJson};
use cqrs_node::protocol::{CommandJson, QueryJson};
use cqrs_node::stdio::{self, Options, Service};
use serde_json::value::RawValue;
use serde_json::Value;

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
    /// The replies' `src` (default: as `cqrs`, the first message that names the node).
    #[arg(long)]
    node_id: Option<String>,
    /// Accepted and ignored, so that the same arguments can be given to `cqrs` and to the floor.
    #[arg(long)]
    in_memory: bool,
    /// Before answering each batch, write 4 KiB at the start of this file (created if needed)
    /// and fdatasync it: the durable floor.
    #[arg(long)]
    fsync_file: Option<PathBuf>,
}

/// What the durable floor writes before each batch.
const BLOCK: [u8; 4096] = [0xA5; 4096];

/// A request, and its reply: only its kind is kept (the rest of the message is dropped on the
/// reader thread, where it was allocated, as the node drops what it does not keep).
#[derive(Clone, Copy)]
enum Kind {
    Command,
    Query,
    Pass,
}

/// The writer thread's side: the durable floor's file, if any.
struct Echo {
    sync: Option<File>,
}

impl Worker for Echo {
    type Request = Kind;
    type Reply = Kind;

    fn handle(&mut self, batch: Vec<Kind>, deliver: &mut dyn FnMut(Kind)) {
        if let Some(f) = &self.sync {
            // As the node's commit: a failed sync answers nothing of the batch.
            if let Err(e) = f.write_all_at(&BLOCK, 0).and_then(|()| f.sync_data()) {
                eprintln!("cqrs-echo: {e}");
                std::process::exit(2);
            }
        }
        batch.into_iter().for_each(deliver);
    }
}

/// The reader thread's side: fixed replies.
struct Replies {
    null: Box<RawValue>,
}

impl Service for Replies {
    type Worker = Echo;

    fn command(&self, _: Option<CommandJson>) -> Kind {
        Kind::Command
    }

    fn query(&self, _: Option<QueryJson>) -> Kind {
        Kind::Query
    }

    fn pass(&self) -> Kind {
        Kind::Pass
    }

    fn write(&self, out: &mut Vec<u8>, in_reply_to: &Value, reply: Kind) {
        match reply {
            Kind::Command => reply::CommandOk::new(in_reply_to, Vec::new()).write_json(out),
            Kind::Query => reply::QueryOk::new(in_reply_to, &self.null).write_json(out),
            Kind::Pass => unreachable!("the front end answers what it passed"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As `cqrs` does: the same allocator settings for both sides of the ratio.
    cqrs_node::disable_transparent_huge_pages();
    let cli = Cli::parse();
    let options = Options {
        node_id: cli.node_id,
        max_batch: cli.max_batch as usize,
        max_line_bytes: cli.max_line_bytes as usize,
    };
    let null = RawValue::from_string("null".into()).expect("null is JSON");
    let sync = match &cli.fsync_file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // The block exists before the first batch: every batch overwrites in place.
            f.write_all_at(&BLOCK, 0)?;
            f.sync_all()?;
            Some(f)
        }
        None => None,
    };
    stdio::serve(&options, Replies { null }, move |_id| Ok(Echo { sync }))?;
    Ok(())
}
