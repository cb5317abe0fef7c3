//! The temporal users read model: every user's state as of any time, for `ListUsersAtTime`.
//!
//! Two collections, both written in the command's own transaction (like the users read model)
//! and rebuilt from the log:
//!
//! * [`VERSIONS`]: one document per command that changed a user (not per event: a command's
//!   events share its time), keyed `user key ‖ time` and holding the user's visible state from
//!   that time on (the state `GetUserAtTime` shows, without `at_time`), or `null` once deleted.
//!   Commands at the same time as the one before them rewrite its document: the state at T is
//!   that after every event up to and including T. So "the state of X at T" is one descending
//!   seek from `key(X) ‖ T`, and the versions of all users are ordered by user id.
//! * [`BLOCKS`]: the users cut into blocks of consecutive ids, one document per block, keyed by
//!   its first user's key and holding the earliest creation time in the block and how many users
//!   it has. A query skips every block whose users were all created after its time. Written
//!   only when a user is created (one of about four events): the block's count (and maybe its
//!   earliest time) changes; a block past [`BLOCK_MAX`] users splits in two.
//!
//! A user's key is its id with every NUL escaped (`\0` → `\0\x01`) and `\0\0` after it: keys
//! are then in the order of the ids, and no key is a prefix of another's. A time is 16 hex
//! digits of its nanoseconds with the sign bit flipped, so that text order is time order.
//!
//! `ListUsersAtTime` ([`list_at`]) walks the blocks from `after` on, skips blocks created too
//! late, and in the others takes each user in id order: one ascending seek finds the user and
//! its creation time (its first version), one descending seek its state at T. Its cost is
//! O(log n) per user looked at: the page, the users of the blocks it passes that were created
//! after T, and the users deleted by T (they have no document of their own to skip by).

use std::any::Any;

use super::{Documents, Projection};
use crate::domain::user::{Attributes, Status, User, UserEvent};
use crate::domain::{Aggregate, DomainEvent};
use crate::store::{Bound, Direction, RecordedEvent, StoreError, StoreRead};
use crate::timestamp::Timestamp;

pub const VERSIONS: &str = "users_at";
pub const BLOCKS: &str = "users_at_blocks";

/// Most users in a block; one more splits it in two halves.
pub const BLOCK_MAX: usize = 64;

/// The state of a deleted user.
const GONE: &str = "null";

/// Hex digits of a time in a key.
const TIME_LEN: usize = 16;

/// Past every version key of a user, when appended to its key (hex digits are below `g`).
const PAST_VERSIONS: &str = "g";

pub struct UsersAtProjection;

/// The key of a user: its id, NULs escaped, then `\0\0`.
pub fn user_key(id: &str) -> String {
    let mut key = String::with_capacity(id.len() + 2 + TIME_LEN);
    for (i, part) in id.split('\0').enumerate() {
        if i > 0 {
            key.push_str("\0\u{1}");
        }
        key.push_str(part);
    }
    key.push_str("\0\0");
    key
}

/// The id of a user key.
fn id_of(key: &str) -> String {
    key[..key.len() - 2].replace("\0\u{1}", "\0")
}

fn push_time(key: &mut String, t: Timestamp) {
    use std::fmt::Write;
    let bits = (t.nanos() as u64) ^ (1 << 63);
    write!(key, "{bits:016x}").expect("writing to a String");
}

fn version_key(user: &str, t: Timestamp) -> String {
    let mut key = String::with_capacity(user.len() + TIME_LEN);
    key.push_str(user);
    push_time(&mut key, t);
    key
}

fn corrupt(what: &str, key: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} document {key:?}"))
}

/// A version key, split into its user's key and its time.
fn split_version(key: &str) -> Result<(&str, Timestamp), StoreError> {
    let cut = key
        .len()
        .checked_sub(TIME_LEN)
        .filter(|&c| key.is_char_boundary(c) && key[..c].ends_with("\0\0"))
        .ok_or_else(|| corrupt(VERSIONS, key))?;
    let bits = u64::from_str_radix(&key[cut..], 16).map_err(|_| corrupt(VERSIONS, key))?;
    Ok((&key[..cut], Timestamp((bits ^ (1 << 63)) as i64)))
}

/// The first document of a key range, read in a direction (a seek).
type Seek<'a> = dyn Fn(Bound<&str>, Bound<&str>, Direction) -> Result<Option<(String, String)>, StoreError>
    + 'a;

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
            first_created: Timestamp(t.parse().map_err(|_| corrupt(BLOCKS, key))?),
            users: n.parse().map_err(|_| corrupt(BLOCKS, key))?,
        })
    }

    fn text(self) -> String {
        format!("{} {}", self.first_created.nanos(), self.users)
    }
}

/// The user whose first version is the first at or after `from` (below `to`): its key and
/// creation time.
fn next_user(
    read: &Seek<'_>,
    from: Bound<&str>,
    to: Bound<&str>,
) -> Result<Option<(String, Timestamp)>, StoreError> {
    let Some((key, _)) = read(from, to, Direction::Ascending)? else {
        return Ok(None);
    };
    let (user, created) = split_version(&key)?;
    Ok(Some((user.to_string(), created)))
}

/// The state (text of the version document) of a user at `t`, if it had one by then.
fn state_at(read: &Seek<'_>, user: &str, t: Timestamp) -> Result<Option<String>, StoreError> {
    let upto = version_key(user, t);
    Ok(read(
        Bound::Included(user),
        Bound::Included(&upto),
        Direction::Descending,
    )?
    .map(|(_, v)| v))
}

/// Where the first document of a range is, through [`Documents`].
fn first_doc<'a>(docs: &'a dyn Documents, collection: &'a str) -> Box<Seek<'a>> {
    Box::new(move |from, to, direction| {
        Ok(docs
            .range(collection, from, to, direction, 1)?
            .into_iter()
            .next())
    })
}

/// The same through a [`StoreRead`].
fn first_in<'a>(store: &'a dyn StoreRead, collection: &'a str) -> Box<Seek<'a>> {
    Box::new(move |from, to, direction| {
        Ok(store
            .document_range(collection, from, to, direction, 1)?
            .into_iter()
            .next())
    })
}

/// Writes the user's state from `t` on (after its version document at `t`, if any).
fn write_version(
    docs: &mut dyn Documents,
    user: &str,
    t: Timestamp,
    state: &User,
) -> Result<(), StoreError> {
    let value = match state.visible() {
        Some(a) => a.to_json(),
        None => GONE.to_string(),
    };
    docs.put_cold(VERSIONS, &version_key(user, t), &value)
}

/// Counts a user created at `created` (its version document already written) in its block.
fn count_created(
    docs: &mut dyn Documents,
    user: &str,
    created: Timestamp,
) -> Result<(), StoreError> {
    let below = docs.range(
        BLOCKS,
        Bound::Unbounded,
        Bound::Included(user),
        Direction::Descending,
        1,
    )?;
    let (key, block) = match below.into_iter().next() {
        Some((key, value)) => (key.clone(), Block::parse(&key, &value)?),
        None => {
            // Before every block: the first block now starts at this user.
            let first = docs.range(
                BLOCKS,
                Bound::Unbounded,
                Bound::Unbounded,
                Direction::Ascending,
                1,
            )?;
            match first.into_iter().next() {
                Some((key, value)) => {
                    let block = Block::parse(&key, &value)?;
                    docs.put(BLOCKS, &key, None)?;
                    (user.to_string(), block)
                }
                None => (
                    user.to_string(),
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
    split(docs, &key)
}

/// Splits the block at `key` in two halves by id.
fn split(docs: &mut dyn Documents, key: &str) -> Result<(), StoreError> {
    let next = docs
        .range(
            BLOCKS,
            Bound::Excluded(key),
            Bound::Unbounded,
            Direction::Ascending,
            1,
        )?
        .into_iter()
        .next()
        .map(|(k, _)| k);
    let to = next.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut users: Vec<(String, Timestamp)> = Vec::with_capacity(BLOCK_MAX + 1);
    {
        let read = first_doc(docs, VERSIONS);
        let mut from = key.to_string();
        let mut bound = Bound::Included(from.as_str());
        while let Some((user, created)) = next_user(&read, bound, to)? {
            from = format!("{user}{PAST_VERSIONS}");
            users.push((user, created));
            bound = Bound::Excluded(from.as_str());
        }
    }
    let half = users.len() / 2;
    for (i, part) in [&users[..half], &users[half..]].into_iter().enumerate() {
        let block = Block {
            first_created: part
                .iter()
                .map(|u| u.1)
                .min()
                .unwrap_or(Timestamp(i64::MAX)),
            users: part.len(),
        };
        // The first half keeps the block's key (its first user may sort after it no more).
        let at = if i == 0 { key } else { part[0].0.as_str() };
        docs.put(BLOCKS, at, Some(&block.text()))?;
    }
    Ok(())
}

impl Projection for UsersAtProjection {
    fn name(&self) -> &'static str {
        "users_at"
    }

    fn collections(&self) -> &'static [&'static str] {
        &[VERSIONS, BLOCKS]
    }

    fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), StoreError> {
        if event.stream.category != User::CATEGORY {
            return Ok(());
        }
        let bad = |msg: String| StoreError::Corrupt(format!("event {}: {msg}", event.position));
        let e = UserEvent::from_data(&event.event_type, &event.data).map_err(bad)?;
        let user = user_key(&event.stream.id);
        let latest = {
            let past = format!("{user}{PAST_VERSIONS}");
            first_doc(docs, VERSIONS)(
                Bound::Included(&user),
                Bound::Excluded(&past),
                Direction::Descending,
            )?
        };
        let created = matches!(e, UserEvent::UserCreated { .. });
        let mut state = match latest {
            Some((_, doc)) if doc == GONE => return Ok(()),
            Some((key, doc)) => User {
                status: Status::Active,
                attributes: serde_json::from_str::<Attributes>(&doc)
                    .map_err(|e| bad(format!("{VERSIONS} document {key:?}: {e}")))?,
            },
            None if created => User::default(),
            None => return Ok(()),
        };
        state.evolve_owned(e);
        write_version(docs, &user, event.timestamp, &state)?;
        if created {
            count_created(docs, &user, event.timestamp)?;
        }
        Ok(())
    }

    fn apply_command(
        &self,
        docs: &mut dyn Documents,
        events: &[RecordedEvent],
        state: &dyn Any,
    ) -> Result<(), StoreError> {
        match (events.first(), events.last(), state.downcast_ref::<User>()) {
            (Some(first), Some(last), Some(user))
                if last.stream.category == User::CATEGORY
                    && events.iter().all(|e| e.timestamp == first.timestamp) =>
            {
                let key = user_key(&last.stream.id);
                write_version(docs, &key, last.timestamp, user)?;
                if first.version == 1 {
                    count_created(docs, &key, first.timestamp)?;
                }
                Ok(())
            }
            // Another aggregate's events, or events at several times: one by one.
            _ => events.iter().try_for_each(|e| self.apply(docs, e)),
        }
    }
}

/// Versions read at a time by [`scan`]: a few users' worth.
const WINDOW: usize = 16;

/// Adds to `users` the users with versions in `[from, to)` that were visible at `t`, in key
/// order; true as soon as one more than `limit` is found (the page is full and more follow).
///
/// It reads the versions in windows of [`WINDOW`]: a user whose versions all fall inside a
/// window is decided from it (created after `t`: skipped; else its state is its newest version
/// at or before `t`); a user cut off at the window's end is decided with one descending seek
/// (unless the window already shows a version after `t`), and the next window starts past it.
fn scan(
    store: &dyn StoreRead,
    t: Timestamp,
    from: &str,
    to: Bound<&str>,
    limit: usize,
    users: &mut Vec<(String, String)>,
) -> Result<bool, StoreError> {
    let mut resume = from.to_string();
    let mut lower = Bound::Included(resume.as_str());
    loop {
        let window = store.document_range(VERSIONS, lower, to, Direction::Ascending, WINDOW)?;
        let full = window.len() == WINDOW;
        let mut i = 0;
        let mut cut_at = None;
        while i < window.len() {
            let (user, created) = split_version(&window[i].0)?;
            let mut state = None;
            let mut newest = created;
            let mut j = i;
            while j < window.len() && window[j].0.starts_with(user) {
                newest = split_version(&window[j].0)?.1;
                if newest <= t {
                    state = Some(j);
                }
                j += 1;
            }
            let cut = full && j == window.len();
            let doc = match state {
                None => None,
                // Later versions may be at or before `t` too: ask for the newest.
                Some(_) if cut && newest <= t => state_at(&*first_in(store, VERSIONS), user, t)?,
                Some(k) => Some(window[k].1.clone()),
            };
            if let Some(doc) = doc.filter(|d| d != GONE) {
                if users.len() == limit {
                    return Ok(true);
                }
                users.push((id_of(user), doc));
            }
            if cut {
                cut_at = Some(format!("{user}{PAST_VERSIONS}"));
                break;
            }
            i = j;
        }
        match cut_at {
            Some(past) => {
                resume = past;
                lower = Bound::Included(resume.as_str());
            }
            None => return Ok(false),
        }
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
    const FETCH: usize = 32;
    // The users after `after`: from past its versions on (never a key itself).
    let start = after.map(|a| format!("{}{PAST_VERSIONS}", user_key(a)));
    let mut users = Vec::new();
    // The block holding `start` (none before the first block: it starts at the smallest user),
    // then the blocks after it, a few at a time.
    let mut current = match &start {
        Some(s) => store
            .document_range(
                BLOCKS,
                Bound::Unbounded,
                Bound::Included(s),
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
                FETCH,
            )?;
            exhausted = more.len() < FETCH;
            fetched = more.last().map(|(k, _)| k.clone()).or(fetched);
            queue.extend(more);
        }
        if let Some((key, value)) = &current {
            let block = Block::parse(key, value)?;
            if block.first_created <= t {
                let end = queue.front().map(|(k, _)| k.as_str());
                let to = end.map_or(Bound::Unbounded, Bound::Excluded);
                let from = match &start {
                    Some(s) if s > key => s.clone(),
                    _ => key.clone(),
                };
                if scan(store, t, &from, to, limit, &mut users)? {
                    return Ok(Page { users, more: true });
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
    fn user_keys_keep_the_order_of_ids_and_no_key_is_a_prefix_of_another() {
        let mut ids = [
            "", "a", "a\0", "a\0\0", "a\0b", "a\u{1}", "ab", "b", "é", "\0",
        ];
        ids.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        let keys: Vec<String> = ids.iter().map(|i| user_key(i)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(id_of(k), ids[i]);
            for (j, other) in keys.iter().enumerate() {
                assert!(
                    i == j || !other.starts_with(k.as_str()),
                    "{k:?} / {other:?}"
                );
            }
        }
    }

    #[test]
    fn version_keys_are_in_time_order_and_split_back() {
        let times = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX].map(Timestamp);
        let keys: Vec<String> = times
            .iter()
            .map(|&t| version_key(&user_key("u"), t))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (k, t) in keys.iter().zip(times) {
            assert_eq!(split_version(k).unwrap(), ("u\0\0", t));
            assert!(k.as_str() < format!("u\0\0{PAST_VERSIONS}").as_str());
        }
        assert!(split_version("u\0\0zz").is_err());
        assert!(split_version("short").is_err());
    }
}
