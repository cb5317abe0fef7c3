//! A bank account: a second aggregate, written only against the library's public API.
//!
//! | command         | event            | rules                                                    |
//! |-----------------|------------------|----------------------------------------------------------|
//! | `OpenAccount`   | `AccountOpened`  | `id`, `owner` non-empty; the id was never used           |
//! | `Deposit`       | `MoneyDeposited` | open; `amount` a whole number of cents >= 1              |
//! | `Withdraw`      | `MoneyWithdrawn` | open; `amount` >= 1; no overdraft (`insufficient_funds`) |
//! | `CloseAccount`  | `AccountClosed`  | open; balance 0 (`balance_not_zero`)                     |
//!
//! A closed account refuses every command with `account_closed`. Queries: `GetAccount`
//! (`accountId`; the accounts read model: `{"id", "owner", "balance"}`, `null` if absent or
//! closed) and `GetAccountAtVersion` (`accountId`, `version`; a replay of the stream, plus
//! `"at_version"`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use cqrs_node::domain::{code, Aggregate, DomainEvent, Rejection};
use cqrs_node::engine::Repository;
use cqrs_node::plugin::{null, Plugin};
use cqrs_node::projection::{Documents, Projection};
use cqrs_node::store::{RecordedEvent, StoreError, StoreRead, Upto};

/// This aggregate's own rejection codes, beside the shared ones of [`code`].
pub mod codes {
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    pub const BALANCE_NOT_ZERO: &str = "balance_not_zero";
    pub const ACCOUNT_CLOSED: &str = "account_closed";
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Absent,
    Open,
    Closed,
}

/// The account's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Not in the read model's documents, which exist only for open accounts.
    #[serde(default)]
    pub status: Status,
    pub id: String,
    pub owner: String,
    /// In cents.
    pub balance: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountCommand {
    OpenAccount { id: String, owner: String },
    Deposit { id: String, amount: u64 },
    Withdraw { id: String, amount: u64 },
    CloseAccount { id: String },
}

/// Stored as its fields alone (`{"amount": 500}`); the type name is stored beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AccountEvent {
    AccountOpened { id: String, owner: String },
    MoneyDeposited { amount: u64 },
    MoneyWithdrawn { amount: u64 },
    AccountClosed {},
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened",
            AccountEvent::MoneyDeposited { .. } => "MoneyDeposited",
            AccountEvent::MoneyWithdrawn { .. } => "MoneyWithdrawn",
            AccountEvent::AccountClosed {} => "AccountClosed",
        }
    }

    fn to_data(&self) -> String {
        serde_json::to_string(self).expect("an event always serialises")
    }

    fn from_data(event_type: &str, data: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Opened {
            id: String,
            owner: String,
        }
        #[derive(Deserialize)]
        struct Amount {
            amount: u64,
        }
        let bad = |e: serde_json::Error| format!("{event_type} data: {e}");
        Ok(match event_type {
            "AccountOpened" => {
                let o: Opened = serde_json::from_str(data).map_err(bad)?;
                AccountEvent::AccountOpened {
                    id: o.id,
                    owner: o.owner,
                }
            }
            "MoneyDeposited" => AccountEvent::MoneyDeposited {
                amount: serde_json::from_str::<Amount>(data).map_err(bad)?.amount,
            },
            "MoneyWithdrawn" => AccountEvent::MoneyWithdrawn {
                amount: serde_json::from_str::<Amount>(data).map_err(bad)?.amount,
            },
            "AccountClosed" => AccountEvent::AccountClosed {},
            other => return Err(format!("unknown Account event type '{other}'")),
        })
    }
}

impl Account {
    fn must_be_open(&self, id: &str) -> Result<(), Rejection> {
        match self.status {
            Status::Open => Ok(()),
            Status::Absent => Err(Rejection::new(
                code::NOT_FOUND,
                format!("account '{id}' does not exist"),
            )),
            Status::Closed => Err(Rejection::new(
                codes::ACCOUNT_CLOSED,
                format!("account '{id}' is closed"),
            )),
        }
    }
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn target(command: &AccountCommand) -> &str {
        match command {
            AccountCommand::OpenAccount { id, .. }
            | AccountCommand::Deposit { id, .. }
            | AccountCommand::Withdraw { id, .. }
            | AccountCommand::CloseAccount { id } => id,
        }
    }

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, Rejection> {
        Ok(match command {
            AccountCommand::OpenAccount { id, owner } => {
                if self.status != Status::Absent {
                    return Err(Rejection::new(
                        code::ALREADY_EXISTS,
                        format!("account id '{id}' is taken"),
                    ));
                }
                vec![AccountEvent::AccountOpened {
                    id: id.clone(),
                    owner: owner.clone(),
                }]
            }
            AccountCommand::Deposit { id, amount } => {
                self.must_be_open(id)?;
                if self.balance.checked_add(*amount).is_none() {
                    return Err(Rejection::invalid("the balance would overflow"));
                }
                vec![AccountEvent::MoneyDeposited { amount: *amount }]
            }
            AccountCommand::Withdraw { id, amount } => {
                self.must_be_open(id)?;
                if *amount > self.balance {
                    return Err(Rejection::new(
                        codes::INSUFFICIENT_FUNDS,
                        format!(
                            "cannot withdraw {amount} from '{id}': the balance is {}",
                            self.balance
                        ),
                    ));
                }
                vec![AccountEvent::MoneyWithdrawn { amount: *amount }]
            }
            AccountCommand::CloseAccount { id } => {
                self.must_be_open(id)?;
                if self.balance != 0 {
                    return Err(Rejection::new(
                        codes::BALANCE_NOT_ZERO,
                        format!("account '{id}' still holds {}", self.balance),
                    ));
                }
                vec![AccountEvent::AccountClosed {}]
            }
        })
    }

    fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened { id, owner } => {
                self.status = Status::Open;
                self.id.clone_from(id);
                self.owner.clone_from(owner);
            }
            AccountEvent::MoneyDeposited { amount } => self.balance += amount,
            AccountEvent::MoneyWithdrawn { amount } => self.balance -= amount,
            AccountEvent::AccountClosed {} => self.status = Status::Closed,
        }
    }

    fn to_snapshot(&self) -> String {
        serde_json::to_string(self).expect("an account always serialises")
    }

    fn from_snapshot(state: &str) -> Result<Self, String> {
        serde_json::from_str(state).map_err(|e| format!("Account snapshot: {e}"))
    }
}

/// The account as queries show it: `None` unless it is open.
fn visible(account: &Account) -> Option<Value> {
    (account.status == Status::Open).then(|| {
        serde_json::json!({"id": account.id, "owner": account.owner, "balance": account.balance})
    })
}

/// The accounts read model: one document per open account.
pub struct AccountsProjection;

const COLLECTION: &str = "accounts";

impl Projection for AccountsProjection {
    fn name(&self) -> &'static str {
        "accounts"
    }

    fn collections(&self) -> &'static [&'static str] {
        &[COLLECTION]
    }

    fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), StoreError> {
        if event.stream.category != Account::CATEGORY {
            return Ok(());
        }
        let corrupt = |m: String| StoreError::Corrupt(format!("event {}: {m}", event.position));
        let e = AccountEvent::from_data(&event.event_type, &event.data).map_err(corrupt)?;
        let key = &event.stream.id;
        let mut account = match docs.get(COLLECTION, key)? {
            Some(doc) => {
                let mut a: Account =
                    serde_json::from_str(&doc).map_err(|e| corrupt(e.to_string()))?;
                a.status = Status::Open;
                a
            }
            None => Account::default(),
        };
        account.evolve(&e);
        let doc = visible(&account).map(|v| v.to_string());
        docs.put(COLLECTION, key, doc.as_deref())
    }
}

/// An account query.
pub enum AccountQuery {
    GetAccount { id: String },
    GetAccountAtVersion { id: String, version: u64 },
}

/// The account aggregate, as a node serves it.
pub struct AccountPlugin;

impl Plugin for AccountPlugin {
    type Aggregate = Account;
    type Query = AccountQuery;

    fn commands(&self) -> &'static [&'static str] {
        &["OpenAccount", "Deposit", "Withdraw", "CloseAccount"]
    }

    fn command(
        &self,
        kind: &str,
        mut payload: Map<String, Value>,
    ) -> Result<AccountCommand, Rejection> {
        let id = match payload.remove("id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return Err(Rejection::invalid("payload.id must be a non-empty string")),
        };
        let amount = |payload: &Map<String, Value>| match payload.get("amount") {
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok(n),
                _ => Err(Rejection::invalid(
                    "payload.amount must be a whole number of cents >= 1",
                )),
            },
            None => Err(Rejection::invalid("payload.amount is required")),
        };
        Ok(match kind {
            "OpenAccount" => match payload.remove("owner") {
                Some(Value::String(owner)) if !owner.trim().is_empty() => {
                    AccountCommand::OpenAccount { id, owner }
                }
                _ => {
                    return Err(Rejection::invalid(
                        "payload.owner must be a non-empty string",
                    ))
                }
            },
            "Deposit" => AccountCommand::Deposit {
                amount: amount(&payload)?,
                id,
            },
            "Withdraw" => AccountCommand::Withdraw {
                amount: amount(&payload)?,
                id,
            },
            _ => AccountCommand::CloseAccount { id },
        })
    }

    fn queries(&self) -> &'static [&'static str] {
        &["GetAccount", "GetAccountAtVersion"]
    }

    fn query(&self, kind: &str, params: Map<String, Value>) -> Result<AccountQuery, Rejection> {
        let id = match params.get("accountId") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => {
                return Err(Rejection::invalid(
                    "params.accountId must be a non-empty string",
                ))
            }
        };
        Ok(match kind {
            "GetAccount" => AccountQuery::GetAccount { id },
            _ => AccountQuery::GetAccountAtVersion {
                version: params
                    .get("version")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| Rejection::invalid("params.version must be an integer >= 0"))?,
                id,
            },
        })
    }

    fn answer(
        &self,
        store: &dyn StoreRead,
        query: &AccountQuery,
    ) -> Result<Box<RawValue>, StoreError> {
        let raw =
            |s: String| RawValue::from_string(s).map_err(|e| StoreError::Corrupt(e.to_string()));
        match query {
            AccountQuery::GetAccount { id } => match store.document(COLLECTION, id)? {
                Some(doc) => raw(doc),
                None => Ok(null()),
            },
            AccountQuery::GetAccountAtVersion { id, version } => {
                let loaded = Repository::<Account>::load_at(store, id, Upto::Version(*version))?;
                match visible(&loaded.state) {
                    Some(mut v) if loaded.version == *version => {
                        v["at_version"] = Value::from(*version);
                        raw(v.to_string())
                    }
                    _ => Ok(null()),
                }
            }
        }
    }

    fn projections(&self) -> Vec<Box<dyn Projection>> {
        vec![Box::new(AccountsProjection)]
    }
}
