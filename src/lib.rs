//! # cqrs-node
//!
//! A CQRS + event-sourcing node. It reads JSON messages, one per line, on standard input,
//! answers on standard output, and keeps its events durably in an embedded store.
//!
//! ## Layout
//!
//! Read it bottom-up: each layer only knows the ones below it.
//!
//! * [`timestamp`]: event times, RFC 3339 in and out; [`json`]: fast JSON writing helpers.
//! * [`store`]: the event store, the source of truth. The [`store::EventStore`] trait, with
//!   [`store::MemoryStore`] and the durable [`store::SqliteStore`]; [`store::FaultyStore`] wraps
//!   either to inject failures in tests.
//! * [`domain`]: aggregates as pure functions, `decide` and `evolve`; [`domain::user`] is the
//!   `User` aggregate; [`domain::testing`] runs given/when/then tests against any aggregate.
//! * [`engine`]: runs a command against any aggregate: load (snapshot + replay), decide, append
//!   with the optimistic version check, snapshot.
//! * [`projection`]: read models built from the log, kept in the store with a checkpoint;
//!   catch-up, rebuild and verification.
//! * [`protocol`]: the wire types: envelopes, request bodies, reply bodies. No behaviour.
//! * [`node`]: the dispatcher, one handler per message kind, and group commit.
//! * [`transport`]: the line reader (limits, cut-off lines); [`server`] runs a node on
//!   stdin/stdout, with a reader thread, batching and signals.
//! * [`testkit`]: not used by the node: the harness that runs it as a process and the model of
//!   the User domain that its replies are checked against, shared by the tests, `cqrs-bench` and
//!   `cqrs-crashloop`.
//!
//! The binary (`src/main.rs`) is the command line around [`server`]. Tools live in `src/bin/`:
//! `cqrs-workload` (seeded workloads), `cqrs-echo` (the benchmark's echo floor), `cqrs-bench` (the
//! end-to-end benchmark, see docs/benchmarks.md) and `cqrs-crashloop` (SIGKILL loop, see
//! docs/reliability.md).

pub mod domain;
pub mod engine;
pub mod json;
pub mod node;
pub mod projection;
pub mod protocol;
pub mod server;
pub mod store;
pub mod testkit;
pub mod timestamp;
pub mod transport;

/// Turns transparent huge pages off for this process (Linux; elsewhere, nothing).
///
/// mimalloc asks for huge pages on its heap by default. With the node's pattern (many small
/// objects, allocated by the reader thread and freed by the main thread) it kept handing 2 MiB
/// pages back to the kernel and faulting them in again, each one zeroed whole: on the streamed
/// benchmark in memory, about 2,000 huge-page faults (up to 4 GiB zeroed) for a 300 MiB heap,
/// `clear_page_erms` near 10% of the main thread's samples, and wall times that varied by 15%
/// from run to run. Without them: about 68,000 small faults, 10% less RSS, steadier runs. (Redis
/// and MongoDB give the same advice for the same reason.) Called first thing by the binaries;
/// best effort.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc: the node allocates many small, short-lived objects per message (JSON values,
/// events, replies); glibc's allocator spent about half the node's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
