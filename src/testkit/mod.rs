//! The test kit: what the end-to-end tests (`tests/`), the benchmark (`cqrs-bench`) and the crash
//! loop (`cqrs-crashloop`) share to drive a node from the outside and to check what it answers.
//! The node itself never uses it.
//!
//! * [`process`]: the one harness that spawns a `cqrs` binary (any path, any arguments) with
//!   piped stdin and stdout and talks to it: lines sent, lines received with a deadline, a stream
//!   of lines written by a thread while the replies are read, timed round trips, the end of the
//!   process (exit status, stderr, peak RSS and CPU time from `wait4`), SIGKILL and signals.
//!
//! It reports problems as `Result`s: the benchmark and the crash loop report them and exit 1;
//! the tests unwrap them.

pub mod process;
