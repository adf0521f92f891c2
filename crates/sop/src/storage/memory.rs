//! [`MemoryStorage`]: an in-memory folder tree, for tests.
//!
//! # Invariants
//!
//! - The tree is a [`Namespace`]: a map from file path to file content plus a set of folders.
//!   Paths are compared by their components (`a//b` equals `a/b`, a trailing `/` is ignored);
//!   nothing else is normalised. The empty path, `.` and `/` are roots and always exist.
//! - A file or folder can only be created inside an existing folder (like a real file system),
//!   and a path is never both a file and a folder.
//! - `list` returns the names of the direct children (files and folders), sorted.
//! - A file's content lives behind its own `Arc`, so an open handle keeps working after the file
//!   is renamed or removed (POSIX inode semantics), and all handles of one file share content.
//! - Everything is "durable" at once: `sync` and `sync_dir` only check their argument. Use
//!   `FaultStorage` to model power cuts.
//! - `lock_exclusive` creates the lock file if missing (as `FileStorage` does) and refuses a
//!   second holder with `WouldBlock` until the first guard is dropped.
//! - Clones share one tree (`Arc<Mutex<..>>` inside).
//!
//! The [`Namespace`] type and the byte-image helpers ([`read_image`], [`write_image`],
//! [`set_len_image`]) are shared with the fault-injecting backend.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Debug};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::{OpenMode, Storage, StorageFile};

/// Locks a mutex, ignoring poisoning (the protected state stays consistent: every mutation is
/// completed before anything that can panic).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// True for the paths that are treated as always-existing roots.
pub(super) fn is_root(path: &Path) -> bool {
    path.as_os_str().is_empty() || path == Path::new(".") || path.parent().is_none()
}

/// The folder holding `path` (the empty path for a bare relative name).
pub(super) fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Converts an offset and length to the `usize` range they cover.
fn byte_range(offset: u64, len: usize) -> io::Result<(usize, usize)> {
    let start = usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset + length overflows"))?;
    Ok((start, end))
}

/// Reads `buf.len()` bytes at `offset` from an in-memory image (`UnexpectedEof` if short).
pub(super) fn read_image(image: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    let (start, end) = byte_range(offset, buf.len())?;
    match image.get(start..end) {
        Some(src) => {
            buf.copy_from_slice(src);
            Ok(())
        }
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "failed to fill whole buffer",
        )),
    }
}

/// Grows or shrinks an image to `len` bytes, zero-filling growth. Growth that cannot be
/// allocated fails with `OutOfMemory` instead of aborting.
pub(super) fn set_len_image(image: &mut Vec<u8>, len: u64) -> io::Result<()> {
    let (_, len) = byte_range(len, 0)?;
    if len > image.len() {
        image
            .try_reserve(len - image.len())
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    }
    image.resize(len, 0);
    Ok(())
}

/// Writes all of `buf` at `offset` into an image, zero-filling any gap past its end.
pub(super) fn write_image(image: &mut Vec<u8>, buf: &[u8], offset: u64) -> io::Result<()> {
    let (start, end) = byte_range(offset, buf.len())?;
    if buf.is_empty() {
        return Ok(());
    }
    if end > image.len() {
        set_len_image(image, end as u64)?;
    }
    image[start..end].copy_from_slice(buf);
    Ok(())
}

/// The error for a path that should be a folder but is a file.
fn not_a_dir(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("not a folder: {}", path.display()),
    )
}

/// The error for a missing path.
pub(super) fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no such file or folder: {}", path.display()),
    )
}

/// The error for a file operation on a folder.
fn is_a_dir(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::IsADirectory,
        format!("is a folder: {}", path.display()),
    )
}

/// A folder tree: files (each mapped to a `T`) and folders.
///
/// Invariant: every file's and folder's parent is a folder of the tree or a root, and no path
/// is both a file and a folder. (`prune_orphans` restores the first after a bulk change.)
#[derive(Clone)]
pub(super) struct Namespace<T> {
    files: HashMap<PathBuf, T>,
    dirs: HashSet<PathBuf>,
}

impl<T> Default for Namespace<T> {
    fn default() -> Self {
        Self {
            files: HashMap::new(),
            dirs: HashSet::new(),
        }
    }
}

impl<T: Clone> Namespace<T> {
    /// True when `path` is a folder (or a root).
    pub(super) fn is_dir(&self, path: &Path) -> bool {
        is_root(path) || self.dirs.contains(path)
    }

    /// True when `path` is a file or a folder.
    pub(super) fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path) || self.is_dir(path)
    }

    /// The value of a file.
    pub(super) fn file(&self, path: &Path) -> Option<&T> {
        self.files.get(path)
    }

    /// Every file's value.
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))] // used by `fault`
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.files.values()
    }

    /// Number of files.
    pub(super) fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Fails unless the parent of `path` is a folder.
    fn check_parent(&self, path: &Path) -> io::Result<()> {
        let parent = parent_of(path);
        if self.is_dir(parent) {
            Ok(())
        } else if self.files.contains_key(parent) {
            Err(not_a_dir(parent))
        } else {
            Err(not_found(parent))
        }
    }

    /// Fails unless `path` is a file.
    pub(super) fn check_file(&self, path: &Path) -> io::Result<&T> {
        match self.files.get(path) {
            Some(value) => Ok(value),
            None if self.is_dir(path) => Err(is_a_dir(path)),
            None => Err(not_found(path)),
        }
    }

    /// Creates a folder and its parents; succeeds if it exists.
    pub(super) fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        let mut chain: Vec<&Path> = path.ancestors().take_while(|p| !is_root(p)).collect();
        chain.reverse();
        for dir in &chain {
            if self.files.contains_key(*dir) {
                return Err(not_a_dir(dir));
            }
        }
        for dir in chain {
            self.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    /// Adds a new file; fails with `AlreadyExists` if the path is taken.
    pub(super) fn create_file(&mut self, path: &Path, value: T) -> io::Result<()> {
        self.check_parent(path)?;
        if self.exists(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("already exists: {}", path.display()),
            ));
        }
        self.files.insert(path.to_path_buf(), value);
        Ok(())
    }

    /// Renames a file, replacing `to` if it is a file.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let value = self.check_file(from)?.clone();
        self.check_parent(to)?;
        if self.is_dir(to) {
            return Err(is_a_dir(to));
        }
        if from != to {
            self.files.remove(from);
            self.files.insert(to.to_path_buf(), value);
        }
        Ok(())
    }

    /// Removes a file.
    pub(super) fn remove(&mut self, path: &Path) -> io::Result<T> {
        self.check_file(path)?;
        self.files.remove(path).ok_or_else(|| not_found(path))
    }

    /// The sorted names of the direct children of a folder.
    pub(super) fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        if !self.is_dir(dir) {
            return Err(if self.files.contains_key(dir) {
                not_a_dir(dir)
            } else {
                not_found(dir)
            });
        }
        let mut names = Vec::new();
        for path in self.files.keys().chain(self.dirs.iter()) {
            if parent_of(path) == dir
                && let Some(name) = path.file_name()
            {
                let name = name.to_str().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("file name is not UTF-8: {}", path.display()),
                    )
                })?;
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    /// Replaces this tree's direct children of `dir` (files and folders) by those of `from`.
    /// This is how a durable view catches up with the live one on `sync_dir`.
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))] // used by `fault`
    pub(super) fn copy_children(&mut self, from: &Namespace<T>, dir: &Path) {
        self.files.retain(|p, _| parent_of(p) != dir);
        self.dirs.retain(|p| parent_of(p) != dir);
        for (path, value) in &from.files {
            if parent_of(path) == dir {
                self.files.insert(path.clone(), value.clone());
            }
        }
        for path in &from.dirs {
            if parent_of(path) == dir {
                self.dirs.insert(path.clone());
            }
        }
    }

    /// Drops every file and folder whose parent chain is not made of folders of the tree
    /// (entries whose folder was never made durable).
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))] // used by `fault`
    pub(super) fn prune_orphans(&mut self) {
        let mut dirs: Vec<PathBuf> = self.dirs.drain().collect();
        // Parents have fewer components than their children: keep them first.
        dirs.sort_by_key(|p| p.components().count());
        for dir in dirs {
            if self.is_dir(parent_of(&dir)) && !self.files.contains_key(&dir) {
                self.dirs.insert(dir);
            }
        }
        let dirs = &self.dirs;
        self.files
            .retain(|p, _| is_root(parent_of(p)) || dirs.contains(parent_of(p)));
    }
}

/// The shared state of a [`MemoryStorage`].
#[derive(Default)]
struct MemState {
    tree: Namespace<Arc<RwLock<Vec<u8>>>>,
    locks: HashSet<PathBuf>,
}

/// An in-memory folder tree (see the module docs). Clones share the same tree.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    state: Arc<Mutex<MemState>>,
}

impl MemoryStorage {
    /// An empty tree (only the roots exist).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("MemoryStorage")
            .field("files", &state.tree.file_count())
            .field("locks", &state.locks.len())
            .finish()
    }
}

impl Storage for MemoryStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = lock(&self.state);
        let data = match mode {
            OpenMode::Read | OpenMode::ReadWrite => state.tree.check_file(path)?.clone(),
            OpenMode::CreateNew => {
                let data = Arc::new(RwLock::new(Vec::new()));
                state.tree.create_file(path, Arc::clone(&data))?;
                data
            }
        };
        Ok(Arc::new(MemoryFile {
            data,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        lock(&self.state).tree.create_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        lock(&self.state).tree.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        lock(&self.state).tree.remove(path).map(drop)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        lock(&self.state).tree.list(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        lock(&self.state).tree.exists(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let state = lock(&self.state);
        if state.tree.is_dir(dir) {
            Ok(())
        } else {
            Err(not_found(dir))
        }
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + Debug>> {
        let mut state = lock(&self.state);
        if state.tree.file(path).is_none() {
            state
                .tree
                .create_file(path, Arc::new(RwLock::new(Vec::new())))?;
        }
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("already locked: {}", path.display()),
            ));
        }
        Ok(Box::new(MemoryLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
        }))
    }
}

/// The guard of [`MemoryStorage::lock_exclusive`]; releases the lock on drop.
struct MemoryLock {
    state: Arc<Mutex<MemState>>,
    path: PathBuf,
}

impl Debug for MemoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLock")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        lock(&self.state).locks.remove(&self.path);
    }
}

/// An open file of a [`MemoryStorage`].
struct MemoryFile {
    data: Arc<RwLock<Vec<u8>>>,
    path: PathBuf,
    writable: bool,
}

impl MemoryFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("opened read-only: {}", self.path.display()),
            ))
        }
    }
}

impl Debug for MemoryFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryFile")
            .field("path", &self.path)
            .field("writable", &self.writable)
            .finish()
    }
}

impl StorageFile for MemoryFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(PoisonError::into_inner);
        read_image(&data, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        write_image(&mut data, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        let data = self.data.read().unwrap_or_else(PoisonError::into_inner);
        Ok(data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        set_len_image(&mut data, len)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn round_trip_and_growth() {
        let fs = MemoryStorage::new();
        fs.create_dir_all(p("/db")).unwrap();
        let f = fs.open(p("/db/a"), OpenMode::CreateNew).unwrap();
        assert_eq!(f.len().unwrap(), 0);
        f.write_at(b"hello", 0).unwrap();
        f.write_at(b"world", 10).unwrap();
        assert_eq!(f.len().unwrap(), 15);
        let mut buf = [0xAAu8; 15];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello\0\0\0\0\0world");
        let mut short = [0u8; 6];
        let err = f.read_at(&mut short, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        f.set_len(3).unwrap();
        assert_eq!(f.len().unwrap(), 3);
        f.set_len(5).unwrap();
        let mut buf = [1u8; 5];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hel\0\0");
        f.sync().unwrap();
        assert_eq!(f.path(), p("/db/a"));

        // A second handle sees the same content.
        let g = fs.open(p("/db/a"), OpenMode::Read).unwrap();
        let mut buf = [0u8; 3];
        g.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hel");
        assert_eq!(
            g.write_at(b"x", 0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            g.set_len(0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
    }

    #[test]
    fn open_modes() {
        let fs = MemoryStorage::new();
        assert_eq!(
            fs.open(p("/nope/a"), OpenMode::CreateNew)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.open(p("/a"), OpenMode::Read).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs.open(p("/a"), OpenMode::CreateNew).unwrap();
        assert_eq!(
            fs.open(p("/a"), OpenMode::CreateNew).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        fs.open(p("/a"), OpenMode::ReadWrite).unwrap();
        fs.create_dir_all(p("/d")).unwrap();
        assert_eq!(
            fs.open(p("/d"), OpenMode::Read).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        // Relative names live in the "" root.
        fs.open(p("rel"), OpenMode::CreateNew).unwrap();
        assert!(fs.exists(p("rel")));
    }

    #[test]
    fn folders_list_rename_remove() {
        let fs = MemoryStorage::new();
        fs.create_dir_all(p("/x/y/z")).unwrap();
        fs.create_dir_all(p("/x/y")).unwrap();
        assert!(fs.exists(p("/x")) && fs.exists(p("/x/y")) && fs.exists(p("/x/y/z/")));
        for name in ["c", "a", "b"] {
            fs.open(&Path::new("/x/y").join(name), OpenMode::CreateNew)
                .unwrap();
        }
        assert_eq!(fs.list(p("/x/y")).unwrap(), ["a", "b", "c", "z"]);
        assert_eq!(fs.list(p("/x")).unwrap(), ["y"]);
        assert_eq!(
            fs.list(p("/q")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.list(p("/x/y/a")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );
        assert_eq!(
            fs.create_dir_all(p("/x/y/a/b")).unwrap_err().kind(),
            io::ErrorKind::NotADirectory
        );

        let a = fs.open(p("/x/y/a"), OpenMode::ReadWrite).unwrap();
        a.write_at(b"A", 0).unwrap();
        fs.rename(p("/x/y/a"), p("/x/y/b")).unwrap();
        assert!(!fs.exists(p("/x/y/a")));
        let b = fs.open(p("/x/y/b"), OpenMode::Read).unwrap();
        assert_eq!(b.len().unwrap(), 1);
        assert_eq!(
            fs.rename(p("/x/y/a"), p("/x/y/c")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.rename(p("/x/y/b"), p("/x/y/z")).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        fs.rename(p("/x/y/b"), p("/x/y/b")).unwrap();

        fs.remove(p("/x/y/b")).unwrap();
        assert_eq!(fs.list(p("/x/y")).unwrap(), ["c", "z"]);
        // An open handle still works after its file is removed.
        a.write_at(b"B", 1).unwrap();
        assert_eq!(a.len().unwrap(), 2);
        assert_eq!(
            fs.remove(p("/x/y/b")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.remove(p("/x/y/z")).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
        fs.sync_dir(p("/x/y")).unwrap();
        assert_eq!(
            fs.sync_dir(p("/nope")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn lock_refuses_second_holder() {
        let fs = MemoryStorage::new();
        fs.create_dir_all(p("/db")).unwrap();
        let other = fs.clone();
        let guard = fs.lock_exclusive(p("/db/LOCK")).unwrap();
        assert!(fs.exists(p("/db/LOCK")));
        assert_eq!(
            other.lock_exclusive(p("/db/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // A different path is independent.
        let _g2 = other.lock_exclusive(p("/db/LOCK2")).unwrap();
        drop(guard);
        let _g3 = other.lock_exclusive(p("/db/LOCK")).unwrap();
    }

    #[test]
    fn clones_share_state() {
        let fs = MemoryStorage::new();
        let other = fs.clone();
        fs.open(p("/f"), OpenMode::CreateNew).unwrap();
        assert!(other.exists(p("/f")));
        assert!(format!("{other:?}").contains("files: 1"));
    }

    #[test]
    fn huge_offsets_fail_cleanly() {
        let fs = MemoryStorage::new();
        let f = fs.open(p("/f"), OpenMode::CreateNew).unwrap();
        assert!(f.write_at(b"x", u64::MAX).is_err());
        let mut buf = [0u8; 2];
        assert!(f.read_at(&mut buf, u64::MAX).is_err());
    }

    #[test]
    fn prune_orphans_keeps_only_rooted_entries() {
        let mut ns: Namespace<u32> = Namespace::default();
        ns.create_dir_all(p("/a/b")).unwrap();
        ns.create_file(p("/a/b/f"), 1).unwrap();
        ns.create_file(p("/top"), 2).unwrap();
        let mut durable: Namespace<u32> = Namespace::default();
        durable.copy_children(&ns, p("/a"));
        durable.copy_children(&ns, p("/a/b"));
        durable.prune_orphans();
        // "/a" was never recorded in "/": everything under it is gone.
        assert_eq!(durable.file_count(), 0);
        assert!(!durable.exists(p("/a")));
        durable.copy_children(&ns, p("/"));
        durable.copy_children(&ns, p("/a"));
        durable.copy_children(&ns, p("/a/b"));
        durable.prune_orphans();
        assert_eq!(durable.file(p("/a/b/f")), Some(&1));
        assert_eq!(durable.file(p("/top")), Some(&2));
    }
}
