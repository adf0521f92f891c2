//! Basic behaviour of databases, transactions and stores.

use anyhow::Result;
use sop::{Database, DatabaseOptions, Error, StoreOptions, TransactionMode, ValuePlacement};

fn open(dir: &std::path::Path) -> Result<Database> {
    Ok(Database::open(DatabaseOptions::new(dir))?)
}

#[test]
fn add_commit_reopen_read() -> Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let db = open(dir.path())?;
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.new_btree::<u64, String>(
            "s",
            StoreOptions {
                slot_length: 8,
                ..StoreOptions::default()
            },
        )?;
        for i in 0..1000u64 {
            assert!(s.add(&i, &format!("v{i}"))?);
        }
        assert!(!s.add(&5, &"dup".into())?);
        assert_eq!(s.count()?, 1000);
        tx.commit()?;
    }
    let db = open(dir.path())?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_btree::<u64, String>("s")?;
    assert_eq!(s.count()?, 1000);
    for i in 0..1000u64 {
        assert_eq!(s.get(&i)?, Some(format!("v{i}")));
    }
    let keys: Vec<u64> = s
        .range(10..20)
        .map(|r| r.map(|i| i.key))
        .collect::<sop::Result<_>>()?;
    assert_eq!(keys, (10..20).collect::<Vec<_>>());
    let keys: Vec<u64> = s
        .range(10..=20)
        .rev()
        .map(|r| r.map(|i| i.key))
        .collect::<sop::Result<_>>()?;
    assert_eq!(keys, (10..=20).rev().collect::<Vec<_>>());
    assert!(db.verify()?.is_ok(), "{:?}", db.verify()?);
    Ok(())
}

#[test]
fn rollback_and_drop_discard() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    {
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.new_btree::<String, String>("gone", StoreOptions::default())?;
        s.add(&"a".into(), &"1".into())?;
        tx.rollback()?;
        assert!(matches!(
            s.add(&"b".into(), &"2".into()),
            Err(Error::TransactionClosed)
        ));
    }
    {
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.new_btree::<String, String>("gone2", StoreOptions::default())?;
        s.add(&"a".into(), &"1".into())?;
        // dropped without commit
    }
    let tx = db.begin(TransactionMode::ForReading)?;
    assert!(matches!(
        tx.open_btree::<String, String>("gone"),
        Err(Error::StoreNotFound(_))
    ));
    assert!(tx.stores()?.is_empty());
    Ok(())
}

#[test]
fn value_placements_and_deletes() -> Result<()> {
    for placement in [
        ValuePlacement::InNode,
        ValuePlacement::SeparateBlob,
        ValuePlacement::ActivelyPersisted,
    ] {
        let dir = tempfile::tempdir()?;
        {
            let db = open(dir.path())?;
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.new_btree::<u32, Vec<u8>>(
                "s",
                StoreOptions {
                    slot_length: 4,
                    value_placement: placement,
                    ..StoreOptions::default()
                },
            )?;
            for i in 0..200u32 {
                s.add(&i, &vec![i as u8; 300])?;
            }
            tx.commit()?;
            let tx = db.begin(TransactionMode::ForWriting)?;
            let s = tx.open_btree::<u32, Vec<u8>>("s")?;
            for i in (0..200u32).step_by(2) {
                assert!(s.remove(&i)?);
            }
            assert!(s.update(&1, &vec![9; 10])?);
            tx.commit()?;
            let r = db.verify()?;
            assert!(r.is_ok(), "{placement:?}: {r:?}");
        }
        let db = open(dir.path())?;
        let tx = db.begin(TransactionMode::ForReading)?;
        let s = tx.open_btree::<u32, Vec<u8>>("s")?;
        assert_eq!(s.count()?, 100);
        assert_eq!(s.get(&1)?, Some(vec![9; 10]));
        assert_eq!(s.get(&3)?, Some(vec![3; 300]));
        assert_eq!(s.get(&2)?, None);
        assert!(db.verify()?.is_ok());
    }
    Ok(())
}

#[test]
fn second_open_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let _db = open(dir.path())?;
    assert!(matches!(
        open(dir.path()).map_err(|e| e.downcast::<Error>()),
        Err(Ok(Error::Locked { .. }))
    ));
    Ok(())
}
