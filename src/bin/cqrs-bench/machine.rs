//! The machine the benchmark runs on, and the commit it measures: the report's header.

use std::fs;
use std::process::Command;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The header's facts: date, commit, CPU, memory, kernel, load.
pub fn machine() -> Vec<String> {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map_or("?".into(), |k| format!("{:.1} GiB", k as f64 / 1048576.0));
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let git = |a: &[&str]| {
        Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        c if c.is_empty() => std::env::var("CQRS_BENCH_COMMIT")
            .unwrap_or_else(|_| "unknown (not a git checkout; set CQRS_BENCH_COMMIT)".into()),
        c => c,
    };
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    vec![
        format!("date: {now}"),
        format!(
            "commit: {commit}{}",
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
        format!("cpu: {cpu}, {cores} cores; memory: {mem}; kernel: {kernel}"),
        format!(
            "load average at the start (1, 5, 15 min): {} (other work on the machine skews \
             every figure; the ratios to the echo floor and to fdatasync least)",
            load.join(", ")
        ),
    ]
}
