//! Given/when/then tests for any [`Aggregate`], with no store at all.
//!
//! ```
//! use cqrs_node::domain::testing::AggregateTest;
//! use cqrs_node::domain::user::{User, UserCommand, UserEvent};
//! use cqrs_node::domain::code;
//!
//! let created = UserEvent::UserCreated {
//!     attributes: serde_json::from_str(r#"{"id":"u1","name":"John"}"#).unwrap(),
//! };
//! AggregateTest::<User>::given(vec![created.clone()])
//!     .when(UserCommand::RenameUser { id: "u1".into(), name: "Jane".into() })
//!     .then_events(vec![UserEvent::UserRenamed { name: "Jane".into() }]);
//! AggregateTest::<User>::given(vec![created, UserEvent::UserDeleted])
//!     .when(UserCommand::DeleteUser { id: "u1".into() })
//!     .then_rejected(code::DELETED);
//! AggregateTest::<User>::given_nothing()
//!     .when(UserCommand::DeleteUser { id: "u1".into() })
//!     .then_rejected(code::NOT_FOUND);
//! ```
//!
//! `given` folds the events with [`Aggregate::evolve`]; `when` runs [`Aggregate::decide`] on the
//! result. Besides the outcome, every `then_*` checks what must hold for any aggregate:
//! deciding is pure (the same answer twice, the state untouched), every decided event reads
//! back from its stored form ([`DomainEvent::to_data`] / [`DomainEvent::from_data`]) as itself,
//! and the state after the events survives a snapshot round trip.

use std::fmt::Debug;

use super::{Aggregate, DomainEvent, Rejection};

/// The "given" part: an aggregate's state built from its past events.
pub struct AggregateTest<A: Aggregate> {
    state: A,
}

impl<A> AggregateTest<A>
where
    A: Aggregate + PartialEq + Debug,
    A::Event: PartialEq + Debug + Clone,
    A::Command: Debug + Clone,
{
    /// The state after these events (the aggregate's history, oldest first).
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for e in events {
            state.evolve(&e);
        }
        Self { state }
    }

    /// An aggregate with no history.
    pub fn given_nothing() -> Self {
        Self::given(Vec::new())
    }

    /// The state the "given" events lead to.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides the command.
    pub fn when(self, command: A::Command) -> When<A> {
        let before = self.state.clone();
        let result = self.state.decide(&command);
        assert_eq!(
            self.state.decide(&command),
            result,
            "decide must give the same answer twice for {command:?}"
        );
        assert_eq!(
            self.state.decide_owned(command.clone()),
            result,
            "decide_owned must give the same answer as decide for {command:?}"
        );
        assert_eq!(self.state, before, "decide must not change the state");
        When {
            state: self.state,
            command,
            result,
        }
    }
}

/// The "when" part: a decided command, waiting for its expected outcome.
#[must_use = "a decided command must be checked with one of the then_* methods"]
pub struct When<A: Aggregate> {
    state: A,
    command: A::Command,
    result: Result<Vec<A::Event>, Rejection>,
}

impl<A> When<A>
where
    A: Aggregate + PartialEq + Debug,
    A::Event: PartialEq + Debug + Clone,
    A::Command: Debug + Clone,
{
    /// The raw outcome, for checks the `then_*` methods do not make.
    pub fn result(&self) -> &Result<Vec<A::Event>, Rejection> {
        &self.result
    }

    /// Asserts that exactly these events are decided (in this order) and returns the state
    /// after them.
    #[track_caller]
    pub fn then_events(self, expected: Vec<A::Event>) -> Then<A> {
        let events = match self.result {
            Ok(events) => events,
            Err(r) => panic!(
                "expected events {expected:?} for {:?}, but it was rejected ({:?}: {})",
                self.command, r.code, r.message
            ),
        };
        assert_eq!(
            events, expected,
            "decided events for {:?} in state {:?}",
            self.command, self.state
        );
        for e in &events {
            let back = A::Event::from_data(e.event_type(), &e.to_data())
                .unwrap_or_else(|m| panic!("{e:?} does not read back from its data: {m}"));
            assert_eq!(
                &back, e,
                "an event must read back from its stored form as itself"
            );
        }
        let mut state = self.state;
        let mut owned = state.clone();
        for e in &events {
            state.evolve(e);
            owned.evolve_owned(e.clone());
        }
        assert_eq!(
            owned, state,
            "evolve_owned must reach the same state as evolve"
        );
        let snapshot = state.to_snapshot();
        let restored = A::from_snapshot(&snapshot)
            .unwrap_or_else(|m| panic!("snapshot {snapshot} does not read back: {m}"));
        assert_eq!(
            restored, state,
            "the state must survive a snapshot round trip"
        );
        Then { state }
    }

    /// Asserts that the command is accepted but changes nothing.
    #[track_caller]
    pub fn then_no_events(self) -> Then<A> {
        self.then_events(Vec::new())
    }

    /// Asserts that the command is refused with this code (see [`super::code`]); returns the rejection (for checks
    /// on its message).
    #[track_caller]
    pub fn then_rejected(self, code: &str) -> Rejection {
        match self.result {
            Err(r) => {
                assert_eq!(
                    r.code, code,
                    "rejection of {:?} ({}), state {:?}",
                    self.command, r.message, self.state
                );
                assert!(!r.message.is_empty(), "a rejection must say why");
                r
            }
            Ok(events) => panic!(
                "expected {code:?} for {:?}, but it decided {events:?}",
                self.command
            ),
        }
    }
}

/// The "then" part after accepted events: the state they lead to.
pub struct Then<A: Aggregate> {
    state: A,
}

impl<A> Then<A>
where
    A: Aggregate + PartialEq + Debug,
    A::Event: PartialEq + Debug + Clone,
    A::Command: Debug + Clone,
{
    /// The state after the given events and the decided ones.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Asserts the state after the decided events.
    #[track_caller]
    pub fn then_state(self, expected: &A) -> Self {
        assert_eq!(&self.state, expected, "state after the decided events");
        self
    }

    /// Goes on from this state: the decided events become part of the "given" history.
    pub fn and_given(self) -> AggregateTest<A> {
        AggregateTest { state: self.state }
    }
}
