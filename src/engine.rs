//! The engine: runs a command against an aggregate and the store, generic over the domain.
//!
//! [`Repository`] loads aggregates (latest snapshot, then the events after it), keeps recently
//! used ones in a bounded cache, and executes commands inside a store transaction:
//!
//! 1. load the aggregate (cache; or nothing if its stream has no events; or snapshot + replay);
//! 2. fix the command's time and check it does not go backwards;
//! 3. `decide` the events;
//! 4. append them with the version they were decided on (on a shared store, a stale cached
//!    state shows here: load again, decide again);
//! 5. `evolve` the cached state, and write a snapshot every `snapshot_every` events.
//!
//! The cache holds state that is only tentative until the transaction commits: a caller whose
//! commit fails must call [`Repository::forget`].

use indexmap::IndexMap;

use crate::domain::{Aggregate, DomainEvent, Rejection};
use crate::store::{
    upcast, EventView, ExpectedVersion, NewEvent, RecordedEvent, Snapshot, StoreError, StoreRead,
    StoreWrite, StreamId, Upto, Version,
};
use crate::timestamp::Timestamp;

/// An aggregate's state at some point of its stream.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    pub state: A,
    /// Events applied so far (0: the stream does not exist).
    pub version: Version,
    /// Time of the last applied event.
    pub last_time: Option<Timestamp>,
}

impl<A: Default> Default for Loaded<A> {
    fn default() -> Self {
        Self {
            state: A::default(),
            version: 0,
            last_time: None,
        }
    }
}

/// A command with the envelope the engine needs around it.
pub struct Execute<C> {
    /// Taken by value: its data moves into the events ([`Aggregate::decide_owned`]).
    pub command: C,
    pub expected: ExpectedVersion,
    /// When the change happened; `None`: now (but never before the aggregate's last event).
    pub time: Option<Timestamp>,
}

/// Why a command did not produce events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("version conflict: expected version {expected}, but the aggregate is at {actual}")]
    Conflict { expected: Version, actual: Version },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { expected, actual } => {
                CommandError::Conflict { expected, actual }
            }
            other => CommandError::Store(other),
        }
    }
}

/// Recently used aggregates, at most `capacity`, evicted by the CLOCK rule (an approximation
/// of least-recently-used): each entry has a bit set when it is used; to make room, a hand
/// sweeps the entries in a circle, clearing set bits and evicting the first entry whose bit is
/// clear. A hit is one hash lookup and changes nothing else.
struct Cache<A> {
    /// foldhash, randomly seeded per process: the keys are aggregate ids chosen by clients.
    entries: IndexMap<String, (Loaded<A>, bool), foldhash::fast::RandomState>,
    hand: usize,
    capacity: usize,
}

impl<A> Cache<A> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: IndexMap::default(),
            hand: 0,
            capacity,
        }
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Loaded<A>> {
        let (loaded, used) = self.entries.get_mut(id)?;
        *used = true;
        Some(loaded)
    }

    /// Caches `loaded` under `id`, replacing what was cached for it.
    fn insert(&mut self, id: String, loaded: Loaded<A>) {
        if self.capacity == 0 {
            return;
        }
        if let Some((cached, _)) = self.entries.get_mut(&id) {
            *cached = loaded;
            return;
        }
        while self.entries.len() >= self.capacity {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let (_, (_, used)) = self
                .entries
                .get_index_mut(self.hand)
                .expect("hand in range");
            if std::mem::take(used) {
                self.hand += 1;
            } else {
                // The last entry moves into the hand's place, and is looked at next.
                self.entries.swap_remove_index(self.hand);
            }
        }
        self.entries.insert(id, (loaded, false));
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.hand = 0;
    }
}

/// Loads and runs one kind of aggregate.
pub struct Repository<A: Aggregate> {
    cache: Cache<A>,
    snapshot_every: u64,
}

impl<A: Aggregate> Repository<A> {
    /// `cache_size`: aggregates kept in memory at most; 0 disables the cache.
    /// `snapshot_every`: write a snapshot each time a stream passes a multiple of this many
    /// events; 0 disables snapshots.
    pub fn new(cache_size: usize, snapshot_every: u64) -> Self {
        Self {
            cache: Cache::new(cache_size),
            snapshot_every,
        }
    }

    pub fn stream(id: &str) -> StreamId {
        StreamId::new(A::CATEGORY, id)
    }

    /// Drops every cached aggregate (after a failed commit, the cache may be ahead of the store).
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    /// The aggregate's state from the newest snapshot inside `upto`, then the events after it
    /// (the initial state if the stream has no events).
    pub fn load_at(
        store: &(impl StoreRead + ?Sized),
        id: &str,
        upto: Upto,
    ) -> Result<Loaded<A>, StoreError> {
        let stream = Self::stream(id);
        let mut loaded = Loaded::default();
        // A stream without events (most often: the aggregate is being created) has nothing to
        // load, snapshots included (they are taken of events); asked first, this spares a
        // store the snapshot lookup, which on SQLite goes by the stream's text key.
        if store.stream_version(&stream)? == 0 {
            return Ok(loaded);
        }
        if let Some(snap) = store.snapshot(&stream, upto)? {
            match A::from_snapshot(&snap.state) {
                Ok(state) => {
                    loaded = Loaded {
                        state,
                        version: snap.version,
                        last_time: Some(snap.timestamp),
                    }
                }
                // Snapshots are derived data: an unreadable one is skipped, not trusted.
                Err(e) => tracing::warn!(stream = %id, "ignoring unreadable snapshot: {e}"),
            }
        }
        store.visit_stream(&stream, loaded.version, upto, &mut |e| {
            apply(&mut loaded, e)
        })?;
        Ok(loaded)
    }

    /// Runs one command inside `tx`: the events it appended (possibly none) and the version the
    /// aggregate reached. When it appended events, `then` runs next, in the same transaction,
    /// with the state the aggregate reached (for inline projections: see
    /// `projection::Projection::apply_command`).
    ///
    /// The events are appended with the version they were decided on
    /// ([`ExpectedVersion::Exact`], never `Any`). On a store that only this node writes
    /// ([`StoreRead::shared`] is false) the cached state is the stream's, so that check always
    /// holds. On a shared store another writer may have moved the stream since it was cached:
    /// the append's conflict says so, and the aggregate is loaded again and the command decided
    /// again on the new state, up to [`MAX_REDECIDE`] times. A command with an expected version
    /// fails with [`CommandError::Conflict`] when the stream, as stored, is at another version.
    pub fn execute<T: StoreWrite + ?Sized>(
        &mut self,
        tx: &mut T,
        cmd: Execute<A::Command>,
        mut then: impl FnMut(&mut T, &A, &[RecordedEvent]) -> Result<(), StoreError>,
    ) -> Result<Executed, CommandError> {
        let every = self.snapshot_every;
        let shared = tx.shared();
        let mut cmd = cmd;
        let mut reload = false;
        let mut decisions = 0;
        loop {
            decisions += 1;
            // A second decision needs the command again: kept only where one can happen.
            let spare = (shared && decisions <= MAX_REDECIDE).then(|| cmd.command.clone());
            let (expected, time) = (cmd.expected, cmd.time);
            let retry = Retry {
                allowed: spare.is_some(),
                reloaded: reload,
            };
            let cached = match reload {
                false => self.cache.get_mut(A::target(&cmd.command)),
                true => None,
            };
            let outcome = match cached {
                Some(loaded) => execute_on(tx, loaded, cmd, every, retry, &mut then),
                None => {
                    // The id is copied only to cache what was loaded.
                    let id = A::target(&cmd.command).to_string();
                    let mut loaded = Self::load_at(tx, &id, Upto::End)?;
                    let outcome = execute_on(tx, &mut loaded, cmd, every, retry, &mut then);
                    self.cache.insert(id, loaded);
                    outcome
                }
            };
            match (outcome, spare) {
                (Err(Attempt::Stale), Some(command)) => {
                    tracing::debug!(
                        stream = A::target(&command),
                        "stale state: loading it again to decide again"
                    );
                    cmd = Execute {
                        command,
                        expected,
                        time,
                    };
                    reload = true;
                }
                (Err(Attempt::Stale), None) => {
                    unreachable!("a stale state is reported only when a retry is allowed")
                }
                (Err(Attempt::Failed(e)), _) => return Err(e),
                (Ok(done), _) => return Ok(done),
            }
        }
    }
}

/// Most times one command is decided: once, and again each time a shared store shows that the
/// state it was decided on was stale.
pub const MAX_REDECIDE: u32 = 8;

/// A command that produced events, or none.
#[derive(Debug)]
pub struct Executed {
    /// The events appended (none: the command changed nothing).
    pub events: Vec<RecordedEvent>,
    /// The aggregate's version after the command.
    pub version: Version,
}

/// Whether [`execute_on`] may ask for a second decision.
#[derive(Clone, Copy)]
struct Retry {
    /// A second decision can be made (a shared store, and tries left).
    allowed: bool,
    /// The state was just loaded from the store (inside this transaction), not taken from the
    /// cache.
    reloaded: bool,
}

/// Why a decision did not stand.
enum Attempt {
    /// The state it was decided on was stale: load it again and decide again.
    Stale,
    Failed(CommandError),
}

impl From<CommandError> for Attempt {
    fn from(e: CommandError) -> Self {
        Attempt::Failed(e)
    }
}

impl From<Rejection> for Attempt {
    fn from(r: Rejection) -> Self {
        Attempt::Failed(r.into())
    }
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Failed(e.into())
    }
}

/// Decides and appends; `loaded` changes only if events were appended.
fn execute_on<A: Aggregate, T: StoreWrite + ?Sized>(
    tx: &mut T,
    loaded: &mut Loaded<A>,
    cmd: Execute<A::Command>,
    snapshot_every: u64,
    retry: Retry,
    then: &mut impl FnMut(&mut T, &A, &[RecordedEvent]) -> Result<(), StoreError>,
) -> Result<Executed, Attempt> {
    let stream = StreamId::new(A::CATEGORY, A::target(&cmd.command));
    let id = stream.id.as_str();
    let time = match (cmd.time, loaded.last_time) {
        (Some(t), Some(last)) if t < last => {
            if retry.allowed && !retry.reloaded {
                // The cached last time may be another writer's; the stored one decides.
                return Err(Attempt::Stale);
            }
            return Err(Rejection::invalid(format!(
                "timestamp {t} is earlier than the last event of '{id}' ({last}); \
                     event times never go backwards"
            ))
            .into());
        }
        (Some(t), _) => t,
        (None, last) => Timestamp::now().max(last.unwrap_or(Timestamp(i64::MIN))),
    };
    let events = loaded.state.decide_owned(cmd.command)?;
    let decided_on = loaded.version;
    if let ExpectedVersion::Exact(expected) = cmd.expected {
        if expected != decided_on {
            if retry.allowed && !retry.reloaded {
                return Err(Attempt::Stale);
            }
            return Err(CommandError::Conflict {
                expected,
                actual: decided_on,
            }
            .into());
        }
    }
    // Nothing to append on a store only this node writes: its state is the stream's. On a
    // shared one even "no change" was decided on a state that must still be the stream's.
    if events.is_empty() && !tx.shared() {
        return Ok(Executed {
            events: Vec::new(),
            version: decided_on,
        });
    }
    let new: Vec<NewEvent> = events
        .iter()
        .map(|e| NewEvent {
            event_type: e.event_type().to_string(),
            schema: upcast::current(A::Event::UPCASTERS, e.event_type()),
            timestamp: time,
            data: e.to_data(),
        })
        .collect();
    let recorded = match tx.append(&stream, ExpectedVersion::Exact(decided_on), new) {
        Ok(recorded) => recorded,
        Err(StoreError::Conflict { actual, .. }) => {
            if retry.allowed {
                return Err(Attempt::Stale);
            }
            return Err(CommandError::Conflict {
                expected: match cmd.expected {
                    ExpectedVersion::Exact(e) => e,
                    ExpectedVersion::Any => decided_on,
                },
                actual,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if recorded.is_empty() {
        return Ok(Executed {
            events: recorded,
            version: decided_on,
        });
    }
    let before = loaded.version;
    for e in events {
        loaded.state.evolve_owned(e);
    }
    loaded.version += recorded.len() as Version;
    loaded.last_time = Some(time);
    let every = snapshot_every;
    if every > 0 && loaded.version / every > before / every {
        tx.put_snapshot(
            &stream,
            &Snapshot {
                version: loaded.version,
                timestamp: time,
                state: loaded.state.to_snapshot(),
            },
        )?;
    }
    then(tx, &loaded.state, &recorded)?;
    Ok(Executed {
        events: recorded,
        version: loaded.version,
    })
}

/// Applies one stored event to a loaded aggregate.
pub fn apply<A: Aggregate>(loaded: &mut Loaded<A>, event: EventView<'_>) -> Result<(), StoreError> {
    let e = A::Event::from_data(event.event_type, event.data).map_err(|msg| {
        StoreError::Corrupt(format!("event at position {}: {msg}", event.position))
    })?;
    loaded.state.evolve_owned(e);
    loaded.version = event.version;
    loaded.last_time = Some(event.timestamp);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The version a command is appended with, and a stale cached state on a shared store.

    use super::*;
    use crate::domain::user::{User, UserCommand};
    use crate::store::{EventStore, FaultyStore, MemoryStore};

    fn create(id: &str) -> UserCommand {
        UserCommand::from_payload(
            "CreateUser",
            serde_json::from_str(&format!(r#"{{"id":"{id}","name":"A"}}"#)).unwrap(),
        )
        .unwrap()
    }

    fn rename(id: &str, name: &str) -> UserCommand {
        UserCommand::RenameUser {
            id: id.into(),
            name: name.into(),
        }
    }

    fn run(
        repo: &mut Repository<User>,
        store: &mut impl EventStore,
        command: UserCommand,
        expected: ExpectedVersion,
    ) -> Result<Executed, CommandError> {
        let mut tx = store.begin().unwrap();
        let result = repo.execute(
            &mut tx,
            Execute {
                command,
                expected,
                time: None,
            },
            |_, _, _| Ok(()),
        );
        tx.commit().unwrap();
        result
    }

    /// Another node renames `u1` behind this repository's back.
    fn rename_elsewhere(store: &mut FaultyStore<MemoryStore>, name: &str) -> Version {
        let mut tx = store.inner_mut().begin().unwrap();
        let at = tx.stream_version(&StreamId::new("User", "u1")).unwrap();
        tx.append(
            &StreamId::new("User", "u1"),
            ExpectedVersion::Exact(at),
            vec![NewEvent {
                event_type: "UserRenamed".into(),
                schema: crate::store::FIRST_SCHEMA,
                timestamp: Timestamp::now(),
                data: format!(r#"{{"name":"{name}"}}"#),
            }],
        )
        .unwrap();
        tx.commit().unwrap();
        at + 1
    }

    /// The versions of a conflict; panics on any other outcome.
    fn conflict(r: Result<Executed, CommandError>) -> (Version, Version) {
        match r {
            Err(CommandError::Conflict { expected, actual }) => (expected, actual),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    fn shared_store() -> FaultyStore<MemoryStore> {
        let store = FaultyStore::new(MemoryStore::new());
        store.faults().pretend_shared(true);
        store
    }

    #[test]
    fn a_stale_cached_state_is_loaded_again_and_the_command_decided_again() {
        let mut store = shared_store();
        let mut repo = Repository::<User>::new(100, 0);
        run(&mut repo, &mut store, create("u1"), ExpectedVersion::Any).unwrap();
        assert_eq!(rename_elsewhere(&mut store, "B"), 2);
        // Cached at version 1; the stream is at 2. Without an expected version the command is
        // decided again on the new state: it appends version 3, it does not fail.
        let done = run(
            &mut repo,
            &mut store,
            rename("u1", "C"),
            ExpectedVersion::Any,
        )
        .unwrap();
        assert_eq!(done.version, 3);
        assert_eq!(done.events[0].version, 3);
        // Decided on the new state: renaming to the name another node just set changes nothing.
        rename_elsewhere(&mut store, "D");
        let done = run(
            &mut repo,
            &mut store,
            rename("u1", "D"),
            ExpectedVersion::Any,
        )
        .unwrap();
        assert!(done.events.is_empty(), "{done:?}");
        assert_eq!(done.version, 4);
        // An expected version that matches the stored stream (not the stale cache) goes through.
        rename_elsewhere(&mut store, "E");
        let done = run(
            &mut repo,
            &mut store,
            rename("u1", "F"),
            ExpectedVersion::Exact(5),
        );
        assert_eq!(done.unwrap().version, 6);
        // One that matches neither is a conflict with the stored version.
        rename_elsewhere(&mut store, "G");
        let r = run(
            &mut repo,
            &mut store,
            rename("u1", "H"),
            ExpectedVersion::Exact(6),
        );
        assert_eq!(conflict(r), (6, 7));
        let names: Vec<String> = store
            .read_stream(&StreamId::new("User", "u1"), 0, Upto::End)
            .unwrap()
            .into_iter()
            .map(|e| e.data)
            .collect();
        assert_eq!(names.len(), 7, "{names:?}");
    }

    #[test]
    fn on_a_store_only_this_node_writes_the_cache_is_trusted_and_conflicts_are_reported() {
        let mut store = MemoryStore::new();
        let mut repo = Repository::<User>::new(100, 0);
        run(&mut repo, &mut store, create("u1"), ExpectedVersion::Any).unwrap();
        let done = run(
            &mut repo,
            &mut store,
            rename("u1", "B"),
            ExpectedVersion::Exact(1),
        );
        assert_eq!(done.unwrap().version, 2);
        let r = run(
            &mut repo,
            &mut store,
            rename("u1", "C"),
            ExpectedVersion::Exact(1),
        );
        assert_eq!(conflict(r), (1, 2));
        // A rejection is decided before the version is compared (as the protocol's examples
        // show: a deleted user answers `deleted`, whatever the expected version).
        match run(
            &mut repo,
            &mut store,
            create("u1"),
            ExpectedVersion::Exact(7),
        ) {
            Err(CommandError::Rejected(r)) => {
                assert_eq!(r.code, crate::domain::code::ALREADY_EXISTS)
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_cache_of_zero_still_appends_with_the_version_decided_on() {
        let mut store = shared_store();
        let mut repo = Repository::<User>::new(0, 0);
        run(&mut repo, &mut store, create("u1"), ExpectedVersion::Any).unwrap();
        rename_elsewhere(&mut store, "B");
        let done = run(
            &mut repo,
            &mut store,
            rename("u1", "C"),
            ExpectedVersion::Any,
        )
        .unwrap();
        assert_eq!(done.version, 3);
    }
}
