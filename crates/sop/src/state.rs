//! The committed state of a database: the catalog of stores and the registry.
//!
//! A [`DbState`] is immutable once published. Each commit produces the next one by applying a
//! [`CommitRecord`] to a clone (cheap: the registry is copy-on-write), and transactions read the
//! snapshot that was current when they began. Recovery rebuilds the state by loading the last
//! checkpoint and applying the commit records logged after it, with the same
//! [`DbState::apply`], so the in-memory path and the recovery path cannot disagree.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::options::StoreOptions;
use crate::registry::{Entry, LogicalId, Registry};

/// Numeric id of a store (never reused).
pub type StoreId = u32;

/// What the catalog knows of one store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreMeta {
    /// Store id.
    pub id: StoreId,
    /// Store name.
    pub name: Arc<str>,
    /// Options fixed at creation (shared: a transaction opening the store copies its meta,
    /// not the options' strings).
    pub options: Arc<StoreOptions>,
    /// Logical id of the root node, 0 while the store is empty.
    pub root: LogicalId,
    /// Number of items.
    pub count: u64,
}

/// A change to the catalog carried by a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// A store was created.
    Create(StoreMeta),
    /// A store was removed (its registry entries are removed by the same commit).
    Drop {
        /// The store.
        id: StoreId,
    },
    /// A store's root or count changed.
    Meta {
        /// The store.
        id: StoreId,
        /// New root.
        root: LogicalId,
        /// New item count.
        count: u64,
    },
}

/// The keys one commit wrote in one store. Commit records carry them in clustered mode, so
/// other processes can validate their transactions against this commit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WrittenKeys {
    /// The store.
    pub store: StoreId,
    /// The keys, sorted in the store's order.
    pub keys: Vec<Vec<u8>>,
    /// The item count changed.
    pub count_changed: bool,
}

/// The single record that makes a transaction durable and visible.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommitRecord {
    /// Commit sequence number: exactly one more than the previous commit's.
    pub seq: u64,
    /// Highest commit seq known durable when this record was written (tells a torn tail
    /// from corruption at recovery: a record claiming commit `s` durable proves that every byte
    /// written before commit `s`'s record was durable).
    pub durable: u64,
    /// The id of the prepared transaction this commit decides (two-phase commit); 0 for
    /// any other commit (a transaction's random id is never 0).
    pub txn_id: u128,
    /// The engine's own commit that moves records to compact a segment (no data changes).
    pub housekeeping: bool,
    /// High-water mark of logical ids allocated so far.
    pub next_logical: u64,
    /// High-water mark of item id counters allocated so far.
    pub next_item: u64,
    /// Next store id.
    pub next_store: StoreId,
    /// Catalog changes.
    pub store_ops: Vec<StoreOp>,
    /// Registry changes; an empty entry (version 0) removes the id.
    pub updates: Vec<(LogicalId, Entry)>,
    /// Keys written (clustered mode only; empty otherwise).
    pub writes: Vec<WrittenKeys>,
}

/// The catalog and registry as of one commit.
#[derive(Debug, Clone, Default)]
pub struct DbState {
    /// Sequence number of the last commit applied.
    pub seq: u64,
    /// Stores by name.
    pub stores: BTreeMap<Arc<str>, Arc<StoreMeta>>,
    /// Logical id -> location and version.
    pub registry: Registry,
    /// Allocation high-water marks.
    pub next_logical: u64,
    /// See [`CommitRecord::next_item`].
    pub next_item: u64,
    /// See [`CommitRecord::next_store`].
    pub next_store: StoreId,
}

impl DbState {
    /// An empty database.
    #[must_use]
    pub fn new() -> Self {
        DbState {
            next_logical: 1,
            next_item: 1,
            next_store: 1,
            ..Self::default()
        }
    }

    /// The store with this id.
    #[must_use]
    pub fn store_by_id(&self, id: StoreId) -> Option<&Arc<StoreMeta>> {
        self.stores.values().find(|m| m.id == id)
    }

    /// Applies a commit. The caller has checked `rec.seq == self.seq + 1`. Returns the
    /// registry entries the commit replaced or removed (their space becomes garbage).
    pub fn apply(&mut self, rec: &CommitRecord) -> Vec<Entry> {
        let mut replaced = Vec::new();
        self.apply_into(rec, &mut replaced);
        replaced
    }

    /// [`DbState::apply`], appending the replaced entries to `replaced`.
    pub fn apply_into(&mut self, rec: &CommitRecord, replaced: &mut Vec<Entry>) {
        for op in &rec.store_ops {
            match op {
                StoreOp::Create(meta) => {
                    self.stores
                        .insert(meta.name.clone(), Arc::new(meta.clone()));
                }
                StoreOp::Drop { id } => {
                    self.stores.retain(|_, m| m.id != *id);
                }
                StoreOp::Meta { id, root, count } => {
                    if let Some(m) = self.stores.values_mut().find(|m| m.id == *id) {
                        let m = Arc::make_mut(m);
                        m.root = *root;
                        m.count = *count;
                    }
                }
            }
        }
        for (id, entry) in &rec.updates {
            if let Some(old) = self.registry.get(*id) {
                replaced.push(*old);
            }
            if entry.is_empty() {
                self.registry.remove(*id);
            } else {
                self.registry.set(*id, *entry);
            }
        }
        self.seq = rec.seq;
        self.next_logical = self.next_logical.max(rec.next_logical);
        self.next_item = self.next_item.max(rec.next_item);
        self.next_store = self.next_store.max(rec.next_store);
    }
}
