//! The test kit: what the end-to-end tests (`tests/`), the benchmark (`cqrs-bench`) and the crash
//! loop (`cqrs-crashloop`) share to drive a node from the outside and to check what it answers.
//! The node itself never uses it.
//!
//! * [`process`]: the one harness that spawns a `cqrs` binary (any path, any arguments) with
//!   piped stdin and stdout and talks to it: lines sent, lines received with a deadline, a stream
//!   of lines written by a thread while the replies are read, timed round trips, the end of the
//!   process (exit status, stderr, peak RSS and CPU time from `wait4`), SIGKILL and signals.
//! * [`model`]: the one model of the User domain, written from the contract
//!   (`docs/protocol.md`): the reply every command and query must get, and the log of events the
//!   store must hold. It shares no code with the node (`domain`, `engine`, `projection`), so that
//!   agreeing with it means something.
//!
//! * [`postgres`]: the PostgreSQL server the tests use (`CQRS_POSTGRES_URL`), a schema per
//!   test, and what a test does when there is none (skipped; failed under `CI=true`).
//!
//! Both report problems as `Result`s: the benchmark and the crash loop report them and exit 1;
//! the tests unwrap them.

pub mod model;
pub mod postgres;
pub mod process;
