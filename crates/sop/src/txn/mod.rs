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
pub(crate) mod nodes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) use commit::{History, relocate};
pub(crate) use nodes::{Seen, TxnStore, load_node};

use crate::btree::{Order, Pos, Shape};
use crate::db::Shared;
use crate::error::{Error, Result};
use crate::fasthash::FastMap;
use crate::options::{StoreOptions, TransactionMode};
use crate::registry::LogicalId;
use crate::state::{DbState, StoreId, StoreMeta};
use crate::store::{Btree, RawBtree};
use crate::types::{Key, Value};
use access::Access;

/// Life cycle of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Active,
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
    pub stores: FastMap<StoreId, TxnStore>,
    pub names: HashMap<String, StoreId>,
    pub seen: FastMap<LogicalId, Seen>,
    pub cursors: Vec<CursorState>,
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

    /// The id of the named store as this transaction sees it, loading it on first use.
    pub fn store_id(&mut self, name: &str) -> Result<StoreId> {
        if let Some(id) = self.names.get(name) {
            if self.stores.get(id).is_some_and(|s| !s.dropped) {
                return Ok(*id);
            }
            return Err(Error::StoreNotFound(name.to_owned()));
        }
        let meta = self
            .snapshot
            .stores
            .get(name)
            .cloned()
            .ok_or_else(|| Error::StoreNotFound(name.to_owned()))?;
        let shape = self.shape_for(&meta.options)?;
        let ts = TxnStore {
            meta: (*meta).clone(),
            base: Some(Arc::clone(&meta)),
            shape,
            dirty: FastMap::default(),
            freed: Vec::new(),
            freed_blobs: Vec::new(),
            access: Access::default(),
            new_blobs: FastMap::default(),
            dropped: false,
            count_read: false,
            changes: 0,
        };
        self.names.insert(name.to_owned(), meta.id);
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
                    .map(|s| s.meta.options.clone())
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
                let id = self.shared.new_store_id();
                let ts = TxnStore {
                    meta: StoreMeta {
                        id,
                        name: name.to_owned(),
                        options: options.clone(),
                        root: 0,
                        count: 0,
                    },
                    base: None,
                    shape,
                    dirty: FastMap::default(),
                    freed: Vec::new(),
                    freed_blobs: Vec::new(),
                    access: Access::default(),
                    new_blobs: FastMap::default(),
                    dropped: false,
                    count_read: false,
                    changes: 0,
                };
                self.names.insert(name.to_owned(), id);
                self.stores.insert(id, ts);
                Ok(id)
            }
            Err(e) => Err(e),
        }
    }

    fn finish(&mut self, status: Status) {
        if self.status == Status::Active {
            self.status = status;
            self.shared.release_snapshot(self.snapshot.seq);
            self.stores.clear();
            self.seen.clear();
            self.cursors.clear();
        }
    }
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
        let snapshot = shared.take_snapshot()?;
        let id = (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(..));
        let st = TxnState {
            shared,
            mode,
            id,
            snapshot,
            started: Instant::now(),
            max,
            status: Status::Active,
            stores: FastMap::default(),
            names: HashMap::new(),
            seen: FastMap::default(),
            cursors: Vec::new(),
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
        let info = raw.info()?;
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
            .filter(|n| {
                !st.names
                    .get(*n)
                    .and_then(|id| st.stores.get(id))
                    .is_some_and(|s| s.dropped)
            })
            .cloned()
            .collect();
        for (n, id) in &st.names {
            if !st.snapshot.stores.contains_key(n) && st.stores.get(id).is_some_and(|s| !s.dropped)
            {
                names.push(n.clone());
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
        if let Some(ts) = st.stores.get_mut(&id) {
            ts.dropped = true;
            ts.dirty.clear();
            ts.new_blobs.clear();
            ts.changes += 1;
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
        info_of(&mut st, id)
    }

    /// Commits: validates, writes and makes durable, then publishes. On any error the
    /// transaction is rolled back and nothing of it is applied.
    ///
    /// # Errors
    /// [`Error::Conflict`] (retryable), [`Error::TransactionTimeout`], [`Error::TransactionClosed`],
    /// I/O errors.
    pub fn commit(&self) -> Result<()> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        let r = commit::commit(&mut st);
        match r {
            Ok(()) => st.finish(Status::Committed),
            Err(_) => st.finish(Status::RolledBack),
        }
        r
    }

    /// Rolls back: discards every change.
    ///
    /// # Errors
    /// [`Error::TransactionClosed`] when already finished.
    pub fn rollback(&self) -> Result<()> {
        let mut st = lock(&self.inner)?;
        st.check_active()?;
        st.finish(Status::RolledBack);
        Ok(())
    }
}

pub(crate) fn info_of(st: &mut TxnState, id: StoreId) -> Result<StoreInfo> {
    let ts = st
        .stores
        .get_mut(&id)
        .ok_or_else(|| Error::StoreNotFound(format!("#{id}")))?;
    ts.count_read = true;
    Ok(StoreInfo {
        name: ts.meta.name.clone(),
        options: ts.meta.options.clone(),
        count: ts.meta.count,
    })
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if let Ok(mut st) = self.inner.lock() {
            st.finish(Status::RolledBack);
        }
    }
}
