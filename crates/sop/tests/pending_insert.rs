//! A transaction's single insert into a committed leaf is kept pending (the leaf is copied
//! after the commit's write, not in the `add`): everything the transaction does afterwards
//! sees it, and what it commits is what an eager copy would have committed.

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
    let db = open(dir.path())?;
    assert_holds(&db, &model)?;
    assert!(db.verify()?.is_ok(), "{:?}", db.verify()?);
    Ok(())
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
