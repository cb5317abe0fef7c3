//! `bank`: a node that serves a second aggregate, a bank account, beside the users.
//!
//! Everything here is written against the library's public API, and no file under `src/` knows
//! of accounts: the aggregate, its payloads, its rejection codes, its queries and its read model
//! are in [`account`], and this `main` registers it. Run it as the `cqrs` node is run:
//!
//! ```sh
//! cargo run --example bank -- --in-memory
//! cargo run --example bank -- --data-dir ./bank-data
//! ```
//!
//! then send it protocol lines, e.g.
//! `{"src":"c","dest":"bank","body":{"type":"command","msg_id":1,"command":{"type":"OpenAccount","payload":{"id":"acc-1","owner":"Ada"}}}}`.

mod account;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use cqrs_node::node::{Config, Node};
use cqrs_node::plugin::user::UserPlugin;
use cqrs_node::plugin::Registry;
use cqrs_node::stdio::{self, Nodes, Options};
use cqrs_node::store::{sqlite_file, MemoryStore, SqliteStore};

/// A node with bank accounts (and users), on stdin/stdout.
#[derive(Parser)]
#[command(name = "bank")]
struct Cli {
    /// Directory of the durable store.
    #[arg(long, default_value = "./bank-data")]
    data_dir: PathBuf,
    /// Keep everything in memory.
    #[arg(long)]
    in_memory: bool,
    /// The node's id (default: from the first message).
    #[arg(long)]
    node_id: Option<String>,
}

/// The aggregates this node serves.
pub fn registry() -> Registry {
    Registry::new()
        .with(account::AccountPlugin)
        .with(UserPlugin)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let registry = Arc::new(registry());
    let options = Options {
        node_id: cli.node_id,
        max_batch: 1024,
        max_line_bytes: 1 << 20,
    };
    let config = Config::default();
    let result = if cli.in_memory {
        let service = Nodes::<MemoryStore>::new(registry.clone());
        stdio::serve(&options, service, move |_| {
            Ok(Node::open(MemoryStore::new(), registry, &config)?)
        })
    } else {
        let dir = cli.data_dir;
        let service = Nodes::<SqliteStore>::new(registry.clone());
        stdio::serve(&options, service, move |id| {
            let store = SqliteStore::open(sqlite_file(&dir, id))?;
            Ok(Node::open(store, registry, &config)?)
        })
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bank: {e}");
            ExitCode::from(2)
        }
    }
}
