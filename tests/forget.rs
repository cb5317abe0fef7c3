//! `ForgetUser` (crypto-shredding, protocol Part 2) over pipes: every new shape and code as exact
//! lines, in memory and on disk; the same answers after a restart and after kill -9; and the
//! scan: once a user is forgotten and the node stopped, no byte of the user's name, email or key
//! is left in any file of the data directory, while the other users still read back.

mod common;

use std::path::Path;

use common::{cqrs, rep, req, run_cli, tempdir, Node};

fn create(msg_id: u64, id: &str, name: &str, email: &str, time: &str) -> String {
    format!(
        r#"{{"type":"command","msg_id":{msg_id},"command":{{"type":"CreateUser","timestamp":"{time}","payload":{{"id":"{id}","name":"{name}","email":"{email}"}}}}}}"#
    )
}

/// What every store answers around a forgotten user: (request body, reply body).
fn forgetting() -> Vec<(String, String)> {
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    vec![
        (
            create(1, "ann", "Ann Forgettable", "ann@forget.example", "2024-01-10T08:00:00Z"),
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"ann"}]}"#.into(),
        ),
        s(
            r#"{"type":"command","msg_id":2,"command":{"type":"RenameUser","timestamp":"2024-01-11T08:00:00Z","payload":{"id":"ann","name":"Ann Renamed"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserRenamed","aggregateId":"ann"}]}"#,
        ),
        (
            create(3, "bob", "Bob Keeper", "bob@keep.example", "2024-01-10T09:00:00Z"),
            r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"bob"}]}"#.into(),
        ),
        s(
            r#"{"type":"query","msg_id":4,"query":{"type":"GetUserAtVersion","params":{"userId":"ann","version":1}}}"#,
            r#"{"type":"query_result","in_reply_to":4,"data":{"id":"ann","name":"Ann Forgettable","email":"ann@forget.example","at_version":1}}"#,
        ),
        s(
            r#"{"type":"command","msg_id":5,"command":{"type":"ForgetUser","timestamp":"2024-01-12T08:00:00Z","payload":{"id":"ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":true,"events":[{"eventType":"UserForgotten","aggregateId":"ann"}]}"#,
        ),
        s(
            r#"{"type":"command","msg_id":6,"command":{"type":"ForgetUser","payload":{"id":"ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":6,"success":true,"events":[]}"#,
        ),
    ]
}

/// The answers about the forgotten `ann` and the kept `bob`, the same before and after a restart.
fn after_forgetting() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r#"{"type":"query","msg_id":10,"query":{"type":"GetUser","params":{"userId":"ann"}}}"#,
            r#"{"type":"query_result","in_reply_to":10,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":11,"query":{"type":"GetUserAtTime","params":{"userId":"ann","timestamp":"2024-01-11T12:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":11,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":12,"query":{"type":"GetUserAtVersion","params":{"userId":"ann","version":1}}}"#,
            r#"{"type":"query_result","in_reply_to":12,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":13,"query":{"type":"GetUserAtVersion","params":{"userId":"ann","version":3}}}"#,
            r#"{"type":"query_result","in_reply_to":13,"data":null}"#,
        ),
        (
            r#"{"type":"query","msg_id":14,"query":{"type":"ListUsers","params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":14,"data":{"users":[{"id":"bob","name":"Bob Keeper","email":"bob@keep.example"}],"next":null}}"#,
        ),
        (
            r#"{"type":"query","msg_id":18,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-11T12:00:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":18,"data":{"users":[{"id":"bob","name":"Bob Keeper","email":"bob@keep.example"}],"next":null,"at_time":"2024-01-11T12:00:00Z"}}"#,
        ),
        (
            r#"{"type":"query","msg_id":19,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2024-01-10T08:30:00Z"}}}"#,
            r#"{"type":"query_result","in_reply_to":19,"data":{"users":[],"next":null,"at_time":"2024-01-10T08:30:00Z"}}"#,
        ),
        (
            r#"{"type":"query","msg_id":15,"query":{"type":"GetUserHistory","params":{"userId":"ann"}}}"#,
            r#"{"type":"query_result","in_reply_to":15,"data":{"id":"ann","version":3,"events":[{"eventType":"UserCreated","aggregateId":"ann","version":1,"timestamp":"2024-01-10T08:00:00Z","data":null},{"eventType":"UserRenamed","aggregateId":"ann","version":2,"timestamp":"2024-01-11T08:00:00Z","data":null},{"eventType":"UserForgotten","aggregateId":"ann","version":3,"timestamp":"2024-01-12T08:00:00Z","data":{}}]}}"#,
        ),
        (
            r#"{"type":"query","msg_id":16,"query":{"type":"ReadEvents","params":{}}}"#,
            r#"{"type":"query_result","in_reply_to":16,"data":{"events":[{"position":1,"eventType":"UserCreated","aggregateId":"ann","version":1,"timestamp":"2024-01-10T08:00:00Z","data":null},{"position":2,"eventType":"UserRenamed","aggregateId":"ann","version":2,"timestamp":"2024-01-11T08:00:00Z","data":null},{"position":3,"eventType":"UserCreated","aggregateId":"bob","version":1,"timestamp":"2024-01-10T09:00:00Z","data":{"id":"bob","name":"Bob Keeper","email":"bob@keep.example"}},{"position":4,"eventType":"UserForgotten","aggregateId":"ann","version":3,"timestamp":"2024-01-12T08:00:00Z","data":{}}],"next":4,"head":4}}"#,
        ),
        (
            r#"{"type":"query","msg_id":17,"query":{"type":"GetUser","params":{"userId":"bob"}}}"#,
            r#"{"type":"query_result","in_reply_to":17,"data":{"id":"bob","name":"Bob Keeper","email":"bob@keep.example"}}"#,
        ),
        (
            r#"{"type":"command","msg_id":20,"command":{"type":"RenameUser","payload":{"id":"ann","name":"Back"}}}"#,
            r#"{"type":"command_result","in_reply_to":20,"success":false,"error":"user 'ann' was forgotten","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":21,"command":{"type":"UpdateUser","payload":{"id":"ann","age":3}}}"#,
            r#"{"type":"command_result","in_reply_to":21,"success":false,"error":"user 'ann' was forgotten","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":22,"command":{"type":"ChangeUserEmail","payload":{"id":"ann","email":"a@b"}}}"#,
            r#"{"type":"command_result","in_reply_to":22,"success":false,"error":"user 'ann' was forgotten","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":23,"command":{"type":"DeleteUser","payload":{"id":"ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":23,"success":false,"error":"user 'ann' was forgotten","code":"deleted"}"#,
        ),
        (
            r#"{"type":"command","msg_id":24,"command":{"type":"CreateUser","payload":{"id":"ann","name":"New Ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":24,"success":false,"error":"user id 'ann' belonged to a forgotten user and cannot be reused","code":"already_exists"}"#,
        ),
        (
            r#"{"type":"command","msg_id":25,"command":{"type":"ForgetUser","payload":{"id":"ann"}}}"#,
            r#"{"type":"command_result","in_reply_to":25,"success":true,"events":[]}"#,
        ),
        (
            r#"{"type":"command","msg_id":26,"command":{"type":"ForgetUser","payload":{"id":"nobody"}}}"#,
            r#"{"type":"command_result","in_reply_to":26,"success":false,"error":"user 'nobody' does not exist","code":"not_found"}"#,
        ),
        (
            r#"{"type":"command","msg_id":27,"command":{"type":"ForgetUser","payload":{}}}"#,
            r#"{"type":"command_result","in_reply_to":27,"success":false,"error":"payload.id is required","code":"validation_failed"}"#,
        ),
    ]
}

/// `cqrs --data-dir DIR`: the store `DIR/cqrs.db` (named by the messages' `dest`).
fn on(dir: &Path) -> std::process::Command {
    let mut cmd = cqrs();
    cmd.arg("--data-dir").arg(dir);
    cmd
}

/// `cqrs check` on that store must succeed.
fn check(dir: &Path) {
    run_cli(on(dir).arg("check").args(["--node-id", "cqrs"])).assert_success();
}

fn run(node: &mut Node, steps: &[(String, String)]) {
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    node.expect(&steps);
}

#[test]
fn forget_user_in_memory_every_shape_and_code() {
    let mut node = Node::in_memory();
    run(&mut node, &forgetting());
    node.expect(&after_forgetting());
    node.finish().assert_clean();
}

#[test]
fn forget_user_pipelined_in_one_batch_answers_the_same() {
    let mut node = Node::in_memory();
    let steps = forgetting();
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    node.expect_pipelined(&steps);
    node.expect_pipelined(&after_forgetting());
    node.finish().assert_clean();
}

#[test]
fn a_deleted_user_can_be_forgotten() {
    let mut node = Node::in_memory();
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","timestamp":"2024-01-10T08:00:00Z","payload":{"id":"d","name":"Dee"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"d"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":2,"command":{"type":"DeleteUser","timestamp":"2024-01-10T09:00:00Z","payload":{"id":"d"}}}"#,
            r#"{"type":"command_result","in_reply_to":2,"success":true,"events":[{"eventType":"UserDeleted","aggregateId":"d"}]}"#,
        ),
        (
            r#"{"type":"command","msg_id":3,"command":{"type":"ForgetUser","timestamp":"2024-01-10T10:00:00Z","payload":{"id":"d"}}}"#,
            r#"{"type":"command_result","in_reply_to":3,"success":true,"events":[{"eventType":"UserForgotten","aggregateId":"d"}]}"#,
        ),
        (
            r#"{"type":"query","msg_id":4,"query":{"type":"GetUserHistory","params":{"userId":"d"}}}"#,
            r#"{"type":"query_result","in_reply_to":4,"data":{"id":"d","version":3,"events":[{"eventType":"UserCreated","aggregateId":"d","version":1,"timestamp":"2024-01-10T08:00:00Z","data":null},{"eventType":"UserDeleted","aggregateId":"d","version":2,"timestamp":"2024-01-10T09:00:00Z","data":null},{"eventType":"UserForgotten","aggregateId":"d","version":3,"timestamp":"2024-01-10T10:00:00Z","data":{}}]}}"#,
        ),
        (
            r#"{"type":"command","msg_id":5,"command":{"type":"DeleteUser","payload":{"id":"d"}}}"#,
            r#"{"type":"command_result","in_reply_to":5,"success":false,"error":"user 'd' was forgotten","code":"deleted"}"#,
        ),
    ]);
    node.finish().assert_clean();
}

#[test]
fn forget_user_on_disk_answers_the_same_after_a_restart_and_check_agrees() {
    let dir = tempdir();
    // Snapshots every 2 events: sealed like the events, and unreadable once forgotten.
    let mut node = Node::spawn(on(dir.path()).args(["--snapshot-every", "2"]));
    run(&mut node, &forgetting());
    node.expect(&after_forgetting());
    node.finish().assert_clean();

    let mut node = Node::spawn(on(dir.path()).args(["--snapshot-every", "2"]));
    node.expect(&after_forgetting());
    node.finish().assert_clean();
    check(dir.path());
    // A rebuild replays the sealed log into the same read model.
    run_cli(
        cqrs()
            .arg("rebuild")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--node-id", "cqrs"]),
    )
    .assert_success();
    let mut node = Node::on_dir(dir.path());
    node.expect(&after_forgetting());
    node.finish().assert_clean();
}

#[test]
fn a_forget_acknowledged_before_kill_9_holds_after_it() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    run(&mut node, &forgetting());
    node.kill();
    drop(node);
    check(dir.path());
    let mut node = Node::on_dir(dir.path());
    node.expect(&after_forgetting());
    node.finish().assert_clean();
}

#[test]
fn export_and_import_carry_a_forgotten_user_as_null_data_and_live_users_in_clear() {
    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    run(&mut node, &forgetting());
    node.finish().assert_clean();
    let file = dir.path().join("export.jsonl");
    run_cli(
        cqrs()
            .arg("export")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--node-id", "cqrs", "--out"])
            .arg(&file),
    )
    .assert_success();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("Ann"),
        "a forgotten user is exported without data:\n{text}"
    );
    assert!(
        text.contains("Bob Keeper"),
        "live users are exported in clear:\n{text}"
    );
    let target = tempdir();
    run_cli(
        cqrs()
            .arg("import")
            .arg("--data-dir")
            .arg(target.path())
            .args(["--node-id", "cqrs", "--in"])
            .arg(&file),
    )
    .assert_success();
    let mut node = Node::on_dir(target.path());
    node.expect(&after_forgetting());
    node.finish().assert_clean();
    // Imported users are sealed again under new keys.
    assert_no_trace(target.path(), &[b"Ann Forgettable", b"ann@forget.example"]);
}

/// Every file in `dir` (the WAL and anything else there included), checked for each needle.
fn assert_no_trace(dir: &Path, needles: &[&[u8]]) {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() || path.extension().is_some_and(|e| e == "jsonl") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).unwrap();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == *needle),
                "{} still holds {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(files > 0, "no file in {}", dir.display());
}

/// A sealed document opened with its stream's key: `"base64(nonce ‖ ciphertext ‖ tag)"`,
/// AES-256-GCM, with `collection NUL key NUL version 0 (8 bytes)` as associated data.
fn open_document(key: &[u8], collection: &str, doc_key: &str, sealed: &str) -> String {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine as _;
    let inner = sealed.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inner)
        .unwrap();
    let mut aad = format!("{collection}\0{doc_key}\0").into_bytes();
    aad.extend_from_slice(&0u64.to_be_bytes());
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).unwrap();
    let nonce = aes_gcm::Nonce::from_slice(&bytes[..12]);
    let clear = cipher
        .decrypt(
            nonce,
            Payload {
                msg: &bytes[12..],
                aad: &aad,
            },
        )
        .expect("the document opens under its user's key");
    String::from_utf8(clear).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// THE test of issue 14 item 4.
#[test]
fn no_byte_of_a_forgotten_user_is_left_in_any_file_once_the_node_stopped() {
    use base64::Engine as _;
    let dir = tempdir();
    let users: Vec<(String, String, String)> = (0..40)
        .map(|i| {
            (
                format!("u{i:02}"),
                format!("Zanzibar Quixote{i:02}"),
                format!("quixote{i:02}@zanzibar.example"),
            )
        })
        .collect();
    // Snapshots every 2 events, so that states are snapshotted too; many rewrites of the
    // documents and of the WAL.
    let mut node = Node::spawn(on(dir.path()).args(["--snapshot-every", "2"]));
    let mut msg = 0;
    for (id, name, email) in &users {
        msg += 1;
        let reply = node.ask(&req(&create(msg, id, name, email, "2024-01-10T08:00:00Z")));
        assert!(reply.contains(r#""success":true"#), "{reply}");
        // The victim changes often enough for the temporal read model to file past documents.
        let steps = if id == "u17" { 80 } else { 3 };
        for step in 0..steps {
            msg += 1;
            let reply = node.ask(&req(&format!(
                r#"{{"type":"command","msg_id":{msg},"command":{{"type":"UpdateUser","payload":{{"id":"{id}","name":"{name} v{step}","city":"Timbuktoo {id} {step}"}}}}}}"#
            )));
            assert!(reply.contains(r#""success":true"#), "{reply}");
        }
    }
    node.finish().assert_clean();

    // The forgotten one's key, as the key store holds it (its format, `aes-256-gcm:`, then the
    // base64 of its 32 bytes).
    let victim = &users[17];
    let key_doc: String = {
        let conn = rusqlite::Connection::open(dir.path().join("cqrs.db")).unwrap();
        let filed: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM documents WHERE collection = 'users_at_past' \
                 AND key LIKE 'u17%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            filed > 0,
            "the victim has past documents in the temporal read model"
        );
        conn.query_row(
            "SELECT value FROM documents WHERE collection = 'keys' AND key = ?1",
            [format!("User/{}", victim.0)],
            |r| r.get(0),
        )
        .unwrap()
    };
    let key_b64 = key_doc
        .strip_prefix("aes-256-gcm:")
        .expect("a key made now is an AES-256-GCM key")
        .to_string();
    let key = base64::engine::general_purpose::STANDARD
        .decode(&key_b64)
        .unwrap();
    assert_eq!(key.len(), 32);
    // Before: the victim's key is in the file, and its data, sealed under it: its `users`
    // document opens with the key (AES-256-GCM, the collection and key as associated data) to
    // the victim's state. No live user's data is in clear anywhere, read models included.
    let before = std::fs::read(dir.path().join("cqrs.db")).unwrap();
    assert!(
        contains(&before, key_b64.as_bytes()),
        "the test looks for what is there"
    );
    let sealed: String = rusqlite::Connection::open(dir.path().join("cqrs.db"))
        .unwrap()
        .query_row(
            "SELECT value FROM documents WHERE collection = 'users' AND key = ?1",
            [&victim.0],
            |r| r.get(0),
        )
        .unwrap();
    let opened = open_document(&key, "users", &victim.0, &sealed);
    assert!(opened.contains(&victim.1), "{opened}");
    assert!(contains(&before, &sealed.as_bytes()[1..40]));
    let mut clear: Vec<&[u8]> = Vec::new();
    for (_, name, email) in &users {
        clear.push(name.as_bytes());
        clear.push(email.as_bytes());
    }
    clear.push(b"Timbuktoo ");
    assert_no_trace(dir.path(), &clear);

    let mut node = Node::on_dir(dir.path());
    let reply = node.ask(&req(&format!(
        r#"{{"type":"command","msg_id":1,"command":{{"type":"ForgetUser","payload":{{"id":"{}"}}}}}}"#,
        victim.0
    )));
    assert!(reply.contains(r#""eventType":"UserForgotten""#), "{reply}");
    node.finish().assert_clean();

    let name = victim.1.as_bytes();
    let email = victim.2.as_bytes();
    let city = format!("Timbuktoo {} ", victim.0);
    assert_no_trace(
        dir.path(),
        &[
            name,
            email,
            city.as_bytes(),
            &key,
            key_b64.as_bytes(),
            key_doc.as_bytes(),
            b"quixote17@",
        ],
    );

    // The others still read back, after a restart.
    let mut node = Node::on_dir(dir.path());
    for (i, (id, name, email)) in users.iter().enumerate() {
        let got = node.ask(&req(&format!(
            r#"{{"type":"query","msg_id":{i},"query":{{"type":"GetUser","params":{{"userId":"{id}"}}}}}}"#
        )));
        let want = if i == 17 {
            format!(r#"{{"type":"query_result","in_reply_to":{i},"data":null}}"#)
        } else {
            format!(
                r#"{{"type":"query_result","in_reply_to":{i},"data":{{"id":"{id}","name":"{name} v2","email":"{email}","city":"Timbuktoo {id} 2"}}}}"#
            )
        };
        common::assert_line(&got, &rep(&want), "a user read back after the forget");
        let got = node.ask(&req(&format!(
            r#"{{"type":"query","msg_id":{i},"query":{{"type":"GetUserAtVersion","params":{{"userId":"{id}","version":1}}}}}}"#
        )));
        if i != 17 {
            assert!(got.contains(name.as_str()), "{got}");
        } else {
            assert!(got.contains(r#""data":null"#), "{got}");
        }
    }
    let got = node.ask(&req(
        r#"{"type":"query","msg_id":99,"query":{"type":"ListUsersAtTime","params":{"timestamp":"2100-01-01T00:00:00Z","limit":1000}}}"#,
    ));
    assert_eq!(got.matches(r#""id":"u"#).count(), 39, "{got}");
    assert!(!got.contains(r#""id":"u17""#), "{got}");
    node.finish().assert_clean();
    check(dir.path());
    assert_no_trace(
        dir.path(),
        &[name, email, &key, key_b64.as_bytes(), key_doc.as_bytes()],
    );
}
