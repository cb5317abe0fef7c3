//! The command line: a run (the default) or `verify`, and the sizes a run uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// End-to-end benchmark of the cqrs node (see docs/benchmarks.md).
#[derive(Parser)]
#[command(name = "cqrs-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Check a file of replies against a workload file; exit 1 on the first mismatches.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub workload: PathBuf,
    #[arg(long)]
    pub replies: PathBuf,
    /// The replies come from the echo floor: check only that each request got a reply of the
    /// right type, in order.
    #[arg(long)]
    pub echo: bool,
    /// Then print the exact reply that a GetUser of this user (msg_id 1, from `c1`) must get
    /// from the final state, as `final-get: <line>`.
    #[arg(long)]
    pub final_get: Option<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Smaller sizes (a run well under a minute); any size given explicitly still wins.
    #[arg(long)]
    pub quick: bool,
    /// Users in the streamed workload [full: 100000, quick: 10000].
    #[arg(long)]
    pub users: Option<u64>,
    /// Changes per user in the streamed workload [full: 9, so 1,000,000 events; quick: 4].
    #[arg(long)]
    pub updates: Option<u64>,
    /// Users deleted (after their changes) in the streamed workload.
    #[arg(long, default_value_t = 0)]
    pub deletes: u64,
    /// GetUser queries in the streamed workload [= users].
    #[arg(long)]
    pub get_queries: Option<u64>,
    /// GetUserAtTime queries in the streamed workload [= users].
    #[arg(long)]
    pub at_time_queries: Option<u64>,
    /// `grouped` (commands in long runs: the group-commit case) or `interleaved`.
    #[arg(long, default_value = "grouped")]
    pub order: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Streamed runs per configuration; the median is reported [full: 3, quick: 1].
    #[arg(long)]
    pub runs: Option<u32>,
    /// Durable commands sent one at a time, each after a write + fdatasync sample of each kind
    /// (0: skip) [full: 2000, quick: 300].
    #[arg(long)]
    pub latency_commands: Option<u64>,
    /// Events in the one long stream for GetUserAtTime (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub stream_events: u64,
    /// GetUserAtTime queries on the long stream [full: 1000, quick: 200].
    #[arg(long)]
    pub stream_queries: Option<u64>,
    /// Times the durable store is reopened to answer a first GetUser (0: skip).
    #[arg(long, default_value_t = 3)]
    pub open_runs: u32,
    /// Users for the memory-per-user runs (0: skip) [full: 1000000, quick: 100000].
    #[arg(long)]
    pub mem_users: Option<u64>,
    /// Users (4 events each) for the ListUsersAtTime run, built in process (0: skip)
    /// [full: 1000000, quick: 100000].
    #[arg(long)]
    pub list_at_time_users: Option<u64>,
    /// ListUsersAtTime queries (a page of 100 at a random time) per store in that run.
    #[arg(long, default_value_t = 1000)]
    pub list_at_time_queries: u64,
    /// Where the stores and files go (default: a new directory in the system's temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory at the end.
    #[arg(long)]
    pub keep: bool,
    /// Where `cqrs`, `cqrs-echo` and `cqrs-workload` are (default: next to this program).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` first, even when started by `cargo run`.
    #[arg(long)]
    pub no_build: bool,
    /// Allow a debug build of this program (figures then mean nothing; for the smoke test).
    #[arg(long)]
    pub allow_debug: bool,
}

pub struct Sizes {
    pub users: u64,
    pub updates: u64,
    pub gets: u64,
    pub ats: u64,
    pub runs: u32,
    pub latency: u64,
    pub stream_queries: u64,
    pub mem_users: u64,
    pub list_at_time_users: u64,
}

impl Sizes {
    pub fn from(a: &RunArgs) -> Self {
        let q = a.quick;
        let users = a.users.unwrap_or(if q { 10_000 } else { 100_000 });
        Self {
            users,
            updates: a.updates.unwrap_or(if q { 4 } else { 9 }),
            gets: a.get_queries.unwrap_or(users),
            ats: a.at_time_queries.unwrap_or(users),
            runs: a.runs.unwrap_or(if q { 1 } else { 3 }).max(1),
            latency: a.latency_commands.unwrap_or(if q { 300 } else { 2000 }),
            stream_queries: a.stream_queries.unwrap_or(if q { 200 } else { 1000 }),
            mem_users: a.mem_users.unwrap_or(if q { 100_000 } else { 1_000_000 }),
            list_at_time_users: a
                .list_at_time_users
                .unwrap_or(if q { 100_000 } else { 1_000_000 }),
        }
    }
}
