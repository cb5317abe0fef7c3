//! The temporal users read model: every user's state as of any time, for `ListUsersAtTime`.
//!
//! Three collections, written in the command's own transaction (like the users read model) and
//! rebuilt from the log:
//!
//! * [`RECENT`]: one document per user ever created, keyed by its id, rewritten by each of its
//!   commands (as the users document is, and usually on the same page: they are created
//!   together): its creation time, a base (the user's state as of a time, `null` before
//!   creation or once deleted), and the changes since, one line per event with its time (the
//!   event's attributes, or `null` for a deletion). The state at any time from the base on is
//!   the base with the changes up to that time applied. Text, one item per line:
//!
//!   ```text
//!   <created ns> <base ns>
//!   <base state: a JSON object, or null>
//!   <event ns> <attributes set: a JSON object, or null when deleted>
//!   ...
//!   ```
//!
//! * [`PAST`]: when a user's recent document holds [`RECENT_MAX`] changes, it is filed as it is
//!   under `user key ‖ base time` (written once, never read back by key), and the recent
//!   document starts again from the state it reached. The state at a time before the recent
//!   base is then one descending seek away: the filed document whose base is the newest at or
//!   before that time.
//! * [`BLOCKS`]: the users cut into blocks of consecutive ids, one document per block, keyed by
//!   its first user's id and holding the earliest creation time in the block and how many users
//!   it has. A query skips every block whose users were all created after its time. Written
//!   only when a user is created (one of about four events): the block's count (and maybe its
//!   earliest time) changes; a block past [`BLOCK_MAX`] users splits in two.
//!
//! So a command adds no document: it rewrites one (and, one time in [`RECENT_MAX`], files one),
//! which on SQLite mostly dirties a page the users document dirties anyway.
//!
//! `ListUsersAtTime` ([`list_at`]) walks the blocks from `after` on, skips blocks created too
//! late, and in the others reads the recent documents in id order, a page at a time: each is
//! decided from itself (created after T: skipped; else its state at T, from the base, or from
//! the filed document for T). Its cost is O(log n) for the first read, then O(1) per user looked
//! at: the page, the users of the blocks it passes that were created after T, and the users
//! deleted by T (they cannot be skipped by a summary).

use std::cell::RefCell;
use std::collections::HashMap;

use foldhash::fast::RandomState;

use super::{Documents, Projection};
use crate::domain::user::{Attributes, User};
use crate::domain::Aggregate;
use crate::store::{Bound, Direction, RecordedEvent, StoreError, StoreRead, Version};
use crate::timestamp::Timestamp;

pub const RECENT: &str = "users_at";
pub const PAST: &str = "users_at_past";
pub const BLOCKS: &str = "users_at_blocks";

/// Most users in a block; one more splits it in two halves.
pub const BLOCK_MAX: usize = 64;

/// Most changes a recent document holds before it is filed.
pub const RECENT_MAX: usize = 32;

/// The state of a user not created yet, or deleted.
const GONE: &str = "null";

/// The projection, with the recent documents it wrote last (see [`Written`]).
#[derive(Default)]
pub struct UsersAtProjection {
    written: RefCell<Written>,
}

impl UsersAtProjection {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Users' recent documents as this projection last wrote them, each with the version of the
/// user's stream it reflects, so that the next event of the user (its stream's next version)
/// finds its document here instead of reading it from the store: on SQLite that read was a
/// statement per command. An entry is used only for the event right after the version it holds,
/// so an entry of a transaction that was rolled back (the stream is at an older version again)
/// or stale on a store other nodes write to (the stream moved on) is never used: the document is
/// then read from the store. Bounded: emptied when full.
#[derive(Default)]
struct Written {
    docs: HashMap<String, (Version, String), RandomState>,
}

/// Bytes of room a kept recent document gets beyond what it needs, so that the next changes are
/// appended without growing it each time.
const SLACK: usize = 96;

/// Appends a time's nanoseconds, in decimal (`fmt` was a few percent of a streamed run).
fn push_nanos(doc: &mut String, t: Timestamp) {
    let n = t.nanos();
    if n < 0 {
        doc.push('-');
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    doc.push_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
}

/// Recent documents [`Written`] keeps at most (about 30 MB of them).
const WRITTEN_MAX: usize = 100_000;

impl Written {
    /// The document of `id` at `version`, taken out (its entry stays, empty, for the next put).
    fn take(&mut self, id: &str, version: Version) -> Option<String> {
        match self.docs.get_mut(id) {
            Some((v, doc)) if *v == version && !doc.is_empty() => Some(std::mem::take(doc)),
            _ => None,
        }
    }

    fn put(&mut self, id: &str, version: Version, doc: String) {
        if let Some(entry) = self.docs.get_mut(id) {
            *entry = (version, doc);
            return;
        }
        if self.docs.len() >= WRITTEN_MAX {
            self.docs.clear();
        }
        self.docs.insert(id.to_string(), (version, doc));
    }
}

/// The key of a user in [`PAST`]: its id, NULs escaped, then `\0\0` (so that keys keep the
/// order of the ids and no user's keys start with another's), then the time.
pub fn past_key(id: &str, t: Timestamp) -> String {
    let mut key = user_prefix(id);
    push_time(&mut key, t);
    key
}

fn user_prefix(id: &str) -> String {
    let mut key = String::with_capacity(id.len() + 2 + 16);
    for (i, part) in id.split('\0').enumerate() {
        if i > 0 {
            key.push_str("\0\u{1}");
        }
        key.push_str(part);
    }
    key.push_str("\0\0");
    key
}

/// 16 hex digits of the nanoseconds with the sign bit flipped: text order is time order.
fn push_time(key: &mut String, t: Timestamp) {
    use std::fmt::Write;
    let bits = (t.nanos() as u64) ^ (1 << 63);
    write!(key, "{bits:016x}").expect("writing to a String");
}

/// Deletes a user's recent document and every document filed for it.
fn forget(docs: &mut dyn Documents, id: &str) -> Result<(), StoreError> {
    docs.put(RECENT, id, None)?;
    let from = user_prefix(id);
    // After the prefix come only the 16 hex digits of a time: "g" sorts above all of them.
    let to = format!("{from}g");
    loop {
        let filed = docs.range(
            PAST,
            Bound::Included(&from),
            Bound::Excluded(&to),
            Direction::Ascending,
            256,
        )?;
        if filed.is_empty() {
            return Ok(());
        }
        for (key, _) in filed {
            docs.put(PAST, &key, None)?;
        }
    }
}

fn corrupt(what: &str, key: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} document {key:?}"))
}

/// A recent (or filed) document, read.
struct History<'a> {
    created: Timestamp,
    base_time: Timestamp,
    /// `None`: `null`.
    base: Option<&'a str>,
    /// The changes after the base, oldest first: each one's time, and `None` for a deletion.
    changes: Vec<(Timestamp, Option<&'a str>)>,
}

fn time(s: &str) -> Option<Timestamp> {
    s.parse().ok().map(Timestamp)
}

fn object(s: &str) -> Option<Option<&str>> {
    match s {
        GONE => Some(None),
        _ if s.starts_with('{') => Some(Some(s)),
        _ => None,
    }
}

impl<'a> History<'a> {
    fn parse(collection: &str, key: &str, doc: &'a str) -> Result<Self, StoreError> {
        let bad = || corrupt(collection, key);
        let mut lines = doc.split('\n');
        let (created, base_time) = lines
            .next()
            .and_then(|l| l.split_once(' '))
            .and_then(|(c, b)| Some((time(c)?, time(b)?)))
            .ok_or_else(bad)?;
        let base = lines.next().and_then(object).ok_or_else(bad)?;
        let changes = lines
            .map(|l| {
                let (t, change) = l.split_once(' ')?;
                Some((time(t)?, object(change)?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        Ok(History {
            created,
            base_time,
            base,
            changes,
        })
    }

    /// The state at `t` (`t` at or after the base): the base and the changes up to `t`;
    /// `None` if there is none then. Written as the users projection writes its documents.
    fn state_at(&self, t: Timestamp, key: &str) -> Result<Option<String>, StoreError> {
        let upto = self.changes.iter().take_while(|(at, _)| *at <= t);
        // Nothing to apply: the base as it is.
        if self.changes.first().is_none_or(|(at, _)| *at > t) {
            return Ok(self.base.map(str::to_string));
        }
        let parse =
            |s: &str| serde_json::from_str::<Attributes>(s).map_err(|_| corrupt(RECENT, key));
        let mut state = self.base.map(parse).transpose()?;
        for (_, change) in upto {
            state = match (state, change) {
                (_, None) => None,
                (None, Some(c)) => Some(parse(c)?),
                (Some(mut s), Some(c)) => {
                    s.extend(parse(c)?);
                    Some(s)
                }
            };
        }
        Ok(state.map(|s| s.to_json()))
    }
}

/// The state of the user whose recent document this is at `t`, if it had one then.
fn state_of(
    store: &dyn StoreRead,
    id: &str,
    recent: &History<'_>,
    t: Timestamp,
) -> Result<Option<String>, StoreError> {
    if t < recent.created {
        return Ok(None);
    }
    if t >= recent.base_time {
        return recent.state_at(t, id);
    }
    let lower = user_prefix(id);
    let upper = past_key(id, t);
    let (key, doc) = store
        .document_range(
            PAST,
            Bound::Included(&lower),
            Bound::Included(&upper),
            Direction::Descending,
            1,
        )?
        .pop()
        .ok_or_else(|| corrupt(RECENT, id))?;
    History::parse(PAST, &key, &doc)?.state_at(t, &key)
}

/// A block: the earliest creation time of its users, and how many it has.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Block {
    first_created: Timestamp,
    users: usize,
}

impl Block {
    fn parse(key: &str, value: &str) -> Result<Self, StoreError> {
        let (t, n) = value.split_once(' ').ok_or_else(|| corrupt(BLOCKS, key))?;
        Ok(Block {
            first_created: time(t).ok_or_else(|| corrupt(BLOCKS, key))?,
            users: n.parse().map_err(|_| corrupt(BLOCKS, key))?,
        })
    }

    fn text(self) -> String {
        format!("{} {}", self.first_created.nanos(), self.users)
    }
}

/// The first document of a range.
fn first(
    docs: &dyn Documents,
    collection: &str,
    from: Bound<&str>,
    to: Bound<&str>,
    direction: Direction,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(docs.range(collection, from, to, direction, 1)?.pop())
}

/// Counts a user created at `created` (its recent document already written) in its block.
fn count_created(docs: &mut dyn Documents, id: &str, created: Timestamp) -> Result<(), StoreError> {
    let below = first(
        docs,
        BLOCKS,
        Bound::Unbounded,
        Bound::Included(id),
        Direction::Descending,
    )?;
    let (key, block) = match below {
        Some((key, value)) => {
            let block = Block::parse(&key, &value)?;
            (key, block)
        }
        None => {
            // Before every block: the first block now starts at this user.
            match first(
                docs,
                BLOCKS,
                Bound::Unbounded,
                Bound::Unbounded,
                Direction::Ascending,
            )? {
                Some((key, value)) => {
                    let block = Block::parse(&key, &value)?;
                    docs.put(BLOCKS, &key, None)?;
                    (id.to_string(), block)
                }
                None => (
                    id.to_string(),
                    Block {
                        first_created: created,
                        users: 0,
                    },
                ),
            }
        }
    };
    let block = Block {
        first_created: block.first_created.min(created),
        users: block.users + 1,
    };
    if block.users <= BLOCK_MAX {
        return docs.put(BLOCKS, &key, Some(&block.text()));
    }
    // Split in two halves by id: the block's users are its recent documents.
    let users = docs.range(
        RECENT,
        Bound::Included(&key),
        Bound::Unbounded,
        Direction::Ascending,
        block.users,
    )?;
    let half = users.len() / 2;
    for (i, part) in [&users[..half], &users[half..]].into_iter().enumerate() {
        let mut first_created = Timestamp(i64::MAX);
        for (k, doc) in part {
            first_created = first_created.min(History::parse(RECENT, k, doc)?.created);
        }
        let block = Block {
            first_created,
            users: part.len(),
        };
        let at = if i == 0 {
            key.as_str()
        } else {
            part[0].0.as_str()
        };
        docs.put(BLOCKS, at, Some(&block.text()))?;
    }
    Ok(())
}

impl Projection for UsersAtProjection {
    fn name(&self) -> &'static str {
        "users_at"
    }

    fn collections(&self) -> &'static [&'static str] {
        &[RECENT, PAST, BLOCKS]
    }

    /// The event's change appended to its user's recent document (the event's data: every
    /// user event but the deletion carries exactly the attributes it sets).
    fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), StoreError> {
        if event.stream.category != User::CATEGORY {
            return Ok(());
        }
        let bad = |msg: &str| StoreError::Corrupt(format!("event {}: {msg}", event.position));
        let id = &event.stream.id;
        if event.event_type == "UserForgotten" {
            // Every state of the user is dropped, in the transaction that destroys its key
            // (docs/forgetting.md); its block still counts it, whichever way it was built.
            self.written.borrow_mut().take(id, event.version - 1);
            return forget(docs, id);
        }
        if event.data == GONE {
            // An event of a forgotten user, replayed (its data is gone): counted in its block
            // as it was when first applied; the rest went with the forget.
            if event.event_type == "UserCreated" {
                return count_created(docs, id, event.timestamp);
            }
            return Ok(());
        }
        let change = match event.event_type.as_str() {
            "UserDeleted" => GONE,
            "UserCreated" | "UserUpdated" | "UserRenamed" | "UserEmailChanged" => {
                if !event.data.starts_with('{') {
                    return Err(bad("data is not a JSON object"));
                }
                event.data.as_str()
            }
            other => return Err(bad(&format!("unknown User event type '{other}'"))),
        };
        let t = event.timestamp;
        let known = self.written.borrow_mut().take(id, event.version - 1);
        let known = match known {
            Some(doc) => Some(doc),
            // A stream's first event: there is no document yet (none to look up).
            None if event.version == 1 => None,
            None => docs.get(RECENT, id)?,
        };
        let mut doc = match known {
            Some(doc) => doc,
            None if event.event_type == "UserCreated" => {
                let mut doc = String::with_capacity(3 * 20 + 8 + change.len() + SLACK);
                // "<t> <t>\nnull\n<t> <change>": created at t, based on nothing at t.
                for part in [" ", "\nnull\n", " "] {
                    push_nanos(&mut doc, t);
                    doc.push_str(part);
                }
                doc.push_str(change);
                docs.put(RECENT, id, Some(&doc))?;
                self.written.borrow_mut().put(id, event.version, doc);
                return count_created(docs, id, t);
            }
            // A change to a user never created: nothing to show.
            None => return Ok(()),
        };
        let changes = doc.bytes().filter(|&b| b == b'\n').count() - 1;
        if changes >= RECENT_MAX {
            // File it, and start again from the state it reached.
            let (created, base, base_time) = {
                let h = History::parse(RECENT, id, &doc)?;
                let last = h.changes.last().map_or(h.base_time, |c| c.0);
                (h.created, h.state_at(last, id)?, last)
            };
            let filed = History::parse(RECENT, id, &doc)?.base_time;
            docs.put_cold(PAST, &past_key(id, filed), &doc)?;
            doc = format!(
                "{} {}\n{}",
                created.nanos(),
                base_time.nanos(),
                base.as_deref().unwrap_or(GONE)
            );
        }
        // Room for the next few changes too: the document is kept (in `written`) and grown.
        doc.reserve(22 + change.len() + SLACK);
        doc.push('\n');
        push_nanos(&mut doc, t);
        doc.push(' ');
        doc.push_str(change);
        docs.put(RECENT, id, Some(&doc))?;
        self.written.borrow_mut().put(id, event.version, doc);
        Ok(())
    }
}

/// A page of [`list_at`]: each user's id and state (a JSON object), and whether more follow.
pub struct Page {
    pub users: Vec<(String, String)>,
    pub more: bool,
}

/// The users that existed and were not deleted at `t`, with their state then, ordered by id:
/// up to `limit` of them with an id above `after`.
pub fn list_at(
    store: &dyn StoreRead,
    t: Timestamp,
    limit: usize,
    after: Option<&str>,
) -> Result<Page, StoreError> {
    // Blocks read at a time: a few at first, twice as many at each refill (a page at an early
    // time may pass thousands of blocks whose users were all created later).
    let mut fetch: usize = 32;
    let mut users = Vec::new();
    // The block holding `after` (none before the first block: it starts at the smallest
    // user), then the blocks after it, a few at a time.
    let mut current = match after {
        Some(a) => store
            .document_range(
                BLOCKS,
                Bound::Unbounded,
                Bound::Included(a),
                Direction::Descending,
                1,
            )?
            .pop(),
        None => None,
    };
    let mut queue = std::collections::VecDeque::new();
    let mut fetched = current.as_ref().map(|(k, _): &(String, String)| k.clone());
    let mut exhausted = false;
    loop {
        if queue.is_empty() && !exhausted {
            let lower = fetched.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let more = store.document_range(
                BLOCKS,
                lower,
                Bound::Unbounded,
                Direction::Ascending,
                fetch,
            )?;
            exhausted = more.len() < fetch;
            fetch = (fetch * 2).min(1024);
            fetched = more.last().map(|(k, _)| k.clone()).or(fetched);
            queue.extend(more);
        }
        if let Some((key, value)) = &current {
            let block = Block::parse(key, value)?;
            if block.first_created <= t {
                let end = queue.front().map(|(k, _)| k.as_str());
                let to = end.map_or(Bound::Unbounded, Bound::Excluded);
                let mut from = match after {
                    Some(a) if a >= key.as_str() => Bound::Excluded(a.to_string()),
                    _ => Bound::Included(key.clone()),
                };
                loop {
                    // The whole block in one read (a block has at most BLOCK_MAX users).
                    let want = BLOCK_MAX;
                    let docs = store.document_range(
                        RECENT,
                        from.as_ref().map(String::as_str),
                        to,
                        Direction::Ascending,
                        want,
                    )?;
                    for (id, doc) in &docs {
                        let recent = History::parse(RECENT, id, doc)?;
                        if let Some(state) = state_of(store, id, &recent, t)? {
                            if users.len() == limit {
                                return Ok(Page { users, more: true });
                            }
                            users.push((id.clone(), state));
                        }
                    }
                    match docs.last() {
                        Some((id, _)) if docs.len() == want => from = Bound::Excluded(id.clone()),
                        _ => break,
                    }
                }
            }
        }
        match queue.pop_front() {
            Some(next) => current = Some(next),
            None => break,
        }
    }
    Ok(Page { users, more: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_keys_keep_the_order_of_ids_then_times() {
        let mut ids = [
            "", "a", "a\0", "a\0\0", "a\0b", "a\u{1}", "ab", "b", "é", "\0",
        ];
        ids.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        let times = [i64::MIN, -5, 0, 7, i64::MAX].map(Timestamp);
        let keys: Vec<String> = ids
            .iter()
            .flat_map(|i| times.iter().map(move |&t| past_key(i, t)))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // No user's keys start with another user's prefix.
        for a in &ids {
            for b in &ids {
                assert!(a == b || !past_key(b, Timestamp(0)).starts_with(&user_prefix(a)));
            }
        }
    }

    #[test]
    fn nanos_are_written_in_decimal() {
        for n in [0, 7, -1, 1_704_067_200_000_000_000, i64::MIN, i64::MAX] {
            let mut s = String::new();
            push_nanos(&mut s, Timestamp(n));
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn a_history_folds_its_changes_up_to_a_time() {
        let doc =
            "5 5\nnull\n5 {\"id\":\"u\",\"name\":\"A\"}\n7 {\"name\":\"B\"}\n7 {\"e\":1}\n9 null";
        let h = History::parse(RECENT, "u", doc).unwrap();
        let at = |t| h.state_at(Timestamp(t), "u").unwrap();
        assert_eq!(at(4), None);
        assert_eq!(at(5).as_deref(), Some(r#"{"id":"u","name":"A"}"#));
        assert_eq!(at(8).as_deref(), Some(r#"{"id":"u","name":"B","e":1}"#));
        assert_eq!(at(9), None);
        assert!(History::parse(RECENT, "u", "5 5\nnull\n7 [1]").is_err());
        assert!(History::parse(RECENT, "u", "5\nnull").is_err());
    }
}
