//! `cqrs`: the command line. See README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use cqrs_node::node::Config;
use cqrs_node::projection;
use cqrs_node::server::{self, Options, StoreChoice};
use cqrs_node::store::{SqliteStore, StoreError};

/// A CQRS + event-sourcing node: JSON lines on stdin, replies on stdout, events on disk.
#[derive(Parser)]
#[command(name = "cqrs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Rebuild every projection from the event log (the node must not be running).
    Rebuild(StoreArgs),
    /// Check the log's shape and that every projection equals a full replay; exit 1 if not.
    Check(StoreArgs),
}

#[derive(Args)]
struct StoreArgs {
    /// Directory of the durable store: one SQLite file per node id.
    #[arg(long, env = "CQRS_DATA_DIR", default_value = "./cqrs-data")]
    data_dir: PathBuf,
    /// The node's id (default: an `init`'s node_id, else the first message's dest). For
    /// `rebuild` and `check`: the store to work on (default: every store in the directory).
    #[arg(long, env = "CQRS_NODE_ID")]
    node_id: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Keep everything in memory; write no file at all.
    #[arg(long)]
    in_memory: bool,
    /// Write a snapshot of an aggregate every N events (0: never).
    #[arg(long, default_value_t = Config::default().snapshot_every)]
    snapshot_every: u64,
    /// Aggregates kept in memory between commands (and, on the durable store, the numbers of as
    /// many streams and as many documents, so that commands look nothing up by text key).
    #[arg(long, default_value_t = Config::default().cache_size)]
    cache_size: usize,
    /// Most messages handled (and commands committed) together.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_batch: u64,
    /// Longest accepted input line, in bytes; longer lines get error 12.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..))]
    max_line_bytes: u64,
}

fn main() -> ExitCode {
    cqrs_node::disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CQRS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the process before
    // the store can roll back and answer. With a handler installed the write fails with EFBIG
    // instead: a storage failure, reported to the client as error 13.
    if let Err(e) = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ) {
        tracing::warn!("cannot handle SIGXFSZ: {e}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.run),
        Some(Command::Rebuild(args)) => each_store(&args, "rebuild", |store| {
            let applied = projection::rebuild(store, &projection::all())?;
            println!("{}: rebuilt from {applied} events", store.path().display());
            Ok(true)
        }),
        Some(Command::Check(args)) => each_store(&args, "check", |store| {
            let problems = projection::verify(store, &projection::all())?;
            for p in &problems {
                println!("{}: {p}", store.path().display());
            }
            if problems.is_empty() {
                println!("{}: ok", store.path().display());
            }
            Ok(problems.is_empty())
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cqrs: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: RunArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let store = if args.in_memory {
        StoreChoice::Memory
    } else {
        StoreChoice::Sqlite {
            data_dir: args.store.data_dir,
        }
    };
    server::serve(Options {
        store,
        node_id: args.store.node_id,
        config: Config {
            cache_size: args.cache_size,
            snapshot_every: args.snapshot_every,
        },
        max_batch: args.max_batch as usize,
        max_line_bytes: args.max_line_bytes as usize,
    })?;
    Ok(true)
}

/// Runs `f` on the named store, or on every `*.db` store in the data directory.
fn each_store(
    args: &StoreArgs,
    what: &str,
    mut f: impl FnMut(&mut SqliteStore) -> Result<bool, StoreError>,
) -> Result<bool, Box<dyn std::error::Error>> {
    let paths = match &args.node_id {
        Some(id) => vec![server::store_file(&args.data_dir, id)],
        None => {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&args.data_dir)
                .map_err(|e| format!("{}: {e}", args.data_dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "db"))
                .collect();
            paths.sort();
            paths
        }
    };
    if paths.is_empty() {
        return Err(format!("{what}: no store in {}", args.data_dir.display()).into());
    }
    let mut all_ok = true;
    for path in paths {
        if !path.exists() {
            return Err(format!("{what}: no store at {}", path.display()).into());
        }
        let mut store = SqliteStore::open(&path)?;
        all_ok &= f(&mut store)?;
    }
    Ok(all_ok)
}
