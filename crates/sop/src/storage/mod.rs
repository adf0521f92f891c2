//! The storage trait: the only way the engine touches files.
//!
//! A small VFS. Every file the engine writes (log segments, checkpoints, the options file, the
//! lock file) goes through a [`Storage`] and the [`StorageFile`]s it opens, so tests can swap in
//! an in-memory backend or one that injects faults and simulates power cuts.
//!
//! # Contract
//!
//! - `read_at` fills the whole buffer or fails (`UnexpectedEof` when the file is too short).
//! - `write_at` writes the whole buffer or fails; the data is *not* durable until `sync` returns.
//! - `sync` makes every earlier write to the file durable (fdatasync). A failed `sync` is final:
//!   callers must not retry it and assume the data is safe (the engine poisons itself instead).
//! - `create`, `rename` and `remove` change directory entries; they are durable only after
//!   `sync_dir` on the parent folder returns.
//! - Paths are absolute or relative to the process; backends do not interpret them further.
//!
//! Backends: [`FileStorage`] (buffered std files, optionally O_DIRECT with 4096-byte alignment),
//! [`MemoryStorage`] (tests), and with the `testing` feature `FaultStorage` (fault injection
//! and power-cut simulation).

mod direct;
#[cfg(any(test, feature = "testing"))]
mod fault;
mod file;
mod memory;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use direct::DIRECT_IO_ALIGNMENT;
#[cfg(any(test, feature = "testing"))]
pub use fault::{FaultKind, FaultStorage};
pub use file::FileStorage;
pub use memory::MemoryStorage;

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading only.
    Read,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Create the file (failing if it exists) for reading and writing.
    CreateNew,
}

/// A folder of files: the backend the engine does all its I/O through.
pub trait Storage: Send + Sync + Debug {
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a folder and its parents; succeeds if it exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Lists the names of the entries of a folder (not recursive, sorted).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// True when the path exists (file or folder).
    fn exists(&self, path: &Path) -> bool;
    /// Makes the folder's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on the file for the life of the returned guard.
    /// Fails with `WouldBlock` when another holder has it.
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + Debug>>;
    /// Takes a shared advisory lock (many shared holders, no exclusive one). Fails with
    /// `WouldBlock` when an exclusive holder has it. Backends without it (needed only by
    /// clustered mode) return `Unsupported`.
    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + Debug>> {
        Err(unsupported("shared locks", path))
    }
    /// Creates the symbolic link `path` -> `target` atomically, failing with `AlreadyExists`
    /// when `path` exists (the compare-and-set clustered mode decides commits with). Durable
    /// after `sync_dir` on the parent. Backends without it return `Unsupported`.
    fn create_link(&self, path: &Path, target: &str) -> io::Result<()> {
        let _ = target;
        Err(unsupported("symbolic links", path))
    }
    /// Reads the target of a symbolic link made by [`Storage::create_link`] (`NotFound` when
    /// there is none).
    fn read_link(&self, path: &Path) -> io::Result<String> {
        Err(unsupported("symbolic links", path))
    }
}

fn unsupported(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "this storage backend has no {what} (clustered mode needs FileStorage): {}",
            path.display()
        ),
    )
}

/// One open file.
pub trait StorageFile: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True when the file has no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every write so far durable.
    fn sync(&self) -> io::Result<()>;
    /// Starts writing the `len` bytes at `offset` to the device without waiting for them, so
    /// a later [`StorageFile::sync`] finds them written or on their way. A hint: it makes
    /// nothing durable, and a backend may ignore it (the default does).
    fn start_sync(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// The path the file was opened with (for error messages).
    fn path(&self) -> &Path;
}

/// Replaces `dir/name` atomically with `bytes`: writes `dir/tmp`, syncs it, renames it over
/// `name` and syncs the folder. A crash leaves either the old file or the new one (and perhaps
/// a stale `tmp`, removed by the next call).
///
/// # Errors
/// I/O errors, naming the file.
pub fn replace_file(
    storage: &dyn Storage,
    dir: &Path,
    tmp: &str,
    name: &str,
    bytes: &[u8],
) -> crate::Result<()> {
    use crate::Error;
    let tmp = dir.join(tmp);
    let dst = dir.join(name);
    if storage.exists(&tmp) {
        storage.remove(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let f = storage
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_at(bytes, 0).map_err(|e| Error::io(&tmp, e))?;
    f.sync().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    storage.rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}
