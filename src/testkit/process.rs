//! The one harness that runs a node as a separate process and talks to it over pipes.
//!
//! [`Process::spawn`] starts any command (the `cqrs` binary, the echo floor, a wrapper script)
//! with stdin and stdout piped. Then:
//!
//! * lines in: [`Process::send`], [`Process::send_all`], [`Process::send_raw`]; the stdin handle
//!   can be taken for a writer thread ([`Process::take_stdin`]) and closed (the end of input);
//! * lines out: [`Process::read`] (a line, a cut-off last line, or the end), [`Process::recv`]
//!   (a whole line, or an error), [`Process::drain`] (all that is left);
//! * measured exchanges: [`Process::round_trip`] (send one line, wait for the reply, the time it
//!   took) and [`Process::stream`] (a thread writes many lines while the replies are read);
//! * the end: [`Process::finish`] (end of input, what is left, exit status, stderr, CPU time and
//!   peak RSS), [`Process::wait`], [`Process::kill`] (SIGKILL), [`Process::signal`], and a
//!   [`Killer`] that other threads can use (a watchdog: [`Killer::after`]).
//!
//! [`run_to_exit`] runs a command with the standard streams it was given (files, say) and
//! measures it the same way.
//!
//! How stdout is read is chosen at spawn time ([`Stdout`]): by a thread, eagerly (the node never
//! waits for its reader) or on demand (unread replies stay in the pipe, so the node feels a client
//! that does not read), or directly in the caller's thread (no hand-off between threads in a
//! timed round trip). Options also say whether stderr is collected and how long a read or an exit
//! may take ([`Options::deadline`]): past it the process is killed and the call fails, so a node
//! that hangs fails its caller instead of hanging it.
//!
//! The process is reaped only by this harness (`wait4`, which also gives its peak RSS and CPU
//! time), under a lock that signals take too: a signal never reaches a pid that was reused. A
//! [`Process`] dropped while still running is killed.

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the process's stdout is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// By a thread, as fast as the process writes: it never waits for its reader.
    Eager,
    /// By a thread, one line each time the caller asks for one: lines not asked for stay in the
    /// pipe, and a process that writes more than the pipe holds must wait.
    OnDemand,
    /// In the caller's thread, when it asks: nothing between the process's write and the caller
    /// (what timed round trips need). Such reads block; [`Options::deadline`] then bounds only
    /// the waits for the exit (use [`Killer::after`] as a watchdog).
    Direct,
}

/// How to spawn a process.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub stdout: Stdout,
    /// Collect stderr (into [`Finished::stderr`]); otherwise it is inherited.
    pub capture_stderr: bool,
    /// How long one read (from a reading thread) or a wait for the exit may take. Past it the
    /// process is killed with SIGKILL and the call fails with [`ErrorKind::Timeout`]. `None`:
    /// no limit.
    pub deadline: Option<Duration>,
}

impl Options {
    /// For tests: stdout read by a thread (eagerly or on demand), stderr collected, every read
    /// and exit within `deadline`.
    pub fn captured(stdout: Stdout, deadline: Duration) -> Self {
        Self {
            stdout,
            capture_stderr: true,
            deadline: Some(deadline),
        }
    }

    /// For tools that time what they send (the benchmark, the crash loop): stdout read
    /// directly, stderr inherited, no deadline.
    pub fn direct() -> Self {
        Self {
            stdout: Stdout::Direct,
            capture_stderr: false,
            deadline: None,
        }
    }
}

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The process could not be started.
    Spawn,
    /// A pipe or a system call failed (stdin already closed, say).
    Io,
    /// Nothing within the deadline; the process was killed.
    Timeout,
    /// Stdout ended where a line was wanted.
    Ended,
    /// Stdout ended in the middle of a line (only a killed process leaves one).
    Cut,
    /// The process did not end as required (exit status, output left unread).
    Exit,
}

/// An error of the harness, with a message that names the process.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    message: String,
}

impl Error {
    fn new(kind: ErrorKind, message: String) -> Self {
        Self { kind, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.message
    }
}

/// One read from stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole line, without its newline.
    Line(String),
    /// A last line without its newline.
    Cut(String),
    /// The end of stdout.
    End,
}

/// What `wait4` tells of a process that ended.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// From just before the spawn to the exit, as the wait saw it (a wait with a deadline polls
    /// every 5 ms).
    pub wall: Duration,
    /// User + system CPU time.
    pub cpu: Duration,
    /// Peak resident set size, in KiB.
    pub max_rss_kib: u64,
}

/// How a process ended.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub usage: Usage,
}

/// What a process left behind when it ended ([`Process::finish`]).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Stdout lines not read before the end.
    pub rest: Vec<String>,
    /// Its stderr (empty unless [`Options::capture_stderr`]).
    pub stderr: String,
    pub usage: Usage,
}

impl Finished {
    /// A clean end: exit status 0 and no line left unread.
    pub fn check_clean(&self) -> Result<(), Error> {
        self.check_success()?;
        if !self.rest.is_empty() {
            return Err(Error::new(
                ErrorKind::Exit,
                format!(
                    "unexpected output lines: {:#?}\nstderr:\n{}",
                    self.rest, self.stderr
                ),
            ));
        }
        Ok(())
    }

    /// Exit status 0; the error shows what the process wrote.
    pub fn check_success(&self) -> Result<(), Error> {
        if self.status.success() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Exit,
            format!(
                "exit {}; stdout:\n{}\nstderr:\n{}",
                self.status,
                self.rest.join("\n"),
                self.stderr
            ),
        ))
    }

    /// For tests: panics unless [`Finished::check_clean`].
    #[track_caller]
    pub fn assert_clean(&self) {
        if let Err(e) = self.check_clean() {
            panic!("{e}");
        }
    }

    /// For tests: panics unless [`Finished::check_success`].
    #[track_caller]
    pub fn assert_success(&self) {
        if let Err(e) = self.check_success() {
            panic!("{e}");
        }
    }

    /// For tests: the `body` of each unread line; panics on a line that is not JSON.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.rest
            .iter()
            .map(|line| {
                let mut v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                v["body"].take()
            })
            .collect()
    }
}

/// Makes `cmd` start its process with fork + exec rather than `posix_spawn`.
///
/// A pre_exec hook makes std fork + exec instead of posix_spawn (a vfork that shares this
/// process's memory map). It matters for the peak RSS that wait4 reports: at exec, Linux folds
/// the high-water mark of the memory map being left into the child's ru_maxrss. With a vfork that
/// is the parent's own lifetime peak; after a fork it is only the parent's RSS at the moment of
/// the fork (a few MiB for the benchmark).
pub fn fork_exec(cmd: &mut Command) -> &mut Command {
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    cmd
}

/// Runs `cmd` with the standard streams it was given (files, say) and waits for its exit:
/// wall time from the spawn, CPU time and peak RSS from `wait4`.
pub fn run_to_exit(cmd: &mut Command) -> Result<Exit, Error> {
    let name = describe(cmd);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| Error::new(ErrorKind::Spawn, format!("{name}: {e}")))?;
    let reaper = Reaper::new(child.id() as libc::pid_t, started);
    reaper
        .reap_blocking()
        .map_err(|e| Error::new(ErrorKind::Io, format!("{name}: wait4: {e}")))
}

/// `program arg arg ...`, for messages.
fn describe(cmd: &Command) -> String {
    let mut s = Path::new(cmd.get_program()).display().to_string();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The one place that reaps the process, and that signals it: under one lock, so that a
/// signal never goes to a pid that was reaped (and could be reused).
struct Reaper {
    pid: libc::pid_t,
    started: Instant,
    exit: Mutex<Option<Exit>>,
}

impl Reaper {
    fn new(pid: libc::pid_t, started: Instant) -> Arc<Self> {
        Arc::new(Self {
            pid,
            started,
            exit: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Exit>> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exited(&self) -> Option<Exit> {
        *self.lock()
    }

    fn signal(&self, sig: i32) -> io::Result<()> {
        let exit = self.lock();
        if exit.is_some() {
            return Err(io::Error::other("the process has ended and was reaped"));
        }
        // SAFETY: kill(2) on our own child, not reaped yet (we hold the lock that reaping takes).
        if unsafe { libc::kill(self.pid, sig) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reaps the process if it has exited, without blocking.
    fn try_reap(&self) -> io::Result<Option<Exit>> {
        let mut exit = self.lock();
        if exit.is_some() {
            return Ok(*exit);
        }
        let mut status = 0;
        // SAFETY: rusage is plain old data; wait4 fills it in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: the pid is our own child; the pointers are valid for the call.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid {
                break;
            }
            if r == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let wall = self.started.elapsed();
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        *exit = Some(Exit {
            status: ExitStatus::from_raw(status),
            usage: Usage {
                wall,
                cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
                max_rss_kib: ru.ru_maxrss as u64,
            },
        });
        Ok(*exit)
    }

    /// Blocks until the process exits (waitid with WNOWAIT, outside the lock, so that it can
    /// still be signalled meanwhile), then reaps it.
    fn reap_blocking(&self) -> io::Result<Exit> {
        if let Some(exit) = self.exited() {
            return Ok(exit);
        }
        loop {
            // SAFETY: siginfo_t is plain old data; waitid fills it in.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the pid is our own child; the pointer is valid for the call.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                // Reaped meanwhile by another thread of ours?
                return self.exited().ok_or(e);
            }
        }
        self.try_reap()?
            .ok_or_else(|| io::Error::other("waitid saw the exit, wait4 did not"))
    }
}

/// A handle that signals the process from any thread (it stays valid, and harmless, after the
/// process ended).
#[derive(Clone)]
pub struct Killer {
    reaper: Arc<Reaper>,
}

impl Killer {
    /// Sends signal `sig`; fails if the process was already reaped.
    pub fn signal(&self, sig: i32) -> Result<(), Error> {
        self.reaper.signal(sig).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("kill({}, {sig}): {e}", self.reaper.pid),
            )
        })
    }

    /// SIGKILL.
    pub fn kill(&self) -> Result<(), Error> {
        self.signal(libc::SIGKILL)
    }

    /// Sends SIGKILL after `delay`, unless the returned [`Timer`] is stopped first.
    pub fn after(&self, delay: Duration) -> Timer {
        let (stop, stopped) = mpsc::channel::<()>();
        let killer = self.clone();
        let thread = std::thread::spawn(move || match stopped.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => {
                let _ = killer.kill();
                true
            }
            _ => false,
        });
        Timer { stop, thread }
    }
}

/// A SIGKILL to come ([`Killer::after`]).
pub struct Timer {
    stop: Sender<()>,
    thread: JoinHandle<bool>,
}

impl Timer {
    /// Stops the timer; says whether it had already fired.
    pub fn stop(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// Reads one line: whole, cut off (no newline at the end of stdout), or the end.
fn read_line(reader: &mut BufReader<ChildStdout>) -> io::Result<Next> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(Next::End);
    }
    if line.pop() == Some(b'\n') {
        String::from_utf8(line)
            .map(Next::Line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    } else {
        Ok(Next::Cut(String::from_utf8_lossy(&line).into_owned()))
    }
}

/// Where stdout lines come from.
enum Reader {
    Direct(BufReader<ChildStdout>),
    Thread {
        lines: Receiver<io::Result<Next>>,
        /// When reading on demand: how many more lines the thread may read.
        demand: Option<Sender<usize>>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Reader {
    fn thread(stdout: ChildStdout, on_demand: bool) -> Self {
        let (tx, lines) = mpsc::channel();
        let (demand, wanted) = mpsc::channel::<usize>();
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut credit = if on_demand { 0 } else { usize::MAX };
            loop {
                while credit == 0 {
                    match wanted.recv() {
                        Ok(n) => credit = n,
                        Err(_) => return,
                    }
                }
                let item = read_line(&mut reader);
                credit -= 1;
                let last = !matches!(item, Ok(Next::Line(_)));
                // The end is the channel's end.
                if matches!(item, Ok(Next::End)) || tx.send(item).is_err() || last {
                    return;
                }
            }
        });
        Reader::Thread {
            lines,
            demand: on_demand.then_some(demand),
            thread: Some(thread),
        }
    }
}

/// A running process with piped stdin and stdout (see the module's documentation).
pub struct Process {
    name: String,
    reaper: Arc<Reaper>,
    stdin: Option<ChildStdin>,
    stdout: Reader,
    stderr: Option<JoinHandle<String>>,
    deadline: Option<Duration>,
    /// The bytes of the line being sent.
    out: Vec<u8>,
}

impl Process {
    /// Spawns `cmd` with stdin and stdout piped (stderr as `options` say).
    pub fn spawn(cmd: &mut Command, options: Options) -> Result<Process, Error> {
        let name = describe(cmd);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        cmd.stderr(if options.capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Spawn, format!("cannot start {name}: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdout = match options.stdout {
            Stdout::Direct => Reader::Direct(BufReader::new(stdout)),
            Stdout::Eager => Reader::thread(stdout, false),
            Stdout::OnDemand => Reader::thread(stdout, true),
        };
        let stderr = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = stderr.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        });
        Ok(Process {
            name,
            reaper: Reaper::new(child.id() as libc::pid_t, started),
            stdin: child.stdin.take(),
            stdout,
            stderr,
            deadline: options.deadline,
            out: Vec::new(),
        })
    }

    /// The command line, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        self.reaper.pid
    }

    /// The moment just before the spawn.
    pub fn started(&self) -> Instant {
        self.reaper.started
    }

    fn error(&self, kind: ErrorKind, what: impl fmt::Display) -> Error {
        Error::new(kind, format!("{}: {what}", self.name))
    }

    /// A handle to signal the process from other threads.
    pub fn killer(&self) -> Killer {
        Killer {
            reaper: self.reaper.clone(),
        }
    }

    /// Sends signal `sig`.
    pub fn signal(&self, sig: i32) -> Result<(), Error> {
        self.killer().signal(sig)
    }

    /// Writes raw bytes to stdin, in one write, and flushes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.error(ErrorKind::Io, "stdin is closed"));
        };
        let r = stdin.write_all(bytes).and_then(|()| stdin.flush());
        r.map_err(|e| self.error(ErrorKind::Io, format_args!("writing to stdin: {e}")))
    }

    /// Writes one line (a newline is added).
    pub fn send(&mut self, line: &str) -> Result<(), Error> {
        self.send_all(&[line])
    }

    /// Writes all lines in a single write, so that the process finds them waiting together.
    pub fn send_all<S: AsRef<str>>(&mut self, lines: &[S]) -> Result<(), Error> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        for l in lines {
            out.extend_from_slice(l.as_ref().as_bytes());
            out.push(b'\n');
        }
        let r = self.send_raw(&out);
        self.out = out;
        r
    }

    /// Takes the stdin handle (e.g. for a writer thread); the process sees the end of input
    /// when it is dropped.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Gives back a stdin handle taken with [`Process::take_stdin`] (if it is still there).
    pub fn restore_stdin(&mut self, stdin: Option<ChildStdin>) {
        self.stdin = stdin;
    }

    /// Closes stdin: the end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next read from stdout. From a reading thread, it must come within the deadline.
    pub fn read(&mut self) -> Result<Next, Error> {
        let deadline = self.deadline;
        let item = match &mut self.stdout {
            Reader::Direct(reader) => read_line(reader),
            Reader::Thread { lines, demand, .. } => {
                if let Some(d) = demand {
                    // Fails only when the thread has ended: the receive then says so.
                    let _ = d.send(1);
                }
                let got = match deadline {
                    Some(t) => lines.recv_timeout(t).map_err(|e| (e, t)),
                    None => lines
                        .recv()
                        .map_err(|_| (RecvTimeoutError::Disconnected, Duration::ZERO)),
                };
                match got {
                    Ok(item) => item,
                    Err((RecvTimeoutError::Disconnected, _)) => Ok(Next::End),
                    Err((RecvTimeoutError::Timeout, t)) => {
                        let _ = self.reaper.signal(libc::SIGKILL);
                        return Err(self.error(
                            ErrorKind::Timeout,
                            format_args!("nothing on stdout within {t:?}: it hangs (killed)"),
                        ));
                    }
                }
            }
        };
        item.map_err(|e| self.error(ErrorKind::Io, format_args!("reading stdout: {e}")))
    }

    /// The next whole line; an error if stdout ends or is cut off first (the error then says
    /// how the process ended, and what it wrote on stderr when that is collected).
    pub fn recv(&mut self) -> Result<String, Error> {
        match self.read()? {
            Next::Line(line) => Ok(line),
            Next::Cut(cut) => Err(self.error(
                ErrorKind::Cut,
                format_args!("its output ended in the middle of a line: {cut:?}"),
            )),
            Next::End => {
                let how = match self.wait_within(self.deadline.unwrap_or(END_GRACE)) {
                    Ok(exit) => format!("exit {}", exit.status),
                    Err(e) => e.to_string(),
                };
                let stderr = match self.reaper.exited() {
                    Some(_) => self.take_stderr(),
                    None => String::new(),
                };
                Err(self.error(
                    ErrorKind::Ended,
                    format_args!("stdout ended ({how}) instead of a line; stderr:\n{stderr}"),
                ))
            }
        }
    }

    /// Sends one line and waits for the next line: the reply, and the time from just before
    /// the write to just after the read.
    pub fn round_trip(&mut self, line: &str) -> Result<(String, Duration), Error> {
        let t = Instant::now();
        self.send(line)?;
        let reply = self.recv()?;
        Ok((reply, t.elapsed()))
    }

    /// Writes every line from a thread (so that neither pipe can fill up and block) while
    /// reading `replies` lines here, each handed to `on_reply` with its index. Returns the time
    /// from the first write to the last reply and the writer's end. On an error, the process is
    /// killed (the writer could otherwise wait for ever on a node whose replies nobody reads).
    pub fn stream<S, E>(
        &mut self,
        lines: &[S],
        replies: usize,
        mut on_reply: impl FnMut(usize, String) -> Result<(), E>,
    ) -> Result<Duration, E>
    where
        S: AsRef<str> + Sync,
        E: From<Error>,
    {
        let Some(mut stdin) = self.stdin.take() else {
            return Err(self.error(ErrorKind::Io, "stdin is closed").into());
        };
        let start = Instant::now();
        let (stdin, result) = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let mut w = BufWriter::new(&mut stdin);
                let r = lines
                    .iter()
                    .try_for_each(|l| {
                        w.write_all(l.as_ref().as_bytes())?;
                        w.write_all(b"\n")
                    })
                    .and_then(|()| w.flush());
                drop(w);
                (r, stdin)
            });
            let mut result = Ok(());
            for i in 0..replies {
                let r = self
                    .recv()
                    .map_err(E::from)
                    .and_then(|got| on_reply(i, got));
                if r.is_err() {
                    let _ = self.reaper.signal(libc::SIGKILL);
                    result = r;
                    break;
                }
            }
            let (w, stdin) = writer.join().expect("the writer thread");
            let w = w.map_err(|e| self.error(ErrorKind::Io, format_args!("writing: {e}")));
            (stdin, result.and_then(|()| w.map_err(E::from)))
        });
        let elapsed = start.elapsed();
        self.stdin = Some(stdin);
        result.map(|()| elapsed)
    }

    /// Everything the process still writes until stdout ends (close stdin or kill it first):
    /// the whole lines, and a cut-off last line if there is one. From here on stdout is read
    /// eagerly.
    pub fn drain(&mut self) -> Result<(Vec<String>, Option<String>), Error> {
        if let Reader::Thread { demand, .. } = &mut self.stdout {
            if let Some(d) = demand.take() {
                let _ = d.send(usize::MAX);
            }
        }
        let mut lines = Vec::new();
        loop {
            match self.read()? {
                Next::Line(l) => lines.push(l),
                Next::Cut(cut) => return Ok((lines, Some(cut))),
                Next::End => return Ok((lines, None)),
            }
        }
    }

    /// Waits for the exit (within the deadline, if there is one).
    pub fn wait(&mut self) -> Result<Exit, Error> {
        match self.deadline {
            Some(t) => self.wait_within(t),
            None => self
                .reaper
                .reap_blocking()
                .map_err(|e| self.error(ErrorKind::Io, format_args!("wait4: {e}"))),
        }
    }

    /// Waits at most `t` for the exit; past it, kills the process and fails.
    fn wait_within(&mut self, t: Duration) -> Result<Exit, Error> {
        let until = Instant::now() + t;
        loop {
            match self.reaper.try_reap() {
                Ok(Some(exit)) => return Ok(exit),
                Ok(None) => {}
                Err(e) => return Err(self.error(ErrorKind::Io, format_args!("wait4: {e}"))),
            }
            if Instant::now() > until {
                let _ = self.reaper.signal(libc::SIGKILL);
                let _ = self.reaper.reap_blocking();
                return Err(self.error(
                    ErrorKind::Timeout,
                    format_args!("did not exit within {t:?} (killed)"),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, then the wait for the process to be gone.
    pub fn kill(&mut self) -> Result<Exit, Error> {
        if let Some(exit) = self.reaper.exited() {
            return Ok(exit);
        }
        self.signal(libc::SIGKILL)?;
        self.wait()
    }

    /// Stderr, once the process has ended (empty unless collected).
    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Ends the input, reads what is left up to the end of stdout (a cut-off last line is an
    /// error), waits for the exit and collects it all.
    pub fn finish(mut self) -> Result<Finished, Error> {
        self.close_stdin();
        let (rest, cut) = self.drain()?;
        if let Some(cut) = cut {
            return Err(self.error(
                ErrorKind::Cut,
                format_args!("output ends in a cut-off line: {cut:?}"),
            ));
        }
        let exit = self.wait()?;
        if let Reader::Thread { thread, .. } = &mut self.stdout {
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
        Ok(Finished {
            status: exit.status,
            rest,
            stderr: self.take_stderr(),
            usage: exit.usage,
        })
    }
}

/// How long [`Process::recv`] waits for the exit, to report it, after stdout ended (without a
/// deadline of its own).
const END_GRACE: Duration = Duration::from_secs(10);

impl Drop for Process {
    fn drop(&mut self) {
        if self.reaper.exited().is_none() {
            let _ = self.reaper.signal(libc::SIGKILL);
            let _ = self.reaper.reap_blocking();
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.reaper.pid)
            .finish()
    }
}
