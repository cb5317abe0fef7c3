//! `cqrs`: the command line, and the wiring: the registry of aggregates, the store, the node on
//! its writer thread, and the stdio front end. See README.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use cqrs_node::http;
use cqrs_node::node::{Config, Node};
use cqrs_node::projection;
use cqrs_node::stdio::{self, Ended, Nodes, Options, ServeError};
use cqrs_node::store::{
    master, sqlite_file, EventStore, MasterKey, MemoryStore, PostgresStore, Sealed, SqliteStore,
    StoreError,
};

const ABOUT: &str = "A CQRS + event-sourcing node: JSON lines on stdin, replies on stdout, \
events on disk.

Without a subcommand, cqrs serves the node on standard input and output: it waits for JSON \
messages, one per line (see docs/protocol.md), answers each on standard output, and logs on \
standard error. It stops at the end of input (everything acknowledged is durable) or on \
SIGTERM/SIGINT (after answering the batch in hand).

With --http ADDR, cqrs serves the same node over HTTP instead (see docs/http.md; with --stdio, \
both); it then runs until SIGTERM/SIGINT.";

const EXIT_CODES: &str = "Exit status:
  0  served until the end of input or a signal (HTTP: a signal); `rebuild`, `export` or
     `import` done; `check` found nothing wrong
  1  `check` found a difference (printed on stdout)
  2  could not start or run: bad options, the store is in use by another process, the store
     cannot be opened, created or read, standard output failed, `import` of a damaged file or
     into a store that is not empty, an HTTP address that does not bind or is not loopback
     without a token (the reason is on stderr)";

#[derive(Parser)]
#[command(name = "cqrs", version, about = ABOUT, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Rebuild every projection from the event log (the node must not be running).
    Rebuild,
    /// Check the log's shape and that every projection equals a full replay; exit 1 if not.
    Check,
    /// Write the store's event log and command ids as JSON lines (docs/export.md), to standard
    /// output or a file. The store: --node-id's, else the only one in the data directory.
    Export {
        /// Write to FILE (fsync'd at the end) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Load a file written by `cqrs export` into the empty store of --node-id, in one
    /// transaction, and build its read models; a damaged file stores nothing.
    Import {
        /// Read FILE instead of standard input.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Only check the file: import it into memory and write nothing.
        #[arg(long = "in-memory", id = "import_in_memory")]
        in_memory: bool,
    },
}

/// Where the store is: given before or after a subcommand alike.
#[derive(Args)]
struct StoreArgs {
    /// Directory of the durable store: one SQLite file per node id.
    #[arg(
        long,
        env = "CQRS_DATA_DIR",
        default_value = "./cqrs-data",
        global = true
    )]
    data_dir: PathBuf,
    /// The node's id (default: an `init`'s node_id, else the first message's dest). For
    /// `rebuild` and `check`: the store to work on (default: every store in the directory); for
    /// `export`, the store to read (default: the only one); for `import`, the store to fill.
    #[arg(long, env = "CQRS_NODE_ID", global = true)]
    node_id: Option<String>,
    /// Aggregates kept in memory between commands (and, on the durable store, the numbers of as
    /// many streams and as many documents, so that commands look nothing up by text key).
    #[arg(long, default_value_t = Config::default().cache_size, global = true)]
    cache_size: usize,
    /// Keep the store in this PostgreSQL database, shared with any number of nodes, instead
    /// of the data directory (libpq's forms: postgresql://user:pass@host:port/db, or
    /// "host=/socket/dir dbname=db user=u"). See docs/postgres.md.
    #[arg(long, env = "CQRS_POSTGRES_URL", value_name = "URL", global = true)]
    postgres: Option<String>,
    /// The PostgreSQL schema that holds the store's tables (several stores in one database).
    #[arg(long, value_name = "NAME", default_value = "cqrs", global = true)]
    postgres_schema: String,
    /// The operator's master key: a file of 64 hexadecimal digits (e.g. `openssl rand -hex 32`).
    /// Every user key in the store is then kept wrapped by it (docs/forgetting.md); a store
    /// once opened with it is refused without it.
    #[arg(long, env = "CQRS_MASTER_KEY_FILE", value_name = "FILE", global = true)]
    master_key_file: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// Keep everything in memory; write no file at all. (On the command line it wins over a
    /// CQRS_POSTGRES_URL in the environment, as --data-dir does.)
    #[arg(long)]
    in_memory: bool,
    /// How long each commandId is remembered: a number and a unit, s, m, h or d (e.g. 30d;
    /// default: for ever). Older ids are forgotten when the node starts; a retry after that
    /// runs the command again.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    command_id_retention: Option<std::time::Duration>,
    /// Write a snapshot of an aggregate every N events (0: never).
    #[arg(long, default_value_t = Config::default().snapshot_every)]
    snapshot_every: u64,
    /// Most messages handled (and commands committed) together.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_batch: u64,
    /// Longest accepted input line, in bytes; longer lines get error 12. Over HTTP: the
    /// largest request body (larger ones get 413).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..))]
    max_line_bytes: u64,
    /// Serve HTTP on this address (e.g. 127.0.0.1:8080) instead of stdin/stdout (see
    /// docs/http.md). The node id is then `cqrs` unless --node-id is given. A non-loopback
    /// address needs --http-token.
    #[arg(long, env = "CQRS_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// With --http: every route but /healthz and /readyz needs `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        env = "CQRS_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    http_token: Option<String>,
    /// With --http: serve stdin/stdout too, by the same node (their commands share the group
    /// commit).
    #[arg(long, requires = "http")]
    stdio: bool,
}

fn main() -> ExitCode {
    cqrs_node::disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CQRS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the process before
    // the store can roll back and answer. With a handler installed the write fails with EFBIG
    // instead: a storage failure, reported to the client as error 13.
    if let Err(e) = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ) {
        tracing::warn!("cannot handle SIGXFSZ: {e}");
    }
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut registry = cqrs_node::registry();
    if let Some(file) = &cli.store.master_key_file {
        match MasterKey::from_file(file) {
            Ok(master) => registry.set_master_key(master),
            Err(e) => {
                eprintln!("cqrs: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let registry = Arc::new(registry);
    let result = match cli.command {
        None => serve(&cli.store, cli.run, registry),
        Some(Command::Rebuild) => each_store(&cli.store, "rebuild", |name, store| match store {
            AnyStore::Sqlite(s) => rebuild_one(name, s, &registry),
            AnyStore::Postgres(s) => rebuild_one(name, s, &registry),
        }),
        Some(Command::Check) => each_store(&cli.store, "check", |name, store| match store {
            AnyStore::Sqlite(s) => check_one(name, s, &registry),
            AnyStore::Postgres(s) => check_one(name, s, &registry),
        }),
        Some(Command::Export { out }) => {
            if cli.run.in_memory {
                Err("export: --in-memory: an in-memory store has nothing to export".into())
            } else {
                export(&cli.store, out.as_deref(), &registry)
            }
        }
        Some(Command::Import { input, in_memory }) => import(
            &cli.store,
            input.as_deref(),
            in_memory || cli.run.in_memory,
            &registry,
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cqrs: {e}");
            ExitCode::from(2)
        }
    }
}

/// The command line, with the store chosen by what was said where: a store named on the
/// command line (`--in-memory`, `--data-dir`, `--postgres`) wins over one named in the
/// environment (`CQRS_POSTGRES_URL`, `CQRS_DATA_DIR`), so that a shell that exports
/// CQRS_POSTGRES_URL can still run `cqrs --in-memory`; two stores named on the command line
/// are an error.
fn parse_cli() -> Result<Cli, clap::Error> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches)?;
    let from_command_line = |id: &str| {
        matches_chain(&matches).any(|m| {
            m.ids().any(|i| i.as_str() == id)
                && m.value_source(id) == Some(ValueSource::CommandLine)
        })
    };
    let in_memory = from_command_line("in_memory")
        || from_command_line("import_in_memory")
        || cli.run.in_memory;
    let data_dir = from_command_line("data_dir");
    if cli.store.postgres.is_some() {
        if from_command_line("postgres") {
            let other = if in_memory {
                Some("--in-memory")
            } else if data_dir {
                Some("--data-dir")
            } else {
                None
            };
            if let Some(other) = other {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("--postgres cannot be used with {other}: name one store"),
                ));
            }
        } else if in_memory || data_dir {
            let chosen = if in_memory {
                "--in-memory"
            } else {
                "--data-dir"
            };
            tracing::info!("CQRS_POSTGRES_URL in the environment is ignored: {chosen} was given");
            cli.store.postgres = None;
        }
    }
    Ok(cli)
}

/// The matches of the command line and of its subcommand, if any (global options may be on
/// either side of the subcommand's name).
fn matches_chain(matches: &ArgMatches) -> impl Iterator<Item = &ArgMatches> {
    std::iter::successors(Some(matches), |m| m.subcommand().map(|(_, sub)| sub))
}

/// `30d`, `12h`, `15m`, `90s`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}': a whole number and a unit (s, m, h or d), e.g. 30d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("'{text}': the unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(seconds)))
}

/// Opens the node over a store, as a worker for the writer thread.
fn open_node<S: EventStore + Send + 'static>(
    store: S,
    registry: Arc<cqrs_node::plugin::Registry>,
    config: &Config,
) -> Result<Node<S>, ServeError> {
    Ok(Node::open(store, registry, config)?)
}

fn serve(
    store: &StoreArgs,
    args: RunArgs,
    registry: Arc<cqrs_node::plugin::Registry>,
) -> Result<bool, Box<dyn std::error::Error>> {
    let config = Config {
        cache_size: store.cache_size,
        snapshot_every: args.snapshot_every,
        command_id_retention: args.command_id_retention,
    };
    if let Some(addr) = args.http.clone() {
        return serve_http(store, args, &addr, registry, &config);
    }
    let options = Options {
        node_id: store.node_id.clone(),
        max_batch: args.max_batch as usize,
        max_line_bytes: args.max_line_bytes as usize,
    };
    let ended = if args.in_memory {
        let service = Nodes::<MemoryStore>::new(registry.clone());
        stdio::serve(&options, service, move |_id| {
            open_node(MemoryStore::new(), registry, &config)
        })?
    } else if let Some(url) = &store.postgres {
        let (url, schema) = (url.clone(), store.postgres_schema.clone());
        let service = Nodes::<PostgresStore>::new(registry.clone());
        stdio::serve(&options, service, move |_id| {
            let store = open_postgres(&url, &schema, config.cache_size)?;
            tracing::info!(schema = %schema, "PostgreSQL store opened");
            open_node(store, registry, &config)
        })?
    } else {
        let data_dir = store.data_dir.clone();
        let service = Nodes::<SqliteStore>::new(registry.clone());
        stdio::serve(&options, service, move |id| {
            let path = sqlite_file(&data_dir, id);
            let mut store = SqliteStore::open(&path)?;
            store.set_cache_size(config.cache_size);
            tracing::info!(path = %path.display(), "store opened");
            open_node(store, registry, &config)
        })?
    };
    let what = if args.in_memory {
        "nothing was kept (--in-memory)"
    } else {
        "every acknowledged event is durable"
    };
    match ended {
        Ended::Input => tracing::info!("input ended; {what}"),
        Ended::Signal => tracing::info!("stopped by a signal; {what}"),
        Ended::Unnamed => {}
    }
    Ok(true)
}

/// The PostgreSQL store of `--postgres` and `--postgres-schema`.
fn open_postgres(url: &str, schema: &str, cache_size: usize) -> Result<PostgresStore, StoreError> {
    let mut store = PostgresStore::open(url, schema)?;
    store.set_cache_size(cache_size);
    Ok(store)
}

/// `rebuild` on one store (`name` in what it prints).
fn rebuild_one<S: EventStore>(
    name: &str,
    store: S,
    registry: &cqrs_node::plugin::Registry,
) -> Result<bool, StoreError> {
    let mut store = registry.view(store);
    master::open(&mut store, registry.master_key())?;
    let applied = projection::rebuild(&mut store, &registry.projections())?;
    println!("{name}: rebuilt from {applied} events");
    Ok(true)
}

/// `check` on one store (`name` in what it prints): whether it found nothing wrong.
fn check_one<S: EventStore>(
    name: &str,
    store: S,
    registry: &cqrs_node::plugin::Registry,
) -> Result<bool, StoreError> {
    let mut store = registry.view(store);
    master::verify(&store, registry.master_key())?;
    let projection::Checked { unbuilt, problems } =
        projection::check(&mut store, || registry.projections())?;
    for projection in unbuilt {
        println!(
            "{name}: projection {projection}: not built yet (new since this store was written); \
             checked as built from the log (a node builds it when it opens the store)"
        );
    }
    for p in &problems {
        println!("{name}: {p}");
    }
    if problems.is_empty() {
        println!("{name}: ok");
    }
    Ok(problems.is_empty())
}

/// `--http ADDR`: the node on its writer thread, the HTTP front end in front of it, until
/// SIGTERM/SIGINT.
fn serve_http(
    store: &StoreArgs,
    args: RunArgs,
    addr: &str,
    registry: Arc<cqrs_node::plugin::Registry>,
    config: &Config,
) -> Result<bool, Box<dyn std::error::Error>> {
    let token = args.http_token.clone().filter(|t| !t.is_empty());
    let listener = http::check_bind(addr, token.as_deref())?;
    let options = http::Options {
        token,
        max_body: args.max_line_bytes as usize,
        max_batch: args.max_batch as usize,
        feed_buffer: http::feed::BUFFER,
    };
    let id = store.node_id.clone().unwrap_or_else(|| "cqrs".to_string());
    let stdio = args.stdio.then(|| Options {
        node_id: Some(id.clone()),
        max_batch: args.max_batch as usize,
        max_line_bytes: args.max_line_bytes as usize,
    });
    if args.in_memory {
        let node = open_node(MemoryStore::new(), registry.clone(), config)?;
        run_http(node, listener, registry, options, stdio)?;
    } else if let Some(url) = &store.postgres {
        let s = open_postgres(url, &store.postgres_schema, config.cache_size)?;
        tracing::info!(schema = %store.postgres_schema, "PostgreSQL store opened");
        let node = open_node(s, registry.clone(), config)?;
        run_http(node, listener, registry, options, stdio)?;
    } else {
        let path = sqlite_file(&store.data_dir, &id);
        let mut s = SqliteStore::open(&path)?;
        s.set_cache_size(config.cache_size);
        tracing::info!(path = %path.display(), "store opened");
        let node = open_node(s, registry.clone(), config)?;
        run_http(node, listener, registry, options, stdio)?;
    }
    let what = if args.in_memory {
        "nothing was kept (--in-memory)"
    } else {
        "every acknowledged event is durable"
    };
    tracing::info!("stopped by a signal; {what}");
    Ok(true)
}

fn run_http<S: EventStore + Send + 'static>(
    node: Node<S>,
    listener: std::net::TcpListener,
    registry: Arc<cqrs_node::plugin::Registry>,
    options: http::Options,
    stdio: Option<Options>,
) -> Result<(), Box<dyn std::error::Error>> {
    use cqrs_node::http::with_stdio::{Forward, Forwarding};
    let started = http::start(node, options.max_batch)?;
    let with_stdio = stdio.is_some();
    let stdio = match stdio {
        Some(stdio_options) => {
            let (handle, registry) = (started.handle, registry.clone());
            tracing::info!("serving stdin/stdout too, by the same node");
            Some(
                std::thread::Builder::new()
                    .name("stdio".into())
                    .spawn(move || {
                        let service = Forwarding::new(registry);
                        stdio::serve(&stdio_options, service, move |_| Ok(Forward::new(handle)))
                    })?,
            )
        }
        None => {
            drop(started.handle);
            None
        }
    };
    let ready = move |address| {
        if !with_stdio {
            // The address actually bound (port 0 picks one), for whoever started the node.
            println!("listening on http://{address}");
            std::io::Write::flush(&mut std::io::stdout())?;
        }
        Ok(())
    };
    http::serve(
        listener,
        registry,
        started.bridge,
        started.appended,
        options,
        ready,
    )?;
    if let Some(thread) = stdio {
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("the stdio front end failed: {e}"),
            Err(_) => tracing::error!("the stdio front end panicked"),
        }
    }
    // Every handle is gone with the front ends: the writer ends after what it has in hand.
    started.writer.join();
    Ok(())
}

/// The `*.db` stores in the data directory, sorted.
fn stores_in(args: &StoreArgs, what: &str) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&args.data_dir)
        .map_err(|e| format!("{what}: {}: {e}", args.data_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "db"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// One store, whichever backend: `rebuild` and `check` run on either.
#[allow(clippy::large_enum_variant)] // one at a time, moved once
enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// Runs `f` (with the store's name) on the PostgreSQL store, or on the named SQLite store, or
/// on every `*.db` store in the data directory.
fn each_store(
    args: &StoreArgs,
    what: &str,
    mut f: impl FnMut(&str, AnyStore) -> Result<bool, StoreError>,
) -> Result<bool, Box<dyn std::error::Error>> {
    if let Some(url) = &args.postgres {
        let store = open_postgres(url, &args.postgres_schema, args.cache_size)?;
        let name = format!("PostgreSQL schema {}", args.postgres_schema);
        return Ok(f(&name, AnyStore::Postgres(store))?);
    }
    let paths = match &args.node_id {
        Some(id) => vec![sqlite_file(&args.data_dir, id)],
        None => stores_in(args, what)?,
    };
    if paths.is_empty() {
        return Err(format!("{what}: no store in {}", args.data_dir.display()).into());
    }
    let mut all_ok = true;
    for path in paths {
        if !path.exists() {
            return Err(format!("{what}: no store at {}", path.display()).into());
        }
        let mut store = SqliteStore::open(&path)?;
        store.set_cache_size(args.cache_size);
        all_ok &= f(&path.display().to_string(), AnyStore::Sqlite(store))?;
    }
    Ok(all_ok)
}

/// The store `export` reads: the named one, else the only one in the data directory.
fn one_store(args: &StoreArgs, what: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = match &args.node_id {
        Some(id) => sqlite_file(&args.data_dir, id),
        None => {
            let mut paths = stores_in(args, what)?;
            match paths.len() {
                1 => paths.remove(0),
                0 => return Err(format!("{what}: no store in {}", args.data_dir.display()).into()),
                n => {
                    return Err(format!(
                        "{what}: {n} stores in {}: name one with --node-id",
                        args.data_dir.display()
                    )
                    .into())
                }
            }
        }
    };
    if !path.exists() {
        return Err(format!("{what}: no store at {}", path.display()).into());
    }
    Ok(path)
}

/// `cqrs export`: the store's log and command ids, as stored, to `out` or standard output.
fn export(
    args: &StoreArgs,
    out: Option<&Path>,
    registry: &cqrs_node::plugin::Registry,
) -> Result<bool, Box<dyn std::error::Error>> {
    if let Some(url) = &args.postgres {
        let store = open_postgres(url, &args.postgres_schema, args.cache_size)?;
        let name = format!("PostgreSQL schema {}", args.postgres_schema);
        return export_store(store, &name, out, registry);
    }
    let path = one_store(args, "export")?;
    let mut store = SqliteStore::open(&path)?;
    store.set_cache_size(args.cache_size);
    export_store(store, &path.display().to_string(), out, registry)
}

/// Writes the export of `store` (named `name` in the log).
fn export_store<S: EventStore>(
    store: S,
    name: &str,
    out: Option<&Path>,
    registry: &cqrs_node::plugin::Registry,
) -> Result<bool, Box<dyn std::error::Error>> {
    // Read as stored, not upcast: the export keeps every event's schema and data; but opened
    // (docs/export.md): personal data in clear, a forgotten user's as null, no key exported.
    let mut store = Sealed::new(store, registry.personal());
    master::verify(&store, registry.master_key())?;
    let failed = |e: cqrs_node::export::Error| format!("export: {e}");
    let counts = match out {
        Some(file) => {
            let f = std::fs::File::create(file)
                .map_err(|e| format!("export: cannot create {}: {e}", file.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let counts = cqrs_node::export::export(&mut store, &mut w).map_err(failed)?;
            let f = w
                .into_inner()
                .map_err(|e| format!("export: {}: {}", file.display(), e.error()))?;
            f.sync_all()
                .map_err(|e| format!("export: {}: {e}", file.display()))?;
            counts
        }
        None => {
            let stdout = std::io::stdout().lock();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout);
            cqrs_node::export::export(&mut store, &mut w).map_err(failed)?
        }
    };
    tracing::info!(
        events = counts.events,
        command_ids = counts.command_ids,
        "exported {name}"
    );
    Ok(true)
}

/// `cqrs import`: an export into the empty store of `--node-id` (or into memory, to check it).
fn import(
    args: &StoreArgs,
    input: Option<&Path>,
    in_memory: bool,
    registry: &cqrs_node::plugin::Registry,
) -> Result<bool, Box<dyn std::error::Error>> {
    let reader: Box<dyn std::io::BufRead> = match input {
        Some(file) => Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(file)
                .map_err(|e| format!("import: cannot open {}: {e}", file.display()))?,
        )),
        None => Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())),
    };
    let failed = |e: cqrs_node::export::Error| format!("import: {e}");
    let projections = registry.projections();
    let (shown, counts) = if in_memory {
        let mut store = registry.view(MemoryStore::new());
        let counts = cqrs_node::export::import(&mut store, reader, &projections).map_err(failed)?;
        ("in memory (nothing kept)".to_string(), counts)
    } else {
        if let Some(url) = &args.postgres {
            let store = open_postgres(url, &args.postgres_schema, args.cache_size)?;
            let mut store = registry.view(store);
            let counts =
                cqrs_node::export::import(&mut store, reader, &projections).map_err(failed)?;
            master::open(&mut store, registry.master_key())?;
            let shown = format!("PostgreSQL schema {}", args.postgres_schema);
            println!(
                "{shown}: imported {} events and {} command ids",
                counts.events, counts.command_ids
            );
            return Ok(true);
        }
        let Some(id) = &args.node_id else {
            return Err("import: --node-id is required: it names the store to fill".into());
        };
        let path = sqlite_file(&args.data_dir, id);
        let mut store = SqliteStore::open(&path)?;
        store.set_cache_size(args.cache_size);
        let mut store = registry.view(store);
        let counts = cqrs_node::export::import(&mut store, reader, &projections).map_err(failed)?;
        master::open(&mut store, registry.master_key())?;
        (path.display().to_string(), counts)
    };
    println!(
        "{shown}: imported {} events and {} command ids",
        counts.events, counts.command_ids
    );
    Ok(true)
}
