//! The store API against a `BTreeMap` model.
//!
//! An `Arbitrary` list of operations (add, remove, update, upsert, get, range forwards and
//! backwards, commit, rollback, reopen, checkpoint, power cut) on one unique-key store with
//! fuzzed options (slot length, value placement, load balancing, durability), on a
//! `MemoryStorage` or a `FaultStorage`. Keys are bounded (40 short ones, a few longer than the
//! inline key buffer) so collisions are frequent. Every result is compared with the model;
//! after commit/reopen the committed contents are read back in a fresh reader and `verify`
//! must be clean.
//!
//! A power cut (FaultStorage only) drops the database, simulates the cut and reopens: with
//! `Durability::Immediate` the state must be exactly the last acknowledged commit; with
//! `Durability::None` it must be one of the committed states since the last durable point
//! (prefix-consistent: never a partial transaction, never older than a checkpoint).
#![no_main]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sop::storage::{FaultStorage, MemoryStorage, Storage};
use sop::{
    Database, DatabaseOptions, Durability, RawBtree, StoreOptions, Transaction, TransactionMode,
    ValuePlacement,
};

const STORE: &str = "m";
const MAX_OPS: usize = 160;

#[derive(Arbitrary, Debug, Clone)]
enum Val {
    Small(Vec<u8>),
    Big(u8, u16),
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Add(u8, Val),
    Remove(u8),
    Update(u8, Val),
    Upsert(u8, Val),
    Get(u8),
    Range(Option<u8>, Option<u8>, bool),
    Commit,
    Rollback,
    Reopen,
    Checkpoint,
    PowerCut(u64),
}

#[derive(Arbitrary, Debug)]
struct Input {
    fault: bool,
    durability_none: bool,
    slot: u8,
    placement: u8,
    load_balancing: bool,
    ops: Vec<Op>,
}

fn key(k: u8) -> Vec<u8> {
    match k % 41 {
        40 => Vec::new(),
        k @ 0..26 => vec![b'a' + k],
        k @ 26..36 => vec![b'a', b'a' + (k - 26)],
        k => {
            let mut v = vec![b'k'; 20 + usize::from(k - 36) * 3];
            v[0] = b'l';
            v
        }
    }
}

fn val(v: &Val) -> Vec<u8> {
    match v {
        Val::Small(b) => b.iter().take(16).copied().collect(),
        Val::Big(s, n) => (0..usize::from(*n % 5000))
            .map(|i| s.wrapping_add((i % 251) as u8))
            .collect(),
    }
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

struct Run {
    storage: Arc<dyn Storage>,
    fault: Option<FaultStorage>,
    opts: DatabaseOptions,
    store_opts: StoreOptions,
    db: Option<Database>,
    tx: Option<(Transaction, RawBtree)>,
    /// Acknowledged state.
    committed: Model,
    /// The transaction's view.
    pending: Model,
    /// Committed states that a power cut may fall back to (Durability::None); the last one is
    /// `committed`.
    history: Vec<Model>,
}

impl Run {
    fn db(&mut self) -> &Database {
        if self.db.is_none() {
            let db = Database::open_with_storage(self.opts.clone(), Arc::clone(&self.storage))
                .unwrap_or_else(|e| panic!("open failed: {e}"));
            self.db = Some(db);
        }
        self.db.as_ref().expect("open")
    }

    fn btree(&mut self) -> &RawBtree {
        if self.tx.is_none() {
            let store_opts = self.store_opts.clone();
            let db = self.db();
            let tx = db.begin(TransactionMode::ForWriting).expect("begin");
            let b = if tx.store_exists(STORE).expect("store_exists") {
                tx.open_raw_btree(STORE).expect("open store")
            } else {
                tx.new_raw_btree(STORE, store_opts).expect("new store")
            };
            self.tx = Some((tx, b));
        }
        &self.tx.as_ref().expect("txn").1
    }

    fn read_committed(&mut self) -> Model {
        let db = self.db();
        let tx = db.begin(TransactionMode::ForReading).expect("begin reader");
        let mut out = Model::new();
        if tx.store_exists(STORE).expect("store_exists") {
            let b = tx.open_raw_btree(STORE).expect("open store");
            for it in b.iter() {
                let it = it.unwrap_or_else(|e| panic!("read failed: {e}"));
                assert!(out.insert(it.key, it.value).is_none(), "duplicate key in a unique store");
            }
            assert_eq!(b.count().expect("count"), out.len() as u64, "count differs from items");
        }
        drop(tx);
        out
    }

    fn check_committed(&mut self, ctx: &str) {
        let got = self.read_committed();
        assert!(got == self.committed, "{ctx}: committed state differs from the model");
        let report = self.db().verify().expect("verify");
        assert!(report.is_ok(), "{ctx}: verify: {report:?}");
    }

    fn close(&mut self) {
        self.tx = None;
        self.db = None;
        self.pending = self.committed.clone();
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Add(k, v) => {
                let (k, v) = (key(*k), val(v));
                let got = self.btree().add(&k, &v).expect("add");
                let want = !self.pending.contains_key(&k);
                assert_eq!(got, want, "add {k:?}");
                if want {
                    self.pending.insert(k, v);
                }
            }
            Op::Remove(k) => {
                let k = key(*k);
                let got = self.btree().remove(&k).expect("remove");
                assert_eq!(got, self.pending.remove(&k).is_some(), "remove {k:?}");
            }
            Op::Update(k, v) => {
                let (k, v) = (key(*k), val(v));
                let got = self.btree().update(&k, &v).expect("update");
                let want = self.pending.contains_key(&k);
                assert_eq!(got, want, "update {k:?}");
                if want {
                    self.pending.insert(k, v);
                }
            }
            Op::Upsert(k, v) => {
                let (k, v) = (key(*k), val(v));
                self.btree().upsert(&k, &v).expect("upsert");
                self.pending.insert(k, v);
            }
            Op::Get(k) => {
                let k = key(*k);
                let got = self.btree().get(&k).expect("get");
                assert_eq!(got.as_ref(), self.pending.get(&k), "get {k:?}");
            }
            Op::Range(lo, hi, rev) => {
                let lo = lo.map_or(Bound::Unbounded, |k| Bound::Included(key(k)));
                let hi = hi.map_or(Bound::Unbounded, |k| Bound::Excluded(key(k)));
                let want: Vec<(Vec<u8>, Vec<u8>)> = self
                    .pending
                    .iter()
                    .filter(|(k, _)| match &lo {
                        Bound::Included(l) => *k >= l,
                        _ => true,
                    })
                    .filter(|(k, _)| match &hi {
                        Bound::Excluded(h) => *k < h,
                        _ => true,
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let range = self.btree().range((lo.clone(), hi.clone()));
                let mut got: Vec<(Vec<u8>, Vec<u8>)> = if *rev {
                    range.rev().map(|i| i.map(|i| (i.key, i.value))).collect::<sop::Result<_>>()
                } else {
                    range.map(|i| i.map(|i| (i.key, i.value))).collect::<sop::Result<_>>()
                }
                .expect("range");
                if *rev {
                    got.reverse();
                }
                assert!(got == want, "range {lo:?}..{hi:?} rev {rev}: {} items, want {}", got.len(), want.len());
            }
            Op::Commit => {
                if let Some((tx, b)) = self.tx.take() {
                    drop(b);
                    tx.commit().unwrap_or_else(|e| panic!("commit failed: {e}"));
                    self.committed = self.pending.clone();
                    self.history.push(self.committed.clone());
                    self.check_committed("after commit");
                }
            }
            Op::Rollback => {
                if let Some((tx, b)) = self.tx.take() {
                    drop(b);
                    tx.rollback().expect("rollback");
                }
                self.pending = self.committed.clone();
            }
            Op::Reopen => {
                self.close();
                self.check_committed("after reopen");
                self.history = vec![self.committed.clone()];
            }
            Op::Checkpoint => {
                // A checkpoint syncs the log: every commit so far is durable.
                self.db().checkpoint().expect("checkpoint");
                self.history = vec![self.committed.clone()];
            }
            Op::PowerCut(seed) => {
                let Some(fs) = self.fault.clone() else {
                    return self.step(&Op::Reopen);
                };
                self.close();
                fs.power_cut(*seed);
                let got = self.read_committed();
                let durable_only = self.opts.durability == Durability::Immediate;
                let ok = if durable_only {
                    got == self.committed
                } else {
                    self.history.contains(&got)
                };
                assert!(
                    ok,
                    "power cut {seed}: recovered state ({} items) is not {} (durability {:?})",
                    got.len(),
                    if durable_only { "the last acknowledged commit" } else { "a committed prefix" },
                    self.opts.durability
                );
                let report = self.db().verify().expect("verify");
                assert!(report.is_ok(), "after power cut: verify: {report:?}");
                self.committed = got.clone();
                self.pending = got.clone();
                self.history = vec![got];
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let (storage, fault): (Arc<dyn Storage>, Option<FaultStorage>) = if input.fault {
        let fs = FaultStorage::new();
        fs.create_dir_all(Path::new("/db")).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync root");
        (Arc::new(fs.clone()), Some(fs))
    } else {
        (Arc::new(MemoryStorage::new()), None)
    };
    let opts = DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 16,
        node_cache_bytes: if input.slot & 0x80 != 0 { 0 } else { 1 << 20 },
        durability: if input.durability_none { Durability::None } else { Durability::Immediate },
        ..DatabaseOptions::new("/db")
    };
    let store_opts = StoreOptions {
        slot_length: [2, 4, 6, 8, 16][usize::from(input.slot & 0x7F) % 5],
        value_placement: match input.placement % 3 {
            0 => ValuePlacement::InNode,
            1 => ValuePlacement::SeparateBlob,
            _ => ValuePlacement::ActivelyPersisted,
        },
        leaf_load_balancing: input.load_balancing,
        ..StoreOptions::default()
    };
    let mut run = Run {
        storage,
        fault,
        opts,
        store_opts,
        db: None,
        tx: None,
        committed: Model::new(),
        pending: Model::new(),
        history: vec![Model::new()],
    };
    for op in input.ops.iter().take(MAX_OPS) {
        run.step(op);
    }
    run.step(&Op::Commit);
    run.step(&Op::Reopen);
});
