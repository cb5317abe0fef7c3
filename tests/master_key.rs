//! The operator's master key (`--master-key-file`, docs/forgetting.md) over pipes: with one,
//! no user key lies in the store in clear (every key document is wrapped, so the files alone
//! open nothing); a store made with one is refused without it or with another one, at start,
//! with a clear error and exit 2; a store made without one has its keys wrapped the first time
//! a master key is given; export, import and check take it too; a bad key file is refused.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::*;
use serde_json::json;

fn key_file(dir: &Path, name: &str, hex: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    path
}

/// The key store's documents, as the SQLite file of `n1` holds them: (name, value).
fn key_documents(dir: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(dir.join("n1.db")).unwrap();
    let mut st = conn
        .prepare("SELECT key, value FROM documents WHERE collection = 'keys' ORDER BY key")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A wrapped key document: `m1:` and the base64 of a nonce (24), a sealed key document (its
/// format, `aes-256-gcm:`, 12, and the base64 of 32 bytes, 44) and a tag (16).
fn assert_wrapped(name: &str, value: &str) {
    let b64 = value
        .strip_prefix("m1:")
        .unwrap_or_else(|| panic!("{name} is not wrapped: {value}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let expected = if name == "master-key" { 21 } else { 12 + 44 };
    assert_eq!(bytes.len(), 24 + expected + 16, "{name}");
}

fn with_key(dir: &Path, key: Option<&Path>) -> std::process::Command {
    let mut cmd = n1_on(dir);
    if let Some(key) = key {
        cmd.arg("--master-key-file").arg(key);
    }
    cmd
}

fn forget(msg_id: u64, id: &str) -> String {
    command(msg_id, "ForgetUser", json!({"id": id}))
}

#[test]
fn with_a_master_key_no_user_key_is_in_the_store_in_clear() {
    let dir = tempdir();
    let keys = tempdir();
    let master = key_file(keys.path(), "master.key", &"5a".repeat(32));
    let other = key_file(keys.path(), "other.key", &"a5".repeat(32));

    let mut node = Node::spawn(&mut with_key(dir.path(), Some(&master)));
    for (i, id) in ["u1", "u2", "u3"].iter().enumerate() {
        assert!(is_success(&node.call(&create(
            i as u64 + 1,
            id,
            &format!("Wrapped {id}")
        ))));
    }
    assert!(is_success(&node.call(&forget(4, "u2"))));
    node.finish().assert_clean();

    let documents = key_documents(dir.path());
    let names: Vec<&str> = documents.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["User/u1", "User/u2", "User/u3", "master-key"]);
    for (name, value) in &documents {
        if name == "User/u2" {
            assert_eq!(value, "", "the forgotten key is the tombstone");
        } else {
            assert_wrapped(name, value);
        }
    }

    // Without the master key, or with another one: refused at the first message, exit 2.
    for key in [None, Some(other.as_path())] {
        let mut node = Node::spawn(&mut with_key(dir.path(), key));
        node.send(&get_user(1, "u1"));
        let end = node.finish();
        assert_eq!(end.status.code(), Some(2), "{key:?}: {end:?}");
        let said = if key.is_none() {
            "this store's keys are wrapped by a master key: start with --master-key-file"
        } else {
            "the master key given is not this store's"
        };
        assert!(end.stderr.contains(said), "{key:?}: {}", end.stderr);
    }
    // With it (from the environment too): every user reads back, the forgotten one stays so.
    let mut cmd = with_key(dir.path(), None);
    cmd.env("CQRS_MASTER_KEY_FILE", &master);
    let mut node = Node::spawn(&mut cmd);
    assert_eq!(node.call(&get_user(1, "u1"))["data"]["name"], "Wrapped u1");
    assert_eq!(
        node.call(&get_user(2, "u2"))["data"],
        serde_json::Value::Null
    );
    let at = node.call(&query(
        3,
        "GetUserAtVersion",
        json!({"userId": "u3", "version": 1}),
    ));
    assert_eq!(at["data"]["name"], "Wrapped u3", "{at}");
    node.finish().assert_clean();

    // check, export and rebuild need it as well (docs/forgetting.md says so of each).
    for (sub, key) in [
        ("check", None),
        ("export", None),
        ("rebuild", None),
        ("rebuild", Some(&other)),
    ] {
        let mut cmd = with_key(dir.path(), key.map(PathBuf::as_path));
        let end = run_cli(cmd.arg(sub));
        assert_eq!(end.status.code(), Some(2), "{sub} {key:?}: {end:?}");
        assert!(end.stderr.contains("master key"), "{sub}: {}", end.stderr);
    }
    run_cli(with_key(dir.path(), Some(&master)).arg("check")).assert_success();
    run_cli(with_key(dir.path(), Some(&master)).arg("rebuild")).assert_success();
}

#[test]
fn a_store_made_without_a_master_key_is_wrapped_when_first_given_one() {
    let dir = tempdir();
    let keys = tempdir();
    let master = key_file(keys.path(), "master.key", &"0f".repeat(32));
    let mut node = Node::spawn(&mut with_key(dir.path(), None));
    assert!(is_success(&node.call(&create(1, "u1", "Clear Keyed"))));
    assert!(is_success(&node.call(&create(2, "u2", "Soon Forgotten"))));
    assert!(is_success(&node.call(&forget(3, "u2"))));
    node.finish().assert_clean();
    let before = key_documents(dir.path());
    assert_eq!(before.len(), 2);
    // A key in clear: its format (`aes-256-gcm:`) and the base64 of 32 bytes.
    assert_eq!(
        before[0].1.len(),
        12 + 44,
        "a key in clear: {:?}",
        before[0]
    );
    assert!(before[0].1.starts_with("aes-256-gcm:"), "{:?}", before[0]);

    let mut node = Node::spawn(&mut with_key(dir.path(), Some(&master)));
    assert_eq!(node.call(&get_user(1, "u1"))["data"]["name"], "Clear Keyed");
    assert!(is_success(&node.call(&create(2, "u3", "Born Wrapped"))));
    let end = node.finish();
    end.assert_clean();
    assert!(
        end.stderr
            .contains("the keys in clear are now wrapped by the master key wrapped=1"),
        "{}",
        end.stderr
    );
    let after = key_documents(dir.path());
    let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["User/u1", "User/u2", "User/u3", "master-key"]);
    assert_eq!(after[1].1, "");
    for (name, value) in after.iter().filter(|(n, _)| n != "User/u2") {
        assert_wrapped(name, value);
    }
    // The clear key is gone from the key store (its old bytes: secure_delete, see forget.rs).
    assert!(after.iter().all(|(_, v)| v != &before[0].1));
    // From now on the store needs it.
    let mut node = Node::spawn(&mut with_key(dir.path(), None));
    node.send(&get_user(1, "u1"));
    assert_eq!(node.finish().status.code(), Some(2));
}

#[test]
fn an_export_imports_into_a_store_with_a_master_key() {
    let keys = tempdir();
    let master = key_file(keys.path(), "master.key", &"c3".repeat(32));
    let from = tempdir();
    let mut node = Node::spawn(&mut with_key(from.path(), None));
    assert!(is_success(&node.call(&create(1, "u1", "Moved Along"))));
    node.finish().assert_clean();
    let export = run_cli(with_key(from.path(), None).arg("export"));
    export.assert_success();

    let to = tempdir();
    let file = keys.path().join("export.jsonl");
    std::fs::write(&file, export.rest.join("\n") + "\n").unwrap();
    let import = run_cli(
        with_key(to.path(), Some(&master))
            .arg("import")
            .arg("--in")
            .arg(&file),
    );
    import.assert_success();
    let documents = key_documents(to.path());
    assert_eq!(documents.len(), 2, "{documents:?}");
    for (name, value) in &documents {
        assert_wrapped(name, value);
    }
    let mut node = Node::spawn(&mut with_key(to.path(), Some(&master)));
    assert_eq!(node.call(&get_user(1, "u1"))["data"]["name"], "Moved Along");
    node.finish().assert_clean();
    // The imported store is marked: without the master key it is refused.
    let mut node = Node::spawn(&mut with_key(to.path(), None));
    node.send(&get_user(1, "u1"));
    assert_eq!(node.finish().status.code(), Some(2));
}

#[test]
fn a_bad_master_key_file_is_refused() {
    let dir = tempdir();
    let keys = tempdir();
    for (name, text) in [
        ("short.key", "abcd".to_string()),
        ("bad.key", "zz".repeat(32)),
    ] {
        let file = key_file(keys.path(), name, &text);
        let end = run_cli(&mut with_key(dir.path(), Some(&file)));
        assert_eq!(end.status.code(), Some(2), "{end:?}");
        assert!(
            end.stderr.contains("a master key is 64 hexadecimal digits"),
            "{}",
            end.stderr
        );
    }
    let missing = keys.path().join("missing.key");
    let end = run_cli(&mut with_key(dir.path(), Some(&missing)));
    assert_eq!(end.status.code(), Some(2), "{end:?}");
    assert!(end.stderr.contains("missing.key"), "{}", end.stderr);
}
