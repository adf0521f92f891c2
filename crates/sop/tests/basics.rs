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

#[test]
fn custom_comparator_orders_keys_and_update_key_is_order_neutral() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    // Case-insensitive order: "B" and "b" are the same key.
    db.register_comparator("nocase", |a: &[u8], b: &[u8]| {
        a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())
    })?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    let opts = StoreOptions {
        comparator: Some("nocase".into()),
        ..StoreOptions::default()
    };
    let s = tx.new_raw_btree("ci", opts.clone())?;
    for k in ["b", "A", "c"] {
        assert!(s.add(k.as_bytes(), b"v")?);
    }
    assert!(!s.add(b"B", b"dup")?, "B equals b under the comparator");
    let keys: Vec<Vec<u8>> = s
        .iter()
        .map(|i| i.map(|i| i.key))
        .collect::<sop::Result<_>>()?;
    assert_eq!(keys, vec![b"A".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    // update_key may change bytes that compare equal, and nothing else.
    assert!(s.update_key(b"B", b"B")?);
    assert_eq!(s.current_key()?.map(|(k, _)| k), Some(b"B".to_vec()));
    assert!(matches!(
        s.update_key(b"c", b"d"),
        Err(Error::InvalidArgument(_))
    ));
    tx.commit()?;
    // Handles keep the database open: drop them before reopening.
    drop((s, tx, db));

    // Reopen: the store needs its comparator registered before use.
    let db = open(dir.path())?;
    let tx = db.begin(TransactionMode::ForReading)?;
    assert!(matches!(
        tx.open_raw_btree("ci"),
        Err(Error::InvalidArgument(_))
    ));
    drop(tx);
    db.register_comparator("nocase", |a: &[u8], b: &[u8]| {
        a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase())
    })?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_raw_btree("ci")?;
    assert_eq!(s.get(b"b")?, Some(b"v".to_vec()));
    assert!(s.contains_key(b"a")?);
    // Opening with other options is a clear error.
    let tx2 = db.begin(TransactionMode::ForWriting)?;
    assert!(matches!(
        tx2.new_raw_btree("ci", StoreOptions::default()),
        Err(Error::IncompatibleStore { .. })
    ));
    Ok(())
}

#[test]
fn rewriting_and_deleting_does_not_grow_the_files_without_bound() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 17,
        ..DatabaseOptions::new(dir.path())
    };
    let db = Database::open(opts)?;
    let mut high_water = 0;
    for round in 0..40u32 {
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.new_btree::<u32, Vec<u8>>(
            "s",
            StoreOptions {
                slot_length: 16,
                ..StoreOptions::default()
            },
        )?;
        for i in 0..200u32 {
            s.upsert(&i, &vec![round as u8; 200])?;
        }
        tx.commit()?;
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.open_btree::<u32, Vec<u8>>("s")?;
        for i in (0..200u32).filter(|i| i % 3 == 0) {
            s.remove(&i)?;
        }
        tx.commit()?;
        let used = db.disk_usage()?;
        if round == 10 {
            high_water = used;
        }
        if round > 10 {
            // About 45 KiB of live data: the log must stay within a small multiple of it.
            assert!(
                used <= high_water.max(1 << 20) * 2,
                "round {round}: {used} bytes on disk"
            );
        }
    }
    assert!(db.verify()?.is_ok());
    Ok(())
}

/// A second process opening the same standalone database is refused with a clear error.
#[test]
fn second_process_is_refused() -> Result<()> {
    if let Some(dir) = std::env::var_os("SOP_HOLDER_CHILD") {
        let _db = open(std::path::Path::new(&dir))?;
        println!("HOLDING");
        std::thread::sleep(std::time::Duration::from_secs(30));
        return Ok(());
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    drop(open(dir.path())?);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "second_process_is_refused",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOP_HOLDER_CHILD", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = std::io::BufReader::new(out).lines();
    let held = lines.any(|l| l.is_ok_and(|l| l.contains("HOLDING")));
    let second = open(dir.path());
    child.kill()?;
    child.wait()?;
    assert!(held, "the child did not open the database");
    let err = second
        .err()
        .ok_or_else(|| anyhow::anyhow!("second open succeeded"))?;
    let err = err.downcast::<Error>()?;
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    // Once the holder is gone the database opens again.
    drop(open(dir.path())?);
    Ok(())
}

#[test]
fn direct_io_database_round_trip() -> Result<()> {
    // O_DIRECT works on this machine's filesystems (ext4, and tmpfs on recent kernels).
    let dir = tempfile::tempdir()?;
    let opts = DatabaseOptions {
        direct_io: true,
        ..DatabaseOptions::new(dir.path())
    };
    let db = Database::open(opts.clone())?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.new_btree::<u32, String>("d", StoreOptions::default())?;
    for i in 0..500u32 {
        s.add(&i, &format!("value {i}"))?;
    }
    tx.commit()?;
    drop((s, tx, db));
    let db = Database::open(opts)?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_btree::<u32, String>("d")?;
    assert_eq!(s.count()?, 500);
    assert_eq!(s.get(&499)?, Some("value 499".into()));
    assert!(db.verify()?.is_ok());
    Ok(())
}

#[test]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Database>();
    send::<sop::Transaction>();
    send::<sop::RawBtree>();
    send::<sop::Btree<String, u64>>();
    send::<sop::RawRange>();
}

#[test]
fn get_item_and_get_items_return_the_newest_item_without_moving_the_cursor() {
    let dir = tempfile::tempdir().expect("ok");
    let db = Database::open(DatabaseOptions::new(dir.path())).expect("ok");
    let tx = db.begin(TransactionMode::ForWriting).expect("ok");
    let s = tx
        .new_raw_btree("dups", StoreOptions::unique(false))
        .expect("ok");
    s.add(b"a", b"1").expect("ok");
    s.add(b"b", b"old").expect("ok");
    s.add(b"b", b"new").expect("ok");
    s.add(b"c", b"3").expect("ok");
    assert!(s.find(b"c", false).expect("ok"));
    let b = s.get_item(b"b").expect("ok").expect("found");
    assert_eq!(
        (b.key.as_slice(), b.value.as_slice()),
        (&b"b"[..], &b"new"[..])
    );
    assert_eq!(
        s.current_key().expect("ok").map(|(k, _)| k),
        Some(b"c".to_vec())
    );
    let got = s
        .get_items([&b"c"[..], b"zz", b"a", b"b"])
        .expect("ok")
        .into_iter()
        .map(|i| i.map(|i| i.value))
        .collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            Some(b"3".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"new".to_vec())
        ]
    );
    assert_eq!(
        s.get_with(b"b", <[u8]>::to_vec).expect("ok"),
        Some(b"new".to_vec())
    );
    assert_eq!(s.get_with(b"zz", <[u8]>::len).expect("ok"), None);
    // The id is the newest duplicate's.
    assert!(s.find_with_id(b"b", b.id).expect("ok"));
    assert_eq!(s.current_value().expect("ok"), Some(b"new".to_vec()));
    tx.commit().expect("ok");
}

#[test]
fn for_each_in_matches_the_range_iterator_and_records_its_reads() {
    use std::ops::Bound;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open(DatabaseOptions::new(dir.path())).expect("open");
    let tx = db.begin(TransactionMode::ForWriting).expect("begin");
    for (name, unique) in [("u", true), ("d", false)] {
        let s = tx
            .new_raw_btree(
                name,
                StoreOptions {
                    slot_length: 4,
                    ..StoreOptions::unique(unique)
                },
            )
            .expect("store");
        for i in 0u32..300 {
            let k = format!("k{:04}", (i * 7) % 200).into_bytes();
            s.add(&k, &i.to_le_bytes()).expect("add");
        }
    }
    tx.commit().expect("commit");
    let tx = db.begin(TransactionMode::ForReading).expect("begin");
    let mut rng = fastrand::Rng::with_seed(7);
    for name in ["u", "d"] {
        let s = tx.open_raw_btree(name).expect("open");
        for _ in 0..200 {
            let a = format!("k{:04}", rng.u32(..210)).into_bytes();
            let b = format!("k{:04}", rng.u32(..210)).into_bytes();
            let (lo, hi) = match rng.u8(..3) {
                0 => (Bound::Included(a.clone()), Bound::Excluded(b.clone())),
                1 => (Bound::Excluded(a.clone()), Bound::Included(b.clone())),
                _ => (Bound::Unbounded, Bound::Unbounded),
            };
            let want: Vec<(Vec<u8>, Vec<u8>)> = s
                .range((lo.clone(), hi.clone()))
                .map(|i| i.map(|i| (i.key, i.value)))
                .collect::<sop::Result<_>>()
                .expect("iter");
            let limit = rng.usize(..want.len() + 2);
            let mut got = Vec::new();
            let n = s
                .for_each_in(
                    lo.as_ref().map(Vec::as_slice),
                    hi.as_ref().map(Vec::as_slice),
                    |k, v| {
                        got.push((k.to_vec(), v.to_vec()));
                        got.len() < limit
                    },
                )
                .expect("scan");
            assert_eq!(n, got.len());
            let expect = &want[..want.len().min(limit.max(1))];
            assert_eq!(&got[..], expect, "{name} {lo:?}..{hi:?} limit {limit}");
        }
    }
    drop(tx);
    // In a ForWriting transaction the scanned range is read: an insert into it conflicts.
    let t1 = db.begin(TransactionMode::ForWriting).expect("begin");
    let t2 = db.begin(TransactionMode::ForWriting).expect("begin");
    t1.open_raw_btree("u")
        .expect("open")
        .for_each_in(
            Bound::Included(b"k0010"),
            Bound::Excluded(b"k0020"),
            |_, _| true,
        )
        .expect("scan");
    t1.open_raw_btree("u")
        .expect("open")
        .add(b"zzz", b"x")
        .expect("add");
    t2.open_raw_btree("u")
        .expect("open")
        .add(b"k0015x", b"y")
        .expect("add");
    t2.commit().expect("commit");
    assert!(t1.commit().expect_err("conflict").is_retryable());
}

/// Item ids come from blocks a transaction reserves: every id is unique across transactions
/// (concurrent ones included) and across reopen, and within a transaction newer duplicates
/// come first.
#[test]
fn item_ids_are_unique_and_grow_within_a_transaction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut ids = std::collections::BTreeSet::new();
    for round in 0..2 {
        let db = open(dir.path())?;
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.new_raw_btree("dups", StoreOptions::unique(false))?;
        drop(s);
        tx.commit()?;
        // Two transactions at once, interleaving their adds of one key.
        let (t1, t2) = (
            db.begin(TransactionMode::ForWriting)?,
            db.begin(TransactionMode::ForWriting)?,
        );
        let (s1, s2) = (t1.open_raw_btree("dups")?, t2.open_raw_btree("dups")?);
        for i in 0..300u32 {
            s1.add(b"k", &i.to_le_bytes())?;
            s2.add(b"j", &i.to_le_bytes())?;
        }
        drop((s1, s2));
        t1.commit()?;
        t2.commit()?;
        let tx = db.begin(TransactionMode::ForReading)?;
        let s = tx.open_raw_btree("dups")?;
        for key in [&b"j"[..], b"k"] {
            let items: Vec<_> = s
                .iter()
                .map(|it| it.map_err(anyhow::Error::from))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .filter(|it| it.key == key)
                .collect();
            assert_eq!(items.len(), 300 * (round + 1));
            // This round's transaction is the newest: its items come first.
            let mine: Vec<_> = items.iter().take(300).collect();
            let newest_of_older = items.iter().skip(300).map(|it| it.id).max();
            assert!(newest_of_older.is_none_or(|old| mine.iter().all(|it| it.id > old)));
            // Newest first: this round's values 299, 298, ... 0 come first.
            for (n, it) in mine.iter().enumerate() {
                assert_eq!(it.value, (299 - n as u32).to_le_bytes(), "round {round}");
            }
            for it in &items {
                ids.insert((it.key.clone(), it.id));
            }
        }
        drop(s);
        drop(tx);
    }
    // 600 items per key over the two rounds, no id used twice.
    assert_eq!(ids.len(), 1200);
    let distinct: std::collections::BTreeSet<_> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(distinct.len(), 1200);
    Ok(())
}

/// A folder written by another format version is refused with an error that says so (not
/// silently misread).
#[test]
fn another_format_version_is_refused_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let db = open(dir.path())?;
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.new_raw_btree("s", StoreOptions::default())?;
        s.add(b"k", b"v")?;
        drop(s);
        tx.commit()?;
    }
    // Rewrite the first segment's header as format 1, with a valid checksum.
    let seg = dir.path().join("log").join("0000000001.seg");
    let mut b = std::fs::read(&seg)?;
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = sop::codec::crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &b)?;
    // The checkpoint alone would not read the segment: remove it so recovery does.
    std::fs::remove_file(dir.path().join("checkpoint.sop"))?;
    match Database::open(DatabaseOptions::new(dir.path())) {
        Err(Error::Corruption { reason, .. }) => {
            assert!(reason.contains("format version 1"), "{reason}");
            assert!(reason.contains("another version of sop"), "{reason}");
        }
        other => panic!("opened a format-1 folder: {other:?}"),
    }
    Ok(())
}

/// Runs of nearby keys (which descents take through the finger, straight to the last leaf)
/// interleaved with jumps, splits and merges: every get, add and remove sees exactly what a
/// model says, in a writing transaction, in a reader, and after reopening.
#[test]
fn runs_of_nearby_keys_read_and_write_like_a_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    let key = |i: u32| format!("k{:06}", i).into_bytes();
    let mut model = std::collections::BTreeMap::new();
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.new_raw_btree(
        "runs",
        StoreOptions {
            slot_length: 8,
            ..StoreOptions::default()
        },
    )?;
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..200u32 {
        // A run up or down from a random start, then reads around it.
        let start = rng.u32(0..5000);
        let up = rng.bool();
        let add = round % 3 != 2;
        for j in 0..rng.u32(1..60) {
            let i = if up {
                start + j
            } else {
                start.saturating_sub(j)
            };
            let k = key(i);
            if add {
                let fresh = !model.contains_key(&k);
                assert_eq!(s.add(&k, &i.to_le_bytes())?, fresh, "add {i}");
                model.entry(k).or_insert(i);
            } else {
                assert_eq!(s.remove(&k)?, model.remove(&k).is_some(), "remove {i}");
            }
        }
        for j in 0..80u32 {
            let i = start.saturating_sub(20) + j;
            let got = s.get_with(&key(i), |v| v.to_vec())?;
            let want = model.get(&key(i)).map(|v: &u32| v.to_le_bytes().to_vec());
            assert_eq!(got, want, "get {i} in round {round}");
        }
    }
    drop(s);
    tx.commit()?;
    drop(tx);
    let check = |db: &Database| -> Result<()> {
        let tx = db.begin(TransactionMode::ForReading)?;
        let s = tx.open_raw_btree("runs")?;
        let mut order: Vec<u32> = (0..5100).collect();
        for pass in 0..3 {
            match pass {
                1 => order.reverse(),
                2 => rng.clone().shuffle(&mut order),
                _ => {}
            }
            for &i in &order {
                let got = s.get_with(&key(i), |v| v.to_vec())?;
                let want = model.get(&key(i)).map(|v: &u32| v.to_le_bytes().to_vec());
                assert_eq!(got, want, "get {i} in pass {pass}");
            }
        }
        Ok(())
    };
    check(&db)?;
    drop(db);
    check(&open(dir.path())?)
}

/// A transaction sees its own removals and creations of stores by name: a removed store is
/// gone (opening it fails, the listing leaves it out) until the transaction creates one of
/// that name again, which is then the only one it lists and opens.
#[test]
fn a_store_removed_and_created_again_in_one_transaction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path())?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    for name in ["a", "b"] {
        let s = tx.new_btree::<u64, u64>(name, StoreOptions::default())?;
        for i in 0..10 {
            s.add(&i, &i)?;
        }
    }
    tx.commit()?;

    let tx = db.begin(TransactionMode::ForWriting)?;
    assert_eq!(tx.open_btree::<u64, u64>("a")?.count()?, 10);
    assert!(tx.remove_store("a")?);
    assert!(matches!(
        tx.open_btree::<u64, u64>("a"),
        Err(Error::StoreNotFound(_))
    ));
    assert!(!tx.store_exists("a")?);
    assert_eq!(tx.stores()?, ["b"]);
    let c = tx.new_btree::<u64, u64>("c", StoreOptions::default())?;
    c.add(&1, &1)?;
    assert_eq!(tx.stores()?, ["b", "c"]);
    let a = tx.new_btree::<u64, u64>("a", StoreOptions::default())?;
    assert_eq!(a.count()?, 0, "the new store, not the removed one");
    a.add(&100, &1)?;
    assert_eq!(tx.stores()?, ["a", "b", "c"]);
    assert_eq!(tx.open_btree::<u64, u64>("a")?.get(&100)?, Some(1));
    assert_eq!(tx.open_btree::<u64, u64>("a")?.get(&5)?, None);
    tx.commit()?;

    assert_eq!(db.store_names()?, ["a", "b", "c"]);
    let tx = db.begin(TransactionMode::ForReading)?;
    let a = tx.open_btree::<u64, u64>("a")?;
    assert_eq!(a.count()?, 1);
    assert_eq!(a.get(&100)?, Some(1));
    assert_eq!(tx.open_btree::<u64, u64>("b")?.count()?, 10);
    Ok(())
}
