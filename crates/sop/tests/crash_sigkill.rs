//! Crash test: a child process commits in a loop and is killed with SIGKILL at a random moment;
//! the parent then recovers the database and checks that it holds exactly the state after the
//! last acknowledged transaction (or after the one in flight), with nothing partial visible.
//!
//! The test binary re-executes itself: `crash_child` is a normal test that returns at once
//! unless `SOP_CRASH_CHILD=<folder>` is set, in which case it opens the database in that folder
//! and commits transaction after transaction, printing `ACK <n>` on stdout (flushed) after each
//! commit returns `Ok`. Transaction `n` is a pure function of `n` (see [`txn_ops`]), so the
//! parent computes the state after any transaction by replaying `1..=n` in memory.
//!
//! The database uses small segments and a small checkpoint threshold so that segment rollover,
//! compaction (relocation commits), checkpoints and segment deletion all happen under the kill.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sop::{Database, DatabaseOptions, Durability, StoreOptions, TransactionMode, ValuePlacement};

const CHILD_ENV: &str = "SOP_CRASH_CHILD";
/// `none` makes the child (and the parent) use `Durability::None`.
const DURABILITY_ENV: &str = "SOP_CRASH_DURABILITY";
const ROUNDS: usize = 20;
/// Safety net: a child that is never killed stops by itself.
const CHILD_MAX_RUN: Duration = Duration::from_secs(20);

const META: &str = "meta";
const STORE_A: &str = "a";
const STORE_B: &str = "b";
const LAST: &[u8] = b"last";
const KEYS_A: u32 = 120;
const KEYS_B: u32 = 60;

fn db_options(dir: &Path, durability: Durability) -> DatabaseOptions {
    DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 16,
        durability,
        ..DatabaseOptions::new(dir)
    }
}

fn store_options(name: &str) -> StoreOptions {
    match name {
        STORE_A => StoreOptions {
            slot_length: 8,
            ..StoreOptions::default()
        },
        STORE_B => StoreOptions {
            slot_length: 6,
            value_placement: ValuePlacement::SeparateBlob,
            ..StoreOptions::default()
        },
        _ => StoreOptions::default(),
    }
}

/// One change of a transaction: `Some(value)` sets the key, `None` removes it.
type Op = (&'static str, Vec<u8>, Option<Vec<u8>>);

fn key(i: u32) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

fn value(n: u64, j: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{n}:{j}:").into_bytes();
    let fill = (n as u8).wrapping_mul(31).wrapping_add(j as u8);
    while v.len() < len {
        v.push(b'a' + (fill.wrapping_add(v.len() as u8) % 26));
    }
    v
}

/// The changes of transaction `n` (n >= 1), a pure function of `n`. Every transaction sets
/// `meta/last = n`; it also changes store `a`, store `b` or both.
fn txn_ops(n: u64) -> Vec<Op> {
    let mut rng = fastrand::Rng::with_seed(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
    let mut ops: Vec<Op> = vec![(META, LAST.to_vec(), Some(n.to_string().into_bytes()))];
    let stores: &[&'static str] = match n % 3 {
        0 => &[STORE_A, STORE_B],
        1 => &[STORE_A],
        _ => &[STORE_B],
    };
    for &store in stores {
        let universe = if store == STORE_A { KEYS_A } else { KEYS_B };
        if n.is_multiple_of(50) {
            // Now and then a bulk removal.
            let m = (n / 50) as u32 % 5 + 2;
            for i in (0..universe).filter(|i| i % m == 0) {
                ops.push((store, key(i), None));
            }
            continue;
        }
        for j in 0..1 + rng.usize(..12) {
            let k = key(rng.u32(..universe));
            if rng.u8(..4) == 0 {
                ops.push((store, k, None));
            } else {
                let len = if store == STORE_A {
                    rng.usize(4..200)
                } else {
                    rng.usize(10..3000)
                };
                ops.push((store, k, Some(value(n, j, len))));
            }
        }
    }
    ops
}

type Items = BTreeMap<Vec<u8>, Vec<u8>>;
type Model = BTreeMap<&'static str, Items>;

/// The state after transactions `1..=n`.
fn state_after(n: u64) -> Model {
    let mut m = Model::new();
    if n >= 1 {
        for s in [META, STORE_A, STORE_B] {
            m.insert(s, BTreeMap::new());
        }
    }
    for t in 1..=n {
        for (store, k, v) in txn_ops(t) {
            let s = m.get_mut(store).unwrap();
            match v {
                Some(v) => {
                    s.insert(k, v);
                }
                None => {
                    s.remove(&k);
                }
            }
        }
    }
    m
}

/// Reads every store of the database, as a model.
fn read_all(db: &Database) -> sop::Result<BTreeMap<String, Items>> {
    let tx = db.begin(TransactionMode::ForReading)?;
    let mut out = BTreeMap::new();
    for name in tx.stores()? {
        let s = tx.open_raw_btree(&name)?;
        let mut items = BTreeMap::new();
        for it in s.iter() {
            let it = it?;
            items.insert(it.key, it.value);
        }
        assert_eq!(s.count()?, items.len() as u64, "count of store {name}");
        out.insert(name, items);
    }
    Ok(out)
}

fn last_committed(db: &Database) -> sop::Result<u64> {
    let tx = db.begin(TransactionMode::ForReading)?;
    if !tx.store_exists(META)? {
        return Ok(0);
    }
    let v = tx.open_raw_btree(META)?.get(LAST)?;
    Ok(v.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap()))
}

/// The child: commits transactions `last+1, last+2, ...` until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let started = Instant::now();
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("none") => Durability::None,
        _ => Durability::Immediate,
    };
    let db = Database::open(db_options(Path::new(&dir), durability)).unwrap();
    let mut n = last_committed(&db).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {n}").unwrap();
    out.flush().unwrap();
    while started.elapsed() < CHILD_MAX_RUN {
        n += 1;
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        let mut handles = BTreeMap::new();
        if n == 1 {
            for store in [META, STORE_A, STORE_B] {
                handles.insert(
                    store,
                    tx.new_raw_btree(store, store_options(store)).unwrap(),
                );
            }
        }
        for (store, k, v) in txn_ops(n) {
            let h = handles
                .entry(store)
                .or_insert_with(|| tx.open_raw_btree(store).unwrap());
            match v {
                Some(v) => {
                    h.upsert(&k, &v).unwrap();
                }
                None => {
                    h.remove(&k).unwrap();
                }
            }
        }
        tx.commit().unwrap();
        writeln!(out, "ACK {n}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills the child on drop, so a failing parent leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one child, kills it after `delay`; returns the acknowledged transactions it printed
/// and the first transaction it was going to commit (`READY` line), if it got that far.
fn run_child(dir: &Path, durability: Durability, delay: Duration) -> (Vec<u64>, Option<u64>) {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir)
        .env(
            DURABILITY_ENV,
            if durability == Durability::None {
                "none"
            } else {
                "immediate"
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut acks = Vec::new();
        let mut ready = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("ACK ") {
                acks.push(n.trim().parse::<u64>().unwrap());
            } else if let Some(n) = line.strip_prefix("READY ") {
                ready = Some(n.trim().parse::<u64>().unwrap());
            }
        }
        (acks, ready)
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    thread::sleep(delay);
    let early = child.0.try_wait().unwrap();
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    let (acks, ready) = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(
        early.is_none(),
        "the child exited before it was killed ({status:?}); stderr:\n{err}"
    );
    (acks, ready)
}

/// Durable commits (the default): every acknowledged commit survives a SIGKILL.
#[test]
fn sigkill_during_commits_loses_nothing_acknowledged_and_shows_nothing_partial() {
    crash_rounds(Durability::Immediate, ROUNDS);
}

/// Without syncs a process crash still loses nothing (the operating system keeps the writes);
/// this runs recovery over a log tail that was never synced.
#[test]
fn sigkill_with_durability_none_loses_nothing_acknowledged() {
    crash_rounds(Durability::None, ROUNDS / 2);
}

fn crash_rounds(durability: Durability, rounds: usize) {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut recovered = 0u64;
    let mut total_acks = 0usize;
    for round in 0..rounds {
        let delay = Duration::from_millis(rng.u64(10..=300));
        let (acks, ready) = run_child(dir.path(), durability, delay);
        total_acks += acks.len();
        let ctx = format!("{durability:?}, seed {seed}, round {round}, delay {delay:?}");
        if let Some(r) = ready {
            assert_eq!(r, recovered, "{ctx}: the child resumed from another state");
        }
        for (i, a) in acks.iter().enumerate() {
            assert_eq!(
                *a,
                recovered + 1 + i as u64,
                "{ctx}: acknowledgements out of order"
            );
        }
        let acked = acks.last().copied().unwrap_or(recovered);

        let db = Database::open(db_options(dir.path(), durability))
            .unwrap_or_else(|e| panic!("{ctx}: reopen after SIGKILL failed: {e}"));
        let last = last_committed(&db).unwrap();
        assert!(
            last == acked || last == acked + 1,
            "{ctx}: last acknowledged transaction is {acked}, the database holds {last}"
        );
        let got = read_all(&db).unwrap_or_else(|e| panic!("{ctx}: read failed: {e}"));
        let want: BTreeMap<String, _> = state_after(last)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        if got != want {
            for (name, items) in &want {
                let g = got.get(name);
                let diff: Vec<_> = items
                    .iter()
                    .filter(|(k, v)| g.and_then(|g| g.get(*k)) != Some(v))
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                    .chain(g.into_iter().flat_map(|g| {
                        g.keys()
                            .filter(|k| !items.contains_key(*k))
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                    }))
                    .collect();
                eprintln!("store {name}: keys that differ: {diff:?}");
            }
            panic!("{ctx}: the state is not the state after transaction {last}");
        }
        let report = db.verify().unwrap();
        assert!(report.is_ok(), "{ctx}: verify: {report:?}");
        drop(db);
        recovered = last;
    }
    assert!(
        recovered > 0 && total_acks > 0,
        "seed {seed}: no transaction was ever acknowledged"
    );
    let mut segs: Vec<String> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    segs.sort();
    eprintln!(
        "{durability:?}, seed {seed}: {rounds} rounds, {total_acks} acknowledged commits, last {recovered}, \
         {:?}; log segments at the end: {segs:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// A process killed while it creates the database
// ---------------------------------------------------------------------------------------------
//
// The kill above lands at a random moment and rarely inside the first open. These two tests
// build, on the real file system, exactly what a SIGKILL at two points of the creation leaves
// behind, and reopen it.

/// The options file of a freshly created database (its content does not depend on the folder
/// beyond the path it records).
fn fresh_options_file(dir: &Path) -> Vec<u8> {
    let db = Database::open(db_options(dir, Durability::Immediate)).unwrap();
    drop(db);
    std::fs::read(dir.join("dboptions.json")).unwrap()
}

/// Killed after `dboptions.tmp` was created (and written) but before it was renamed to
/// `dboptions.json`: the folder holds only the engine's own files. Reopening must finish the
/// creation rather than refuse the folder as "not a database".
#[test]
fn killed_before_the_options_file_was_renamed_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh_options_file(&dir.path().join("model"));
    for tmp_content in [Vec::new(), opts] {
        let db_dir = dir.path().join(format!("db{}", tmp_content.len()));
        std::fs::create_dir_all(&db_dir).unwrap();
        std::fs::write(db_dir.join("sop.lock"), b"").unwrap();
        std::fs::write(db_dir.join("dboptions.tmp"), &tmp_content).unwrap();
        let db = Database::open(db_options(&db_dir, Durability::Immediate)).unwrap_or_else(|e| {
            panic!(
                "reopen after a kill during creation (sop.lock + dboptions.tmp of {} bytes): {e}",
                tmp_content.len()
            )
        });
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        tx.new_raw_btree("s", StoreOptions::default())
            .unwrap()
            .add(b"k", b"v")
            .unwrap();
        tx.commit().unwrap();
    }
}

/// Killed right after the first log segment was created, before its header was written: an
/// empty `log/0000000001.seg` and no checkpoint. Nothing was ever committed, so reopening must
/// give an empty, working database (as it does when the same happens to a later segment), not
/// report corruption forever.
#[test]
fn killed_before_the_first_segment_header_was_written_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let opts = fresh_options_file(&dir.path().join("model"));
    for header_bytes in [0usize, 10] {
        let db_dir = dir.path().join(format!("db{header_bytes}"));
        std::fs::create_dir_all(db_dir.join("log")).unwrap();
        std::fs::write(db_dir.join("sop.lock"), b"").unwrap();
        // An options file made for the same options in another folder (the recorded path
        // differs; the engine rewrites it on open).
        std::fs::write(db_dir.join("dboptions.json"), &opts).unwrap();
        let header = vec![0u8; header_bytes];
        std::fs::write(db_dir.join("log").join("0000000001.seg"), header).unwrap();
        let db = Database::open(db_options(&db_dir, Durability::Immediate)).unwrap_or_else(|e| {
            panic!("reopen with a {header_bytes}-byte first segment and no commit: {e}")
        });
        assert_eq!(db.commit_seq().unwrap(), 0);
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        tx.new_raw_btree("s", StoreOptions::default())
            .unwrap()
            .add(b"k", b"v")
            .unwrap();
        tx.commit().unwrap();
        assert!(db.verify().unwrap().is_ok());
    }
}
