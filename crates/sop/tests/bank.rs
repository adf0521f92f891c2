//! The bank: writers move money between accounts in `ForWriting` transactions (retried on
//! conflict with `Database::transact`) while a reader takes `ForReading` snapshots. Money is
//! neither created nor destroyed: every snapshot, the end state and the reopened database have
//! the initial total, and every transfer was applied exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use sop::{Database, DatabaseOptions, StoreOptions, Transaction, TransactionMode};

const ACCOUNTS: u32 = 100;
const THREADS: u64 = 8;
const TRANSFERS: u64 = 1_000;
const INITIAL: i64 = 1_000;
const TOTAL: i64 = ACCOUNTS as i64 * INITIAL;

/// One transfer as logged: (from, to, amount).
type Transfer = (u32, u32, i64);

/// Small segments and frequent checkpoints, so compaction, checkpoints and segment deletion
/// run while snapshots are in use.
fn open(dir: &std::path::Path) -> Database {
    let mut opts = DatabaseOptions::new(dir);
    opts.segment_bytes = 1 << 16;
    opts.checkpoint_bytes = 1 << 18;
    Database::open(opts).unwrap()
}

/// Balances, and the transfer log, as one transaction sees them.
fn balances(tx: &Transaction) -> (BTreeMap<u32, i64>, BTreeMap<u64, Transfer>) {
    let a = tx.open_btree::<u32, i64>("accounts").unwrap();
    let bal: BTreeMap<u32, i64> = a
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap();
    assert_eq!(a.count().unwrap(), u64::from(ACCOUNTS));
    let l = tx.open_btree::<u64, Transfer>("transfers").unwrap();
    let log: BTreeMap<u64, Transfer> = l
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap();
    assert_eq!(l.count().unwrap(), log.len() as u64);
    (bal, log)
}

/// Checks that the balances are the initial ones plus exactly the logged transfers.
fn check_consistent(bal: &BTreeMap<u32, i64>, log: &BTreeMap<u64, Transfer>, when: &str) {
    assert_eq!(bal.len(), ACCOUNTS as usize, "{when}: accounts");
    let total: i64 = bal.values().sum();
    assert_eq!(total, TOTAL, "{when}: total");
    let mut expect: BTreeMap<u32, i64> = (0..ACCOUNTS).map(|a| (a, INITIAL)).collect();
    for (from, to, amount) in log.values() {
        *expect.get_mut(from).unwrap() -= amount;
        *expect.get_mut(to).unwrap() += amount;
    }
    assert_eq!(
        *bal, expect,
        "{when}: balances are not the logged transfers"
    );
}

#[test]
fn transfers_keep_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        let a = tx
            .new_btree::<u32, i64>(
                "accounts",
                StoreOptions {
                    slot_length: 16,
                    ..StoreOptions::default()
                },
            )
            .unwrap();
        for i in 0..ACCOUNTS {
            assert!(a.add(&i, &INITIAL).unwrap());
        }
        tx.new_btree::<u64, Transfer>(
            "transfers",
            StoreOptions {
                slot_length: 32,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        tx.commit().unwrap();
    }

    let done = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let reader = {
        let db = db.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut snapshots = 0u64;
            loop {
                // Read `done` before the snapshot, so the last snapshot sees every transfer.
                let last = done.load(Ordering::SeqCst);
                let tx = db.begin(TransactionMode::ForReading).unwrap();
                let (bal, log) = balances(&tx);
                check_consistent(&bal, &log, &format!("snapshot {snapshots}"));
                // A snapshot does not move: reading again in it gives the same.
                if snapshots.is_multiple_of(8) {
                    thread::yield_now();
                    assert_eq!(balances(&tx), (bal, log));
                }
                tx.commit().unwrap();
                snapshots += 1;
                if last {
                    return snapshots;
                }
            }
        })
    };

    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let attempts = Arc::clone(&attempts);
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(0xBA_4C ^ t);
                let mut gave_up = 0u64;
                for i in 0..TRANSFERS {
                    let from = rng.u32(..ACCOUNTS);
                    let to = (from + rng.u32(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = rng.i64(1..=200);
                    let id = t * 1_000_000 + i;
                    let r = loop {
                        let r = db.transact(|tx| {
                            attempts.fetch_add(1, Ordering::Relaxed);
                            let a = tx.open_btree::<u32, i64>("accounts")?;
                            let fb = a.get(&from)?.expect("account exists");
                            let tb = a.get(&to)?.expect("account exists");
                            assert!(a.update(&from, &(fb - amount))?);
                            assert!(a.update(&to, &(tb + amount))?);
                            let log = tx.open_btree::<u64, Transfer>("transfers")?;
                            assert!(log.add(&id, &(from, to, amount))?, "logged twice");
                            Ok(())
                        });
                        match r {
                            // `transact` gave up after its attempts: run it again.
                            Err(e) if e.is_retryable() && gave_up < 1_000 => gave_up += 1,
                            r => break r,
                        }
                    };
                    r.unwrap_or_else(|e| panic!("transfer {t}/{i}: {e}"));
                }
                gave_up
            })
        })
        .collect();
    let results = common::join_all(writers);
    done.store(true, Ordering::SeqCst);
    let gave_up: u64 = results.into_iter().sum();
    let snapshots = reader.join().unwrap();
    assert!(snapshots >= 1);
    eprintln!(
        "{} transfers, {} attempts, {gave_up} times transact gave up, {snapshots} snapshots",
        THREADS * TRANSFERS,
        attempts.load(Ordering::Relaxed)
    );

    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let (bal, log) = balances(&tx);
    drop(tx);
    check_consistent(&bal, &log, "end");
    assert_eq!(
        log.len() as u64,
        THREADS * TRANSFERS,
        "successful transfers"
    );
    for t in 0..THREADS {
        for i in 0..TRANSFERS {
            assert!(log.contains_key(&(t * 1_000_000 + i)), "transfer {t}/{i}");
        }
    }
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
    eprintln!(
        "{} segments, {} bytes on disk, commit seq {}",
        r.segments,
        db.disk_usage().unwrap(),
        db.commit_seq().unwrap()
    );
    drop(db);

    let db = open(dir.path());
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let (bal2, log2) = balances(&tx);
    drop(tx);
    check_consistent(&bal2, &log2, "after reopen");
    assert_eq!((bal2, log2), (bal, log));
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
}
