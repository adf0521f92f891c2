//! Transactions: what a transaction sees (a snapshot), what it changes (copy-on-write nodes per
//! store), and the end of its life (commit or rollback).
//!
//! A transaction reads the committed state as of its begin (a snapshot that commits by others
//! never change) plus its own changes. Its changes live only in memory until commit (except the
//! values of stores with actively persisted values, written to the log ahead, unreferenced
//! until commit). Dropping a transaction without committing rolls it back.
//!
//! | mode | reads | writes | at commit |
//! |---|---|---|---|
//! | `ForWriting` | snapshot + own changes, node versions recorded | yes | validated: every node it read must be unchanged, else `Conflict` |
//! | `ForReading` | snapshot | refused | nothing to validate: a snapshot is consistent |
//! | `NoCheck` | snapshot, nothing recorded | refused | nothing |

pub(crate) mod access;
mod commit;
mod keylist;
pub(crate) mod nodes;
pub(crate) mod prepared;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) use commit::{HistEntry, History, SpareBuffers, StoreWrites, relocate, trim_history};
pub(crate) use nodes::{Seen, TxnStore, load_node};
pub(crate) use prepared::Prepared;

use crate::btree::{Node, Order, Pos, Shape};
use crate::db::Shared;
use crate::error::{Error, Result};
use crate::fasthash::{FastMap, FastSet};
use crate::options::{StoreOptions, TransactionMode};
use crate::registry::LogicalId;
use crate::state::{DbState, StoreId, StoreMeta};
use crate::store::{Btree, RawBtree};
use crate::types::{Key, Value};

/// Life cycle of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Active,
    /// Phase 1 of a two-phase commit done; waiting for phase 2 or rollback.
    Prepared,
    Committed,
    RolledBack,
}

/// A cursor of one store handle.
#[derive(Debug, Default)]
pub(crate) struct CursorState {
    /// The current item, as (key, id).
    pub current: Option<(crate::btree::KeyBuf, u128)>,
    /// Cached position, valid while the store's change counter equals the stamp.
    pub pos: Option<(Pos, u64)>,
}

/// Everything a transaction holds; behind the mutex its handles share.
#[derive(Debug)]
pub(crate) struct TxnState {
    pub shared: Arc<Shared>,
    pub mode: TransactionMode,
    pub id: u128,
    pub snapshot: Arc<DbState>,
    pub started: Instant,
    pub max: Duration,
    pub status: Status,
    /// Boxed: a `TxnStore` is ~800 bytes, and a table of them outgrew the allocator's
    /// per-thread cache (a 3 KiB allocation for every transaction).
    pub stores: FastMap<StoreId, Box<TxnStore>>,
    pub seen: FastMap<LogicalId, Seen>,
    pub cursors: Vec<CursorState>,
    pub participants: Vec<Box<dyn Participant>>,
    pub hooks: Vec<Hook>,
    /// Write operations so far (read by range iterators without taking the lock).
    pub mods: Arc<std::sync::atomic::AtomicU64>,
    /// An emptied working store from an earlier transaction, for the first store this one
    /// loads ([`TxnStore::new`]).
    pub spare_store: Option<Box<TxnStore>>,
    /// The snapshot's registration was released ([`TxnState::release_snapshot`]).
    pub snapshot_released: bool,
}

/// What a finished transaction leaves for the next one to begin with (see
/// [`Shared::take_txn_spare`](crate::db::Shared)): its emptied tables, and its working store
/// when it used one. A small transaction then begins, loads its store and records its reads
/// without allocating them.
#[derive(Debug, Default)]
pub(crate) struct TxnSpare {
    pub stores: FastMap<StoreId, Box<TxnStore>>,
    pub seen: FastMap<LogicalId, Seen>,
    pub store: Option<Box<TxnStore>>,
    pub cursors: Vec<CursorState>,
}

/// A post-commit hook.
pub(crate) struct Hook(Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// An external resource enlisted in a transaction's two-phase commit (a message queue, another
/// database...). SOP calls `prepare` after its own phase 1 is durable, `commit` after its own
/// commit is durable, and `rollback` when the transaction is abandoned.
pub trait Participant: Send {
    /// A name recorded in the prepare record, shown in the in-doubt list after a crash.
    fn name(&self) -> String;
    /// Phase 1: make the change durable but not visible; an error aborts the transaction.
    ///
    /// # Errors
    /// Any error aborts the whole transaction.
    fn prepare(&mut self, txn_id: u128) -> Result<()>;
    /// Phase 2: make the prepared change visible.
    ///
    /// # Errors
    /// Reported to the caller; the SOP side is committed regardless.
    fn commit(&mut self, txn_id: u128) -> Result<()>;
    /// Discard the prepared change.
    ///
    /// # Errors
    /// Reported to the caller.
    fn rollback(&mut self, txn_id: u128) -> Result<()>;
}

impl std::fmt::Debug for dyn Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Participant({})", self.name())
    }
}

impl TxnState {
    pub fn check_active(&self) -> Result<()> {
        match self.status {
            Status::Active => Ok(()),
            _ => Err(Error::TransactionClosed),
        }
    }

    pub fn check_writable(&self) -> Result<()> {
        self.check_active()?;
        if self.mode == TransactionMode::ForWriting {
            Ok(())
        } else {
            Err(Error::ReadOnlyTransaction(self.mode.name()))
        }
    }

    fn shape_for(&self, options: &StoreOptions) -> Result<Shape> {
        let custom = match &options.comparator {
            Some(name) => Some(self.shared.comparator(name)?),
            None => None,
        };
        Ok(Shape {
            order: Order {
                custom,
                unique: options.is_unique,
            },
            slot_length: options.slot_length,
            leaf_load_balancing: options.leaf_load_balancing,
        })
    }

    /// The store named `name` the transaction has loaded: `Some(Ok)` when it is live,
    /// `Some(Err(()))` when the transaction removed it (and did not create it again), `None`
    /// when it has not loaded it. A transaction loads few stores: a scan of them is cheaper
    /// than a map by name (whose key would be allocated for every transaction).
    fn loaded(&self, name: &str) -> Option<std::result::Result<StoreId, ()>> {
        let mut removed = false;
        for ts in self.stores.values().filter(|ts| &*ts.meta.name == name) {
            if !ts.dropped {
                return Some(Ok(ts.meta.id));
            }
            removed = true;
        }
        removed.then_some(Err(()))
    }

    /// The id of the named store as this transaction sees it, loading it on first use.
    pub fn store_id(&mut self, name: &str) -> Result<StoreId> {
        match self.loaded(name) {
            Some(Ok(id)) => return Ok(id),
            Some(Err(())) => return Err(Error::StoreNotFound(name.to_owned())),
            None => {}
        }
        let meta = self
            .snapshot
            .stores
            .get(name)
            .cloned()
            .ok_or_else(|| Error::StoreNotFound(name.to_owned()))?;
        let shape = self.shape_for(&meta.options)?;
        let ts = TxnStore::new(
            self.spare_store.take(),
            (*meta).clone(),
            Some(Arc::clone(&meta)),
            shape,
        );
        self.stores.insert(meta.id, ts);
        Ok(meta.id)
    }

    /// Creates the store, or opens it when it exists with compatible options.
    pub fn create_store(&mut self, name: &str, options: &StoreOptions) -> Result<StoreId> {
        self.check_active()?;
        validate_name(name)?;
        options.validate()?;
        match self.store_id(name) {
            Ok(id) => {
                let existing = self
                    .stores
                    .get(&id)
                    .map(|s| Arc::clone(&s.meta.options))
                    .unwrap_or_default();
                if let Some(detail) = existing.incompatibility(options) {
                    return Err(Error::IncompatibleStore {
                        name: name.to_owned(),
                        detail,
                    });
                }
                Ok(id)
            }
            Err(Error::StoreNotFound(_)) => {
                self.check_writable()?;
                let shape = self.shape_for(options)?;
                let id = self.shared.new_store_id()?;
                let meta = StoreMeta {
                    id,
                    name: name.into(),
                    options: Arc::new(options.clone()),
                    root: 0,
                    count: 0,
                };
                let ts = TxnStore::new(self.spare_store.take(), meta, None, shape);
                self.stores.insert(id, ts);
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }

    fn finish(&mut self, status: Status) {
        if matches!(self.status, Status::Active | Status::Prepared) {
            self.status = status;
            self.participants.clear();
            if status != Status::Committed {
                self.hooks.clear();
            }
            self.release_snapshot();
            // Values written ahead that no commit took over become garbage.
            let held: Vec<u32> = self
                .stores
                .values_mut()
                .flat_map(|s| s.new_blobs.drain().map(|(_, nb)| nb.entry.loc.seg))
                .collect();
            if !held.is_empty()
                && let Ok(mut ctx) = self.shared.commit_lock()
            {
                for seg in held {
                    ctx.space.release(seg);
                }
            }
            self.free_working_set(FastSet::default);
            self.cursors.clear();
        }
    }

    /// Lets go of the snapshot's registration (what keeps the segments it reads from being
    /// deleted), once: a commit does when its record is written, while the device works,
    /// rather than on its way back from the sync.
    pub(crate) fn release_snapshot(&mut self) {
        if !self.snapshot_released {
            self.snapshot_released = true;
            self.shared.release_snapshot(self.snapshot.seq);
        }
    }

    /// Frees the nodes the transaction read and wrote (the versions its commit replaced are
    /// usually freed with them: the cache has let go of those). A commit calls it as soon as
    /// its record is written, before it waits for the sync: after the sync's sleep that memory
    /// has left the caches, and freeing it costs several times more (ADR 0007).
    ///
    /// The handles to the nodes `in_place` returns (by address: the leaves the cache fill is to
    /// apply pending changes to, see `CacheFill::built_in_place`; asked only of a large
    /// working set) are dropped here even when the rest is dropped on another thread: the fill
    /// holds those nodes too, so dropping them frees nothing, and the fill then finds them
    /// unshared and changes them in place.
    pub(crate) fn free_working_set(&mut self, in_place: impl FnOnce() -> FastSet<usize>) {
        let nodes = self.seen.len()
            + self
                .stores
                .values()
                .map(|s| s.dirty.len() + s.originals.len())
                .sum::<usize>();
        let mut stores = std::mem::take(&mut self.stores);
        let mut seen = std::mem::take(&mut self.seen);
        if nodes >= DROP_ASIDE_NODES {
            let in_place = in_place();
            if !in_place.is_empty() {
                let keep = |n: &Arc<Node>| !in_place.contains(&(Arc::as_ptr(n) as usize));
                seen.retain(|_, s| keep(&s.node));
                for ts in stores.values_mut() {
                    ts.originals.retain(|_, n| keep(n));
                    ts.dirty.retain(|_, d| keep(d.committed_leaf()));
                }
            }
            drop_aside((stores, seen));
            return;
        }
        // What the next transaction can begin with: its one working store emptied, the
        // tables emptied while small (a large transaction's would hold memory).
        let store = if stores.len() == 1 {
            stores.drain().next().and_then(|(_, ts)| ts.emptied())
        } else {
            stores.clear();
            None
        };
        seen.clear();
        // The handles' cursors go too: a transaction's handles fail once its commit has
        // written (it holds the transaction's lock until it is finished).
        let mut cursors = std::mem::take(&mut self.cursors);
        cursors.clear();
        let small = |c: usize| c <= nodes::SPARE_MAX_ENTRIES;
        self.shared.put_txn_spare(TxnSpare {
            stores: if small(stores.capacity()) {
                stores
            } else {
                FastMap::default()
            },
            seen: if small(seen.capacity()) {
                seen
            } else {
                FastMap::default()
            },
            store: store.or_else(|| self.spare_store.take()),
            cursors: if small(cursors.capacity()) {
                cursors
            } else {
                Vec::new()
            },
        });
    }
}

/// Nodes from which a finished transaction's working set is freed on another thread: the
/// committed nodes a large transaction replaced are mostly freed here (the cache has let go
/// of them), thousands of allocations the caller need not wait for.
const DROP_ASIDE_NODES: usize = 1024;

/// Drops `garbage` on a thread of its own, or here when no thread can be started. Nothing
/// it holds has a destructor with effects beyond freeing memory.
fn drop_aside<T: Send + 'static>(garbage: T) {
    // A failed spawn drops the closure, and `garbage` with it, before returning.
    let _ = std::thread::Builder::new()
        .name("sop-free".into())
        .spawn(move || drop(garbage));
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("store name can't be empty".into()));
    }
    if name.len() > 1024 {
        return Err(Error::InvalidArgument(
            "store name is longer than 1024 bytes".into(),
        ));
    }
    Ok(())
}

/// Information about a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// Name.
    pub name: String,
    /// Options fixed at creation.
    pub options: StoreOptions,
    /// Items, including this transaction's changes.
    pub count: u64,
}

impl StoreInfo {
    /// The options as JSON (for tools).
    #[must_use]
    pub fn options_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.options).unwrap_or(serde_json::Value::Null)
    }
}

/// A transaction. Commit it with [`Transaction::commit`]; dropping it rolls it back.
///
/// `Send`: it may move between threads, but is used by one thread at a time (its handles share
/// one lock).
#[derive(Debug)]
pub struct Transaction {
    pub(crate) inner: Arc<Mutex<TxnState>>,
    id: u128,
    mode: TransactionMode,
}

pub(crate) fn lock(inner: &Mutex<TxnState>) -> Result<MutexGuard<'_, TxnState>> {
    inner
        .lock()
        .map_err(|_| Error::Poisoned("a thread panicked while using this transaction".into()))
}

impl Transaction {
    pub(crate) fn begin(
        shared: Arc<Shared>,
        mode: TransactionMode,
        max: Duration,
    ) -> Result<Transaction> {
        shared.refresh()?;
        let snapshot = shared.take_snapshot()?;
        // Never 0: a commit record's id 0 means it decides no prepared transaction.
        let id = (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(1..));
        let spare = shared.take_txn_spare();
        let st = TxnState {
            shared,
            mode,
            id,
            snapshot,
            started: Instant::now(),
            max,
            status: Status::Active,
            stores: spare.stores,
            seen: spare.seen,
            cursors: spare.cursors,
            participants: Vec::new(),
            hooks: Vec::new(),
            mods: Arc::default(),
            spare_store: spare.store,
            snapshot_released: false,
        };
        Ok(Transaction {
            inner: Arc::new(Mutex::new(st)),
            id,
            mode,
        })
    }

    /// Random id of the transaction.
    #[must_use]
    pub fn id(&self) -> u128 {
        self.id
    }

    /// Its mode.
    #[must_use]
    pub fn mode(&self) -> TransactionMode {
        self.mode
    }

    /// The maximum time from begin to commit.
    ///
    /// # Errors
    /// [`Error::Poisoned`].
    pub fn max_duration(&self) -> Result<Duration> {
        Ok(lock(&self.inner)?.max)
    }

    /// True until it commits or rolls back.
    #[must_use]
    pub fn is_active(&self) -> bool {
        lock(&self.inner).is_ok_and(|s| s.status == Status::Active)
    }

    /// Creates a typed store, or opens it if it exists with compatible options (creation is
    /// part of the transaction and rolls back with it).
    ///
    /// # Errors
    /// [`Error::IncompatibleStore`], [`Error::InvalidOption`], [`Error::InvalidArgument`] for an
    /// empty name, [`Error::ReadOnlyTransaction`] when it must be created in a read-only one.
    pub fn new_btree<K: Key, V: Value>(
        &self,
        name: &str,
        mut options: StoreOptions,
    ) -> Result<Btree<K, V>> {
        options.key_type = Some(K::type_name());
        options.value_type = Some(V::type_name());
        let raw = self.new_raw_btree(name, options)?;
        Ok(Btree::wrap(raw))
    }

    /// Opens an existing typed store.
    ///
    /// # Errors
    /// [`Error::StoreNotFound`]; [`Error::IncompatibleStore`] when the store was created with
    /// other key or value types.
    pub fn open_btree<K: Key, V: Value>(&self, name: &str) -> Result<Btree<K, V>> {
        let raw = self.open_raw_btree(name)?;
        let info = raw.info_no_count()?;
        for (what, have, want) in [
            ("key type", &info.options.key_type, K::type_name()),
            ("value type", &info.options.value_type, V::type_name()),
        ] {
            if let Some(have) = have
                && *have != want
            {
                return Err(Error::IncompatibleStore {
                    name: name.to_owned(),
                    detail: format!("{what} is {have}, requested {want}"),
                });
            }
        }
        Ok(Btree::wrap(raw))
    }

    /// Creates (or opens if compatible) an untyped store of byte keys and byte values.
    ///
    /// # Errors
    /// As [`Transaction::new_btree`].
    pub fn new_raw_btree(&self, name: &str, options: StoreOptions) -> Result<RawBtree> {
        let mut st = lock(&self.inner)?;
        let id = st.create_store(name, &options)?;
        Ok(RawBtree::new(Arc::clone(&self.inner), &mut st, id))
    }

    /// Opens an existing untyped store.
    ///
    /// # Errors
    /// [`Error::StoreNotFound`].
    pub fn open_raw_btree(&self, name: &str) -> Result<RawBtree> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        let id = st.store_id(name)?;
        Ok(RawBtree::new(Arc::clone(&self.inner), &mut st, id))
    }

    /// True when the store exists (as this transaction sees it).
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn store_exists(&self, name: &str) -> Result<bool> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        match st.store_id(name) {
            Ok(_) => Ok(true),
            Err(Error::StoreNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of the stores, as this transaction sees them, sorted.
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn stores(&self) -> Result<Vec<String>> {
        let st = lock(&self.inner)?;
        st.check_active()?;
        let mut names: Vec<String> = st
            .snapshot
            .stores
            .keys()
            .filter(|n| st.loaded(n) != Some(Err(())))
            .map(|n| n.to_string())
            .collect();
        for ts in st.stores.values() {
            if !ts.dropped && !st.snapshot.stores.contains_key(&ts.meta.name) {
                names.push(ts.meta.name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes a store and all its items (part of the transaction). Returns false when absent.
    ///
    /// # Errors
    /// [`Error::ReadOnlyTransaction`].
    pub fn remove_store(&self, name: &str) -> Result<bool> {
        let mut st = lock(&self.inner)?;
        st.check_writable()?;
        let id = match st.store_id(name) {
            Ok(id) => id,
            Err(Error::StoreNotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        st.mods.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = Arc::clone(&st.shared);
        if let Some(ts) = st.stores.get_mut(&id) {
            ts.dropped = true;
            ts.reshaped();
            ts.dirty.clear();
            ts.originals.clear();
            ts.changes += 1;
            // Values written ahead for this store will never be referenced.
            let held: Vec<u32> = ts
                .new_blobs
                .drain()
                .map(|(_, nb)| nb.entry.loc.seg)
                .collect();
            if !held.is_empty() {
                let mut ctx = shared.commit_lock()?;
                for seg in held {
                    ctx.space.release(seg);
                }
            }
        }
        Ok(true)
    }

    /// A store's options and item count.
    ///
    /// # Errors
    /// [`Error::StoreNotFound`].
    pub fn store_info(&self, name: &str) -> Result<StoreInfo> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        let id = st.store_id(name)?;
        info_of(&mut st, id, true)
    }

    /// Commits: validates, writes and makes durable, then publishes. On any error the
    /// transaction is rolled back and nothing of it is applied.
    ///
    /// # Errors
    /// [`Error::Conflict`] (retryable), [`Error::TransactionTimeout`], [`Error::TransactionClosed`],
    /// I/O errors.
    pub fn commit(&self) -> Result<()> {
        let mut st = lock(&self.inner)?;
        if !st.participants.is_empty() {
            drop(st);
            self.phase1_commit()?;
            return self.phase2_commit();
        }
        st.check_active()?;
        let r = commit::commit(&mut st);
        match r {
            Ok(()) => {
                st.finish(Status::Committed);
                run_hooks(&mut st);
            }
            Err(_) => st.finish(Status::RolledBack),
        }
        r
    }

    /// Enlists an external participant in this transaction's two-phase commit.
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn enlist(&self, p: impl Participant + 'static) -> Result<()> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        st.participants.push(Box::new(p));
        Ok(())
    }

    /// Runs `f` after the transaction commits (not on rollback).
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn on_commit(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        st.hooks.push(Hook(Box::new(f)));
        Ok(())
    }

    /// Phase 1 of a two-phase commit: validates the transaction and makes its changes durable
    /// in a prepare record without applying them, then prepares the enlisted participants.
    /// Afterwards the transaction takes no more operations; commits of other transactions that
    /// conflict with it are refused until [`Transaction::phase2_commit`] or
    /// [`Transaction::rollback`] decides it. If the process dies before the decision, the
    /// transaction is listed by [`Database::in_doubt`](crate::Database::in_doubt) on reopen.
    ///
    /// # Errors
    /// As [`Transaction::commit`]; a participant's prepare error rolls everything back.
    pub fn phase1_commit(&self) -> Result<()> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        let names = st.participants.iter().map(|p| p.name()).collect();
        if let Err(e) = commit::phase1(&mut st, names) {
            st.finish(Status::RolledBack);
            return Err(e);
        }
        st.status = Status::Prepared;
        let id = st.id;
        let mut failed = None;
        for p in &mut st.participants {
            if let Err(e) = p.prepare(id) {
                failed = Some(Error::Participant {
                    name: p.name(),
                    detail: format!("prepare failed: {e}"),
                });
                break;
            }
        }
        if let Some(e) = failed {
            // If even the abort cannot be recorded, the prepare record stays and the
            // transaction is listed as in doubt on reopen: say so.
            return Err(match abort(&mut st) {
                Ok(()) | Err(Error::Participant { .. }) => e,
                Err(ae) => Error::Participant {
                    name: "sop".into(),
                    detail: format!("{e}; recording the abort failed too ({ae}): it is in doubt"),
                },
            });
        }
        Ok(())
    }

    /// Phase 2: applies the prepared transaction (its decision record is its commit record),
    /// then commits the participants and runs the `on_commit` hooks.
    ///
    /// # Errors
    /// [`Error::TransactionClosed`] unless prepared; I/O errors; [`Error::Participant`] when a
    /// participant fails to commit (this transaction is committed regardless).
    pub fn phase2_commit(&self) -> Result<()> {
        let mut st = lock(&self.inner)?;
        if st.status != Status::Prepared {
            return Err(Error::TransactionClosed);
        }
        if let Err(e) = commit::phase2(&mut st) {
            // The prepare record stays: the transaction is in doubt until decided on reopen.
            st.finish(Status::RolledBack);
            return Err(e);
        }
        let failed = tell_participants(
            &mut st,
            "commit failed after the transaction committed",
            |p, id| p.commit(id),
        );
        st.finish(Status::Committed);
        run_hooks(&mut st);
        failed.map_or(Ok(()), Err)
    }

    /// Rolls back: discards every change (and, after phase 1, records the abort and rolls
    /// back the participants).
    ///
    /// # Errors
    /// [`Error::TransactionClosed`] when already finished.
    pub fn rollback(&self) -> Result<()> {
        let mut st = lock(&self.inner)?;
        match st.status {
            Status::Active => {
                let failed = tell_participants(&mut st, "rollback failed", |p, id| p.rollback(id));
                st.finish(Status::RolledBack);
                failed.map_or(Ok(()), Err)
            }
            Status::Prepared => abort(&mut st),
            _ => Err(Error::TransactionClosed),
        }
    }
}

/// Calls `op` on every participant (all of them, even after a failure); returns the first
/// failure as [`Error::Participant`].
fn tell_participants(
    st: &mut TxnState,
    what: &str,
    mut op: impl FnMut(&mut dyn Participant, u128) -> Result<()>,
) -> Option<Error> {
    let id = st.id;
    let mut failed = None;
    for p in &mut st.participants {
        if let Err(e) = op(p.as_mut(), id) {
            failed.get_or_insert(Error::Participant {
                name: p.name(),
                detail: format!("{what}: {e}"),
            });
        }
    }
    failed
}

fn run_hooks(st: &mut TxnState) {
    for h in std::mem::take(&mut st.hooks) {
        (h.0)();
    }
}

/// Aborts a prepared transaction: records the decision, rolls the participants back.
fn abort(st: &mut TxnState) -> Result<()> {
    let r = commit::abort_prepared(&st.shared, st.id);
    let failed = tell_participants(st, "rollback failed", |p, id| p.rollback(id));
    st.finish(Status::RolledBack);
    r?;
    failed.map_or(Ok(()), Err)
}

/// A prepared transaction whose decision was lost in a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    /// Its id.
    pub txn_id: u128,
    /// Names of its external participants.
    pub participants: Vec<String>,
    /// Stores it changes.
    pub stores: Vec<String>,
}

pub(crate) fn in_doubt(shared: &Shared) -> Result<Vec<InDoubt>> {
    let ctx = shared.commit_lock()?;
    let mut v: Vec<InDoubt> = ctx
        .prepared
        .values()
        .map(|p| InDoubt {
            txn_id: p.txn_id,
            participants: p.participants.clone(),
            stores: p.stores.iter().map(|s| s.name.clone()).collect(),
        })
        .collect();
    v.sort_by_key(|d| d.txn_id);
    Ok(v)
}

/// Decides an in-doubt transaction: `commit` applies its prepared changes, otherwise they are
/// discarded.
pub(crate) fn resolve(shared: &Arc<Shared>, txn_id: u128, commit: bool) -> Result<()> {
    let p = shared
        .commit_lock()?
        .prepared
        .get(&txn_id)
        .cloned()
        .ok_or_else(|| Error::InvalidArgument(format!("no in-doubt transaction {txn_id:032x}")))?;
    if !commit {
        return commit::abort_prepared(shared, txn_id);
    }
    let tx = Transaction::begin(
        Arc::clone(shared),
        TransactionMode::ForWriting,
        crate::options::DEFAULT_MAX_TXN_DURATION,
    )?;
    {
        let mut st = lock(&tx.inner)?;
        st.id = txn_id;
        let snapshot = Arc::clone(&st.snapshot);
        for ps in &p.stores {
            if ps.dropped {
                let id = st.store_id(&ps.name)?;
                if let Some(ts) = st.stores.get_mut(&id) {
                    ts.dropped = true;
                }
                continue;
            }
            let id = if ps.created {
                st.create_store(&ps.name, &ps.options)?
            } else {
                st.store_id(&ps.name)?
            };
            let ts = st
                .stores
                .get_mut(&id)
                .ok_or_else(|| Error::StoreNotFound(ps.name.clone()))?;
            prepared::apply(shared, ts, &snapshot, ps.changes.clone(), true)?;
            // Its writes go into the commit history, so transactions with older snapshots
            // that touched the same items conflict with this decision.
            ts.access = ps.access.clone();
            ts.count_read = ps.count_read;
        }
    }
    tx.commit()
}

/// A store's info; `reads_count` records the count as read (validated at commit).
pub(crate) fn info_of(st: &mut TxnState, id: StoreId, reads_count: bool) -> Result<StoreInfo> {
    let ts = st
        .stores
        .get_mut(&id)
        .ok_or_else(|| Error::StoreNotFound(format!("#{id}")))?;
    ts.count_read |= reads_count;
    Ok(StoreInfo {
        name: ts.meta.name.to_string(),
        options: (*ts.meta.options).clone(),
        count: ts.meta.count,
    })
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Ok(mut st) = self.inner.lock() {
            if st.status == Status::Prepared {
                let _ = abort(&mut st);
            }
            st.finish(Status::RolledBack);
        }
    }
}
