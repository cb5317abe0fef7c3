//! Verification: every reply checked against the test kit's model of the User domain
//! ([`cqrs_node::testkit::model`], which replays the workload's commands without the node's
//! code). `cqrs-bench verify` checks a file of replies; the runs check the replies of a process
//! as they come ([`stream`], [`one_at_a_time`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cqrs_node::testkit::model::{cut, Model};
use cqrs_node::testkit::process::Process;
use serde_json::json;

use crate::cli::VerifyArgs;
use crate::Res;

/// `cqrs-bench verify`: checks a file of replies against a workload file, and prints the
/// counts (and with `--final-get`, the reply a last GetUser must get).
pub fn verify(v: &VerifyArgs) -> Res<()> {
    let mut s = verify_files(&v.workload, &v.replies, v.echo)?;
    println!(
        "verified: {} replies ({} commands, {} queries, {} events) match the workload",
        s.replies,
        s.commands,
        s.queries,
        s.model.log().len()
    );
    if let Some(id) = &v.final_get {
        let line = get_user_line(id);
        let expected = s.model.expect(&line)?.ok_or("has a msg_id")?;
        println!(
            "final-get: {}",
            expected.line().ok_or("a GetUser succeeds")?
        );
    }
    Ok(())
}

pub struct Verified {
    pub commands: u64,
    pub queries: u64,
    pub replies: u64,
    pub model: Model,
}

/// Checks a whole reply file against a workload file (replies in request order).
pub fn verify_files(workload: &Path, replies: &Path, echo: bool) -> Res<Verified> {
    let open = |p: &Path| {
        File::open(p)
            .map(|f| BufReader::with_capacity(1 << 16, f))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut reqs = open(workload)?;
    let mut reps = open(replies)?;
    let mut model = Model::default();
    let mut errors = Vec::new();
    let (mut line, mut reply) = (String::new(), String::new());
    let mut count = 0u64;
    let mut n = 0u64;
    loop {
        line.clear();
        if reqs.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        n += 1;
        let expected = model
            .expect(line.trim_end_matches('\n'))
            .map_err(|e| format!("workload line {n}: {e}"))?;
        let Some(expected) = expected else { continue };
        reply.clear();
        if reps.read_line(&mut reply).map_err(|e| e.to_string())? == 0 {
            errors.push(format!(
                "msg_id {}: no reply (the replies end after {count})",
                expected.msg_id
            ));
            break;
        }
        count += 1;
        let got = reply.trim_end_matches('\n');
        let checked = if echo {
            expected.check_kind(got)
        } else {
            expected.check(got)
        };
        if let Err(e) = checked {
            errors.push(e);
            if errors.len() >= 5 {
                break;
            }
        }
    }
    reply.clear();
    if errors.is_empty() && reps.read_line(&mut reply).map_err(|e| e.to_string())? > 0 {
        errors.push(format!(
            "more replies than requests: {}",
            cut(reply.trim_end())
        ));
    }
    if !errors.is_empty() {
        return Err(format!(
            "{} does not match {} ({} problem(s) shown):\n{}",
            replies.display(),
            workload.display(),
            errors.len(),
            errors.join("\n")
        ));
    }
    let (commands, queries) = model.requests();
    Ok(Verified {
        commands,
        queries,
        replies: count,
        model,
    })
}

pub fn get_user_line(id: &str) -> String {
    json!({"src": "c1", "dest": "cqrs",
           "body": {"type": "query", "msg_id": 1,
                    "query": {"type": "GetUser", "params": {"userId": id}}}})
    .to_string()
}

/// Verifies a reply file in a child process (`cqrs-bench verify`), so that the model's memory
/// never inflates this process (and so the peak RSS of the programs it starts later).
pub fn verify_in_child(
    workload: &Path,
    replies: &Path,
    echo: bool,
    final_get: Option<&str>,
) -> Res<String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = Command::new(me);
    c.arg("verify")
        .arg("--workload")
        .arg(workload)
        .arg("--replies")
        .arg(replies);
    if echo {
        c.arg("--echo");
    }
    if let Some(id) = final_get {
        c.args(["--final-get", id]);
    }
    let out = c.output().map_err(|e| format!("cqrs-bench verify: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The event count in `cqrs-bench verify`'s report.
pub fn verified_events(text: &str) -> Option<u64> {
    let before = text.split(" events)").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Sends every line from a thread while reading the replies, each checked against the model;
/// returns the time from the first write to the last reply.
pub fn stream(p: &mut Process, lines: &[String], model: &mut Model) -> Res<Duration> {
    let mut expected = Vec::new();
    for l in lines {
        if let Some(e) = model.expect(l)? {
            expected.push(e);
        }
    }
    p.stream(lines, expected.len(), |i, got| expected[i].check(&got))
}

/// Sends one line at a time and waits for its reply, checked against the model; returns each
/// round trip.
pub fn one_at_a_time(p: &mut Process, lines: &[String], model: &mut Model) -> Res<Vec<Duration>> {
    let mut times = Vec::with_capacity(lines.len());
    for l in lines {
        let expected = model.expect(l)?.ok_or("every line needs a msg_id here")?;
        let (got, t) = p.round_trip(l)?;
        times.push(t);
        expected.check(&got)?;
    }
    Ok(times)
}
