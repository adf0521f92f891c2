//! Serializability of committed `ForWriting` transactions, checked on the dependency graph of a
//! randomized concurrent history.
//!
//! Four threads run transactions over 20 keys of one store; each reads 1–3 keys with `get` and
//! writes 1–2 keys with `upsert`. A written value names its version: (writer, write index, the
//! writer of the version it overwrote — read with `get` just before the upsert). For every
//! committed transaction we keep the versions it read and the versions it overwrote, and
//! build the graph
//!
//! - wr: the writer of a version -> every transaction that read it,
//! - ww: the writer of a version -> the transaction that overwrote it (the committed chain),
//! - rw: a reader of a version -> the transaction that overwrote it (anti-dependency),
//!
//! which must be acyclic. Commit order as seen by the threads is not used: group commit may
//! return in another order than the serialization order. A reader thread's `ForReading`
//! snapshots are put in the graph too (a snapshot is a prefix of the commit order, so it must
//! fit). The version chains also prove that no committed write was lost and that nothing read
//! an uncommitted version.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sop::{Database, DatabaseOptions, Durability, StoreOptions, TransactionMode};

const KEYS: u32 = 20;
const THREADS: u64 = 4;
const TXNS_PER_THREAD: u64 = 100;
/// Independent histories (fresh databases, other seeds) per test.
const ROUNDS: u64 = 5;
/// Version id of the initial state of every key (absent).
const INITIAL: u64 = 0;

/// The value stored under a key: (writer, write index in the writer, overwritten writer).
type Version = (u64, u32, u64);

/// What a committed transaction did.
#[derive(Debug, Clone)]
struct Record {
    id: u64,
    /// (key, writer of the version read).
    reads: Vec<(u32, u64)>,
    /// (key, writer of the version overwritten).
    writes: Vec<(u32, u64)>,
    read_only: bool,
}

fn distinct_keys(rng: &mut fastrand::Rng, n: usize) -> Vec<u32> {
    let mut keys = Vec::new();
    while keys.len() < n {
        let k = rng.u32(..KEYS);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// Finds a cycle in the graph, if any (iterative three-colour DFS).
fn find_cycle(nodes: &[u64], edges: &HashMap<u64, HashSet<u64>>) -> Option<Vec<u64>> {
    let mut colour: HashMap<u64, u8> = HashMap::new(); // 1 on the stack, 2 done
    let empty = HashSet::new();
    for &start in nodes {
        if colour.contains_key(&start) {
            continue;
        }
        let mut stack: Vec<(u64, Vec<u64>)> = vec![(
            start,
            edges
                .get(&start)
                .unwrap_or(&empty)
                .iter()
                .copied()
                .collect(),
        )];
        colour.insert(start, 1);
        while let Some((node, todo)) = stack.last_mut() {
            match todo.pop() {
                Some(next) => match colour.get(&next) {
                    Some(1) => {
                        let pos = stack.iter().position(|(n, _)| *n == next).unwrap();
                        return Some(stack[pos..].iter().map(|(n, _)| *n).collect());
                    }
                    Some(_) => {}
                    None => {
                        colour.insert(next, 1);
                        let succ = edges.get(&next).unwrap_or(&empty).iter().copied();
                        stack.push((next, succ.collect()));
                    }
                },
                None => {
                    colour.insert(*node, 2);
                    stack.pop();
                }
            }
        }
    }
    None
}

#[test]
fn serializable_with_durable_commits() {
    for round in 0..ROUNDS {
        run(Durability::Immediate, 0x5E_41 + round);
    }
}

#[test]
fn serializable_with_commits_acknowledged_before_sync() {
    for round in 0..ROUNDS {
        run(Durability::None, 0x5E_4200 + round);
    }
}

fn run(durability: Durability, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DatabaseOptions::new(dir.path());
    opts.durability = durability;
    let db = Database::open(opts).unwrap();
    {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        tx.new_btree::<u32, Version>(
            "kv",
            StoreOptions {
                slot_length: 4,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        tx.commit().unwrap();
    }

    let next_id = Arc::new(AtomicU64::new(1));
    let committed = Arc::new(Mutex::new(Vec::<Record>::new()));
    let attempts = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, next_id, committed, attempts) = (
                db.clone(),
                Arc::clone(&next_id),
                Arc::clone(&committed),
                Arc::clone(&attempts),
            );
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(31) + t);
                let mut given_up = 0;
                for _ in 0..TXNS_PER_THREAD {
                    let n_reads = rng.usize(1..=3);
                    let read_keys = distinct_keys(&mut rng, n_reads);
                    let n_writes = rng.usize(1..=2);
                    let write_keys = distinct_keys(&mut rng, n_writes);
                    let pause = Duration::from_micros(rng.u64(0..300));
                    let r = db.transact(|tx| {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let me = next_id.fetch_add(1, Ordering::Relaxed);
                        let s = tx.open_btree::<u32, Version>("kv")?;
                        let mut rec = Record {
                            id: me,
                            reads: Vec::new(),
                            writes: Vec::new(),
                            read_only: false,
                        };
                        for &k in &read_keys {
                            let v = s.get(&k)?;
                            rec.reads.push((k, v.map_or(INITIAL, |v| v.0)));
                        }
                        thread::sleep(pause);
                        for (idx, &k) in write_keys.iter().enumerate() {
                            let prev = s.get(&k)?.map_or(INITIAL, |v| v.0);
                            rec.reads.push((k, prev));
                            s.upsert(&k, &(me, idx as u32, prev))?;
                            rec.writes.push((k, prev));
                        }
                        Ok(rec)
                    });
                    match r {
                        Ok(rec) => committed.lock().unwrap().push(rec),
                        Err(e) if e.is_retryable() => given_up += 1,
                        Err(e) => panic!("thread {t}: {e}"),
                    }
                }
                given_up
            })
        })
        .collect();

    let reader = {
        let (db, next_id, done) = (db.clone(), Arc::clone(&next_id), Arc::clone(&done));
        thread::spawn(move || {
            let mut snaps = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let tx = db.begin(TransactionMode::ForReading).unwrap();
                let s = tx.open_btree::<u32, Version>("kv").unwrap();
                let mut rec = Record {
                    id: next_id.fetch_add(1, Ordering::Relaxed),
                    reads: Vec::new(),
                    writes: Vec::new(),
                    read_only: true,
                };
                for k in 0..KEYS {
                    let v = s.get(&k).unwrap();
                    rec.reads.push((k, v.map_or(INITIAL, |v| v.0)));
                    if k.is_multiple_of(5) {
                        thread::yield_now();
                    }
                }
                tx.commit().unwrap();
                snaps.push(rec);
                thread::sleep(Duration::from_micros(500));
            }
            snaps
        })
    };

    let results = common::join_all(workers);
    done.store(true, Ordering::SeqCst);
    let given_up: u64 = results.into_iter().sum();
    let snapshots = reader.join().unwrap();
    let committed = Arc::try_unwrap(committed).unwrap().into_inner().unwrap();
    eprintln!(
        "{} committed, {} attempts, {given_up} given up, {} snapshots",
        committed.len(),
        attempts.load(Ordering::Relaxed),
        snapshots.len()
    );
    assert!(
        committed.len() as u64 >= THREADS * TXNS_PER_THREAD / 2,
        "too few commits to mean anything: {}",
        committed.len()
    );

    // Version chains: who overwrote which version of each key.
    let mut overwritten_by: HashMap<(u32, u64), u64> = HashMap::new();
    let mut writers_of: BTreeMap<u32, HashSet<u64>> = BTreeMap::new();
    for r in &committed {
        for &(k, prev) in &r.writes {
            if let Some(other) = overwritten_by.insert((k, prev), r.id) {
                panic!(
                    "lost update: transactions {other} and {} both overwrote version {prev} of key {k}",
                    r.id
                );
            }
            writers_of.entry(k).or_default().insert(r.id);
        }
    }
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let s = tx.open_btree::<u32, Version>("kv").unwrap();
    for k in 0..KEYS {
        // Follow the chain from the initial version: it must go through every committed writer
        // of the key and end at the value in the database.
        let mut at = INITIAL;
        let mut seen = HashSet::new();
        while let Some(&next) = overwritten_by.get(&(k, at)) {
            assert!(seen.insert(next), "key {k}: the version chain loops");
            at = next;
        }
        let writers = writers_of.remove(&k).unwrap_or_default();
        assert_eq!(seen, writers, "key {k}: committed writes not on the chain");
        let final_writer = s.get(&k).unwrap().map_or(INITIAL, |v| v.0);
        assert_eq!(
            final_writer, at,
            "key {k}: the stored value is not the chain's end"
        );
    }
    drop(tx);

    // Every version read was written by a committed transaction (or is the initial one).
    let writer_ids: HashSet<(u32, u64)> = committed
        .iter()
        .flat_map(|r| r.writes.iter().map(move |(k, _)| (*k, r.id)))
        .collect();
    for r in committed.iter().chain(&snapshots) {
        for &(k, v) in &r.reads {
            assert!(
                v == INITIAL || writer_ids.contains(&(k, v)),
                "transaction {} (read-only {}) read version {v} of key {k}, which no committed transaction wrote",
                r.id,
                r.read_only
            );
        }
    }

    // The dependency graph.
    let mut edges: HashMap<u64, HashSet<u64>> = HashMap::new();
    let mut add = |from: u64, to: u64| {
        if from != to {
            edges.entry(from).or_default().insert(to);
        }
    };
    for r in committed.iter().chain(&snapshots) {
        for &(k, v) in &r.reads {
            add(v, r.id); // wr
            if let Some(&w) = overwritten_by.get(&(k, v)) {
                add(r.id, w); // rw
            }
        }
        for &(_, prev) in &r.writes {
            add(prev, r.id); // ww
        }
    }
    let nodes: Vec<u64> = std::iter::once(INITIAL)
        .chain(committed.iter().chain(&snapshots).map(|r| r.id))
        .collect();
    if let Some(cycle) = find_cycle(&nodes, &edges) {
        let by_id: HashMap<u64, &Record> = committed
            .iter()
            .chain(&snapshots)
            .map(|r| (r.id, r))
            .collect();
        let detail: Vec<String> = cycle
            .iter()
            .map(|id| format!("{id}: {:?}", by_id.get(id)))
            .collect();
        panic!(
            "the dependency graph has a cycle (not serializable):\n{}",
            detail.join("\n")
        );
    }
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn cycle_finder_finds_cycles() {
    let edges: HashMap<u64, HashSet<u64>> = [
        (0, HashSet::from([1, 2])),
        (1, HashSet::from([3])),
        (2, HashSet::from([3])),
    ]
    .into_iter()
    .collect();
    assert_eq!(find_cycle(&[0, 1, 2, 3], &edges), None);
    let mut cyclic = edges.clone();
    cyclic.insert(3, HashSet::from([2]));
    let c = find_cycle(&[0, 1, 2, 3], &cyclic).unwrap();
    let set: HashSet<u64> = c.into_iter().collect();
    assert_eq!(set, HashSet::from([2, 3]));
}
