//! The programs a run starts: finding `cqrs`, `cqrs-echo` and `cqrs-workload`, starting them
//! (through the test kit's harness), and writing workloads.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use cqrs_node::testkit::process::{self, Options, Process, Usage};

use crate::cli::RunArgs;
use crate::Res;

pub struct Bins {
    pub cqrs: PathBuf,
    pub echo: PathBuf,
    pub workload: PathBuf,
}

/// Set when this process turned transparent huge pages off for itself only
/// ([`restart_without_huge_pages`]): the programs it measures get them back.
static GIVE_HUGE_PAGES_BACK: AtomicBool = AtomicBool::new(false);

/// The environment variable that tells the restarted program it was restarted.
const RESTARTED: &str = "CQRS_BENCH_RESTARTED_WITHOUT_HUGE_PAGES";

/// Runs this program again, at once, with transparent huge pages off, for itself only.
///
/// It links the node's library (for the test kit), and with it mimalloc as its allocator, which
/// uses huge pages, and sets up its heap before `main` runs: that is 4 to 6 MiB more of this
/// process's own RSS, the floor under the peak RSS of every program it forks (3 MiB without).
/// So it turns them off and executes itself again (the setting is kept across exec: the new
/// allocator starts without them); then every program it measures gets them back between fork
/// and exec ([`command`]), and starts as it would anywhere else.
pub fn restart_without_huge_pages() {
    let thp_disable = |off: libc::c_ulong| {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, off, 0, 0, 0) == 0 }
    };
    if std::env::var_os(RESTARTED).is_some() {
        std::env::remove_var(RESTARTED);
        GIVE_HUGE_PAGES_BACK.store(true, Ordering::Relaxed);
        return;
    }
    // SAFETY: as above, for PR_GET_THP_DISABLE.
    if unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } != 0 {
        return; // off already, for this process and its children: the caller's choice
    }
    if let (true, Ok(me)) = (thp_disable(1), std::env::current_exe()) {
        // Returns only if the exec failed: then go on as we are.
        let _ = Command::new(me)
            .args(std::env::args_os().skip(1))
            .env(RESTARTED, "1")
            .exec();
        thp_disable(0);
    }
}

/// `bin args` with `CQRS_LOG=warn`, started by fork + exec ([`process::fork_exec`]: so that the
/// peak RSS that wait4 reports is the child's, not this process's), with transparent huge pages
/// as the system has them ([`restart_without_huge_pages`]).
pub fn command(bin: &Path, args: &[String]) -> Command {
    let mut c = Command::new(bin);
    c.args(args);
    c.env("CQRS_LOG", "warn");
    // The runs choose their store by their flags, not by the caller's environment.
    c.env_remove("CQRS_POSTGRES_URL");
    process::fork_exec(&mut c);
    if GIVE_HUGE_PAGES_BACK.load(Ordering::Relaxed) {
        // SAFETY: the hook makes one system call, which is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
                Ok(())
            });
        }
    }
    c
}

/// Starts `bin args` with piped stdin and stdout, read directly (for request/reply timing).
pub fn start(bin: &Path, args: &[String]) -> Res<Process> {
    Ok(Process::spawn(&mut command(bin, args), Options::direct())?)
}

/// Ends the input and waits for a clean exit (status 0, nothing left unread).
pub fn finish(p: Process) -> Res<()> {
    let what = p.name().to_string();
    p.finish()?
        .check_clean()
        .map_err(|e| format!("{what}: {e}"))
}

/// Runs `bin` with the workload file as stdin and a file as stdout: wall time from spawn to
/// exit, CPU time and peak RSS from wait4.
pub fn run_streamed(bin: &Path, args: &[String], input: &Path, output: &Path) -> Res<Usage> {
    let what = format!("{} {}", bin.display(), args.join(" "));
    let stdin = File::open(input).map_err(|e| e.to_string())?;
    let stdout = File::create(output).map_err(|e| e.to_string())?;
    let exit = process::run_to_exit(
        command(bin, args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::inherit()),
    )?;
    if !exit.status.success() {
        return Err(format!("{what}: exited with {}", exit.status));
    }
    Ok(exit.usage)
}

pub fn own_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub fn progress(msg: impl AsRef<str>) {
    eprintln!("cqrs-bench: {}", msg.as_ref());
}

/// `cargo build` the sibling binaries when started by `cargo run`, then find them.
pub fn locate_bins(a: &RunArgs) -> Res<Bins> {
    if cfg!(debug_assertions) && !a.allow_debug {
        return Err("this is a debug build; benchmark figures need \
                    `cargo run --release --bin cqrs-bench` (or pass --allow-debug)"
            .into());
    }
    let dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("current_exe has no directory")?
            .to_path_buf(),
    };
    if let (false, Some(cargo)) = (a.no_build, std::env::var_os("CARGO")) {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let mut c = Command::new(cargo);
        c.args(["build", "--bins", "--manifest-path"])
            .arg(&manifest);
        if !cfg!(debug_assertions) {
            c.arg("--release");
        }
        progress("building the binaries (cargo build --bins)");
        let ok = c
            .status()
            .map_err(|e| format!("cargo build: {e}"))?
            .success();
        if !ok {
            return Err("cargo build failed".into());
        }
    }
    let find = |name: &str| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{} is missing: run `cargo build --release --bins` first",
                p.display()
            ))
        }
    };
    Ok(Bins {
        cqrs: find("cqrs")?,
        echo: find("cqrs-echo")?,
        workload: find("cqrs-workload")?,
    })
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub struct Workload {
    pub path: PathBuf,
    pub messages: u64,
    pub commands: u64,
}

/// Writes a workload file with `cqrs-workload` and counts its messages.
pub fn generate(bins: &Bins, path: &Path, flags: &[String]) -> Res<Workload> {
    let mut a = flags.to_vec();
    a.extend(["--out".into(), path.display().to_string()]);
    let status = Command::new(&bins.workload)
        .args(&a)
        .status()
        .map_err(|e| format!("cqrs-workload: {e}"))?;
    if !status.success() {
        return Err(format!("cqrs-workload {} failed", a.join(" ")));
    }
    let mut messages = 0;
    let mut commands = 0;
    let file = File::open(path).map_err(|e| e.to_string())?;
    for line in BufReader::with_capacity(1 << 16, file).lines() {
        let line = line.map_err(|e| e.to_string())?;
        messages += 1;
        commands += u64::from(line.contains("\"type\":\"command\""));
    }
    Ok(Workload {
        path: path.to_path_buf(),
        messages,
        commands,
    })
}

pub fn read_lines(path: &Path) -> Res<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(text.lines().map(String::from).collect())
}
