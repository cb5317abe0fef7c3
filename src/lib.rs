//! # cqrs-node
//!
//! A CQRS + event-sourcing node. It reads JSON messages, one per line, on standard input,
//! answers on standard output, and keeps its events durably in an embedded store.
//!
//! ## Layout
//!
//! Read it bottom-up: each layer only knows the ones below it; arrows point one way.
//!
//! * [`timestamp`]: event times, RFC 3339 in and out; [`json`]: fast JSON writing helpers.
//! * [`store`]: the event store, the source of truth. The [`store::EventStore`] trait, with
//!   [`store::MemoryStore`], the durable [`store::SqliteStore`] and [`store::PostgresStore`] (one
//!   database that many nodes share); [`store::FaultyStore`] wraps
//!   either to inject failures in tests; [`store::testing`] is the suite every store passes;
//!   [`store::upcast`]: every event carries its data's schema, and [`store::Upcasted`] reads
//!   events in their type's current schema through the aggregates' upcasters; [`store::seal`]:
//!   [`store::Sealed`] keeps personal data only encrypted, under a key per stream that the
//!   forgetting event destroys (`ForgetUser`, docs/forgetting.md).
//! * [`domain`]: aggregates as pure functions, `decide` and `evolve`; [`domain::user`] is the
//!   `User` aggregate; [`domain::testing`] runs given/when/then tests against any aggregate.
//! * [`engine`]: runs a command against any aggregate: load (snapshot + replay), decide, append
//!   with the version it decided on, snapshot.
//! * [`projection`]: read models built from the log, kept in the store with a checkpoint;
//!   catch-up, rebuild and verification.
//! * [`plugin`]: aggregates as plug-ins of a node: each declares its command and query types,
//!   how their JSON is read, how queries are answered, and its projections; a
//!   [`plugin::Registry`] holds them. [`plugin::user`] is the `User` plug-in.
//! * [`node`]: the transport-free core. [`node::Node`] takes typed requests and answers typed
//!   replies, one store transaction per batch (group commit); [`node::writer`] runs it on one
//!   writer thread behind cloneable handles that any number of front ends submit to.
//! * [`protocol`]: the wire of the JSON-lines protocol: envelopes, request bodies, reply bodies.
//! * [`export`]: `cqrs export` / `cqrs import`: the log and the command ids as JSON lines, and
//!   their checked load into an empty store (docs/export.md).
//! * [`stdio`]: the stdin/stdout front end: a reader thread (line framing, envelopes) that
//!   submits to the writer, and replies written as envelopes.
//! * [`http`]: the HTTP front end (`--http`, axum on tokio): handlers read requests into the
//!   node's typed requests, a submitter thread groups every connection's into one submission to
//!   the same writer; problem+json errors, the bearer token and Host checks, the live feed
//!   (SSE), metrics and the OpenAPI document.
//! * [`testkit`]: not used by the node: the harness that runs it as a process and the model of
//!   the User domain that its replies are checked against, shared by the tests, `cqrs-bench` and
//!   `cqrs-crashloop`.
//!
//! The binary (`src/main.rs`) is the command line: it builds the registry and the store, opens
//! the node and wires it to the stdio or HTTP front end (or both). Tools live in `src/bin/`: `cqrs-workload`
//! (seeded workloads), `cqrs-echo` (the benchmark's echo floor), `cqrs-bench` (the end-to-end
//! benchmark, see docs/benchmarks.md) and `cqrs-crashloop` (SIGKILL loop, see
//! docs/reliability.md). `examples/bank` is a second aggregate wired into a node of its own.

pub mod domain;
pub mod engine;
pub mod export;
pub mod http;
pub mod json;
pub mod node;
pub mod plugin;
pub mod projection;
pub mod protocol;
pub mod stdio;
pub mod store;
pub mod testkit;
pub mod timestamp;

/// The plug-ins the `cqrs` binary serves: the `User` aggregate.
pub fn registry() -> plugin::Registry {
    plugin::Registry::new().with(plugin::user::UserPlugin)
}

/// Turns transparent huge pages off for this process (Linux; elsewhere, nothing).
///
/// mimalloc asks for huge pages on its heap by default. With the node's pattern (many small
/// objects, allocated by the reader thread and freed by the writer thread) it kept handing 2 MiB
/// pages back to the kernel and faulting them in again, each one zeroed whole: on the streamed
/// benchmark in memory, about 2,000 huge-page faults (up to 4 GiB zeroed) for a 300 MiB heap,
/// `clear_page_erms` near 10% of the handling thread's samples, and wall times that varied by 15%
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
