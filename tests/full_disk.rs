//! Real write failures on the real binary: a file size limit (RLIMIT_FSIZE, works anywhere) and
//! a full file system (a small tmpfs, where this machine lets the test mount one).
//!
//! A command whose write fails gets error 13, never a success; queries keep being answered;
//! nothing half-written is read back (`cqrs check`); writes succeed again once there is room.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Creates users `prefix0`, `prefix1`, ... one at a time (with a 3 KB name each) until `failures`
/// of them have failed; every reply must be a success or error 13. Asks for a user after every
/// command: queries are answered throughout. Returns (acknowledged ids, failed ids).
fn fill(node: &mut Node, prefix: &str, failures: usize) -> (Vec<String>, Vec<String>) {
    let name = "x".repeat(3000);
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    for i in 0..2000u64 {
        let id = format!("{prefix}{i}");
        let r = node.call(&create(2 * i, &id, &name));
        assert_eq!(r["in_reply_to"], 2 * i, "{r}");
        if is_success(&r) {
            acked.push(id.clone());
        } else {
            assert!(is_crash(&r), "a failed write must be error 13: {r}");
            failed.push(id.clone());
        }
        let probe = acked.first().cloned().unwrap_or_else(|| id.clone());
        let q = node.call(&get_user(2 * i + 1, &probe));
        assert_eq!(q["type"], "query_result", "{q}");
        if failed.len() == failures {
            return (acked, failed);
        }
    }
    panic!("no write failed");
}

/// Every acknowledged user reads back; no failed one does.
fn assert_users(node: &mut Node, acked: &[String], failed: &[String]) {
    for (i, id) in acked.iter().enumerate() {
        let r = node.call(&get_user(100_000 + i as u64, id));
        assert_eq!(r["data"]["id"], json!(id), "acknowledged user lost: {r}");
    }
    for (i, id) in failed.iter().enumerate() {
        let r = node.call(&get_user(200_000 + i as u64, id));
        assert_eq!(r["data"], Value::Null, "a failed command left a trace: {r}");
    }
}

/// Sends the failed creates again: each must now succeed.
fn retry(node: &mut Node, failed: &[String]) {
    for (i, id) in failed.iter().enumerate() {
        let r = node.call(&create(300_000 + i as u64, id, "again"));
        assert!(is_success(&r), "once there is room, writes succeed: {r}");
    }
}

#[test]
fn a_file_size_limit_fails_writes_with_error_13_and_a_restart_with_room_succeeds() {
    let dir = tempdir();
    let limit: libc::rlim_t = 512 * 1024;
    let mut cmd = n1_on(dir.path());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut node = Node::spawn_on_demand(&mut cmd);
    let (acked, failed) = fill(&mut node, "u", 5);
    eprintln!(
        "RLIMIT_FSIZE: {} writes fit, then {} failed",
        acked.len(),
        failed.len()
    );
    assert!(
        acked.len() >= 5,
        "only {} writes fit in {limit} bytes",
        acked.len()
    );
    assert_users(&mut node, &acked, &failed);
    let Finished { rest, status, .. } = node.finish();
    assert!(rest.is_empty(), "{rest:?}");
    // Killed by SIGXFSZ would show here as a signal, not an exit code.
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_check(dir.path());

    // With room again: everything acknowledged is there, and the failed writes now succeed.
    let mut node = Node::durable(dir.path());
    assert_users(&mut node, &acked, &failed);
    retry(&mut node, &failed);
    let status = node.finish().status;
    assert!(status.success());
    assert_check(dir.path());
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_file_system_fails_writes_and_they_succeed_again_once_space_returns() {
    let dir = tempdir();
    let Some(mnt) = Tmpfs::mount(dir.path(), "2m") else {
        eprintln!("note: cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers write failures");
        return;
    };
    let filler = mnt.0.join("filler");
    std::fs::write(&filler, vec![0u8; 1536 * 1024]).unwrap();
    let data = mnt.0.join("data");
    let mut node = Node::durable(&data);
    let (acked, failed) = fill(&mut node, "u", 3);
    eprintln!(
        "tmpfs: {} writes fit, then {} failed",
        acked.len(),
        failed.len()
    );
    assert!(!acked.is_empty());
    assert_users(&mut node, &acked, &failed);

    // Space returns while the node runs: the same node's writes succeed again.
    std::fs::remove_file(&filler).unwrap();
    retry(&mut node, &failed);
    let Finished { rest, status, .. } = node.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(status.success(), "{status:?}");
    assert_check(&data);

    let mut node = Node::durable(&data);
    assert_users(&mut node, &acked, &[]);
    for (i, id) in failed.iter().enumerate() {
        let r = node.call(&get_user(i as u64, id));
        assert_eq!(r["data"]["name"], "again", "{r}");
    }
    drop(node);
    assert_check(&data);
}
