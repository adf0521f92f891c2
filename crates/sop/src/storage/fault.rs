//! [`FaultStorage`]: an in-memory backend that injects I/O errors and simulates power cuts.
//!
//! # Model
//!
//! - Files are inodes with two images: *live* (what reads see) and *durable* (what survives a
//!   power cut). `write_at` and `set_len` change the live image; `sync` copies the file's live
//!   image to its durable image.
//! - There are two directory views, each a `Namespace` mapping paths to inodes plus a set of
//!   folders: *live* (what `open`, `list` and `exists` see) and *durable*. `create` (open with
//!   `CreateNew`, `create_dir_all`, the lock file of `lock_exclusive`), `rename` and `remove`
//!   change the live view only; `sync_dir(dir)` copies the live view's direct children of `dir`
//!   (files and folders) to the durable view. So a file whose folder was never synced after
//!   its creation disappears at a power cut, and so does a folder whose parent was never
//!   synced (with everything in it). The roots (`""`, `.`, `/`) always exist.
//! - An inode lives while a live entry, a durable entry or an open handle refers to it. Handles
//!   follow the inode, so they keep working after a rename or remove (POSIX semantics).
//! - `power_cut(seed)`: the live view becomes the durable view (minus entries whose folders
//!   are not durable), every live image becomes its durable image, except that the last
//!   unsynced write of one file chosen at random (among files with unsynced writes) may be
//!   torn: a random prefix of it (0 to all of its bytes) lands on the durable image. All
//!   handles and lock guards from before become invalid (calls on handles fail), locks are
//!   released, and the fault plan and operation counters are reset. The capacity is kept.
//!   The result depends only on the seed and the history.
//!
//! # Faults
//!
//! Each operation has a [`FaultKind`]: `Read` = `read_at`; `Write` = `write_at` and `set_len`;
//! `Sync` = `sync` and `sync_dir`; `Rename` = `rename`; `Remove` = `remove`; `Create` = `open`
//! with `CreateNew` and `create_dir_all`. Every attempt counts (see [`FaultStorage::op_count`]),
//! including one that fails. An injected fault fails the operation with
//! `io::Error::other("injected fault")` before it changes anything. `fail_after(kind, n)` fails
//! the n-th next operation of that kind once (0 = the next one); `fail_always(kind)` fails all
//! of them until `clear_faults`.
//!
//! With `set_capacity(Some(bytes))`, a `write_at` or `set_len` that would make the total size
//! of the live images of reachable files (linked in the live view or open) exceed `bytes`
//! fails with `StorageFull` and changes nothing.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::memory::{Namespace, lock, not_found, read_image, set_len_image, write_image};
use super::{OpenMode, Storage, StorageFile};

/// The kinds of operations faults can be injected into (see the module docs for which calls
/// belong to which kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `read_at`.
    Read,
    /// `write_at` and `set_len`.
    Write,
    /// `sync` and `sync_dir`.
    Sync,
    /// `rename`.
    Rename,
    /// `remove`.
    Remove,
    /// `open` with `CreateNew` and `create_dir_all`.
    Create,
}

impl FaultKind {
    /// Every kind, for sweeps.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Read,
        FaultKind::Write,
        FaultKind::Sync,
        FaultKind::Rename,
        FaultKind::Remove,
        FaultKind::Create,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The fault planned for one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    None,
    /// Fail the operation whose count (before it) is this, once.
    At(u64),
    Always,
}

/// One file.
#[derive(Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// The last write since the last `sync` (offset and bytes), the one a power cut may tear.
    last_write: Option<(u64, Vec<u8>)>,
    /// Open handles of the current epoch.
    handles: u64,
}

/// The shared state.
struct State {
    live: Namespace<u64>,
    durable: Namespace<u64>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// Incremented by every power cut; handles and guards of older epochs are dead.
    epoch: u64,
    plans: [Plan; 6],
    counts: [u64; 6],
    capacity: Option<u64>,
    locks: HashSet<PathBuf>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            live: Namespace::default(),
            durable: Namespace::default(),
            inodes: BTreeMap::new(),
            next_inode: 0,
            epoch: 0,
            plans: [Plan::None; 6],
            counts: [0; 6],
            capacity: None,
            locks: HashSet::new(),
        }
    }
}

impl State {
    /// Counts one operation of `kind` and fails it if a fault is planned for it.
    fn op(&mut self, kind: FaultKind) -> io::Result<()> {
        let i = kind.index();
        let n = self.counts[i];
        self.counts[i] += 1;
        match self.plans[i] {
            Plan::Always => Err(io::Error::other("injected fault")),
            Plan::At(at) if at == n => {
                self.plans[i] = Plan::None;
                Err(io::Error::other("injected fault"))
            }
            _ => Ok(()),
        }
    }

    fn new_inode(&mut self) -> u64 {
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        id
    }

    fn inode(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("fault storage: inode vanished"))
    }

    /// Drops the inodes nothing refers to any more.
    fn collect_garbage(&mut self) {
        let referenced: HashSet<u64> = self
            .live
            .values()
            .chain(self.durable.values())
            .copied()
            .collect();
        self.inodes
            .retain(|id, inode| inode.handles > 0 || referenced.contains(id));
    }

    /// Fails with `StorageFull` if growing inode `id` to `new_len` bytes exceeds the capacity.
    fn check_capacity(&self, id: u64, new_len: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity else {
            return Ok(());
        };
        let linked: HashSet<u64> = self.live.values().copied().collect();
        let mut total: u64 = 0;
        for (inode_id, inode) in &self.inodes {
            if *inode_id == id {
                total += new_len.max(inode.live.len() as u64);
            } else if inode.handles > 0 || linked.contains(inode_id) {
                total += inode.live.len() as u64;
            }
        }
        if total > capacity {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("no space left on device ({total} bytes > capacity {capacity})"),
            ))
        } else {
            Ok(())
        }
    }

    fn power_cut(&mut self, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        // Candidates in inode order, so the choice depends only on the seed and the history.
        let torn: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, inode)| inode.last_write.is_some())
            .map(|(id, _)| *id)
            .collect();
        let torn = if torn.is_empty() {
            None
        } else {
            Some(torn[rng.usize(..torn.len())])
        };
        for (id, inode) in &mut self.inodes {
            let last_write = inode.last_write.take();
            if Some(*id) == torn
                && let Some((offset, data)) = last_write
            {
                let keep = rng.usize(..=data.len());
                // A failure here can only be an allocation failure for an offset the live image
                // already held, so it cannot happen; the durable image is left as is if it does.
                let _ = write_image(&mut inode.durable, &data[..keep], offset);
            }
            inode.live.clone_from(&inode.durable);
            inode.handles = 0;
        }
        self.durable.prune_orphans();
        self.live = self.durable.clone();
        self.epoch += 1;
        self.plans = [Plan::None; 6];
        self.counts = [0; 6];
        self.locks.clear();
        self.collect_garbage();
    }
}

/// An in-memory backend with fault injection and power-cut simulation (see the module docs).
/// Clones share the same state, so a test can keep one while the engine owns another.
#[derive(Clone, Default)]
pub struct FaultStorage {
    state: Arc<Mutex<State>>,
}

impl Debug for FaultStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("FaultStorage")
            .field("files", &state.live.file_count())
            .field("inodes", &state.inodes.len())
            .field("epoch", &state.epoch)
            .field("plans", &state.plans)
            .field("counts", &state.counts)
            .field("capacity", &state.capacity)
            .finish()
    }
}

impl FaultStorage {
    /// An empty storage with no faults planned and no capacity limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `n`-th next operation of `kind` fail once (0 = the next one). Replaces any
    /// earlier plan for that kind.
    pub fn fail_after(&self, kind: FaultKind, n: u64) {
        let mut state = lock(&self.state);
        let at = state.counts[kind.index()].saturating_add(n);
        state.plans[kind.index()] = Plan::At(at);
    }

    /// Makes every later operation of `kind` fail, until [`FaultStorage::clear_faults`].
    pub fn fail_always(&self, kind: FaultKind) {
        lock(&self.state).plans[kind.index()] = Plan::Always;
    }

    /// Cancels every planned fault (the counters keep counting).
    pub fn clear_faults(&self) {
        lock(&self.state).plans = [Plan::None; 6];
    }

    /// The number of operations of `kind` attempted since creation or the last power cut
    /// (failed ones included).
    pub fn op_count(&self, kind: FaultKind) -> u64 {
        lock(&self.state).counts[kind.index()]
    }

    /// Limits the total live bytes (`None` = unlimited). Writes that would exceed it fail with
    /// `StorageFull`; data already stored is kept even if above a new, smaller limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        lock(&self.state).capacity = bytes;
    }

    /// Simulates a power cut and restart (see the module docs): only durable state survives,
    /// plus maybe a torn prefix of one file's last unsynced write, chosen by `seed`.
    pub fn power_cut(&self, seed: u64) {
        lock(&self.state).power_cut(seed);
    }
}

impl Storage for FaultStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = lock(&self.state);
        let id = match mode {
            OpenMode::Read | OpenMode::ReadWrite => *state.live.check_file(path)?,
            OpenMode::CreateNew => {
                state.op(FaultKind::Create)?;
                if state.live.exists(path) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("already exists: {}", path.display()),
                    ));
                }
                let id = state.new_inode();
                if let Err(e) = state.live.create_file(path, id) {
                    state.inodes.remove(&id);
                    return Err(e);
                }
                id
            }
        };
        state.inode(id)?.handles += 1;
        Ok(Arc::new(FaultFile {
            state: Arc::clone(&self.state),
            id,
            epoch: state.epoch,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.op(FaultKind::Create)?;
        state.live.create_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.op(FaultKind::Rename)?;
        state.live.rename(from, to)?;
        state.collect_garbage();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.op(FaultKind::Remove)?;
        state.live.remove(path)?;
        state.collect_garbage();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        lock(&self.state).live.list(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        lock(&self.state).live.exists(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.op(FaultKind::Sync)?;
        if !state.live.is_dir(dir) {
            return Err(not_found(dir));
        }
        let State { live, durable, .. } = &mut *state;
        durable.copy_children(live, dir);
        state.collect_garbage();
        Ok(())
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + Debug>> {
        let mut state = lock(&self.state);
        if state.live.file(path).is_none() {
            let id = state.new_inode();
            if let Err(e) = state.live.create_file(path, id) {
                state.inodes.remove(&id);
                return Err(e);
            }
        }
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("already locked: {}", path.display()),
            ));
        }
        Ok(Box::new(FaultLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            epoch: state.epoch,
        }))
    }
}

/// The guard of [`FaultStorage::lock_exclusive`]; releases the lock on drop (unless a power
/// cut already did).
struct FaultLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    epoch: u64,
}

impl Debug for FaultLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLock")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if state.epoch == self.epoch {
            state.locks.remove(&self.path);
        }
    }
}

/// An open file of a [`FaultStorage`].
struct FaultFile {
    state: Arc<Mutex<State>>,
    id: u64,
    epoch: u64,
    path: PathBuf,
    writable: bool,
}

impl Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFile")
            .field("path", &self.path)
            .field("inode", &self.id)
            .field("epoch", &self.epoch)
            .field("writable", &self.writable)
            .finish()
    }
}

impl FaultFile {
    /// Locks the state, failing if a power cut invalidated this handle.
    fn state(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
        let state = lock(&self.state);
        if state.epoch == self.epoch {
            Ok(state)
        } else {
            Err(io::Error::other(format!(
                "file handle invalidated by a power cut: {}",
                self.path.display()
            )))
        }
    }

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

impl Drop for FaultFile {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if state.epoch == self.epoch {
            if let Some(inode) = state.inodes.get_mut(&self.id) {
                inode.handles = inode.handles.saturating_sub(1);
            }
            state.collect_garbage();
        }
    }
}

impl StorageFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut state = self.state()?;
        state.op(FaultKind::Read)?;
        read_image(&state.inode(self.id)?.live, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state()?;
        self.check_writable()?;
        state.op(FaultKind::Write)?;
        let end = offset.checked_add(buf.len() as u64).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "offset + length overflows")
        })?;
        state.check_capacity(self.id, end)?;
        let inode = state.inode(self.id)?;
        write_image(&mut inode.live, buf, offset)?;
        inode.last_write = Some((offset, buf.to_vec()));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.state()?;
        Ok(state.inode(self.id)?.live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state()?;
        self.check_writable()?;
        state.op(FaultKind::Write)?;
        state.check_capacity(self.id, len)?;
        set_len_image(&mut state.inode(self.id)?.live, len)
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.state()?;
        state.op(FaultKind::Sync)?;
        let inode = state.inode(self.id)?;
        inode.durable.clone_from(&inode.live);
        inode.last_write = None;
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

    fn read_all(fs: &FaultStorage, path: &str) -> Vec<u8> {
        let f = fs.open(p(path), OpenMode::Read).unwrap();
        let mut buf = vec![0u8; f.len().unwrap() as usize];
        f.read_at(&mut buf, 0).unwrap();
        buf
    }

    /// A storage with a durable folder `/db`.
    fn with_db() -> FaultStorage {
        let fs = FaultStorage::new();
        fs.create_dir_all(p("/db")).unwrap();
        fs.sync_dir(p("/")).unwrap();
        fs
    }

    #[test]
    fn behaves_like_a_file_system_before_any_cut() {
        let fs = with_db();
        let f = fs.open(p("/db/a"), OpenMode::CreateNew).unwrap();
        f.write_at(b"hello", 2).unwrap();
        assert_eq!(read_all(&fs, "/db/a"), b"\0\0hello");
        let mut buf = [0u8; 8];
        assert_eq!(
            f.read_at(&mut buf, 0).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(fs.list(p("/db")).unwrap(), ["a"]);
        assert_eq!(fs.list(p("/")).unwrap(), ["db"]);
        fs.rename(p("/db/a"), p("/db/b")).unwrap();
        assert!(!fs.exists(p("/db/a")) && fs.exists(p("/db/b")));
        // The handle follows the file.
        f.write_at(b"!", 7).unwrap();
        assert_eq!(read_all(&fs, "/db/b"), b"\0\0hello!");
        fs.remove(p("/db/b")).unwrap();
        assert!(!fs.exists(p("/db/b")));
        assert_eq!(f.len().unwrap(), 8);
        let ro = {
            fs.open(p("/db/c"), OpenMode::CreateNew).unwrap();
            fs.open(p("/db/c"), OpenMode::Read).unwrap()
        };
        assert_eq!(
            ro.write_at(b"x", 0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            fs.open(p("/nope/x"), OpenMode::CreateNew)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.open(p("/db/c"), OpenMode::CreateNew).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }

    #[test]
    fn unsynced_data_is_lost_and_synced_data_survives() {
        let mut torn = 0;
        for seed in 0..50 {
            let fs = with_db();
            let f = fs.open(p("/db/a"), OpenMode::CreateNew).unwrap();
            fs.sync_dir(p("/db")).unwrap();
            f.write_at(b"durable", 0).unwrap();
            f.sync().unwrap();
            f.set_len(3).unwrap();
            f.write_at(b"XYZ", 100).unwrap();
            f.write_at(b"lost", 0).unwrap();
            fs.power_cut(seed);
            // The synced content survives; the truncation and the write at 100 are lost; the
            // last write ("lost" at 0) may survive as a prefix.
            let got = read_all(&fs, "/db/a");
            assert_eq!(got.len(), 7, "seed {seed}");
            let k = got.iter().zip(b"lost").take_while(|(a, b)| a == b).count();
            assert_eq!(&got[k..], &b"durable"[k..], "seed {seed}");
            if k > 0 {
                torn += 1;
            }
            // Handles from before the cut are dead; new ones work.
            let mut b = [0u8; 1];
            assert!(f.read_at(&mut b, 0).is_err());
            assert!(f.write_at(b"x", 0).is_err());
            assert!(f.set_len(0).is_err());
            assert!(f.len().is_err());
            assert!(f.sync().is_err());
            let g = fs.open(p("/db/a"), OpenMode::ReadWrite).unwrap();
            g.write_at(b"again", 0).unwrap();
        }
        assert!(torn > 0 && torn < 50);
    }

    #[test]
    fn synced_everything_survives_exactly() {
        let fs = with_db();
        let f = fs.open(p("/db/a"), OpenMode::CreateNew).unwrap();
        f.write_at(b"abc", 0).unwrap();
        f.sync().unwrap();
        fs.sync_dir(p("/db")).unwrap();
        for seed in 0..10 {
            fs.power_cut(seed);
            assert_eq!(read_all(&fs, "/db/a"), b"abc");
        }
    }

    #[test]
    fn file_in_unsynced_folder_disappears() {
        let fs = with_db();
        let f = fs.open(p("/db/a"), OpenMode::CreateNew).unwrap();
        f.write_at(b"abc", 0).unwrap();
        f.sync().unwrap();
        fs.power_cut(0);
        assert!(!fs.exists(p("/db/a")));
        assert!(fs.exists(p("/db")));

        // A folder whose parent was never synced vanishes with its synced content.
        fs.create_dir_all(p("/db/sub")).unwrap();
        let g = fs.open(p("/db/sub/x"), OpenMode::CreateNew).unwrap();
        g.sync().unwrap();
        fs.sync_dir(p("/db/sub")).unwrap();
        fs.power_cut(0);
        assert!(!fs.exists(p("/db/sub")));
        assert!(!fs.exists(p("/db/sub/x")));
        assert_eq!(
            fs.open(p("/db/sub/x"), OpenMode::Read).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn rename_and_remove_are_durable_only_after_sync_dir() {
        let fs = with_db();
        let f = fs.open(p("/db/tmp"), OpenMode::CreateNew).unwrap();
        f.write_at(b"v1", 0).unwrap();
        f.sync().unwrap();
        fs.sync_dir(p("/db")).unwrap();

        fs.rename(p("/db/tmp"), p("/db/final")).unwrap();
        fs.power_cut(0);
        assert!(fs.exists(p("/db/tmp")) && !fs.exists(p("/db/final")));

        fs.rename(p("/db/tmp"), p("/db/final")).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        fs.power_cut(0);
        assert!(!fs.exists(p("/db/tmp")));
        assert_eq!(read_all(&fs, "/db/final"), b"v1");

        fs.remove(p("/db/final")).unwrap();
        assert!(!fs.exists(p("/db/final")));
        fs.power_cut(0);
        assert_eq!(read_all(&fs, "/db/final"), b"v1");
        fs.remove(p("/db/final")).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        fs.power_cut(0);
        assert!(!fs.exists(p("/db/final")));
        assert_eq!(fs.list(p("/db")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn rename_replacing_a_file_keeps_old_content_until_synced() {
        let fs = with_db();
        for (name, data) in [("/db/cur", b"old"), ("/db/new", b"new")] {
            let f = fs.open(p(name), OpenMode::CreateNew).unwrap();
            f.write_at(data, 0).unwrap();
            f.sync().unwrap();
        }
        fs.sync_dir(p("/db")).unwrap();
        fs.rename(p("/db/new"), p("/db/cur")).unwrap();
        assert_eq!(read_all(&fs, "/db/cur"), b"new");
        fs.power_cut(3);
        assert_eq!(read_all(&fs, "/db/cur"), b"old");
        assert_eq!(read_all(&fs, "/db/new"), b"new");
    }

    #[test]
    fn torn_write_keeps_a_prefix() {
        let data: Vec<u8> = (1..=100).collect();
        let mut kept = HashSet::new();
        for seed in 0..200 {
            let fs = with_db();
            let f = fs.open(p("/db/log"), OpenMode::CreateNew).unwrap();
            fs.sync_dir(p("/db")).unwrap();
            f.write_at(b"head", 0).unwrap();
            f.sync().unwrap();
            f.write_at(&data, 4).unwrap();
            fs.power_cut(seed);
            let got = read_all(&fs, "/db/log");
            assert_eq!(&got[..4], b"head");
            let k = got.len() - 4;
            assert_eq!(&got[4..], &data[..k], "seed {seed}");
            kept.insert(k);
            // Same seed, same history, same result.
            let again = {
                let fs = with_db();
                let f = fs.open(p("/db/log"), OpenMode::CreateNew).unwrap();
                fs.sync_dir(p("/db")).unwrap();
                f.write_at(b"head", 0).unwrap();
                f.sync().unwrap();
                f.write_at(&data, 4).unwrap();
                fs.power_cut(seed);
                read_all(&fs, "/db/log")
            };
            assert_eq!(got, again);
        }
        // Nothing, everything and partial prefixes all happen.
        assert!(kept.contains(&0) || kept.iter().any(|&k| k < 5));
        assert!(kept.iter().any(|&k| k > 0 && k < data.len()));
        assert!(kept.len() > 50);
    }

    #[test]
    fn only_the_last_unsynced_write_is_torn() {
        for seed in 0..100 {
            let fs = with_db();
            let f = fs.open(p("/db/f"), OpenMode::CreateNew).unwrap();
            fs.sync_dir(p("/db")).unwrap();
            f.write_at(&[1; 10], 0).unwrap();
            f.write_at(&[2; 10], 20).unwrap();
            fs.power_cut(seed);
            let got = read_all(&fs, "/db/f");
            // The first write is always lost; the second leaves a prefix at offset 20.
            if got.is_empty() {
                continue;
            }
            assert!(got.len() > 20 && got.len() <= 30, "seed {seed}: {got:?}");
            assert!(got[..20].iter().all(|&b| b == 0));
            assert!(got[20..].iter().all(|&b| b == 2));
        }
    }

    #[test]
    fn at_most_one_randomly_chosen_file_is_torn() {
        let mut torn_a = false;
        let mut torn_b = false;
        for seed in 0..100 {
            let fs = with_db();
            for name in ["/db/a", "/db/b"] {
                let f = fs.open(p(name), OpenMode::CreateNew).unwrap();
                f.write_at(&[7; 50], 0).unwrap();
            }
            fs.sync_dir(p("/db")).unwrap();
            fs.power_cut(seed);
            let a = read_all(&fs, "/db/a").len();
            let b = read_all(&fs, "/db/b").len();
            assert!(a == 0 || b == 0, "seed {seed}: both torn");
            torn_a |= a > 0;
            torn_b |= b > 0;
        }
        assert!(torn_a && torn_b);
    }

    #[test]
    fn fail_after_fires_exactly_at_the_nth_operation() {
        for n in 0..6u64 {
            let fs = with_db();
            let f = fs.open(p("/db/f"), OpenMode::CreateNew).unwrap();
            f.write_at(b"seed", 0).unwrap();
            let before = fs.op_count(FaultKind::Write);
            fs.fail_after(FaultKind::Write, n);
            for i in 0..8u64 {
                let r = f.write_at(&[i as u8], i);
                if i == n {
                    let e = r.unwrap_err();
                    assert_eq!(e.kind(), io::ErrorKind::Other);
                    assert_eq!(e.to_string(), "injected fault");
                } else {
                    r.unwrap();
                }
            }
            assert_eq!(fs.op_count(FaultKind::Write), before + 8);
            // The failed write changed nothing.
            let mut b = [0u8; 1];
            f.read_at(&mut b, n).unwrap();
            let expected = if n < 4 { b"seed"[n as usize] } else { 0 };
            assert_eq!(b[0], expected, "n = {n}");
        }
    }

    #[test]
    fn every_kind_can_fail_and_counts() {
        let fs = with_db();
        let f = fs.open(p("/db/f"), OpenMode::CreateNew).unwrap();
        f.write_at(b"x", 0).unwrap();
        for kind in FaultKind::ALL {
            fs.fail_after(kind, 0);
        }
        let mut buf = [0u8; 1];
        assert!(f.read_at(&mut buf, 0).is_err());
        assert!(f.write_at(b"y", 0).is_err());
        assert!(f.sync().is_err());
        assert!(fs.rename(p("/db/f"), p("/db/g")).is_err());
        assert!(fs.remove(p("/db/f")).is_err());
        assert!(fs.open(p("/db/h"), OpenMode::CreateNew).is_err());
        assert!(!fs.exists(p("/db/h")));
        // All one-shot: everything works again.
        f.read_at(&mut buf, 0).unwrap();
        f.set_len(1).unwrap();
        fs.sync_dir(p("/db")).unwrap();
        fs.rename(p("/db/f"), p("/db/g")).unwrap();
        fs.remove(p("/db/g")).unwrap();
        fs.create_dir_all(p("/db/d")).unwrap();
        assert_eq!(fs.op_count(FaultKind::Read), 2);
        assert_eq!(fs.op_count(FaultKind::Write), 3);
        assert_eq!(fs.op_count(FaultKind::Sync), 3);
        assert_eq!(fs.op_count(FaultKind::Rename), 2);
        assert_eq!(fs.op_count(FaultKind::Remove), 2);
        assert_eq!(fs.op_count(FaultKind::Create), 4);
    }

    #[test]
    fn fail_always_until_cleared() {
        let fs = with_db();
        let f = fs.open(p("/db/f"), OpenMode::CreateNew).unwrap();
        fs.fail_always(FaultKind::Sync);
        for _ in 0..3 {
            assert!(f.sync().is_err());
            assert!(fs.sync_dir(p("/db")).is_err());
        }
        f.write_at(b"ok", 0).unwrap();
        fs.clear_faults();
        f.sync().unwrap();
        fs.sync_dir(p("/db")).unwrap();
    }

    #[test]
    fn power_cut_resets_counters_and_faults_and_locks() {
        let fs = with_db();
        let f = fs.open(p("/db/f"), OpenMode::CreateNew).unwrap();
        f.sync().unwrap();
        fs.sync_dir(p("/db")).unwrap();
        let guard = fs.lock_exclusive(p("/db/LOCK")).unwrap();
        fs.fail_always(FaultKind::Read);
        fs.power_cut(9);
        for kind in FaultKind::ALL {
            assert_eq!(fs.op_count(kind), 0);
        }
        let f = fs.open(p("/db/f"), OpenMode::ReadWrite).unwrap();
        f.write_at(b"z", 0).unwrap();
        let mut b = [0u8; 1];
        f.read_at(&mut b, 0).unwrap();
        // The lock was released by the "crash" and a stale guard does not release a new one.
        let new_guard = fs.lock_exclusive(p("/db/LOCK")).unwrap();
        drop(guard);
        assert_eq!(
            fs.lock_exclusive(p("/db/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(new_guard);
        let _again = fs.lock_exclusive(p("/db/LOCK")).unwrap();
    }

    #[test]
    fn capacity_limits_writes() {
        let fs = with_db();
        fs.set_capacity(Some(100));
        let a = fs.open(p("/db/a"), OpenMode::CreateNew).unwrap();
        a.write_at(&[1; 60], 0).unwrap();
        let b = fs.open(p("/db/b"), OpenMode::CreateNew).unwrap();
        b.write_at(&[2; 40], 0).unwrap();
        let e = b.write_at(&[3], 40).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("no space left on device"));
        assert_eq!(b.len().unwrap(), 40);
        assert_eq!(
            b.set_len(41).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        // Overwrites do not need space.
        a.write_at(&[9; 60], 0).unwrap();
        // Removing a file frees its space once its last handle is gone.
        fs.remove(p("/db/a")).unwrap();
        assert!(b.write_at(&[3], 40).is_err());
        drop(a);
        b.write_at(&[3; 60], 40).unwrap();
        fs.set_capacity(None);
        b.write_at(&[4; 1000], 100).unwrap();
    }

    #[test]
    fn lock_refuses_second_holder() {
        let fs = with_db();
        let other = fs.clone();
        let g = fs.lock_exclusive(p("/db/LOCK")).unwrap();
        assert_eq!(
            other.lock_exclusive(p("/db/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(g);
        let _g = other.lock_exclusive(p("/db/LOCK")).unwrap();
        assert!(format!("{fs:?}").contains("FaultStorage"));
    }

    /// The intended use: sweep a fault over every write of a workload and check that a power
    /// cut afterwards leaves either the old or the new state.
    #[test]
    fn sweep_over_every_write_of_an_atomic_replace() {
        fn workload(fs: &FaultStorage) -> io::Result<()> {
            let f = fs.open(p("/db/cur.tmp"), OpenMode::CreateNew)?;
            f.write_at(b"new-", 0)?;
            f.write_at(b"content", 4)?;
            f.sync()?;
            fs.rename(p("/db/cur.tmp"), p("/db/cur"))?;
            fs.sync_dir(p("/db"))
        }
        fn setup() -> FaultStorage {
            let fs = with_db();
            let f = fs.open(p("/db/cur"), OpenMode::CreateNew).unwrap();
            f.write_at(b"old", 0).unwrap();
            f.sync().unwrap();
            fs.sync_dir(p("/db")).unwrap();
            fs
        }
        let clean = setup();
        let start = clean.op_count(FaultKind::Write);
        workload(&clean).unwrap();
        let writes = clean.op_count(FaultKind::Write) - start;
        assert_eq!(writes, 2);
        for kind in FaultKind::ALL {
            for n in 0..=writes {
                for seed in 0..5 {
                    let fs = setup();
                    fs.fail_after(kind, n);
                    let result = workload(&fs);
                    fs.power_cut(seed);
                    let cur = read_all(&fs, "/db/cur");
                    assert!(
                        cur == b"old" || cur == b"new-content",
                        "{kind:?} {n} {seed}: {cur:?}"
                    );
                    if result.is_ok() {
                        assert_eq!(cur, b"new-content");
                    }
                }
            }
        }
    }
}
