//! A process killed (SIGKILL) in the middle of a commit, at the two moments that matter: before
//! its commit marker exists (the commit did not happen) and right after (it did), while it holds
//! the commit lease. The other process must go on once the lease expires, see exactly the
//! decided outcome, and the folder must verify clean. The worker is this test binary run again
//! with `SOP_KILL_WORKER` set; the engine's `testing` hooks stall its commit at the chosen point.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sop::{ClusterOptions, Database, DatabaseOptions, StoreOptions, TransactionMode};
use sop_redis::RedisOptions;
use sop_redis::testing::RedisServer;

const WORKER_ENV: &str = "SOP_KILL_WORKER";
const TTL: Duration = Duration::from_secs(2);

fn open(dir: &Path, url: &str) -> Database {
    let cluster = ClusterOptions {
        lease_ttl: TTL,
        ..ClusterOptions::default()
    };
    sop_redis::open(
        DatabaseOptions::new(dir),
        cluster,
        &RedisOptions::from_url(url),
    )
    .unwrap()
}

fn value(db: &Database, k: u64) -> Option<String> {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    tx.open_btree::<u64, String>("s").unwrap().get(&k).unwrap()
}

/// The worker: commits key 1 and stalls inside the commit (the env var names where).
#[test]
fn kill_worker_entry() {
    let Some(spec) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let spec = spec.into_string().unwrap();
    let (dir, url) = spec.split_once('|').unwrap();
    let db = open(Path::new(dir), url);
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    tx.open_btree::<u64, String>("s")
        .unwrap()
        .upsert(&1, &"from the killed process".to_string())
        .unwrap();
    println!("committing");
    let r = tx.commit();
    panic!("the stall hook did not stop the commit: {r:?}");
}

fn run(stall: &str) -> Option<String> {
    let redis = RedisServer::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), &url);
    db.transact(|tx| {
        tx.new_btree::<u64, String>("s", StoreOptions::default())?
            .upsert(&0, &"setup".to_string())?;
        Ok(())
    })
    .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_worker_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, format!("{}|{url}", dir.path().display()))
        .env(stall, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("committing")),
        "the worker did not start its commit"
    );
    // Wait until it is stalled inside the commit, holding the lease.
    assert!(
        stderr.any(|l| l.unwrap().contains("sop: stalled at")),
        "the worker did not reach the stall point"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // This process commits: it waits for the dead holder's lease to expire, then goes on.
    let t = Instant::now();
    db.transact(|tx| {
        tx.open_btree::<u64, String>("s")?
            .upsert(&2, &"after the kill".to_string())?;
        Ok(())
    })
    .unwrap();
    let waited = t.elapsed();
    assert!(
        waited < TTL * 10,
        "the commit waited {waited:?} for a dead process's lease"
    );
    assert_eq!(value(&db, 2).as_deref(), Some("after the kill"));
    let seen = value(&db, 1);
    assert!(db.verify().unwrap().is_ok());
    // Another process (a newcomer) sees the same, and so does a standalone reopen.
    let other = open(dir.path(), &url);
    assert_eq!(value(&other, 1), seen);
    drop((db, other));
    let alone = Database::open(DatabaseOptions::new(dir.path())).unwrap();
    assert_eq!(value(&alone, 1), seen);
    assert_eq!(value(&alone, 2).as_deref(), Some("after the kill"));
    assert!(alone.verify().unwrap().is_ok());
    seen
}

#[test]
fn killed_before_its_marker_the_commit_did_not_happen() {
    if std::env::var_os(WORKER_ENV).is_some() {
        return;
    }
    assert_eq!(run("SOP_TEST_STALL_BEFORE_MARKER"), None);
}

#[test]
fn killed_right_after_its_marker_the_commit_happened() {
    if std::env::var_os(WORKER_ENV).is_some() {
        return;
    }
    assert_eq!(
        run("SOP_TEST_STALL_AFTER_MARKER").as_deref(),
        Some("from the killed process")
    );
}
