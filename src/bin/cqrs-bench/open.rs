//! Run 4: opening the durable store of run 1 and answering a first GetUser, from spawn to
//! reply.

use std::fs;
use std::time::Duration;

use cqrs_node::testkit::model::cut;

use crate::programs::{finish, progress, start};
use crate::report::{ms, thousands, Report};
use crate::streamed::Streamed;
use crate::verify::get_user_line;
use crate::{Bench, Res};

pub fn run(b: &Bench, r: &mut Report, streamed: Streamed) -> Res<()> {
    let Bench { a, s, bins, .. } = *b;
    let Streamed {
        sqlite_dir,
        final_get,
        events,
        probe_id,
    } = streamed;
    let (Some(d), Some(expected), true) = (&sqlite_dir, final_get, a.open_runs > 0) else {
        return Ok(());
    };
    let line = get_user_line(&probe_id);
    let mut times = Vec::new();
    for _ in 0..a.open_runs {
        progress("reopening the durable store for a first GetUser");
        let mut session = start(&bins.cqrs, &["--data-dir".into(), d.display().to_string()])?;
        session.send(&line)?;
        let got = session.recv()?;
        times.push(session.started().elapsed());
        if got != expected {
            return Err(format!(
                "first GetUser after opening: expected {expected}, got {}",
                cut(&got)
            ));
        }
        finish(session)?;
    }
    let size: u64 = fs::read_dir(d)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    times.sort();
    r.line(format!(
        "## Opening the durable store ({} events, {} users, {:.0} MiB on disk) and answering the first GetUser",
        thousands(events as f64),
        thousands(s.users as f64),
        size as f64 / 1048576.0
    ));
    r.line("");
    r.line(format!(
        "From spawn to the reply, {} runs (page cache warm): min {}, median {}, max {}.",
        times.len(),
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    ));
    r.line("");
    let med = times[times.len() / 2];
    r.target(
        format!(
            "open a store with {} events + first GetUser: <= 1 s{}",
            thousands(events as f64),
            if events < 1_000_000 {
                " (smaller than the target's 1,000,000 events)"
            } else {
                ""
            }
        ),
        ms(med),
        med <= Duration::from_secs(1),
    );
    Ok(())
}
