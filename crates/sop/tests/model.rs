#![allow(clippy::unwrap_used)]
//! Model-based property test of the store API.
//!
//! Random sequences of every store operation (through two [`RawBtree`] handles of one store,
//! each with its own cursor), plus commit, rollback, dropping a transaction, reopening the
//! database (recovery), checkpoints, snapshot readers, a second store created and removed in
//! the transaction and other transactions committing to a third store meanwhile, run against
//! the engine and against a model built on [`BTreeMap`]. Every result and cursor position is
//! compared; count and contents after every step; after every commit, rollback and reopen the
//! committed contents are read back in a fresh `ForReading` transaction and
//! `Database::verify` must report no problem.
//!
//! Each case draws the store's options: unique keys or duplicates (one test each), every
//! `ValuePlacement`, `slot_length` 2, 4 or 8 (so nodes split and merge all the time), leaf load
//! balancing on or off, durability and node cache size. Segments and the checkpoint threshold
//! are the smallest allowed (64 KiB), so segments roll, get compacted and deleted.
//!
//! Environment: `SOP_MODEL_CASES` cases per test (default 96), `SOP_MODEL_OPS` maximum
//! operations per case (default 150); see [`known_bugs`] for `SOP_MODEL_AVOID_FIXED`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Bound;

use anyhow::{Context, Result, anyhow, bail, ensure};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError};
use sop::{
    Database, DatabaseOptions, Durability, Error, ItemId, RawBtree, RawItem, StoreOptions,
    Transaction, TransactionMode, ValuePlacement,
};

const STORE: &str = "model";
/// A second store, created and removed by the operations.
const OTHER: &str = "other";
/// A third store, changed by other transactions committed while the writing one runs.
const SIDE: &str = "side";
/// Store handles (cursors) used at once in the writing transaction.
const HANDLES: usize = 2;

// ---------------------------------------------------------------------------------------------
// Generated input
// ---------------------------------------------------------------------------------------------

/// A key: 0 to 2 bytes from an eight-letter alphabet, so collisions and duplicates are frequent,
/// sometimes a long one.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct K(Vec<u8>);

impl fmt::Debug for K {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// A value: usually a few bytes, sometimes 1 to 4 KB.
#[derive(Clone, PartialEq, Eq)]
struct V(Vec<u8>);

impl fmt::Debug for V {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= 16 {
            write!(f, "{:?}", self.0)
        } else {
            write!(f, "<{} bytes from {}>", self.0.len(), self.0[0])
        }
    }
}

fn key() -> impl Strategy<Value = K> {
    prop_oneof![
        1 => Just(K(Vec::new())),
        8 => vec(b'a'..=b'h', 1..=2).prop_map(K),
        // Longer than the engine's inline key buffer (22 bytes), interleaved with the short ones.
        1 => (b'a'..=b'h', b'a'..=b'b', prop_oneof![Just(22usize), Just(23), Just(40)])
            .prop_map(|(c, d, n)| {
                let mut k = vec![d; n];
                k[0] = c;
                K(k)
            }),
    ]
}

fn value() -> impl Strategy<Value = V> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..12).prop_map(V),
        1 => (any::<u8>(), 1024..4096usize).prop_map(|(b, n)| V((0..n)
            .map(|i| b.wrapping_add((i % 251) as u8))
            .collect())),
    ]
}

fn bound() -> impl Strategy<Value = Bound<K>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => key().prop_map(Bound::Included),
        2 => key().prop_map(Bound::Excluded),
    ]
}

/// How `find_with_id` picks its target.
#[derive(Debug, Clone)]
enum IdPick {
    /// The key and id of an existing item (the `pick`-th).
    Exact,
    /// The id of an existing item with the generated key.
    OtherKey,
    /// A random id.
    Random(u128),
    Max,
    Zero,
}

/// Order of `next` (true) and `next_back` (false) calls on a range.
#[derive(Debug, Clone)]
enum Dir {
    Forward,
    Reverse,
    Mixed(Vec<bool>),
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize, K, V),
    /// Many `Add`s.
    AddMany(usize, Vec<(K, V)>),
    AddIfNotExist(usize, K, V),
    Upsert(usize, K, V),
    Update(usize, K, V),
    /// `update_key(key, new)`: the same key bytes when `None`, else other bytes (refused).
    UpdateKey(usize, K, Option<K>),
    Remove(usize, K),
    Find(usize, K),
    FindWithId(usize, K, usize, IdPick),
    FindDesc(usize, K),
    First(usize),
    Last(usize),
    Next(usize),
    Previous(usize),
    /// `first` + `next` to the end (or `last` + `previous`), checking every item.
    Walk(usize, bool),
    UpdateCurrentValue(usize, V),
    UpdateCurrentKey(usize, Option<K>),
    UpdateCurrentItem(usize, Option<K>, V),
    RemoveCurrent(usize),
    /// Removes the item under this handle's cursor through the other handle
    /// (`find_with_id` + `remove_current_item`), leaving this cursor on a removed item.
    RemoveUnder(usize),
    /// `find` then `remove_current_item` repeated.
    Sweep(usize, K, usize),
    /// `current_key`, `current_value`, `current_item`.
    Current(usize),
    Get(K),
    Range(Bound<K>, Bound<K>, Dir),
    /// Takes some items of a range (forwards or backwards), changes the store, then reads the
    /// rest of the range: it goes on after the last item it returned, in the changed store.
    RangeThen(Bound<K>, Bound<K>, bool, usize, Box<Op>),
    /// `upsert` into a second store, created in the transaction if missing.
    Other(K, V),
    /// Removes the second store.
    OtherRemove,
    /// Another writing transaction `upsert`s into a third store and commits while the main one
    /// runs (which still commits: it does not touch that store, unless `SideRead`).
    Side(K, V),
    /// The writing transaction reads the third store (then side commits make it conflict).
    SideRead,
    Commit,
    Rollback,
    DropTxn,
    Reopen,
    Checkpoint,
    /// Begins a read-only transaction (ForReading or NoCheck) that keeps its snapshot.
    ReaderBegin(bool),
    /// Checks the reader still sees the committed state as of its begin.
    ReaderCheck,
}

/// Operations that change the store, run in the middle of a range iteration.
fn change() -> impl Strategy<Value = Op> {
    let h = 0..HANDLES;
    prop_oneof![
        (h.clone(), key(), value()).prop_map(|(h, k, v)| Op::Add(h, k, v)),
        (h.clone(), vec((key(), value()), 1..8)).prop_map(|(h, kv)| Op::AddMany(h, kv)),
        (h.clone(), key(), value()).prop_map(|(h, k, v)| Op::Upsert(h, k, v)),
        (h.clone(), key()).prop_map(|(h, k)| Op::Remove(h, k)),
        (h.clone(), key(), 1..8usize).prop_map(|(h, k, n)| Op::Sweep(h, k, n)),
        (h.clone(), value()).prop_map(|(h, v)| Op::UpdateCurrentValue(h, v)),
        h.prop_map(Op::RemoveCurrent),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..HANDLES;
    let kv = |f: fn(usize, K, V) -> Op| {
        (0..HANDLES, key(), value()).prop_map(move |(h, k, v)| f(h, k, v))
    };
    prop_oneof![
        // Changes by key.
        10 => kv(Op::Add),
        2 => (h.clone(), vec((key(), value()), 1..40)).prop_map(|(h, kv)| Op::AddMany(h, kv)),
        3 => kv(Op::AddIfNotExist),
        4 => kv(Op::Upsert),
        4 => kv(Op::Update),
        1 => (h.clone(), key(), proptest::option::of(key()))
            .prop_map(|(h, k, n)| Op::UpdateKey(h, k, n)),
        5 => (h.clone(), key()).prop_map(|(h, k)| Op::Remove(h, k)),
        // The cursor.
        4 => (h.clone(), key()).prop_map(|(h, k)| Op::Find(h, k)),
        3 => (
            h.clone(),
            key(),
            any::<usize>(),
            prop_oneof![
                4 => Just(IdPick::Exact),
                2 => Just(IdPick::OtherKey),
                1 => any::<u128>().prop_map(IdPick::Random),
                1 => Just(IdPick::Max),
                1 => Just(IdPick::Zero),
            ]
        )
            .prop_map(|(h, k, i, p)| Op::FindWithId(h, k, i, p)),
        3 => (h.clone(), key()).prop_map(|(h, k)| Op::FindDesc(h, k)),
        2 => h.clone().prop_map(Op::First),
        2 => h.clone().prop_map(Op::Last),
        5 => h.clone().prop_map(Op::Next),
        5 => h.clone().prop_map(Op::Previous),
        1 => (h.clone(), any::<bool>()).prop_map(|(h, f)| Op::Walk(h, f)),
        2 => h.clone().prop_map(Op::Current),
        // Changes under the cursor.
        3 => (h.clone(), value()).prop_map(|(h, v)| Op::UpdateCurrentValue(h, v)),
        1 => (h.clone(), proptest::option::weighted(0.3, key()))
            .prop_map(|(h, k)| Op::UpdateCurrentKey(h, k)),
        1 => (h.clone(), proptest::option::weighted(0.3, key()), value())
            .prop_map(|(h, k, v)| Op::UpdateCurrentItem(h, k, v)),
        4 => h.clone().prop_map(Op::RemoveCurrent),
        2 => h.clone().prop_map(Op::RemoveUnder),
        1 => (h, key(), 1..20usize).prop_map(|(h, k, n)| Op::Sweep(h, k, n)),
        // Reads without the cursor.
        3 => key().prop_map(Op::Get),
        3 => (
            bound(),
            bound(),
            prop_oneof![
                2 => Just(Dir::Forward),
                2 => Just(Dir::Reverse),
                1 => vec(any::<bool>(), 0..24).prop_map(Dir::Mixed),
            ]
        )
            .prop_map(|(lo, hi, d)| Op::Range(lo, hi, d)),
        2 => (bound(), bound(), any::<bool>(), 0..10usize, change())
            .prop_map(|(lo, hi, f, n, c)| Op::RangeThen(lo, hi, f, n, Box::new(c))),
        // Other stores and transactions.
        2 => (key(), value()).prop_map(|(k, v)| Op::Other(k, v)),
        1 => Just(Op::OtherRemove),
        2 => (key(), value()).prop_map(|(k, v)| Op::Side(k, v)),
        1 => Just(Op::SideRead),
        1 => any::<bool>().prop_map(Op::ReaderBegin),
        1 => Just(Op::ReaderCheck),
        // Ends of transactions, the database.
        3 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::DropTxn),
        1 => Just(Op::Reopen),
        1 => Just(Op::Checkpoint),
    ]
}

/// Store and database options of one case.
#[derive(Debug, Clone)]
struct Cfg {
    unique: bool,
    slot_length: usize,
    placement: ValuePlacement,
    leaf_load_balancing: bool,
    durability: Durability,
    node_cache_bytes: u64,
}

fn cfg(unique: bool) -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![Just(2usize), Just(4), Just(8)],
        prop_oneof![
            Just(ValuePlacement::InNode),
            Just(ValuePlacement::SeparateBlob),
            Just(ValuePlacement::ActivelyPersisted),
        ],
        any::<bool>(),
        prop_oneof![3 => Just(Durability::None), 1 => Just(Durability::Immediate)],
        prop_oneof![Just(0u64), Just(16 << 10), Just(256 << 20)],
    )
        .prop_map(
            move |(slot_length, placement, leaf_load_balancing, durability, node_cache_bytes)| {
                Cfg {
                    unique,
                    slot_length,
                    placement,
                    leaf_load_balancing,
                    durability,
                    node_cache_bytes,
                }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// An item as the model sees it.
#[derive(Clone, PartialEq, Eq)]
struct Item {
    key: Vec<u8>,
    id: ItemId,
    value: Vec<u8>,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "({:?}, #{:x}, {:?})",
            K(self.key.clone()),
            self.id >> 64,
            V(self.value.clone())
        )
    }
}

impl From<RawItem> for Item {
    fn from(i: RawItem) -> Self {
        Item {
            key: i.key,
            id: i.id,
            value: i.value,
        }
    }
}

/// A cursor: the (key, id) of its current item, as the engine keeps it.
type Cursor = Option<(Vec<u8>, ItemId)>;

#[derive(Debug, Clone, Copy)]
enum Seek {
    Ge,
    Gt,
    Le,
    Lt,
}

/// The contents of the store: key to its items in store order (newest, i.e. highest id, first).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    unique: bool,
    map: BTreeMap<Vec<u8>, Vec<(ItemId, Vec<u8>)>>,
    /// The transaction wrote something (even if it changed nothing).
    wrote: bool,
}

impl Model {
    fn new(unique: bool) -> Self {
        Model {
            unique,
            map: BTreeMap::new(),
            wrote: false,
        }
    }

    fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    fn items(&self) -> Vec<Item> {
        self.map
            .iter()
            .flat_map(|(k, l)| {
                l.iter().map(|(id, v)| Item {
                    key: k.clone(),
                    id: *id,
                    value: v.clone(),
                })
            })
            .collect()
    }

    /// The store's full order: key, then (duplicates only) id descending.
    fn cmp(&self, ak: &[u8], aid: ItemId, bk: &[u8], bid: ItemId) -> std::cmp::Ordering {
        match ak.cmp(bk) {
            std::cmp::Ordering::Equal if !self.unique => bid.cmp(&aid),
            o => o,
        }
    }

    fn seek(&self, key: &[u8], id: ItemId, how: Seek) -> Option<Item> {
        use std::cmp::Ordering::{Greater, Less};
        let items = self.items();
        let c = |i: &Item| self.cmp(&i.key, i.id, key, id);
        match how {
            Seek::Ge => items.into_iter().find(|i| c(i) != Less),
            Seek::Gt => items.into_iter().find(|i| c(i) == Greater),
            Seek::Le => items.into_iter().rev().find(|i| c(i) != Greater),
            Seek::Lt => items.into_iter().rev().find(|i| c(i) == Less),
        }
    }

    fn first(&self) -> Option<Item> {
        self.items().into_iter().next()
    }

    fn last(&self) -> Option<Item> {
        self.items().pop()
    }

    /// The item a cursor is on (in unique stores ids are never compared, so a cursor follows
    /// its key).
    fn resolve(&self, cur: &Cursor) -> Option<Item> {
        let (k, id) = cur.as_ref()?;
        self.seek(k, *id, Seek::Ge)
            .filter(|i| self.cmp(&i.key, i.id, k, *id) == std::cmp::Ordering::Equal)
    }

    fn first_with(&self, key: &[u8]) -> Option<Item> {
        let (id, v) = self.map.get(key)?.first()?;
        Some(Item {
            key: key.to_vec(),
            id: *id,
            value: v.clone(),
        })
    }

    fn has_id(&self, id: ItemId) -> bool {
        self.map.values().flatten().any(|(i, _)| *i == id)
    }

    fn insert(&mut self, key: &[u8], id: ItemId, value: &[u8]) {
        self.wrote = true;
        self.map
            .entry(key.to_vec())
            .or_default()
            .insert(0, (id, value.to_vec()));
    }

    fn set_value(&mut self, key: &[u8], id: ItemId, value: &[u8]) {
        self.wrote = true;
        let it = self
            .map
            .get_mut(key)
            .and_then(|l| l.iter_mut().find(|(i, _)| *i == id))
            .expect("model: set_value of a missing item");
        it.1 = value.to_vec();
    }

    fn remove(&mut self, key: &[u8], id: ItemId) {
        self.wrote = true;
        let l = self
            .map
            .get_mut(key)
            .expect("model: remove of a missing key");
        l.retain(|(i, _)| *i != id);
        if l.is_empty() {
            self.map.remove(key);
        }
    }

    /// `find`: the first item with a key >= `key`, else the last item.
    fn find(&self, key: &[u8]) -> (bool, Cursor) {
        let pos = self
            .seek(key, ItemId::MAX, Seek::Ge)
            .or_else(|| self.last());
        let found = pos.as_ref().is_some_and(|i| i.key == key);
        (found, pos.map(|i| (i.key, i.id)))
    }

    fn in_range(key: &[u8], lo: &Bound<K>, hi: &Bound<K>) -> bool {
        let above = match lo {
            Bound::Included(l) => key >= l.0.as_slice(),
            Bound::Excluded(l) => key > l.0.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match hi {
            Bound::Included(h) => key <= h.0.as_slice(),
            Bound::Excluded(h) => key < h.0.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }
}

fn at(i: Option<Item>) -> Cursor {
    i.map(|i| (i.key, i.id))
}

// ---------------------------------------------------------------------------------------------
// The harness: engine and model side by side
// ---------------------------------------------------------------------------------------------

struct Reader {
    tx: Transaction,
    store: RawBtree,
    seen: Model,
}

struct Harness {
    cfg: Cfg,
    dir: tempfile::TempDir,
    /// Handles first, then the transaction, then the database: drop order matters for reopen.
    h: Vec<RawBtree>,
    tx: Option<Transaction>,
    reader: Option<Reader>,
    db: Option<Database>,
    committed: Model,
    work: Model,
    cur: [Cursor; HANDLES],
    /// The second store (unique keys), `None` while it does not exist.
    other_committed: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    other_work: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The second store was removed in the writing transaction.
    other_removed: bool,
    /// The third store, committed by side transactions.
    side: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The third store as the writing transaction sees it (as of its begin).
    side_seen: Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The writing transaction read the third store...
    side_read: bool,
    /// ... and side transactions committed changes to it since it began: if it wrote anything
    /// its commit must fail with a conflict (one that wrote nothing has nothing to validate).
    side_changed: bool,
    /// The writing transaction wrote values of a store with actively persisted values.
    active_pending: bool,
}

fn bytes(b: &Bound<K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.0.clone()),
        Bound::Excluded(k) => Bound::Excluded(k.0.clone()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn collect(it: impl Iterator<Item = sop::Result<RawItem>>) -> Result<Vec<Item>> {
    it.map(|r| r.map(Item::from).map_err(anyhow::Error::from))
        .collect()
}

impl Harness {
    fn new(cfg: Cfg) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let unique = cfg.unique;
        let mut hs = Harness {
            cfg,
            dir,
            h: Vec::new(),
            tx: None,
            reader: None,
            db: None,
            committed: Model::new(unique),
            work: Model::new(unique),
            cur: Default::default(),
            other_committed: None,
            other_work: None,
            other_removed: false,
            side: None,
            side_seen: None,
            side_read: false,
            side_changed: false,
            active_pending: false,
        };
        hs.open()?;
        let db = hs.db()?;
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.new_raw_btree(STORE, hs.store_options())?;
        ensure!(s.count()? == 0);
        tx.commit()?;
        hs.begin()?;
        Ok(hs)
    }

    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            slot_length: self.cfg.slot_length,
            is_unique: self.cfg.unique,
            value_placement: self.cfg.placement,
            leaf_load_balancing: self.cfg.leaf_load_balancing,
            ..StoreOptions::default()
        }
    }

    /// The second store's options: other than the first store's.
    fn other_options(&self) -> StoreOptions {
        StoreOptions {
            slot_length: 4,
            is_unique: true,
            value_placement: match self.cfg.placement {
                ValuePlacement::InNode => ValuePlacement::SeparateBlob,
                ValuePlacement::SeparateBlob => ValuePlacement::ActivelyPersisted,
                ValuePlacement::ActivelyPersisted => ValuePlacement::InNode,
            },
            leaf_load_balancing: !self.cfg.leaf_load_balancing,
            ..StoreOptions::default()
        }
    }

    fn store_names(other: bool, side: bool) -> Vec<String> {
        let mut names = vec![STORE.to_owned()];
        if other {
            names.push(OTHER.to_owned());
        }
        if side {
            names.push(SIDE.to_owned());
        }
        names.sort();
        names
    }

    /// Compares a unique-key store with its model (`None`: the store must not exist).
    fn check_map(
        what: &str,
        tx: &Transaction,
        name: &str,
        model: Option<&BTreeMap<Vec<u8>, Vec<u8>>>,
    ) -> Result<usize> {
        let Some(m) = model else {
            ensure!(
                matches!(tx.open_raw_btree(name), Err(Error::StoreNotFound(_))),
                "{what}: {name} exists"
            );
            return Ok(0);
        };
        let o = tx.open_raw_btree(name)?;
        let got: Vec<(Vec<u8>, Vec<u8>)> = collect(o.iter())?
            .into_iter()
            .map(|i| (i.key, i.value))
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        ensure!(got == want, "{what}: contents of {name}");
        ensure!(o.count()? == want.len() as u64, "{what}: count of {name}");
        Ok(want.len())
    }

    fn open(&mut self) -> Result<()> {
        let opts = DatabaseOptions {
            durability: self.cfg.durability,
            node_cache_bytes: self.cfg.node_cache_bytes,
            // The smallest allowed, so segments roll over and checkpoints run on their own.
            segment_bytes: 64 << 10,
            checkpoint_bytes: 64 << 10,
            ..DatabaseOptions::new(self.dir.path())
        };
        self.db = Some(Database::open(opts).context("open")?);
        Ok(())
    }

    fn db(&self) -> Result<Database> {
        self.db.clone().ok_or_else(|| anyhow!("no database"))
    }

    fn begin(&mut self) -> Result<()> {
        let tx = self.db()?.begin(TransactionMode::ForWriting)?;
        self.h = (0..HANDLES)
            .map(|i| {
                if i == 0 {
                    tx.open_raw_btree(STORE)
                } else {
                    // Creating an existing store with the same options opens it.
                    tx.new_raw_btree(STORE, self.store_options())
                }
            })
            .collect::<sop::Result<_>>()?;
        self.tx = Some(tx);
        self.work = self.committed.clone();
        self.work.wrote = false;
        self.other_work = self.other_committed.clone();
        self.other_removed = false;
        self.side_seen = self.side.clone();
        self.side_read = false;
        self.side_changed = false;
        self.active_pending = false;
        self.cur = Default::default();
        Ok(())
    }

    /// Ends the writing transaction (already committed or rolled back, or dropped here).
    fn end(&mut self) {
        self.h.clear();
        self.tx = None;
    }

    /// Reads the committed state in a fresh read-only transaction and verifies the database.
    fn check_committed(&self, what: &str) -> Result<()> {
        let db = self.db()?;
        let tx = db.begin(TransactionMode::ForReading)?;
        let s = tx.open_raw_btree(STORE)?;
        let want = self.committed.items();
        let got = collect(s.iter())?;
        ensure!(
            got == want,
            "{what}: committed contents\n got {got:?}\nwant {want:?}"
        );
        ensure!(s.count()? == want.len() as u64, "{what}: committed count");
        let back = collect(s.iter().rev())?;
        ensure!(
            back.iter().rev().eq(want.iter()),
            "{what}: committed contents backwards\n got {back:?}\nwant {want:?}"
        );
        let names = Self::store_names(self.other_committed.is_some(), self.side.is_some());
        ensure!(tx.stores()? == names, "{what}: stores {:?}", tx.stores()?);
        let mut db_names = db.store_names()?;
        db_names.sort();
        ensure!(db_names == names, "{what}: database stores {db_names:?}");
        let mut items = want.len();
        items += Self::check_map(what, &tx, OTHER, self.other_committed.as_ref())?;
        items += Self::check_map(what, &tx, SIDE, self.side.as_ref())?;
        drop(s);
        drop(tx);
        let report = db.verify()?;
        ensure!(report.is_ok(), "{what}: verify: {report:?}");
        ensure!(
            report.items == items as u64,
            "{what}: verify counted {} items, want {items}",
            report.items,
        );
        Ok(())
    }

    /// Checks what is compared after every step.
    fn check_step(&self) -> Result<()> {
        let s = &self.h[0];
        let n = self.work.len() as u64;
        ensure!(s.count()? == n, "count {} want {n}", s.count()?);
        let info = self.tx()?.store_info(STORE)?;
        ensure!(info.count == n, "store_info count {} want {n}", info.count);
        ensure!(
            info.options == self.store_options() && info.name == STORE,
            "store_info {info:?}"
        );
        ensure!(s.is_unique()? == self.cfg.unique, "is_unique");
        let names = Self::store_names(self.other_work.is_some(), self.side_seen.is_some());
        let got = self.tx()?.stores()?;
        ensure!(got == names, "stores {got:?} want {names:?}");
        let got = collect(self.h[1].iter())?;
        let want = self.work.items();
        ensure!(got == want, "contents\n got {got:?}\nwant {want:?}");
        Ok(())
    }

    fn tx(&self) -> Result<&Transaction> {
        self.tx.as_ref().ok_or_else(|| anyhow!("no transaction"))
    }

    /// Compares the engine's current item of handle `h` with the model's cursor.
    fn check_cursor(&self, h: usize) -> Result<()> {
        let s = &self.h[h];
        let want = self.work.resolve(&self.cur[h]);
        let got_key = s.current_key()?;
        ensure!(
            got_key == want.as_ref().map(|i| (i.key.clone(), i.id)),
            "handle {h}: current_key {:?} want {want:?} (cursor {:?})",
            got_key.map(|(k, id)| (K(k), id >> 64)),
            self.cur[h].as_ref().map(|(k, id)| (K(k.clone()), id >> 64))
        );
        let got = s.current_item()?.map(Item::from);
        ensure!(
            got == want,
            "handle {h}: current_item {got:?} want {want:?}"
        );
        let got_v = s.current_value()?;
        ensure!(
            got_v == want.as_ref().map(|i| i.value.clone()),
            "handle {h}: current_value"
        );
        Ok(())
    }

    /// After an add: learns the new item's id from the engine (the one id under `key` the model
    /// does not know), checks it is fresh and newest, and adds the item to the model.
    fn learn_added(&mut self, h: usize, key: &[u8], value: &[u8]) -> Result<()> {
        let k = key.to_vec();
        let got = collect(self.h[h].range(k.clone()..=k))?;
        let known: Vec<ItemId> = self
            .work
            .map
            .get(key)
            .map(|l| l.iter().map(|(i, _)| *i).collect())
            .unwrap_or_default();
        let new: Vec<&Item> = got.iter().filter(|i| !known.contains(&i.id)).collect();
        ensure!(
            new.len() == 1,
            "after add of {:?}: items with the key {got:?}, known ids {known:x?}",
            K(key.to_vec())
        );
        let id = new[0].id;
        ensure!(!self.work.has_id(id), "added item id {id:x} is not fresh");
        ensure!(
            known.iter().all(|k| *k < id),
            "added duplicate id {id:x} is not greater than the existing {known:x?} (newest first)"
        );
        self.work.insert(key, id, value);
        self.cur[h] = Some((key.to_vec(), id));
        let want: Vec<Item> = self
            .work
            .items()
            .into_iter()
            .filter(|i| i.key == key)
            .collect();
        ensure!(
            got == want,
            "items of the added key\n got {got:?}\nwant {want:?}"
        );
        Ok(())
    }

    fn expect_bool(what: &str, got: bool, want: bool) -> Result<()> {
        ensure!(got == want, "{what} returned {got}, want {want}");
        Ok(())
    }

    /// `add`, through the model: returns what the engine must return.
    fn model_add(&mut self, h: usize, key: &K, value: &V, got: bool) -> Result<()> {
        if self.work.unique && self.work.map.contains_key(&key.0) {
            Self::expect_bool("add", got, false)?;
            self.cur[h] = at(self.work.first_with(&key.0));
        } else {
            Self::expect_bool("add", got, true)?;
            self.learn_added(h, &key.0, &value.0)?;
        }
        Ok(())
    }

    /// Positions handle `h` like `find` and returns the item found with exactly `key`.
    fn model_find(&mut self, h: usize, key: &[u8]) -> Option<Item> {
        let (found, cur) = self.work.find(key);
        self.cur[h] = cur;
        if found {
            self.work.resolve(&self.cur[h])
        } else {
            None
        }
    }

    /// Removes the item under the model cursor; the cursor moves to the following item.
    fn model_remove_current(&mut self, h: usize, item: &Item) {
        self.work.remove(&item.key, item.id);
        self.cur[h] = at(self.work.seek(&item.key, item.id, Seek::Gt));
    }

    fn step(&mut self, op: &Op) -> Result<()> {
        let active = |p| p == ValuePlacement::ActivelyPersisted;
        let writes_value = matches!(
            op,
            Op::Add(..)
                | Op::AddIfNotExist(..)
                | Op::Upsert(..)
                | Op::Update(..)
                | Op::UpdateCurrentValue(..)
                | Op::UpdateCurrentItem(..)
        );
        if (writes_value && active(self.cfg.placement))
            || (matches!(op, Op::Other(..)) && active(self.other_options().value_placement))
        {
            self.active_pending = true;
        }
        match op {
            Op::Add(h, k, v) => {
                let got = self.h[*h].add(&k.0, &v.0)?;
                self.model_add(*h, k, v, got)?;
            }
            Op::AddMany(h, kvs) => {
                for (k, v) in kvs {
                    self.step(&Op::Add(*h, k.clone(), v.clone()))?;
                }
            }
            Op::RemoveUnder(h) => {
                let o = (h + 1) % HANDLES;
                if let Some(i) = self.work.resolve(&self.cur[*h]) {
                    let found = self.h[o].find_with_id(&i.key, i.id)?;
                    Self::expect_bool("find_with_id", found, true)?;
                    self.cur[o] = Some((i.key, i.id));
                    self.step(&Op::RemoveCurrent(o))?;
                }
            }
            Op::Sweep(h, k, n) => {
                self.step(&Op::Find(*h, k.clone()))?;
                for _ in 0..*n {
                    self.step(&Op::RemoveCurrent(*h))?;
                    self.check_cursor(*h)?;
                }
            }
            Op::RangeThen(lo, hi, forward, n, change) => {
                self.range_then(lo, hi, *forward, *n, change)?
            }
            Op::Other(k, v) if self.other_removed && !known_bugs() => {
                // Known bug 1 (see `known_bugs`): re-creating a store removed in the same
                // transaction makes the commit fail with a false conflict.
                let _ = (k, v);
            }
            Op::Other(k, v) => {
                let opts = self.other_options();
                let o = self.tx()?.new_raw_btree(OTHER, opts)?;
                ensure!(o.upsert(&k.0, &v.0)?, "upsert into {OTHER}");
                self.work.wrote = true;
                let m = self.other_work.get_or_insert_default();
                m.insert(k.0.clone(), v.0.clone());
                ensure!(o.count()? == m.len() as u64, "count of {OTHER}");
                ensure!(o.get(&k.0)? == Some(v.0.clone()), "get from {OTHER}");
            }
            Op::OtherRemove => {
                let got = self.tx()?.remove_store(OTHER)?;
                Self::expect_bool("remove_store", got, self.other_work.is_some())?;
                self.work.wrote |= got;
                self.other_work = None;
                self.other_removed = true;
                ensure!(
                    !self.tx()?.store_exists(OTHER)?,
                    "{OTHER} exists after remove_store"
                );
            }
            Op::Side(k, v) if self.active_pending && !known_bugs() => {
                // Known bug 3: another transaction's commit can get the log segments holding
                // this transaction's actively persisted values deleted.
                let _ = (k, v);
            }
            Op::Side(k, v) => {
                let tx = self.db()?.begin(TransactionMode::ForWriting)?;
                let opts = StoreOptions {
                    slot_length: 4,
                    ..self.other_options()
                };
                let s = tx.new_raw_btree(SIDE, opts)?;
                ensure!(s.upsert(&k.0, &v.0)?, "upsert into {SIDE}");
                tx.commit().context("side commit")?;
                self.side
                    .get_or_insert_default()
                    .insert(k.0.clone(), v.0.clone());
                self.side_changed = true;
                let tx = self.db()?.begin(TransactionMode::ForReading)?;
                Self::check_map("after a side commit", &tx, SIDE, self.side.as_ref())?;
            }
            Op::SideRead => {
                Self::check_map(
                    "the writing transaction's snapshot",
                    self.tx()?,
                    SIDE,
                    self.side_seen.as_ref(),
                )?;
                self.side_read |= self.side_seen.is_some();
            }
            Op::AddIfNotExist(h, k, v) => {
                let got = self.h[*h].add_if_not_exist(&k.0, &v.0)?;
                if self.work.map.contains_key(&k.0) {
                    Self::expect_bool("add_if_not_exist", got, false)?;
                    self.cur[*h] = at(self.work.first_with(&k.0));
                } else {
                    Self::expect_bool("add_if_not_exist", got, true)?;
                    self.learn_added(*h, &k.0, &v.0)?;
                }
            }
            Op::Upsert(h, k, v) => {
                let got = self.h[*h].upsert(&k.0, &v.0)?;
                Self::expect_bool("upsert", got, true)?;
                match self.model_find(*h, &k.0) {
                    Some(i) => self.work.set_value(&i.key, i.id, &v.0),
                    None => self.learn_added(*h, &k.0, &v.0)?,
                }
            }
            Op::Update(h, k, v) => {
                let got = self.h[*h].update(&k.0, &v.0)?;
                let found = self.model_find(*h, &k.0);
                Self::expect_bool("update", got, found.is_some())?;
                if let Some(i) = found {
                    self.work.set_value(&i.key, i.id, &v.0);
                }
            }
            Op::UpdateKey(h, k, new) => {
                let new_key = new.as_ref().unwrap_or(k);
                let got = self.h[*h].update_key(&k.0, &new_key.0);
                let found = self.model_find(*h, &k.0);
                match (got, found) {
                    (Ok(got), None) => Self::expect_bool("update_key", got, false)?,
                    (Ok(got), Some(_)) if new_key == k => {
                        Self::expect_bool("update_key", got, true)?;
                        self.work.wrote = true;
                    }
                    (Err(Error::InvalidArgument(_)), Some(_)) if new_key != k => {}
                    (got, found) => bail!("update_key returned {got:?}, model found {found:?}"),
                }
            }
            Op::Remove(h, k) => {
                let got = self.h[*h].remove(&k.0)?;
                let found = self.work.first_with(&k.0);
                Self::expect_bool("remove", got, found.is_some())?;
                match found {
                    Some(i) => {
                        self.work.remove(&i.key, i.id);
                        // Documented: "The cursor is left without a current item."
                        self.cur[*h] = None;
                    }
                    // Known bug 2: a miss leaves the cursor where it was.
                    None if !known_bugs() => {}
                    None => self.cur[*h] = None,
                }
            }
            Op::Find(h, k) => {
                let got = self.h[*h].find(&k.0, true)?;
                let found = self.model_find(*h, &k.0);
                Self::expect_bool("find", got, found.is_some())?;
                self.check_cursor(*h)?;
            }
            Op::FindWithId(h, k, pick, how) => {
                let items = self.work.items();
                let chosen = (!items.is_empty()).then(|| items[pick % items.len()].clone());
                let (key, id) = match (how, chosen) {
                    (IdPick::Exact, Some(i)) => (i.key, i.id),
                    (IdPick::OtherKey, Some(i)) => (k.0.clone(), i.id),
                    (IdPick::Exact | IdPick::OtherKey, None) => (k.0.clone(), 1),
                    (IdPick::Random(id), _) => (k.0.clone(), *id),
                    (IdPick::Max, _) => (k.0.clone(), ItemId::MAX),
                    (IdPick::Zero, _) => (k.0.clone(), 0),
                };
                let got = self.h[*h].find_with_id(&key, id)?;
                let want = if self.work.unique {
                    let (found, cur) = self.work.find(&key);
                    let found = found && cur.as_ref().is_some_and(|(_, i)| *i == id);
                    self.cur[*h] = cur;
                    found
                } else {
                    let pos = self.work.seek(&key, id, Seek::Ge);
                    let found = pos.as_ref().is_some_and(|i| i.key == key && i.id == id);
                    self.cur[*h] = at(pos.or_else(|| self.work.last()));
                    found
                };
                Self::expect_bool("find_with_id", got, want)?;
                self.check_cursor(*h)?;
            }
            Op::FindDesc(h, k) => {
                let got = self.h[*h].find_in_descending_order(&k.0)?;
                let pos = self
                    .work
                    .seek(&k.0, 0, Seek::Le)
                    .or_else(|| self.work.first());
                let found = pos.as_ref().is_some_and(|i| i.key == k.0);
                self.cur[*h] = at(pos);
                Self::expect_bool("find_in_descending_order", got, found)?;
                self.check_cursor(*h)?;
            }
            Op::First(h) => {
                let got = self.h[*h].first()?;
                self.cur[*h] = at(self.work.first());
                Self::expect_bool("first", got, self.cur[*h].is_some())?;
                self.check_cursor(*h)?;
            }
            Op::Last(h) => {
                let got = self.h[*h].last()?;
                self.cur[*h] = at(self.work.last());
                Self::expect_bool("last", got, self.cur[*h].is_some())?;
                self.check_cursor(*h)?;
            }
            Op::Next(h) | Op::Previous(h) => {
                let forward = matches!(op, Op::Next(_));
                let got = if forward {
                    self.h[*h].next()?
                } else {
                    self.h[*h].previous()?
                };
                let how = if forward { Seek::Gt } else { Seek::Lt };
                let to = match &self.cur[*h] {
                    Some((k, id)) => self.work.seek(k, *id, how),
                    None => None,
                };
                // Stepping from no current item stays on none.
                self.cur[*h] = at(to);
                Self::expect_bool(
                    if forward { "next" } else { "previous" },
                    got,
                    self.cur[*h].is_some(),
                )?;
                self.check_cursor(*h)?;
            }
            Op::Walk(h, forward) => {
                let s = &self.h[*h];
                let mut got = Vec::new();
                let mut more = if *forward { s.first()? } else { s.last()? };
                while more {
                    let it = s
                        .current_item()?
                        .ok_or_else(|| anyhow!("walk: no current item after a true step"))?;
                    got.push(Item::from(it));
                    ensure!(got.len() <= self.work.len(), "walk: too many items {got:?}");
                    more = if *forward { s.next()? } else { s.previous()? };
                }
                let mut want = self.work.items();
                if !forward {
                    want.reverse();
                }
                ensure!(got == want, "walk\n got {got:?}\nwant {want:?}");
                self.cur[*h] = None;
                self.check_cursor(*h)?;
                // And one more step from the end stays at the end.
                let again = if *forward { s.next()? } else { s.previous()? };
                Self::expect_bool("step past the end", again, false)?;
                self.check_cursor(*h)?;
            }
            Op::UpdateCurrentValue(h, v) => {
                let got = self.h[*h].update_current_value(&v.0)?;
                let item = self.work.resolve(&self.cur[*h]);
                Self::expect_bool("update_current_value", got, item.is_some())?;
                if let Some(i) = item {
                    self.work.set_value(&i.key, i.id, &v.0);
                }
            }
            Op::UpdateCurrentKey(h, other) | Op::UpdateCurrentItem(h, other, _) => {
                let value = match op {
                    Op::UpdateCurrentItem(_, _, v) => Some(v),
                    _ => None,
                };
                let item = self.work.resolve(&self.cur[*h]);
                let new_key = match (other, &item) {
                    (Some(o), _) => o.0.clone(),
                    (None, Some(i)) => i.key.clone(),
                    (None, None) => b"a".to_vec(),
                };
                let got = match value {
                    Some(v) => self.h[*h].update_current_item(&new_key, &v.0),
                    None => self.h[*h].update_current_key(&new_key),
                };
                match (got, item) {
                    (Ok(got), None) => Self::expect_bool("update_current_key/item", got, false)?,
                    (Ok(got), Some(i)) if i.key == new_key => {
                        Self::expect_bool("update_current_key/item", got, true)?;
                        self.work.wrote = true;
                        if let Some(v) = value {
                            self.work.set_value(&i.key, i.id, &v.0);
                        }
                    }
                    (Err(Error::InvalidArgument(_)), Some(i)) if i.key != new_key => {}
                    (got, item) => bail!(
                        "update_current_key/item({:?}) returned {got:?}, model item {item:?}",
                        K(new_key)
                    ),
                }
            }
            Op::RemoveCurrent(h) => {
                let got = self.h[*h].remove_current_item()?;
                let item = self.work.resolve(&self.cur[*h]);
                Self::expect_bool("remove_current_item", got, item.is_some())?;
                if let Some(i) = item {
                    self.model_remove_current(*h, &i);
                }
            }
            Op::Current(h) => self.check_cursor(*h)?,
            Op::Get(k) => {
                let want = self.work.first_with(&k.0);
                for s in &self.h {
                    let got = s.get(&k.0)?;
                    ensure!(
                        got == want.as_ref().map(|i| i.value.clone()),
                        "get({k:?}) = {:?}, want {want:?}",
                        got.map(V)
                    );
                    let has = s.contains_key(&k.0)?;
                    Self::expect_bool("contains_key", has, want.is_some())?;
                }
            }
            Op::Range(lo, hi, dir) => {
                let r = self.h[0].range((bytes(lo), bytes(hi)));
                let mut want: VecDeque<Item> = self
                    .work
                    .items()
                    .into_iter()
                    .filter(|i| Model::in_range(&i.key, lo, hi))
                    .collect();
                match dir {
                    Dir::Forward => {
                        let got = collect(r)?;
                        ensure!(
                            got.iter().eq(want.iter()),
                            "range\n got {got:?}\nwant {want:?}"
                        );
                    }
                    Dir::Reverse => {
                        let got = collect(r.rev())?;
                        ensure!(
                            got.iter().eq(want.iter().rev()),
                            "range rev\n got {got:?}\nwant {want:?}"
                        );
                    }
                    Dir::Mixed(pattern) => {
                        let mut r = r;
                        let mut steps = pattern.iter().copied().chain(std::iter::repeat(true));
                        loop {
                            let front = steps.next().unwrap_or(true);
                            let got = if front { r.next() } else { r.next_back() };
                            let got = got.transpose()?.map(Item::from);
                            let w = if front {
                                want.pop_front()
                            } else {
                                want.pop_back()
                            };
                            ensure!(
                                got == w,
                                "range mixed ({} end): got {got:?} want {w:?}",
                                if front { "front" } else { "back" }
                            );
                            if got.is_none() {
                                break;
                            }
                        }
                        ensure!(r.next().is_none(), "range goes on after its end");
                    }
                }
            }
            Op::Commit => {
                let r = self.tx()?.commit();
                ensure!(
                    matches!(self.h[0].count(), Err(Error::TransactionClosed)),
                    "a finished transaction's handle still works"
                );
                ensure!(
                    matches!(self.tx()?.commit(), Err(Error::TransactionClosed))
                        && matches!(self.tx()?.rollback(), Err(Error::TransactionClosed)),
                    "a finished transaction commits or rolls back again"
                );
                self.end();
                // A transaction whose changes cancel out may be committed as one that changed
                // nothing (nothing to validate, nothing to write).
                let net = self.work.items() != self.committed.items()
                    || self.other_work != self.other_committed;
                if self.side_read && self.side_changed && self.work.wrote {
                    ensure!(
                        matches!(r, Err(Error::Conflict(_))) || (r.is_ok() && !net),
                        "commit after reading {SIDE}, changed since: {r:?}, want a conflict"
                    );
                    self.check_committed("after a conflict")?;
                } else {
                    r.context("commit")?;
                    self.committed = self.work.clone();
                    self.other_committed = self.other_work.clone();
                    self.check_committed("after commit")?;
                }
                self.begin()?;
            }
            Op::Rollback => {
                self.tx()?.rollback()?;
                ensure!(
                    matches!(self.h[1].add(b"a", b"x"), Err(Error::TransactionClosed)),
                    "a rolled back transaction's handle still works"
                );
                self.end();
                self.check_committed("after rollback")?;
                self.begin()?;
            }
            Op::DropTxn => {
                self.end();
                self.check_committed("after dropping a transaction")?;
                self.begin()?;
            }
            Op::Reopen => {
                self.end();
                self.reader = None;
                self.db = None;
                self.open()?;
                self.check_committed("after reopen")?;
                self.begin()?;
            }
            Op::Checkpoint => self.db()?.checkpoint().context("checkpoint")?,
            Op::ReaderBegin(for_reading) => {
                let mode = if *for_reading {
                    TransactionMode::ForReading
                } else {
                    TransactionMode::NoCheck
                };
                let tx = self.db()?.begin(mode)?;
                let store = tx.open_raw_btree(STORE)?;
                ensure!(
                    matches!(store.add(b"a", b"x"), Err(Error::ReadOnlyTransaction(_))),
                    "a {mode:?} transaction accepted a write"
                );
                self.reader = Some(Reader {
                    tx,
                    store,
                    seen: self.committed.clone(),
                });
                self.check_reader()?;
            }
            Op::ReaderCheck => self.check_reader()?,
        }
        Ok(())
    }

    fn range_then(
        &mut self,
        lo: &Bound<K>,
        hi: &Bound<K>,
        forward: bool,
        n: usize,
        change: &Op,
    ) -> Result<()> {
        let mut r = self.h[0].range((bytes(lo), bytes(hi)));
        let mut want: VecDeque<Item> = self
            .work
            .items()
            .into_iter()
            .filter(|i| Model::in_range(&i.key, lo, hi))
            .collect();
        let mut last: Option<Item> = None;
        let mut exhausted = false;
        for _ in 0..n {
            let got = if forward { r.next() } else { r.next_back() };
            let got = got.transpose()?.map(Item::from);
            let w = if forward {
                want.pop_front()
            } else {
                want.pop_back()
            };
            ensure!(got == w, "range before the change: got {got:?} want {w:?}");
            if got.is_none() {
                exhausted = true;
                break;
            }
            last = got;
        }
        self.step(change).context("the change")?;
        let mut rest: Vec<Item> = Vec::new();
        if !exhausted {
            rest = self
                .work
                .items()
                .into_iter()
                .filter(|i| Model::in_range(&i.key, lo, hi))
                .filter(|i| {
                    last.as_ref().is_none_or(|l| {
                        let o = self.work.cmp(&i.key, i.id, &l.key, l.id);
                        o == if forward {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Less
                        }
                    })
                })
                .collect();
            if !forward {
                rest.reverse();
            }
        }
        let got = if forward {
            collect(r)?
        } else {
            collect(r.rev())?
        };
        ensure!(
            got == rest,
            "range after the change (last returned {last:?})\n got {got:?}\nwant {rest:?}"
        );
        Ok(())
    }

    fn check_reader(&self) -> Result<()> {
        let Some(r) = &self.reader else {
            return Ok(());
        };
        ensure!(r.tx.is_active());
        let want = r.seen.items();
        let got = collect(r.store.iter())?;
        ensure!(
            got == want,
            "reader ({:?}) snapshot\n got {got:?}\nwant {want:?}",
            r.tx.mode()
        );
        ensure!(r.store.count()? == want.len() as u64, "reader count");
        // Its cursor: backwards from the last item, and `get`.
        let mut back = Vec::new();
        let mut more = r.store.last()?;
        while more {
            let it = r.store.current_item()?;
            back.push(Item::from(
                it.ok_or_else(|| anyhow!("reader: no current item"))?,
            ));
            ensure!(back.len() <= want.len(), "reader: walks too far");
            more = r.store.previous()?;
        }
        ensure!(
            back.iter().rev().eq(want.iter()),
            "reader walk backwards\n got {back:?}\nwant {want:?}"
        );
        for i in &want {
            let v = r.seen.first_with(&i.key).map(|i| i.value);
            ensure!(
                r.store.get(&i.key)? == v,
                "reader get({:?})",
                K(i.key.clone())
            );
        }
        Ok(())
    }
}

fn run(cfg: Cfg, ops: &[Op]) -> Result<()> {
    let mut hs = Harness::new(cfg)?;
    for (i, op) in ops.iter().enumerate() {
        hs.step(op)
            .and_then(|()| hs.check_step())
            .with_context(|| format!("step {i}: {op:?}"))?;
    }
    hs.step(&Op::Commit).context("final commit")?;
    hs.step(&Op::Reopen).context("final reopen")?;
    Ok(())
}

/// The operation sequences that once hit engine bugs are always run now (they are fixed):
/// removing and re-creating a store in one transaction; `remove(key)` of a missing key clearing
/// the cursor; actively persisted values written ahead into a segment that another commit would
/// have marked as garbage. `SOP_MODEL_AVOID_FIXED=1` avoids them (to bisect a regression).
fn known_bugs() -> bool {
    std::env::var_os("SOP_MODEL_AVOID_FIXED").is_none()
}

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> PtConfig {
    PtConfig {
        cases: env("SOP_MODEL_CASES", 96),
        // Keep the repository clean: failures print their minimal case instead.
        failure_persistence: None,
        ..PtConfig::default()
    }
}

fn max_ops() -> usize {
    env("SOP_MODEL_OPS", 150) as usize
}

fn check(cfg: Cfg, ops: &[Op]) -> std::result::Result<(), TestCaseError> {
    run(cfg, ops).map_err(|e| TestCaseError::fail(format!("{e:#}")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_unique_keys(cfg in cfg(true), ops in vec(op(), 1..max_ops())) {
        check(cfg, &ops)?;
    }

    #[test]
    fn model_duplicate_keys(cfg in cfg(false), ops in vec(op(), 1..max_ops())) {
        check(cfg, &ops)?;
    }
}
