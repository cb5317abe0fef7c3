//! Aggregates as plug-ins: what an aggregate declares so that a node can serve it.
//!
//! A node knows no aggregate by name. It holds a [`Registry`] of [`Plugin`]s and routes by
//! registration: a command goes to the plug-in that declared its `type`, a query likewise, and
//! every plug-in's projections are kept inline. A plug-in declares
//!
//! * its command types, and how a payload becomes a typed command
//!   ([`Plugin::command`]: every rule that needs no state, on the front end's thread);
//! * its query types, how their params are read ([`Plugin::query`]) and how they are answered
//!   from the store's read side ([`Plugin::answer`]);
//! * its projections ([`Plugin::projections`]);
//! * its upcasters, through its aggregate's events ([`DomainEvent::UPCASTERS`]): the registry
//!   gathers them ([`Registry::upcasters`]) and the node reads every event through them;
//! * its rejection codes, implicitly: [`Rejection::code`] is any `&'static str`, passed through
//!   to the client as the reply's `code` (an open set, not an enum the protocol mirrors).
//!
//! The aggregate itself (decide, evolve) is a [`domain::Aggregate`](crate::domain::Aggregate);
//! the engine loads, decides and appends it for the node. [`user`] is the `User` plug-in; the
//! bank account in `examples/bank` is a second one, wired into a node by its own `main`.
//!
//! ```
//! use cqrs_node::plugin::{user::UserPlugin, Registry};
//! let registry = Registry::new().with(UserPlugin); // .with(AccountPlugin), ...
//! assert!(registry.command_type("CreateUser").is_some());
//! ```

pub mod user;

use std::any::Any;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::{Aggregate, DomainEvent, Rejection};
use crate::engine::{CommandError, Execute, Executed, Repository};
use crate::projection::{self, Projection};
use crate::store::{
    ExpectedVersion, Personal, Sealed, StoreError, StoreRead, StoreWrite, Upcasted, Upcasters,
};
use crate::timestamp::Timestamp;

/// An aggregate as a node serves it. See the module docs.
pub trait Plugin: Send + Sync + 'static {
    /// The aggregate whose commands this plug-in reads.
    type Aggregate: Aggregate;
    /// A query of this plug-in, read and checked.
    type Query: Send + 'static;

    /// The command types (the wire's `command.type`) this aggregate handles.
    fn commands(&self) -> &'static [&'static str];

    /// Reads a command's payload (a `timestamp` key already taken out of it) into a command,
    /// checking every rule that needs no state. Called only with a type of
    /// [`Plugin::commands`]. Runs on a front end's thread, before the aggregate is loaded.
    fn command(
        &self,
        kind: &str,
        payload: Map<String, Value>,
    ) -> Result<<Self::Aggregate as Aggregate>::Command, Rejection>;

    /// The query types (the wire's `query.type`) this plug-in answers.
    fn queries(&self) -> &'static [&'static str] {
        &[]
    }

    /// Reads a query's params. Called only with a type of [`Plugin::queries`].
    fn query(&self, kind: &str, params: Map<String, Value>) -> Result<Self::Query, Rejection> {
        let _ = params;
        Err(Rejection::invalid(format!("no query '{kind}'")))
    }

    /// Answers a query from the store (or from inside the transaction of the batch it belongs
    /// to, so that it sees the commands before it): its `data`, `null` for "none".
    fn answer(
        &self,
        store: &dyn StoreRead,
        query: &Self::Query,
    ) -> Result<Box<RawValue>, StoreError> {
        let _ = (store, query);
        Ok(null())
    }

    /// The read models this plug-in keeps (inline, in the events' transaction).
    fn projections(&self) -> Vec<Box<dyn Projection>> {
        Vec::new()
    }
}

/// `null`, as a query's data.
pub fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

/// A command read by its plug-in, with what the engine needs around it.
pub struct Command {
    /// Which plug-in of the registry.
    plugin: usize,
    /// The plug-in's typed command.
    command: Box<dyn Any + Send>,
    pub expected: ExpectedVersion,
    pub time: Option<Timestamp>,
    /// The client's id for this intended change, if it gave one (`commandId`).
    pub command_id: Option<crate::node::CommandId>,
}

/// A query read by its plug-in.
pub struct Query {
    plugin: usize,
    query: Box<dyn Any + Send>,
}

/// Why a command type or a query type cannot be read: no plug-in declares it, or its plug-in
/// refused the payload.
#[derive(Debug)]
pub enum Unreadable {
    Unknown,
    Rejected(Rejection),
}

/// The plug-ins of a node. Built once (in `main`), shared by every front end (reading commands
/// needs no state) and the node's core.
#[derive(Default)]
pub struct Registry {
    plugins: Vec<Box<dyn Erased>>,
    /// Each command type and its plug-in. A handful per aggregate: a scan beats hashing the
    /// type of every command.
    commands: Vec<(&'static str, usize)>,
    queries: Vec<(&'static str, usize)>,
    /// Every plug-in's upcasters.
    upcasters: Upcasters,
    /// The categories whose streams hold personal data.
    personal: Personal,
}

/// The plug-in that declared `kind`.
fn find(types: &[(&'static str, usize)], kind: &str) -> Option<usize> {
    types.iter().find(|(t, _)| *t == kind).map(|&(_, p)| p)
}

/// A command type some plug-in declared ([`Registry::command_type`]).
#[derive(Clone, Copy, Debug)]
pub struct CommandType(usize);

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plug-in. Panics if it declares a command or query type that another plug-in
    /// already declared (a programming error, found at start).
    pub fn with<P: Plugin>(mut self, plugin: P) -> Self {
        let index = self.plugins.len();
        for kind in plugin.commands() {
            let taken = find(&self.commands, kind);
            assert!(taken.is_none(), "command type '{kind}' is registered twice");
            self.commands.push((kind, index));
        }
        for kind in plugin.queries() {
            let taken = find(&self.queries, kind);
            assert!(taken.is_none(), "query type '{kind}' is registered twice");
            self.queries.push((kind, index));
        }
        self.upcasters
            .add(<<P::Aggregate as Aggregate>::Event as DomainEvent>::UPCASTERS);
        for p in plugin.projections() {
            // A rebuild clears a projection's collections: the key store must never be one.
            assert!(
                !p.collections().contains(&crate::store::seal::KEYS),
                "projection '{}' uses the key store's collection '{}'",
                p.name(),
                crate::store::seal::KEYS
            );
            for documents in p.personal() {
                self.personal.add_documents(*documents);
            }
        }
        if let Some(forgotten) = <<P::Aggregate as Aggregate>::Event as DomainEvent>::FORGOTTEN {
            self.personal
                .add(<P::Aggregate as Aggregate>::CATEGORY, forgotten);
        }
        self.plugins.push(Box::new(plugin));
        self
    }

    /// The upcasters of every plug-in's events, for reading a store through them
    /// ([`crate::store::Upcasted`]).
    pub fn upcasters(&self) -> std::sync::Arc<Upcasters> {
        std::sync::Arc::new(self.upcasters.clone())
    }

    /// Every key in the key store is kept wrapped by the operator's `master` key
    /// ([`crate::store::master`]); a node refuses a store whose keys are wrapped by another.
    pub fn set_master_key(&mut self, master: crate::store::MasterKey) {
        self.personal.set_master_key(master);
    }

    /// The operator's master key, if one was given.
    pub fn master_key(&self) -> Option<&crate::store::MasterKey> {
        self.personal.master_key()
    }

    /// The categories whose streams hold personal data, for sealing a store
    /// ([`crate::store::Sealed`]).
    pub fn personal(&self) -> std::sync::Arc<Personal> {
        std::sync::Arc::new(self.personal.clone())
    }

    /// The store as the node reads it: personal streams sealed, events upcast.
    pub fn view<S: crate::store::EventStore>(&self, store: S) -> Upcasted<Sealed<S>> {
        Upcasted::new(Sealed::new(store, self.personal()), self.upcasters())
    }

    /// [`Registry::view`] of a store lent: reads only (tests, tools that check a store).
    pub fn read_view<'a, S: StoreRead>(&self, store: &'a S) -> Upcasted<Sealed<&'a S>> {
        Upcasted::new(Sealed::new(store, self.personal()), self.upcasters())
    }

    /// The plug-in of a command type, if one declared it.
    pub fn command_type(&self, kind: &str) -> Option<CommandType> {
        find(&self.commands, kind).map(CommandType)
    }

    /// Reads a command of type `kind` (which `of` was found for); `expected` and `time` come
    /// from its envelope.
    pub fn command(
        &self,
        of: CommandType,
        kind: &str,
        payload: Map<String, Value>,
        expected: ExpectedVersion,
        time: Option<Timestamp>,
    ) -> Result<Command, Rejection> {
        let plugin = of.0;
        let command = self.plugins[plugin].command(kind, payload)?;
        Ok(Command {
            plugin,
            command,
            expected,
            time,
            command_id: None,
        })
    }

    /// Reads a query of type `kind`.
    pub fn query(&self, kind: &str, params: Map<String, Value>) -> Result<Query, Unreadable> {
        let plugin = find(&self.queries, kind).ok_or(Unreadable::Unknown)?;
        let query = self.plugins[plugin]
            .query(kind, params)
            .map_err(Unreadable::Rejected)?;
        Ok(Query { plugin, query })
    }

    /// Answers a query read by [`Registry::query`].
    pub fn answer(
        &self,
        store: &dyn StoreRead,
        query: &Query,
    ) -> Result<Box<RawValue>, StoreError> {
        self.plugins[query.plugin].answer(store, &*query.query)
    }

    /// Every plug-in's projections, in registration order.
    pub fn projections(&self) -> Vec<Box<dyn Projection>> {
        self.plugins.iter().flat_map(|p| p.projections()).collect()
    }

    /// What runs the commands of every plug-in: one repository (and aggregate cache) each.
    pub fn runners(&self, cache_size: usize, snapshot_every: u64) -> Runners {
        Runners(
            self.plugins
                .iter()
                .map(|p| p.runner(cache_size, snapshot_every))
                .collect(),
        )
    }
}

/// The repositories of a registry's aggregates, owned by the node's core.
pub struct Runners(Vec<Box<dyn Run>>);

impl Runners {
    /// Runs one command inside `tx`, then applies its events to `projections` (without moving
    /// their checkpoints).
    pub fn execute(
        &mut self,
        tx: &mut dyn StoreWrite,
        command: Command,
        projections: &[Box<dyn Projection>],
    ) -> Result<Executed, CommandError> {
        self.0[command.plugin].execute(tx, command, projections)
    }

    /// Drops every cached aggregate (after a failed commit, the caches may be ahead of the
    /// store).
    pub fn forget(&mut self) {
        self.0.iter_mut().for_each(|r| r.forget());
    }
}

/// A [`Plugin`] with its types erased, so that a registry holds any mix of them.
trait Erased: Send + Sync {
    fn command(
        &self,
        kind: &str,
        payload: Map<String, Value>,
    ) -> Result<Box<dyn Any + Send>, Rejection>;
    fn query(
        &self,
        kind: &str,
        params: Map<String, Value>,
    ) -> Result<Box<dyn Any + Send>, Rejection>;
    fn answer(&self, store: &dyn StoreRead, query: &dyn Any) -> Result<Box<RawValue>, StoreError>;
    fn projections(&self) -> Vec<Box<dyn Projection>>;
    fn runner(&self, cache_size: usize, snapshot_every: u64) -> Box<dyn Run>;
}

impl<P: Plugin> Erased for P {
    fn command(
        &self,
        kind: &str,
        payload: Map<String, Value>,
    ) -> Result<Box<dyn Any + Send>, Rejection> {
        Ok(Box::new(Plugin::command(self, kind, payload)?))
    }

    fn query(
        &self,
        kind: &str,
        params: Map<String, Value>,
    ) -> Result<Box<dyn Any + Send>, Rejection> {
        Ok(Box::new(Plugin::query(self, kind, params)?))
    }

    fn answer(&self, store: &dyn StoreRead, query: &dyn Any) -> Result<Box<RawValue>, StoreError> {
        let query = query
            .downcast_ref::<P::Query>()
            .expect("a query goes to the plug-in that read it");
        Plugin::answer(self, store, query)
    }

    fn projections(&self) -> Vec<Box<dyn Projection>> {
        Plugin::projections(self)
    }

    fn runner(&self, cache_size: usize, snapshot_every: u64) -> Box<dyn Run> {
        Box::new(Repository::<P::Aggregate>::new(cache_size, snapshot_every))
    }
}

/// A repository with its aggregate's type erased.
trait Run: Send {
    fn execute(
        &mut self,
        tx: &mut dyn StoreWrite,
        command: Command,
        projections: &[Box<dyn Projection>],
    ) -> Result<Executed, CommandError>;
    fn forget(&mut self);
}

impl<A: Aggregate + Send + 'static> Run for Repository<A> {
    fn execute(
        &mut self,
        tx: &mut dyn StoreWrite,
        command: Command,
        projections: &[Box<dyn Projection>],
    ) -> Result<Executed, CommandError> {
        let typed = command
            .command
            .downcast::<A::Command>()
            .expect("a command goes to the plug-in that read it");
        let run = Execute {
            command: *typed,
            expected: command.expected,
            time: command.time,
        };
        Repository::execute(self, tx, run, |tx, state, events| {
            projection::apply_command(projections, tx, events, state)
        })
    }

    fn forget(&mut self) {
        Repository::forget(self)
    }
}
