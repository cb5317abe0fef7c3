//! The bank example (`examples/bank`): a second aggregate plugged into a node without a change
//! under `src/`. Its given/when/then tests (its domain module, included by path), and golden
//! tests over pipes against the example's binary, which `cargo test` builds beside this test
//! (`target/<profile>/examples/bank`).

mod common;

#[allow(dead_code)] // the example's main uses the plug-in; here only the domain is tested
#[path = "../examples/bank/account.rs"]
mod account;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The example's binary, built by `cargo test` with the tests (examples are built, not run).
fn bank() -> Command {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/bank_example-<hash> -> target/<profile>/examples/bank
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin: PathBuf = dir.join("examples").join("bank");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --example bank`",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.env("CQRS_LOG", "info");
    cmd
}

fn open(msg_id: u64, id: &str, owner: &str) -> String {
    format!(
        r#"{{"type":"command","msg_id":{msg_id},"command":{{"type":"OpenAccount","payload":{{"id":"{id}","owner":"{owner}"}}}}}}"#
    )
}

fn money(msg_id: u64, kind: &str, id: &str, amount: u64) -> String {
    format!(
        r#"{{"type":"command","msg_id":{msg_id},"command":{{"type":"{kind}","payload":{{"id":"{id}","amount":{amount}}}}}}}"#
    )
}

fn get(msg_id: u64, id: &str) -> String {
    format!(
        r#"{{"type":"query","msg_id":{msg_id},"query":{{"type":"GetAccount","params":{{"accountId":"{id}"}}}}}}"#
    )
}

fn ok(msg_id: u64, event: &str, id: &str) -> String {
    format!(
        r#"{{"type":"command_result","in_reply_to":{msg_id},"success":true,"events":[{{"eventType":"{event}","aggregateId":"{id}"}}]}}"#
    )
}

fn refused(msg_id: u64, error: &str, code: &str) -> String {
    format!(
        r#"{{"type":"command_result","in_reply_to":{msg_id},"success":false,"error":"{error}","code":"{code}"}}"#
    )
}

fn data(msg_id: u64, data: &str) -> String {
    format!(r#"{{"type":"query_result","in_reply_to":{msg_id},"data":{data}}}"#)
}

#[test]
fn an_account_over_pipes_opens_takes_money_refuses_an_overdraft_and_closes() {
    let mut node = Node::spawn(bank().arg("--in-memory"));
    let steps = [
        (open(1, "acc-1", "Ada"), ok(1, "AccountOpened", "acc-1")),
        (money(2, "Deposit", "acc-1", 500), ok(2, "MoneyDeposited", "acc-1")),
        (money(3, "Withdraw", "acc-1", 200), ok(3, "MoneyWithdrawn", "acc-1")),
        (
            money(4, "Withdraw", "acc-1", 301),
            refused(
                4,
                "cannot withdraw 301 from 'acc-1': the balance is 300",
                "insufficient_funds",
            ),
        ),
        (get(5, "acc-1"), data(5, r#"{"id":"acc-1","owner":"Ada","balance":300}"#)),
        (
            r#"{"type":"query","msg_id":6,"query":{"type":"GetAccountAtVersion","params":{"accountId":"acc-1","version":2}}}"#.to_string(),
            data(6, r#"{"id":"acc-1","owner":"Ada","balance":500,"at_version":2}"#),
        ),
        (
            r#"{"type":"command","msg_id":7,"command":{"type":"CloseAccount","payload":{"id":"acc-1"}}}"#.to_string(),
            refused(7, "account 'acc-1' still holds 300", "balance_not_zero"),
        ),
        (money(8, "Withdraw", "acc-1", 300), ok(8, "MoneyWithdrawn", "acc-1")),
        (
            r#"{"type":"command","msg_id":9,"command":{"type":"CloseAccount","expectedVersion":4,"payload":{"id":"acc-1"}}}"#.to_string(),
            ok(9, "AccountClosed", "acc-1"),
        ),
        (
            money(10, "Deposit", "acc-1", 1),
            refused(10, "account 'acc-1' is closed", "account_closed"),
        ),
        (get(11, "acc-1"), data(11, "null")),
        (
            money(12, "Deposit", "nope", 1),
            refused(12, "account 'nope' does not exist", "not_found"),
        ),
        (
            money(13, "Deposit", "acc-1", 0),
            refused(13, "payload.amount must be a whole number of cents >= 1", "validation_failed"),
        ),
        (
            r#"{"type":"command","msg_id":14,"command":{"type":"Transfer","payload":{"id":"acc-1"}}}"#.to_string(),
            refused(14, "unknown command type 'Transfer'", "unknown_command"),
        ),
        (open(15, "acc-2", "Bo"), ok(15, "AccountOpened", "acc-2")),
        (
            r#"{"type":"command","msg_id":16,"command":{"type":"Deposit","expectedVersion":0,"payload":{"id":"acc-2","amount":5}}}"#.to_string(),
            r#"{"type":"command_result","in_reply_to":16,"success":false,"error":"expected version 0, but the aggregate is at version 1","code":"version_conflict","current_version":1}"#.to_string(),
        ),
    ];
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    node.expect(&steps);
    node.finish().assert_clean();
}

#[test]
fn the_users_are_served_beside_the_accounts_by_the_same_node() {
    let mut node = Node::spawn(bank().arg("--in-memory"));
    node.expect(&[
        (
            r#"{"type":"command","msg_id":1,"command":{"type":"CreateUser","payload":{"id":"u1","name":"Ada"}}}"#,
            r#"{"type":"command_result","in_reply_to":1,"success":true,"events":[{"eventType":"UserCreated","aggregateId":"u1"}]}"#,
        ),
        (&open(2, "u1", "Ada"), &ok(2, "AccountOpened", "u1")),
        (
            r#"{"type":"query","msg_id":3,"query":{"type":"GetUser","params":{"userId":"u1"}}}"#,
            r#"{"type":"query_result","in_reply_to":3,"data":{"id":"u1","name":"Ada"}}"#,
        ),
        (&get(4, "u1"), &data(4, r#"{"id":"u1","owner":"Ada","balance":0}"#)),
    ]);
    node.finish().assert_clean();
}

#[test]
fn accounts_survive_a_restart_on_the_durable_store() {
    let dir = tempdir();
    let mut node = Node::spawn(bank().arg("--data-dir").arg(dir.path()));
    node.expect(&[
        (&open(1, "acc-1", "Ada"), &ok(1, "AccountOpened", "acc-1")),
        (
            &money(2, "Deposit", "acc-1", 70),
            &ok(2, "MoneyDeposited", "acc-1"),
        ),
    ]);
    node.finish().assert_clean();
    let mut node = Node::spawn(bank().arg("--data-dir").arg(dir.path()));
    node.expect(&[
        (
            &get(1, "acc-1"),
            &data(1, r#"{"id":"acc-1","owner":"Ada","balance":70}"#),
        ),
        (
            &money(2, "Withdraw", "acc-1", 70),
            &ok(2, "MoneyWithdrawn", "acc-1"),
        ),
    ]);
    node.finish().assert_clean();
}

mod given_when_then {
    //! Given/when/then, with no store at all.

    use crate::account::{codes, Account, AccountCommand, AccountEvent};
    use cqrs_node::domain::code;
    use cqrs_node::domain::testing::AggregateTest;

    fn opened() -> AccountEvent {
        AccountEvent::AccountOpened {
            id: "a1".into(),
            owner: "Ada".into(),
        }
    }

    fn deposit(amount: u64) -> AccountCommand {
        AccountCommand::Deposit {
            id: "a1".into(),
            amount,
        }
    }

    fn withdraw(amount: u64) -> AccountCommand {
        AccountCommand::Withdraw {
            id: "a1".into(),
            amount,
        }
    }

    fn close() -> AccountCommand {
        AccountCommand::CloseAccount { id: "a1".into() }
    }

    #[test]
    fn an_account_opens_once() {
        let open = AccountCommand::OpenAccount {
            id: "a1".into(),
            owner: "Ada".into(),
        };
        AggregateTest::<Account>::given_nothing()
            .when(open.clone())
            .then_events(vec![opened()]);
        AggregateTest::<Account>::given(vec![opened()])
            .when(open.clone())
            .then_rejected(code::ALREADY_EXISTS);
        AggregateTest::<Account>::given(vec![opened(), AccountEvent::AccountClosed {}])
            .when(open)
            .then_rejected(code::ALREADY_EXISTS);
    }

    #[test]
    fn deposits_add_up_and_withdrawals_never_overdraw() {
        let then = AggregateTest::<Account>::given(vec![opened()])
            .when(deposit(500))
            .then_events(vec![AccountEvent::MoneyDeposited { amount: 500 }]);
        assert_eq!(then.state().balance, 500);
        let given = vec![opened(), AccountEvent::MoneyDeposited { amount: 500 }];
        AggregateTest::<Account>::given(given.clone())
            .when(withdraw(500))
            .then_events(vec![AccountEvent::MoneyWithdrawn { amount: 500 }]);
        let r = AggregateTest::<Account>::given(given)
            .when(withdraw(501))
            .then_rejected(codes::INSUFFICIENT_FUNDS);
        assert!(r.message.contains("500"), "{}", r.message);
        AggregateTest::<Account>::given(vec![opened()])
            .when(withdraw(1))
            .then_rejected(codes::INSUFFICIENT_FUNDS);
    }

    #[test]
    fn closing_needs_an_empty_account_and_ends_it() {
        AggregateTest::<Account>::given(vec![opened(), AccountEvent::MoneyDeposited { amount: 1 }])
            .when(close())
            .then_rejected(codes::BALANCE_NOT_ZERO);
        AggregateTest::<Account>::given(vec![opened()])
            .when(close())
            .then_events(vec![AccountEvent::AccountClosed {}]);
        let closed = vec![opened(), AccountEvent::AccountClosed {}];
        for command in [deposit(1), withdraw(1), close()] {
            AggregateTest::<Account>::given(closed.clone())
                .when(command)
                .then_rejected(codes::ACCOUNT_CLOSED);
        }
    }

    #[test]
    fn nothing_happens_to_an_account_that_was_never_opened() {
        for command in [deposit(1), withdraw(1), close()] {
            AggregateTest::<Account>::given_nothing()
                .when(command)
                .then_rejected(code::NOT_FOUND);
        }
    }
}
