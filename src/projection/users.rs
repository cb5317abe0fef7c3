//! The users read model: one document per live user, keyed by id, holding the user's state
//! exactly as `GetUser` returns it. Deleted users have no document. Serves `GetUser` and
//! `ListUsers`.
//!
//! The state is computed with the aggregate's own `evolve`, so the read model and the aggregate
//! can never disagree on what an event means. When a command runs, the engine hands over the
//! state it has just evolved and the document is written from it directly
//! ([`Projection::apply_command`]); replays (catch-up, rebuild, verify) apply event by event.

use std::any::Any;

use super::{Documents, Projection};
use crate::domain::user::{Attributes, Status, User, UserEvent};
use crate::domain::{Aggregate, DomainEvent};
use crate::store::{PersonalDocuments, RecordedEvent, StoreError};

pub const COLLECTION: &str = "users";

pub struct UsersProjection;

impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn collections(&self) -> &'static [&'static str] {
        &[COLLECTION]
    }

    /// A document is a user's state, keyed by its id.
    fn personal(&self) -> &'static [PersonalDocuments] {
        &[PersonalDocuments {
            collection: COLLECTION,
            category: User::CATEGORY,
            owner: PersonalDocuments::keyed_by_id,
        }]
    }

    fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), StoreError> {
        if event.stream.category != User::CATEGORY {
            return Ok(());
        }
        let corrupt = |msg: String| StoreError::Corrupt(format!("event {}: {msg}", event.position));
        let e = UserEvent::from_data(&event.event_type, &event.data).map_err(corrupt)?;
        let key = &event.stream.id;
        let mut user = match docs.get(COLLECTION, key)? {
            Some(doc) => User {
                status: Status::Active,
                attributes: serde_json::from_str::<Attributes>(&doc)
                    .map_err(|e| corrupt(format!("users document: {e}")))?,
            },
            None if matches!(e, UserEvent::UserCreated { .. }) => User::default(),
            // An update to a user with no document (deleted, or never created): nothing to show.
            None => return Ok(()),
        };
        user.evolve_owned(e);
        write(docs, key, &user)
    }

    fn apply_command(
        &self,
        docs: &mut dyn Documents,
        events: &[RecordedEvent],
        state: &dyn Any,
    ) -> Result<(), StoreError> {
        match (events.last(), state.downcast_ref::<User>()) {
            (Some(last), Some(user)) if last.stream.category == User::CATEGORY => {
                write(docs, &last.stream.id, user)
            }
            // Another aggregate's events: not ours (the default would ignore them one by one).
            _ => events.iter().try_for_each(|e| self.apply(docs, e)),
        }
    }
}

/// The user's document: its attributes while it is active, none otherwise.
fn write(docs: &mut dyn Documents, key: &str, user: &User) -> Result<(), StoreError> {
    match user.visible() {
        Some(attributes) => docs.put(COLLECTION, key, Some(&attributes.to_json())),
        None => docs.put(COLLECTION, key, None),
    }
}
