//! The `User` aggregate: five commands, five events.
//!
//! | command           | event              | rules                                             |
//! |-------------------|--------------------|---------------------------------------------------|
//! | `CreateUser`      | `UserCreated`      | id never used before (deleted ids stay taken)     |
//! | `UpdateUser`      | `UserUpdated`      | exists, not deleted; only changed attributes      |
//! | `RenameUser`      | `UserRenamed`      | exists, not deleted; name non-empty               |
//! | `ChangeUserEmail` | `UserEmailChanged` | exists, not deleted; email looks like `a@b`       |
//! | `DeleteUser`      | `UserDeleted`      | exists, not deleted yet                           |
//! | `ForgetUser`      | `UserForgotten`    | exists (deleted or not); a repeat changes nothing |
//!
//! Every attribute but `id` is personal data: the store seals the User streams
//! ([`DomainEvent::FORGOTTEN`], [`crate::store::seal`]) and `UserForgotten` destroys the key. An
//! event read after that has data `null` and becomes [`UserEvent::Forgotten`]: a forgotten user
//! is never visible again, at any time or version; it takes no command but `ForgetUser`
//! (`deleted`), and its id is never reused (`already_exists`).
//!
//! A command that would change nothing decides no events. Rules that need no state (shape of
//! the payload, non-empty name, email syntax, size limits) are checked when the command is
//! built from its payload ([`UserCommand::from_payload`]), before the aggregate is loaded.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{code, Aggregate, DomainEvent, Rejection};
use crate::store::{Schema, Upcaster};

/// Longest user id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most attributes a user can have, `id` and `name` included.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 256;
/// Largest attribute value, in bytes of JSON.
pub const MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;

/// A user's attributes: `id` first, `name` second, then the others in the order first set.
pub use super::attributes::Attributes;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Never created.
    #[default]
    Absent,
    Active,
    Deleted,
    /// Its personal data was forgotten (`UserForgotten`, or an event whose data is gone).
    Forgotten,
}

/// The User aggregate's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub status: Status,
    pub attributes: Attributes,
}

impl User {
    /// The state as queries show it: `None` unless the user exists and is not deleted.
    pub fn visible(&self) -> Option<&Attributes> {
        (self.status == Status::Active).then_some(&self.attributes)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum UserCommand {
    CreateUser { attributes: Attributes },
    UpdateUser { id: String, changes: Attributes },
    RenameUser { id: String, name: String },
    ChangeUserEmail { id: String, email: String },
    DeleteUser { id: String },
    ForgetUser { id: String },
}

/// Why a payload could not become a command.
#[derive(Debug, PartialEq)]
pub enum PayloadError {
    /// No such command type.
    UnknownCommand,
    Invalid(Rejection),
}

impl From<Rejection> for PayloadError {
    fn from(r: Rejection) -> Self {
        PayloadError::Invalid(r)
    }
}

impl UserCommand {
    /// The command types this aggregate understands.
    pub const KINDS: &'static [&'static str] = &[
        "CreateUser",
        "UpdateUser",
        "RenameUser",
        "ChangeUserEmail",
        "DeleteUser",
        "ForgetUser",
    ];

    /// Builds a command from its wire type and payload, checking every rule that needs no state.
    pub fn from_payload(kind: &str, mut payload: Attributes) -> Result<Self, PayloadError> {
        if !Self::KINDS.contains(&kind) {
            return Err(PayloadError::UnknownCommand);
        }
        let id = take_id(&mut payload)?;
        Ok(match kind {
            "CreateUser" => {
                let name = payload
                    .shift_remove("name")
                    .ok_or_else(|| Rejection::invalid("payload.name is required"))?;
                check_name(&name)?;
                check_size("name", &name)?;
                let mut attributes = Attributes::new();
                attributes.insert("id".into(), Value::String(id));
                attributes.insert("name".into(), name);
                check_attributes(&payload)?;
                if payload.len() + 2 > MAX_ATTRIBUTES {
                    return Err(too_many().into());
                }
                attributes.extend(payload);
                UserCommand::CreateUser { attributes }
            }
            "UpdateUser" => {
                if let Some(name) = payload.get("name") {
                    check_name(name)?;
                }
                check_attributes(&payload)?;
                UserCommand::UpdateUser {
                    id,
                    changes: payload,
                }
            }
            "RenameUser" => {
                let name = payload
                    .shift_remove("name")
                    .ok_or_else(|| Rejection::invalid("payload.name is required"))?;
                check_name(&name)?;
                check_size("name", &name)?;
                UserCommand::RenameUser {
                    id,
                    name: name.as_str().unwrap_or_default().to_string(),
                }
            }
            "ChangeUserEmail" => {
                let email = payload
                    .shift_remove("email")
                    .ok_or_else(|| Rejection::invalid("payload.email is required"))?;
                check_size("email", &email)?;
                check_email(&email)?;
                UserCommand::ChangeUserEmail {
                    id,
                    email: email.as_str().unwrap_or_default().to_string(),
                }
            }
            "DeleteUser" => UserCommand::DeleteUser { id },
            _ => UserCommand::ForgetUser { id },
        })
    }
}

fn take_id(payload: &mut Attributes) -> Result<String, Rejection> {
    match payload.shift_remove("id") {
        Some(Value::String(id)) if id.is_empty() => {
            Err(Rejection::invalid("payload.id must not be empty"))
        }
        Some(Value::String(id)) if id.len() > MAX_ID_BYTES => Err(Rejection::invalid(format!(
            "payload.id is {} bytes long; the limit is {MAX_ID_BYTES}",
            id.len()
        ))),
        Some(Value::String(id)) => Ok(id),
        Some(_) => Err(Rejection::invalid("payload.id must be a string")),
        None => Err(Rejection::invalid("payload.id is required")),
    }
}

fn check_name(name: &Value) -> Result<(), Rejection> {
    match name {
        Value::String(s) if s.trim().is_empty() => {
            Err(Rejection::invalid("name must be a non-empty string"))
        }
        Value::String(_) => Ok(()),
        _ => Err(Rejection::invalid("name must be a non-empty string")),
    }
}

/// `local@domain`: one `@`, something on each side, no spaces or control characters.
fn check_email(email: &Value) -> Result<(), Rejection> {
    let ok = email.as_str().is_some_and(|s| {
        let mut parts = s.split('@');
        let (local, domain, rest) = (parts.next(), parts.next(), parts.next());
        matches!((local, domain, rest), (Some(l), Some(d), None) if !l.is_empty() && !d.is_empty())
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(format!(
            "email must look like an address (local@domain), got {email}"
        )))
    }
}

fn too_many() -> Rejection {
    Rejection::invalid(format!("a user has at most {MAX_ATTRIBUTES} attributes"))
}

/// The size limit of one attribute value (`name` included), in bytes of JSON.
fn check_size(key: &str, value: &Value) -> Result<(), Rejection> {
    // A string of n bytes is at most 6n + 2 bytes of JSON (every byte escaped as \u00XX).
    if matches!(value, Value::String(s) if s.len() <= (MAX_ATTRIBUTE_BYTES - 2) / 6) {
        return Ok(());
    }
    let size = json_len(value);
    if size > MAX_ATTRIBUTE_BYTES {
        return Err(Rejection::invalid(format!(
            "attribute '{key}' is {size} bytes of JSON; the limit is {MAX_ATTRIBUTE_BYTES}"
        )));
    }
    Ok(())
}

/// Size limits and the email rule for every attribute being set.
/// The length of a value's JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(usize::MAX, |()| count.0)
}

fn check_attributes(attributes: &Attributes) -> Result<(), Rejection> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(too_many());
    }
    for (key, value) in attributes {
        if key.is_empty() || key.len() > MAX_ATTRIBUTE_NAME_BYTES {
            return Err(Rejection::invalid(format!(
                "attribute names must be 1 to {MAX_ATTRIBUTE_NAME_BYTES} bytes long"
            )));
        }
        check_size(key, value)?;
        if key == "email" {
            check_email(value)?;
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub enum UserEvent {
    /// Data: every attribute, `id` and `name` first.
    UserCreated {
        attributes: Attributes,
    },
    /// Data: only the attributes that changed.
    UserUpdated {
        changes: Attributes,
    },
    UserRenamed {
        name: String,
    },
    UserEmailChanged {
        email: String,
    },
    UserDeleted,
    /// Data: `{}`. The user's key is destroyed with it.
    UserForgotten,
    /// An event of type `kind` as it reads once its user was forgotten: data `null`. Never
    /// decided, only read.
    Forgotten {
        kind: &'static str,
    },
}

/// The User event types (the wire names of [`UserEvent`] but `Forgotten`).
const EVENT_TYPES: &[&str] = &[
    "UserCreated",
    "UserUpdated",
    "UserRenamed",
    "UserEmailChanged",
    "UserDeleted",
    "UserForgotten",
];

/// The data of `UserRenamed`: `{"name": ...}` (other keys are ignored when read).
#[derive(Serialize, Deserialize)]
struct Name<S> {
    name: S,
}

/// The data of `UserEmailChanged`: `{"email": ...}`.
#[derive(Serialize, Deserialize)]
struct Email<S> {
    email: S,
}

/// The history of the User events' shapes: every type is in its first schema but
/// `UserCreated`, which also reads schema 0.
///
/// Schema 0 of `UserCreated` is a shape no release of cqrs wrote: `{"userId", "fullName",
/// ...}` for `{"id", "name", ...}`. It stands for an old shape so that the upcasting path is
/// exercised by the shipped binary (tests/upcasting.rs stores such an event by hand and reads it
/// through the node), and it is the pattern for the next real change of a User event.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "UserCreated",
    from: Schema(0),
    upcast: user_created_0_to_1,
}];

/// `UserCreated` schema 0 to 1: `userId` becomes `id` and `fullName` becomes `name`, each in its
/// place (the attributes keep their order).
fn user_created_0_to_1(data: Map<String, Value>) -> Result<Map<String, Value>, String> {
    if !data.contains_key("userId") {
        return Err("UserCreated of schema 0 has no userId".into());
    }
    Ok(data
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "userId" => ("id".to_string(), v),
            "fullName" => ("name".to_string(), v),
            _ => (k, v),
        })
        .collect())
}

impl DomainEvent for UserEvent {
    const UPCASTERS: &'static [Upcaster] = UPCASTERS;
    const FORGOTTEN: Option<&'static str> = Some("UserForgotten");

    fn event_type(&self) -> &'static str {
        match self {
            UserEvent::UserCreated { .. } => "UserCreated",
            UserEvent::UserUpdated { .. } => "UserUpdated",
            UserEvent::UserRenamed { .. } => "UserRenamed",
            UserEvent::UserEmailChanged { .. } => "UserEmailChanged",
            UserEvent::UserDeleted => "UserDeleted",
            UserEvent::UserForgotten => "UserForgotten",
            UserEvent::Forgotten { kind } => kind,
        }
    }

    fn to_data(&self) -> String {
        let value = match self {
            UserEvent::UserCreated { attributes } => Ok(attributes.to_json()),
            UserEvent::UserUpdated { changes } => Ok(changes.to_json()),
            UserEvent::UserRenamed { name } => serde_json::to_string(&Name { name }),
            UserEvent::UserEmailChanged { email } => serde_json::to_string(&Email { email }),
            UserEvent::UserDeleted | UserEvent::UserForgotten => Ok("{}".to_string()),
            UserEvent::Forgotten { .. } => Ok("null".to_string()),
        };
        value.expect("a JSON map always serialises")
    }

    fn from_data(event_type: &str, data: &str) -> Result<Self, String> {
        fn parse<'a, T: Deserialize<'a>>(event_type: &str, data: &'a str) -> Result<T, String> {
            serde_json::from_str(data).map_err(|e| format!("{event_type} data: {e}"))
        }
        if data == "null" {
            return match EVENT_TYPES.iter().find(|t| **t == event_type) {
                Some(kind) => Ok(UserEvent::Forgotten { kind }),
                None => Err(format!("unknown User event type '{event_type}'")),
            };
        }
        Ok(match event_type {
            "UserCreated" => UserEvent::UserCreated {
                attributes: parse(event_type, data)?,
            },
            "UserUpdated" => UserEvent::UserUpdated {
                changes: parse(event_type, data)?,
            },
            "UserRenamed" => UserEvent::UserRenamed {
                name: parse::<Name<String>>(event_type, data)?.name,
            },
            "UserEmailChanged" => UserEvent::UserEmailChanged {
                email: parse::<Email<String>>(event_type, data)?.email,
            },
            "UserDeleted" => {
                parse::<Attributes>(event_type, data)?;
                UserEvent::UserDeleted
            }
            "UserForgotten" => {
                parse::<Attributes>(event_type, data)?;
                UserEvent::UserForgotten
            }
            other => return Err(format!("unknown User event type '{other}'")),
        })
    }
}

impl User {
    fn must_be_active(&self, id: &str) -> Result<(), Rejection> {
        match self.status {
            Status::Active => Ok(()),
            Status::Absent => Err(Rejection::new(
                code::NOT_FOUND,
                format!("user '{id}' does not exist"),
            )),
            Status::Deleted => Err(Rejection::new(
                code::DELETED,
                format!("user '{id}' was deleted"),
            )),
            Status::Forgotten => Err(Rejection::new(
                code::DELETED,
                format!("user '{id}' was forgotten"),
            )),
        }
    }

    fn differs(&self, key: &str, value: &Value) -> bool {
        self.attributes.get(key) != Some(value)
    }

    /// Why a `CreateUser` for `id` is refused in this state (it exists, or existed).
    fn create_refused(&self, id: &str) -> Rejection {
        if self.status == Status::Forgotten {
            Rejection::new(
                code::ALREADY_EXISTS,
                format!("user id '{id}' belonged to a forgotten user and cannot be reused"),
            )
        } else if self.status == Status::Deleted {
            Rejection::new(
                code::ALREADY_EXISTS,
                format!("user id '{id}' belonged to a deleted user and cannot be reused"),
            )
        } else {
            Rejection::new(code::ALREADY_EXISTS, format!("user '{id}' already exists"))
        }
    }

    /// [`User::differs`] for a string value, without making a `Value` of it.
    fn differs_str(&self, key: &str, value: &str) -> bool {
        !matches!(self.attributes.get(key), Some(Value::String(s)) if s == value)
    }
}

impl Aggregate for User {
    const CATEGORY: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;

    fn target(command: &UserCommand) -> &str {
        match command {
            UserCommand::CreateUser { attributes } => {
                attributes.get("id").and_then(Value::as_str).unwrap_or("")
            }
            UserCommand::UpdateUser { id, .. }
            | UserCommand::RenameUser { id, .. }
            | UserCommand::ChangeUserEmail { id, .. }
            | UserCommand::DeleteUser { id }
            | UserCommand::ForgetUser { id } => id,
        }
    }

    fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, Rejection> {
        self.decide_owned(command.clone())
    }

    fn decide_owned(&self, command: UserCommand) -> Result<Vec<UserEvent>, Rejection> {
        match command {
            UserCommand::CreateUser { attributes } => match self.status {
                Status::Absent => Ok(vec![UserEvent::UserCreated { attributes }]),
                _ => {
                    let id = attributes.get("id").and_then(Value::as_str).unwrap_or("");
                    Err(self.create_refused(id))
                }
            },
            UserCommand::UpdateUser { changes, id } => {
                self.must_be_active(&id)?;
                let changed: Attributes = changes
                    .into_iter()
                    .filter(|(k, v)| self.differs(k, v))
                    .collect();
                let new_keys = changed
                    .keys()
                    .filter(|k| !self.attributes.contains_key(k))
                    .count();
                if self.attributes.len() + new_keys > MAX_ATTRIBUTES {
                    return Err(too_many());
                }
                Ok(if changed.is_empty() {
                    vec![]
                } else {
                    vec![UserEvent::UserUpdated { changes: changed }]
                })
            }
            UserCommand::RenameUser { name, id } => {
                self.must_be_active(&id)?;
                Ok(if self.differs_str("name", &name) {
                    vec![UserEvent::UserRenamed { name }]
                } else {
                    vec![]
                })
            }
            UserCommand::ChangeUserEmail { email, id } => {
                self.must_be_active(&id)?;
                if !self.differs_str("email", &email) {
                    return Ok(vec![]);
                }
                if !self.attributes.contains_key("email") && self.attributes.len() >= MAX_ATTRIBUTES
                {
                    return Err(too_many());
                }
                Ok(vec![UserEvent::UserEmailChanged { email }])
            }
            UserCommand::DeleteUser { id } => {
                self.must_be_active(&id)?;
                Ok(vec![UserEvent::UserDeleted])
            }
            UserCommand::ForgetUser { id } => match self.status {
                Status::Absent => Err(Rejection::new(
                    code::NOT_FOUND,
                    format!("user '{id}' does not exist"),
                )),
                Status::Forgotten => Ok(vec![]),
                Status::Active | Status::Deleted => Ok(vec![UserEvent::UserForgotten]),
            },
        }
    }

    fn evolve(&mut self, event: &UserEvent) {
        self.evolve_owned(event.clone())
    }

    fn evolve_owned(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserCreated { attributes } => {
                self.status = Status::Active;
                self.attributes = attributes;
            }
            UserEvent::UserUpdated { changes } => {
                for (k, v) in changes {
                    self.attributes.insert(k, v);
                }
            }
            UserEvent::UserRenamed { name } => {
                self.attributes.insert("name".into(), Value::String(name));
            }
            UserEvent::UserEmailChanged { email } => {
                self.attributes.insert("email".into(), Value::String(email));
            }
            UserEvent::UserDeleted => self.status = Status::Deleted,
            UserEvent::UserForgotten | UserEvent::Forgotten { .. } => {
                self.status = Status::Forgotten;
                self.attributes = Attributes::new();
            }
        }
    }

    fn to_snapshot(&self) -> String {
        serde_json::to_string(self).expect("User always serialises")
    }

    fn from_snapshot(state: &str) -> Result<Self, String> {
        serde_json::from_str(state).map_err(|e| format!("User snapshot: {e}"))
    }
}
