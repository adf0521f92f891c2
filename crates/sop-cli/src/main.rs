//! The `sop` command line: create, inspect, query, load, verify and benchmark SOP databases.
//!
//! `main.rs` parses the arguments (clap) and dispatches to one module per command group under
//! `commands/`; `output.rs` prints tables, text and JSON lines; `codec.rs` maps keys and values
//! between the command line and the bytes of a store.

mod codec;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::output::Out;

#[derive(Parser)]
#[command(
    name = "sop",
    version,
    about = "Embedded transactional B-tree storage engine: tools",
    long_about = "Embedded transactional B-tree storage engine: tools.\n\n\
        Stores created here hold String keys and String values. Logs go to stderr; \
        set RUST_LOG (e.g. RUST_LOG=debug) for more."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by every command.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Database folder.
    #[arg(long, global = true, default_value = "./sop-data")]
    pub db: PathBuf,
    /// Machine output: one JSON object per line.
    #[arg(long, global = true)]
    pub json: bool,
    /// Open the database in clustered mode with this Redis (e.g. redis://127.0.0.1:6379/0), to
    /// work on a folder that other processes have open in clustered mode.
    #[arg(long, global = true, env = "SOP_REDIS_URL")]
    pub redis: Option<String>,
}

/// How keys and values on the command line map to the store's bytes.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct KeyOpts {
    /// Treat keys and values as the raw stored bytes, whatever the store's types.
    #[arg(long)]
    pub raw: bool,
    /// Keys and values on the command line are given in hex.
    #[arg(long)]
    pub hex: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a database, write, read, scan and delete, and print what happened.
    Demo {
        /// Folder for the demo database.
        #[arg(default_value = "./sop-demo")]
        dir: PathBuf,
        /// Items to write.
        #[arg(long, default_value_t = 100_000)]
        n: u64,
    },
    /// Create a new database in --db.
    Init(commands::admin::InitArgs),
    /// List the stores, with their item counts and types.
    Stores,
    /// Show a store's options and item count (without STORE: the database's).
    Info {
        /// Store name.
        store: Option<String>,
    },
    /// Print the value of a key.
    Get {
        /// Store name.
        store: String,
        /// Key (for stores with non-string keys: JSON, e.g. `42` or `["a",1]`).
        key: String,
        #[command(flatten)]
        k: KeyOpts,
    },
    /// Set a key to a value (creates a String/String store if needed).
    Put {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
        #[command(flatten)]
        k: KeyOpts,
    },
    /// Remove a key (non-zero exit status when it is not there).
    Del {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        #[command(flatten)]
        k: KeyOpts,
    },
    /// Print items in key order.
    Scan(commands::data::ScanArgs),
    /// Load JSON lines `{"key": ..., "value": ...}` from FILE (`-`: stdin) into a store.
    Import(commands::transfer::ImportArgs),
    /// Write a store's items to FILE (`-`: stdout) as JSON lines `{"key": ..., "value": ...}`.
    Export(commands::transfer::ExportArgs),
    /// Read every structure and check every checksum; non-zero exit status on any problem.
    Verify,
    /// Write a checkpoint now (shortens recovery, lets old log segments be deleted).
    Checkpoint,
    /// List prepared transactions whose two-phase-commit decision was lost.
    InDoubt,
    /// Commit or abort an in-doubt transaction.
    Resolve(commands::txn::ResolveArgs),
    /// Run the benchmark workloads (sop-bench) against SOP and its peers.
    Bench(commands::bench::BenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use commands::{admin, bench, data, demo, transfer, txn};
    let g = &cli.global;
    let out = Out { json: g.json };
    tracing::debug!(db = %g.db.display(), "starting");
    match cli.cmd {
        Cmd::Demo { dir, n } => demo::run(&dir, n, out),
        Cmd::Init(a) => admin::init(g, &a, out),
        Cmd::Stores => admin::stores(g, out),
        Cmd::Info { store } => admin::info(g, store.as_deref(), out),
        Cmd::Verify => admin::verify(g, out),
        Cmd::Checkpoint => admin::checkpoint(g, out),
        Cmd::Get { store, key, k } => data::get(g, &store, &key, k, out),
        Cmd::Put {
            store,
            key,
            value,
            k,
        } => data::put(g, &store, &key, &value, k, out),
        Cmd::Del { store, key, k } => data::del(g, &store, &key, k, out),
        Cmd::Scan(a) => data::scan(g, &a, out),
        Cmd::Import(a) => transfer::import(g, &a, out),
        Cmd::Export(a) => transfer::export(g, &a, out),
        Cmd::InDoubt => txn::in_doubt(g, out),
        Cmd::Resolve(a) => txn::resolve(g, &a, out),
        Cmd::Bench(a) => bench::run(&a, out),
    }
}

/// True when the error is a closed stdout (e.g. `sop scan s | head`): not worth reporting.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let json = cli.global.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let _ = Out { json }.json_line(&serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("sop: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
