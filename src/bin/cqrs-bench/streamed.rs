//! Run 1, the streamed workload: the workload file through the echo floor, `cqrs --in-memory`
//! and `cqrs` on SQLite, in rounds; stdin is the file, stdout a file, and every reply is then
//! verified (in a child process).

use std::fs;
use std::path::{Path, PathBuf};

use crate::programs::{args, generate, own_rss_kib, progress, run_streamed};
use crate::report::{median, median_f, mib, thousands, Report};
use crate::verify::{verified_events, verify_in_child};
use crate::{Bench, Res};

/// What the later runs need of this one.
pub struct Streamed {
    /// The durable store of the last round.
    pub sqlite_dir: Option<PathBuf>,
    /// The exact reply a GetUser of `probe_id` must get from that store.
    pub final_get: Option<String>,
    /// The events in that store.
    pub events: u64,
    pub probe_id: String,
}

pub fn run(b: &Bench, r: &mut Report) -> Res<Streamed> {
    let Bench { a, s, bins, dir } = *b;
    let flags: Vec<String> = vec![
        "--users".into(),
        s.users.to_string(),
        "--updates".into(),
        s.updates.to_string(),
        "--deletes".into(),
        a.deletes.to_string(),
        "--get-queries".into(),
        s.gets.to_string(),
        "--at-time-queries".into(),
        s.ats.to_string(),
        "--order".into(),
        a.order.clone(),
        "--seed".into(),
        a.seed.to_string(),
    ];
    progress(format!(
        "generating the workload: cqrs-workload {}",
        flags.join(" ")
    ));
    let w = generate(bins, &dir.join("workload.jsonl"), &flags)?;
    r.line(format!(
        "## Streamed workload: `cqrs-workload {}`",
        flags.join(" ")
    ));
    r.line("");
    r.line(format!(
        "{} messages: {} commands, {} queries. Standard input is the workload file, standard \
         output a file; wall time from spawn to exit; peak RSS and CPU time from wait4; \
         median of {} run(s). Every reply verified.",
        thousands(w.messages as f64),
        thousands(w.commands as f64),
        thousands((w.messages - w.commands) as f64),
        s.runs
    ));
    r.line("");

    // Rounds of (echo floor, in memory, SQLite), so that each round's ratios compare runs made
    // close together in time (the machine may be busy with something else now and then).
    let configs: [(&'static str, &Path, bool); 3] = [
        ("echo floor", &bins.echo, true),
        ("cqrs --in-memory", &bins.cqrs, false),
        ("cqrs (SQLite)", &bins.cqrs, false),
    ];
    let mut walls = vec![Vec::new(); 3];
    let mut cpus = vec![Vec::new(); 3];
    let mut ratios = vec![Vec::new(); 3];
    let mut rss = [0u64; 3];
    let mut floor_rss = 0u64;
    let mut sqlite_dir = None;
    let mut final_get = None;
    let mut events = 0;
    let probe_id = format!("user-{}", s.users / 2);
    for run in 0..s.runs {
        for (k, (name, bin, echo)) in configs.iter().enumerate() {
            let run_args = match k {
                0 => Vec::new(),
                1 => args(&["--in-memory"]),
                _ => {
                    let d = dir.join(format!("stream-sqlite-{run}"));
                    let _ = fs::remove_dir_all(&d);
                    if let Some(old) = sqlite_dir.replace(d.clone()) {
                        let _ = fs::remove_dir_all(old);
                    }
                    vec!["--data-dir".to_string(), d.display().to_string()]
                }
            };
            progress(format!("streaming through {name} (round {})", run + 1));
            let out = dir.join("replies.jsonl");
            floor_rss = floor_rss.max(own_rss_kib());
            let exit = run_streamed(bin, &run_args, &w.path, &out)?;
            progress(format!(
                "  {:.2} s; verifying the replies",
                exit.wall.as_secs_f64()
            ));
            let get = (k == 2).then_some(probe_id.as_str());
            let text = verify_in_child(&w.path, &out, *echo, get)
                .map_err(|e| format!("{name}: wrong replies: {e}"))?;
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix("final-get: ")) {
                final_get = Some(line.to_string());
            }
            events = verified_events(&text).unwrap_or(events);
            walls[k].push(exit.wall);
            cpus[k].push(exit.cpu);
            rss[k] = rss[k].max(exit.max_rss_kib);
            ratios[k].push(exit.wall.as_secs_f64() / walls[0][run as usize].as_secs_f64());
        }
    }
    let _ = fs::remove_file(dir.join("replies.jsonl"));
    r.line("| program | wall time | messages/s | commands/s | ns/message (wall) | CPU ns/message | peak RSS | time / echo floor |");
    r.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ratio = [0.0; 3];
    for (k, (name, _, _)) in configs.iter().enumerate() {
        let secs = median(walls[k].clone()).as_secs_f64();
        ratio[k] = median_f(ratios[k].clone());
        r.line(format!(
            "| {name} | {secs:.3} s | {} | {} | {:.0} | {:.0} | {} | {:.2} |",
            thousands(w.messages as f64 / secs),
            thousands(w.commands as f64 / secs),
            secs * 1e9 / w.messages as f64,
            median(cpus[k].clone()).as_secs_f64() * 1e9 / w.messages as f64,
            mib(rss[k]),
            ratio[k]
        ));
    }
    r.line("");
    if s.runs > 1 {
        let spread = |k: usize| {
            let v: Vec<String> = walls[k]
                .iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect();
            v.join(" / ")
        };
        r.line(format!(
            "Wall times of each round (s): echo {}; in memory {}; SQLite {}. The ratio is the \
             median of each round's ratio.",
            spread(0),
            spread(1),
            spread(2)
        ));
        r.line("");
    }
    r.line(format!(
        "Peak RSS is wait4's ru_maxrss, which cannot be lower than this benchmark's own RSS when \
         it forks ({}).",
        mib(floor_rss)
    ));
    r.line("");
    r.target(
        "in-memory streamed: node time <= 2x the echo floor",
        format!("{:.2}x", ratio[1]),
        ratio[1] <= 2.0,
    );
    let durable_cps = w.commands as f64 / median(walls[2].clone()).as_secs_f64();
    r.target(
        "SQLite streamed: >= 100,000 commands/s",
        format!("{} commands/s", thousands(durable_cps)),
        durable_cps >= 100_000.0,
    );
    Ok(Streamed {
        sqlite_dir,
        final_get,
        events,
        probe_id,
    })
}
