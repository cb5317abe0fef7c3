//! Run 5: memory per live user: peak RSS over the users created, in memory and on SQLite.

use std::fs;

use crate::programs::{args, generate, progress, run_streamed};
use crate::report::{mib, thousands, Report};
use crate::verify::verify_in_child;
use crate::{Bench, Res};

pub fn run(b: &Bench, r: &mut Report) -> Res<()> {
    let Bench { a, s, bins, dir } = *b;
    if s.mem_users == 0 {
        return Ok(());
    }
    let flags = vec![
        "--users".to_string(),
        s.mem_users.to_string(),
        "--updates".into(),
        "0".into(),
        "--get-queries".into(),
        "1000".into(),
        "--at-time-queries".into(),
        "0".into(),
        "--seed".into(),
        a.seed.to_string(),
    ];
    progress(format!("memory: cqrs-workload {}", flags.join(" ")));
    let w = generate(bins, &dir.join("users.jsonl"), &flags)?;
    r.line(format!(
        "## Memory per live user: {} users created (`cqrs-workload {}`)",
        thousands(s.mem_users as f64),
        flags.join(" ")
    ));
    r.line("");
    r.line("| program | wall time | commands/s | peak RSS | RSS per user |");
    r.line("| --- | ---: | ---: | ---: | ---: |");
    let d = dir.join("mem-sqlite");
    let _ = fs::remove_dir_all(&d);
    for (name, run_args) in [
        ("cqrs --in-memory", args(&["--in-memory"])),
        (
            "cqrs (SQLite)",
            vec!["--data-dir".into(), d.display().to_string()],
        ),
    ] {
        progress(format!(
            "memory: streaming {} users through {name}",
            s.mem_users
        ));
        let out = dir.join("replies.jsonl");
        let exit = run_streamed(&bins.cqrs, &run_args, &w.path, &out)?;
        verify_in_child(&w.path, &out, false, None)
            .map_err(|e| format!("{name}: wrong replies: {e}"))?;
        let per_user = exit.max_rss_kib as f64 * 1024.0 / s.mem_users as f64;
        r.line(format!(
            "| {name} | {:.2} s | {} | {} | {:.0} bytes |",
            exit.wall.as_secs_f64(),
            thousands(w.commands as f64 / exit.wall.as_secs_f64()),
            mib(exit.max_rss_kib),
            per_user
        ));
        r.target(
            format!(
                "{name}: <= 1 KB of RSS per live user at {} users{}",
                thousands(s.mem_users as f64),
                if s.mem_users < 1_000_000 {
                    " (fewer than the target's 1,000,000: fixed costs weigh more)"
                } else {
                    ""
                }
            ),
            format!("{per_user:.0} bytes"),
            per_user <= 1024.0,
        );
    }
    let _ = fs::remove_dir_all(&d);
    r.line("");
    Ok(())
}
