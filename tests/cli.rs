//! The command line as a new user meets it: options before or after a subcommand, what `--help`
//! says, what the end of a run logs, and a data directory that is a file.

mod common;

use common::*;

#[test]
fn store_options_count_before_the_subcommand_as_after_it() {
    let dir = tempdir();
    let mut node = Node::spawn(&mut n1_on(dir.path()));
    assert!(is_success(&node.call(&create(1, "u1", "A"))));
    node.finish().assert_clean();
    // Before the subcommand: the same store (it used to check ./cqrs-data instead).
    let before =
        run_cli(
            cqrs()
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--node-id", "n1", "check"]),
        );
    before.assert_success();
    assert_eq!(
        before.rest,
        [format!("{}: ok", dir.path().join("n1.db").display())]
    );
    let after = run_cli(
        cqrs()
            .arg("check")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--node-id", "n1"]),
    );
    assert_eq!(after.rest, before.rest);
    let rebuilt = run_cli(cqrs().arg("--data-dir").arg(dir.path()).arg("rebuild"));
    rebuilt.assert_success();
    assert_eq!(
        rebuilt.rest,
        [format!(
            "{}: rebuilt from 1 events",
            dir.path().join("n1.db").display()
        )]
    );
    // Nothing was created where the default directory is.
    let empty = tempdir();
    let none = run_cli(cqrs().current_dir(empty.path()).arg("check"));
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    assert!(files_in(empty.path()).is_empty());
}

#[test]
fn help_says_what_serving_means_and_lists_the_exit_codes() {
    let help = run_cli(cqrs().arg("--help"));
    help.assert_success();
    let text = help.rest.join("\n");
    for needle in [
        "Without a subcommand, cqrs serves the node on standard input and output",
        "waits for JSON messages, one per line",
        "Exit status:",
        "  0  served until the end of input or a signal",
        "  1  `check` found a difference",
        "  2  could not start or run",
        "--data-dir",
        "rebuild",
        "check",
        "export",
        "import",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn the_end_of_a_run_in_memory_does_not_claim_durability() {
    let mut node = Node::in_memory();
    assert!(is_success(&node.call(&create(1, "u1", "A"))));
    let end = node.finish();
    end.assert_clean();
    assert!(
        end.stderr
            .contains("input ended; nothing was kept (--in-memory)"),
        "{}",
        end.stderr
    );
    assert!(!end.stderr.contains("durable"), "{}", end.stderr);

    let dir = tempdir();
    let mut node = Node::on_dir(dir.path());
    assert!(is_success(&node.call(&create(1, "u1", "A"))));
    let end = node.finish();
    end.assert_clean();
    assert!(
        end.stderr
            .contains("input ended; every acknowledged event is durable"),
        "{}",
        end.stderr
    );
}

#[test]
fn a_data_directory_that_is_a_file_is_refused_with_that_reason() {
    let dir = tempdir();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let mut node = Node::spawn(
        cqrs()
            .arg("--data-dir")
            .arg(&file)
            .args(["--node-id", "n1"]),
    );
    node.close_stdin();
    let end = node.finish();
    assert_eq!(end.status.code(), Some(2), "{end:?}");
    assert!(
        end.stderr
            .contains("is not a directory (it, or a folder above it, is a file)"),
        "{}",
        end.stderr
    );
    assert!(!end.stderr.contains("File exists"), "{}", end.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// A store named on the command line wins over `CQRS_POSTGRES_URL` in the environment (a
/// shell that exports it for one node can still run `cqrs --in-memory` or `--data-dir`); two
/// stores named on the command line are refused. The URL names no server: a node that tried
/// it would fail to start.
#[test]
fn a_store_on_the_command_line_wins_over_postgres_in_the_environment() {
    let unreachable = "host=/nonexistent/socket/dir dbname=nothing connect_timeout=1";

    let mut cmd = cqrs();
    cmd.env("CQRS_POSTGRES_URL", unreachable).arg("--in-memory");
    let mut node = Node::spawn(&mut cmd);
    assert!(is_success(&node.call(&create(1, "u1", "A"))));
    let end = node.finish();
    end.assert_clean();
    assert!(
        end.stderr
            .contains("CQRS_POSTGRES_URL in the environment is ignored: --in-memory was given"),
        "{}",
        end.stderr
    );

    let dir = tempdir();
    let mut cmd = n1_on(dir.path());
    cmd.env("CQRS_POSTGRES_URL", unreachable);
    let mut node = Node::spawn(&mut cmd);
    assert!(is_success(&node.call(&create(1, "u1", "A"))));
    node.finish().assert_clean();
    assert!(dir.path().join("n1.db").exists());
    // A subcommand's --data-dir too, after its name.
    let check = run_cli(
        cqrs()
            .env("CQRS_POSTGRES_URL", unreachable)
            .arg("check")
            .arg("--data-dir")
            .arg(dir.path()),
    );
    check.assert_success();

    // Only in the environment, the URL is the store: the node tries it and cannot start.
    let env_dir = tempdir();
    let env_only = run_cli(
        cqrs()
            .env("CQRS_POSTGRES_URL", unreachable)
            .env("CQRS_DATA_DIR", env_dir.path())
            .arg("check"),
    );
    assert_eq!(env_only.status.code(), Some(2), "{env_only:?}");
    assert!(
        env_only.stderr.contains("PostgreSQL"),
        "{}",
        env_only.stderr
    );

    for other in [&["--in-memory"][..], &["--data-dir", "/tmp"][..]] {
        let both = run_cli(cqrs().args(["--postgres", unreachable]).args(other));
        assert_eq!(both.status.code(), Some(2), "{both:?}");
        assert!(
            both.stderr.contains(&format!(
                "--postgres cannot be used with {}: name one store",
                other[0]
            )),
            "{}",
            both.stderr
        );
    }
}
