//! One writer thread that owns the node, and the handles through which front ends reach it.
//!
//! [`Writer::start`] moves a [`Worker`] (the [`Node`](super::Node); the benchmark's echo floor)
//! onto a thread of its own and returns a [`Handle`]: cheap to clone, `Send`, one per front end
//! or per connection. A front end [`Handle::submit`]s requests together with a [`Sink`] that
//! takes their replies. Submissions wait in a bounded channel (when the writer falls behind,
//! `submit` blocks: backpressure); the writer takes everything already waiting, up to
//! `max_batch` requests, and hands it to the worker as **one batch** (for the node: one commit),
//! whichever front ends it came from. It never waits for more while it has something to do, so
//! a lone request is never held back. Each sink gets its replies in the order of its requests,
//! and submissions are handled in the order they were queued.
//!
//! **A lone request can be handled where it was made.** [`Handle::try_here`] runs a submission
//! on the caller's thread when the writer is idle and nothing is queued, instead of waking the
//! writer thread (for a client that sends one request and waits for its reply, that hand-off
//! between threads cost about as much as the rest of the round trip without a commit; see
//! docs/benchmarks.md, *One at a time*). Order is kept: the worker sits behind one lock, the
//! writer handles a batch under it and counts it as done before letting go, and `try_here`
//! handles in place only when every submission queued before is done.
//!
//! [`Handle::stop`] asks the writer to stop after the batch in hand: submissions queued and not
//! yet started are dropped without replies (their sinks are told nothing was done, by being
//! dropped). When every handle is gone, the writer handles what is queued and ends, dropping
//! the worker. [`Writer::join`] waits for that.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// What the writer thread runs.
pub trait Worker: Send + 'static {
    type Request: Send + 'static;
    type Reply: Send + 'static;

    /// Handles a batch in order, giving each reply to `deliver` in request order.
    fn handle(&mut self, batch: Vec<Self::Request>, deliver: &mut dyn FnMut(Self::Reply));
}

impl<S: crate::store::EventStore + Send + 'static> Worker for super::Node<S> {
    type Request = super::Request;
    type Reply = super::Reply;

    fn handle(&mut self, batch: Vec<super::Request>, deliver: &mut dyn FnMut(super::Reply)) {
        super::Node::handle(self, batch, deliver)
    }
}

/// Where the replies of one submission go, each as soon as it is final: a sink is never made
/// to hold a submission's replies all at once (a chunk of reads of large users would be
/// hundreds of MiB), only what the worker holds back until its transaction commits.
pub trait Sink<R>: Send {
    /// The submission's next reply, final, in the order of its requests.
    fn reply(&mut self, reply: R);
    /// Every reply of the submission was given. `last`: no other submission of the same batch
    /// has replies still to come (sinks that share one output, as the stdio front end's chunks
    /// share stdout, flush it then, once per batch).
    fn end(self: Box<Self>, last: bool);
}

/// Requests and where their replies go.
pub struct Submission<W: Worker> {
    pub requests: Vec<W::Request>,
    pub sink: Box<dyn Sink<W::Reply>>,
}

enum Message<W: Worker> {
    Work(Submission<W>),
    /// Wakes the writer to see the stop flag.
    Wake,
}

/// What the writer and the handles share.
struct Shared<W> {
    /// The worker: whoever holds this lock handles requests. `None` once the writer ended.
    worker: Mutex<Option<W>>,
    /// Submissions queued and not yet handled (changed only under `worker`, but for the
    /// increment before queueing).
    pending: AtomicUsize,
    stop: AtomicBool,
}

impl<W> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, Option<W>> {
        // A panic while handling ends the process, so a poisoned lock only means "stopping":
        // use it as it is.
        self.worker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer thread.
pub struct Writer<W: Worker> {
    thread: JoinHandle<()>,
    _worker: std::marker::PhantomData<fn() -> W>,
}

/// A way to the writer, for one front end (clone it for more).
pub struct Handle<W: Worker> {
    tx: SyncSender<Message<W>>,
    shared: Arc<Shared<W>>,
}

impl<W: Worker> Clone for Handle<W> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// The writer has stopped: nothing more can be submitted.
#[derive(Debug, thiserror::Error)]
#[error("the node has stopped")]
pub struct Stopped;

impl<W: Worker> Writer<W> {
    /// Starts the writer thread. `max_batch`: most requests handled as one batch; `queue`: most
    /// submissions waiting (beyond that, [`Handle::submit`] blocks).
    pub fn start(worker: W, max_batch: usize, queue: usize) -> std::io::Result<(Self, Handle<W>)> {
        let (tx, rx) = sync_channel(queue);
        let shared = Arc::new(Shared {
            worker: Mutex::new(Some(worker)),
            pending: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("writer".into())
                .spawn(move || run(&rx, &shared, max_batch.max(1)))?
        };
        let handle = Handle { tx, shared };
        let writer = Self {
            thread,
            _worker: std::marker::PhantomData,
        };
        Ok((writer, handle))
    }

    /// Waits for the writer to end (every handle dropped, or [`Handle::stop`]): the batch in
    /// hand (a caller's `try_here` too) is done and the worker is dropped (for the node: its
    /// store closed). The writer thread drops it, as it made most of what the worker holds:
    /// freed by another thread, a large in-memory store took mimalloc's slower path for every
    /// object.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

impl<W: Worker> Handle<W> {
    /// Queues requests; blocks while the queue is full.
    pub fn submit(&self, submission: Submission<W>) -> Result<(), Stopped> {
        if self.shared.stop.load(Ordering::SeqCst) {
            return Err(Stopped);
        }
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        self.tx.send(Message::Work(submission)).map_err(|_| {
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            Stopped
        })
    }

    /// Handles the submission on this thread if the writer is idle and nothing is queued (so
    /// that order is kept); otherwise gives it back, to be [`Handle::submit`]ted.
    pub fn try_here(&self, submission: Submission<W>) -> Result<(), Submission<W>> {
        let Ok(mut slot) = self.shared.worker.try_lock() else {
            return Err(submission);
        };
        let idle = self.shared.pending.load(Ordering::SeqCst) == 0
            && !self.shared.stop.load(Ordering::SeqCst);
        match slot.as_mut() {
            Some(worker) if idle => {
                handle(worker, vec![submission]);
                Ok(())
            }
            _ => Err(submission),
        }
    }

    /// Asks the writer to stop after the batch in hand.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The writer may be waiting for work: wake it (if the queue is full, it is not).
        match self.tx.try_send(Message::Wake) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The writer thread's loop.
fn run<W: Worker>(rx: &Receiver<Message<W>>, shared: &Shared<W>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut batch = Vec::new();
        let mut requests = 0;
        let mut next = Some(first);
        while let Some(message) = next {
            if let Message::Work(s) = message {
                requests += s.requests.len();
                batch.push(s);
            }
            next = if requests < max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            continue;
        }
        let count = batch.len();
        let mut slot = shared.lock();
        let Some(worker) = slot.as_mut() else { break };
        handle(worker, batch);
        shared.pending.fetch_sub(count, Ordering::SeqCst);
    }
    // Waits for a batch a caller may be handling with `try_here`, then drops the worker here.
    drop(shared.lock().take());
}

/// Handles submissions as one batch and gives each sink its replies.
fn handle<W: Worker>(worker: &mut W, batch: Vec<Submission<W>>) {
    let mut sinks = Vec::with_capacity(batch.len());
    let mut requests = Vec::new();
    for s in batch {
        if s.requests.is_empty() {
            s.sink.end(false);
            continue;
        }
        sinks.push((s.requests.len(), s.sink));
        if requests.is_empty() {
            requests = s.requests;
        } else {
            requests.extend(s.requests);
        }
    }
    let mut sinks = sinks.into_iter().peekable();
    worker.handle(requests, &mut |reply| {
        let (left, sink) = sinks.peek_mut().expect("one reply per request");
        sink.reply(reply);
        *left -= 1;
        if *left == 0 {
            let (_, sink) = sinks.next().expect("peeked");
            sink.end(sinks.peek().is_none());
        }
    });
}

#[cfg(test)]
mod tests {
    //! What front ends rely on: submissions from any number of handles that wait together are
    //! one batch, each sink gets its own replies in order, and `try_here` runs on the caller's
    //! thread only when nothing is queued or in hand.

    use std::sync::mpsc::{channel, Receiver, Sender};

    use super::*;

    /// Records each batch; the first batch waits until the test lets it go.
    struct Recorder {
        batches: Sender<Vec<u32>>,
        gate: Option<Receiver<()>>,
    }

    impl Worker for Recorder {
        type Request = u32;
        type Reply = u32;

        fn handle(&mut self, batch: Vec<u32>, deliver: &mut dyn FnMut(u32)) {
            if let Some(gate) = self.gate.take() {
                gate.recv().unwrap();
            }
            self.batches.send(batch.clone()).unwrap();
            batch.into_iter().map(|r| r * 10).for_each(deliver);
        }
    }

    struct Collect(Sender<(Vec<u32>, std::thread::ThreadId)>, Vec<u32>);

    impl Sink<u32> for Collect {
        fn reply(&mut self, reply: u32) {
            self.1.push(reply);
        }

        fn end(self: Box<Self>, _last: bool) {
            self.0.send((self.1, std::thread::current().id())).unwrap();
        }
    }

    fn submission(
        requests: Vec<u32>,
        to: &Sender<(Vec<u32>, std::thread::ThreadId)>,
    ) -> Submission<Recorder> {
        Submission {
            requests,
            sink: Box::new(Collect(to.clone(), Vec::new())),
        }
    }

    #[test]
    fn submissions_from_several_handles_share_one_batch_and_keep_their_order() {
        let (batches, batches_rx) = channel();
        let (open, gate) = channel();
        let worker = Recorder {
            batches,
            gate: Some(gate),
        };
        let (writer, first) = Writer::start(worker, 1024, 8).unwrap();
        let (replies, replies_rx) = channel();
        // The first batch holds the writer until the others are queued.
        first.submit(submission(vec![1], &replies)).unwrap();
        let (second, third) = (first.clone(), first.clone());
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The writer is busy: a lone request is not run here, it is given back.
        let back = second.try_here(submission(vec![9], &replies));
        let back = back.expect_err("try_here refuses while a batch is in hand");
        std::thread::spawn(move || second.submit(back).unwrap())
            .join()
            .unwrap();
        std::thread::spawn(move || third.submit(submission(vec![2, 3], &replies)).unwrap())
            .join()
            .unwrap();
        open.send(()).unwrap();
        assert_eq!(batches_rx.recv().unwrap(), [1]);
        // Both waited together: one batch, in the order they were queued.
        assert_eq!(batches_rx.recv().unwrap(), [9, 2, 3]);
        let got: Vec<Vec<u32>> = (0..3).map(|_| replies_rx.recv().unwrap().0).collect();
        assert_eq!(got, [vec![10], vec![90], vec![20, 30]]);
        drop(first);
        writer.join();
    }

    #[test]
    fn a_lone_request_runs_on_the_callers_thread_when_the_writer_is_idle() {
        let (batches, batches_rx) = channel();
        let (writer, handle) = Writer::start(
            Recorder {
                batches,
                gate: None,
            },
            1024,
            8,
        )
        .unwrap();
        let (replies, replies_rx) = channel();
        assert!(handle.try_here(submission(vec![4], &replies)).is_ok());
        let (got, thread) = replies_rx.recv().unwrap();
        assert_eq!(got, [40]);
        assert_eq!(thread, std::thread::current().id());
        assert_eq!(batches_rx.recv().unwrap(), [4]);
        // Stopped: nothing more is taken.
        handle.stop();
        assert!(handle.submit(submission(vec![5], &replies)).is_err());
        drop(handle);
        writer.join();
    }

    /// Delivers its replies one by one and records, before each, how many the sink had.
    struct Stepper(std::sync::Arc<std::sync::Mutex<Vec<u32>>>, Vec<usize>);

    impl Worker for Stepper {
        type Request = u32;
        type Reply = u32;

        fn handle(&mut self, batch: Vec<u32>, deliver: &mut dyn FnMut(u32)) {
            for r in batch {
                self.1.push(self.0.lock().unwrap().len());
                deliver(r);
            }
        }
    }

    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

    impl Sink<u32> for Shared {
        fn reply(&mut self, reply: u32) {
            self.0.lock().unwrap().push(reply);
        }

        fn end(self: Box<Self>, _last: bool) {}
    }

    #[test]
    fn a_sink_has_each_reply_before_the_worker_makes_the_next() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut worker = Stepper(got.clone(), Vec::new());
        let submission = |requests| Submission {
            requests,
            sink: Box::new(Shared(got.clone())),
        };
        handle(
            &mut worker,
            vec![submission(vec![1, 2, 3]), submission(vec![4])],
        );
        assert_eq!(*got.lock().unwrap(), [1, 2, 3, 4]);
        // Not held until the submission's last reply: each went out as it came.
        assert_eq!(worker.1, [0, 1, 2, 3]);
    }
}
