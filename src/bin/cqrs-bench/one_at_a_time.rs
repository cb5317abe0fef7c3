//! Run 2: fdatasync on this disk, and one-at-a-time durable commands (send one, wait for its
//! reply), interleaved so that both see the same disk (others may be using it too); the same
//! commands through the echo floor and the durable floor (`cqrs-echo --fsync-file`).

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cqrs_node::testkit::model::Model;
use serde_json::{json, Value};

use crate::programs::{args, finish, generate, progress, read_lines, start, Bins};
use crate::report::{mean, ms, pct, thousands, Report};
use crate::verify::one_at_a_time;
use crate::{Bench, Res};

pub fn run(b: &Bench, r: &mut Report) -> Res<()> {
    let Bench { a, s, bins, dir } = *b;
    if s.latency == 0 {
        return Ok(());
    }
    // Rounds, as for the streamed runs (each on a fresh store, the probes in turn with its
    // commands); the round with the median ratio is shown, the others' ratios beside it.
    let mut rounds = Vec::new();
    for _ in 0..s.runs {
        let lat = latency(bins, dir, s.latency, a.seed)?;
        rounds.push((lat.ratio(), lat));
    }
    rounds.sort_by(|x, y| x.0.total_cmp(&y.0));
    let ratios: Vec<String> = rounds
        .iter()
        .map(|(r, _)| format!("{:.0}%", r * 100.0))
        .collect();
    let lat = rounds.swap_remove(rounds.len() / 2).1;
    r.line(format!(
        "## fdatasync on this disk ({} samples of each: write 4 KiB + File::sync_data, in {})",
        s.latency,
        dir.display()
    ));
    r.line("");
    r.line("Taken in turn with the one-at-a-time commands below (probe, probe, command, ...), in the round shown there.");
    r.line("");
    r.line("| write | p50 | p99 | mean |");
    r.line("| --- | ---: | ---: | ---: |");
    for (name, v) in [
        ("overwrite in place + fdatasync", &lat.overwrite),
        ("append (the file grows) + fdatasync", &lat.append),
        ("overwrite in place + fsync (sync_all)", &lat.fsync),
    ] {
        r.line(format!(
            "| {name} | {} | {} | {} |",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99)),
            ms(mean(v))
        ));
    }
    r.line("");
    // Throughput against throughput: the mean command time against the mean fdatasync
    // time (both sampled in turn, so they see the same disk), the faster of the two kinds
    // (the stricter target).
    let fsync_time = mean(&lat.overwrite).min(mean(&lat.append));
    r.line(format!(
        "Reference fdatasync time: the faster fdatasync mean, {} (so 1 / fdatasync = {} /s).",
        ms(fsync_time),
        thousands(1.0 / fsync_time.as_secs_f64())
    ));
    r.line("");
    let sorted = &lat.commands;
    let n = sorted.len();
    let total: Duration = sorted.iter().sum();
    let rate = n as f64 / total.as_secs_f64();
    let limit = 1.0 / fsync_time.as_secs_f64();
    r.line(format!(
        "## One-at-a-time durable commands ({n} commands, SQLite, send one, wait for its reply)"
    ));
    r.line("");
    r.line(format!(
        "{} round(s) of {n} commands, each on a fresh store opened by an untimed `init`; the \
         round with the median ratio is shown. Ratios of the rounds: {}.",
        ratios.len(),
        ratios.join(", ")
    ));
    r.line("");
    r.line("| p50 | p90 | p99 | max | mean | commands/s | 1 / fdatasync | ratio |");
    r.line("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    r.line(format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
        ms(pct(sorted, 0.5)),
        ms(pct(sorted, 0.9)),
        ms(pct(sorted, 0.99)),
        ms(pct(sorted, 1.0)),
        ms(total / n as u32),
        thousands(rate),
        thousands(limit),
        rate / limit * 100.0
    ));
    r.line("");
    let fsync_rate = 1.0 / mean(&lat.fsync).as_secs_f64();
    r.line(format!(
        "The same {n} commands through the echo floor, one at a time (pipes, no work): p50 \
         {}, p99 {}. Against 1 / (mean fsync) = {} /s, the durable \
         commands reach {:.0}%.",
        ms(pct(&lat.echo, 0.5)),
        ms(pct(&lat.echo, 0.99)),
        thousands(fsync_rate),
        rate / fsync_rate * 100.0
    ));
    r.line("");
    let floor = &lat.durable_echo;
    let floor_rate = floor.len() as f64 / floor.iter().sum::<Duration>().as_secs_f64();
    r.line(format!(
        "The durable floor (`cqrs-echo --fsync-file`: the same pipeline, and one write of \
         4 KiB + fdatasync per batch, no other work), taken in turn with the commands: p50 \
         {}, p99 {}, mean {} ({} /s, {:.0}% of 1 / fdatasync): the best a durable command \
         can do through these pipes on this disk. The durable commands reach {:.0}% of it.",
        ms(pct(floor, 0.5)),
        ms(pct(floor, 0.99)),
        ms(mean(floor)),
        thousands(floor_rate),
        floor_rate / limit * 100.0,
        rate / floor_rate * 100.0
    ));
    r.line("");
    r.target(
        "one-at-a-time durable commands: >= 80% of 1 / fdatasync",
        format!(
            "{:.0}% ({} commands/s vs {} fdatasync/s; {:.0}% of 1 / fsync)",
            rate / limit * 100.0,
            thousands(rate),
            thousands(limit),
            rate / fsync_rate * 100.0
        ),
        rate >= 0.8 * limit,
    );
    Ok(())
}

impl Latency {
    /// The target's ratio: commands per second against 1 / fdatasync (the faster kind).
    fn ratio(&self) -> f64 {
        let fsync_time = mean(&self.overwrite).min(mean(&self.append));
        fsync_time.as_secs_f64() / mean(&self.commands).as_secs_f64()
    }
}

struct Latency {
    /// Round trips, sorted.
    commands: Vec<Duration>,
    /// write 4 KiB at offset 0 + fdatasync (the file's size does not change), sorted.
    overwrite: Vec<Duration>,
    /// write 4 KiB at the end + fdatasync (the size changes, so metadata is synced too), sorted.
    append: Vec<Duration>,
    /// write 4 KiB at offset 0 + fsync (`File::sync_all`: what SQLite's bundled build calls at
    /// each commit, metadata included), sorted.
    fsync: Vec<Duration>,
    /// The same commands' round trips through the echo floor (pipes and thread hand-offs, no
    /// work), sorted.
    echo: Vec<Duration>,
    /// The same commands' round trips through the durable floor (`cqrs-echo --fsync-file`: the
    /// pipeline plus one write + fdatasync per batch, no other work), taken in turn with the
    /// commands, sorted.
    durable_echo: Vec<Duration>,
}

/// One-at-a-time durable commands (creates, then renames), each sent after the last reply, in
/// turn with write + fdatasync samples in the same directory.
fn latency(bins: &Bins, dir: &Path, n: u64, seed: u64) -> Res<Latency> {
    let users = n.div_ceil(2);
    let flags = args(&[
        "--users",
        &users.to_string(),
        "--updates",
        "1",
        "--get-queries",
        "0",
        "--at-time-queries",
        "0",
        "--seed",
        &seed.to_string(),
    ]);
    let w = generate(bins, &dir.join("latency.jsonl"), &flags)?;
    let lines: Vec<String> = read_lines(&w.path)?.into_iter().take(n as usize).collect();
    let d = dir.join("latency-sqlite");
    let _ = fs::remove_dir_all(&d);
    progress(format!(
        "latency: {n} durable commands, one at a time, with fdatasync samples"
    ));
    let block = vec![0xA5u8; 4096];
    let probe = |name: &str| -> Res<File> {
        let path = dir.join(name);
        let f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all_at(&block, 0).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        Ok(f)
    };
    let (fixed, growing, full) = (
        probe("fsync-overwrite")?,
        probe("fsync-append")?,
        probe("fsync-full")?,
    );
    let sample = |f: &File, at: u64, all: bool| -> Res<Duration> {
        let t = Instant::now();
        f.write_all_at(&block, at).map_err(|e| e.to_string())?;
        if all { f.sync_all() } else { f.sync_data() }.map_err(|e| e.to_string())?;
        Ok(t.elapsed())
    };
    let mut session = start(&bins.cqrs, &["--data-dir".into(), d.display().to_string()])?;
    let floor_file = dir.join("durable-floor");
    let mut floor = start(
        &bins.echo,
        &["--fsync-file".into(), floor_file.display().to_string()],
    )?;
    let mut model = Model::default();
    // The handshake first, untimed: the node opens its store when it learns its id, and that
    // open is measured on its own (part 4, "Opening the durable store"), not as part of the
    // first command's round trip.
    let init = init_line(lines.first().ok_or("no command to send")?)?;
    one_at_a_time(&mut session, std::slice::from_ref(&init), &mut model)?;
    floor.send(&init)?;
    floor.recv()?;
    let mut out = Latency {
        commands: Vec::with_capacity(lines.len()),
        overwrite: Vec::with_capacity(lines.len()),
        append: Vec::with_capacity(lines.len()),
        fsync: Vec::with_capacity(lines.len()),
        echo: Vec::with_capacity(lines.len()),
        durable_echo: Vec::with_capacity(lines.len()),
    };
    for (i, line) in lines.iter().enumerate() {
        out.overwrite.push(sample(&fixed, 0, false)?);
        out.append
            .push(sample(&growing, 4096 * (i as u64 + 1), false)?);
        out.fsync.push(sample(&full, 0, true)?);
        let t = one_at_a_time(&mut session, std::slice::from_ref(line), &mut model)?;
        out.commands.extend(t);
        let t = Instant::now();
        floor.send(line)?;
        floor.recv()?;
        out.durable_echo.push(t.elapsed());
    }
    finish(session)?;
    finish(floor)?;
    let _ = fs::remove_file(&floor_file);
    drop((fixed, growing, full));
    let mut echo = start(&bins.echo, &[])?;
    for line in &lines {
        let t = Instant::now();
        echo.send(line)?;
        echo.recv()?;
        out.echo.push(t.elapsed());
    }
    finish(echo)?;
    for name in ["fsync-overwrite", "fsync-append", "fsync-full"] {
        let _ = fs::remove_file(dir.join(name));
    }
    let _ = fs::remove_dir_all(&d);
    out.commands.sort();
    out.overwrite.sort();
    out.append.sort();
    out.fsync.sort();
    out.echo.sort();
    out.durable_echo.sort();
    Ok(out)
}

/// An `init` from the client of `line` to its node, naming the node as `line` addresses it.
fn init_line(line: &str) -> Res<String> {
    let msg: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |k: &str| msg.get(k).and_then(Value::as_str);
    let src = field("src").ok_or("src must be a string")?;
    let dest = field("dest").ok_or("dest must be a string")?;
    Ok(json!({
        "src": src,
        "dest": dest,
        "body": {"type": "init", "msg_id": 0, "node_id": dest, "node_ids": [dest]},
    })
    .to_string())
}
