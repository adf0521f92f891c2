//! Deterministic two-transaction interleavings: begin T1 and T2, run their operations, commit
//! T1, then commit T2, and check the outcome.
//!
//! - auto-merge: both commit and both changes are present (disjoint keys in one leaf, disjoint
//!   updates, concurrent splits, a new store beside an existing one, duplicates of one key);
//! - conflicts: T2's commit fails with a retryable error and nothing of T2 is applied (same key
//!   updated or added, a read key changed, write skew, phantoms in a scanned range, a negative
//!   lookup, a count read);
//! - no false conflicts, snapshot isolation of `ForReading`, closed and read-only transactions.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use anyhow::Result;
use sop::{
    Btree, Database, DatabaseOptions, Error, StoreOptions, Transaction, TransactionMode,
    ValuePlacement,
};

const W: TransactionMode = TransactionMode::ForWriting;

fn open(dir: &std::path::Path) -> Database {
    Database::open(DatabaseOptions::new(dir)).unwrap()
}

fn opts(slot_length: usize) -> StoreOptions {
    StoreOptions {
        slot_length,
        ..StoreOptions::default()
    }
}

/// Creates store `name` holding `keys` with value `key * 10`.
fn seed(db: &Database, name: &str, o: StoreOptions, keys: impl IntoIterator<Item = u64>) {
    let tx = db.begin(W).unwrap();
    let s = tx.new_btree::<u64, u64>(name, o).unwrap();
    for k in keys {
        assert!(s.add(&k, &(k * 10)).unwrap());
    }
    tx.commit().unwrap();
}

fn store(tx: &Transaction, name: &str) -> Btree<u64, u64> {
    tx.open_btree::<u64, u64>(name).unwrap()
}

/// Every item of the store, as committed now.
fn contents(db: &Database, name: &str) -> BTreeMap<u64, u64> {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let s = store(&tx, name);
    let mut m = BTreeMap::new();
    for it in s.iter() {
        let it = it.unwrap();
        assert!(m.insert(it.key, it.value).is_none(), "duplicate {}", it.key);
    }
    assert_eq!(s.count().unwrap(), m.len() as u64, "count of {name}");
    m
}

fn assert_verified(db: &Database) {
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

/// The second commit must fail with a retryable conflict and leave the transaction closed.
fn assert_conflict(tx: &Transaction) {
    match tx.commit() {
        Err(e) => assert!(e.is_retryable(), "expected a conflict, got {e:?}"),
        Ok(()) => panic!("expected a conflict, the commit succeeded"),
    }
    assert!(!tx.is_active());
    assert!(matches!(tx.commit(), Err(Error::TransactionClosed)));
}

/// Standard fixture: one leaf of keys 0, 10, ..., 990 (value key * 10).
fn one_leaf(db: &Database) -> BTreeMap<u64, u64> {
    seed(db, "s", opts(1000), (0..100).map(|i| i * 10));
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.nodes, 1, "the fixture should be a single leaf: {r:?}");
    contents(db, "s")
}

// ---------------------------------------------------------------------------------------------
// Auto-merge
// ---------------------------------------------------------------------------------------------

#[test]
fn merge_disjoint_new_keys_in_one_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t1, "s").add(&5, &55).unwrap());
    assert!(store(&t2, "s").add(&15, &155).unwrap());
    assert!(store(&t2, "s").add(&995, &9955).unwrap());
    t1.commit().unwrap();
    t2.commit().unwrap();

    expect.insert(5, 55);
    expect.insert(15, 155);
    expect.insert(995, 9955);
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

#[test]
fn merge_disjoint_updates_in_one_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let (s1, s2) = (store(&t1, "s"), store(&t2, "s"));
    assert!(s1.update(&10, &1).unwrap());
    assert!(s1.update(&500, &5).unwrap());
    assert!(s2.update(&20, &2).unwrap());
    assert!(s2.upsert(&990, &9).unwrap());
    t1.commit().unwrap();
    t2.commit().unwrap();

    expect.insert(10, 1);
    expect.insert(500, 5);
    expect.insert(20, 2);
    expect.insert(990, 9);
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

#[test]
fn merge_mixed_removes_adds_updates_in_one_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let (s1, s2) = (store(&t1, "s"), store(&t2, "s"));
    assert!(s1.remove(&30).unwrap());
    assert!(s1.add(&31, &310).unwrap());
    assert!(s1.update(&40, &4).unwrap());
    assert!(s2.remove(&60).unwrap());
    assert!(s2.add(&61, &610).unwrap());
    assert!(s2.update(&70, &7).unwrap());
    t1.commit().unwrap();
    t2.commit().unwrap();

    expect.remove(&30);
    expect.remove(&60);
    expect.insert(31, 310);
    expect.insert(61, 610);
    expect.insert(40, 4);
    expect.insert(70, 7);
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

/// Both transactions add 500 keys between the same existing keys, so both split the same
/// leaves (and their parents); the second one's changes are replayed on the first one's tree.
#[test]
fn merge_batches_that_split_the_same_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "s", opts(100), (0..2000).map(|i| i * 2));

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let (s1, s2) = (store(&t1, "s"), store(&t2, "s"));
    for i in 0..500u64 {
        assert!(s1.add(&(4 * i + 1), &(4 * i + 1)).unwrap());
        assert!(s2.add(&(4 * i + 3), &(4 * i + 3)).unwrap());
    }
    assert_eq!(s1.count().unwrap(), 2500);
    t1.commit().unwrap();
    t2.commit().unwrap();

    let got = contents(&db, "s");
    assert_eq!(got.len(), 3000);
    for i in 0..2000u64 {
        assert_eq!(got.get(&(i * 2)), Some(&(i * 20)), "seeded key {}", i * 2);
    }
    for i in 0..500u64 {
        assert_eq!(got.get(&(4 * i + 1)), Some(&(4 * i + 1)));
        assert_eq!(got.get(&(4 * i + 3)), Some(&(4 * i + 3)));
    }
    assert_verified(&db);
}

/// Same as above, but T1 and T2 work on different parts of the key space (different leaves,
/// both changing the shared upper levels).
#[test]
fn merge_batches_that_split_different_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "s", opts(100), (0..2000).map(|i| i * 2));

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let (s1, s2) = (store(&t1, "s"), store(&t2, "s"));
    for i in 0..500u64 {
        assert!(s1.add(&(2 * i + 1), &7).unwrap()); // 1..999
        assert!(s2.add(&(3000 + 2 * i + 1), &8).unwrap()); // 3001..3999
    }
    t1.commit().unwrap();
    t2.commit().unwrap();

    let got = contents(&db, "s");
    assert_eq!(got.len(), 3000);
    for i in 0..500u64 {
        assert_eq!(got.get(&(2 * i + 1)), Some(&7));
        assert_eq!(got.get(&(3000 + 2 * i + 1)), Some(&8));
    }
    assert_verified(&db);
}

/// One transaction creates and fills a store while the other fills an existing one, in both
/// commit orders.
#[test]
fn merge_new_store_beside_existing_store() {
    for creator_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        seed(&db, "a", opts(16), 0..100);

        let creator = db.begin(W).unwrap();
        let filler = db.begin(W).unwrap();
        let b = creator.new_btree::<u64, u64>("b", opts(16)).unwrap();
        for k in 0..300 {
            assert!(b.add(&k, &(k + 1)).unwrap());
        }
        let a = store(&filler, "a");
        for k in 100..400 {
            assert!(a.add(&k, &(k * 10)).unwrap());
        }
        if creator_first {
            creator.commit().unwrap();
            filler.commit().unwrap();
        } else {
            filler.commit().unwrap();
            creator.commit().unwrap();
        }

        let a = contents(&db, "a");
        assert_eq!(a.len(), 400);
        assert!(a.iter().all(|(k, v)| *v == k * 10));
        let b = contents(&db, "b");
        assert_eq!(b.len(), 300);
        assert!(b.iter().all(|(k, v)| *v == k + 1));
        assert_eq!(db.store_names().unwrap(), ["a", "b"]);
        assert_verified(&db);
    }
}

#[test]
fn merge_duplicate_store_same_key_added_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "d", StoreOptions::unique(false), 1..=10);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t1, "d").add(&5, &100).unwrap());
    assert!(store(&t2, "d").add(&5, &200).unwrap());
    t1.commit().unwrap();
    t2.commit().unwrap();

    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let d = store(&tx, "d");
    assert_eq!(d.count().unwrap(), 12);
    let mut fives: Vec<u64> = d.range(5..=5).map(|i| i.unwrap().value).collect();
    fives.sort_unstable();
    assert_eq!(fives, [50, 100, 200]);
    assert_eq!(d.iter().count(), 12);
    drop(tx);
    assert_verified(&db);
}

/// Values outside the nodes (blobs written at commit, or written ahead) merge as well.
#[test]
fn merge_in_stores_with_separate_values() {
    for placement in [
        ValuePlacement::SeparateBlob,
        ValuePlacement::ActivelyPersisted,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let o = StoreOptions {
            slot_length: 64,
            value_placement: placement,
            ..StoreOptions::default()
        };
        let v = |tag: &str, k: u64| format!("{tag}-{k}-{}", "v".repeat(300));
        {
            let tx = db.begin(W).unwrap();
            let s = tx.new_btree::<u64, String>("b", o.clone()).unwrap();
            for k in 0..40 {
                s.add(&(k * 10), &v("seed", k * 10)).unwrap();
            }
            tx.commit().unwrap();
        }
        let t1 = db.begin(W).unwrap();
        let t2 = db.begin(W).unwrap();
        let (s1, s2) = (
            t1.open_btree::<u64, String>("b").unwrap(),
            t2.open_btree::<u64, String>("b").unwrap(),
        );
        for k in 0..30 {
            assert!(s1.add(&(k * 10 + 1), &v("t1", k * 10 + 1)).unwrap());
            assert!(s2.add(&(k * 10 + 2), &v("t2", k * 10 + 2)).unwrap());
        }
        assert!(s1.update(&100, &v("t1u", 100)).unwrap());
        assert!(s2.update(&200, &v("t2u", 200)).unwrap());
        assert!(s1.remove(&300).unwrap());
        assert!(s2.remove(&310).unwrap());
        t1.commit().unwrap();
        t2.commit().unwrap();
        drop((s1, s2, t1, t2));

        let check = |db: &Database| {
            let tx = db.begin(TransactionMode::ForReading).unwrap();
            let s = tx.open_btree::<u64, String>("b").unwrap();
            assert_eq!(s.count().unwrap(), 40 + 60 - 2, "{placement:?}");
            for k in 0..40 {
                let key = k * 10;
                let want = match key {
                    100 => Some(v("t1u", 100)),
                    200 => Some(v("t2u", 200)),
                    300 | 310 => None,
                    _ => Some(v("seed", key)),
                };
                assert_eq!(s.get(&key).unwrap(), want, "{placement:?} key {key}");
            }
            for k in 0..30 {
                assert_eq!(s.get(&(k * 10 + 1)).unwrap(), Some(v("t1", k * 10 + 1)));
                assert_eq!(s.get(&(k * 10 + 2)).unwrap(), Some(v("t2", k * 10 + 2)));
            }
            assert_eq!(s.iter().count(), 98);
        };
        check(&db);
        assert_verified(&db);
        drop(db);
        let db = open(dir.path());
        check(&db);
        assert_verified(&db);
    }
}

/// T1 removes most of the tree (leaves merge, the root shrinks) while T2 adds and updates in
/// the same key space; T2 is replayed on the shrunken tree.
#[test]
fn merge_adds_into_a_tree_another_transaction_shrank() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "s", opts(16), (0..1000).map(|i| i * 2));
    let mut expect = contents(&db, "s");

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let (s1, s2) = (store(&t1, "s"), store(&t2, "s"));
    for k in 0..900u64 {
        assert!(s1.remove(&(k * 2)).unwrap());
        expect.remove(&(k * 2));
    }
    for k in (1..2000u64).step_by(6) {
        assert!(s2.add(&k, &k).unwrap());
        expect.insert(k, k);
    }
    for k in 950..1000u64 {
        assert!(s2.update(&(k * 2), &7).unwrap());
        expect.insert(k * 2, 7);
    }
    t1.commit().unwrap();
    t2.commit().unwrap();

    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

/// The reverse: T1 grows a one-leaf tree to several levels, T2 changed that one leaf.
#[test]
fn merge_leaf_changes_into_a_tree_another_transaction_grew() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "s", opts(8), 0..6);
    let mut expect = contents(&db, "s");

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let (s1, s2) = (store(&t1, "s"), store(&t2, "s"));
    for k in 100..400u64 {
        assert!(s1.add(&k, &k).unwrap());
        expect.insert(k, k);
    }
    assert!(s2.update(&3, &33).unwrap());
    assert!(s2.remove(&4).unwrap());
    assert!(s2.add(&50, &50).unwrap());
    expect.insert(3, 33);
    expect.remove(&4);
    expect.insert(50, 50);
    t1.commit().unwrap();
    t2.commit().unwrap();

    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

/// Both transactions start from an empty store; and one empties a store the other adds to.
#[test]
fn merge_into_empty_and_emptied_stores() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "empty", opts(8), []);
    seed(&db, "full", opts(8), 0..20);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t1, "empty").add(&1, &1).unwrap());
    assert!(store(&t2, "empty").add(&2, &2).unwrap());
    for k in 0..20 {
        assert!(store(&t1, "full").remove(&k).unwrap());
    }
    assert!(store(&t2, "full").add(&100, &100).unwrap());
    t1.commit().unwrap();
    t2.commit().unwrap();

    assert_eq!(contents(&db, "empty"), BTreeMap::from([(1, 1), (2, 2)]));
    assert_eq!(contents(&db, "full"), BTreeMap::from([(100, 100)]));
    assert_verified(&db);
}

/// Three concurrent transactions on one leaf: the third merges over two commits.
#[test]
fn merge_three_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let ts: Vec<Transaction> = (0..3).map(|_| db.begin(W).unwrap()).collect();
    for (i, t) in ts.iter().enumerate() {
        let i = i as u64;
        let s = store(t, "s");
        assert!(s.add(&(i + 1), &i).unwrap());
        assert!(s.update(&(100 + i * 10), &i).unwrap());
        assert!(s.remove(&(500 + i * 10)).unwrap());
        expect.insert(i + 1, i);
        expect.insert(100 + i * 10, i);
        expect.remove(&(500 + i * 10));
    }
    for t in &ts {
        t.commit().unwrap();
    }
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

/// Duplicates: T1 removes the first item of a key, T2 adds another item with that key (T2
/// did not read the key: no conflict).
#[test]
fn merge_duplicate_store_remove_and_add_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "d", StoreOptions::unique(false), [5, 5, 6]);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t1, "d").remove(&5).unwrap());
    assert!(store(&t2, "d").add(&5, &99).unwrap());
    t1.commit().unwrap();
    t2.commit().unwrap();

    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let d = store(&tx, "d");
    let mut fives: Vec<u64> = d.range(5..=5).map(|i| i.unwrap().value).collect();
    fives.sort_unstable();
    assert_eq!(fives, [50, 99]);
    assert_eq!(d.count().unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// Conflicts: T2 fails, nothing of it is applied, T1's changes are there
// ---------------------------------------------------------------------------------------------

#[test]
fn conflict_same_key_updated_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t1, "s").update(&10, &1).unwrap());
    assert!(store(&t2, "s").update(&10, &2).unwrap());
    assert!(store(&t2, "s").add(&12345, &3).unwrap());
    assert!(store(&t2, "s").update(&990, &3).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);

    expect.insert(10, 1);
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

#[test]
fn conflict_same_new_key_added_in_unique_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t1, "s").add(&5, &1).unwrap());
    assert!(store(&t2, "s").add(&5, &2).unwrap());
    assert!(store(&t2, "s").add(&7, &7).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);

    expect.insert(5, 1);
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

/// A removal that found nothing read that the key is absent; a removal that removed it read
/// it (recorded as its write): both conflict with a concurrent write of that key.
#[test]
fn conflict_removals_read_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    // Remove of an absent key vs a concurrent add of it.
    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(!store(&t2, "s").remove(&5).unwrap());
    assert!(store(&t2, "s").add(&7, &7).unwrap());
    assert!(store(&t1, "s").add(&5, &1).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);
    expect.insert(5, 1);

    // Remove of a present key vs a concurrent update of it.
    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t2, "s").remove(&5).unwrap());
    assert!(store(&t1, "s").update(&5, &9).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);
    expect.insert(5, 9);

    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

#[test]
fn conflict_both_create_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "a", opts(16), 0..10);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    t1.new_btree::<u64, u64>("n", opts(16))
        .unwrap()
        .add(&1, &1)
        .unwrap();
    t2.new_btree::<u64, u64>("n", opts(16))
        .unwrap()
        .add(&2, &2)
        .unwrap();
    store(&t2, "a").add(&100, &100).unwrap();
    t1.commit().unwrap();
    assert_conflict(&t2);

    assert_eq!(contents(&db, "n"), BTreeMap::from([(1, 1)]));
    assert_eq!(contents(&db, "a").len(), 10);
    assert_verified(&db);
}

#[test]
fn conflict_key_read_then_changed() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert_eq!(store(&t2, "s").get(&10).unwrap(), Some(100));
    assert!(store(&t1, "s").update(&10, &1).unwrap());
    assert!(store(&t2, "s").update(&500, &2).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);

    expect.insert(10, 1);
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

/// Write skew: the rule is x + y >= 0; each transaction checks it on what it read and
/// withdraws 100 from a different account. Serializable execution must refuse the second.
#[test]
fn conflict_write_skew() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    {
        let tx = db.begin(W).unwrap();
        let a = tx
            .new_btree::<String, i64>("acct", StoreOptions::default())
            .unwrap();
        a.add(&"x".into(), &50).unwrap();
        a.add(&"y".into(), &50).unwrap();
        tx.commit().unwrap();
    }
    let withdraw = |tx: &Transaction, from: &str| {
        let a = tx.open_btree::<String, i64>("acct").unwrap();
        let x = a.get(&"x".into()).unwrap().unwrap();
        let y = a.get(&"y".into()).unwrap().unwrap();
        assert!(
            x + y - 100 >= 0,
            "the rule allows the withdrawal on this snapshot"
        );
        let cur = a.get(&from.into()).unwrap().unwrap();
        assert!(a.update(&from.into(), &(cur - 100)).unwrap());
    };
    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    withdraw(&t1, "x");
    withdraw(&t2, "y");
    t1.commit().unwrap();
    assert_conflict(&t2);

    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let a = tx.open_btree::<String, i64>("acct").unwrap();
    let (x, y) = (
        a.get(&"x".into()).unwrap().unwrap(),
        a.get(&"y".into()).unwrap().unwrap(),
    );
    assert_eq!((x, y), (-50, 50));
    assert!(x + y >= 0);
}

/// Phantom through the range iterator: T2 scans [100, 200), T1 inserts inside it.
#[test]
fn conflict_phantom_in_range_iterator() {
    // 155: between two scanned items; 195: after the last item seen, before the end bound;
    // 100..: before the first item seen is impossible (100 exists), so also test an exclusive
    // lower bound with an insert right after it.
    for (lo, hi, phantom) in [
        (100u64, 200u64, 155u64),
        (100, 200, 195),
        (95, 200, 96),
        (101, 200, 105),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut expect = one_leaf(&db);

        let t1 = db.begin(W).unwrap();
        let t2 = db.begin(W).unwrap();
        let s2 = store(&t2, "s");
        let seen: Vec<u64> = s2.range(lo..hi).map(|i| i.unwrap().key).collect();
        let want: Vec<u64> = expect.range(lo..hi).map(|(k, _)| *k).collect();
        assert_eq!(seen, want);
        assert!(s2.add(&5000, &1).unwrap());
        assert!(store(&t1, "s").add(&phantom, &1).unwrap());
        t1.commit().unwrap();
        assert_conflict(&t2);

        expect.insert(phantom, 1);
        assert_eq!(
            contents(&db, "s"),
            expect,
            "range {lo}..{hi}, phantom {phantom}"
        );
    }
}

/// Phantom through the cursor: T2 positions with `find` and walks with `next`.
#[test]
fn conflict_phantom_in_cursor_scan() {
    for phantom in [125u64, 101, 149, 105] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut expect = one_leaf(&db);

        let t1 = db.begin(W).unwrap();
        let t2 = db.begin(W).unwrap();
        let s2 = store(&t2, "s");
        // find of a missing key lands on the next greater item (110 for 105).
        let start = if phantom == 105 { 101 } else { 100 };
        s2.find(&start, true).unwrap();
        let mut seen = Vec::new();
        while let Some((k, _)) = s2.current_key().unwrap() {
            if k >= 150 {
                break;
            }
            seen.push(k);
            s2.next().unwrap();
        }
        assert_eq!(seen.first(), Some(&(if start == 100 { 100 } else { 110 })));
        assert!(s2.update(&900, &1).unwrap());
        assert!(store(&t1, "s").add(&phantom, &1).unwrap());
        t1.commit().unwrap();
        assert_conflict(&t2);

        expect.insert(phantom, 1);
        assert_eq!(contents(&db, "s"), expect, "phantom {phantom}");
    }
}

/// A lookup of a missing key is a read too: T1 adding that key invalidates it.
#[test]
fn conflict_negative_lookup() {
    for via_contains in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut expect = one_leaf(&db);

        let t1 = db.begin(W).unwrap();
        let t2 = db.begin(W).unwrap();
        let s2 = store(&t2, "s");
        if via_contains {
            assert!(!s2.contains_key(&55).unwrap());
        } else {
            assert_eq!(s2.get(&55).unwrap(), None);
        }
        assert!(s2.add(&5000, &1).unwrap());
        assert!(store(&t1, "s").add(&55, &1).unwrap());
        t1.commit().unwrap();
        assert_conflict(&t2);

        expect.insert(55, 1);
        assert_eq!(contents(&db, "s"), expect);
    }
}

/// Past-the-end negative lookup (the key is greater than every key).
#[test]
fn conflict_negative_lookup_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let s2 = store(&t2, "s");
    assert_eq!(s2.get(&100_000).unwrap(), None);
    assert!(s2.update(&0, &1).unwrap());
    assert!(store(&t1, "s").add(&100_000, &1).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);

    expect.insert(100_000, 1);
    assert_eq!(contents(&db, "s"), expect);
}

#[test]
fn conflict_count_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let s2 = store(&t2, "s");
    assert_eq!(s2.count().unwrap(), 100);
    assert!(s2.update(&990, &1).unwrap());
    assert!(store(&t1, "s").add(&5, &1).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);

    expect.insert(5, 1);
    assert_eq!(contents(&db, "s"), expect);
    assert_verified(&db);
}

/// A count read through `store_info` is a count read too.
#[test]
fn conflict_count_read_through_store_info() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert_eq!(t2.store_info("s").unwrap().count, 100);
    assert!(store(&t2, "s").update(&990, &1).unwrap());
    assert!(store(&t1, "s").remove(&10).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);

    expect.remove(&10);
    assert_eq!(contents(&db, "s"), expect);
}

/// Duplicates: T2 removes "the first item with key 5" after T1 added another one.
#[test]
fn conflict_duplicate_store_remove_after_concurrent_add() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "d", StoreOptions::unique(false), [5, 6]);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    assert!(store(&t1, "d").add(&5, &99).unwrap());
    assert!(store(&t2, "d").remove(&5).unwrap());
    t1.commit().unwrap();
    assert_conflict(&t2);

    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let d = store(&tx, "d");
    let mut fives: Vec<u64> = d.range(5..=5).map(|i| i.unwrap().value).collect();
    fives.sort_unstable();
    assert_eq!(fives, [50, 99]);
}

/// A store removed by T1 that T2 wrote, or only read.
#[test]
fn conflict_store_removed_meanwhile() {
    for t2_writes_it in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        seed(&db, "a", opts(16), 0..10);
        seed(&db, "b", opts(16), 0..10);

        let reader = db.begin(TransactionMode::ForReading).unwrap();
        let t1 = db.begin(W).unwrap();
        let t2 = db.begin(W).unwrap();
        let a2 = store(&t2, "a");
        if t2_writes_it {
            assert!(a2.add(&100, &1).unwrap());
        } else {
            assert_eq!(a2.get(&3).unwrap(), Some(30));
        }
        assert!(store(&t2, "b").add(&100, &1).unwrap());
        assert!(t1.remove_store("a").unwrap());
        t1.commit().unwrap();
        assert_conflict(&t2);

        assert_eq!(db.store_names().unwrap(), ["b"]);
        assert_eq!(contents(&db, "b").len(), 10);
        // A snapshot from before still has the store.
        assert_eq!(store(&reader, "a").count().unwrap(), 10);
        assert_verified(&db);
    }
}

/// The conflict is detected also when other commits came in between.
#[test]
fn conflict_detected_behind_unrelated_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t2 = db.begin(W).unwrap();
    assert_eq!(store(&t2, "s").get(&10).unwrap(), Some(100));
    let t1 = db.begin(W).unwrap();
    assert!(store(&t1, "s").update(&10, &1).unwrap());
    t1.commit().unwrap();
    for k in 0..5u64 {
        let t = db.begin(W).unwrap();
        assert!(store(&t, "s").update(&(500 + k * 10), &k).unwrap());
        t.commit().unwrap();
        expect.insert(500 + k * 10, k);
    }
    assert!(store(&t2, "s").update(&990, &2).unwrap());
    assert_conflict(&t2);

    expect.insert(10, 1);
    assert_eq!(contents(&db, "s"), expect);
}

// ---------------------------------------------------------------------------------------------
// No false conflicts
// ---------------------------------------------------------------------------------------------

#[test]
fn no_false_conflict_read_a_write_b_other_writes_c() {
    // In one leaf, and in a multi-level tree where c is far away.
    for (slot, n) in [(1000usize, 100u64), (16, 2000)] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        seed(&db, "s", opts(slot), (0..n).map(|i| i * 10));
        let mut expect = contents(&db, "s");
        let c = (n - 1) * 10;

        let t1 = db.begin(W).unwrap();
        let t2 = db.begin(W).unwrap();
        let s2 = store(&t2, "s");
        assert_eq!(s2.get(&10).unwrap(), Some(100));
        assert!(s2.update(&20, &2).unwrap());
        assert!(store(&t1, "s").update(&c, &3).unwrap());
        t1.commit().unwrap();
        t2.commit().unwrap();

        expect.insert(20, 2);
        expect.insert(c, 3);
        assert_eq!(contents(&db, "s"), expect);
        assert_verified(&db);
    }
}

#[test]
fn no_false_conflict_insert_outside_scanned_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut expect = one_leaf(&db);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    let s2 = store(&t2, "s");
    assert_eq!(s2.range(100..200).count(), 10);
    assert!(s2.update(&900, &9).unwrap());
    let s1 = store(&t1, "s");
    assert!(s1.add(&205, &1).unwrap()); // past the end bound
    assert!(s1.add(&95, &1).unwrap()); // before the start bound
    assert!(s1.update(&200, &1).unwrap()); // the excluded end bound itself
    t1.commit().unwrap();
    t2.commit().unwrap();

    expect.insert(205, 1);
    expect.insert(95, 1);
    expect.insert(200, 1);
    expect.insert(900, 9);
    assert_eq!(contents(&db, "s"), expect);
}

#[test]
fn no_false_conflict_different_stores() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    seed(&db, "a", opts(1000), 0..10);
    seed(&db, "b", opts(1000), 0..10);

    let t1 = db.begin(W).unwrap();
    let t2 = db.begin(W).unwrap();
    // T2 reads everything of "b" (count and a full scan) and writes "a"; T1 writes "a" too.
    let b2 = store(&t2, "b");
    assert_eq!(b2.count().unwrap(), 10);
    assert_eq!(b2.iter().count(), 10);
    assert!(store(&t2, "a").update(&1, &1).unwrap());
    assert!(store(&t1, "a").add(&100, &100).unwrap());
    assert!(store(&t1, "a").update(&2, &2).unwrap());
    t1.commit().unwrap();
    t2.commit().unwrap();

    let a = contents(&db, "a");
    assert_eq!((a[&1], a[&2], a[&100]), (1, 2, 100));
    assert_eq!(a.len(), 11);
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

#[test]
fn reader_keeps_its_snapshot_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let before = one_leaf(&db);

    let r = db.begin(TransactionMode::ForReading).unwrap();
    let nc = db.begin(TransactionMode::NoCheck).unwrap();
    let rs = store(&r, "s");
    assert_eq!(rs.get(&10).unwrap(), Some(100));

    for round in 0..3u64 {
        let t = db.begin(W).unwrap();
        let s = store(&t, "s");
        assert!(s.update(&10, &(999 + round)).unwrap());
        assert!(s.add(&(5 + round), &1).unwrap());
        assert!(s.remove(&(20 + round * 10)).unwrap());
        t.commit().unwrap();
    }
    let t = db.begin(W).unwrap();
    t.new_btree::<u64, u64>("later", StoreOptions::default())
        .unwrap()
        .add(&1, &1)
        .unwrap();
    t.commit().unwrap();

    for tx in [&r, &nc] {
        let s = store(tx, "s");
        assert_eq!(s.get(&10).unwrap(), Some(100));
        assert_eq!(s.get(&5).unwrap(), None);
        assert_eq!(s.get(&20).unwrap(), Some(200));
        assert_eq!(s.count().unwrap(), 100);
        let all: BTreeMap<u64, u64> = s
            .iter()
            .map(|i| i.map(|i| (i.key, i.value)))
            .collect::<sop::Result<_>>()
            .unwrap();
        assert_eq!(all, before);
        assert!(!tx.store_exists("later").unwrap());
    }
    r.commit().unwrap();
    nc.commit().unwrap();

    let now = contents(&db, "s");
    assert_eq!(now[&10], 1001);
    assert!(now.contains_key(&5) && now.contains_key(&7));
    assert!(!now.contains_key(&20) && !now.contains_key(&40));
    assert_verified(&db);
}

/// A snapshot stays readable while everything it sees is rewritten, compacted, checkpointed
/// and the old segments become garbage.
#[test]
fn reader_snapshot_survives_compaction_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = DatabaseOptions::new(dir.path());
    o.segment_bytes = 1 << 16;
    o.checkpoint_bytes = 1 << 16;
    let db = Database::open(o.clone()).unwrap();
    let value = |round: u64, k: u64| format!("{round:04}-{k:06}-{}", "x".repeat(100));
    {
        let tx = db.begin(W).unwrap();
        let s = tx.new_btree::<u64, String>("big", opts(32)).unwrap();
        for k in 0..2000 {
            s.add(&k, &value(0, k)).unwrap();
        }
        tx.commit().unwrap();
    }
    let r = db.begin(TransactionMode::ForReading).unwrap();
    let rs = r.open_btree::<u64, String>("big").unwrap();
    assert_eq!(rs.get(&7).unwrap(), Some(value(0, 7)));
    let segments_before = db.verify().unwrap().segments;

    for round in 1..=4u64 {
        for chunk in 0..4u64 {
            let tx = db.begin(W).unwrap();
            let s = tx.open_btree::<u64, String>("big").unwrap();
            for k in (chunk * 500)..((chunk + 1) * 500) {
                assert!(s.update(&k, &value(round, k)).unwrap());
            }
            tx.commit().unwrap();
        }
        db.checkpoint().unwrap();
    }
    let segments_held = db.verify().unwrap().segments;
    // Everything the reader sees was rewritten four times; it still reads its snapshot.
    let old: Vec<(u64, String)> = rs
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap();
    assert_eq!(old.len(), 2000);
    assert!(old.iter().all(|(k, v)| *v == value(0, *k)));
    r.commit().unwrap();
    drop((rs, r));
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");

    // Without the reader the garbage can go.
    for round in 5..=6u64 {
        let tx = db.begin(W).unwrap();
        let s = tx.open_btree::<u64, String>("big").unwrap();
        for k in 0..2000 {
            assert!(s.update(&k, &value(round, k)).unwrap());
        }
        tx.commit().unwrap();
        db.checkpoint().unwrap();
    }
    db.checkpoint().unwrap();
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(
        report.segments < segments_held,
        "garbage segments were not reclaimed"
    );
    eprintln!(
        "segments: {segments_before} at first, {segments_held} while the reader held its snapshot, {} at the end",
        report.segments
    );
    drop(db);
    let db = Database::open(o).unwrap();
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let s = tx.open_btree::<u64, String>("big").unwrap();
    assert_eq!(s.count().unwrap(), 2000);
    for k in (0..2000).step_by(97) {
        assert_eq!(s.get(&k).unwrap(), Some(value(6, k)));
    }
}

#[test]
fn read_only_commits_are_always_ok() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    one_leaf(&db);
    for mode in [TransactionMode::ForReading, TransactionMode::NoCheck] {
        // Read everything, let a writer change it all, then commit: no validation, no error.
        let r = db.begin(mode).unwrap();
        let s = store(&r, "s");
        assert_eq!(s.count().unwrap(), 100);
        assert_eq!(s.iter().count(), 100);
        assert_eq!(s.get(&55).unwrap(), None);
        let t = db.begin(W).unwrap();
        let w = store(&t, "s");
        assert!(w.add(&55, &1).unwrap());
        assert!(w.update(&10, &1).unwrap());
        assert!(w.remove(&990).unwrap());
        t.commit().unwrap();
        r.commit().unwrap();
        // And put things back for the next mode.
        let t = db.begin(W).unwrap();
        let w = store(&t, "s");
        assert!(w.remove(&55).unwrap());
        assert!(w.update(&10, &100).unwrap());
        assert!(w.add(&990, &9900).unwrap());
        t.commit().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Closed and read-only transactions
// ---------------------------------------------------------------------------------------------

fn is_closed<T: std::fmt::Debug>(r: sop::Result<T>) -> bool {
    matches!(r, Err(Error::TransactionClosed))
}

#[test]
fn using_a_finished_transaction_is_an_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path());
    one_leaf(&db);

    // After commit, after rollback, after a failed (conflicting) commit.
    let committed = db.begin(W)?;
    let s = store(&committed, "s");
    s.add(&1, &1)?;
    committed.commit()?;

    let rolled = db.begin(W)?;
    let r = store(&rolled, "s");
    r.add(&2, &2)?;
    rolled.rollback()?;

    let t1 = db.begin(W)?;
    let failed = db.begin(W)?;
    let f = store(&failed, "s");
    f.update(&10, &2)?;
    store(&t1, "s").update(&10, &1)?;
    t1.commit()?;
    assert!(failed.commit().is_err());

    let reader = db.begin(TransactionMode::ForReading)?;
    let rd = store(&reader, "s");
    reader.commit()?;

    for (tx, h) in [
        (&committed, &s),
        (&rolled, &r),
        (&failed, &f),
        (&reader, &rd),
    ] {
        assert!(!tx.is_active());
        assert!(is_closed(h.get(&10)));
        assert!(is_closed(h.add(&3, &3)));
        assert!(is_closed(h.update(&10, &3)));
        assert!(is_closed(h.remove(&10)));
        assert!(is_closed(h.count()));
        assert!(is_closed(h.find(&10, true)));
        assert!(is_closed(h.next()));
        assert!(matches!(
            h.iter().next(),
            Some(Err(Error::TransactionClosed))
        ));
        assert!(is_closed(tx.commit()));
        assert!(is_closed(tx.rollback()));
        assert!(is_closed(tx.open_btree::<u64, u64>("s")));
        assert!(is_closed(
            tx.new_btree::<u64, u64>("x", StoreOptions::default())
        ));
        assert!(is_closed(tx.store_info("s")));
    }
    let now = contents(&db, "s");
    assert_eq!(now.get(&1), Some(&1));
    assert_eq!(now.get(&2), None);
    assert_eq!(now.get(&10), Some(&1));
    Ok(())
}

#[test]
fn writing_in_a_read_only_transaction_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(dir.path());
    let before = one_leaf(&db);
    for mode in [TransactionMode::ForReading, TransactionMode::NoCheck] {
        let tx = db.begin(mode)?;
        let s = store(&tx, "s");
        let ro = |r: sop::Result<bool>| matches!(r, Err(Error::ReadOnlyTransaction(_)));
        assert!(ro(s.add(&5, &1)), "{mode:?} add");
        assert!(ro(s.add_if_not_exist(&5, &1)), "{mode:?} add_if_not_exist");
        assert!(ro(s.upsert(&10, &1)), "{mode:?} upsert");
        assert!(ro(s.update(&10, &1)), "{mode:?} update");
        assert!(ro(s.remove(&10)), "{mode:?} remove");
        assert!(s.find(&10, true)?);
        assert!(
            ro(s.update_current_value(&1)),
            "{mode:?} update_current_value"
        );
        assert!(ro(s.remove_current_item()), "{mode:?} remove_current_item");
        assert!(ro(tx.remove_store("s")), "{mode:?} remove_store");
        assert!(
            matches!(
                tx.new_btree::<u64, u64>("new", StoreOptions::default()),
                Err(Error::ReadOnlyTransaction(_))
            ),
            "{mode:?} new store"
        );
        // Reads still work, and the transaction still commits.
        assert_eq!(s.get(&10)?, Some(100));
        tx.commit()?;
    }
    assert_eq!(contents(&db, "s"), before);
    assert_eq!(db.store_names()?, ["s"]);
    Ok(())
}
