//! One module per command group.

pub mod admin;
pub mod bench;
pub mod data;
pub mod demo;
pub mod transfer;
pub mod txn;

use anyhow::{Context, Result, bail};
use sop::{ClusterOptions, Database, DatabaseOptions};

use crate::Global;

/// Opens with `opts`, in clustered mode when `--redis` was given.
fn open_mode(g: &Global, opts: DatabaseOptions) -> sop::Result<Database> {
    match &g.redis {
        Some(url) => sop_redis::open(
            opts,
            ClusterOptions::default(),
            &sop_redis::RedisOptions::from_url(url),
        ),
        // The folder may have been used in clustered mode last (persisted options say so).
        None => Database::open(DatabaseOptions {
            db_type: sop::DatabaseType::Standalone,
            ..opts
        }),
    }
}

/// Opens the existing database in `--db`; refuses a folder that is not a database (it would
/// otherwise be created).
pub fn open_existing(g: &Global) -> Result<Database> {
    let path = g.db.as_path();
    if !path.exists() {
        bail!(
            "{} does not exist (create a database with `sop --db {} init`)",
            path.display(),
            path.display()
        );
    }
    if !Database::is_database(path) {
        bail!(
            "{} is not a SOP database (no dboptions.json)",
            path.display()
        );
    }
    let opts = DatabaseOptions {
        create_if_missing: false,
        ..DatabaseOptions::new(path)
    };
    let opts = match Database::read_options(path) {
        // Keep the persisted options so that opening does not rewrite them.
        Ok(p) => DatabaseOptions {
            path: path.to_path_buf(),
            ..p
        },
        Err(e) => {
            tracing::warn!("cannot read the options of {}: {e}", path.display());
            opts
        }
    };
    tracing::debug!(path = %path.display(), clustered = g.redis.is_some(), "opening database");
    open_mode(g, opts).with_context(|| format!("opening database {}", path.display()))
}

/// Opens the database in `--db`, creating it when the folder is missing or empty.
pub fn open_or_create(g: &Global) -> Result<Database> {
    let path = g.db.as_path();
    if Database::is_database(path) {
        return open_existing(g);
    }
    tracing::info!(path = %path.display(), "creating database");
    open_mode(g, DatabaseOptions::new(path))
        .with_context(|| format!("creating database {}", path.display()))
}
