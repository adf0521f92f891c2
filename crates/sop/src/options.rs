//! Options of a database, a store and a transaction.
//!
//! [`DatabaseOptions`] are persisted in the database folder (`dboptions.json`, a checksummed
//! text file) when it is created and read back on every open. [`StoreOptions`] are persisted in
//! the catalog with the store. Values out of range are rejected with
//! [`Error::InvalidOption`], never silently clamped.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Standalone (one process, no external service) or clustered (many processes, Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DatabaseType {
    /// One process owns the folder; a second process is refused.
    #[default]
    Standalone,
    /// Many processes share the folder, coordinated through an external coordinator.
    Clustered,
}

/// When a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Durability {
    /// Acknowledge after the commit record is on stable storage (fsync). The default.
    #[default]
    Immediate,
    /// Acknowledge once written to the operating system; a power cut may lose the latest
    /// commits (never a part of one). For benchmarks and bulk loads.
    None,
}

/// How a database is opened; persisted in the folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseOptions {
    /// The stores folder (the database folder).
    pub path: PathBuf,
    /// Standalone or clustered.
    pub db_type: DatabaseType,
    /// Bytes of decoded nodes kept in the in-process (L1) node cache.
    pub node_cache_bytes: u64,
    /// Commit durability.
    pub durability: Durability,
    /// Use O_DIRECT for log files (4096-byte aligned I/O).
    pub direct_io: bool,
    /// Size at which a log segment file is sealed and a new one started.
    pub segment_bytes: u64,
    /// Log bytes written since the last checkpoint that trigger a new checkpoint.
    pub checkpoint_bytes: u64,
    /// Create the folder and the database when missing.
    pub create_if_missing: bool,
    /// Write a checkpoint and reclaim log space when the last handle is dropped (a clean
    /// close, so the next open replays nothing).
    pub checkpoint_on_close: bool,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            path: PathBuf::from("sop-data"),
            db_type: DatabaseType::Standalone,
            node_cache_bytes: 256 << 20,
            durability: Durability::Immediate,
            direct_io: false,
            segment_bytes: 16 << 20,
            checkpoint_bytes: 32 << 20,
            create_if_missing: true,
            checkpoint_on_close: true,
        }
    }
}

impl DatabaseOptions {
    /// Options for a standalone database in `path`, everything else default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DatabaseOptions {
            path: path.into(),
            ..Self::default()
        }
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::InvalidOption("path must not be empty".into()));
        }
        if !(1 << 16..=1 << 32).contains(&self.segment_bytes) {
            return Err(Error::InvalidOption(format!(
                "segment_bytes must be between 64 KiB and 4 GiB, got {}",
                self.segment_bytes
            )));
        }
        if self.checkpoint_bytes < 1 << 16 {
            return Err(Error::InvalidOption(format!(
                "checkpoint_bytes must be at least 64 KiB, got {}",
                self.checkpoint_bytes
            )));
        }
        Ok(())
    }
}

/// Where a store keeps its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ValuePlacement {
    /// Inside the leaf node with the key (SOP's `SmallData`). Best for small values.
    #[default]
    InNode,
    /// In a separate blob written at commit (SOP's `MediumData`).
    SeparateBlob,
    /// In a separate blob written as soon as it is added or updated (SOP's `BigData`), so a
    /// large transaction does not hold its values in memory until commit.
    ActivelyPersisted,
}

/// The smallest and largest allowed `slot_length`.
pub const SLOT_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 2..=20_000;
/// Items per node when not given (chosen by measurement: `docs/adr/0002-node-size.md`, and
/// `docs/adr/0006-node-size-with-deltas.md` since leaf deltas).
pub const DEFAULT_SLOT_LENGTH: usize = 96;

/// Options of one store, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreOptions {
    /// Maximum items per node: even, 2 to 20,000.
    pub slot_length: usize,
    /// Unique keys (true) or duplicates allowed (false).
    pub is_unique: bool,
    /// Where values live.
    pub value_placement: ValuePlacement,
    /// Move items to a sibling with room before splitting a full leaf (higher fill factor).
    pub leaf_load_balancing: bool,
    /// Free text.
    pub description: String,
    /// Name of a custom comparator registered with the database (`None`: byte order of the
    /// encoded keys).
    pub comparator: Option<String>,
    /// Persisted names of the key and value types of a typed store (checked at open).
    pub key_type: Option<String>,
    /// See `key_type`.
    pub value_type: Option<String>,
    /// Clustered mode: keep this store's node images in the coordinator's L2 cache (Redis)
    /// for this long after each use, so processes on other machines skip the storage read.
    /// `None` (the default): not kept there. Worth it when the storage is remote (a network
    /// share); on a local disk the page cache answers faster than a round trip to Redis.
    pub node_cache_duration: Option<std::time::Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            slot_length: DEFAULT_SLOT_LENGTH,
            is_unique: true,
            value_placement: ValuePlacement::InNode,
            leaf_load_balancing: false,
            description: String::new(),
            comparator: None,
            key_type: None,
            value_type: None,
            node_cache_duration: None,
        }
    }
}

impl StoreOptions {
    /// Defaults with unique or duplicate keys.
    #[must_use]
    pub fn unique(is_unique: bool) -> Self {
        StoreOptions {
            is_unique,
            ..Self::default()
        }
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !SLOT_LENGTH_RANGE.contains(&self.slot_length) || !self.slot_length.is_multiple_of(2) {
            return Err(Error::InvalidOption(format!(
                "slot_length must be even and between 2 and 20000, got {}",
                self.slot_length
            )));
        }
        Ok(())
    }

    /// Describes the first option that differs in a way that changes behaviour, if any.
    #[must_use]
    pub fn incompatibility(&self, other: &StoreOptions) -> Option<String> {
        let diff = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
            Some(format!("{what} is {a:?}, requested {b:?}"))
        };
        if self.slot_length != other.slot_length {
            return diff("slot_length", &self.slot_length, &other.slot_length);
        }
        if self.is_unique != other.is_unique {
            return diff("is_unique", &self.is_unique, &other.is_unique);
        }
        if self.value_placement != other.value_placement {
            return diff(
                "value_placement",
                &self.value_placement,
                &other.value_placement,
            );
        }
        if self.leaf_load_balancing != other.leaf_load_balancing {
            return diff(
                "leaf_load_balancing",
                &self.leaf_load_balancing,
                &other.leaf_load_balancing,
            );
        }
        if self.comparator != other.comparator {
            return diff("comparator", &self.comparator, &other.comparator);
        }
        for (what, a, b) in [
            ("key type", &self.key_type, &other.key_type),
            ("value type", &self.value_type, &other.value_type),
        ] {
            if a.is_some() && b.is_some() && a != b {
                return diff(what, a, b);
            }
        }
        None
    }
}

/// What a transaction may do and what it promises. See `ARCHITECTURE.md` for the exact
/// guarantees of each mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionMode {
    /// Reads skip all bookkeeping; writes are refused.
    NoCheck,
    /// Reads and writes; validated at commit.
    ForWriting,
    /// Reads only, from one consistent snapshot taken at begin.
    ForReading,
}

impl TransactionMode {
    /// The name used in messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            TransactionMode::NoCheck => "NoCheck",
            TransactionMode::ForWriting => "ForWriting",
            TransactionMode::ForReading => "ForReading",
        }
    }
}

/// The default maximum duration of a transaction (as in SOP).
pub const DEFAULT_MAX_TXN_DURATION: Duration = Duration::from_secs(15 * 60);
/// The cap on the maximum duration of a transaction (as in SOP).
pub const MAX_TXN_DURATION_CAP: Duration = Duration::from_secs(60 * 60);
