//! [`FileStorage`]: the backend over real files.
//!
//! # Invariants
//!
//! - Positioned I/O only (`pread`/`pwrite` through [`FileExt`]): handles have no cursor, so one
//!   handle can be shared between threads.
//! - `read_at` fills the whole buffer or fails (`read_exact_at`, `UnexpectedEof` at the end);
//!   `write_at` writes all of it (`write_all_at`).
//! - `sync` is `fdatasync` (`sync_data`): data and the size, not other metadata. `sync_dir`
//!   opens the folder and `fsync`s it, which makes creates, renames and removes in it durable.
//! - `list` returns the entry names sorted; a name that is not UTF-8 is an `InvalidData` error
//!   (the engine only creates UTF-8 names).
//! - `lock_exclusive` creates the lock file if missing, never truncates it, and takes a
//!   non-blocking exclusive `flock` (std's `File::try_lock`). `flock` locks belong to the open
//!   file description, so two opens of the same file conflict even inside one process. The
//!   lock is released when the guard (which owns the `File`) is dropped.
//! - With [`FileStorage::direct`] files are opened with `O_DIRECT` and every read and write is
//!   translated to 4096-byte aligned I/O (see the `direct` module); everything else is the same.

use std::fmt::{self, Debug};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::direct::DirectFile;
use super::{OpenMode, Storage, StorageFile};

/// The real-file backend. `new()` uses the page cache; `direct()` uses `O_DIRECT`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStorage {
    direct: bool,
}

impl FileStorage {
    /// Buffered I/O through the page cache (std files).
    pub fn new() -> Self {
        Self { direct: false }
    }

    /// Unbuffered I/O with `O_DIRECT`; reads and writes at any offset and length are translated
    /// to 4096-byte aligned I/O. Opening fails with `Unsupported` on file systems that refuse
    /// `O_DIRECT`.
    pub fn direct() -> Self {
        Self { direct: true }
    }

    /// True for a backend made by [`FileStorage::direct`].
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

/// The `OpenOptions` for a mode (shared with the `O_DIRECT` file type).
pub(super) fn open_options(mode: OpenMode) -> OpenOptions {
    let mut options = OpenOptions::new();
    match mode {
        OpenMode::Read => options.read(true),
        OpenMode::ReadWrite => options.read(true).write(true),
        OpenMode::CreateNew => options.read(true).write(true).create_new(true),
    };
    options
}

/// Adds the path to an error so it is useful on its own.
pub(super) fn with_path(err: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}

impl Storage for FileStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if self.direct {
            return Ok(Arc::new(DirectFile::open(path, mode)?));
        }
        let file = open_options(mode)
            .open(path)
            .map_err(|e| with_path(e, "cannot open", path))?;
        Ok(Arc::new(StdFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path).map_err(|e| with_path(e, "cannot create folder", path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot rename {} to {}: {e}", from.display(), to.display()),
            )
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path).map_err(|e| with_path(e, "cannot remove", path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| with_path(e, "cannot list", dir))? {
            let entry = entry.map_err(|e| with_path(e, "cannot list", dir))?;
            let name = entry.file_name().into_string().map_err(|name| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name is not UTF-8: {}", dir.join(name).display()),
                )
            })?;
            names.push(name);
        }
        names.sort_unstable();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.try_exists().unwrap_or(false)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| with_path(e, "cannot sync folder", dir))
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + Debug>> {
        lock_file(path, false)
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + Debug>> {
        lock_file(path, true)
    }

    fn create_link(&self, path: &Path, target: &str) -> io::Result<()> {
        std::os::unix::fs::symlink(target, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                e
            } else {
                with_path(e, "cannot create link", path)
            }
        })
    }
    fn read_link(&self, path: &Path) -> io::Result<String> {
        let t = fs::read_link(path)?;
        t.into_os_string().into_string().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("link target is not UTF-8: {}", path.display()),
            )
        })
    }
}

/// Opens (creating) `path` and takes a non-blocking flock on it, shared or exclusive.
fn lock_file(path: &Path, shared: bool) -> io::Result<Box<dyn Send + Sync + Debug>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| with_path(e, "cannot open lock file", path))?;
    let taken = if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match taken {
        Ok(()) => Ok(Box::new(FileLock {
            file,
            path: path.to_path_buf(),
        })),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("already locked by another holder: {}", path.display()),
        )),
        Err(TryLockError::Error(e)) => Err(with_path(e, "cannot lock", path)),
    }
}

/// The guard of [`FileStorage::lock_exclusive`]: owns the locked file; dropping it closes the
/// file, which releases the lock.
struct FileLock {
    file: File,
    path: PathBuf,
}

impl Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first only makes it explicit.
        let _ = self.file.unlock();
    }
}

/// A buffered (page cache) file.
#[derive(Debug)]
struct StdFile {
    file: File,
    path: PathBuf,
}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn start_sync(&self, offset: u64, len: u64) -> io::Result<()> {
        start_writeback(&self.file, offset, len)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: submits the dirty pages of the range for
/// writeback and returns without waiting for them (nor flushing the device's cache).
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range past the largest file offset",
        ));
    };
    // SAFETY: `sync_file_range` takes a file descriptor and three integers and touches no
    // memory of ours; the descriptor is open for as long as `file` is borrowed.
    let r = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exercise(fs: &FileStorage) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("db/sub");
        fs.create_dir_all(&root).unwrap();
        fs.create_dir_all(&root).unwrap();
        assert!(fs.exists(&root));

        let a = root.join("a");
        assert_eq!(
            fs.open(&a, OpenMode::Read).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let f = fs.open(&a, OpenMode::CreateNew).unwrap();
        assert_eq!(f.path(), a);
        assert_eq!(f.len().unwrap(), 0);
        f.write_at(b"hello", 0).unwrap();
        f.write_at(b"world", 10).unwrap();
        assert_eq!(f.len().unwrap(), 15);
        let mut buf = [0xAAu8; 15];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello\0\0\0\0\0world");
        let mut short = [0u8; 6];
        assert_eq!(
            f.read_at(&mut short, 10).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        f.set_len(3).unwrap();
        assert_eq!(f.len().unwrap(), 3);
        f.sync().unwrap();
        assert_eq!(
            fs.open(&a, OpenMode::CreateNew).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );

        let ro = fs.open(&a, OpenMode::Read).unwrap();
        let mut buf = [0u8; 3];
        ro.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hel");
        assert!(ro.write_at(b"x", 0).is_err());

        for name in ["c", "b"] {
            fs.open(&root.join(name), OpenMode::CreateNew).unwrap();
        }
        fs.create_dir_all(&root.join("d")).unwrap();
        assert_eq!(fs.list(&root).unwrap(), ["a", "b", "c", "d"]);
        fs.rename(&a, &root.join("b")).unwrap();
        assert!(!fs.exists(&a));
        assert_eq!(
            fs.open(&root.join("b"), OpenMode::Read)
                .unwrap()
                .len()
                .unwrap(),
            3
        );
        fs.remove(&root.join("c")).unwrap();
        assert_eq!(
            fs.remove(&root.join("c")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(fs.list(&root).unwrap(), ["b", "d"]);
        fs.sync_dir(&root).unwrap();
        assert!(fs.sync_dir(&root.join("missing")).is_err());
        assert!(fs.list(&root.join("missing")).is_err());
    }

    #[test]
    fn buffered_round_trip() {
        let fs = FileStorage::new();
        assert!(!fs.is_direct());
        exercise(&fs);
    }

    #[test]
    fn direct_round_trip() {
        let fs = FileStorage::direct();
        assert!(fs.is_direct());
        // /tmp may be a tmpfs without O_DIRECT on older kernels: skip there.
        let dir = tempfile::tempdir().unwrap();
        match fs.open(&dir.path().join("probe"), OpenMode::CreateNew) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return,
            other => drop(other.unwrap()),
        }
        exercise(&fs);
    }

    #[test]
    fn a_writeback_started_early_changes_no_bytes_and_refuses_impossible_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FileStorage::new();
        let f = fs.open(&dir.path().join("f"), OpenMode::CreateNew).unwrap();
        f.write_at(b"written before the writeback", 100).unwrap();
        f.start_sync(100, 28).unwrap();
        // Past the end, and empty: nothing to write, not an error.
        f.start_sync(1 << 30, 4096).unwrap();
        f.start_sync(0, 0).unwrap();
        f.write_at(b"after", 0).unwrap();
        f.sync().unwrap();
        let mut buf = vec![0u8; 128];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..5], b"after");
        assert_eq!(&buf[100..], b"written before the writeback");
        let err = f.start_sync(u64::MAX, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn lock_refuses_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let fs = FileStorage::new();
        let guard = fs.lock_exclusive(&path).unwrap();
        assert!(fs.exists(&path));
        let err = fs.lock_exclusive(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(format!("{guard:?}").contains("LOCK"));
        drop(guard);
        let again = fs.lock_exclusive(&path).unwrap();
        // Taking the lock never truncates the file.
        drop(again);
        std::fs::write(&path, b"pid 1").unwrap();
        let _g = fs.lock_exclusive(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"pid 1");
    }

    #[test]
    fn lock_in_missing_folder_fails() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileStorage::new()
            .lock_exclusive(&dir.path().join("nope/LOCK"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
