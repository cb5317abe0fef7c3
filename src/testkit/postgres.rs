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

/// A PostgreSQL cluster of a test's own (`scripts/pg-test-cluster` in a temporary directory),
/// for the tests that stop and start the server; stopped and removed when dropped.
pub struct Cluster {
    dir: std::path::PathBuf,
    /// The cluster's URL (a Unix socket in its directory).
    pub url: String,
}

impl Cluster {
    /// Creates and starts a cluster, or `None` (after saying so) where the PostgreSQL tests do
    /// not run (see [`url`]: it needs the binaries, not that server).
    ///
    /// # Panics
    /// If the cluster does not start.
    pub fn start(test: &str) -> Option<Self> {
        url(test)?;
        let dir = std::env::temp_dir().join(unique_schema("cqrs_pg_own"));
        let mut cluster = Self {
            dir,
            url: String::new(),
        };
        cluster.url = cluster.run("start");
        Some(cluster)
    }

    /// Stops the server at once, as a crash would (no shutdown checkpoint); [`Cluster::resume`]
    /// brings the same cluster back.
    pub fn halt(&self) {
        self.run("halt");
    }

    /// Starts the halted server again, on the same URL.
    pub fn resume(&self) {
        self.run("start");
    }

    fn run(&self, action: &str) -> String {
        let out = std::process::Command::new(cluster_script())
            .arg(action)
            .arg(&self.dir)
            .output()
            .expect("scripts/pg-test-cluster runs");
        assert!(
            out.status.success(),
            "pg-test-cluster {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(cluster_script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// `scripts/pg-test-cluster` of this repository.
fn cluster_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-test-cluster")
}
