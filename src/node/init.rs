//! `init`: names the node. Replies `init_ok`.
//!
//! The new name is the `src` of every later reply. The store is not reopened: it stays the file
//! of the id the node started with (see `docs/protocol.md`).

use std::io::{self, Write};

use super::To;
use crate::protocol::reply;

pub(super) fn run(id: &mut String, to: &To, node_id: &str, out: &mut impl Write) -> io::Result<()> {
    node_id.clone_into(id);
    match &to.msg_id {
        Some(msg_id) => super::reply(out, id, to, &reply::InitOk::new(msg_id)),
        None => Ok(()),
    }
}
