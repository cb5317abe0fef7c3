//! `--http ADDR --stdio`: the stdio front end served beside HTTP, by the same node.
//!
//! The stdio front end starts a writer of its own over the worker it is given ([`stdio::serve`]).
//! Here that worker is a [`Forward`]: each batch the stdio writer hands it is submitted, whole,
//! to the node's one writer (the HTTP front end's), and its replies are handed back in order.
//! So stdin's commands are batched with the HTTP connections' requests and share their group
//! commit; the stdio front end (framing, envelopes, `init`, protocol errors, the order of
//! replies) is the one of `cqrs` without `--http`.

use std::sync::mpsc;
use std::sync::Arc;

use serde_json::Value;

use crate::node::writer::{Handle, Sink, Submission, Worker};
use crate::node::{self, Reply, Request};
use crate::plugin::Registry;
use crate::protocol::{CommandJson, QueryJson};
use crate::stdio;

/// A worker that hands every batch to another writer and waits for its replies.
pub struct Forward<W: Worker<Request = Request, Reply = Reply>> {
    handle: Handle<W>,
}

impl<W: Worker<Request = Request, Reply = Reply>> Forward<W> {
    pub fn new(handle: Handle<W>) -> Self {
        Self { handle }
    }
}

/// Hands each reply back to the forwarding worker as soon as it is final.
struct Back(mpsc::Sender<Reply>);

impl Sink<Reply> for Back {
    fn reply(&mut self, reply: Reply) {
        let _ = self.0.send(reply);
    }

    fn end(self: Box<Self>, _last: bool) {}
}

impl<W: Worker<Request = Request, Reply = Reply>> Worker for Forward<W> {
    type Request = Request;
    type Reply = Reply;

    fn handle(&mut self, batch: Vec<Request>, deliver: &mut dyn FnMut(Reply)) {
        let n = batch.len();
        let (tx, rx) = mpsc::channel();
        let submitted = self.handle.submit(Submission {
            requests: batch,
            sink: Box::new(Back(tx)),
        });
        let mut given = 0;
        if submitted.is_ok() {
            while given < n {
                let Ok(reply) = rx.recv() else { break };
                deliver(reply);
                given += 1;
            }
        }
        // The node stopped before answering (the sink was dropped unused): nothing of the
        // batch was done.
        for _ in given..n {
            deliver(Reply::Crashed(
                "the node is stopping; the request was not applied".into(),
            ));
        }
    }
}

/// The stdio [`stdio::Service`] over a [`Forward`] worker: requests are read as the node's
/// own stdio service reads them.
pub struct Forwarding<W> {
    registry: Arc<Registry>,
    _worker: std::marker::PhantomData<fn() -> W>,
}

impl<W> Forwarding<W> {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            _worker: std::marker::PhantomData,
        }
    }
}

impl<W: Worker<Request = Request, Reply = Reply>> stdio::Service for Forwarding<W> {
    type Worker = Forward<W>;

    fn command(&self, command: Option<CommandJson>) -> Request {
        Request::Command(match command {
            Some(c) => node::command::prepare_json(&self.registry, c),
            None => Err(node::command::not_an_object()),
        })
    }

    fn query(&self, query: Option<QueryJson>) -> Request {
        Request::Query(match query {
            Some(q) => node::query::prepare_json(&self.registry, q),
            None => Err(node::query::not_an_object()),
        })
    }

    fn pass(&self) -> Request {
        Request::Pass
    }

    fn write(&self, out: &mut Vec<u8>, in_reply_to: &Value, reply: Reply) {
        stdio::write_reply(out, in_reply_to, reply)
    }

    fn log_unanswered(&self, reply: &Reply) {
        if let Reply::Refused(f) = reply {
            tracing::warn!("command without msg_id failed: {}", f.error);
        }
    }
}
