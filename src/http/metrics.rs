//! `GET /metrics`: the Prometheus text format (version 0.0.4), written by hand from counters
//! the front end and the writer's [`Notify`](super::Notify) wrapper keep in atomics (a
//! handful of series; no registry or exporter crate needed).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A histogram with fixed upper bounds (`le`), cumulative when written.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of the observed values, in millionths of the unit.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Seconds: 100 µs to 10 s.
pub const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Requests per batch.
pub const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64())
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// What the front end and the writer count.
pub struct Metrics {
    /// Commands answered over HTTP, by type (a registered one, else `unknown`) and outcome
    /// (`ok`, or the failure's code).
    commands: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// From a command's request read to its reply (HTTP).
    pub command_seconds: Histogram,
    /// A batch with commands: handling and commit, on the writer thread.
    pub commit_seconds: Histogram,
    /// Requests per batch the writer handled.
    pub batch_size: Histogram,
    pub events_appended: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            commands: Mutex::default(),
            command_seconds: Histogram::new(SECONDS),
            commit_seconds: Histogram::new(SECONDS),
            batch_size: Histogram::new(SIZES),
            events_appended: AtomicU64::new(0),
        }
    }
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn command(&self, kind: &str, outcome: &'static str) {
        let mut c = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((kind.to_string(), outcome)).or_default() += 1;
    }

    /// The text exposition; `head`: the store's head position (if it answered), `queued`:
    /// requests waiting for the writer, `clients`: live-feed clients.
    pub fn render(&self, head: Option<u64>, queued: usize, clients: usize) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP cqrs_commands_total Commands answered over HTTP, by type and outcome.\n\
             # TYPE cqrs_commands_total counter\n",
        );
        for ((kind, outcome), n) in self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "cqrs_commands_total{{type=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(kind)
            );
        }
        self.command_seconds.write(
            &mut out,
            "cqrs_command_duration_seconds",
            "From a command's request to its reply (after the commit).",
        );
        self.commit_seconds.write(
            &mut out,
            "cqrs_commit_duration_seconds",
            "A batch with commands on the writer thread: running it and committing it.",
        );
        self.batch_size.write(
            &mut out,
            "cqrs_batch_size",
            "Requests the writer handled together.",
        );
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "cqrs_events_appended_total",
            "counter",
            "Events appended since the node started.",
            self.events_appended.load(Ordering::Relaxed),
        );
        if let Some(head) = head {
            gauge(
                &mut out,
                "cqrs_store_head_position",
                "gauge",
                "The store's newest global position.",
                head,
            );
        }
        gauge(
            &mut out,
            "cqrs_requests_queued",
            "gauge",
            "Requests submitted and not answered yet.",
            queued as u64,
        );
        gauge(
            &mut out,
            "cqrs_live_feed_clients",
            "gauge",
            "Clients of the live feed.",
            clients as u64,
        );
        out
    }
}
