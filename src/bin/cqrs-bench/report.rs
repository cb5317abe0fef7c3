//! The report: printed line by line as the runs go (Markdown), the targets gathered for the
//! table at the end; and the formatting of the figures.

use std::time::Duration;

/// The report being printed.
#[derive(Default)]
pub struct Report {
    lines: Vec<String>,
    targets: Vec<(String, String, bool)>,
}

impl Report {
    /// Prints a line (and keeps it).
    pub fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.lines.push(s);
    }

    /// A target of the issue: what it asks, what was measured, whether it is met.
    pub fn target(&mut self, what: impl Into<String>, measured: impl Into<String>, met: bool) {
        self.targets.push((what.into(), measured.into(), met));
    }

    /// The table of the targets, and the last line.
    pub fn finish(&mut self) {
        self.line("## Targets (issue 3)");
        self.line("");
        self.line("| target | measured | met |");
        self.line("| --- | --- | --- |");
        for (what, measured, met) in std::mem::take(&mut self.targets) {
            self.line(format!(
                "| {what} | {measured} | {} |",
                if met { "yes" } else { "**no**" }
            ));
        }
        self.line("");
        self.line("verified: every reply of every run matched the workload.");
    }
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len() as u32
}
