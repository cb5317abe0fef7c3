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
//! * [`INDEX`], kept by a projection of its own ([`UsersAtIndexProjection`], `users_at_index`):
//!   every user ever created, cut into blocks of consecutive ids, one document per block, keyed
//!   by its first id (the first block by the empty id, below every other), holding the
//!   earliest creation time in the block, how many users it has, the next block's key, and
//!   each user's creation time and id, in id order. A query decides from a block's document
//!   alone which of its users existed at its time (only their recent documents are read) and
//!   skips the whole block when all were created later. Written only when a user is created
//!   (one of about four events): the user's line is spliced in; a block past [`BLOCK_MAX`]
//!   users splits in two halves.
//!
//! So a command adds no document: it rewrites one (and, one time in [`RECENT_MAX`], files one),
//! which on SQLite mostly dirties a page the users document dirties anyway; a create also
//! rewrites its index block (found from the projection's hints with one read by key, see
//! [`UsersAtIndexProjection`]).
//!
//! `ListUsersAtTime` ([`list_at`]) walks the index blocks from `after` on (read many at a time),
//! skips blocks created too late, and in the others reads the recent documents from the first
//! to the last user created by T (one range read; a block's users created later are never
//! read when they come first or last): each
//! is decided from itself (its state at T, from the base, or from the filed document for T;
//! `null` once deleted). Its cost is O(log n) for the first read, then one index line per user
//! passed, and one recent document per user created by T: the page, and the users deleted by T.
//!
//! Until `users_at_index`, the blocks were a collection of the `users_at` projection
//! (`users_at_blocks`: each block's earliest time and count only, so a query read every recent
//! document of a block with one early user). A store written before keeps those documents; no
//! projection lists them any more, so nothing reads, checks or rebuilds them (they are left in
//! place, ignored), and the node builds `users_at_index` from the log when it first opens the
//! store (`projection::unbuilt`, `projection::catch_up`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use foldhash::fast::RandomState;

use super::{Documents, Projection};
use crate::domain::user::{Attributes, User};
use crate::domain::Aggregate;
use crate::store::{
    Bound, Direction, PersonalDocuments, RecordedEvent, StoreError, StoreRead, Version,
};
use crate::timestamp::Timestamp;

pub const RECENT: &str = "users_at";
pub const PAST: &str = "users_at_past";
/// The index (its own projection, [`UsersAtIndexProjection`]).
pub const INDEX: &str = "users_at_index";

/// Most users in an index block; one more splits it in two halves.
pub const BLOCK_MAX: usize = 16;

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
    doc.push_str(itoa::Buffer::new().format(t.nanos()));
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

/// The id of the user a [`past_key`] belongs to (`None`: not such a key).
pub fn past_owner(key: &str) -> Option<Cow<'_, str>> {
    // An escaped id holds a NUL only before a 1: its first two NULs in a row end it.
    let end = key.find("\0\0")?;
    let id = &key[..end];
    Some(match id.contains('\0') {
        false => Cow::Borrowed(id),
        true => Cow::Owned(id.replace("\0\u{1}", "\0")),
    })
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

/// The index of [`INDEX`]: a block's lines are
///
/// ```text
/// <earliest creation ns in the block> <users in the block>
/// <the next block's key, escaped; empty for the last block>
/// <created ns> <escaped id>      (one line per user, in id order)
/// ...
/// ```
///
/// An id is escaped by writing `\` as `\\` and a newline as `\n`, so that a line never holds a
/// raw newline.
fn push_escaped(doc: &mut String, id: &str) {
    if !id.contains(['\\', '\n']) {
        doc.push_str(id);
        return;
    }
    for c in id.chars() {
        match c {
            '\\' => doc.push_str("\\\\"),
            '\n' => doc.push_str("\\n"),
            c => doc.push(c),
        }
    }
}

fn escaped(id: &str) -> String {
    let mut s = String::with_capacity(id.len());
    push_escaped(&mut s, id);
    s
}

fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('\\') {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(Cow::Owned(out))
}

/// An index block, read.
struct IndexBlock<'a> {
    first_created: Timestamp,
    users: usize,
    /// The next block's key, escaped.
    next: Option<&'a str>,
    /// The rest: one line per user, `<created ns> <escaped id>`, in id order.
    entries: &'a str,
}

impl<'a> IndexBlock<'a> {
    fn parse(key: &str, doc: &'a str) -> Result<Self, StoreError> {
        let bad = || corrupt(INDEX, key);
        let (head, rest) = doc.split_once('\n').ok_or_else(bad)?;
        let (next, entries) = rest.split_once('\n').ok_or_else(bad)?;
        let (first, users) = head.split_once(' ').ok_or_else(bad)?;
        Ok(IndexBlock {
            first_created: time(first).ok_or_else(bad)?,
            users: users.parse().map_err(|_| bad())?,
            next: (!next.is_empty()).then_some(next),
            entries,
        })
    }

    /// Whether `id` belongs in this block (it is at or above the block's key: the caller's).
    fn covers(&self, key: &str, id: &str) -> Result<bool, StoreError> {
        match self.next {
            None => Ok(true),
            Some(next) => Ok(id < unescape(next).ok_or_else(|| corrupt(INDEX, key))?.as_ref()),
        }
    }

    /// Each user's creation time and escaped id.
    fn users(&self, key: &str) -> impl Iterator<Item = Result<(Timestamp, &'a str), StoreError>> {
        let key = key.to_string();
        self.entries.split('\n').map(move |line| {
            line.split_once(' ')
                .and_then(|(t, id)| Some((time(t)?, id)))
                .ok_or_else(|| corrupt(INDEX, &key))
        })
    }
}

/// A block's text: its users (creation time, escaped id; in id order) and the next key (escaped).
fn index_text(users: &[(Timestamp, Cow<'_, str>)], next: Option<&str>) -> String {
    let mut doc = String::with_capacity(48 + users.len() * 40);
    let first = users
        .iter()
        .map(|u| u.0)
        .min()
        .unwrap_or(Timestamp(i64::MAX));
    push_nanos(&mut doc, first);
    doc.push(' ');
    doc.push_str(itoa::Buffer::new().format(users.len()));
    doc.push('\n');
    doc.push_str(next.unwrap_or(""));
    for (t, id) in users {
        doc.push('\n');
        push_nanos(&mut doc, *t);
        doc.push(' ');
        doc.push_str(id);
    }
    doc
}

/// Block keys [`UsersAtIndexProjection`] keeps at most as hints.
const HINTS_MAX: usize = 1_000_000;

/// The index projection: every user ever created, in blocks of consecutive ids (see the
/// module's docs), with the keys of the blocks it has seen as hints (see [`Self::block_of`]).
#[derive(Default)]
pub struct UsersAtIndexProjection {
    hints: RefCell<BTreeSet<String>>,
}

impl UsersAtIndexProjection {
    pub fn new() -> Self {
        Self::default()
    }

    fn hint(&self, key: &str) {
        let mut hints = self.hints.borrow_mut();
        if hints.len() >= HINTS_MAX {
            hints.clear();
        }
        if !hints.contains(key) {
            hints.insert(key.to_string());
        }
    }

    /// The block `id` belongs in: the one with the greatest key at or below it (`None`: there is
    /// no block yet). A hint (the greatest key seen at or below `id`) is taken only once its
    /// document, read in this transaction, says it reaches past `id` (every block names the
    /// next one's key): so a hint from a transaction that was rolled back, or stale on a store
    /// other nodes write to, is never trusted; else the store is searched.
    fn block_of(
        &self,
        docs: &dyn Documents,
        id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        use std::ops::Bound as B;
        let hinted = self
            .hints
            .borrow()
            .range::<str, _>((B::Unbounded, B::Included(id)))
            .next_back()
            .cloned();
        if let Some(key) = hinted {
            if let Some(doc) = docs.get(INDEX, &key)? {
                if IndexBlock::parse(&key, &doc)?.covers(&key, id)? {
                    return Ok(Some((key, doc)));
                }
            }
        }
        let found = docs
            .range(
                INDEX,
                Bound::Unbounded,
                Bound::Included(id),
                Direction::Descending,
                1,
            )?
            .pop();
        if let Some((key, _)) = &found {
            self.hint(key);
        }
        Ok(found)
    }
}

impl Projection for UsersAtIndexProjection {
    fn name(&self) -> &'static str {
        "users_at_index"
    }

    fn collections(&self) -> &'static [&'static str] {
        &[INDEX]
    }

    /// A user's creation listed in its block (a forgotten user's too: its id and time stay).
    fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), StoreError> {
        if event.stream.category != User::CATEGORY || event.event_type != "UserCreated" {
            return Ok(());
        }
        let id = event.stream.id.as_str();
        let t = event.timestamp;
        let Some((key, doc)) = self.block_of(docs, id)? else {
            // The first block: keyed by the empty id, below every other.
            let doc = index_text(&[(t, Cow::Owned(escaped(id)))], None);
            self.hint("");
            return docs.put(INDEX, "", Some(&doc));
        };
        let block = IndexBlock::parse(&key, &doc)?;
        // Where the user's line goes (the byte it goes before; none: at the end).
        let mut at = None;
        let mut offset = doc.len() - block.entries.len();
        for line in block.entries.split('\n') {
            let (_, e) = line.split_once(' ').ok_or_else(|| corrupt(INDEX, &key))?;
            let other = match e.as_bytes().contains(&b'\\') {
                false => Cow::Borrowed(e),
                true => unescape(e).ok_or_else(|| corrupt(INDEX, &key))?,
            };
            match other.as_ref().cmp(id) {
                std::cmp::Ordering::Equal => return Ok(()),
                std::cmp::Ordering::Greater => {
                    at = Some(offset);
                    break;
                }
                std::cmp::Ordering::Less => {}
            }
            offset += line.len() + 1;
        }
        if block.users < BLOCK_MAX {
            // The block's text with the line spliced in (and the earliest time, if it is).
            let mut new = String::with_capacity(doc.len() + 24 + id.len() + SLACK);
            push_nanos(&mut new, block.first_created.min(t));
            new.push(' ');
            new.push_str(itoa::Buffer::new().format(block.users + 1));
            let rest = &doc[doc.len() - block.entries.len() - block.next.map_or(0, str::len) - 1..];
            let mut line = String::with_capacity(24 + id.len());
            push_nanos(&mut line, t);
            line.push(' ');
            push_escaped(&mut line, id);
            new.push('\n');
            match at {
                Some(at) => {
                    let at = at - (doc.len() - rest.len());
                    new.push_str(&rest[..at]);
                    new.push_str(&line);
                    new.push('\n');
                    new.push_str(&rest[at..]);
                }
                None => {
                    new.push_str(rest);
                    new.push('\n');
                    new.push_str(&line);
                }
            }
            return docs.put(INDEX, &key, Some(&new));
        }
        let mut users = Vec::with_capacity(BLOCK_MAX + 1);
        for user in block.users(&key) {
            let (created, e) = user?;
            users.push((created, Cow::Borrowed(e)));
        }
        let at = match at {
            Some(at) => doc[..at].matches('\n').count() - 2,
            None => users.len(),
        };
        users.insert(at, (t, Cow::Owned(escaped(id))));
        // Split in two halves: the second keyed by its first user.
        let (low, high) = users.split_at(users.len() / 2);
        let high_key = unescape(&high[0].1)
            .ok_or_else(|| corrupt(INDEX, &key))?
            .into_owned();
        docs.put(INDEX, &key, Some(&index_text(low, Some(&high[0].1))))?;
        docs.put(INDEX, &high_key, Some(&index_text(high, block.next)))?;
        self.hint(&high_key);
        Ok(())
    }
}

impl Projection for UsersAtProjection {
    fn name(&self) -> &'static str {
        "users_at"
    }

    fn collections(&self) -> &'static [&'static str] {
        &[RECENT, PAST]
    }

    /// A recent document is keyed by its user's id, a filed one by [`past_key`]. (The index
    /// holds ids and creation times only: nothing personal.)
    fn personal(&self) -> &'static [PersonalDocuments] {
        &[
            PersonalDocuments {
                collection: RECENT,
                category: User::CATEGORY,
                owner: PersonalDocuments::keyed_by_id,
            },
            PersonalDocuments {
                collection: PAST,
                category: User::CATEGORY,
                owner: past_owner,
            },
        ]
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
            // (docs/forgetting.md); the index still lists it (id and creation time only).
            self.written.borrow_mut().take(id, event.version - 1);
            return forget(docs, id);
        }
        if event.data == GONE {
            // An event of a forgotten user, replayed (its data is gone): the forget dropped
            // everything this projection had of it.
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
                return Ok(());
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
    let mut queue = std::collections::VecDeque::new();
    // The last block key read.
    let mut fetched: Option<String> = None;
    // The block holding `after`, then the blocks after it.
    if let Some(a) = after {
        if let Some(block) = store
            .document_range(
                INDEX,
                Bound::Unbounded,
                Bound::Included(a),
                Direction::Descending,
                1,
            )?
            .pop()
        {
            fetched = Some(block.0.clone());
            queue.push_back(block);
        }
    }
    // Whether a creation time, as an index line writes it, is at or before `t`: compared as
    // text when both are decimals of as many digits (no sign), so most lines are not parsed.
    let mut digits = itoa::Buffer::new();
    let t_text = digits.format(t.nanos());
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let t_plain = plain(t_text);
    let by = |created: &str| -> Option<bool> {
        if t_plain && created.len() == t_text.len() && plain(created) {
            return Some(created <= t_text);
        }
        time(created).map(|c| c <= t)
    };
    let mut exhausted = false;
    loop {
        if queue.is_empty() {
            if exhausted {
                break;
            }
            let lower = fetched.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let more = store.document_range(
                INDEX,
                lower,
                Bound::Unbounded,
                Direction::Ascending,
                fetch,
            )?;
            exhausted = more.len() < fetch;
            fetch = (fetch * 2).min(1024);
            match more.last() {
                Some((k, _)) => fetched = Some(k.clone()),
                None => break,
            }
            queue.extend(more);
        }
        let Some((key, doc)) = queue.pop_front() else {
            break;
        };
        let block = IndexBlock::parse(&key, &doc)?;
        if block.first_created > t {
            continue;
        }
        // The users of the block created by `t` (and after `after`), each with its place in
        // the block; only the recent documents from the first to the last of them are read.
        let mut wanted: Vec<(usize, Cow<'_, str>)> = Vec::new();
        for (i, line) in block.entries.split('\n').enumerate() {
            let (created, e) = line.split_once(' ').ok_or_else(|| corrupt(INDEX, &key))?;
            if !by(created).ok_or_else(|| corrupt(INDEX, &key))? {
                continue;
            }
            let id = unescape(e).ok_or_else(|| corrupt(INDEX, &key))?;
            if after.is_some_and(|a| id.as_ref() <= a) {
                continue;
            }
            wanted.push((i, id));
        }
        let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else {
            continue;
        };
        let span = last.0 - first.0 + 1;
        let mut found = |id: &str, doc: &str| -> Result<bool, StoreError> {
            let recent = History::parse(RECENT, id, doc)?;
            if let Some(state) = state_of(store, id, &recent, t)? {
                if users.len() == limit {
                    return Ok(true);
                }
                users.push((id.to_string(), state));
            }
            Ok(false)
        };
        // The documents from the first to the last wanted in one read (those in between were
        // created after `t`, and decide so themselves): on SQLite a statement costs more than
        // the few rows it would skip.
        let docs = store.document_range(
            RECENT,
            Bound::Included(&first.1),
            Bound::Included(&last.1),
            Direction::Ascending,
            span,
        )?;
        for (id, doc) in &docs {
            if found(id, doc)? {
                return Ok(Page { users, more: true });
            }
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
        // Each key names its user.
        for (key, id) in keys.iter().zip(ids.iter().flat_map(|i| [i; 5])) {
            assert_eq!(past_owner(key).as_deref(), Some(*id));
        }
        assert_eq!(past_owner("no end"), None);
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

    #[test]
    fn the_index_lists_every_user_once_in_id_order_in_blocks_that_name_the_next() {
        use crate::store::{
            EventStore, MemoryStore, StoreRead, StoreWrite, StreamId, FIRST_SCHEMA,
        };
        let mut ids: Vec<String> = (0..300u32)
            .map(|i| format!("u{}", (i * 7919) % 1000))
            .collect();
        ids.extend(["", "a\\b", "a\nb", "a\\", "\\", "\n", "z\n\\n"].map(String::from));
        let p = UsersAtIndexProjection::new();
        let mut store = MemoryStore::new();
        let mut tx = store.begin().unwrap();
        for (i, id) in ids.iter().enumerate() {
            let event = RecordedEvent {
                stream: StreamId::new(User::CATEGORY, id.clone()),
                version: 1,
                position: i as u64 + 1,
                event_type: "UserCreated".into(),
                schema: FIRST_SCHEMA,
                timestamp: Timestamp(1000 - i as i64),
                data: GONE.into(),
            };
            p.apply(&mut tx, &event).unwrap();
            // Applied twice (a replay of the same creation): listed once.
            p.apply(&mut tx, &event).unwrap();
        }
        tx.commit().unwrap();
        let blocks = store.documents(INDEX, None, usize::MAX).unwrap();
        let mut listed = Vec::new();
        for (i, (key, doc)) in blocks.iter().enumerate() {
            let block = IndexBlock::parse(key, doc).unwrap();
            let users: Vec<_> = block.users(key).map(Result::unwrap).collect();
            assert!(!users.is_empty() && users.len() <= BLOCK_MAX, "{key:?}");
            assert_eq!(block.users, users.len());
            assert_eq!(
                block.first_created,
                users.iter().map(|u| u.0).min().unwrap()
            );
            let next = block.next.map(|n| unescape(n).unwrap().into_owned());
            assert_eq!(next.as_ref(), blocks.get(i + 1).map(|b| &b.0));
            for (created, e) in users {
                let id = unescape(e).unwrap().into_owned();
                assert!(id.as_str() >= key.as_str());
                assert!(next.as_ref().is_none_or(|n| &id < n));
                let at = ids.iter().position(|x| *x == id).unwrap();
                assert_eq!(created, Timestamp(1000 - at as i64));
                listed.push(id);
            }
        }
        let mut expected = ids.clone();
        expected.sort();
        expected.dedup();
        assert_eq!(listed, expected);
        assert_eq!(blocks[0].0, "");
    }
}
