//! `init`: names the node. Replies `init_ok`.
//!
//! The new name is the `src` of every later reply. The store is not reopened: it stays the file
//! of the id the node started with (see `docs/protocol.md`).

use super::To;
use crate::protocol::reply;

pub(super) fn run(id: &mut String, to: &To, node_id: &str, out: &mut Vec<u8>) {
    node_id.clone_into(id);
    if let Some(msg_id) = &to.msg_id {
        super::reply(out, id, to, &reply::InitOk::new(msg_id));
    }
}
