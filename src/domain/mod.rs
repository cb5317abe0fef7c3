//! Aggregates: pure decision logic, no I/O.
//!
//! An aggregate is a state machine over its own event stream. [`Aggregate::decide`] looks at
//! the current state and a command and says which events happen (or why the command is
//! refused); [`Aggregate::evolve`] applies one event to the state. Deciding never changes state
//! and evolving never refuses: an event is a fact.
//!
//! A new aggregate is a new file here implementing these two traits; the engine, the stores
//! and the projections need no change.

use crate::store::Upcaster;

pub mod attributes;
pub mod testing;
pub mod user;

/// A domain event: a fact, named in the past tense, stored as a type name and a JSON object.
///
/// Its data is written in its type's current schema ([`crate::store::Schema`]): the first one,
/// until the type's shape changes. Then the aggregate keeps reading the old shape by adding an
/// [`Upcaster`] from the old schema to [`DomainEvent::UPCASTERS`] (which makes the next schema
/// the current one, written from then on); `from_data` only ever sees the current shape.
pub trait DomainEvent: Sized {
    /// The upcasters of this aggregate's event types (registered with the node by its plug-in).
    const UPCASTERS: &'static [Upcaster] = &[];

    /// `Some(event type)` if this aggregate's streams hold personal data: the store seals their
    /// events and snapshots under a key per stream, and an event of that type destroys the key
    /// ([`crate::store::seal`]). From then on every other event of the stream reads with data
    /// `null`: `from_data` must accept that (as an event whose content was forgotten).
    const FORGOTTEN: Option<&'static str> = None;

    /// The stored type name, e.g. `UserCreated`.
    fn event_type(&self) -> &'static str;
    /// The event's data as a JSON object.
    fn to_data(&self) -> String;
    /// Reads an event back from its stored type name and data.
    fn from_data(event_type: &str, data: &str) -> Result<Self, String>;
}

/// An event-sourced aggregate.
pub trait Aggregate: Default + Clone + Send + 'static {
    /// The category of its streams, e.g. `User`.
    const CATEGORY: &'static str;
    /// A command, read from its payload on a front end's thread and run on the node's writer
    /// thread (so `Send`); cloned only where a shared store may make a second decision.
    type Command: Clone + Send + 'static;
    type Event: DomainEvent;

    /// The id of the aggregate a command is addressed to.
    fn target(command: &Self::Command) -> &str;

    /// The events that the command causes in this state, or why it is refused. An empty list
    /// means the command is accepted but changes nothing.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    /// The same as [`Aggregate::decide`], for a command that is not needed afterwards: its data
    /// can move into the events instead of being copied. The engine calls this one; the default
    /// borrows.
    fn decide_owned(&self, command: Self::Command) -> Result<Vec<Self::Event>, Rejection> {
        self.decide(&command)
    }

    /// The state after one event.
    fn evolve(&mut self, event: &Self::Event);

    /// The same as [`Aggregate::evolve`], for an event that is not needed afterwards: its data
    /// can move into the state instead of being copied. The engine and the projections call this
    /// one; the default borrows.
    fn evolve_owned(&mut self, event: Self::Event) {
        self.evolve(&event)
    }

    /// Serialises the state for a snapshot.
    fn to_snapshot(&self) -> String;

    /// Reads a snapshot back.
    fn from_snapshot(state: &str) -> Result<Self, String>;
}

/// The codes a rejection can carry. An open set: these are the ones every aggregate may use
/// (the protocol names them); an aggregate adds its own (a bank account's `insufficient_funds`)
/// as constants beside its code, and the node passes them through to the client unchanged.
pub mod code {
    /// The command's values break a rule (empty name, bad email, time going backwards, ...).
    pub const VALIDATION_FAILED: &str = "validation_failed";
    /// Creating something whose id is taken.
    pub const ALREADY_EXISTS: &str = "already_exists";
    /// Changing something that was never created.
    pub const NOT_FOUND: &str = "not_found";
    /// Changing something that was deleted.
    pub const DELETED: &str = "deleted";
}

/// A command refused by the domain: a machine-readable `code` (snake case, see [`code`]) and a
/// human-readable reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    /// A [`code::VALIDATION_FAILED`] rejection.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::VALIDATION_FAILED, message)
    }
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
