//! One module per command group.

pub mod admin;
pub mod bench;
pub mod data;
pub mod demo;
pub mod transfer;
pub mod txn;

use std::path::Path;

use anyhow::{Context, Result, bail};
use sop::{Database, DatabaseOptions};

/// Opens the existing database in `path`; refuses a folder that is not a database (it would
/// otherwise be created).
pub fn open_existing(path: &Path) -> Result<Database> {
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
    tracing::debug!(path = %path.display(), "opening database");
    Database::open(opts).with_context(|| format!("opening database {}", path.display()))
}

/// Opens the database in `path`, creating it when the folder is missing or empty.
pub fn open_or_create(path: &Path) -> Result<Database> {
    if Database::is_database(path) {
        return open_existing(path);
    }
    tracing::info!(path = %path.display(), "creating database");
    Database::open(DatabaseOptions::new(path))
        .with_context(|| format!("creating database {}", path.display()))
}
