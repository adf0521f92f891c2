//! Clustered mode with several `Database` handles on one folder in one process (each handle
//! has its own segments, state and caches, exactly as separate processes do; the Redis
//! coordinator and real multi-process runs are tested in `sop-redis`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sop::{
    ClusterOptions, Coordinator, Database, DatabaseOptions, Error, Lease, LocalCoordinator,
    StoreOptions, TransactionMode,
};

fn opts(dir: &Path) -> DatabaseOptions {
    let mut o = DatabaseOptions::new(dir);
    o.segment_bytes = 1 << 16;
    o.checkpoint_bytes = 1 << 17;
    o
}

fn open(dir: &Path, coord: &Arc<dyn Coordinator>) -> Database {
    let c = Arc::clone(coord);
    Database::open_clustered(opts(dir), ClusterOptions::default(), move |_| Ok(c)).unwrap()
}

fn local() -> Arc<dyn Coordinator> {
    Arc::new(LocalCoordinator::new())
}

/// A coordinator that grants the lease to everybody at once: the storage-level decision
/// (commit markers) must keep commits correct anyway. With `loses_lease`, every lease looks
/// granted a while ago and lost when renewed (a committer that stalled past its TTL).
#[derive(Debug, Default)]
struct GrantsEveryone {
    loses_lease: bool,
}

impl Coordinator for GrantsEveryone {
    fn acquire_commit_lease(&self, ttl: Duration, _wait: Duration) -> sop::Result<Lease> {
        let now = std::time::Instant::now();
        Ok(Lease {
            token: fastrand::u128(..),
            fence: 1,
            granted: if self.loses_lease {
                now.checked_sub(ttl / 2).unwrap()
            } else {
                now
            },
            ttl,
        })
    }
    fn renew_commit_lease(&self, _lease: &Lease, _ttl: Duration) -> sop::Result<bool> {
        Ok(!self.loses_lease)
    }
    fn release_commit_lease(&self, _lease: &Lease, _seq: u64) -> sop::Result<()> {
        Ok(())
    }
    fn latest_seq_hint(&self) -> sop::Result<Option<u64>> {
        Ok(None)
    }
    fn cache_get(&self, _key: &str) -> sop::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn cache_put(&self, _key: &str, _value: &[u8], _ttl: Duration) -> sop::Result<()> {
        Ok(())
    }
}

fn put(db: &Database, store: &str, k: u64, v: &str) {
    db.transact(|tx| {
        let b = tx.new_btree::<u64, String>(store, StoreOptions::default())?;
        b.upsert(&k, &v.to_string())?;
        Ok(())
    })
    .unwrap();
}

fn all(db: &Database, store: &str) -> BTreeMap<u64, String> {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let b = tx.open_btree::<u64, String>(store).unwrap();
    b.iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap()
}

#[test]
fn a_commit_of_one_handle_is_seen_by_the_other_at_begin() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    let b = open(dir.path(), &coord);
    assert_eq!(a.cluster_id(), b.cluster_id());
    put(&a, "s", 1, "one");
    assert_eq!(all(&b, "s"), BTreeMap::from([(1, "one".to_string())]));
    put(&b, "s", 2, "two");
    put(&a, "s", 3, "three");
    assert_eq!(all(&a, "s").len(), 3);
    assert_eq!(all(&b, "s"), all(&a, "s"));
    assert_eq!(a.commit_seq().unwrap(), b.commit_seq().unwrap());
    assert!(a.verify().unwrap().is_ok());
    assert!(b.verify().unwrap().is_ok());
}

#[test]
fn disjoint_changes_to_one_leaf_from_two_handles_merge() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    let b = open(dir.path(), &coord);
    for k in 0..10 {
        put(&a, "s", k, "base");
    }
    let ta = a.begin(TransactionMode::ForWriting).unwrap();
    let tb = b.begin(TransactionMode::ForWriting).unwrap();
    ta.open_btree::<u64, String>("s")
        .unwrap()
        .add(&100, &"a".into())
        .unwrap();
    tb.open_btree::<u64, String>("s")
        .unwrap()
        .update(&5, &"b".into())
        .unwrap();
    tb.open_btree::<u64, String>("s")
        .unwrap()
        .remove(&6)
        .unwrap();
    ta.commit().unwrap();
    tb.commit().unwrap();
    let m = all(&a, "s");
    assert_eq!(m.get(&100).map(String::as_str), Some("a"));
    assert_eq!(m.get(&5).map(String::as_str), Some("b"));
    assert!(!m.contains_key(&6));
    assert_eq!(m.len(), 10);
    assert_eq!(all(&b, "s"), m);
    let tx = b.begin(TransactionMode::ForReading).unwrap();
    assert_eq!(
        tx.open_btree::<u64, String>("s").unwrap().count().unwrap(),
        10
    );
}

#[test]
fn a_read_write_conflict_across_handles_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    let b = open(dir.path(), &coord);
    put(&a, "s", 1, "v0");
    let ta = a.begin(TransactionMode::ForWriting).unwrap();
    let tb = b.begin(TransactionMode::ForWriting).unwrap();
    let va = ta.open_btree::<u64, String>("s").unwrap().get(&1).unwrap();
    let vb = tb.open_btree::<u64, String>("s").unwrap().get(&1).unwrap();
    assert_eq!(va, vb);
    ta.open_btree::<u64, String>("s")
        .unwrap()
        .update(&1, &"a".into())
        .unwrap();
    tb.open_btree::<u64, String>("s")
        .unwrap()
        .update(&1, &"b".into())
        .unwrap();
    ta.commit().unwrap();
    let e = tb.commit().unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(all(&b, "s").get(&1).map(String::as_str), Some("a"));
}

#[test]
fn stores_created_by_two_handles_get_distinct_ids_and_same_name_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    let b = open(dir.path(), &coord);
    let ta = a.begin(TransactionMode::ForWriting).unwrap();
    let tb = b.begin(TransactionMode::ForWriting).unwrap();
    ta.new_btree::<u64, String>("x", StoreOptions::default())
        .unwrap()
        .add(&1, &"x".into())
        .unwrap();
    tb.new_btree::<u64, String>("y", StoreOptions::default())
        .unwrap()
        .add(&1, &"y".into())
        .unwrap();
    ta.commit().unwrap();
    tb.commit().unwrap();
    // Had they shared a store id, one's nodes would have replaced the other's.
    assert_eq!(all(&a, "x"), BTreeMap::from([(1, "x".to_string())]));
    assert_eq!(all(&b, "y"), BTreeMap::from([(1, "y".to_string())]));
    // Both create "z": the second is refused.
    let ta = a.begin(TransactionMode::ForWriting).unwrap();
    let tb = b.begin(TransactionMode::ForWriting).unwrap();
    ta.new_btree::<u64, String>("z", StoreOptions::default())
        .unwrap()
        .add(&1, &"a".into())
        .unwrap();
    tb.new_btree::<u64, String>("z", StoreOptions::default())
        .unwrap()
        .add(&2, &"b".into())
        .unwrap();
    ta.commit().unwrap();
    assert!(tb.commit().unwrap_err().is_retryable());
    assert!(a.verify().unwrap().is_ok());
}

/// Threads of two handles move money; `coord` decides how the lease behaves. Returns how many
/// commits lost the race for their commit marker.
fn bank(coord: Arc<dyn Coordinator>, transfers_per_thread: u64) -> u64 {
    const ACCOUNTS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let handles = [open(dir.path(), &coord), open(dir.path(), &coord)];
    handles[0]
        .transact(|tx| {
            let acc = tx.new_btree::<u64, i64>("acc", StoreOptions::default())?;
            for a in 0..ACCOUNTS {
                acc.upsert(&a, &100)?;
            }
            tx.new_btree::<(u64, u64), i64>("log", StoreOptions::default())?;
            Ok(())
        })
        .unwrap();
    let mut workers = Vec::new();
    for t in 0..4u64 {
        let db = handles[(t % 2) as usize].clone();
        workers.push(thread::spawn(move || {
            let mut lost = 0u64;
            let mut rng = fastrand::Rng::with_seed(t);
            for n in 0..transfers_per_thread {
                let from = rng.u64(..ACCOUNTS);
                let to = (from + 1 + rng.u64(..ACCOUNTS - 1)) % ACCOUNTS;
                let amount = rng.i64(1..10);
                loop {
                    let tx = db.begin(TransactionMode::ForWriting).unwrap();
                    let r = (|| {
                        let acc = tx.open_btree::<u64, i64>("acc")?;
                        let f = acc.get(&from)?.unwrap_or(0);
                        let g = acc.get(&to)?.unwrap_or(0);
                        acc.update(&from, &(f - amount))?;
                        acc.update(&to, &(g + amount))?;
                        tx.open_btree::<(u64, u64), i64>("log")?
                            .add(&(t, n), &amount)?;
                        tx.commit()
                    })();
                    match r {
                        Ok(()) => break,
                        Err(e) if e.to_string().contains("decided by another process") => {
                            lost += 1;
                        }
                        Err(e) if e.is_retryable() => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            lost
        }));
    }
    let lost: u64 = common::join_all(workers).into_iter().sum();
    for db in &handles {
        let tx = db.begin(TransactionMode::ForReading).unwrap();
        let acc = tx.open_btree::<u64, i64>("acc").unwrap();
        let total: i64 = acc.iter().map(|i| i.unwrap().value).sum();
        assert_eq!(total, 100 * ACCOUNTS as i64);
        let log = tx.open_btree::<(u64, u64), i64>("log").unwrap();
        assert_eq!(log.count().unwrap(), 4 * transfers_per_thread);
        drop(tx);
        let r = db.verify().unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
    drop(handles);
    // Reopened standalone: the same data, from the markers.
    let db = Database::open(opts(dir.path())).unwrap();
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let acc = tx.open_btree::<u64, i64>("acc").unwrap();
    let total: i64 = acc.iter().map(|i| i.unwrap().value).sum();
    assert_eq!(total, 100 * ACCOUNTS as i64);
    assert_eq!(
        tx.open_btree::<(u64, u64), i64>("log")
            .unwrap()
            .count()
            .unwrap(),
        4 * transfers_per_thread
    );
    drop(tx);
    assert!(db.verify().unwrap().is_ok());
    lost
}

#[test]
fn bank_with_two_handles_keeps_the_total() {
    assert_eq!(bank(local(), 150), 0, "the lease serializes committers");
}

#[test]
fn bank_stays_correct_when_the_coordinator_grants_the_lease_to_everyone() {
    let lost = bank(Arc::new(GrantsEveryone::default()), 150);
    eprintln!("commits that lost the marker race: {lost}");
    assert!(
        lost > 0,
        "the two handles never raced for a marker: the test tests nothing"
    );
}

#[test]
fn modes_exclude_each_other_and_a_folder_moves_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    {
        let db = Database::open(opts(dir.path())).unwrap();
        put(&db, "s", 1, "standalone");
        let c = Arc::clone(&coord);
        let e =
            Database::open_clustered(opts(dir.path()), ClusterOptions::default(), move |_| Ok(c))
                .unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    }
    {
        let a = open(dir.path(), &coord);
        assert_eq!(all(&a, "s").len(), 1);
        put(&a, "s", 2, "clustered");
        let e = Database::open(opts(dir.path())).unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e:?}");
        let b = open(dir.path(), &coord);
        put(&b, "s", 3, "clustered too");
        assert_eq!(all(&a, "s").len(), 3);
    }
    {
        let db = Database::open(opts(dir.path())).unwrap();
        assert_eq!(all(&db, "s").len(), 3);
        put(&db, "s", 4, "standalone again");
        assert!(db.verify().unwrap().is_ok());
    }
    {
        let a = open(dir.path(), &coord);
        assert_eq!(all(&a, "s").len(), 4);
        assert!(a.verify().unwrap().is_ok());
    }
    // After the last clustered handle closed, markers are dropped by the next lone opener.
    let db = Database::open(opts(dir.path())).unwrap();
    assert_eq!(all(&db, "s").len(), 4);
    let markers = std::fs::read_dir(dir.path().join("commits"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(markers, 0);
}

#[test]
fn a_newcomer_starts_from_a_clustered_checkpoint_and_the_markers_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    for k in 0..200 {
        put(&a, "s", k, "v");
    }
    a.checkpoint().unwrap();
    for k in 200..300 {
        put(&a, "s", k, "w");
    }
    let b = open(dir.path(), &coord);
    assert_eq!(all(&b, "s").len(), 300);
    assert_eq!(b.commit_seq().unwrap(), a.commit_seq().unwrap());
}

#[test]
fn two_phase_commit_is_refused_in_clustered_mode_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    let tx = a.begin(TransactionMode::ForWriting).unwrap();
    tx.new_btree::<u64, String>("s", StoreOptions::default())
        .unwrap()
        .add(&1, &"x".into())
        .unwrap();
    let e = tx.phase1_commit().unwrap_err();
    assert!(e.to_string().contains("clustered"), "{e}");
}

#[test]
fn an_unreachable_coordinator_fails_the_open_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let e = Database::open_clustered(opts(dir.path()), ClusterOptions::default(), |_| {
        Err(Error::Coordinator(
            "cannot reach redis at 127.0.0.1:1".into(),
        ))
    })
    .unwrap_err();
    assert!(matches!(e, Error::Coordinator(_)), "{e:?}");
    // Nothing is left locked.
    let db = Database::open(opts(dir.path())).unwrap();
    put(&db, "s", 1, "ok");
}

#[test]
fn the_l2_node_cache_is_used_and_a_damaged_entry_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalCoordinator::new());
    let coord: Arc<dyn Coordinator> = local.clone();
    let a = open(dir.path(), &coord);
    let cached = StoreOptions {
        node_cache_duration: Some(Duration::from_secs(60)),
        ..StoreOptions::default()
    };
    a.transact(|tx| {
        let b = tx.new_btree::<u64, String>("c", cached.clone())?;
        for k in 0..500 {
            b.add(&k, &format!("v{k}"))?;
        }
        Ok(())
    })
    .unwrap();
    // A newcomer has an empty L1 cache: its reads go through L2 and fill it.
    let b = open(dir.path(), &coord);
    assert_eq!(all(&b, "c").len(), 500);
    let n = local.damage_cache(b"not a record").unwrap();
    assert!(n > 0, "nothing went through the L2 cache");
    let c = open(dir.path(), &coord);
    let m = all(&c, "c");
    assert_eq!(m.len(), 500);
    assert_eq!(m.get(&499).map(String::as_str), Some("v499"));
    assert!(c.verify().unwrap().is_ok());
}

#[test]
fn a_committer_that_lost_its_lease_does_not_complete_and_its_record_is_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let good = local();
    let a = open(dir.path(), &good);
    put(&a, "s", 1, "before");
    let lossy: Arc<dyn Coordinator> = Arc::new(GrantsEveryone { loses_lease: true });
    let stale = open(dir.path(), &lossy);
    let tx = stale.begin(TransactionMode::ForWriting).unwrap();
    tx.open_btree::<u64, String>("s")
        .unwrap()
        .upsert(&2, &"never".into())
        .unwrap();
    let e = tx.commit().unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("lease"), "{e}");
    // Nobody sees it, the others go on, and a lone reopen drops its bytes.
    put(&a, "s", 3, "after");
    assert_eq!(
        all(&stale, "s").keys().copied().collect::<Vec<_>>(),
        vec![1, 3]
    );
    drop((a, stale));
    let db = open(dir.path(), &good);
    assert_eq!(
        all(&db, "s").keys().copied().collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert!(db.verify().unwrap().is_ok());
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn the_last_handle_to_close_settles_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    let b = open(dir.path(), &coord);
    for k in 0..50 {
        put(if k % 2 == 0 { &a } else { &b }, "s", k, "v");
    }
    drop(a);
    assert!(entries(&dir.path().join("commits")) > 0, "b still runs");
    put(&b, "s", 100, "last");
    drop(b);
    assert_eq!(entries(&dir.path().join("commits")), 0);
    assert_eq!(entries(&dir.path().join("claims")), 0);
    let c = open(dir.path(), &coord);
    assert_eq!(all(&c, "s").len(), 51);
    assert!(c.verify().unwrap().is_ok());
}

fn segments(dir: &Path) -> usize {
    entries(&dir.join("log"))
}

#[test]
fn segments_are_reclaimed_while_several_handles_run_but_not_under_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let coord = local();
    let a = open(dir.path(), &coord);
    let b = open(dir.path(), &coord);
    let value = "x".repeat(300);
    let churn = |db: &Database, rounds: u64| {
        for r in 0..rounds {
            db.transact(|tx| {
                let s = tx.new_btree::<u64, String>("s", StoreOptions::default())?;
                for k in 0..20 {
                    s.upsert(&k, &format!("{r}{value}"))?;
                }
                Ok(())
            })
            .unwrap();
        }
    };
    churn(&a, 5);
    // A reader in b holds an old snapshot: what it reads must stay.
    let reader = b.begin(TransactionMode::ForReading).unwrap();
    let before = all(&b, "s");
    for _ in 0..4 {
        churn(&a, 50);
        churn(&b, 50);
    }
    let s = reader.open_btree::<u64, String>("s").unwrap();
    let seen: BTreeMap<u64, String> = s
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap();
    assert_eq!(seen, before, "the old snapshot still reads its data");
    drop(s);
    drop(reader);
    for _ in 0..4 {
        churn(&a, 50);
        churn(&b, 50);
    }
    a.checkpoint().unwrap();
    b.checkpoint().unwrap();
    let n = segments(dir.path());
    // ~2,000 commits of ~6.5 KiB each went through 64 KiB segments (~200 of them).
    assert!(
        n < 40,
        "{n} segments left: garbage is not reclaimed while handles run"
    );
    assert!(a.verify().unwrap().is_ok());
    assert!(b.verify().unwrap().is_ok());
    assert_eq!(all(&a, "s"), all(&b, "s"));
    drop((a, b));
    let db = Database::open(opts(dir.path())).unwrap();
    assert_eq!(all(&db, "s").len(), 20);
    assert!(db.verify().unwrap().is_ok());
}
