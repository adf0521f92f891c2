//! The database: opening a folder, recovery, the shared state every transaction reads, and the
//! handle applications hold.
//!
//! ```text
//! <folder>/dboptions.json    persisted options (checksummed text)
//! <folder>/sop.lock          advisory lock: exclusive in standalone mode, shared in clustered mode
//! <folder>/open.lock         serializes opening and closing (so "alone" checks are exact)
//! <folder>/checkpoint.sop    catalog + registry snapshot
//! <folder>/log/*.seg         node images, blobs, commit records
//! <folder>/commits/<seq>     clustered mode: commit markers (see `cluster::markers`)
//! <folder>/claims/*          clustered mode: id range claims (see `cluster::claims`)
//! <folder>/cluster.id        clustered mode: the database id (coordinator namespace)
//! ```
//!
//! Invariants:
//! - the published [`DbState`] only ever moves forward, one commit at a time, under the commit
//!   lock, and only after the commit's record is durable;
//! - a snapshot a transaction holds stays readable: segments are deleted only when no running
//!   transaction's snapshot can reference them (see `space`).

mod clustered;
mod options_file;
mod snapshots;
mod space;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

pub(crate) use clustered::{
    catch_up, checkpoint as cluster_checkpoint, commit_point, sync_markers,
};
pub(crate) use space::{Space, after_commit as after_commit_hook};
pub use verify::VerifyReport;

use crate::btree::Comparator;
use crate::cache::NodeCache;
use crate::error::{Error, Result};
use crate::fasthash::FastMap;
use crate::log::{self, LogFiles, LogWriter};
use crate::options::{
    DEFAULT_MAX_TXN_DURATION, DatabaseOptions, DatabaseType, MAX_TXN_DURATION_CAP, TransactionMode,
};
use crate::state::DbState;
use crate::storage::{FileStorage, Storage};
use crate::txn::{History, Prepared, Transaction};

const LOCK_FILE: &str = "sop.lock";
const OPEN_LOCK: &str = "open.lock";
const LOG_DIR: &str = "log";

/// What the commit path owns exclusively.
#[derive(Debug)]
pub(crate) struct CommitCtx {
    pub writer: LogWriter,
    pub space: Space,
    /// The state after the last commit *written* (maybe not yet durable): what committers
    /// validate and merge against. Readers get the *published* state instead.
    pub latest: Arc<DbState>,
    /// Keys written by recent commits, for validating transactions with older snapshots.
    pub history: History,
    /// Prepared transactions (phase 1 done, no decision yet): their read and write sets
    /// block conflicting commits until they are decided.
    pub prepared: FastMap<u128, Arc<Prepared>>,
    /// Their prepare record payloads (carried by checkpoints).
    pub in_doubt: BTreeMap<u128, Vec<u8>>,
    /// The buffers of the last commit's batch, for the next one's.
    pub spare: crate::txn::SpareBuffers,
}

/// Group commit: which commits are durable, and who is syncing.
#[derive(Debug)]
struct SyncState {
    synced: u64,
    syncing: bool,
    /// Threads parked until their commit (the seq) is durable (see [`SyncState::wake`]).
    parked: Vec<(u64, std::thread::Thread)>,
    /// A failed sync: every commit written but not synced has an unknown outcome (it may
    /// be found after a restart or not), so each waiter gets this I/O error.
    failed: Option<(PathBuf, std::io::ErrorKind, String)>,
    /// Syncs completed.
    generation: u64,
    /// Committers whose commits the last sync covered and that have not come back with
    /// another commit yet (see [`Shared::wait_durable`]: the next sync waits a little for them).
    returning: usize,
    /// The leader of the next sync while it waits for them.
    gatherer: Option<std::thread::Thread>,
    /// How long the last sync took: bounds that wait.
    last_sync: Duration,
}

/// The longest a sync's leader waits for the committers the last sync covered, whatever the
/// last sync took.
const GATHER_MAX: Duration = Duration::from_micros(200);

thread_local! {
    /// The database (its [`Shared`]'s address) and the sync generation that covered this
    /// thread's last commit: its next commit is one the next sync waits for. A hint: a stale
    /// match (another database opened at a closed one's address) only ends a wait early.
    static COVERED: std::cell::Cell<(usize, u64)> = const { std::cell::Cell::new((0, u64::MAX)) };
}

impl SyncState {
    /// After a sync (or its failure): wakes the parked threads whose commits are durable now
    /// (all of them when a sync failed) and, when no sync is running, one thread still
    /// waiting, to lead the next sync. The others stay parked: waking every waiter after each
    /// sync cost each of them a task switch and a turn on this lock, for nothing (W4c).
    ///
    /// Returns how many of the woken threads had their commits covered.
    fn wake(&mut self) -> usize {
        let (synced, failed) = (self.synced, self.failed.is_some());
        // A thread is to lead only when none syncs; `true` stands for "already chosen".
        let mut leader = self.syncing;
        let mut covered = 0;
        self.parked.retain(|(seq, t)| {
            let done = *seq <= synced;
            let wake = failed || done || !std::mem::replace(&mut leader, true);
            if wake {
                covered += usize::from(done);
                t.unpark();
            }
            !wake
        });
        covered
    }

    /// A committer whose record is written arrives to wait for its sync: if the last sync
    /// covered its previous commit, it is one of those the next sync's leader waits for.
    fn arrive(&mut self, db: usize) {
        if COVERED.with(|c| c.replace((0, u64::MAX))) == (db, self.generation) {
            self.returning = self.returning.saturating_sub(1);
            if self.returning == 0
                && let Some(t) = &self.gatherer
            {
                t.unpark();
            }
        }
    }
}

/// State shared by the database handle and its transactions.
pub(crate) struct Shared {
    pub opts: DatabaseOptions,
    pub storage: Arc<dyn Storage>,
    pub files: Arc<LogFiles>,
    state: RwLock<Arc<DbState>>,
    /// The published state the last publish replaced (see [`Shared::publish`]).
    retired: Mutex<Option<Arc<DbState>>>,
    /// What the last finished transaction left for the next to begin with.
    txn_spare: Mutex<crate::txn::TxnSpare>,
    commit: Mutex<CommitCtx>,
    sync: Mutex<SyncState>,
    pub cache: NodeCache,
    pub next_logical: AtomicU64,
    pub next_item: AtomicU64,
    pub next_store: AtomicU32,
    /// Transactions in `commit` now (see [`Shared::lone_committer`]).
    pub committing: AtomicUsize,
    /// `SyncState::syncing`, readable without the lock (see [`Shared::lone_committer`]);
    /// written with it, under the lock.
    sync_running: AtomicBool,
    /// Low 64 bits of every item id this process creates.
    pub item_tag: u64,
    comparators: RwLock<HashMap<String, Comparator>>,
    /// Commit sequence numbers of the snapshots running transactions hold, with counts.
    snapshots: Mutex<snapshots::Snapshots>,
    /// The last error of housekeeping work after a commit (checkpoint, compaction).
    background_error: Mutex<Option<String>>,
    /// Clustered mode: the coordinator, markers and id claims.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The folder lock (exclusive standalone, shared clustered); released at close.
    lock: Mutex<Option<Box<dyn Send + Sync + fmt::Debug>>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.opts.path)
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Poisoned("a thread panicked while holding a database lock".into())
}

impl Shared {
    /// The current committed state.
    pub fn state(&self) -> Result<Arc<DbState>> {
        Ok(Arc::clone(&*self.state.read().map_err(poisoned)?))
    }

    /// Publishes a durable state, unless a newer one is already published. The state it
    /// replaces is kept aside (see [`Shared::free_retired`]) rather than freed here, on the
    /// committer's way back from its sync.
    fn publish(&self, s: Arc<DbState>) -> Result<()> {
        let mut cur = self.state.write().map_err(poisoned)?;
        if s.seq > cur.seq {
            let old = std::mem::replace(&mut *cur, s);
            drop(cur);
            // Replacing an older retired state frees that one here (no commit came between).
            let older = self.retired.lock().map_err(poisoned)?.replace(old);
            drop(older);
        }
        Ok(())
    }

    /// Frees the state the last publish replaced, if no one else holds it: a commit calls it
    /// while the device writes its bytes, when the CPU is otherwise idle. Freeing it on the
    /// way back from a sync instead costs the committer ~2 µs (its memory has left the caches;
    /// the transaction that began on it usually holds the last reference).
    pub fn free_retired(&self) {
        let old = self.retired.lock().ok().and_then(|mut r| r.take());
        drop(old);
    }

    /// What the last finished transaction left (emptied tables, a working store), or
    /// nothing when another thread holds it: a new transaction never waits for it.
    pub fn take_txn_spare(&self) -> crate::txn::TxnSpare {
        self.txn_spare
            .try_lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// Keeps what `spare` holds for the next transaction to begin, over what the slot held
    /// (dropped when another thread holds the slot).
    pub fn put_txn_spare(&self, spare: crate::txn::TxnSpare) {
        if let Ok(mut s) = self.txn_spare.try_lock() {
            if spare.stores.capacity() > 0 {
                s.stores = spare.stores;
            }
            if spare.seen.capacity() > 0 {
                s.seen = spare.seen;
            }
            if spare.store.is_some() {
                s.store = spare.store;
            }
            if spare.cursors.capacity() > 0 {
                s.cursors = spare.cursors;
            }
        }
    }

    /// Sequence number of the published state.
    pub fn published_seq(&self) -> u64 {
        self.state.read().map_or(0, |s| s.seq)
    }

    /// Marks `state` durable and publishes it.
    pub(crate) fn mark_synced(&self, state: Arc<DbState>) -> Result<()> {
        let mut s = self.sync.lock().map_err(poisoned)?;
        let r = self.record_synced(&mut s, state);
        s.wake();
        r
    }

    /// Publishes `state`, just made durable, and only then advances the synced seq to it
    /// (a commit is acknowledged once durable and published). A failed publish (a poisoned
    /// lock) is recorded as the sync's failure, so the waiters get it rather than stay parked.
    fn record_synced(&self, s: &mut SyncState, state: Arc<DbState>) -> Result<()> {
        let seq = state.seq;
        if seq <= s.synced {
            return Ok(());
        }
        match self.publish(state) {
            Ok(()) => {
                s.synced = seq;
                Ok(())
            }
            Err(e) => {
                s.failed = Some((
                    self.opts.path.clone(),
                    std::io::ErrorKind::Other,
                    e.to_string(),
                ));
                Err(e)
            }
        }
    }

    /// Syncs everything written, under the commit lock, and publishes the latest state.
    pub fn sync_inline(&self, ctx: &mut CommitCtx) -> Result<()> {
        let latest = Arc::clone(&ctx.latest);
        ctx.writer.sync(latest.seq)?;
        self.mark_synced(latest)
    }

    /// True when the calling commit is the only one in progress and no sync is running: it
    /// will sync for itself. Otherwise the sync that covers its bytes covers others' too
    /// (group commit), and starting their writeback early would split that one request.
    pub fn lone_committer(&self) -> bool {
        // A hint (a stale answer only starts a writeback early or late): no lock, which a
        // commit would take on its way to the device.
        self.committing.load(Ordering::Relaxed) <= 1 && !self.sync_running.load(Ordering::Relaxed)
    }

    /// Waits until commit `seq` is durable and published. The first waiter to find no sync in
    /// progress syncs for everyone (group commit): one fsync covers every commit written
    /// before it started.
    ///
    /// Before it syncs, the leader waits, up to half the last sync's time (at most
    /// [`GATHER_MAX`]), for the committers whose commits the last sync covered to come back
    /// with their next ones: with one sync in flight at a time, concurrent committers would
    /// otherwise split into two groups that take turns, each sync covering about half of
    /// them (ADR 0012). A lone committer is back already when it leads, and never waits.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let db = std::ptr::from_ref(self) as usize;
        let mut s = self.sync.lock().map_err(poisoned)?;
        s.arrive(db);
        loop {
            if s.synced >= seq {
                COVERED.with(|c| c.set((db, s.generation)));
                return Ok(());
            }
            if let Some((path, kind, msg)) = &s.failed {
                return Err(Error::io(
                    path.clone(),
                    std::io::Error::new(*kind, msg.clone()),
                ));
            }
            if s.syncing {
                // Parked until the leader's sync covers this commit, or the leader hands the
                // next sync to this thread (see `SyncState::wake`); a wakeup for neither
                // (`park` may return spuriously) parks again.
                let me = std::thread::current();
                s.parked.push((seq, me.clone()));
                drop(s);
                std::thread::park();
                s = self.sync.lock().map_err(poisoned)?;
                s.parked.retain(|(_, t)| t.id() != me.id());
                continue;
            }
            s.syncing = true;
            self.sync_running.store(true, Ordering::Relaxed);
            if s.returning > 0 {
                let until = std::time::Instant::now() + (s.last_sync / 2).min(GATHER_MAX);
                s.gatherer = Some(std::thread::current());
                while s.returning > 0 {
                    let Some(left) = until.checked_duration_since(std::time::Instant::now()) else {
                        break;
                    };
                    drop(s);
                    std::thread::park_timeout(left);
                    s = self.sync.lock().map_err(poisoned)?;
                }
                s.gatherer = None;
            }
            drop(s);
            let started = std::time::Instant::now();
            let r = self.lead_sync();
            let took = started.elapsed();
            s = self.sync.lock().map_err(poisoned)?;
            s.last_sync = took;
            s.syncing = false;
            self.sync_running.store(false, Ordering::Relaxed);
            match r {
                Ok(state) => {
                    // A failure is recorded in `s.failed`: every waiter, this one included,
                    // gets it from the loop.
                    let _ = self.record_synced(&mut s, state);
                }
                Err(Error::Io { path, source }) => {
                    s.failed = Some((path, source.kind(), source.to_string()));
                }
                Err(e) => {
                    s.failed = Some((
                        self.opts.path.clone(),
                        std::io::ErrorKind::Other,
                        e.to_string(),
                    ))
                }
            }
            s.generation += 1;
            // The leader's own commit, and the parked ones: all durable, or all failed.
            s.returning = 1 + s.wake();
        }
    }

    fn lead_sync(&self) -> Result<Arc<DbState>> {
        let (file, seg, state, durable) = {
            let ctx = self.commit_lock()?;
            let (file, seg) = ctx.writer.file_handle();
            (file, seg, Arc::clone(&ctx.latest), ctx.writer.is_durable())
        };
        if durable && let Err(e) = file.sync() {
            let err = Error::io(self.files.path(seg), e);
            self.commit_lock()?.writer.poison_with(&err);
            return Err(err);
        }
        if durable {
            // Only a real sync makes commits durable; stamping unsynced ones as durable would
            // make recovery read a torn tail as corruption.
            self.commit_lock()?.writer.mark_durable(state.seq);
        }
        Ok(state)
    }

    /// Takes the commit lock.
    pub fn commit_lock(&self) -> Result<MutexGuard<'_, CommitCtx>> {
        self.commit.lock().map_err(poisoned)
    }

    /// Registers a snapshot in use; returns it.
    pub fn take_snapshot(&self) -> Result<Arc<DbState>> {
        let mut snaps = self.snapshots.lock().map_err(poisoned)?;
        let s = self.state()?;
        snaps.take(s.seq);
        Ok(s)
    }

    /// Releases a snapshot taken with [`Shared::take_snapshot`].
    pub fn release_snapshot(&self, seq: u64) {
        if let Ok(mut snaps) = self.snapshots.lock() {
            snaps.release(seq);
        }
    }

    /// The oldest snapshot in use, if any.
    pub fn oldest_snapshot(&self) -> Option<u64> {
        self.snapshots.lock().ok()?.oldest()
    }

    /// A registered comparator.
    pub fn comparator(&self, name: &str) -> Result<Comparator> {
        self.comparators
            .read()
            .map_err(poisoned)?
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "comparator {name:?} is not registered with this database"
                ))
            })
    }

    /// Reserves `n` consecutive item counters (a transaction's block, so it need not touch
    /// the shared counter on every add); returns the first.
    pub fn reserve_item_ids(&self, n: u64) -> u64 {
        self.next_item.fetch_add(n, Ordering::Relaxed)
    }

    /// Records a housekeeping failure.
    pub fn note_background_error(&self, e: &Error) {
        if let Ok(mut b) = self.background_error.lock() {
            *b = Some(e.to_string());
        }
    }

    /// The last housekeeping failure, if any.
    pub fn background_error(&self) -> Option<String> {
        self.background_error.lock().ok()?.clone()
    }

    /// A fresh store id (clustered mode: from this handle's claimed range).
    pub fn new_store_id(&self) -> Result<u32> {
        match &self.cluster {
            None => Ok(self.next_store.fetch_add(1, Ordering::Relaxed)),
            Some(_) => {
                let id = clustered::allocate(self, crate::cluster::claims::Space::Store)?;
                u32::try_from(id)
                    .map_err(|_| Error::InvalidArgument("store id space exhausted".into()))
            }
        }
    }

    /// A fresh logical id (clustered mode: from this handle's claimed range).
    pub fn new_logical(&self) -> Result<u64> {
        match &self.cluster {
            None => Ok(self.next_logical.fetch_add(1, Ordering::Relaxed)),
            Some(_) => clustered::allocate(self, crate::cluster::claims::Space::Logical),
        }
    }

    /// High-water marks of (logical ids, store ids) to stamp into a commit record on top of
    /// `cur`.
    pub fn high_water(&self, cur: &DbState) -> Result<(u64, u32)> {
        match &self.cluster {
            None => Ok((
                self.next_logical.load(Ordering::Relaxed),
                self.next_store.load(Ordering::Relaxed),
            )),
            Some(c) => {
                let ids = c.ids.lock().map_err(poisoned)?;
                let store = u32::try_from(ids.1.next).unwrap_or(u32::MAX);
                Ok((cur.next_logical.max(ids.0.next), cur.next_store.max(store)))
            }
        }
    }

    /// Clustered mode: applies the commits other processes made since the last look, so a
    /// transaction beginning now sees every commit acknowledged before. A no-op standalone.
    pub fn refresh(&self) -> Result<()> {
        if self.cluster.is_some() {
            let mut ctx = self.commit_lock()?;
            clustered::catch_up(self, &mut ctx, true)?;
            clustered::publish_info(self, &ctx, false)?;
        }
        Ok(())
    }
}

impl Drop for Shared {
    /// A clean close: checkpoint (so the next open replays nothing) and reclaim the log
    /// segments nothing needs. Best effort: the log already holds every commit.
    fn drop(&mut self) {
        if self.cluster.is_some() {
            // The last process to close settles the folder; if others still use it, the next
            // process that opens it alone does.
            if self.opts.checkpoint_on_close {
                let _ = clustered::close(self);
            }
            return;
        }
        let Ok(mut ctx) = self.commit.lock() else {
            return;
        };
        let ctx = &mut *ctx;
        // The segment ends at its last record again (no zeros written ahead left behind).
        let _ = ctx.writer.close();
        if !self.opts.checkpoint_on_close || ctx.writer.since_checkpoint == 0 {
            return;
        }
        let state = Arc::clone(&ctx.latest);
        if ctx
            .space
            .checkpoint(self, &mut ctx.writer, &state, &ctx.in_doubt)
            .is_ok()
        {
            let _ = ctx.space.collect(self, &ctx.writer);
        }
    }
}

/// An open database. Cheap to clone; `Send + Sync`; closed when the last clone is dropped.
///
/// ```
/// # fn main() -> sop::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| sop::Error::InvalidArgument(e.to_string()))?;
/// use sop::{Database, DatabaseOptions, StoreOptions, TransactionMode};
/// let db = Database::open(DatabaseOptions::new(dir.path()))?;
/// let tx = db.begin(TransactionMode::ForWriting)?;
/// let users = tx.new_btree::<u64, String>("users", StoreOptions::default())?;
/// users.add(&1, &"ada".to_string())?;
/// tx.commit()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Database {
    pub(crate) shared: Arc<Shared>,
}

impl Database {
    /// Opens (or, with `create_if_missing`, creates) the database in `opts.path`.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] for a folder that holds something else,
    /// [`Error::IncompatibleOptions`], [`Error::InvalidOption`], [`Error::Locked`] when
    /// another process has it open, [`Error::Corruption`] when recovery finds damage.
    pub fn open(opts: DatabaseOptions) -> Result<Database> {
        let storage: Arc<dyn Storage> = if opts.direct_io {
            Arc::new(FileStorage::direct())
        } else {
            Arc::new(FileStorage::new())
        };
        Self::open_with_storage(opts, storage)
    }

    /// Opens the database on a given storage backend (tests use in-memory and fault-injecting
    /// backends).
    ///
    /// # Errors
    /// As [`Database::open`].
    pub fn open_with_storage(opts: DatabaseOptions, storage: Arc<dyn Storage>) -> Result<Database> {
        opts.validate()?;
        if opts.db_type == DatabaseType::Clustered {
            return Err(Error::InvalidOption(
                "clustered mode needs a coordinator: open it with Database::open_clustered \
                 (the sop-redis crate provides one on Redis)"
                    .into(),
            ));
        }
        let dir = opts.path.clone();
        prepare_folder(&opts, &*storage)?;
        let open_lock = lock_with_wait(&*storage, &dir.join(OPEN_LOCK), OPEN_WAIT)?;
        let lock = storage
            .lock_exclusive(&dir.join(LOCK_FILE))
            .map_err(|e| lock_error(&dir, e))?;
        let effective = load_options(&opts, &*storage, true)?;

        let log_dir = dir.join(LOG_DIR);
        storage
            .create_dir_all(&log_dir)
            .map_err(|e| Error::io(&log_dir, e))?;
        storage.sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let files = Arc::new(LogFiles::new(Arc::clone(&storage), log_dir));
        let ckpt = log::read_checkpoint(&*storage, &dir)?;
        let (rec, ckpt_info) = if ckpt.as_ref().is_some_and(|c| c.seg == 0) {
            // Last used in clustered mode: follow the commit markers, then start a log of our
            // own after every existing segment.
            clustered::leave_cluster(&files, &dir, ckpt)?
        } else {
            let info = ckpt.as_ref().map(|c| (c.state.seq, c.seg));
            (log::recover(&files, ckpt)?, info)
        };
        drop(open_lock);
        let file = files.file(rec.seg)?;
        let writer = LogWriter::new(
            Arc::clone(&files),
            rec.seg,
            file,
            rec.end,
            effective.segment_bytes,
            effective.durability,
            rec.state.seq,
        );
        let exact = rec.replayed == 0 && rec.truncated == 0;
        let space = Space::rebuild(&files, &rec.state, ckpt_info.filter(|_| exact))?;
        let needs_checkpoint = !exact;
        let db = Database::assemble(effective, storage, files, rec, writer, space, None, lock)?;
        if needs_checkpoint {
            db.checkpoint()?;
        }
        Ok(db)
    }

    /// Builds the handle around a recovered state.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        effective: DatabaseOptions,
        storage: Arc<dyn Storage>,
        files: Arc<LogFiles>,
        rec: log::Recovered,
        writer: LogWriter,
        space: Space,
        cluster: Option<crate::cluster::Cluster>,
        lock: Box<dyn Send + Sync + fmt::Debug>,
    ) -> Result<Database> {
        let mut prepared = FastMap::default();
        for (id, raw) in &rec.in_doubt {
            let p = Prepared::decode(raw).map_err(|e| {
                Error::corruption(
                    effective.path.join("log"),
                    0,
                    format!("prepared transaction {id:032x}: {e}"),
                )
            })?;
            prepared.insert(*id, Arc::new(p));
        }
        let state = Arc::new(rec.state);
        let shared = Shared {
            cache: NodeCache::new(effective.node_cache_bytes),
            next_logical: AtomicU64::new(state.next_logical.max(1)),
            next_item: AtomicU64::new(state.next_item.max(1)),
            next_store: AtomicU32::new(state.next_store.max(1)),
            committing: AtomicUsize::new(0),
            sync_running: AtomicBool::new(false),
            item_tag: fastrand::u64(..),
            opts: effective,
            storage,
            files,
            sync: Mutex::new(SyncState {
                synced: state.seq,
                syncing: false,
                parked: Vec::new(),
                failed: None,
                generation: 0,
                returning: 0,
                gatherer: None,
                last_sync: Duration::ZERO,
            }),
            commit: Mutex::new(CommitCtx {
                writer,
                space,
                latest: Arc::clone(&state),
                history: History::new(),
                prepared,
                in_doubt: rec.in_doubt,
                spare: Default::default(),
            }),
            state: RwLock::new(state),
            retired: Mutex::new(None),
            txn_spare: Mutex::default(),
            comparators: RwLock::new(HashMap::new()),
            snapshots: Mutex::default(),
            background_error: Mutex::new(None),
            cluster,
            lock: Mutex::new(Some(lock)),
        };
        Ok(Database {
            shared: Arc::new(shared),
        })
    }

    /// Reads the persisted options of the database in `path` without opening it (SOP's
    /// `GetOptions`).
    ///
    /// # Errors
    /// [`Error::Io`] when there is no options file, [`Error::Corruption`] when it is damaged.
    pub fn read_options(path: impl AsRef<Path>) -> Result<DatabaseOptions> {
        options_file::read(&FileStorage::new(), path.as_ref())
    }

    /// True when `path` holds a database.
    #[must_use]
    pub fn is_database(path: impl AsRef<Path>) -> bool {
        path.as_ref().join(options_file::FILE).exists()
    }

    /// The options in effect.
    #[must_use]
    pub fn options(&self) -> &DatabaseOptions {
        &self.shared.opts
    }

    /// The database folder.
    #[must_use]
    pub fn path(&self) -> &PathBuf {
        &self.shared.opts.path
    }

    /// Begins a transaction with the default maximum duration (15 minutes).
    ///
    /// # Errors
    /// [`Error::Poisoned`] after a fatal I/O error.
    pub fn begin(&self, mode: TransactionMode) -> Result<Transaction> {
        self.begin_with_max_duration(mode, DEFAULT_MAX_TXN_DURATION)
    }

    /// Begins a transaction that must commit within `max` (capped at one hour; zero means the
    /// default).
    ///
    /// # Errors
    /// [`Error::Poisoned`] after a fatal I/O error.
    pub fn begin_with_max_duration(
        &self,
        mode: TransactionMode,
        max: Duration,
    ) -> Result<Transaction> {
        let max = if max.is_zero() {
            DEFAULT_MAX_TXN_DURATION
        } else {
            max.min(MAX_TXN_DURATION_CAP)
        };
        Transaction::begin(Arc::clone(&self.shared), mode, max)
    }

    /// Runs `f` in a `ForWriting` transaction and commits it; when the commit (or `f`) fails
    /// with a retryable [`Error::Conflict`], runs it again in a new transaction, with
    /// exponential backoff and jitter, up to 16 attempts.
    ///
    /// # Errors
    /// The last error: [`Error::Conflict`] when every attempt conflicted, or any other error
    /// at once.
    pub fn transact<T>(&self, f: impl FnMut(&Transaction) -> Result<T>) -> Result<T> {
        self.transact_with(TransactionMode::ForWriting, 16, f)
    }

    /// [`Database::transact`] with a mode and a bound on attempts.
    ///
    /// # Errors
    /// As [`Database::transact`].
    pub fn transact_with<T>(
        &self,
        mode: TransactionMode,
        max_attempts: u32,
        mut f: impl FnMut(&Transaction) -> Result<T>,
    ) -> Result<T> {
        let mut backoff = Duration::from_micros(200);
        let mut attempt = 1;
        loop {
            let tx = self.begin(mode)?;
            let r = f(&tx).and_then(|v| tx.commit().map(|()| v));
            match r {
                Err(e) if e.is_retryable() && attempt < max_attempts.max(1) => {
                    drop(tx);
                    let jitter = fastrand::u64(..=backoff.as_micros() as u64);
                    std::thread::sleep(backoff / 2 + Duration::from_micros(jitter / 2));
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Transactions that completed phase 1 of a two-phase commit but whose decision was lost
    /// (the process stopped before phase 2 or rollback). Decide each with
    /// [`Database::resolve_in_doubt`]; until then, commits that conflict with them are refused.
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn in_doubt(&self) -> Result<Vec<crate::txn::InDoubt>> {
        crate::txn::in_doubt(&self.shared)
    }

    /// Commits (`commit = true`) or aborts an in-doubt transaction.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown id; as [`Transaction::commit`].
    pub fn resolve_in_doubt(&self, txn_id: u128, commit: bool) -> Result<()> {
        crate::txn::resolve(&self.shared, txn_id, commit)
    }

    /// Registers a custom key comparator under `name`; stores created with
    /// `StoreOptions::comparator = Some(name)` order their keys with it. Register it before
    /// opening such a store, in every process, with the same ordering.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a lock was poisoned.
    pub fn register_comparator(
        &self,
        name: &str,
        cmp: impl Fn(&[u8], &[u8]) -> std::cmp::Ordering + Send + Sync + 'static,
    ) -> Result<()> {
        self.shared
            .comparators
            .write()
            .map_err(poisoned)?
            .insert(name.to_owned(), Arc::new(cmp));
        Ok(())
    }

    /// Names of the committed stores.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a lock was poisoned.
    pub fn store_names(&self) -> Result<Vec<String>> {
        self.shared.refresh()?;
        Ok(self
            .shared
            .state()?
            .stores
            .keys()
            .map(|k| k.to_string())
            .collect())
    }

    /// Writes a checkpoint now (also done automatically as the log grows, and on recovery).
    ///
    /// # Errors
    /// I/O errors.
    pub fn checkpoint(&self) -> Result<()> {
        let mut ctx = self.shared.commit_lock()?;
        let ctx = &mut *ctx;
        if self.shared.cluster.is_some() {
            catch_up(&self.shared, ctx, true)?;
            cluster_checkpoint(&self.shared, ctx)?;
            clustered::collect(&self.shared, ctx)?;
            return Ok(());
        }
        let state = Arc::clone(&ctx.latest);
        ctx.space
            .checkpoint(&self.shared, &mut ctx.writer, &state, &ctx.in_doubt)?;
        self.shared.sync_inline(ctx)?;
        ctx.space.collect(&self.shared, &ctx.writer)?;
        Ok(())
    }

    /// Bytes of the log files on disk.
    ///
    /// # Errors
    /// I/O errors.
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        for seg in self.shared.files.list()? {
            let f = self.shared.files.file(seg)?;
            total += f
                .len()
                .map_err(|e| Error::io(self.shared.files.path(seg), e))?;
        }
        Ok(total)
    }

    /// Reads every structure of the database and checks every checksum and B-tree invariant.
    ///
    /// # Errors
    /// I/O errors; problems found are listed in the report, not returned as errors.
    pub fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.shared)
    }

    /// Number of commits since the database was created.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if a lock was poisoned.
    pub fn commit_seq(&self) -> Result<u64> {
        self.shared.refresh()?;
        Ok(self.shared.state()?.seq)
    }
}

/// How long opening waits for another process that is opening or closing the folder.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// Checks that the folder holds a database (or may become one) and creates it if asked.
fn prepare_folder(opts: &DatabaseOptions, storage: &dyn Storage) -> Result<()> {
    let dir = &opts.path;
    let opts_path = dir.join(options_file::FILE);
    if storage.exists(&opts_path) {
        return Ok(());
    }
    if storage.exists(dir) {
        let entries = storage.list(dir).map_err(|e| Error::io(dir, e))?;
        // The locks and a temporary options file are the leftovers of a creation that was
        // interrupted before the options file was in place: finish it.
        if entries
            .iter()
            .any(|n| n != LOCK_FILE && n != OPEN_LOCK && n != options_file::TMP)
        {
            return Err(Error::NotADatabase {
                path: dir.clone(),
                reason: format!("the folder is not empty and has no {}", options_file::FILE),
            });
        }
    } else if !opts.create_if_missing {
        return Err(Error::NotADatabase {
            path: dir.clone(),
            reason: "the folder does not exist (set create_if_missing to create it)".into(),
        });
    }
    storage.create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// The options in effect: the persisted ones updated with `opts` (written back when `write`
/// and they differ), or `opts` for a new database.
fn load_options(
    opts: &DatabaseOptions,
    storage: &dyn Storage,
    write: bool,
) -> Result<DatabaseOptions> {
    let dir = &opts.path;
    let mut effective = opts.clone();
    if storage.exists(&dir.join(options_file::FILE)) {
        let persisted = options_file::read(storage, dir)?;
        effective.path = dir.clone();
        if write && persisted != effective {
            options_file::write(storage, dir, &effective)?;
        }
    } else {
        options_file::write(storage, dir, &effective)?;
    }
    Ok(effective)
}

fn lock_error(dir: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Error::Locked {
            path: dir.to_path_buf(),
            detail: "another process (or another Database handle in this process) has it open; \
                     a standalone database has one owner at a time (share a Database by cloning \
                     it), and a clustered one excludes standalone owners"
                .into(),
        }
    } else {
        Error::io(dir.join(LOCK_FILE), e)
    }
}

/// Takes an exclusive lock, retrying while another holder has it, for at most `wait`.
fn lock_with_wait(
    storage: &dyn Storage,
    path: &Path,
    wait: Duration,
) -> Result<Box<dyn Send + Sync + fmt::Debug>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match storage.lock_exclusive(path) {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Timeout(format!(
                    "{} stayed locked for {wait:?} (another process is opening or closing the \
                     database)",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}
