//! PostgreSQL for the tests: the server they run against comes from `CQRS_POSTGRES_URL` (for a
//! throwaway one: `scripts/pg-test-cluster start DIR`, which `.ci/run` does). Each test works
//! in a schema of its own ([`Schema`]: a unique name, dropped at the end), so tests run in
//! parallel on one database.
//!
//! Without `CQRS_POSTGRES_URL` a test that needs PostgreSQL says on stderr that it was skipped
//! and passes, except under `CI=true`, where it fails: CI must run them.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server's URL, or `None` (after saying so) when the test `test` is to be skipped.
///
/// # Panics
/// Without `CQRS_POSTGRES_URL` under `CI=true`.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("CQRS_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{test}: CQRS_POSTGRES_URL is not set, and under CI=true the PostgreSQL \
                     tests must run (scripts/pg-test-cluster start DIR prints a URL)"
                );
            }
            eprintln!("{test}: skipped: CQRS_POSTGRES_URL is not set (needs PostgreSQL)");
            None
        }
    }
}

/// A schema name no other test uses: `prefix`, the process id, a counter and the time.
pub fn unique_schema(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() % 1_000_000_000);
    format!("t_{prefix}_{}_{n}_{t}", std::process::id())
}

/// A test's schema: a unique name, dropped (with everything in it) when this is dropped.
pub struct Schema {
    pub url: String,
    pub name: String,
}

impl Schema {
    /// A new schema name for `test` on the server of `CQRS_POSTGRES_URL`, or `None` (skipped).
    pub fn new(test: &str) -> Option<Self> {
        let url = url(test)?;
        let prefix: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect();
        Some(Self {
            url,
            name: unique_schema(&prefix),
        })
    }

    /// Runs SQL statements (simple query protocol) on the server, in this schema.
    ///
    /// # Errors
    /// What the server said.
    pub fn sql(&self, statements: &str) -> Result<(), postgres::Error> {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls)?;
        client.batch_execute(&format!(
            "SET search_path TO \"{}\"; {statements}",
            self.name
        ))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ =
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}
