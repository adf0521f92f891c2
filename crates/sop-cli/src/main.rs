//! The `sop` command line.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sop::{Database, DatabaseOptions, StoreOptions, TransactionMode};

#[derive(Parser)]
#[command(
    name = "sop",
    version,
    about = "Embedded transactional B-tree storage engine: tools"
)]
struct Cli {
    /// Database folder.
    #[arg(long, global = true, default_value = "./sop-data")]
    db: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a standalone database, write, read, scan and print what happened.
    Demo {
        /// Folder for the demo database.
        #[arg(default_value = "./sop-demo")]
        dir: PathBuf,
        /// Items to write.
        #[arg(long, default_value_t = 100_000)]
        n: u64,
    },
    /// List the stores.
    Stores,
    /// Show a store's options and item count.
    Info { store: String },
    /// Print the value of a key (stores of string keys and values).
    Get { store: String, key: String },
    /// Set a key to a value (creates the store if needed).
    Put {
        store: String,
        key: String,
        value: String,
    },
    /// Remove a key.
    Del { store: String, key: String },
    /// Print items in key order.
    Scan {
        store: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        reverse: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Read every structure and check every checksum; non-zero exit status on any problem.
    Verify,
}

fn open_existing(path: &PathBuf) -> Result<Database> {
    let opts = DatabaseOptions {
        create_if_missing: false,
        ..DatabaseOptions::new(path)
    };
    Database::open(opts).with_context(|| format!("opening {}", path.display()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo { dir, n } => demo(&dir, n, cli.json),
        Cmd::Stores => {
            let db = open_existing(&cli.db)?;
            for s in db.store_names()? {
                println!("{s}");
            }
            Ok(())
        }
        Cmd::Info { store } => {
            let db = open_existing(&cli.db)?;
            let tx = db.begin(TransactionMode::ForReading)?;
            let info = tx.store_info(&store)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"name": info.name, "count": info.count, "options": info.options_json()})
                );
            } else {
                println!(
                    "store {}: {} items, options {:?}",
                    info.name, info.count, info.options
                );
            }
            Ok(())
        }
        Cmd::Get { store, key } => {
            let db = open_existing(&cli.db)?;
            let tx = db.begin(TransactionMode::ForReading)?;
            let s = tx.open_btree::<String, String>(&store)?;
            match s.get(&key)? {
                Some(v) => println!("{v}"),
                None => bail!("key {key:?} not found in {store}"),
            }
            Ok(())
        }
        Cmd::Put { store, key, value } => {
            let db = Database::open(DatabaseOptions::new(&cli.db))?;
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.new_btree::<String, String>(&store, StoreOptions::default())?;
            s.upsert(&key, &value)?;
            tx.commit()?;
            Ok(())
        }
        Cmd::Del { store, key } => {
            let db = open_existing(&cli.db)?;
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_btree::<String, String>(&store)?;
            if !s.remove(&key)? {
                bail!("key {key:?} not found in {store}");
            }
            tx.commit()?;
            Ok(())
        }
        Cmd::Scan {
            store,
            from,
            to,
            reverse,
            limit,
        } => {
            let db = open_existing(&cli.db)?;
            let tx = db.begin(TransactionMode::ForReading)?;
            let s = tx.open_btree::<String, String>(&store)?;
            use std::ops::Bound;
            let lo = from.map_or(Bound::Unbounded, Bound::Included);
            let hi = to.map_or(Bound::Unbounded, Bound::Excluded);
            let range = s.range((lo, hi));
            let items: Box<dyn Iterator<Item = sop::Result<sop::StoreItem<String, String>>>> =
                if reverse {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
            for item in items.take(limit) {
                let item = item?;
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({"key": item.key, "value": item.value})
                    );
                } else {
                    println!("{}\t{}", item.key, item.value);
                }
            }
            Ok(())
        }
        Cmd::Verify => {
            let db = open_existing(&cli.db)?;
            let r = db.verify()?;
            println!(
                "{} stores, {} items, {} nodes, {} blobs, {} segments, {} records",
                r.stores, r.items, r.nodes, r.blobs, r.segments, r.records
            );
            for p in &r.problems {
                println!("PROBLEM: {p}");
            }
            if !r.is_ok() {
                std::process::exit(1);
            }
            println!("ok");
            Ok(())
        }
    }
}

fn demo(dir: &PathBuf, n: u64, json: bool) -> Result<()> {
    let db = Database::open(DatabaseOptions::new(dir))?;
    println!("opened standalone database in {}", dir.display());

    let t = Instant::now();
    let tx = db.begin(TransactionMode::ForWriting)?;
    let people = tx.new_btree::<(String, u32), String>("people", StoreOptions::default())?;
    for i in 0..n {
        people.upsert(
            &(format!("user{:07}", i), (i % 97) as u32),
            &format!("value of user {i}"),
        )?;
    }
    tx.commit()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {n} items in one transaction: {secs:.3}s ({:.0} items/s)",
        n as f64 / secs
    );

    let t = Instant::now();
    let tx = db.begin(TransactionMode::ForReading)?;
    let people = tx.open_btree::<(String, u32), String>("people")?;
    let mut found = 0u64;
    for i in (0..n).step_by(7) {
        if people
            .get(&(format!("user{:07}", i), (i % 97) as u32))?
            .is_some()
        {
            found += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("read {found} items by key: {secs:.3}s");

    let lo = ("user0000100".to_string(), 0);
    let hi = ("user0000105".to_string(), 0);
    println!("scan from {lo:?} to {hi:?}:");
    for item in people.range(lo..hi) {
        let item = item?;
        println!("  {:?} => {}", item.key, item.value);
    }
    people.last()?;
    if let Some((k, _)) = people.current_key()? {
        println!("last key: {k:?}, count: {}", people.count()?);
    }
    drop(people);
    tx.commit()?;

    let t = Instant::now();
    for i in 0..10u64 {
        let tx = db.begin(TransactionMode::ForWriting)?;
        let people = tx.open_btree::<(String, u32), String>("people")?;
        people.remove(&(format!("user{:07}", i), (i % 97) as u32))?;
        tx.commit()?;
    }
    println!(
        "10 durable single-delete transactions: {:.3}s",
        t.elapsed().as_secs_f64()
    );

    let r = db.verify()?;
    println!(
        "verify: {} stores, {} items, {} nodes, {} records, {} problems",
        r.stores,
        r.items,
        r.nodes,
        r.records,
        r.problems.len()
    );
    if json {
        println!("{}", serde_json::json!({"items": r.items, "ok": r.is_ok()}));
    }
    if !r.is_ok() {
        bail!("verify found problems: {:?}", r.problems);
    }
    Ok(())
}
