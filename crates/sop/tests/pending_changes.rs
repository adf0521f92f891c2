//! A transaction's single insert into, or single removal from, a committed leaf is kept
//! pending (the leaf is changed after the commit's write, not in the `add` or `remove`):
//! everything the transaction does afterwards sees it, what it commits is what an eager copy
//! would have committed, and readers of the version it replaces keep seeing that version.

use std::collections::BTreeMap;
use std::ops::Bound;

use anyhow::Result;
use sop::{Database, DatabaseOptions, RawBtree, StoreOptions, TransactionMode};

fn open(dir: &std::path::Path) -> Result<Database> {
    Ok(Database::open(DatabaseOptions::new(dir))?)
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

fn value(i: u32, tag: u8) -> Vec<u8> {
    // Longer than an item holds inline: the value has its own buffer.
    vec![tag; 40 + (i % 50) as usize]
}

/// A store of even keys 0, 2, ..., 2 * (n - 1), committed.
fn seeded(db: &Database, n: u32) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.new_raw_btree("s", StoreOptions::default())?;
    let mut model = BTreeMap::new();
    for i in (0..n).map(|i| i * 2) {
        s.add(&key(i), &value(i, 1))?;
        model.insert(key(i), value(i, 1));
    }
    tx.commit()?;
    Ok(model)
}

fn contents(s: &RawBtree) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    s.for_each_in(Bound::Unbounded, Bound::Unbounded, |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })?;
    Ok(out)
}

/// Asserts that store "s" of `db`, read in a transaction of its own, holds what `model` holds.
fn assert_holds(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<()> {
    let tx = db.begin(TransactionMode::ForReading)?;
    assert_eq!(contents(&tx.open_raw_btree("s")?)?, model_pairs(model));
    Ok(())
}

/// Reopens the database in `dir` and asserts that store "s" holds what `model` holds and that
/// the folder verifies.
fn assert_reopened_holds(dir: &std::path::Path, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<()> {
    let db = open(dir)?;
    assert_holds(&db, model)?;
    assert!(db.verify()?.is_ok(), "{:?}", db.verify()?);
    Ok(())
}

fn model_pairs(m: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[test]
fn the_transaction_sees_its_pending_insert() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    let mut model = seeded(&db, 40)?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.open_raw_btree("s")?;
    assert!(s.add(&key(7), &value(7, 2))?);
    model.insert(key(7), value(7, 2));
    // Point reads, the count, a scan and the cursor all see it.
    assert_eq!(s.get(&key(7))?, Some(value(7, 2)));
    assert!(s.contains_key(&key(7))?);
    assert_eq!(s.count()?, 41);
    assert_eq!(contents(&s)?, model_pairs(&model));
    assert!(s.find(&key(7), true)?);
    assert_eq!(s.current_value()?, Some(value(7, 2)));
    assert!(s.next()?);
    assert_eq!(s.current_key()?.map(|(k, _)| k), Some(key(8)));
    // An add of the same key is refused; others go into the same leaf.
    assert!(!s.add(&key(7), &value(7, 3))?);
    assert!(s.add(&key(9), &value(9, 2))?);
    model.insert(key(9), value(9, 2));
    tx.commit()?;
    drop((s, tx, db));
    assert_reopened_holds(dir.path(), &model)
}

#[test]
fn a_pending_insert_then_removed_or_updated_commits_the_result() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model;
    {
        let db = open(dir.path())?;
        model = seeded(&db, 40)?;
        // Added then removed: nothing changes.
        {
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_raw_btree("s")?;
            assert!(s.add(&key(11), &value(11, 2))?);
            assert!(s.remove(&key(11))?);
            tx.commit()?;
        }
        // Added then updated: the update is committed.
        {
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_raw_btree("s")?;
            assert!(s.add(&key(13), &value(13, 2))?);
            assert!(s.update(&key(13), &value(13, 5))?);
            model.insert(key(13), value(13, 5));
            tx.commit()?;
        }
        assert_holds(&db, &model)?;
    }
    let db = open(dir.path())?;
    assert_holds(&db, &model)?;
    Ok(())
}

#[test]
fn single_insert_commits_read_back_cold_and_warm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model;
    {
        let db = open(dir.path())?;
        model = seeded(&db, 200)?;
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 0..600u32 {
            let i = rng.u32(..400) * 2 + 1;
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_raw_btree("s")?;
            let added = s.add(&key(i), &value(i, (n % 200) as u8))?;
            assert_eq!(added, !model.contains_key(&key(i)));
            if added {
                model.insert(key(i), value(i, (n % 200) as u8));
            }
            tx.commit()?;
            // Warm: the leaf the commit built after its write is the one readers get.
            if n % 50 == 0 {
                assert_holds(&db, &model)?;
            }
        }
        assert!(db.verify()?.is_ok(), "{:?}", db.verify()?);
    }
    // Cold: leaves rebuilt from their images and one-insert deltas.
    let db = open(dir.path())?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_raw_btree("s")?;
    assert_eq!(contents(&s)?, model_pairs(&model));
    for (k, v) in &model {
        assert_eq!(s.get(k)?.as_ref(), Some(v));
    }
    Ok(())
}

#[test]
fn concurrent_pending_inserts_into_one_leaf_both_commit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    let mut model = seeded(&db, 40)?;
    let a = db.begin(TransactionMode::ForWriting)?;
    let b = db.begin(TransactionMode::ForWriting)?;
    assert!(a.open_raw_btree("s")?.add(&key(21), &value(21, 3))?);
    assert!(b.open_raw_btree("s")?.add(&key(23), &value(23, 4))?);
    a.commit()?;
    // `b` changed the leaf `a` changed: it is merged over `a`'s commit.
    b.commit()?;
    model.insert(key(21), value(21, 3));
    model.insert(key(23), value(23, 4));
    assert_holds(&db, &model)?;
    Ok(())
}

#[test]
fn a_pending_insert_goes_through_two_phase_commit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model;
    {
        let db = open(dir.path())?;
        model = seeded(&db, 40)?;
        let tx = db.begin(TransactionMode::ForWriting)?;
        assert!(tx.open_raw_btree("s")?.add(&key(31), &value(31, 6))?);
        tx.phase1_commit()?;
        tx.phase2_commit()?;
        model.insert(key(31), value(31, 6));
    }
    let db = open(dir.path())?;
    assert_holds(&db, &model)?;
    Ok(())
}

#[test]
fn the_transaction_sees_its_pending_removal() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    let mut model = seeded(&db, 40)?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.open_raw_btree("s")?;
    assert!(s.remove(&key(14))?);
    model.remove(&key(14));
    // Point reads, the count, a scan and the cursor all miss it.
    assert_eq!(s.get(&key(14))?, None);
    assert!(!s.contains_key(&key(14))?);
    assert_eq!(s.count()?, 39);
    assert_eq!(contents(&s)?, model_pairs(&model));
    assert!(!s.find(&key(14), true)?);
    assert_eq!(s.current_key()?.map(|(k, _)| k), Some(key(16)));
    assert!(s.previous()?);
    assert_eq!(s.current_key()?.map(|(k, _)| k), Some(key(12)));
    // A second removal of it finds nothing; another in the same leaf goes on from it.
    assert!(!s.remove(&key(14))?);
    assert!(s.remove(&key(16))?);
    model.remove(&key(16));
    tx.commit()?;
    drop((s, tx, db));
    assert_reopened_holds(dir.path(), &model)
}

#[test]
fn a_pending_removal_then_added_back_or_followed_by_an_insert_commits_the_result() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model;
    {
        let db = open(dir.path())?;
        model = seeded(&db, 40)?;
        // Removed then added back with another value: the new value is committed.
        {
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_raw_btree("s")?;
            assert!(s.remove(&key(20))?);
            assert!(s.add(&key(20), &value(20, 7))?);
            model.insert(key(20), value(20, 7));
            tx.commit()?;
        }
        // Removed, and a new key inserted next to it.
        {
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_raw_btree("s")?;
            assert!(s.remove(&key(22))?);
            assert!(s.add(&key(23), &value(23, 8))?);
            model.remove(&key(22));
            model.insert(key(23), value(23, 8));
            tx.commit()?;
        }
        // Removed, then the transaction rolls back: nothing changes.
        {
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_raw_btree("s")?;
            assert!(s.remove(&key(24))?);
            tx.rollback()?;
        }
        assert_holds(&db, &model)?;
    }
    assert_reopened_holds(dir.path(), &model)
}

#[test]
fn single_removal_commits_read_back_cold_and_warm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model;
    {
        let db = open(dir.path())?;
        model = seeded(&db, 400)?;
        let mut rng = fastrand::Rng::with_seed(11);
        for n in 0..500u32 {
            // Mostly removals of present keys, some of absent ones, some inserts back.
            let i = rng.u32(..450) * 2;
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_raw_btree("s")?;
            if n % 5 == 4 {
                let added = s.add(&key(i), &value(i, (n % 200) as u8))?;
                assert_eq!(added, !model.contains_key(&key(i)));
                if added {
                    model.insert(key(i), value(i, (n % 200) as u8));
                }
            } else {
                let removed = s.remove(&key(i))?;
                assert_eq!(removed, model.remove(&key(i)).is_some());
            }
            tx.commit()?;
            // Warm: the leaf the commit built after its write is the one readers get.
            if n % 50 == 0 {
                assert_holds(&db, &model)?;
            }
        }
        assert!(db.verify()?.is_ok(), "{:?}", db.verify()?);
    }
    // Cold: leaves rebuilt from their images and one-item deltas.
    let db = open(dir.path())?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_raw_btree("s")?;
    assert_eq!(contents(&s)?, model_pairs(&model));
    for i in 0..900 {
        assert_eq!(s.get(&key(i))?, model.get(&key(i)).cloned());
    }
    Ok(())
}

#[test]
fn concurrent_pending_removals_from_one_leaf_both_commit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    let mut model = seeded(&db, 40)?;
    let a = db.begin(TransactionMode::ForWriting)?;
    let b = db.begin(TransactionMode::ForWriting)?;
    assert!(a.open_raw_btree("s")?.remove(&key(30))?);
    assert!(b.open_raw_btree("s")?.remove(&key(34))?);
    a.commit()?;
    // `b` changed the leaf `a` changed: it is merged over `a`'s commit.
    b.commit()?;
    model.remove(&key(30));
    model.remove(&key(34));
    assert_holds(&db, &model)?;
    Ok(())
}

#[test]
fn a_pending_removal_goes_through_two_phase_commit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model;
    {
        let db = open(dir.path())?;
        model = seeded(&db, 40)?;
        let tx = db.begin(TransactionMode::ForWriting)?;
        assert!(tx.open_raw_btree("s")?.remove(&key(36))?);
        tx.phase1_commit()?;
        tx.phase2_commit()?;
        model.remove(&key(36));
    }
    let db = open(dir.path())?;
    assert_holds(&db, &model)?;
    Ok(())
}

/// The leaf a pending change is applied to after the commit is changed in place only when no
/// one else holds it: a reader that began before the commit, and read the leaf, still sees
/// the version it read, through small and large commits alike.
#[test]
fn readers_keep_the_leaf_versions_pending_changes_replace() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    let before = seeded(&db, 3000)?;
    let mut model = before.clone();
    let reader = db.begin(TransactionMode::ForReading)?;
    let rs = reader.open_raw_btree("s")?;
    // The reader reads every leaf.
    assert_eq!(contents(&rs)?, model_pairs(&before));
    // A small commit: one removal and, in another leaf, one insert.
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.open_raw_btree("s")?;
    assert!(s.remove(&key(100))?);
    assert!(s.add(&key(3001), &value(3001, 4))?);
    tx.commit()?;
    model.remove(&key(100));
    model.insert(key(3001), value(3001, 4));
    // A large commit (enough leaves to be encoded on two threads): one removal or one insert
    // in each of many leaves.
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.open_raw_btree("s")?;
    for i in (0..3000u32).step_by(40) {
        if i % 80 == 0 {
            assert!(s.remove(&key(i * 2 + 2))?);
            model.remove(&key(i * 2 + 2));
        } else {
            assert!(s.add(&key(i * 2 + 1), &value(i * 2 + 1, 5))?);
            model.insert(key(i * 2 + 1), value(i * 2 + 1, 5));
        }
    }
    tx.commit()?;
    assert_eq!(contents(&rs)?, model_pairs(&before));
    assert_eq!(rs.get(&key(100))?, Some(value(100, 1)));
    assert_eq!(rs.get(&key(3001))?, None);
    assert_holds(&db, &model)?;
    drop((rs, reader));
    assert_holds(&db, &model)?;
    Ok(())
}
