//! # sop-bench: SOP against its peers
//!
//! A [`BenchDb`] abstracts one embedded key/value engine: open at a path with a durability
//! flag, run a write transaction (insert/remove byte keys and values, then commit) or a read
//! transaction (point gets and range scans). The workloads of `shared/bench/WORKLOADS.md`
//! (W1-W7 with W4c, see [`Workload`]) run against any of them and return [`Row`]s of timings.
//!
//! Keys and values come from a fixed seed ([`Data::random`]), so every engine sees the same
//! items in the same order. Each workload runs on a fresh folder.

pub mod engines;
pub mod workloads;

use std::path::Path;

use anyhow::Result;

pub use workloads::{Data, Row, Workload};

/// How an engine is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Fsync on every commit (true) or leave it to the operating system (false).
    pub sync: bool,
    /// SOP only: items per node (`None`: `StoreOptions::default()`).
    pub slot_length: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            sync: true,
            slot_length: None,
        }
    }
}

/// The inside of a write transaction.
pub trait Writer {
    /// Inserts (or overwrites) `key`.
    ///
    /// # Errors
    /// The engine's errors.
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key` (no error when absent).
    ///
    /// # Errors
    /// The engine's errors.
    fn remove(&mut self, key: &[u8]) -> Result<()>;
}

/// The inside of a read transaction (one consistent snapshot where the engine has one).
pub trait Reader {
    /// Copies the value of `key` into `out` (cleared first); false when absent.
    ///
    /// # Errors
    /// The engine's errors.
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool>;

    /// Visits up to `limit` items in key order from `from` (inclusive; `None`: the first
    /// item). Returns the number visited.
    ///
    /// # Errors
    /// The engine's errors.
    fn scan(
        &mut self,
        from: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize>;
}

/// Body of a write transaction.
pub type WriteFn<'a> = dyn FnMut(&mut dyn Writer) -> Result<()> + 'a;
/// Body of a read transaction.
pub type ReadFn<'a> = dyn FnMut(&mut dyn Reader) -> Result<()> + 'a;

/// One engine, open on one folder.
///
/// Shared by reference between threads (the concurrent workloads W4c and W5's `random_get_2t`
/// call [`BenchDb::write`] and [`BenchDb::read`] from several threads at once): every adapter
/// is `Send + Sync` and takes `&self`. Each call is one transaction on the calling thread; the
/// engine serializes or merges concurrent writers its own way (one writer at a time for redb
/// and LMDB, optimistic transactions with retry on conflict for SOP, a connection per thread
/// and `BEGIN IMMEDIATE` for SQLite, batches for fjall and sled).
pub trait BenchDb: Send + Sync {
    /// Opens (creating) the engine's database inside the folder `path`.
    ///
    /// # Errors
    /// The engine's errors.
    fn open(path: &Path, cfg: &EngineConfig) -> Result<Self>
    where
        Self: Sized;

    /// The engine's name as the CLI spells it.
    fn name(&self) -> &'static str;

    /// Begins a write transaction, runs `body` in it and commits (durably when opened with
    /// `sync`). When `body` fails the transaction is abandoned. An engine whose commits can
    /// fail with a retryable conflict (SOP) runs `body` again in a new transaction.
    ///
    /// # Errors
    /// `body`'s or the engine's errors.
    fn write(&self, body: &mut WriteFn<'_>) -> Result<()>;

    /// Begins a read transaction and runs `body` in it.
    ///
    /// # Errors
    /// `body`'s or the engine's errors.
    fn read(&self, body: &mut ReadFn<'_>) -> Result<()>;
}

/// Bytes the files under `path` take on disk, recursively, as `du` counts them: allocated
/// blocks, so that sparse pre-sized files (fjall's journal, for one) count what they use, not
/// their length. Where blocks are not known, the length.
///
/// # Errors
/// I/O errors.
pub fn dir_size(path: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += allocated(&meta);
        }
    }
    Ok(total)
}

#[cfg(unix)]
fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}
