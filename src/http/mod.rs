//! The HTTP front end (`cqrs --http ADDR`): a second client of the node's writer, beside stdio.
//! The contract is `../shared/http.md`; the decisions it leaves open are in docs/http.md.
//!
//! * [`Bridge`]: how async handlers reach the synchronous core. Handlers send their typed
//!   requests ([`crate::node::Request`], read on the handler's task) over a bounded async
//!   channel to one **submitter thread**, which takes everything waiting (up to `max_batch`
//!   requests, from every connection) and submits it to the writer as one submission
//!   ([`writer::Handle::submit`], which may block: on that thread, not on the runtime's). The
//!   writer handles whatever is queued as one batch, so requests from every connection (and from
//!   stdin, with `--stdio`) share the group commit; each handler gets its replies through a
//!   oneshot channel, after the commit.
//! * [`Notify`]: wraps the worker so that the front end learns when a batch appended events
//!   (the live feed wakes up) and can count batches for the metrics.
//! * [`routes`]: the routes, their status codes and headers; [`problem`]: errors as
//!   `application/problem+json`; [`feed`]: the live feed (SSE).
//! * Security ([`guard`]): a bearer token (compared in constant time), loopback by default (a
//!   non-loopback address needs a token, [`check_bind`]), the Host header checked on a loopback
//!   bind (DNS rebinding), a body limit, no CORS headers.
//!
//! [`serve`] runs it all on a tokio runtime until SIGTERM/SIGINT: then it stops accepting,
//! answers what is in hand and returns; the caller drops the node's handle and joins the writer.

pub mod feed;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod with_stdio;

use std::future::IntoFuture;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::node::writer::{self, Sink, Submission, Worker};
use crate::node::{Reply, Request};
use crate::plugin::Registry;

/// The HTTP front end's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// `Authorization: Bearer <token>` required on every route but `/healthz` and `/readyz`.
    pub token: Option<String>,
    /// Largest request body, in bytes (`--max-line-bytes`): larger ones get 413.
    pub max_body: usize,
    /// Most requests submitted to the writer as one submission.
    pub max_batch: usize,
    /// Live-feed messages kept for clients that are behind ([`feed::BUFFER`] by default); a
    /// client further behind catches up from the store.
    pub feed_buffer: usize,
}

/// Why the front end cannot start on an address.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "--http {0}: not a loopback address; serving it needs a token (--http-token or \
         CQRS_HTTP_TOKEN)"
    )]
    NeedsToken(SocketAddr),
    #[error("--http {0}: {1}")]
    Io(String, std::io::Error),
}

/// Checks the address against the security defaults (a non-loopback address needs a token) and
/// binds it.
pub fn check_bind(addr: &str, token: Option<&str>) -> Result<TcpListener, BindError> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| BindError::Io(addr.to_string(), e))?
        .collect();
    if token.is_none() {
        if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(BindError::NeedsToken(*open));
        }
    }
    let listener = TcpListener::bind(&addrs[..]).map_err(|e| BindError::Io(addr.to_string(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| BindError::Io(addr.to_string(), e))?;
    Ok(listener)
}

/// What the front end and the writer's worker share: requests in flight and the figures of
/// `/metrics`.
#[derive(Default)]
pub struct Stats {
    /// Requests submitted and not yet answered.
    pub queued: AtomicUsize,
    pub metrics: metrics::Metrics,
}

/// The node's worker, wrapped: after each batch that appended events, `appended` moves on.
pub struct Notify<W> {
    inner: W,
    appended: watch::Sender<u64>,
    stats: Arc<Stats>,
}

impl<W> Notify<W> {
    /// The wrapped worker, the receiver the live feed waits on, and the shared figures.
    pub fn new(inner: W) -> (Self, watch::Receiver<u64>, Arc<Stats>) {
        let (appended, rx) = watch::channel(0);
        let stats = Arc::new(Stats::default());
        let me = Self {
            inner,
            appended,
            stats: stats.clone(),
        };
        (me, rx, stats)
    }
}

impl<W: Worker<Request = Request, Reply = Reply>> Worker for Notify<W> {
    type Request = Request;
    type Reply = Reply;

    fn handle(&mut self, batch: Vec<Request>, deliver: &mut dyn FnMut(Reply)) {
        let start = Instant::now();
        let m = &self.stats.metrics;
        m.batch_size.observe(batch.len() as f64);
        let commands = batch.iter().any(|r| matches!(r, Request::Command(_)));
        let mut events = 0u64;
        self.inner.handle(batch, &mut |reply| {
            if let Reply::Done(d) = &reply {
                if !d.repeated {
                    events += d.events.len() as u64;
                }
            }
            deliver(reply)
        });
        if commands {
            m.commit_seconds.observe_duration(start.elapsed());
        }
        if events > 0 {
            m.events_appended.fetch_add(events, Ordering::Relaxed);
            self.appended.send_modify(|n| *n += 1);
        }
    }
}

/// Submissions waiting for the writer, from the submitter thread.
pub const QUEUE: usize = 64;

/// A worker started for this front end ([`start`]).
pub struct Started<W: Worker> {
    /// To join once every bridge and handle is gone.
    pub writer: writer::Writer<W>,
    pub bridge: Bridge,
    /// What the live feed waits on.
    pub appended: watch::Receiver<u64>,
    /// A handle of the same writer, for another front end (`--stdio`); drop it otherwise.
    pub handle: writer::Handle<W>,
}

/// Starts `worker` on its writer thread, wrapped in [`Notify`], with a [`Bridge`] in front of
/// it.
pub fn start<W: Worker<Request = Request, Reply = Reply>>(
    worker: W,
    max_batch: usize,
) -> std::io::Result<Started<Notify<W>>> {
    let (worker, appended, stats) = Notify::new(worker);
    let (writer, handle) = writer::Writer::start(worker, max_batch, QUEUE)?;
    let bridge = Bridge::start(handle.clone(), max_batch, stats)?;
    Ok(Started {
        writer,
        bridge,
        appended,
        handle,
    })
}

/// Requests of one handler and where their replies go.
struct Job {
    requests: Vec<Request>,
    reply: oneshot::Sender<Vec<Reply>>,
}

/// The node cannot take requests (it is stopping, or its writer ended).
#[derive(Debug)]
pub struct Unavailable;

/// The way from async handlers to the writer thread (cheap to clone).
#[derive(Clone)]
pub struct Bridge {
    jobs: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

/// Jobs waiting for the submitter thread; beyond that, handlers wait (backpressure).
const JOBS: usize = 4096;

impl Bridge {
    /// Starts the submitter thread in front of `handle`.
    pub fn start<W>(
        handle: writer::Handle<W>,
        max_batch: usize,
        stats: Arc<Stats>,
    ) -> std::io::Result<Self>
    where
        W: Worker<Request = Request, Reply = Reply>,
    {
        let (jobs, mut rx) = mpsc::channel::<Job>(JOBS);
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name("http-submit".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut count = first.requests.len();
                    let mut group = vec![first];
                    while count < max_batch {
                        match rx.try_recv() {
                            Ok(job) => {
                                count += job.requests.len();
                                group.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    let mut requests = Vec::with_capacity(count);
                    let mut sinks = Vec::with_capacity(group.len());
                    for job in group {
                        sinks.push((job.requests.len(), job.reply));
                        requests.extend(job.requests);
                    }
                    let submission = Submission {
                        requests,
                        sink: Box::new(FanOut::new(sinks)),
                    };
                    if handle.submit(submission).is_err() {
                        // Stopped: the handlers' oneshots were dropped with the submission.
                        break;
                    }
                }
            })?;
        Ok(Self { jobs, stats })
    }

    /// Submits requests; their replies, in order, once final (after the commit).
    pub async fn call(&self, requests: Vec<Request>) -> Result<Vec<Reply>, Unavailable> {
        /// Counts requests in flight, also when the handler is dropped (its client left).
        struct InFlight<'a>(&'a AtomicUsize, usize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::Relaxed);
            }
        }
        let n = requests.len();
        let (tx, rx) = oneshot::channel();
        self.stats.queued.fetch_add(n, Ordering::Relaxed);
        let _in_flight = InFlight(&self.stats.queued, n);
        let sent = self
            .jobs
            .send(Job {
                requests,
                reply: tx,
            })
            .await;
        match sent {
            Ok(()) => rx.await.map_err(|_| Unavailable),
            Err(_) => Err(Unavailable),
        }
    }

    /// One request, one reply.
    pub async fn one(&self, request: Request) -> Result<Reply, Unavailable> {
        let mut replies = self.call(vec![request]).await?;
        replies.pop().ok_or(Unavailable)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Splits one submission's replies among the handlers that sent its requests: each handler
/// gets its replies as soon as its last one is final.
struct FanOut {
    /// The handlers still waiting, in order, each with how many replies it waits for.
    waiting: std::collections::VecDeque<(usize, oneshot::Sender<Vec<Reply>>)>,
    /// The first waiting handler's replies so far.
    mine: Vec<Reply>,
}

impl FanOut {
    fn new(handlers: Vec<(usize, oneshot::Sender<Vec<Reply>>)>) -> Self {
        let mut fan = Self {
            waiting: handlers.into(),
            mine: Vec::new(),
        };
        fan.answer_the_complete();
        fan
    }

    /// Answers the first waiting handlers while they have every reply they wait for.
    fn answer_the_complete(&mut self) {
        while let Some((count, _)) = self.waiting.front() {
            if self.mine.len() < *count {
                return;
            }
            let (_, tx) = self.waiting.pop_front().expect("a front");
            // A handler whose client went away no longer waits: nothing to do.
            let _ = tx.send(std::mem::take(&mut self.mine));
        }
    }
}

impl Sink<Reply> for FanOut {
    fn reply(&mut self, reply: Reply) {
        self.mine.push(reply);
        self.answer_the_complete();
    }

    fn end(mut self: Box<Self>, _last: bool) {
        // Every reply was given, so no handler is left waiting (but for a worker that gave
        // fewer replies than requests: they get what there is).
        for (_, tx) in self.waiting.drain(..) {
            let _ = tx.send(std::mem::take(&mut self.mine));
        }
    }
}

/// Everything the routes share.
pub struct App {
    pub registry: Arc<Registry>,
    pub bridge: Bridge,
    pub options: Options,
    pub feed: feed::Feed,
    /// Set when the server is stopping: live feeds end.
    pub stopping: watch::Receiver<bool>,
    pub started: Instant,
}

/// How long the server waits, once stopping, for requests in hand before it gives up on them.
pub const DRAIN: Duration = Duration::from_secs(30);

impl App {
    /// The front end's state; starts the live feed's task (on the current tokio runtime).
    pub fn new(
        registry: Arc<Registry>,
        bridge: Bridge,
        appended: watch::Receiver<u64>,
        options: Options,
        stopping: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let feed = feed::Feed::start(
            bridge.clone(),
            registry.clone(),
            appended,
            stopping.clone(),
            options.feed_buffer,
        );
        Arc::new(App {
            registry,
            bridge,
            options,
            feed,
            stopping,
            started: Instant::now(),
        })
    }
}

/// Serves HTTP on `listener` until SIGTERM/SIGINT: then stops accepting, ends the live feeds,
/// answers the requests in hand (for at most [`DRAIN`]) and returns.
pub fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    bridge: Bridge,
    appended: watch::Receiver<u64>,
    options: Options,
    ready: impl FnOnce(SocketAddr) -> std::io::Result<()>,
) -> std::io::Result<()> {
    runtime()?.block_on(async move {
        let local = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop_tx, stopping) = watch::channel(false);
        let app = App::new(registry, bridge, appended, options, stopping.clone());
        let router = routes::router(app, local);
        // The signals are watched before anyone is told the node is up: a SIGTERM sent right
        // after is a clean stop, not the default action's kill.
        let signals = watch_signals()?;
        tracing::info!(addr = %local, "serving HTTP");
        ready(local)?;
        let mut stopped = stopping.clone();
        let shutdown = async move {
            signals.await;
            tracing::info!("stopping: answering the requests in hand");
            let _ = stop_tx.send(true);
        };
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .into_future();
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => r,
            _ = async {
                let _ = stopped.wait_for(|s| *s).await;
                tokio::time::sleep(DRAIN).await;
            } => {
                tracing::warn!("requests still in hand after {DRAIN:?}: stopping without them");
                Ok(())
            }
        }
    })
}

/// The tokio runtime the front end runs on (also the benchmark's HTTP floor's,
/// `src/bin/cqrs-http-floor.rs`, so that the two compare on the same settings).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("http")
        .build()
}

/// Watches SIGTERM and SIGINT (from now on); the future ends at the first.
fn watch_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
