//! `init`: names the node. Replies `init_ok`.
//!
//! The new name is the `src` of every later reply. The store is not reopened: it stays the file
//! of the id the node started with (see `docs/protocol.md`).

use std::io::{self, Write};

use super::Node;
use crate::protocol::{reply, Request};
use crate::store::EventStore;

pub(super) fn run<S: EventStore>(
    node: &mut Node<S>,
    request: &Request,
    node_id: &str,
    out: &mut impl Write,
) -> io::Result<()> {
    node.id = node_id.to_string();
    match &request.msg_id {
        Some(msg_id) => node.reply(out, request, &reply::InitOk::new(msg_id)),
        None => Ok(()),
    }
}
