//! `cqrs-echo`: the benchmark's *echo floor*.
//!
//! It does everything the `cqrs` node does around the work itself, with the very same code: it is
//! a [`Service`] run by the node's own [`Pipeline`] (src/server.rs: the line reader and the parser
//! on the reader thread, the bounded queue, the batching, the 64 KiB buffered stdout flushed once
//! per batch) and gathers and writes its replies as the node does ([`protocol::write_message`],
//! [`protocol::flush_lines`]). Then, instead of executing a message, it answers with a fixed,
//! well-formed reply:
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
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use clap::Parser;
use cqrs_node::node::FLUSH_BYTES;
use cqrs_node::protocol::{self, reply, Body, ErrorCode, Request};
use cqrs_node::server::{Pipeline, Service};
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

struct Echo {
    id: String,
    null: Box<RawValue>,
    /// The durable floor's file.
    sync: Option<File>,
}

/// What the durable floor writes before each batch.
const BLOCK: [u8; 4096] = [0xA5; 4096];

/// What the fixed reply needs of a request; the rest of it is dropped on the reader thread,
/// where it was allocated (as the node drops what it does not keep).
struct Answer {
    src: String,
    msg_id: Value,
    reply: Reply,
}

enum Reply {
    Command,
    Query,
    Init,
    Error(ErrorCode, String),
}

impl Service for Echo {
    type Message = Option<Answer>;

    fn prepare(request: Request) -> Option<Answer> {
        let reply = match request.body {
            Body::Command(_) => Reply::Command,
            Body::Query(_) => Reply::Query,
            Body::Init { .. } => Reply::Init,
            Body::Invalid { code, text } => Reply::Error(code, text),
        };
        Some(Answer {
            src: request.src,
            msg_id: request.msg_id?,
            reply,
        })
    }

    fn handle(&mut self, batch: Vec<Option<Answer>>, sink: &mut impl Write) -> io::Result<()> {
        if let Some(f) = &self.sync {
            f.write_all_at(&BLOCK, 0)?;
            f.sync_data()?;
        }
        // Gathered and written out as the node does its replies (see `Node::handle`).
        let mut buf = Vec::with_capacity(batch.len().min(1024) * 128);
        for a in batch.iter().flatten() {
            let (src, dest, msg_id) = (self.id.as_str(), a.src.as_str(), &a.msg_id);
            let out = &mut buf;
            match &a.reply {
                Reply::Command => protocol::write_message(
                    out,
                    src,
                    dest,
                    &reply::CommandOk::new(msg_id, Vec::new()),
                ),
                Reply::Query => protocol::write_message(
                    out,
                    src,
                    dest,
                    &reply::QueryOk::new(msg_id, &self.null),
                ),
                Reply::Init => protocol::write_message(out, src, dest, &reply::InitOk::new(msg_id)),
                Reply::Error(code, text) => {
                    protocol::write_message(out, src, dest, &reply::Error::new(msg_id, *code, text))
                }
            }
            protocol::flush_lines(&mut buf, FLUSH_BYTES, sink)?;
        }
        protocol::flush_lines(&mut buf, 0, sink)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As `cqrs` does: the same allocator settings for both sides of the ratio.
    cqrs_node::disable_transparent_huge_pages();
    let cli = Cli::parse();
    let pipeline = Pipeline {
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
    pipeline.run(|id| Ok(Echo { id, null, sync }))?;
    Ok(())
}
