//! The live feed: `GET /api/v1/events/live`, the global log as server-sent events.
//!
//! One **feed task** follows the log: whenever the writer says a batch appended events (and
//! at least every [`POLL`], for events other nodes append to a shared store), it reads what is
//! new through the writer, a `ReadEvents` page at a time, renders each event as its SSE message
//! once, and broadcasts it on a bounded channel ([`BUFFER`] messages). It never waits for a
//! client.
//!
//! Each **client** has its own position (the last event it was sent). It first catches up from
//! the store, page by page (as `ReadEvents` pages), until it reaches the head; then it takes the
//! broadcast messages, skipping any it already sent. When it finds a gap (a message further on
//! than the next position) or learns that it fell more than [`BUFFER`] messages behind (a slow
//! client whose socket is full is not read from, so its channel overflows), it catches up from
//! the store again. So a client gets every event after its start once, in log order, with no
//! gaps, however slow it is, and no client slows the writer or another client.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, watch};

use super::problem::Problem;
use super::{App, Bridge};
use crate::node::{self, Reply, Request};

/// Broadcast messages kept for clients that are behind; past that, they catch up from the store.
pub const BUFFER: usize = 4096;
/// How often the feed looks for new events when the writer said nothing.
pub const POLL: Duration = Duration::from_secs(1);
/// A comment line is sent after this long without an event.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A client that got nothing broadcast for this long reads the store itself.
pub const RECHECK: Duration = Duration::from_secs(2);
/// Events per page read from the store.
pub const PAGE: u64 = 1000;

/// One event, rendered.
#[derive(Debug)]
pub struct Message {
    pub position: u64,
    pub frame: Bytes,
}

/// The feed: where clients subscribe.
pub struct Feed {
    tx: broadcast::Sender<Arc<Message>>,
    bridge: Bridge,
    /// A client subscribed: the feed task starts following now if it was not, so that the
    /// next append is broadcast (not only found by the client when the append after it shows
    /// a gap, or after [`RECHECK`]).
    subscribed: Arc<tokio::sync::Notify>,
    /// The head a client that starts at the head read when it subscribed (the most recent
    /// one): where the feed task starts following, so that nothing after it is missed however
    /// late the task wakes. 0: none.
    from: Arc<std::sync::atomic::AtomicU64>,
}

/// A page of `ReadEvents`, its events kept as they were written.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    head: u64,
}

#[derive(Deserialize)]
struct Head<'a> {
    position: u64,
    #[serde(rename = "eventType", borrow)]
    event_type: &'a str,
}

/// Reads a page of the log after `after`: the rendered events and the head.
async fn page(
    bridge: &Bridge,
    after: u64,
    registry: &crate::plugin::Registry,
) -> Option<(Vec<Message>, u64)> {
    let request = Request::Query(node::query::prepare(
        registry,
        json!({"type": "ReadEvents", "params": {"after": after, "limit": PAGE}}),
    ));
    let data = match bridge.one(request).await {
        Ok(Reply::Data(d)) => d,
        Ok(other) => {
            tracing::warn!("live feed: reading the log failed: {other:?}");
            return None;
        }
        Err(_) => return None,
    };
    let page: Page = match serde_json::from_str(data.get()) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("live feed: a page of the log cannot be read: {e}");
            return None;
        }
    };
    let mut messages = Vec::with_capacity(page.events.len());
    for raw in page.events {
        let Ok(h) = serde_json::from_str::<Head>(raw.get()) else {
            tracing::error!("live feed: an event cannot be read");
            return None;
        };
        messages.push(Message {
            position: h.position,
            frame: frame(h.position, h.event_type, raw.get()),
        });
    }
    Some((messages, page.head))
}

/// An event's SSE message: `id`, `event`, `data` lines and a blank line. (The node writes
/// compact JSON, so `data` is one line; a newline in it would start another `data:` line, which
/// a client joins back with a newline.)
pub fn frame(position: u64, event_type: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event_type.len() + 40);
    out.push_str("id: ");
    out.push_str(&position.to_string());
    out.push_str("\nevent: ");
    // An event type is an identifier; a line break in it would break the framing.
    out.extend(event_type.chars().filter(|c| *c != '\n' && *c != '\r'));
    for line in data.split('\n') {
        out.push_str("\ndata: ");
        out.push_str(line.trim_end_matches('\r'));
    }
    out.push_str("\n\n");
    Bytes::from(out)
}

impl Feed {
    /// Starts the feed task (on the current tokio runtime).
    pub fn start(
        bridge: Bridge,
        registry: Arc<crate::plugin::Registry>,
        mut appended: watch::Receiver<u64>,
        mut stopping: watch::Receiver<bool>,
        buffer: usize,
    ) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let feed = Self {
            tx: tx.clone(),
            bridge: bridge.clone(),
            subscribed: subscribed.clone(),
            from: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let from = feed.from.clone();
        tokio::spawn(async move {
            // None: not following (no client); the next client's arrival sets it to the head.
            let mut last: Option<u64> = None;
            loop {
                tokio::select! {
                    _ = stopping.changed() => return,
                    r = appended.changed() => if r.is_err() { return },
                    _ = subscribed.notified(), if last.is_none() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                if tx.receiver_count() == 0 {
                    last = None;
                    from.store(0, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                if last.is_none() {
                    let hint = from.swap(0, std::sync::atomic::Ordering::Relaxed);
                    last = (hint > 0).then_some(hint);
                }
                loop {
                    let after = match last {
                        Some(p) => p,
                        None => match page(&bridge, i64::MAX as u64, &registry).await {
                            Some((_, head)) => head,
                            None => break,
                        },
                    };
                    let Some((messages, _)) = page(&bridge, after, &registry).await else {
                        break;
                    };
                    let full = messages.len() as u64 == PAGE;
                    last = Some(messages.last().map_or(after, |m| m.position));
                    for m in messages {
                        let _ = tx.send(Arc::new(m));
                    }
                    if !full {
                        break;
                    }
                }
            }
        });
        feed
    }

    /// Live-feed clients connected now.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[derive(Deserialize)]
pub struct LiveParams {
    after: Option<String>,
}

/// `GET /api/v1/events/live[?after=P]` (or `Last-Event-ID: P`, which wins: a browser sends it
/// when it reconnects, with the URL it first used).
pub async fn live(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<LiveParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = params
        .map(|Query(p)| p)
        .map_err(|e| Problem::invalid(format!("the query string cannot be read: {e}")))?;
    let position = |what: &str, text: &str| {
        text.trim().parse::<u64>().map_err(|_| {
            Problem::invalid(format!(
                "{what} must be a position, an integer >= 0 (got '{text}')"
            ))
        })
    };
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(position(
            "Last-Event-ID",
            v.to_str()
                .map_err(|_| Problem::invalid("Last-Event-ID must be ASCII"))?,
        )?),
        None => None,
    };
    let after = match (last_id, params.after.as_deref()) {
        (Some(p), _) => Some(p),
        (None, Some(t)) => Some(position("after", t)?),
        (None, None) => None,
    };
    // Subscribe first, then find the start: nothing appended in between is missed.
    let rx = app.feed.tx.subscribe();
    let start = match after {
        Some(p) => p,
        None => match page(&app.feed.bridge, i64::MAX as u64, &app.registry).await {
            Some((_, head)) => {
                app.feed
                    .from
                    .fetch_max(head, std::sync::atomic::Ordering::Relaxed);
                head
            }
            None => return Err(Problem::unavailable("the store does not answer")),
        },
    };
    app.feed.subscribed.notify_one();
    let client = Client {
        app: app.clone(),
        rx,
        position: start,
        pending: std::collections::VecDeque::new(),
        catching_up: true,
        stopping: app.stopping.clone(),
    };
    let stream = futures_util::stream::unfold(client, |mut c| async move {
        c.next().await.map(|b| (Ok::<_, Infallible>(b), c))
    });
    let mut r = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// One client of the live feed.
struct Client {
    app: Arc<App>,
    rx: broadcast::Receiver<Arc<Message>>,
    /// The last position sent.
    position: u64,
    /// Read from the store, not sent yet.
    pending: std::collections::VecDeque<Message>,
    /// Reading from the store until a page comes back short.
    catching_up: bool,
    stopping: watch::Receiver<bool>,
}

impl Client {
    /// The next bytes to send; `None` ends the stream (the server is stopping).
    async fn next(&mut self) -> Option<Bytes> {
        // Time spent waiting in this call with nothing to send.
        let mut quiet = Duration::ZERO;
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            if let Some(m) = self.pending.pop_front() {
                if m.position == self.position + 1 {
                    self.position = m.position;
                    return Some(m.frame);
                }
                continue;
            }
            if self.catching_up {
                let (messages, _) =
                    page(&self.app.feed.bridge, self.position, &self.app.registry).await?;
                self.catching_up = messages.len() as u64 == PAGE;
                self.pending.extend(messages);
                continue;
            }
            let got = tokio::select! {
                _ = self.stopping.changed() => return None,
                got = tokio::time::timeout(RECHECK, self.rx.recv()) => got,
            };
            match got {
                // Nothing broadcast for a while: look at the store itself. On a shared store
                // the feed task starts following at the head it sees when the first client
                // comes, so events another node appended in between are never broadcast; this
                // client would wait for the next append to see the gap.
                Err(_) => {
                    quiet += RECHECK;
                    let (messages, _) =
                        page(&self.app.feed.bridge, self.position, &self.app.registry).await?;
                    if !messages.is_empty() {
                        self.catching_up = messages.len() as u64 == PAGE;
                        self.pending.extend(messages);
                    } else if quiet >= KEEP_ALIVE {
                        return Some(Bytes::from_static(b": keep-alive\n\n"));
                    }
                }
                Ok(Ok(m)) if m.position <= self.position => {}
                Ok(Ok(m)) if m.position == self.position + 1 => {
                    self.position = m.position;
                    return Some(m.frame.clone());
                }
                // A gap (the feed started after this client's position), or messages lost
                // to a full buffer: read the store from where this client is.
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    self.catching_up = true
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    }
}
