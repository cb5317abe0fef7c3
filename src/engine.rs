//! The engine: runs a command against an aggregate and the store, generic over the domain.
//!
//! [`Repository`] loads aggregates (latest snapshot, then the events after it), keeps recently
//! used ones in a bounded cache, and executes commands inside a store transaction:
//!
//! 1. load the aggregate (cache; or nothing if its stream has no events; or snapshot + replay);
//! 2. fix the command's time and check it does not go backwards;
//! 3. `decide` the events;
//! 4. append them with the optimistic version check;
//! 5. `evolve` the cached state, and write a snapshot every `snapshot_every` events.
//!
//! The cache holds state that is only tentative until the transaction commits: a caller whose
//! commit fails must call [`Repository::forget`].

use indexmap::IndexMap;

use crate::domain::{Aggregate, DomainEvent, Rejection};
use crate::store::{
    EventView, ExpectedVersion, NewEvent, RecordedEvent, Snapshot, StoreError, StoreRead,
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

    fn insert(&mut self, id: String, loaded: Loaded<A>) {
        if self.capacity == 0 {
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
    pub fn load_at(store: &impl StoreRead, id: &str, upto: Upto) -> Result<Loaded<A>, StoreError> {
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

    /// Runs one command inside `tx` and returns the events it appended (possibly none). When it
    /// appended events, `then` runs next, in the same transaction, with the state the aggregate
    /// reached (for inline projections: see `projection::Projection::apply_command`).
    pub fn execute<T: StoreWrite>(
        &mut self,
        tx: &mut T,
        cmd: Execute<A::Command>,
        then: impl FnOnce(&mut T, &A, &[RecordedEvent]) -> Result<(), StoreError>,
    ) -> Result<Vec<RecordedEvent>, CommandError> {
        let every = self.snapshot_every;
        if let Some(loaded) = self.cache.get_mut(A::target(&cmd.command)) {
            return execute_on(tx, loaded, cmd, every, then);
        }
        let id = A::target(&cmd.command).to_string();
        let mut loaded = Self::load_at(tx, &id, Upto::End)?;
        let result = execute_on(tx, &mut loaded, cmd, every, then);
        self.cache.insert(id, loaded);
        result
    }
}

/// Decides and appends; `loaded` changes only if events were appended.
fn execute_on<A: Aggregate, T: StoreWrite>(
    tx: &mut T,
    loaded: &mut Loaded<A>,
    cmd: Execute<A::Command>,
    snapshot_every: u64,
    then: impl FnOnce(&mut T, &A, &[RecordedEvent]) -> Result<(), StoreError>,
) -> Result<Vec<RecordedEvent>, CommandError> {
    let stream = StreamId::new(A::CATEGORY, A::target(&cmd.command));
    let id = stream.id.as_str();
    let time = match (cmd.time, loaded.last_time) {
        (Some(t), Some(last)) if t < last => {
            return Err(Rejection::invalid(format!(
                "timestamp {t} is earlier than the last event of '{id}' ({last}); \
                     event times never go backwards"
            ))
            .into())
        }
        (Some(t), _) => t,
        (None, last) => Timestamp::now().max(last.unwrap_or(Timestamp(i64::MIN))),
    };
    let events = loaded.state.decide_owned(cmd.command)?;
    let new: Vec<NewEvent> = events
        .iter()
        .map(|e| NewEvent {
            event_type: e.event_type().to_string(),
            timestamp: time,
            data: e.to_data(),
        })
        .collect();
    let recorded = tx.append(&stream, cmd.expected, new)?;
    if recorded.is_empty() {
        return Ok(recorded);
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
    Ok(recorded)
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
