//! Given/when/then tests of the User aggregate, with no store at all, and unit tests of the
//! stateless validation in [`UserCommand::from_payload`].

use cqrs_node::domain::testing::AggregateTest;
use cqrs_node::domain::user::{
    Attributes, PayloadError, Status, User, UserCommand, UserEvent, MAX_ATTRIBUTES,
    MAX_ATTRIBUTE_BYTES, MAX_ATTRIBUTE_NAME_BYTES, MAX_ID_BYTES,
};
use cqrs_node::domain::{code, Aggregate};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

fn attrs(v: Value) -> Attributes {
    match v {
        Value::Object(m) => m.into(),
        other => panic!("not an object: {other}"),
    }
}

/// A command from its wire form; panics if the payload is invalid.
fn cmd(kind: &str, payload: Value) -> UserCommand {
    UserCommand::from_payload(kind, attrs(payload))
        .unwrap_or_else(|e| panic!("{kind} payload should be valid: {e:?}"))
}

/// The validation failure of a payload; panics if it is valid.
fn invalid(kind: &str, payload: Value) -> String {
    match UserCommand::from_payload(kind, attrs(payload.clone())) {
        Err(PayloadError::Invalid(r)) => {
            assert_eq!(r.code, code::VALIDATION_FAILED);
            assert!(!r.message.is_empty());
            r.message
        }
        other => panic!("{kind} {payload} should fail validation, got {other:?}"),
    }
}

fn created(v: Value) -> UserEvent {
    UserEvent::UserCreated {
        attributes: attrs(v),
    }
}

fn updated(v: Value) -> UserEvent {
    UserEvent::UserUpdated { changes: attrs(v) }
}

fn renamed(name: &str) -> UserEvent {
    UserEvent::UserRenamed { name: name.into() }
}

fn email_changed(email: &str) -> UserEvent {
    UserEvent::UserEmailChanged {
        email: email.into(),
    }
}

fn john() -> UserEvent {
    created(json!({"id": "u1", "name": "John", "email": "john@example.com"}))
}

fn active(v: Value) -> User {
    User {
        status: Status::Active,
        attributes: attrs(v),
    }
}

/// The keys of the visible state, in order.
fn keys(user: &User) -> Vec<String> {
    user.visible()
        .expect("user is visible")
        .keys()
        .cloned()
        .collect()
}

type T = AggregateTest<User>;

// ---------------------------------------------------------------------------------------------
// CreateUser

#[test]
fn create_user() {
    T::given_nothing()
        .when(cmd("CreateUser", json!({"id": "u1", "name": "John"})))
        .then_events(vec![created(json!({"id": "u1", "name": "John"}))])
        .then_state(&active(json!({"id": "u1", "name": "John"})));
}

#[test]
fn create_user_keeps_every_other_attribute() {
    T::given_nothing()
        .when(cmd(
            "CreateUser",
            json!({"id": "u1", "name": "John", "email": "john@example.com", "age": 42,
                   "tags": ["a", "b"], "address": {"city": "Oslo"}, "nothing": null}),
        ))
        .then_events(vec![created(json!({
            "id": "u1", "name": "John", "email": "john@example.com", "age": 42,
            "tags": ["a", "b"], "address": {"city": "Oslo"}, "nothing": null
        }))]);
}

#[test]
fn create_user_puts_id_then_name_then_the_rest_in_payload_order() {
    let then = T::given_nothing()
        .when(cmd(
            "CreateUser",
            json!({"zeta": 1, "email": "a@b", "name": "John", "alpha": 2, "id": "u1"}),
        ))
        .then_events(vec![created(json!({
            "id": "u1", "name": "John", "zeta": 1, "email": "a@b", "alpha": 2
        }))]);
    assert_eq!(keys(then.state()), ["id", "name", "zeta", "email", "alpha"]);
}

#[test]
fn create_user_twice_is_already_exists() {
    let r = T::given(vec![john()])
        .when(cmd("CreateUser", json!({"id": "u1", "name": "Other"})))
        .then_rejected(code::ALREADY_EXISTS);
    assert!(r.message.contains("u1"), "{}", r.message);
    // Even with exactly the same attributes: a create is never a no-op.
    T::given(vec![john()])
        .when(cmd(
            "CreateUser",
            json!({"id": "u1", "name": "John", "email": "john@example.com"}),
        ))
        .then_rejected(code::ALREADY_EXISTS);
}

#[test]
fn a_deleted_users_id_stays_taken() {
    T::given(vec![john(), UserEvent::UserDeleted])
        .when(cmd("CreateUser", json!({"id": "u1", "name": "John"})))
        .then_rejected(code::ALREADY_EXISTS);
    T::given(vec![john(), renamed("Johnny"), UserEvent::UserDeleted])
        .when(cmd("CreateUser", json!({"id": "u1", "name": "New"})))
        .then_rejected(code::ALREADY_EXISTS);
}

// ---------------------------------------------------------------------------------------------
// UpdateUser

#[test]
fn update_user_emits_only_changed_attributes() {
    T::given(vec![john()])
        .when(cmd(
            "UpdateUser",
            json!({"id": "u1", "name": "John", "email": "new@example.com", "age": 3}),
        ))
        .then_events(vec![updated(json!({"email": "new@example.com", "age": 3}))])
        .then_state(&active(json!({
            "id": "u1", "name": "John", "email": "new@example.com", "age": 3
        })));
}

#[test]
fn update_user_compares_json_values_exactly() {
    // 1 and 1.0 are different JSON; "1" and 1 too; null is a value like any other.
    T::given(vec![created(
        json!({"id": "u1", "name": "John", "n": 1, "s": "1", "z": null}),
    )])
    .when(cmd(
        "UpdateUser",
        json!({"id": "u1", "n": 1.0, "s": 1, "z": null, "new": null}),
    ))
    .then_events(vec![updated(json!({"n": 1.0, "s": 1, "new": null}))]);
}

#[test]
fn update_user_with_same_values_is_a_no_op() {
    T::given(vec![john()])
        .when(cmd(
            "UpdateUser",
            json!({"id": "u1", "name": "John", "email": "john@example.com"}),
        ))
        .then_no_events()
        .then_state(&active(json!({
            "id": "u1", "name": "John", "email": "john@example.com"
        })));
    // Nothing to change at all.
    T::given(vec![john()])
        .when(cmd("UpdateUser", json!({"id": "u1"})))
        .then_no_events();
}

#[test]
fn update_user_cannot_change_the_id() {
    // The payload's id names the user; it is never an attribute change.
    let c = cmd("UpdateUser", json!({"id": "u1", "name": "Jane"}));
    assert_eq!(
        c,
        UserCommand::UpdateUser {
            id: "u1".into(),
            changes: attrs(json!({"name": "Jane"}))
        }
    );
    T::given(vec![john()])
        .when(c)
        .then_events(vec![updated(json!({"name": "Jane"}))]);
}

#[test]
fn update_user_that_does_not_exist_is_not_found() {
    let r = T::given_nothing()
        .when(cmd("UpdateUser", json!({"id": "u1", "name": "X"})))
        .then_rejected(code::NOT_FOUND);
    assert!(r.message.contains("u1"), "{}", r.message);
    // Even when it would change nothing.
    T::given_nothing()
        .when(cmd("UpdateUser", json!({"id": "u1"})))
        .then_rejected(code::NOT_FOUND);
}

#[test]
fn update_user_that_was_deleted_is_deleted() {
    T::given(vec![john(), UserEvent::UserDeleted])
        .when(cmd("UpdateUser", json!({"id": "u1", "name": "X"})))
        .then_rejected(code::DELETED);
    T::given(vec![john(), UserEvent::UserDeleted])
        .when(cmd("UpdateUser", json!({"id": "u1", "name": "John"})))
        .then_rejected(code::DELETED);
}

// ---------------------------------------------------------------------------------------------
// RenameUser

#[test]
fn rename_user() {
    T::given(vec![john()])
        .when(cmd("RenameUser", json!({"id": "u1", "name": "John Doe"})))
        .then_events(vec![renamed("John Doe")])
        .then_state(&active(json!({
            "id": "u1", "name": "John Doe", "email": "john@example.com"
        })));
}

#[test]
fn rename_user_to_the_same_name_is_a_no_op() {
    T::given(vec![john()])
        .when(cmd("RenameUser", json!({"id": "u1", "name": "John"})))
        .then_no_events();
    T::given(vec![john(), renamed("Jo")])
        .when(cmd("RenameUser", json!({"id": "u1", "name": "Jo"})))
        .then_no_events();
}

#[test]
fn rename_user_ignores_other_attributes() {
    assert_eq!(
        cmd(
            "RenameUser",
            json!({"id": "u1", "name": "Jo", "email": "x@y", "age": 3})
        ),
        UserCommand::RenameUser {
            id: "u1".into(),
            name: "Jo".into()
        }
    );
}

#[test]
fn rename_user_not_found_and_deleted() {
    T::given_nothing()
        .when(cmd("RenameUser", json!({"id": "u1", "name": "Jo"})))
        .then_rejected(code::NOT_FOUND);
    T::given(vec![john(), UserEvent::UserDeleted])
        .when(cmd("RenameUser", json!({"id": "u1", "name": "Jo"})))
        .then_rejected(code::DELETED);
    // A no-op on a deleted user is still refused.
    T::given(vec![john(), UserEvent::UserDeleted])
        .when(cmd("RenameUser", json!({"id": "u1", "name": "John"})))
        .then_rejected(code::DELETED);
}

// ---------------------------------------------------------------------------------------------
// ChangeUserEmail

#[test]
fn change_user_email() {
    T::given(vec![john()])
        .when(cmd(
            "ChangeUserEmail",
            json!({"id": "u1", "email": "jd@example.org"}),
        ))
        .then_events(vec![email_changed("jd@example.org")])
        .then_state(&active(json!({
            "id": "u1", "name": "John", "email": "jd@example.org"
        })));
}

#[test]
fn change_user_email_to_the_same_address_is_a_no_op() {
    T::given(vec![john()])
        .when(cmd(
            "ChangeUserEmail",
            json!({"id": "u1", "email": "john@example.com"}),
        ))
        .then_no_events();
}

#[test]
fn change_user_email_of_a_user_without_one_adds_it_last() {
    let then = T::given(vec![created(json!({"id": "u1", "name": "John", "age": 3}))])
        .when(cmd("ChangeUserEmail", json!({"id": "u1", "email": "a@b"})))
        .then_events(vec![email_changed("a@b")]);
    assert_eq!(keys(then.state()), ["id", "name", "age", "email"]);
}

#[test]
fn change_user_email_not_found_and_deleted() {
    T::given_nothing()
        .when(cmd("ChangeUserEmail", json!({"id": "u1", "email": "a@b"})))
        .then_rejected(code::NOT_FOUND);
    T::given(vec![john(), UserEvent::UserDeleted])
        .when(cmd("ChangeUserEmail", json!({"id": "u1", "email": "a@b"})))
        .then_rejected(code::DELETED);
}

// ---------------------------------------------------------------------------------------------
// DeleteUser

#[test]
fn delete_user() {
    let then = T::given(vec![john()])
        .when(cmd("DeleteUser", json!({"id": "u1"})))
        .then_events(vec![UserEvent::UserDeleted]);
    assert_eq!(then.state().status, Status::Deleted);
    assert_eq!(then.state().visible(), None);
}

#[test]
fn delete_user_twice_is_deleted() {
    T::given(vec![john(), UserEvent::UserDeleted])
        .when(cmd("DeleteUser", json!({"id": "u1"})))
        .then_rejected(code::DELETED);
}

#[test]
fn delete_user_that_does_not_exist_is_not_found() {
    T::given_nothing()
        .when(cmd("DeleteUser", json!({"id": "u1"})))
        .then_rejected(code::NOT_FOUND);
}

#[test]
fn delete_user_ignores_other_payload_keys() {
    assert_eq!(
        cmd("DeleteUser", json!({"id": "u1", "name": "", "email": 3})),
        UserCommand::DeleteUser { id: "u1".into() }
    );
}

// ---------------------------------------------------------------------------------------------
// Attribute order through a whole history

#[test]
fn attribute_order_is_id_name_then_first_set() {
    let then = T::given(vec![created(json!({"id": "u1", "name": "John", "b": 1}))])
        .when(cmd("UpdateUser", json!({"id": "u1", "c": 2, "a": 3})))
        .then_events(vec![updated(json!({"c": 2, "a": 3}))])
        .and_given()
        // Changing existing attributes (name included) keeps their places.
        .when(cmd(
            "UpdateUser",
            json!({"id": "u1", "a": 30, "name": "Jo", "b": 10}),
        ))
        .then_events(vec![updated(json!({"a": 30, "name": "Jo", "b": 10}))])
        .and_given()
        .when(cmd("RenameUser", json!({"id": "u1", "name": "Joe"})))
        .then_events(vec![renamed("Joe")])
        .and_given()
        .when(cmd("ChangeUserEmail", json!({"id": "u1", "email": "j@x"})))
        .then_events(vec![email_changed("j@x")])
        .and_given()
        .when(cmd(
            "UpdateUser",
            json!({"id": "u1", "email": "k@x", "d": 4}),
        ))
        .then_events(vec![updated(json!({"email": "k@x", "d": 4}))]);
    assert_eq!(
        keys(then.state()),
        ["id", "name", "b", "c", "a", "email", "d"]
    );
    assert_eq!(
        serde_json::to_string(then.state().visible().unwrap()).unwrap(),
        r#"{"id":"u1","name":"Joe","b":10,"c":2,"a":30,"email":"k@x","d":4}"#
    );
}

#[test]
fn a_deleted_user_is_not_visible_but_keeps_its_history() {
    let then = T::given(vec![john(), renamed("Jo")])
        .when(cmd("DeleteUser", json!({"id": "u1"})))
        .then_events(vec![UserEvent::UserDeleted]);
    assert_eq!(then.state().visible(), None);
    assert_eq!(then.state().attributes["name"], json!("Jo"));
}

// ---------------------------------------------------------------------------------------------
// Validation (stateless, in from_payload)

#[test]
fn unknown_command_types() {
    for kind in ["", "createUser", "CreateUsers", "Foo", "create_user"] {
        assert_eq!(
            UserCommand::from_payload(kind, attrs(json!({"id": "u1", "name": "x"}))),
            Err(PayloadError::UnknownCommand),
            "{kind}"
        );
    }
    // The type is checked before the payload.
    assert_eq!(
        UserCommand::from_payload("Foo", attrs(json!({}))),
        Err(PayloadError::UnknownCommand)
    );
    for kind in UserCommand::KINDS {
        assert_ne!(
            UserCommand::from_payload(kind, attrs(json!({"id": "u", "name": "n", "email": "a@b"}))),
            Err(PayloadError::UnknownCommand)
        );
    }
}

#[test]
fn id_is_required_non_empty_string_within_limit() {
    for kind in UserCommand::KINDS {
        let base = json!({"name": "John", "email": "a@b"});
        let with = |id: Value| {
            let mut p = base.clone();
            p["id"] = id;
            p
        };
        invalid(kind, base.clone());
        invalid(kind, with(json!("")));
        invalid(kind, with(json!(null)));
        invalid(kind, with(json!(42)));
        invalid(kind, with(json!(["u1"])));
        invalid(kind, with(json!({"id": "u1"})));
        let msg = invalid(kind, with(json!("x".repeat(MAX_ID_BYTES + 1))));
        assert!(msg.contains(&MAX_ID_BYTES.to_string()), "{msg}");
        // The limit is in bytes: 129 two-byte characters are 258 bytes.
        invalid(kind, with(json!("é".repeat(MAX_ID_BYTES / 2 + 1))));
        let c = cmd(kind, with(json!("x".repeat(MAX_ID_BYTES))));
        assert_eq!(User::target(&c), "x".repeat(MAX_ID_BYTES));
        // Whitespace and any other character are fine in an id.
        let c = cmd(kind, with(json!(" a/b c ☃ ")));
        assert_eq!(User::target(&c), " a/b c ☃ ");
    }
}

#[test]
fn name_is_required_for_create_and_rename() {
    for kind in ["CreateUser", "RenameUser"] {
        let msg = invalid(kind, json!({"id": "u1"}));
        assert!(msg.contains("name"), "{msg}");
    }
    // Optional for an update.
    cmd("UpdateUser", json!({"id": "u1", "age": 3}));
}

#[test]
fn name_must_be_a_non_empty_string() {
    for kind in ["CreateUser", "RenameUser", "UpdateUser"] {
        for bad in [
            json!(""),
            json!(" "),
            json!("\t\n "),
            json!(null),
            json!(42),
            json!(true),
            json!(["John"]),
            json!({"first": "John"}),
        ] {
            let msg = invalid(kind, json!({"id": "u1", "name": bad}));
            assert!(msg.contains("name"), "{kind} {bad}: {msg}");
        }
        // Inner and outer spaces are kept as given.
        let c = cmd(kind, json!({"id": "u1", "name": " John  Doe "}));
        match c {
            UserCommand::CreateUser { attributes } => {
                assert_eq!(attributes["name"], json!(" John  Doe "))
            }
            UserCommand::RenameUser { name, .. } => assert_eq!(name, " John  Doe "),
            UserCommand::UpdateUser { changes, .. } => {
                assert_eq!(changes["name"], json!(" John  Doe "))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn email_must_look_like_an_address() {
    let bad = [
        json!(""),
        json!("john"),
        json!("john@"),
        json!("@example.com"),
        json!("@"),
        json!("a@b@c"),
        json!("john doe@example.com"),
        json!("john@exa mple.com"),
        json!(" john@example.com"),
        json!("john@example.com\n"),
        json!("jo\u{7}hn@example.com"),
        json!(null),
        json!(42),
        json!(["a@b"]),
        json!({"email": "a@b"}),
    ];
    for email in &bad {
        let msg = invalid("ChangeUserEmail", json!({"id": "u1", "email": email}));
        assert!(msg.contains("email"), "{email}: {msg}");
        // Anywhere an email attribute is set.
        invalid(
            "CreateUser",
            json!({"id": "u1", "name": "John", "email": email}),
        );
        invalid("UpdateUser", json!({"id": "u1", "email": email}));
    }
    let msg = invalid("ChangeUserEmail", json!({"id": "u1"}));
    assert!(msg.contains("email"), "{msg}");
    for good in [
        "a@b",
        "john@example.com",
        "john.doe+tag@sub.example.co.uk",
        "ünï@cödé.example",
        "\"quoted\"@example.com",
    ] {
        assert_eq!(
            cmd("ChangeUserEmail", json!({"id": "u1", "email": good})),
            UserCommand::ChangeUserEmail {
                id: "u1".into(),
                email: good.into()
            }
        );
        cmd(
            "CreateUser",
            json!({"id": "u1", "name": "J", "email": good}),
        );
        cmd("UpdateUser", json!({"id": "u1", "email": good}));
    }
    // Other attributes are not checked as emails, whatever they hold.
    cmd(
        "CreateUser",
        json!({"id": "u1", "name": "J", "work_email": "nope", "Email": 3}),
    );
}

// ---------------------------------------------------------------------------------------------
// Limits

/// A payload with `n` extra attributes `a0`, `a1`, ... besides id and name.
fn with_extra(n: usize) -> Value {
    let mut p = json!({"id": "u1", "name": "John"});
    for i in 0..n {
        p[format!("a{i}")] = json!(i);
    }
    p
}

#[test]
fn attribute_count_limit_on_create() {
    let c = cmd("CreateUser", with_extra(MAX_ATTRIBUTES - 2));
    let then = T::given_nothing()
        .when(c)
        .then_events(vec![created(with_extra(MAX_ATTRIBUTES - 2))]);
    assert_eq!(then.state().attributes.len(), MAX_ATTRIBUTES);
    let msg = invalid("CreateUser", with_extra(MAX_ATTRIBUTES - 1));
    assert!(msg.contains(&MAX_ATTRIBUTES.to_string()), "{msg}");
    invalid("CreateUser", with_extra(MAX_ATTRIBUTES + 5));
}

#[test]
fn attribute_count_limit_on_update() {
    // A full user can change what it has, but not get more.
    let full = created(with_extra(MAX_ATTRIBUTES - 2));
    T::given(vec![full.clone()])
        .when(cmd(
            "UpdateUser",
            json!({"id": "u1", "a0": "x", "name": "Jo"}),
        ))
        .then_events(vec![updated(json!({"a0": "x", "name": "Jo"}))]);
    // Same values do not count as new.
    T::given(vec![full.clone()])
        .when(cmd("UpdateUser", json!({"id": "u1", "a0": 0, "a1": 1})))
        .then_no_events();
    let r = T::given(vec![full.clone()])
        .when(cmd("UpdateUser", json!({"id": "u1", "new": 1})))
        .then_rejected(code::VALIDATION_FAILED);
    assert!(
        r.message.contains(&MAX_ATTRIBUTES.to_string()),
        "{}",
        r.message
    );
    T::given(vec![full.clone()])
        .when(cmd("ChangeUserEmail", json!({"id": "u1", "email": "a@b"})))
        .then_rejected(code::VALIDATION_FAILED);
    // One below full: one new attribute fits, two do not.
    let almost = created(with_extra(MAX_ATTRIBUTES - 3));
    T::given(vec![almost.clone()])
        .when(cmd("UpdateUser", json!({"id": "u1", "new": 1})))
        .then_events(vec![updated(json!({"new": 1}))]);
    T::given(vec![almost.clone()])
        .when(cmd("UpdateUser", json!({"id": "u1", "new": 1, "newer": 2})))
        .then_rejected(code::VALIDATION_FAILED);
    T::given(vec![almost])
        .when(cmd("ChangeUserEmail", json!({"id": "u1", "email": "a@b"})))
        .then_events(vec![email_changed("a@b")]);
    // A full user that has an email can change it.
    let mut p = with_extra(MAX_ATTRIBUTES - 3);
    p["email"] = json!("old@x");
    T::given(vec![created(p)])
        .when(cmd(
            "ChangeUserEmail",
            json!({"id": "u1", "email": "new@x"}),
        ))
        .then_events(vec![email_changed("new@x")]);
    // An update payload with more attributes than any user can have is invalid up front.
    let mut p = with_extra(MAX_ATTRIBUTES + 1);
    p.as_object_mut().unwrap().shift_remove("name");
    invalid("UpdateUser", p);
}

#[test]
fn attribute_value_size_limit() {
    // A JSON string of n characters is n + 2 bytes of JSON.
    let fits = json!("x".repeat(MAX_ATTRIBUTE_BYTES - 2));
    let too_big = json!("x".repeat(MAX_ATTRIBUTE_BYTES - 1));
    cmd("CreateUser", json!({"id": "u1", "name": "J", "bio": fits}));
    cmd("UpdateUser", json!({"id": "u1", "bio": fits}));
    let msg = invalid(
        "CreateUser",
        json!({"id": "u1", "name": "J", "bio": too_big}),
    );
    assert!(msg.contains("bio"), "{msg}");
    invalid("UpdateUser", json!({"id": "u1", "bio": too_big}));
    // The email too, wherever it is set (a valid address, just too long).
    let long_email = format!("a@{}", "x".repeat(MAX_ATTRIBUTE_BYTES));
    for kind in ["CreateUser", "UpdateUser", "ChangeUserEmail"] {
        invalid(kind, json!({"id": "u1", "name": "J", "email": long_email}));
    }
    // Any JSON value counts by its serialised size.
    let big_array = json!(vec![1234567; MAX_ATTRIBUTE_BYTES / 8 + 1]);
    invalid("UpdateUser", json!({"id": "u1", "list": big_array}));
}

#[test]
fn name_obeys_the_attribute_value_size_limit() {
    let fits = "x".repeat(MAX_ATTRIBUTE_BYTES - 2);
    let too_big = "x".repeat(MAX_ATTRIBUTE_BYTES - 1);
    for kind in ["CreateUser", "UpdateUser", "RenameUser"] {
        cmd(kind, json!({"id": "u1", "name": fits}));
        invalid(kind, json!({"id": "u1", "name": too_big}));
    }
}

#[test]
fn attribute_name_limits() {
    let long = "k".repeat(MAX_ATTRIBUTE_NAME_BYTES);
    let too_long = "k".repeat(MAX_ATTRIBUTE_NAME_BYTES + 1);
    for kind in ["CreateUser", "UpdateUser"] {
        let mut ok = json!({"id": "u1", "name": "J"});
        ok[&long] = json!(1);
        cmd(kind, ok);
        let mut bad = json!({"id": "u1", "name": "J"});
        bad[&too_long] = json!(1);
        invalid(kind, bad);
        invalid(kind, json!({"id": "u1", "name": "J", "": 1}));
    }
}
