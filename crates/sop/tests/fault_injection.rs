//! Fault injection and power cuts on [`FaultStorage`] (needs the `testing` feature).
//!
//! The workload: open a database in `/db`, commit transaction 1 (creates three stores: values
//! in nodes, separate blobs, actively persisted blobs), then transactions 2 to 5 (the last one
//! removes what 1 and 2 wrote), then an explicit checkpoint (which deletes old segments). Segments are small (64 KiB) and so is the checkpoint threshold, so the
//! workload rolls segments and writes automatic checkpoints on the way. Every transaction is a
//! set of blind writes (sets and removes), so the state after any set of committed transactions
//! is computed by applying them in order.
//!
//! - `fault_sweep_*`: fail the n-th operation of a kind, for every n the workload reaches. The
//!   failure must surface as an error (or, for housekeeping after a durable commit, in
//!   `verify`); afterwards, both after a plain reopen (a process crash: what was written stays)
//!   followed by a power cut, and after a power cut straight away, the database must open, hold
//!   every commit that returned `Ok`, nothing of a transaction that failed before its commit
//!   point, and a commit that failed with an I/O error ("in doubt") either whole or not at all.
//! - `power_cut_at_every_operation`: a wrapper storage cuts the power right before its k-th
//!   mutating operation (the last write before it may be torn), for every k and a few seeds.
//! - `power_cut_between_commits`: k commits, then a power cut: exactly k commits survive.
//! - `durability_none_*`: unsynced commits may be lost at a power cut, but only whole, newest
//!   first.

#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sop::storage::{FaultKind, FaultStorage, OpenMode, Storage, StorageFile};
use sop::{
    Database, DatabaseOptions, Durability, Error, StoreOptions, TransactionMode, ValuePlacement,
};

const DB: &str = "/db";
const STORES: [(&str, ValuePlacement); 3] = [
    ("inl", ValuePlacement::InNode),
    ("blob", ValuePlacement::SeparateBlob),
    ("act", ValuePlacement::ActivelyPersisted),
];
const COMMITS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Workload and model
// ---------------------------------------------------------------------------------------------

type Op = (&'static str, Vec<u8>, Option<Vec<u8>>);
type Model = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

fn options() -> DatabaseOptions {
    DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 16,
        ..DatabaseOptions::new(DB)
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

fn value(c: usize, i: u32, len: usize) -> Vec<u8> {
    let mut v = format!("t{c}-{i}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + ((c as u32 * 13 + i * 7 + v.len() as u32) % 26) as u8);
    }
    v
}

/// The changes of transaction `c` (1-based). The last one removes everything the first two
/// wrote, so old segments become garbage and the final checkpoint deletes them.
fn txn_ops(c: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    if c == COMMITS {
        for (s, _) in STORES {
            for i in 20..60 {
                ops.push((s, key(i), None));
            }
        }
        ops.push(("inl", key(60), Some(value(c, 60, 20))));
        return ops;
    }
    let base = c as u32 * 20;
    for i in base..base + 8 {
        ops.push(("inl", key(i), Some(value(c, i, 40))));
        ops.push(("blob", key(i), Some(value(c, i, 2000))));
    }
    for i in base..base + 3 {
        ops.push(("act", key(i), Some(value(c, i, 3000))));
    }
    if c > 1 {
        let prev = base - 20;
        ops.push(("inl", key(prev), Some(value(c, prev, 10))));
        ops.push(("inl", key(prev + 1), None));
        ops.push(("blob", key(prev + 2), Some(value(c, prev + 2, 500))));
        ops.push(("blob", key(prev + 3), None));
        ops.push(("act", key(prev), None));
        ops.push(("act", key(prev + 1), Some(value(c, prev + 1, 100))));
    }
    ops
}

/// The state after applying the given transactions in order.
fn model_of(applied: &[usize]) -> Model {
    let mut m = Model::new();
    for &c in applied {
        if c == 1 {
            for (s, _) in STORES {
                m.insert(s.to_owned(), BTreeMap::new());
            }
        }
        for (s, k, v) in txn_ops(c) {
            let Some(store) = m.get_mut(s) else {
                // Stores do not exist without transaction 1: the transaction failed.
                continue;
            };
            match v {
                Some(v) => {
                    store.insert(k, v);
                }
                None => {
                    store.remove(&k);
                }
            }
        }
    }
    m
}

/// How a step of the workload ended.
#[derive(Debug)]
enum Step {
    Ok,
    /// `commit()` failed with an I/O error: the commit may or may not be durable.
    InDoubt(String),
    /// Failed before the commit point (or with an error that proves nothing was written).
    Failed(String),
}

impl Step {
    fn error(&self) -> Option<&str> {
        match self {
            Step::Ok => None,
            Step::InDoubt(e) | Step::Failed(e) => Some(e),
        }
    }
}

#[derive(Debug, Default)]
struct Run {
    open: Option<String>,
    txns: Vec<Step>,
    checkpoint: Option<String>,
}

impl Run {
    fn any_error(&self) -> bool {
        self.open.is_some()
            || self.checkpoint.is_some()
            || self.txns.iter().any(|s| s.error().is_some())
    }

    /// Every state the database may be in afterwards. With `first_only`, only the first failed
    /// transaction may be in doubt (a power cut: nothing after it reached the storage).
    fn allowed(&self, first_only: bool) -> Vec<(Vec<usize>, Model)> {
        let mut sets: Vec<Vec<usize>> = vec![Vec::new()];
        let mut seen_failure = false;
        for (i, s) in self.txns.iter().enumerate() {
            let c = i + 1;
            match s {
                Step::Ok => sets.iter_mut().for_each(|v| v.push(c)),
                Step::InDoubt(_) if !(first_only && seen_failure) => {
                    let with: Vec<Vec<usize>> = sets
                        .iter()
                        .map(|v| {
                            let mut v = v.clone();
                            v.push(c);
                            v
                        })
                        .collect();
                    sets.extend(with);
                }
                _ => {}
            }
            if !matches!(s, Step::Ok) {
                seen_failure = true;
            }
        }
        sets.into_iter()
            .map(|v| {
                let m = model_of(&v);
                (v, m)
            })
            .collect()
    }
}

fn run_txn(db: &Database, c: usize) -> Step {
    let tx = match db.begin(TransactionMode::ForWriting) {
        Ok(tx) => tx,
        Err(e) => return Step::Failed(e.to_string()),
    };
    let body = || -> sop::Result<()> {
        let mut handles = BTreeMap::new();
        if c == 1 {
            for (s, placement) in STORES {
                let opts = StoreOptions {
                    slot_length: 4,
                    value_placement: placement,
                    ..StoreOptions::default()
                };
                handles.insert(s, tx.new_raw_btree(s, opts)?);
            }
        }
        for (s, k, v) in txn_ops(c) {
            let h = match handles.get(s) {
                Some(h) => h,
                None => {
                    let h = tx.open_raw_btree(s)?;
                    handles.entry(s).or_insert(h)
                }
            };
            match v {
                Some(v) => {
                    h.upsert(&k, &v)?;
                }
                None => {
                    h.remove(&k)?;
                }
            }
        }
        Ok(())
    };
    if let Err(e) = body() {
        return Step::Failed(e.to_string());
    }
    match tx.commit() {
        Ok(()) => Step::Ok,
        Err(e @ Error::Io { .. }) => Step::InDoubt(e.to_string()),
        Err(e) => Step::Failed(e.to_string()),
    }
}

/// Runs the workload; returns the database (if it opened) and what happened.
fn workload(storage: Arc<dyn Storage>, opts: DatabaseOptions) -> (Option<Database>, Run) {
    let mut run = Run::default();
    let db = match Database::open_with_storage(opts, storage) {
        Ok(db) => db,
        Err(e) => {
            run.open = Some(e.to_string());
            return (None, run);
        }
    };
    for c in 1..=COMMITS {
        run.txns.push(run_txn(&db, c));
    }
    if let Err(e) = db.checkpoint() {
        run.checkpoint = Some(e.to_string());
    }
    (Some(db), run)
}

/// A storage with a durable, empty `/db`.
fn setup() -> FaultStorage {
    let fs = FaultStorage::new();
    fs.create_dir_all(Path::new(DB)).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

fn read_all(db: &Database) -> sop::Result<Model> {
    let tx = db.begin(TransactionMode::ForReading)?;
    let mut out = Model::new();
    for name in tx.stores()? {
        let s = tx.open_raw_btree(&name)?;
        let mut items = BTreeMap::new();
        for it in s.iter() {
            let it = it?;
            items.insert(it.key, it.value);
        }
        assert_eq!(s.count()?, items.len() as u64, "count of store {name}");
        out.insert(name, items);
    }
    Ok(out)
}

/// Opens the database on `fs` and checks it holds one of the allowed states; returns which.
fn check_recovered(fs: &FaultStorage, ctx: &str, run: &Run, first_only: bool) -> Vec<usize> {
    let db = Database::open_with_storage(options(), Arc::new(fs.clone()))
        .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}\nthe run: {run:?}"));
    let got = read_all(&db).unwrap_or_else(|e| panic!("{ctx}: read failed: {e}\nrun: {run:?}"));
    let allowed = run.allowed(first_only);
    let Some((applied, _)) = allowed.iter().find(|(_, m)| *m == got) else {
        let names: Vec<_> = allowed.iter().map(|(v, _)| v.clone()).collect();
        let summary: BTreeMap<_, _> = got.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        panic!(
            "{ctx}: the state (items per store {summary:?}) is none of the allowed ones \
             (transactions applied: {names:?})\nrun: {run:?}"
        );
    };
    let r = db.verify().unwrap();
    assert!(
        r.is_ok(),
        "{ctx}: verify after recovery: {r:?}\nrun: {run:?}"
    );
    applied.clone()
}

// ---------------------------------------------------------------------------------------------
// Fault sweeps
// ---------------------------------------------------------------------------------------------

/// Number of operations of `kind` a clean workload does (after `setup`).
fn clean_count(kind: FaultKind) -> u64 {
    let fs = setup();
    let before = fs.op_count(kind);
    let (db, run) = workload(Arc::new(fs.clone()), options());
    assert!(!run.any_error(), "clean run failed: {run:?}");
    let db = db.unwrap();
    assert!(db.verify().unwrap().is_ok());
    assert_eq!(
        read_all(&db).unwrap(),
        model_of(&(1..=COMMITS).collect::<Vec<_>>())
    );
    fs.op_count(kind) - before
}

/// Runs the workload with the n-th operation of `kind` failing; checks that the failure was
/// reported. Returns the storage (faults cleared), the run and the database.
fn faulted_run(kind: FaultKind, n: u64) -> (FaultStorage, Run, Option<Database>) {
    let fs = setup();
    let before = fs.op_count(kind);
    fs.fail_after(kind, n);
    let (db, run) = workload(Arc::new(fs.clone()), options());
    let fired = fs.op_count(kind) > before + n;
    fs.clear_faults();
    let ctx = format!("{kind:?} #{n}");
    if fired {
        let background = db
            .as_ref()
            .and_then(|db| db.verify().ok())
            .is_some_and(|r| !r.is_ok());
        assert!(
            run.any_error() || background,
            "{ctx}: the injected fault was not reported\nrun: {run:?}"
        );
    }
    (fs, run, db)
}

fn sweep_case(kind: FaultKind, n: u64, total: u64, seeds_per_case: u64) {
    let ctx = format!("{kind:?} #{n} of {total}");
    // A process crash right after the failure (the files keep what was written), then a
    // power cut after the recovered database was closed: what recovery showed must stay.
    let (fs, run, db) = faulted_run(kind, n);
    drop(db);
    let recovered = check_recovered(&fs, &format!("{ctx}, reopened"), &run, false);
    for seed in 0..seeds_per_case {
        fs.power_cut(seed ^ (n << 8));
        let after = check_recovered(&fs, &format!("{ctx}, reopened, power cut"), &run, false);
        assert_eq!(
            after, recovered,
            "{ctx}: a power cut after recovery changed the committed state\nrun: {run:?}"
        );
    }
    // A power cut straight after the failure.
    for seed in 0..seeds_per_case {
        let (fs, run, db) = faulted_run(kind, n);
        fs.power_cut(seed.wrapping_mul(0x9E37) ^ n);
        drop(db);
        check_recovered(&fs, &format!("{ctx}, power cut {seed}"), &run, false);
    }
}

/// Sweeps a fault over every operation of `kind`; collects every failing case and fails with
/// all of them at the end.
fn sweep(kind: FaultKind, seeds_per_case: u64) -> u64 {
    let total = clean_count(kind);
    assert!(total > 0, "{kind:?}: the workload does no such operation");
    let mut failures = Vec::new();
    for n in 0..total {
        let r = catch_unwind(AssertUnwindSafe(|| {
            sweep_case(kind, n, total, seeds_per_case);
        }));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{kind:?}: {} of {total} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    total
}

#[test]
fn fault_sweep_write() {
    let n = sweep(FaultKind::Write, 4);
    eprintln!("{n} writes swept");
}

#[test]
fn fault_sweep_sync() {
    let n = sweep(FaultKind::Sync, 4);
    eprintln!("{n} syncs swept");
}

#[test]
fn fault_sweep_create() {
    let n = sweep(FaultKind::Create, 2);
    eprintln!("{n} creates swept");
}

#[test]
fn fault_sweep_rename() {
    let n = sweep(FaultKind::Rename, 2);
    eprintln!("{n} renames swept");
}

#[test]
fn fault_sweep_read() {
    let n = sweep(FaultKind::Read, 2);
    eprintln!("{n} reads swept");
}

#[test]
fn fault_sweep_remove() {
    // The workload removes files only when a checkpoint lets old segments go; make sure it
    // does, or there is nothing to sweep.
    let fs = setup();
    let before = fs.op_count(FaultKind::Remove);
    let (_db, _) = workload(Arc::new(fs.clone()), options());
    if fs.op_count(FaultKind::Remove) == before {
        eprintln!("the workload removes no file");
        return;
    }
    let n = sweep(FaultKind::Remove, 2);
    eprintln!("{n} removes swept");
}

/// A database creation that fails (or a process that dies) after `dboptions.tmp` was created
/// but before it was renamed leaves a folder holding only `sop.lock` and `dboptions.tmp`: the
/// engine's own leftovers. Reopening must finish the creation, not call it "not a database".
#[test]
fn interrupted_creation_leaves_a_reopenable_folder() {
    for kind in [FaultKind::Write, FaultKind::Sync, FaultKind::Rename] {
        let fs = setup();
        fs.fail_after(kind, 0);
        let r = Database::open_with_storage(options(), Arc::new(fs.clone()));
        assert!(r.is_err(), "{kind:?}: the injected fault was not reported");
        drop(r);
        fs.clear_faults();
        let names = fs.list(Path::new(DB)).unwrap();
        let db = Database::open_with_storage(options(), Arc::new(fs.clone())).unwrap_or_else(|e| {
            panic!("{kind:?}: reopen after a failed creation (folder holds {names:?}): {e}")
        });
        assert!(matches!(run_txn(&db, 1), Step::Ok));
    }
}

/// The smallest reproduction of a failure on the very first segment: its header write fails
/// (or the process dies right after creating the file), leaving an empty `0000000001.seg`.
#[test]
fn failed_first_segment_creation_does_not_brick_the_database() {
    let fs = setup();
    // Find the write of the first segment's header: the first write to a .seg file.
    let writes_before_log = {
        let probe = setup();
        let b = probe.op_count(FaultKind::Write);
        // Open writes dboptions (1 write) before it creates the first segment.
        let db = Database::open_with_storage(options(), Arc::new(probe.clone())).unwrap();
        drop(db);
        probe.op_count(FaultKind::Write) - b
    };
    assert!(writes_before_log >= 2, "{writes_before_log}");
    // The last write of a fresh open is the segment header.
    fs.fail_after(FaultKind::Write, writes_before_log - 1);
    let r = Database::open_with_storage(options(), Arc::new(fs.clone()));
    assert!(r.is_err(), "the injected fault was not reported");
    drop(r);
    fs.clear_faults();
    let names = fs.list(Path::new("/db/log")).unwrap();
    let db = Database::open_with_storage(options(), Arc::new(fs.clone())).unwrap_or_else(|e| {
        panic!("reopen after a failed first segment creation (log holds {names:?}): {e}")
    });
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    let s = tx.new_raw_btree("s", StoreOptions::default()).unwrap();
    s.add(b"k", b"v").unwrap();
    tx.commit().unwrap();
    assert!(db.verify().unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Power cut at every operation
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Cut {
    /// Mutating operations seen.
    count: u64,
    /// Cut the power right before this operation (1-based); 0 = never.
    at: u64,
    seed: u64,
    dead: bool,
}

/// A storage that cuts the power of the [`FaultStorage`] under it right before its `at`-th
/// mutating operation; everything after the cut fails (the process lost its disk).
#[derive(Debug, Clone)]
struct CutStorage {
    inner: FaultStorage,
    cut: Arc<Mutex<Cut>>,
}

fn dead() -> io::Error {
    io::Error::other("the power is off")
}

impl CutStorage {
    fn new(inner: FaultStorage, at: u64, seed: u64) -> Self {
        CutStorage {
            inner,
            cut: Arc::new(Mutex::new(Cut {
                count: 0,
                at,
                seed,
                dead: false,
            })),
        }
    }

    fn alive(&self) -> io::Result<()> {
        if self.cut.lock().unwrap().dead {
            Err(dead())
        } else {
            Ok(())
        }
    }

    /// Counts a mutating operation; cuts the power when it is the chosen one.
    fn tick(&self) -> io::Result<()> {
        let mut c = self.cut.lock().unwrap();
        if c.dead {
            return Err(dead());
        }
        c.count += 1;
        if c.count == c.at {
            self.inner.power_cut(c.seed);
            c.dead = true;
            return Err(dead());
        }
        Ok(())
    }

    fn count(&self) -> u64 {
        self.cut.lock().unwrap().count
    }

    fn is_dead(&self) -> bool {
        self.cut.lock().unwrap().dead
    }
}

struct CutFile {
    inner: Arc<dyn StorageFile>,
    storage: CutStorage,
}

impl fmt::Debug for CutFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutFile")
            .field("path", &self.inner.path())
            .finish()
    }
}

impl StorageFile for CutFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.storage.alive()?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.storage.tick()?;
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.storage.alive()?;
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.storage.tick()?;
        self.inner.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.storage.tick()?;
        self.inner.sync()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

impl Storage for CutStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if mode == OpenMode::CreateNew {
            self.tick()?;
        } else {
            self.alive()?;
        }
        Ok(Arc::new(CutFile {
            inner: self.inner.open(path, mode)?,
            storage: self.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.tick()?;
        self.inner.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.tick()?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.tick()?;
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.alive()?;
        self.inner.list(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.tick()?;
        self.inner.sync_dir(dir)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync + fmt::Debug>> {
        self.alive()?;
        self.inner.lock_exclusive(path)
    }
}

#[test]
fn power_cut_at_every_operation() {
    let total = {
        let cs = CutStorage::new(setup(), 0, 0);
        let (_db, run) = workload(Arc::new(cs.clone()), options());
        assert!(!run.any_error(), "{run:?}");
        cs.count()
    };
    assert!(total > 20, "{total}");
    let mut outcomes: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
    for at in 1..=total {
        for seed in 0..3u64 {
            let fs = setup();
            let cs = CutStorage::new(fs.clone(), at, seed * 1000 + at);
            let (db, run) = workload(Arc::new(cs.clone()), options());
            assert!(cs.is_dead(), "cut {at}: the power was never cut");
            let ctx = format!("power cut before mutating operation {at} of {total}, seed {seed}");
            assert!(
                run.any_error()
                    || db
                        .as_ref()
                        .is_some_and(|db| !db.verify().is_ok_and(|r| r.is_ok())),
                "{ctx}: nothing noticed the dead storage\nrun: {run:?}"
            );
            drop(db);
            let applied = check_recovered(&fs, &ctx, &run, true);
            // A second cut after recovery changes nothing.
            fs.power_cut(seed);
            let again = check_recovered(&fs, &format!("{ctx}, cut again"), &run, true);
            assert_eq!(
                again, applied,
                "{ctx}: a power cut after recovery changed the state"
            );
            *outcomes.entry(applied).or_default() += 1;
        }
    }
    eprintln!("{total} cut points x 3 seeds; states reached: {outcomes:?}");
    assert!(outcomes.len() >= COMMITS, "{outcomes:?}");
}

// ---------------------------------------------------------------------------------------------
// Power cuts between commits, and Durability::None
// ---------------------------------------------------------------------------------------------

#[test]
fn power_cut_between_commits() {
    for k in 0..=COMMITS {
        for seed in 0..6u64 {
            let fs = setup();
            let db = Database::open_with_storage(options(), Arc::new(fs.clone())).unwrap();
            let mut run = Run::default();
            for c in 1..=k {
                let s = run_txn(&db, c);
                assert!(matches!(s, Step::Ok), "commit {c}: {s:?}");
                run.txns.push(s);
            }
            fs.power_cut(seed);
            drop(db);
            let applied = check_recovered(&fs, &format!("{k} commits, seed {seed}"), &run, true);
            assert_eq!(applied, (1..=k).collect::<Vec<_>>());
            // And the recovered database takes new commits.
            let db = Database::open_with_storage(options(), Arc::new(fs.clone())).unwrap();
            if k < COMMITS {
                assert!(matches!(run_txn(&db, k + 1), Step::Ok));
                drop(db);
                fs.power_cut(seed + 1);
                run.txns.push(Step::Ok);
                let applied = check_recovered(&fs, "one more commit", &run, true);
                assert_eq!(applied, (1..=k + 1).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn durability_none_loses_only_whole_newest_commits() {
    let opts = || DatabaseOptions {
        durability: Durability::None,
        ..options()
    };
    let mut lost_some = false;
    for k in 1..=COMMITS {
        for seed in 0..8u64 {
            let fs = setup();
            let db = Database::open_with_storage(opts(), Arc::new(fs.clone())).unwrap();
            for c in 1..=k {
                let s = run_txn(&db, c);
                assert!(matches!(s, Step::Ok), "commit {c}: {s:?}");
            }
            fs.power_cut(seed);
            drop(db);
            let ctx = format!("Durability::None, {k} commits, seed {seed}");
            let db = Database::open_with_storage(opts(), Arc::new(fs.clone()))
                .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
            let got = read_all(&db).unwrap_or_else(|e| panic!("{ctx}: read failed: {e}"));
            // Automatic checkpoints sync the log, so some prefix survives: which one depends on
            // where they happened, but it is always a prefix.
            let j = (0..=k)
                .find(|j| model_of(&(1..=*j).collect::<Vec<_>>()) == got)
                .unwrap_or_else(|| panic!("{ctx}: the state is no prefix of the commits"));
            lost_some |= j < k;
            let r = db.verify().unwrap();
            assert!(r.is_ok(), "{ctx}: {r:?}");
        }
    }
    assert!(lost_some, "no power cut ever lost an unsynced commit");

    // An explicit checkpoint makes everything before it durable.
    for seed in 0..4u64 {
        let fs = setup();
        let db = Database::open_with_storage(opts(), Arc::new(fs.clone())).unwrap();
        for c in 1..=2 {
            assert!(matches!(run_txn(&db, c), Step::Ok));
        }
        db.checkpoint().unwrap();
        assert!(matches!(run_txn(&db, 3), Step::Ok));
        fs.power_cut(seed);
        drop(db);
        let db = Database::open_with_storage(opts(), Arc::new(fs.clone())).unwrap();
        let got = read_all(&db).unwrap();
        assert!(
            got == model_of(&[1, 2]) || got == model_of(&[1, 2, 3]),
            "seed {seed}: commits before the checkpoint were lost"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------------------------

/// The disk fills up at every point of the workload (capacity swept in 4 KiB steps): the
/// failure is reported, and afterwards — with the disk still full, and once space is freed —
/// the database opens (or, while full, refuses with an error) and shows an allowed state.
#[test]
fn disk_full_at_every_size() {
    let mut capacity = 4096u64;
    let mut full_runs = 0;
    loop {
        let fs = setup();
        fs.set_capacity(Some(capacity));
        let (db, run) = workload(Arc::new(fs.clone()), options());
        let ctx = format!("capacity {capacity}");
        if !run.any_error() {
            let bg = db.as_ref().map(|db| db.verify().unwrap());
            if bg.as_ref().is_none_or(|r| r.is_ok()) {
                break;
            }
        }
        full_runs += 1;
        drop(db);
        // Still full: opening may fail, but never with corruption, and never shows a wrong
        // state.
        match Database::open_with_storage(options(), Arc::new(fs.clone())) {
            Ok(db) => {
                let got = read_all(&db).unwrap_or_else(|e| panic!("{ctx}: read failed: {e}"));
                assert!(
                    run.allowed(false).iter().any(|(_, m)| *m == got),
                    "{ctx}: reopened while full, the state is not an allowed one\nrun: {run:?}"
                );
            }
            Err(e) => assert!(
                !e.is_corruption(),
                "{ctx}: reopen while full reports corruption: {e}\nrun: {run:?}"
            ),
        }
        fs.set_capacity(None);
        check_recovered(&fs, &format!("{ctx}, space freed"), &run, false);
        fs.power_cut(capacity);
        check_recovered(&fs, &format!("{ctx}, space freed, power cut"), &run, false);
        capacity += 4096;
        assert!(capacity < 1 << 24, "the workload never fits");
    }
    assert!(full_runs > 10, "{full_runs}");
    eprintln!("{full_runs} capacities too small for the workload");
}
