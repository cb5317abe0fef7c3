//! `cqrs-bench`: the end-to-end benchmark of the `cqrs` node, in one command.
//!
//! ```sh
//! cargo run --release --bin cqrs-bench              # the full run (issue 3's sizes)
//! cargo run --release --bin cqrs-bench -- --quick   # a smaller run, well under a minute
//! ```
//!
//! One run: builds (when started by `cargo run`) and locates the release `cqrs`, `cqrs-echo` and
//! `cqrs-workload` binaries next to itself, then
//!
//! 1. generates the workload with `cqrs-workload` (seeded, deterministic);
//! 2. streams it through the echo floor, `cqrs --in-memory` and `cqrs` on SQLite (a temporary
//!    directory): standard input is the workload file, standard output a file; wall time from
//!    spawn to exit, peak RSS and CPU time from `wait4`; every reply is then checked;
//! 3. measures fdatasync on the same disk (write 4 KiB + `File::sync_data`, many times), and the
//!    one-at-a-time latency of durable commands (send one, wait for its reply, repeat), in turn
//!    with the same commands through the *durable floor* (`cqrs-echo --fsync-file`: the pipeline
//!    plus one write + fdatasync per batch, the best a durable command can do here);
//! 4. GetUserAtTime on one 10,000-event stream, with and without snapshots;
//! 5. opening the durable store of step 2 (1,000,000 events at full size) and answering the
//!    first GetUser, from spawn to reply;
//! 6. memory per live user at 1,000,000 users (peak RSS / users), in memory and on SQLite;
//! 7. `ListUsersAtTime`: a page of 100 at random times at 1,000,000 users with 4 events each,
//!    built in this process through the engine, in memory and on SQLite (p50, p99).
//!
//! Every reply of every run is verified against a model of the workload that this program keeps
//! itself (it replays the workload's commands, independently of the node's code): every command
//! must succeed with the right events, every query must return exactly the state the workload
//! implies, byte for byte. A mismatch stops the benchmark with exit status 1: a fast wrong answer
//! never counts. `cqrs-bench verify --workload W --replies R` runs the same check on files.
//!
//! The code: one file per measured run, each adding its section to the report:
//! [`streamed`] (1, 2), [`one_at_a_time`] (3), [`long_stream`] (4), [`open`] (5), [`memory`] (6),
//! [`list_at_time`] (7);
//! a new run (on PostgreSQL, over HTTP) is a new file and one line in [`bench_in`]. Around them:
//! [`cli`] (the command line and the sizes), [`programs`] (finding and starting the programs,
//! through the test kit's harness, `cqrs_node::testkit::process`), [`verify`] (the checks against
//! the test kit's model, `cqrs_node::testkit::model`), [`report`] and [`machine`].

mod cli;
mod list_at_time;
mod long_stream;
mod machine;
mod memory;
mod one_at_a_time;
mod open;
mod programs;
mod report;
mod streamed;
mod verify;

use std::fs;
use std::path::Path;

use clap::Parser;

use cli::{Cli, Cmd, RunArgs, Sizes};
use programs::{locate_bins, progress, Bins};
use report::Report;

type Res<T> = Result<T, String>;

/// What every run is given.
#[derive(Clone, Copy)]
struct Bench<'a> {
    /// The run's arguments.
    a: &'a RunArgs,
    /// The sizes they make.
    s: &'a Sizes,
    /// The programs.
    bins: &'a Bins,
    /// The working directory.
    dir: &'a Path,
}

fn main() {
    programs::restart_without_huge_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Verify(v)) => verify::verify(&v),
        None => bench(cli.run),
    };
    if let Err(e) = result {
        eprintln!("cqrs-bench: FAILED: {e}");
        std::process::exit(1);
    }
}

fn bench(a: RunArgs) -> Res<()> {
    let bins = locate_bins(&a)?;
    let s = Sizes::from(&a);
    let own_dir = a.dir.is_none();
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("cqrs-bench-{}", std::process::id())),
    };
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = bench_in(&a, &bins, &s, &dir);
    if own_dir && !a.keep {
        let _ = fs::remove_dir_all(&dir);
    } else {
        progress(format!("files kept in {}", dir.display()));
    }
    result
}

/// The header, then every run in turn, then the targets.
fn bench_in(a: &RunArgs, bins: &Bins, s: &Sizes, dir: &Path) -> Res<()> {
    let mut r = Report::default();
    r.line("# cqrs-bench");
    r.line("");
    for m in machine::machine() {
        r.line(format!("- {m}"));
    }
    r.line(format!(
        "- working directory (stores, fsync probe): {}",
        dir.display()
    ));
    if cfg!(debug_assertions) {
        r.line("- DEBUG BUILD: the figures below mean nothing");
    }
    r.line("");
    let b = Bench { a, s, bins, dir };
    let streamed = streamed::run(&b, &mut r)?;
    one_at_a_time::run(&b, &mut r)?;
    long_stream::run(&b, &mut r)?;
    open::run(&b, &mut r, streamed)?;
    memory::run(&b, &mut r)?;
    list_at_time::run(&b, &mut r)?;
    r.finish();
    Ok(())
}
