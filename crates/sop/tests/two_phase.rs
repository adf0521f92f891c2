//! Two-phase commit: participants, `on_commit` hooks, isolation of a prepared transaction,
//! a real crash (SIGKILL) between the phases and the in-doubt list, and the durability of the
//! decision.
//!
//! The crash tests re-execute the test binary: `two_phase_child` is a normal test that returns
//! at once unless `SOP_2PC_CHILD=<folder>` is set; then it commits base data, prepares a
//! transaction (phase 1) and prints `PREPARED <txn id hex>` (or, in mode `commit`, also runs
//! phase 2 and prints `COMMITTED <txn id hex>`), then sleeps until the parent kills it with
//! SIGKILL.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use sop::{
    Database, DatabaseOptions, Error, InDoubt, Participant, StoreOptions, Transaction,
    TransactionMode, ValuePlacement,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn db_options(dir: &Path) -> DatabaseOptions {
    DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 16,
        ..DatabaseOptions::new(dir)
    }
}

fn open(dir: &Path) -> Database {
    Database::open(db_options(dir)).unwrap()
}

fn small(slot_length: usize) -> StoreOptions {
    StoreOptions {
        slot_length,
        ..StoreOptions::default()
    }
}

type Items = BTreeMap<Vec<u8>, Vec<u8>>;
type Model = BTreeMap<String, Items>;

/// Every store of the database, as a model (checks each store's count on the way).
fn read_all(db: &Database) -> Model {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let mut out = Model::new();
    for name in tx.stores().unwrap() {
        let s = tx.open_raw_btree(&name).unwrap();
        let mut items = Items::new();
        for it in s.iter() {
            let it = it.unwrap();
            items.insert(it.key, it.value);
        }
        assert_eq!(
            s.count().unwrap(),
            items.len() as u64,
            "count of store {name}"
        );
        out.insert(name, items);
    }
    out
}

/// The committed value of `store/key` (None when either is absent).
fn get(db: &Database, store: &str, key: &str) -> Option<Vec<u8>> {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    if !tx.store_exists(store).unwrap() {
        return None;
    }
    tx.open_raw_btree(store)
        .unwrap()
        .get(key.as_bytes())
        .unwrap()
}

fn put(tx: &Transaction, store: &str, key: &str, value: &str) {
    tx.open_raw_btree(store)
        .unwrap()
        .upsert(key.as_bytes(), value.as_bytes())
        .unwrap();
}

/// Commits `key = value` into `store` (creating the store) in its own transaction.
fn commit_put(db: &Database, store: &str, key: &str, value: &str) {
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_raw_btree(store, small(4)).unwrap();
    put(&tx, store, key, value);
    tx.commit().unwrap();
}

/// Compares two models, reporting only the differences (values can be large).
fn assert_model(actual: &Model, expected: &Model, what: &str) {
    if actual == expected {
        return;
    }
    let short = |v: Option<&Vec<u8>>| {
        v.map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned())
    };
    let mut diffs = Vec::new();
    let names: std::collections::BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    for name in names {
        let (a, e) = (actual.get(name), expected.get(name));
        let (Some(a), Some(e)) = (a, e) else {
            diffs.push(format!(
                "store {name}: present {} / expected {}",
                a.is_some(),
                e.is_some()
            ));
            continue;
        };
        let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(e.keys()).collect();
        for k in keys {
            if a.get(k) != e.get(k) {
                diffs.push(format!(
                    "{name}/{}: {:?} expected {:?}",
                    String::from_utf8_lossy(k),
                    short(a.get(k)),
                    short(e.get(k))
                ));
            }
        }
    }
    panic!(
        "{what}: the data differs from the model:\n{}",
        diffs.join("\n")
    );
}

fn assert_verified(db: &Database) {
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "verify: {report:?}");
}

fn assert_retryable(r: sop::Result<()>, what: &str) {
    match r {
        Err(e) => assert!(
            e.is_retryable(),
            "{what}: expected a retryable conflict, got {e}"
        ),
        Ok(()) => panic!("{what}: committed, but a conflict (retryable error) was expected"),
    }
}

// ---------------------------------------------------------------------------------------------
// A test participant
// ---------------------------------------------------------------------------------------------

/// Calls made to participants: `"<name>.<call>.<txn id hex>"`.
type CallLog = Arc<Mutex<Vec<String>>>;

struct TestParticipant {
    name: String,
    log: CallLog,
    fail_prepare: bool,
    fail_commit: bool,
}

impl TestParticipant {
    fn new(name: &str, log: &CallLog) -> Self {
        TestParticipant {
            name: name.to_owned(),
            log: Arc::clone(log),
            fail_prepare: false,
            fail_commit: false,
        }
    }

    fn record(&self, call: &str, txn_id: u128) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.{call}.{txn_id:032x}", self.name));
    }
}

impl Participant for TestParticipant {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn prepare(&mut self, txn_id: u128) -> sop::Result<()> {
        self.record("prepare", txn_id);
        if self.fail_prepare {
            return Err(Error::InvalidArgument("queue is full".into()));
        }
        Ok(())
    }

    fn commit(&mut self, txn_id: u128) -> sop::Result<()> {
        self.record("commit", txn_id);
        if self.fail_commit {
            return Err(Error::InvalidArgument("broker unreachable".into()));
        }
        Ok(())
    }

    fn rollback(&mut self, txn_id: u128) -> sop::Result<()> {
        self.record("rollback", txn_id);
        Ok(())
    }
}

fn calls(log: &CallLog) -> Vec<String> {
    log.lock().unwrap().clone()
}

fn call(name: &str, what: &str, tx: &Transaction) -> String {
    format!("{name}.{what}.{:032x}", tx.id())
}

/// A counter bumped by an `on_commit` hook.
fn hook(tx: &Transaction) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&n);
    tx.on_commit(move || {
        n2.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    n
}

// ---------------------------------------------------------------------------------------------
// 1. Participants and hooks
// ---------------------------------------------------------------------------------------------

#[test]
fn commit_prepares_then_commits_every_participant_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let log = CallLog::default();
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_raw_btree("s", small(4)).unwrap();
    put(&tx, "s", "k", "v");
    tx.enlist(TestParticipant::new("p1", &log)).unwrap();
    tx.enlist(TestParticipant::new("p2", &log)).unwrap();
    let hooked = hook(&tx);
    tx.commit().unwrap();
    assert_eq!(
        calls(&log),
        vec![
            call("p1", "prepare", &tx),
            call("p2", "prepare", &tx),
            call("p1", "commit", &tx),
            call("p2", "commit", &tx),
        ]
    );
    assert_eq!(hooked.load(Ordering::SeqCst), 1);
    assert!(!tx.is_active());
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"v"[..]));
    assert!(db.in_doubt().unwrap().is_empty());
    // The transaction is over: no more decisions, no more participants.
    assert!(matches!(tx.commit(), Err(Error::TransactionClosed)));
    assert!(matches!(tx.phase2_commit(), Err(Error::TransactionClosed)));
    assert!(matches!(
        tx.enlist(TestParticipant::new("late", &log)),
        Err(Error::TransactionClosed)
    ));
    assert_eq!(hooked.load(Ordering::SeqCst), 1, "hooks run exactly once");
    assert_eq!(calls(&log).len(), 4);
}

#[test]
fn failed_prepare_aborts_the_transaction_and_rolls_participants_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        commit_put(&db, "s", "k", "base");
        let log = CallLog::default();
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        put(&tx, "s", "k", "changed");
        put(&tx, "s", "new", "added");
        tx.new_raw_btree("created", small(4)).unwrap();
        put(&tx, "created", "x", "y");
        tx.enlist(TestParticipant::new("ok", &log)).unwrap();
        let mut bad = TestParticipant::new("bad", &log);
        bad.fail_prepare = true;
        tx.enlist(bad).unwrap();
        let hooked = hook(&tx);
        match tx.commit() {
            Err(Error::Participant { name, detail }) => {
                assert_eq!(name, "bad");
                assert!(detail.contains("queue is full"), "{detail}");
            }
            other => panic!("expected Error::Participant, got {other:?}"),
        }
        let log = calls(&log);
        assert_eq!(
            &log[..2],
            &[call("ok", "prepare", &tx), call("bad", "prepare", &tx)]
        );
        assert!(log.contains(&call("bad", "rollback", &tx)), "{log:?}");
        assert!(log.contains(&call("ok", "rollback", &tx)), "{log:?}");
        assert!(!log.iter().any(|c| c.contains(".commit.")), "{log:?}");
        assert_eq!(hooked.load(Ordering::SeqCst), 0);
        assert!(!tx.is_active());
        assert!(matches!(tx.phase2_commit(), Err(Error::TransactionClosed)));
        // Nothing of it is applied, nothing is in doubt, nothing blocks other writers.
        assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"base"[..]));
        assert_eq!(get(&db, "s", "new"), None);
        assert_eq!(get(&db, "created", "x"), None);
        assert!(!db.store_names().unwrap().contains(&"created".to_string()));
        assert!(db.in_doubt().unwrap().is_empty());
        commit_put(&db, "s", "k", "after");
        commit_put(&db, "created", "x", "other");
    }
    // The abort is durable.
    let db = open(dir.path());
    assert!(db.in_doubt().unwrap().is_empty());
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"after"[..]));
    assert_eq!(get(&db, "s", "new"), None);
    assert_eq!(get(&db, "created", "x").as_deref(), Some(&b"other"[..]));
    assert_verified(&db);
}

#[test]
fn rollback_after_phase1_discards_and_rolls_participants_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    commit_put(&db, "s", "k", "base");
    let log = CallLog::default();
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "k", "prepared");
    tx.enlist(TestParticipant::new("p", &log)).unwrap();
    let hooked = hook(&tx);
    tx.phase1_commit().unwrap();
    assert_eq!(calls(&log), vec![call("p", "prepare", &tx)]);
    assert!(
        !tx.is_active(),
        "a prepared transaction takes no more operations"
    );
    assert!(tx.open_raw_btree("s").is_err());
    let listed = db.in_doubt().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].txn_id, tx.id());
    tx.rollback().unwrap();
    assert_eq!(
        calls(&log),
        vec![call("p", "prepare", &tx), call("p", "rollback", &tx)]
    );
    assert_eq!(hooked.load(Ordering::SeqCst), 0);
    assert!(db.in_doubt().unwrap().is_empty());
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"base"[..]));
    assert!(matches!(tx.phase2_commit(), Err(Error::TransactionClosed)));
    assert!(matches!(tx.rollback(), Err(Error::TransactionClosed)));
    // The key is free again.
    commit_put(&db, "s", "k", "next");
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"next"[..]));
    assert_eq!(calls(&log).len(), 2);
}

#[test]
fn a_prepared_transaction_decided_elsewhere_is_not_applied_by_its_phase2() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    commit_put(&db, "s", "k", "base");
    // Aborted through the in-doubt list while its handle is live: phase 2 must not apply it.
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "k", "aborted");
    tx.phase1_commit().unwrap();
    db.resolve_in_doubt(tx.id(), false).unwrap();
    assert!(matches!(tx.phase2_commit(), Err(Error::TransactionClosed)));
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"base"[..]));
    drop(tx);
    // Committed through the in-doubt list: its own phase 2 must not apply it a second time.
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "k2", "once");
    tx.phase1_commit().unwrap();
    db.resolve_in_doubt(tx.id(), true).unwrap();
    let commits = db.commit_seq().unwrap();
    assert!(matches!(tx.phase2_commit(), Err(Error::TransactionClosed)));
    assert_eq!(db.commit_seq().unwrap(), commits, "applied twice");
    assert_eq!(get(&db, "s", "k2").as_deref(), Some(&b"once"[..]));
    assert!(db.in_doubt().unwrap().is_empty());
    drop(tx);
    drop(db);
    // The decisions hold after a restart.
    let db = open(dir.path());
    assert!(db.in_doubt().unwrap().is_empty());
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"base"[..]));
    assert_eq!(get(&db, "s", "k2").as_deref(), Some(&b"once"[..]));
}

#[test]
fn rollback_before_phase1_rolls_participants_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let log = CallLog::default();
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_raw_btree("s", small(4)).unwrap();
    put(&tx, "s", "k", "v");
    tx.enlist(TestParticipant::new("p", &log)).unwrap();
    let hooked = hook(&tx);
    tx.rollback().unwrap();
    assert_eq!(calls(&log), vec![call("p", "rollback", &tx)]);
    assert_eq!(hooked.load(Ordering::SeqCst), 0);
    assert_eq!(get(&db, "s", "k"), None);
}

#[test]
fn participant_commit_failure_is_reported_but_the_data_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        let log = CallLog::default();
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        tx.new_raw_btree("s", small(4)).unwrap();
        put(&tx, "s", "k", "v");
        let mut p = TestParticipant::new("flaky", &log);
        p.fail_commit = true;
        tx.enlist(p).unwrap();
        tx.enlist(TestParticipant::new("fine", &log)).unwrap();
        let hooked = hook(&tx);
        match tx.commit() {
            Err(Error::Participant { name, detail }) => {
                assert_eq!(name, "flaky");
                assert!(detail.contains("broker unreachable"), "{detail}");
            }
            other => panic!("expected Error::Participant, got {other:?}"),
        }
        assert_eq!(
            calls(&log),
            vec![
                call("flaky", "prepare", &tx),
                call("fine", "prepare", &tx),
                call("flaky", "commit", &tx),
                call("fine", "commit", &tx),
            ],
            "every participant is told to commit, none to roll back"
        );
        // The SOP side committed: hooks ran, the data is there, nothing is in doubt.
        assert_eq!(hooked.load(Ordering::SeqCst), 1);
        assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"v"[..]));
        assert!(db.in_doubt().unwrap().is_empty());
    }
    let db = open(dir.path());
    assert!(db.in_doubt().unwrap().is_empty());
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn on_commit_hooks_run_once_after_commit_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    commit_put(&db, "s", "k", "base");

    // Plain commit (no participants): runs once, after the data is visible.
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "a", "1");
    let seen_in_hook = Arc::new(Mutex::new(None));
    {
        let db2 = db.clone();
        let seen = Arc::clone(&seen_in_hook);
        tx.on_commit(move || {
            *seen.lock().unwrap() = Some(get(&db2, "s", "a"));
        })
        .unwrap();
    }
    let n = hook(&tx);
    let n2 = hook(&tx);
    assert_eq!(n.load(Ordering::SeqCst), 0);
    tx.commit().unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(n2.load(Ordering::SeqCst), 1);
    assert_eq!(
        *seen_in_hook.lock().unwrap(),
        Some(Some(b"1".to_vec())),
        "the hook sees the committed data"
    );
    assert!(tx.commit().is_err());
    assert!(tx.on_commit(|| {}).is_err());
    assert_eq!(n.load(Ordering::SeqCst), 1);

    // Two phases: nothing after phase 1, once after phase 2.
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "b", "2");
    let n = hook(&tx);
    tx.phase1_commit().unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 0);
    tx.phase2_commit().unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert!(tx.phase2_commit().is_err());
    assert_eq!(n.load(Ordering::SeqCst), 1);

    // Rollback, and rollback after phase 1.
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "c", "3");
    let n = hook(&tx);
    tx.rollback().unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 0);
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "c", "3");
    let n = hook(&tx);
    tx.phase1_commit().unwrap();
    tx.rollback().unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 0);

    // Dropped without commit.
    let n = {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        put(&tx, "s", "c", "3");
        hook(&tx)
    };
    assert_eq!(n.load(Ordering::SeqCst), 0);

    // A commit that fails with a conflict.
    let loser = db.begin(TransactionMode::ForWriting).unwrap();
    put(&loser, "s", "k", "loser");
    let n = hook(&loser);
    commit_put(&db, "s", "k", "winner");
    assert_retryable(loser.commit(), "lost update");
    assert_eq!(n.load(Ordering::SeqCst), 0);

    // A phase 1 that fails with a conflict.
    let loser = db.begin(TransactionMode::ForWriting).unwrap();
    put(&loser, "s", "k", "loser");
    let n = hook(&loser);
    commit_put(&db, "s", "k", "winner2");
    assert_retryable(loser.phase1_commit(), "lost update in phase 1");
    assert!(db.in_doubt().unwrap().is_empty());
    assert!(matches!(
        loser.phase2_commit(),
        Err(Error::TransactionClosed)
    ));
    assert_eq!(n.load(Ordering::SeqCst), 0);

    // A commit whose participant fails to prepare.
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    put(&tx, "s", "d", "4");
    let log = CallLog::default();
    let mut p = TestParticipant::new("p", &log);
    p.fail_prepare = true;
    tx.enlist(p).unwrap();
    let n = hook(&tx);
    assert!(matches!(tx.commit(), Err(Error::Participant { .. })));
    assert_eq!(n.load(Ordering::SeqCst), 0);

    assert_eq!(get(&db, "s", "c"), None);
    assert_eq!(get(&db, "s", "d"), None);
    assert_eq!(get(&db, "s", "k").as_deref(), Some(&b"winner2"[..]));
}

// ---------------------------------------------------------------------------------------------
// 2. Isolation while prepared
// ---------------------------------------------------------------------------------------------

#[test]
fn prepared_writes_block_conflicting_commits_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_raw_btree("s", small(4)).unwrap();
    for i in 0..40 {
        put(&tx, "s", &format!("k{i:02}"), "base");
    }
    tx.commit().unwrap();

    let t1 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t1, "s", "k10", "t1");
    t1.phase1_commit().unwrap();

    // Not visible while prepared.
    assert_eq!(get(&db, "s", "k10").as_deref(), Some(&b"base"[..]));

    // T2 writes k10: refused (retryable) while T1 is prepared.
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t2, "s", "k10", "t2");
    assert_retryable(t2.commit(), "write of a key a prepared transaction wrote");
    assert!(!t2.is_active());
    // Removing it is refused too.
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    assert!(t2.open_raw_btree("s").unwrap().remove(b"k10").unwrap());
    assert_retryable(t2.commit(), "removal of a key a prepared transaction wrote");
    // And through transact: every attempt conflicts, the error stays retryable.
    let r = db.transact_with(TransactionMode::ForWriting, 2, |tx| {
        put(tx, "s", "k10", "t2");
        Ok(())
    });
    assert_retryable(r, "transact on a prepared key");

    // T3 writes unrelated keys (same store, same leaves nearby): fine.
    let t3 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t3, "s", "k11", "t3");
    put(&t3, "s", "k09", "t3");
    put(&t3, "s", "k10x", "t3");
    t3.commit().unwrap();
    // Reading the prepared key and writing elsewhere is fine too (serialized before T1).
    let t4 = db.begin(TransactionMode::ForWriting).unwrap();
    let seen = t4.open_raw_btree("s").unwrap().get(b"k10").unwrap();
    assert_eq!(seen.as_deref(), Some(&b"base"[..]));
    put(&t4, "s", "k30", "t4");
    t4.commit().unwrap();

    t1.phase2_commit().unwrap();
    assert!(db.in_doubt().unwrap().is_empty());
    assert_eq!(get(&db, "s", "k10").as_deref(), Some(&b"t1"[..]));
    assert_eq!(get(&db, "s", "k11").as_deref(), Some(&b"t3"[..]));
    assert_eq!(get(&db, "s", "k09").as_deref(), Some(&b"t3"[..]));
    assert_eq!(get(&db, "s", "k10x").as_deref(), Some(&b"t3"[..]));
    assert_eq!(get(&db, "s", "k30").as_deref(), Some(&b"t4"[..]));
    assert_eq!(read_all(&db)["s"].len(), 41);

    // Decided: k10 is writable again.
    commit_put(&db, "s", "k10", "after");
    assert_eq!(get(&db, "s", "k10").as_deref(), Some(&b"after"[..]));
    assert_verified(&db);
}

#[test]
fn reader_of_a_prepared_key_that_commits_after_phase2_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    commit_put(&db, "s", "k", "base");
    let t1 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t1, "s", "k", "t1");
    t1.phase1_commit().unwrap();
    // T2 reads the old k while T1 is prepared, then commits after T1's phase 2: it read a
    // value T1 overwrote before T2's commit, so it must conflict.
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    let seen = t2.open_raw_btree("s").unwrap().get(b"k").unwrap();
    assert_eq!(seen.as_deref(), Some(&b"base"[..]));
    put(&t2, "s", "copy", "base");
    t1.phase2_commit().unwrap();
    assert_retryable(t2.commit(), "reader of k committing after k's writer");
}

#[test]
fn prepared_read_set_blocks_writers_in_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_raw_btree("s", small(4)).unwrap();
    for k in ["a", "m0", "m5", "m9", "x", "y", "z"] {
        put(&tx, "s", k, "base");
    }
    tx.commit().unwrap();

    // T1 reads x (point), scans [m0, m9] (range) and the count, and writes y.
    let t1 = db.begin(TransactionMode::ForWriting).unwrap();
    {
        let s = t1.open_raw_btree("s").unwrap();
        assert_eq!(s.get(b"x").unwrap().as_deref(), Some(&b"base"[..]));
        let scanned: Vec<Vec<u8>> = s
            .range(b"m0".to_vec()..=b"m9".to_vec())
            .map(|r| r.unwrap().key)
            .collect();
        assert_eq!(scanned.len(), 3);
        s.upsert(b"y", b"t1").unwrap();
    }
    t1.phase1_commit().unwrap();

    // T2 writes x, which T1 read: refused while T1 is prepared.
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t2, "s", "x", "t2");
    assert_retryable(t2.commit(), "write of a key a prepared transaction read");
    // A phantom in T1's scanned range: refused.
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t2, "s", "m3", "phantom");
    assert_retryable(
        t2.commit(),
        "insert into a range a prepared transaction scanned",
    );
    // Outside every read: fine.
    let t3 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t3, "s", "a", "t3");
    t3.commit().unwrap();

    t1.phase2_commit().unwrap();
    let s = &read_all(&db)["s"];
    assert_eq!(s[&b"x".to_vec()], b"base");
    assert_eq!(s[&b"y".to_vec()], b"t1");
    assert_eq!(s[&b"a".to_vec()], b"t3");
    assert!(!s.contains_key(&b"m3".to_vec()));
    // Decided: x is writable again.
    commit_put(&db, "s", "x", "after");
}

#[test]
fn prepared_count_read_blocks_inserts_into_that_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    commit_put(&db, "s", "a", "base");
    let t1 = db.begin(TransactionMode::ForWriting).unwrap();
    {
        let s = t1.open_raw_btree("s").unwrap();
        assert_eq!(s.count().unwrap(), 1);
        s.upsert(b"a", b"t1").unwrap();
    }
    t1.phase1_commit().unwrap();
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    put(&t2, "s", "zzz", "new");
    assert_retryable(
        t2.commit(),
        "insert into a store whose count a prepared txn read",
    );
    t1.phase2_commit().unwrap();
    commit_put(&db, "s", "zzz", "new");
    assert_eq!(read_all(&db)["s"].len(), 2);
}

/// T1 reads `x` in store `a` (and changes nothing there) and writes `y` in store `b`; while it
/// is prepared, T2 reads `y` and writes `x`. If both commit, T1 read the x from before T2 and
/// T2 read the y from before T1: write skew, which no serial order explains. The prepared
/// T1's read of `x` must block T2's write of `x`.
#[test]
fn prepared_read_set_blocks_writers_in_a_store_it_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    commit_put(&db, "a", "x", "1");
    commit_put(&db, "b", "y", "1");

    let t1 = db.begin(TransactionMode::ForWriting).unwrap();
    let x = t1.open_raw_btree("a").unwrap().get(b"x").unwrap().unwrap();
    assert_eq!(x, b"1");
    put(&t1, "b", "y", "0");
    t1.phase1_commit().unwrap();

    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    let y = t2.open_raw_btree("b").unwrap().get(b"y").unwrap().unwrap();
    assert_eq!(y, b"1");
    put(&t2, "a", "x", "0");
    let r = t2.commit();
    t1.phase2_commit().unwrap();
    assert_retryable(
        r,
        "T2 wrote x (store a), which the prepared T1 read (T1 changed nothing in store a)",
    );
}

#[test]
fn store_created_by_a_prepared_transaction_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let t1 = db.begin(TransactionMode::ForWriting).unwrap();
    tx_create_and_fill(&t1, "new", 5);
    t1.phase1_commit().unwrap();
    assert!(!db.store_names().unwrap().contains(&"new".to_string()));
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    assert!(!t2.store_exists("new").unwrap());
    tx_create_and_fill(&t2, "new", 1);
    assert_retryable(
        t2.commit(),
        "creation of a store a prepared transaction creates",
    );
    t1.phase2_commit().unwrap();
    assert_eq!(read_all(&db)["new"].len(), 5);
}

fn tx_create_and_fill(tx: &Transaction, store: &str, n: usize) {
    let s = tx.new_raw_btree(store, small(4)).unwrap();
    for i in 0..n {
        s.upsert(format!("i{i}").as_bytes(), b"v").unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Durability of the decision
// ---------------------------------------------------------------------------------------------

#[test]
fn decision_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        commit_put(&db, "s", "base", "1");
        let log = CallLog::default();
        // Committed in two phases.
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        put(&tx, "s", "committed", "yes");
        tx_create_and_fill(&tx, "made", 3);
        tx.enlist(TestParticipant::new("p", &log)).unwrap();
        tx.phase1_commit().unwrap();
        tx.phase2_commit().unwrap();
        // Rolled back after phase 1.
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        put(&tx, "s", "rolled", "back");
        tx_create_and_fill(&tx, "unmade", 3);
        tx.enlist(TestParticipant::new("p", &log)).unwrap();
        tx.phase1_commit().unwrap();
        tx.rollback().unwrap();
        // Dropped after phase 1 (dropping rolls back).
        {
            let tx = db.begin(TransactionMode::ForWriting).unwrap();
            put(&tx, "s", "dropped", "yes");
            tx.enlist(TestParticipant::new("p", &log)).unwrap();
            tx.phase1_commit().unwrap();
            assert_eq!(db.in_doubt().unwrap().len(), 1);
        }
        assert!(db.in_doubt().unwrap().is_empty());
        let names: Vec<&str> = calls(&log)
            .iter()
            .map(|c| {
                if c.contains(".rollback.") {
                    "rollback"
                } else {
                    "other"
                }
            })
            .collect();
        assert_eq!(names.iter().filter(|n| **n == "rollback").count(), 2);
    }
    for _ in 0..2 {
        let db = open(dir.path());
        assert!(db.in_doubt().unwrap().is_empty());
        let all = read_all(&db);
        let s = &all["s"];
        assert_eq!(
            s.get(&b"committed".to_vec()).map(Vec::as_slice),
            Some(&b"yes"[..])
        );
        assert!(!s.contains_key(&b"rolled".to_vec()));
        assert!(!s.contains_key(&b"dropped".to_vec()));
        assert_eq!(all["made"].len(), 3);
        assert!(!all.contains_key("unmade"));
        assert_verified(&db);
        db.checkpoint().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Crash between the phases (SIGKILL)
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "SOP_2PC_CHILD";
const MODE_ENV: &str = "SOP_2PC_MODE";
/// Safety net: a child that is never killed exits by itself.
const CHILD_MAX_RUN: Duration = Duration::from_secs(60);
const PARTICIPANT: &str = "queue-1";

/// One change: `Some(value)` sets the key, `None` removes it.
type Op = (&'static str, String, Option<Vec<u8>>);

fn crash_store_options(name: &str) -> StoreOptions {
    match name {
        "a" => small(6),
        "b" => StoreOptions {
            slot_length: 4,
            value_placement: ValuePlacement::ActivelyPersisted,
            ..StoreOptions::default()
        },
        _ => StoreOptions {
            slot_length: 4,
            value_placement: ValuePlacement::SeparateBlob,
            ..StoreOptions::default()
        },
    }
}

fn blob(tag: &str, len: usize) -> Vec<u8> {
    let mut v = tag.as_bytes().to_vec();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

/// Base data, committed in three transactions.
fn base_txns() -> Vec<Vec<Op>> {
    let a: Vec<Op> = (0..40)
        .map(|i| {
            (
                "a",
                format!("a{i:02}"),
                Some(format!("base-a{i}").into_bytes()),
            )
        })
        .collect();
    let b: Vec<Op> = (0..20)
        .map(|i| {
            (
                "b",
                format!("b{i:02}"),
                Some(blob(&format!("base-b{i}"), 1500)),
            )
        })
        .collect();
    let mixed: Vec<Op> = vec![
        ("a", "a05".into(), Some(b"base-a5-v2".to_vec())),
        ("b", "b05".into(), None),
    ];
    vec![a, b, mixed]
}

/// The prepared transaction: changes in `a` and `b`, creates `c`. (It also reads `a30`.)
fn t1_ops() -> Vec<Op> {
    let mut ops: Vec<Op> = vec![
        ("a", "a01".into(), Some(b"t1-a01".to_vec())),
        ("a", "a02".into(), None),
        ("a", "a40".into(), Some(b"t1-a40".to_vec())),
        ("a", "a17".into(), Some(b"t1-a17".to_vec())),
        ("b", "b03".into(), Some(blob("t1-b03", 4000))),
        ("b", "b04".into(), None),
        ("b", "b20".into(), Some(blob("t1-b20", 2500))),
        ("b", "b11".into(), Some(b"t1-small".to_vec())),
    ];
    for i in 0..12 {
        ops.push((
            "c",
            format!("c{i:02}"),
            Some(blob(&format!("t1-c{i}"), 700)),
        ));
    }
    ops
}

fn apply_ops(tx: &Transaction, ops: &[Op]) {
    for (store, k, v) in ops {
        let s = tx.new_raw_btree(store, crash_store_options(store)).unwrap();
        match v {
            Some(v) => {
                s.upsert(k.as_bytes(), v).unwrap();
            }
            None => {
                assert!(s.remove(k.as_bytes()).unwrap(), "remove {store}/{k}");
            }
        }
    }
}

fn model_apply(m: &mut Model, ops: &[Op]) {
    for (store, k, v) in ops {
        let s = m.entry((*store).to_string()).or_default();
        match v {
            Some(v) => {
                s.insert(k.clone().into_bytes(), v.clone());
            }
            None => {
                s.remove(k.as_bytes());
            }
        }
    }
}

fn base_model() -> Model {
    let mut m = Model::new();
    for t in base_txns() {
        model_apply(&mut m, &t);
    }
    m
}

fn committed_model() -> Model {
    let mut m = base_model();
    model_apply(&mut m, &t1_ops());
    m
}

/// The child: base data, then a prepared transaction; sleeps until killed.
#[test]
fn two_phase_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mode = std::env::var(MODE_ENV).unwrap();
    let db = open(Path::new(&dir));
    for t in base_txns() {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        apply_ops(&tx, &t);
        tx.commit().unwrap();
    }
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    let read = tx.open_raw_btree("a").unwrap().get(b"a30").unwrap();
    assert_eq!(read.as_deref(), Some(&b"base-a30"[..]));
    apply_ops(&tx, &t1_ops());
    tx.enlist(TestParticipant::new(PARTICIPANT, &CallLog::default()))
        .unwrap();
    tx.phase1_commit().unwrap();
    let line = if mode == "commit" {
        tx.phase2_commit().unwrap();
        format!("COMMITTED {:032x}", tx.id())
    } else {
        format!("PREPARED {:032x}", tx.id())
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    while started.elapsed() < CHILD_MAX_RUN {
        thread::sleep(Duration::from_millis(50));
    }
    // Never killed: leave without deciding (no destructors run).
    std::process::exit(3);
}

/// Kills the child on drop, so a failing parent leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the child in `dir` in `mode` (`prepare` or `commit`), waits for its line, kills it with
/// SIGKILL; returns the transaction id it printed.
fn run_child(dir: &Path, mode: &str) -> u128 {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "two_phase_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir)
        .env(MODE_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let want = if mode == "commit" {
        "COMMITTED "
    } else {
        "PREPARED "
    };
    let (send, recv) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(want) {
                let hex = line[at + want.len()..].trim().to_owned();
                let _ = send.send(u128::from_str_radix(&hex, 16).unwrap());
            }
        }
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let got = recv.recv_timeout(Duration::from_secs(60));
    let early = child.0.try_wait().unwrap();
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    let err = err_reader.join().unwrap();
    assert!(
        early.is_none(),
        "the child exited before it was killed ({status:?}); stderr:\n{err}"
    );
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
    got.unwrap_or_else(|e| panic!("no {want}line from the child ({e}); stderr:\n{err}"))
}

fn expected_in_doubt(id: u128) -> InDoubt {
    InDoubt {
        txn_id: id,
        participants: vec![PARTICIPANT.to_string()],
        stores: vec!["a".into(), "b".into(), "c".into()],
    }
}

/// The in-doubt list, with each entry's store names sorted.
fn in_doubt_sorted(db: &Database) -> Vec<InDoubt> {
    let mut v = db.in_doubt().unwrap();
    for d in &mut v {
        d.stores.sort();
    }
    v
}

/// After the crash: exactly that transaction is in doubt, its changes are invisible, and
/// conflicting commits are refused.
fn check_in_doubt_state(db: &Database, id: u128, expected_data: &Model) {
    assert_eq!(in_doubt_sorted(db), vec![expected_in_doubt(id)]);
    assert_model(
        &read_all(db),
        expected_data,
        "prepared changes must not be visible",
    );
    assert!(!db.store_names().unwrap().contains(&"c".to_string()));
    // Conflicting commits: a key it wrote, a key it removed, a key it read, its new store.
    for (store, key) in [("a", "a01"), ("a", "a40"), ("a", "a30"), ("b", "b03")] {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        tx.open_raw_btree(store)
            .unwrap()
            .upsert(key.as_bytes(), b"conflict")
            .unwrap();
        assert_retryable(
            tx.commit(),
            &format!("write of {store}/{key} while in doubt"),
        );
    }
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    assert!(tx.open_raw_btree("b").unwrap().remove(b"b04").unwrap());
    assert_retryable(tx.commit(), "removal of b/b04 while in doubt");
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_raw_btree("c", crash_store_options("c"))
        .unwrap()
        .upsert(b"c00", b"conflict")
        .unwrap();
    assert_retryable(tx.commit(), "creation of store c while in doubt");
    assert_model(&read_all(db), expected_data, "after refused commits");
    assert_eq!(in_doubt_sorted(db), vec![expected_in_doubt(id)]);
}

#[test]
fn crash_between_phases_then_resolve_commit() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = run_child(dir.path(), "prepare");
    let crashed_segments = log_files(dir.path());
    assert!(!crashed_segments.is_empty());
    let mut expected_base = base_model();
    {
        let db = open(dir.path());
        check_in_doubt_state(&db, id, &expected_base);
        assert!(matches!(
            db.resolve_in_doubt(id ^ 1, true),
            Err(Error::InvalidArgument(_))
        ));
        // Unrelated commits go through while it is in doubt: one in the same store, and
        // enough filler to roll over segments, trigger checkpoints and compaction.
        commit_put_opts(&db, "a", "a35", b"unrelated");
        expected_base
            .get_mut("a")
            .unwrap()
            .insert(b"a35".to_vec(), b"unrelated".to_vec());
        rewrite_untouched(&db, &mut expected_base, 3);
        write_filler(&db, 120);
        db.checkpoint().unwrap();
        // The log segments of the crashed process (the prepare record among them) are gone:
        // only the checkpoint carries the in-doubt transaction now.
        let now = log_files(dir.path());
        assert!(
            crashed_segments.iter().all(|f| !now.contains(f)),
            "segments at the crash {crashed_segments:?}, now {now:?}"
        );
        assert_eq!(in_doubt_sorted(&db), vec![expected_in_doubt(id)]);
    }
    let expected_final = {
        // In doubt survives the checkpoint (and whatever segments it let go).
        let db = open(dir.path());
        assert_eq!(in_doubt_sorted(&db), vec![expected_in_doubt(id)]);
        let mut all = read_all(&db);
        let filler = all.remove("filler").unwrap();
        assert_model(
            &all,
            &expected_base,
            "still invisible after checkpoint + reopen",
        );
        db.resolve_in_doubt(id, true).unwrap();
        assert!(db.in_doubt().unwrap().is_empty());
        // The resolution applies its changes on top of what committed meanwhile.
        let mut expected = expected_base.clone();
        model_apply(&mut expected, &t1_ops());
        expected.insert("filler".into(), filler);
        assert_model(&read_all(&db), &expected, "after resolve(commit)");
        assert!(matches!(
            db.resolve_in_doubt(id, true),
            Err(Error::InvalidArgument(_))
        ));
        // The keys are free again.
        commit_put_opts(&db, "a", "a01", b"after");
        expected
            .get_mut("a")
            .unwrap()
            .insert(b"a01".to_vec(), b"after".to_vec());
        assert_model(&read_all(&db), &expected, "after a01 is written again");
        assert_verified(&db);
        expected
    };
    for _ in 0..2 {
        let db = open(dir.path());
        assert!(db.in_doubt().unwrap().is_empty());
        assert_model(&read_all(&db), &expected_final, "after reopen");
        assert_verified(&db);
        db.checkpoint().unwrap();
    }
}

#[test]
fn crash_between_phases_then_resolve_abort() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = run_child(dir.path(), "prepare");
    let base = base_model();
    {
        let db = open(dir.path());
        check_in_doubt_state(&db, id, &base);
        db.resolve_in_doubt(id, false).unwrap();
        assert!(db.in_doubt().unwrap().is_empty());
        assert_model(&read_all(&db), &base, "after resolve(abort)");
        assert!(matches!(
            db.resolve_in_doubt(id, false),
            Err(Error::InvalidArgument(_))
        ));
    }
    let db = open(dir.path());
    assert!(db.in_doubt().unwrap().is_empty());
    assert_model(&read_all(&db), &base, "after resolve(abort) and reopen");
    assert_verified(&db);
    // Nothing holds its keys or its store name any more.
    commit_put_opts(&db, "a", "a01", b"after");
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    apply_ops(&tx, &[("c", "c00".into(), Some(b"mine".to_vec()))]);
    tx.commit().unwrap();
    assert_eq!(get(&db, "c", "c00").as_deref(), Some(&b"mine"[..]));
    assert_eq!(get(&db, "a", "a01").as_deref(), Some(&b"after"[..]));
}

#[test]
fn crash_after_phase2_leaves_nothing_in_doubt() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_child(dir.path(), "commit");
    for _ in 0..2 {
        let db = open(dir.path());
        assert!(db.in_doubt().unwrap().is_empty());
        assert_model(
            &read_all(&db),
            &committed_model(),
            "after a crash after phase 2",
        );
        assert_verified(&db);
    }
}

/// A transaction that began before the in-doubt transaction was resolved (committed), and
/// updated a key the resolved transaction changed, must not commit afterwards: its update
/// would silently overwrite the resolved one (lost update).
#[test]
fn crash_then_resolve_commit_conflicts_with_older_snapshots() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = run_child(dir.path(), "prepare");
    let db = open(dir.path());
    let old = db.begin(TransactionMode::ForWriting).unwrap();
    let s = old.open_raw_btree("a").unwrap();
    assert_eq!(s.get(b"a01").unwrap().as_deref(), Some(&b"base-a1"[..]));
    s.upsert(b"a01", b"old-snapshot").unwrap();
    db.resolve_in_doubt(id, true).unwrap();
    let r = old.commit();
    let now = get(&db, "a", "a01");
    assert_retryable(
        r,
        &format!(
            "update of a01 from a snapshot older than the resolution (a01 is now {:?})",
            now.as_deref().map(String::from_utf8_lossy)
        ),
    );
    assert_eq!(now.as_deref(), Some(&b"t1-a01"[..]));
}

fn commit_put_opts(db: &Database, store: &str, key: &str, value: &[u8]) {
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_raw_btree(store, crash_store_options(store))
        .unwrap()
        .upsert(key.as_bytes(), value)
        .unwrap();
    tx.commit().unwrap();
}

/// `n` commits of overwritten values in store `filler`.
fn write_filler(db: &Database, n: usize) {
    for i in 0..n {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        let s = tx.new_raw_btree("filler", small(8)).unwrap();
        for j in 0..4 {
            s.upsert(
                format!("f{}", (i * 4 + j) % 24).as_bytes(),
                &blob(&format!("{i}"), 600),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
}

/// Keys the prepared transaction of the crash tests reads or changes.
const T1_KEYS: [&str; 9] = [
    "a01", "a02", "a17", "a30", "a40", "b03", "b04", "b11", "b20",
];

/// `rounds` commits that overwrite every base item the prepared transaction does not touch
/// (so the log segment holding its prepare record holds nothing live any more), in the
/// database and in `model`.
fn rewrite_untouched(db: &Database, model: &mut Model, rounds: usize) {
    for round in 0..rounds {
        let mut ops: Vec<Op> = Vec::new();
        for store in ["a", "b"] {
            for k in model[store].keys() {
                let k = String::from_utf8(k.clone()).unwrap();
                if T1_KEYS.contains(&k.as_str()) {
                    continue;
                }
                let len = if store == "a" { 20 } else { 1500 };
                ops.push((store, k.clone(), Some(blob(&format!("r{round}-{k}"), len))));
            }
        }
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        apply_ops(&tx, &ops);
        tx.commit().unwrap();
        model_apply(model, &ops);
    }
}

/// Names of the files in the log folder.
fn log_files(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}
