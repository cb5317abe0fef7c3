//! Run 3: GetUserAtTime on one long stream (SQLite), with snapshots every 100 events and
//! without: the queries streamed (time per query) and one at a time (round trips).

use std::fs;
use std::path::Path;
use std::time::Duration;

use cqrs_node::testkit::model::Model;

use crate::programs::{args, finish, generate, progress, read_lines, start, Bins};
use crate::report::{pct, thousands, us, Report};
use crate::verify::{one_at_a_time, stream};
use crate::{Bench, Res};

pub fn run(b: &Bench, r: &mut Report) -> Res<()> {
    let Bench { a, s, bins, dir } = *b;
    if a.stream_events == 0 || s.stream_queries == 0 {
        return Ok(());
    }
    r.line(format!(
        "## GetUserAtTime on one {}-event stream ({} queries at random times inside it, SQLite)",
        thousands(a.stream_events as f64),
        s.stream_queries
    ));
    r.line("");
    r.line("| snapshots | streamed, per query | one at a time p50 | p99 | loading the stream (streamed commands/s) |");
    r.line("| --- | ---: | ---: | ---: | ---: |");
    let mut with_snapshots = None;
    for (label, every) in [("every 100 events (default)", "100"), ("none", "0")] {
        let t = long_stream(bins, dir, a.stream_events, s.stream_queries, a.seed, every)?;
        r.line(format!(
            "| {label} | {} | {} | {} | {} |",
            us(t.streamed),
            us(pct(&t.round_trips, 0.5)),
            us(pct(&t.round_trips, 0.99)),
            thousands(a.stream_events as f64 / t.load.as_secs_f64())
        ));
        with_snapshots.get_or_insert(t);
    }
    r.line("");
    let t = with_snapshots.expect("ran");
    let p50 = pct(&t.round_trips, 0.5);
    r.target(
        format!(
            "GetUserAtTime on a {}-event stream: <= 1 ms",
            thousands(a.stream_events as f64)
        ),
        format!(
            "{} per query streamed, {} round trip p50",
            us(t.streamed),
            us(p50)
        ),
        t.streamed <= Duration::from_millis(1) && p50 <= Duration::from_millis(1),
    );
    Ok(())
}

struct LongStream {
    load: Duration,
    streamed: Duration,
    round_trips: Vec<Duration>,
}

/// One user with `events` events, then `queries` GetUserAtTime queries at times inside its
/// stream: all at once (time per query), then one at a time (round trips).
fn long_stream(
    bins: &Bins,
    dir: &Path,
    events: u64,
    queries: u64,
    seed: u64,
    snapshot_every: &str,
) -> Res<LongStream> {
    let flags = args(&[
        "--users",
        "1",
        "--updates",
        &(events - 1).to_string(),
        "--get-queries",
        "0",
        "--at-time-queries",
        &queries.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    let w = generate(bins, &dir.join("stream.jsonl"), &flags)?;
    let lines = read_lines(&w.path)?;
    let (commands, queries) = lines.split_at(events as usize);
    let d = dir.join("stream-sqlite");
    let _ = fs::remove_dir_all(&d);
    progress(format!(
        "GetUserAtTime: {events}-event stream, snapshots every {snapshot_every} (0: none)"
    ));
    let mut session = start(
        &bins.cqrs,
        &[
            "--data-dir".into(),
            d.display().to_string(),
            "--snapshot-every".into(),
            snapshot_every.into(),
        ],
    )?;
    let mut model = Model::default();
    let load = stream(&mut session, commands, &mut model)?;
    let streamed = stream(&mut session, queries, &mut model)? / queries.len() as u32;
    let mut round_trips = one_at_a_time(&mut session, queries, &mut model)?;
    round_trips.sort();
    finish(session)?;
    let _ = fs::remove_dir_all(&d);
    Ok(LongStream {
        load,
        streamed,
        round_trips,
    })
}
