//! The engine adapters, one module each, and [`open`] to pick one by name.
//!
//! `sop` and `redb` are always built; the others are behind the cargo features `peers-lmdb`,
//! `peers-sqlite`, `peers-fjall` and `peers-sled` (`all-peers` enables them all).

use std::path::Path;

use anyhow::{Result, bail};

use crate::{BenchDb, EngineConfig};

#[cfg(feature = "peers-fjall")]
pub mod fjall;
#[cfg(feature = "peers-lmdb")]
pub mod lmdb;
pub mod redb;
#[cfg(feature = "peers-sled")]
pub mod sled;
pub mod sop;
#[cfg(feature = "peers-sqlite")]
pub mod sqlite;

/// Every engine the harness knows, with the cargo feature that builds it (`None`: always).
pub const ENGINES: &[(&str, Option<&str>)] = &[
    ("sop", None),
    ("redb", None),
    ("lmdb", Some("peers-lmdb")),
    ("sqlite", Some("peers-sqlite")),
    ("fjall", Some("peers-fjall")),
    ("sled", Some("peers-sled")),
];

/// The engines built into this binary.
pub const BUILT: &[&str] = &[
    "sop",
    "redb",
    #[cfg(feature = "peers-lmdb")]
    "lmdb",
    #[cfg(feature = "peers-sqlite")]
    "sqlite",
    #[cfg(feature = "peers-fjall")]
    "fjall",
    #[cfg(feature = "peers-sled")]
    "sled",
];

/// True when `name` is built into this binary.
#[must_use]
pub fn available(name: &str) -> bool {
    BUILT.contains(&name)
}

/// Checks that `name` is known and built in.
///
/// Parses a comma-separated engine list (`sop,redb`) and checks each name.
///
/// # Errors
/// An empty list, an unknown engine, or one whose feature is off.
pub fn parse_list(list: &str) -> Result<Vec<String>> {
    let names: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        bail!("no engine given");
    }
    for name in &names {
        check(name)?;
    }
    Ok(names)
}

/// # Errors
/// An unknown engine, or one whose feature is off.
pub fn check(name: &str) -> Result<()> {
    match ENGINES.iter().find(|(n, _)| *n == name) {
        None => bail!(
            "unknown engine {name:?} (known: {})",
            ENGINES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some((_, Some(feature))) if !available(name) => bail!(
            "engine {name:?} is not built in: rebuild with `--features {feature}` (or `all-peers`)"
        ),
        Some(_) => Ok(()),
    }
}

/// Opens engine `name` in the folder `path`.
///
/// # Errors
/// As [`check`]; the engine's errors.
pub fn open(name: &str, path: &Path, cfg: &EngineConfig) -> Result<Box<dyn BenchDb>> {
    check(name)?;
    std::fs::create_dir_all(path)?;
    Ok(match name {
        "sop" => Box::new(sop::SopDb::open(path, cfg)?),
        "redb" => Box::new(redb::RedbDb::open(path, cfg)?),
        #[cfg(feature = "peers-lmdb")]
        "lmdb" => Box::new(lmdb::LmdbDb::open(path, cfg)?),
        #[cfg(feature = "peers-sqlite")]
        "sqlite" => Box::new(sqlite::SqliteDb::open(path, cfg)?),
        #[cfg(feature = "peers-fjall")]
        "fjall" => Box::new(fjall::FjallDb::open(path, cfg)?),
        #[cfg(feature = "peers-sled")]
        "sled" => Box::new(sled::SledDb::open(path, cfg)?),
        _ => bail!("engine {name:?} is not built in"),
    })
}
