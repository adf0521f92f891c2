//! Group commit: many threads commit small durable transactions at once (one sync may cover
//! several commits). Every acknowledged commit must be there after a reopen, exactly once.
//! No timing is asserted here: speed is the benchmark harness's business.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::join_all;
use sop::{Database, DatabaseOptions, Durability, StoreOptions, TransactionMode};

const THREADS: u64 = 8;
const COMMITS: u64 = 200;

fn open(dir: &std::path::Path) -> Database {
    let mut opts = DatabaseOptions::new(dir);
    opts.durability = Durability::Immediate;
    Database::open(opts).unwrap()
}

fn key(t: u64, i: u64) -> u64 {
    t * 1_000_000 + i
}

#[test]
fn concurrent_durable_single_insert_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let seq0 = {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        tx.new_btree::<u64, String>(
            "s",
            StoreOptions {
                slot_length: 32,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        tx.commit().unwrap();
        db.commit_seq().unwrap()
    };

    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, start) = (db.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut attempts = 0u64;
                for i in 0..COMMITS {
                    attempts += add_one(&db, t, i);
                    // Acknowledged means visible to a transaction begun afterwards.
                    if i.is_multiple_of(50) {
                        let r = db.begin(TransactionMode::ForReading).unwrap();
                        let s = r.open_btree::<u64, String>("s").unwrap();
                        assert_eq!(s.get(&key(t, i)).unwrap(), Some(format!("{t}/{i}")));
                    }
                }
                attempts
            })
        })
        .collect();
    let attempts: u64 = join_all(threads).into_iter().sum();
    eprintln!("{} commits in {attempts} attempts", THREADS * COMMITS);
    // Disjoint keys never conflict at item level: every first attempt committed.
    assert_eq!(
        attempts,
        THREADS * COMMITS,
        "false conflicts between disjoint inserts"
    );
    assert!(db.commit_seq().unwrap() - seq0 >= THREADS * COMMITS);
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
    drop(db);

    let db = open(dir.path());
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let s = tx.open_btree::<u64, String>("s").unwrap();
    assert_eq!(s.count().unwrap(), THREADS * COMMITS);
    let mut expect = Vec::new();
    for t in 0..THREADS {
        for i in 0..COMMITS {
            expect.push((key(t, i), format!("{t}/{i}")));
        }
    }
    let got: Vec<(u64, String)> = s
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap();
    assert_eq!(got, expect);
    drop(tx);
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.items, THREADS * COMMITS);
}

/// Commits to different stores, one per thread, including stores created concurrently.
#[test]
fn concurrent_durable_commits_to_many_stores() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            thread::spawn(move || {
                let name = format!("store{t}");
                for i in 0..COMMITS / 4 {
                    db.transact(|tx| {
                        let s = tx.new_btree::<u64, u64>(&name, StoreOptions::default())?;
                        assert!(s.add(&i, &(t * i))?);
                        Ok(())
                    })
                    .unwrap_or_else(|e| panic!("commit {t}/{i}: {e}"));
                }
            })
        })
        .collect();
    join_all(threads);
    drop(db);

    let db = open(dir.path());
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    assert_eq!(tx.stores().unwrap().len(), THREADS as usize);
    for t in 0..THREADS {
        let s = tx.open_btree::<u64, u64>(&format!("store{t}")).unwrap();
        assert_eq!(s.count().unwrap(), COMMITS / 4);
        for i in 0..COMMITS / 4 {
            assert_eq!(s.get(&i).unwrap(), Some(t * i));
        }
    }
    drop(tx);
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

/// The items of store "s" in key order.
fn items(db: &Database) -> Vec<(u64, String)> {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let s = tx.open_btree::<u64, String>("s").unwrap();
    s.iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap()
}

/// Thread `t`'s commit `i`: one item added to store "s". Returns the attempts it took
/// (`transact` retries a conflict).
fn add_one(db: &Database, t: u64, i: u64) -> u64 {
    let mut attempts = 0;
    db.transact(|tx| {
        attempts += 1;
        let s = tx.open_btree::<u64, String>("s")?;
        assert!(s.add(&key(t, i), &format!("{t}/{i}"))?, "added twice");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("commit {t}/{i}: {e}"));
    attempts
}

fn new_store(db: &Database) {
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.new_btree::<u64, String>("s", StoreOptions::default())
        .unwrap();
    tx.commit().unwrap();
}

/// A sync's leader waits a little for the committers the last sync covered (ADR 0012). Here
/// they stop one after the other (thread `t` makes `10 * (t + 1)` commits): the ones still
/// committing must never wait for those gone, and every commit is there after a reopen.
#[test]
fn committers_that_stop_do_not_hold_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    new_store(&db);
    let start = Arc::new(Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, start) = (db.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for i in 0..10 * (t + 1) {
                    add_one(&db, t, i);
                }
            })
        })
        .collect();
    join_all(threads);
    let expect: Vec<(u64, String)> = (0..THREADS)
        .flat_map(|t| (0..10 * (t + 1)).map(move |i| (key(t, i), format!("{t}/{i}"))))
        .collect();
    assert_eq!(items(&db), expect);
    drop(db);
    let db = open(dir.path());
    assert_eq!(items(&db), expect);
}

/// The committers a sync waits for are counted per database: threads that commit in turn to
/// two databases (one sync covering a commit of one says nothing about the other) have every
/// commit acknowledged and there after a reopen.
#[test]
fn threads_committing_to_two_databases_in_turn() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let dbs: Vec<Database> = dirs.iter().map(|d| open(d.path())).collect();
    for db in &dbs {
        new_store(db);
    }
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let dbs = dbs.clone();
            thread::spawn(move || {
                for i in 0..COMMITS {
                    // Thread t starts with database t % 2, then alternates.
                    add_one(&dbs[usize::from((t + i) % 2 == 1)], t, i);
                }
            })
        })
        .collect();
    join_all(threads);
    drop(dbs);
    for (n, dir) in dirs.iter().enumerate() {
        let expect: Vec<(u64, String)> = (0..4u64)
            .flat_map(|t| {
                (0..COMMITS)
                    .filter(move |i| usize::from((t + i) % 2 == 1) == n)
                    .map(move |i| (key(t, i), format!("{t}/{i}")))
            })
            .collect();
        assert_eq!(items(&open(dir.path())), expect, "database {n}");
    }
}
