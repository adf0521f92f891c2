//! Clustered mode with real OS processes on one database folder and a real `redis-server`
//! (started per test; the tests fail if it is not installed).
//!
//! The test binary re-executes itself as a worker: [`worker_entry`] is a test that returns at
//! once unless `SOP_CLUSTER_WORKER` names a role; the parent runs
//! `<this binary> --exact worker_entry --nocapture --test-threads=1` with the role and its
//! parameters in the environment, and the worker's stdout and stderr in files.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sop::{ClusterOptions, Database, DatabaseOptions, Error, StoreOptions, TransactionMode};
use sop_redis::RedisOptions;
use sop_redis::testing::RedisServer;

/// Names the role of a worker process; unset in the parent.
const WORKER_ENV: &str = "SOP_CLUSTER_WORKER";
/// A worker that has not finished by then panics (so a hang fails instead of blocking).
const WORKER_DEADLINE: Duration = Duration::from_secs(180);
/// The parent gives up (and kills its workers) after this.
const PARENT_DEADLINE: Duration = Duration::from_secs(240);

const ACCOUNTS: u64 = 50;
const INITIAL: i64 = 1_000;
const TOTAL: i64 = ACCOUNTS as i64 * INITIAL;

/// A transfer: from, to, amount.
type Transfer = (u64, u64, i64);
/// The key of a transfer: worker, sequence number of the worker.
type TransferId = (u64, u64);

// ---------------------------------------------------------------------------------------------
// Shared settings

fn db_opts(dir: &Path) -> DatabaseOptions {
    let mut o = DatabaseOptions::new(dir);
    // Small segments and checkpoints: many segments, several checkpoints during a run.
    o.segment_bytes = 1 << 16;
    o.checkpoint_bytes = 1 << 18;
    o
}

/// A short lease: a worker killed while holding it blocks the others at most 2 s.
fn cluster_opts() -> ClusterOptions {
    ClusterOptions {
        lease_ttl: Duration::from_secs(2),
        lease_wait: Duration::from_secs(10),
        ..ClusterOptions::default()
    }
}

fn redis_opts(url: &str) -> RedisOptions {
    RedisOptions {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(1),
        ..RedisOptions::from_url(url)
    }
}

fn open_clustered(dir: &Path, url: &str) -> sop::Result<Database> {
    sop_redis::open(db_opts(dir), cluster_opts(), &redis_opts(url))
}

/// Opens clustered, retrying while Redis is unreachable (it may be restarting).
fn open_with_retry(dir: &Path, url: &str, deadline: Instant) -> Database {
    loop {
        match open_clustered(dir, url) {
            Ok(db) => return db,
            Err(e @ (Error::Coordinator(_) | Error::Timeout(_))) if Instant::now() < deadline => {
                eprintln!("opening {}: {e}; retrying", dir.display());
                sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("opening {} clustered: {e:?}", dir.display()),
        }
    }
}

/// The node cache through Redis (L2) for the accounts, so Redis is used for more than the lease.
fn cached() -> StoreOptions {
    StoreOptions {
        node_cache_duration: Some(Duration::from_secs(30)),
        ..StoreOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Worker processes

/// The entry point of worker processes; a no-op in a normal test run.
#[test]
fn worker_entry() {
    let Ok(role) = std::env::var(WORKER_ENV) else {
        return;
    };
    match role.as_str() {
        "bank" => bank_worker(),
        "race" => race_worker(),
        other => panic!("unknown worker role {other:?}"),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("worker: {name} is not set"))
}

fn env_u64(name: &str) -> u64 {
    env(name)
        .parse()
        .unwrap_or_else(|e| panic!("worker: {name}: {e}"))
}

/// The transfer number `n` of worker `w`: the same in every run, so a restarted worker does
/// what the killed one would have done.
fn transfer_for(w: u64, n: u64) -> Transfer {
    let mut rng = fastrand::Rng::with_seed(w.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n);
    let from = rng.u64(..ACCOUNTS);
    let to = (from + 1 + rng.u64(..ACCOUNTS - 1)) % ACCOUNTS;
    (from, to, rng.i64(1..=100))
}

/// Performs transfers `0..SOP_TRANSFERS` of worker `SOP_WORKER` that are not yet in the
/// database, each in one transaction with its record in `transfers`; appends `w n` to
/// `SOP_ACK` after each acknowledged commit.
fn bank_worker() {
    let dir = PathBuf::from(env("SOP_DIR"));
    let url = env("SOP_REDIS_URL");
    let w = env_u64("SOP_WORKER");
    let count = env_u64("SOP_TRANSFERS");
    let ack_path = PathBuf::from(env("SOP_ACK"));
    let deadline = Instant::now() + WORKER_DEADLINE;
    let db = open_with_retry(&dir, &url, deadline);

    // Resume: what an earlier run of this worker committed is in the database.
    let done: BTreeSet<u64> = {
        let tx = db.begin(TransactionMode::ForReading).unwrap();
        let t = tx.open_btree::<TransferId, Transfer>("transfers").unwrap();
        t.range((w, 0)..(w + 1, 0))
            .map(|i| i.map(|i| i.key.1))
            .collect::<sop::Result<_>>()
            .unwrap()
    };
    println!("START worker={w} already_done={}", done.len());

    let mut ack = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ack_path)
        .unwrap();
    let (mut committed, mut retryable, mut coordinator) = (0u64, 0u64, 0u64);
    for n in (0..count).filter(|n| !done.contains(n)) {
        let (from, to, amount) = transfer_for(w, n);
        let mut last_err: Option<String> = None;
        loop {
            assert!(
                Instant::now() < deadline,
                "worker {w}: transfer {n} not committed before the deadline (last error: \
                 {last_err:?})"
            );
            let r = (|| -> sop::Result<bool> {
                let tx = db.begin(TransactionMode::ForWriting)?;
                let transfers = tx.open_btree::<TransferId, Transfer>("transfers")?;
                if transfers.get(&(w, n))?.is_some() {
                    return Ok(false);
                }
                let acc = tx.open_btree::<u64, i64>("accounts")?;
                let f = acc.get(&from)?.expect("account exists");
                let g = acc.get(&to)?.expect("account exists");
                assert!(acc.update(&from, &(f - amount))?);
                assert!(acc.update(&to, &(g + amount))?);
                assert!(transfers.add(&(w, n), &(from, to, amount))?);
                tx.commit()?;
                Ok(true)
            })();
            match r {
                Ok(true) => {
                    ack.write_all(format!("{w} {n}\n").as_bytes()).unwrap();
                    ack.flush().unwrap();
                    committed += 1;
                    break;
                }
                Ok(false) => panic!(
                    "worker {w}: transfer {n} is in the database although this run never saw \
                     its commit succeed (last failed commit: {last_err:?}): a failed commit \
                     was applied"
                ),
                Err(e) if e.is_retryable() => {
                    retryable += 1;
                    last_err = Some(e.to_string());
                    sleep(Duration::from_micros(fastrand::u64(..3_000)));
                }
                Err(Error::Coordinator(m)) => {
                    coordinator += 1;
                    eprintln!("worker {w}: transfer {n}: coordinator: {m}; retrying");
                    last_err = Some(m);
                    sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("worker {w}: transfer {n}: {e:?}"),
            }
        }
    }
    println!(
        "STATS worker={w} committed={committed} retryable={retryable} coordinator={coordinator}"
    );
}

/// One side of a two-process race (`SOP_CASE`, `SOP_ROLE` = A or B): prepares a transaction,
/// signals `<SOP_SIG>/<role>.ready`, waits for `<SOP_SIG>/go`, commits, prints `RESULT ...`.
fn race_worker() {
    let dir = PathBuf::from(env("SOP_DIR"));
    let url = env("SOP_REDIS_URL");
    let case = env("SOP_CASE");
    let role = env("SOP_ROLE");
    let sig = PathBuf::from(env("SOP_SIG"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let db = open_with_retry(&dir, &url, deadline);
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    let mine = format!("by {role}");
    match (case.as_str(), role.as_str()) {
        ("disjoint", "A") => {
            let s = tx.open_btree::<u64, String>("s").unwrap();
            assert!(s.add(&100, &mine).unwrap());
            assert!(s.update(&1, &mine).unwrap());
        }
        ("disjoint", "B") => {
            let s = tx.open_btree::<u64, String>("s").unwrap();
            assert!(s.update(&5, &mine).unwrap());
            assert!(s.remove(&6).unwrap());
        }
        ("same-key", _) => {
            let s = tx.open_btree::<u64, String>("s").unwrap();
            let v = s.get(&7).unwrap().expect("key 7 exists");
            assert!(s.update(&7, &format!("{v}+{role}")).unwrap());
        }
        ("new-stores", _) => {
            let s = tx
                .new_btree::<u64, String>(&format!("store-{role}"), StoreOptions::default())
                .unwrap();
            assert!(s.add(&1, &mine).unwrap());
        }
        ("same-store", _) => {
            let s = tx
                .new_btree::<u64, String>("shared", StoreOptions::default())
                .unwrap();
            assert!(s.add(&u64::from(role == "B"), &mine).unwrap());
        }
        other => panic!("unknown race case {other:?}"),
    }
    fs::write(sig.join(format!("{role}.ready")), b"").unwrap();
    while !sig.join("go").exists() {
        assert!(Instant::now() < deadline, "{role}: no go signal");
        sleep(Duration::from_millis(2));
    }
    match tx.commit() {
        Ok(()) => println!("\nRESULT ok"),
        Err(e) if e.is_retryable() => println!("\nRESULT retryable {e}"),
        Err(e) => println!("\nRESULT error {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent side

/// A worker process, killed (SIGKILL) if still running when dropped.
struct Worker {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
}

impl Worker {
    fn spawn(name: &str, logs: &Path, role: &str, vars: &[(&str, String)]) -> Worker {
        let out = logs.join(format!("{name}.out"));
        let err = logs.join(format!("{name}.err"));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, role)
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Worker {
            name: name.to_owned(),
            child,
            out,
            err,
            status: None,
        }
    }

    /// Its output, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            fs::read_to_string(&self.out).unwrap_or_default(),
            self.name,
            fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Lines of its stdout that contain `tag`, from the tag on.
    fn tagged(&self, tag: &str) -> Vec<String> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.find(tag).map(|i| l[i..].to_owned()))
            .collect()
    }

    /// True once it has exited; panics (with its output) if it failed.
    fn finished(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
            if let Some(s) = self.status {
                assert!(
                    s.success(),
                    "worker {} failed: {s}\n{}",
                    self.name,
                    self.logs()
                );
            }
        }
        self.status.is_some()
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.status = Some(self.child.wait().unwrap());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until every worker has exited successfully.
fn wait_all(workers: &mut [Worker], deadline: Instant) {
    while !workers.iter_mut().all(Worker::finished) {
        assert!(
            Instant::now() < deadline,
            "workers did not finish in time:\n{}",
            workers
                .iter()
                .map(Worker::logs)
                .collect::<Vec<_>>()
                .join("\n")
        );
        sleep(Duration::from_millis(20));
    }
}

/// Complete lines of an ack file.
fn acks(path: &Path) -> Vec<TransferId> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| {
            let (w, n) = l.trim().split_once(' ').expect("ack line `w n`");
            (w.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

/// Creates the bank in `dir` (accounts with `INITIAL` each, empty transfers); returns the
/// database id.
fn create_bank(dir: &Path, url: &str) -> String {
    let db = open_clustered(dir, url).unwrap();
    db.transact(|tx| {
        let acc = tx.new_btree::<u64, i64>("accounts", cached())?;
        for a in 0..ACCOUNTS {
            acc.upsert(&a, &INITIAL)?;
        }
        tx.new_btree::<TransferId, Transfer>("transfers", StoreOptions::default())?;
        Ok(())
    })
    .unwrap();
    db.cluster_id().expect("clustered").to_owned()
}

fn bank_worker_vars(
    dir: &Path,
    url: &str,
    w: u64,
    count: u64,
    ack: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("SOP_DIR", dir.display().to_string()),
        ("SOP_REDIS_URL", url.to_owned()),
        ("SOP_WORKER", w.to_string()),
        ("SOP_TRANSFERS", count.to_string()),
        ("SOP_ACK", ack.display().to_string()),
    ]
}

#[derive(Debug, PartialEq, Eq)]
struct Bank {
    accounts: BTreeMap<u64, i64>,
    transfers: BTreeMap<TransferId, Transfer>,
}

fn read_bank(db: &Database) -> Bank {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let accounts = tx
        .open_btree::<u64, i64>("accounts")
        .unwrap()
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap();
    let transfers = tx.open_btree::<TransferId, Transfer>("transfers").unwrap();
    let count = transfers.count().unwrap();
    let transfers: BTreeMap<_, _> = transfers
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap();
    assert_eq!(
        count,
        transfers.len() as u64,
        "count() and iteration disagree"
    );
    Bank {
        accounts,
        transfers,
    }
}

/// The bank invariants: exactly the transfers `(w, n)` for `w < workers`, `n < per_worker`,
/// each as generated; balances are the initial ones plus the transfers; every acknowledged
/// transfer is there (and was acknowledged once).
fn check_bank(bank: &Bank, workers: u64, per_worker: u64, ack_files: &[PathBuf]) {
    let total: i64 = bank.accounts.values().sum();
    assert_eq!(total, TOTAL, "the total changed");
    assert_eq!(bank.accounts.len() as u64, ACCOUNTS);
    assert_eq!(
        bank.transfers.len() as u64,
        workers * per_worker,
        "number of transfers"
    );
    let mut expected: BTreeMap<u64, i64> = (0..ACCOUNTS).map(|a| (a, INITIAL)).collect();
    for (&(w, n), &t) in &bank.transfers {
        assert!(w < workers && n < per_worker, "unexpected transfer {w} {n}");
        assert_eq!(t, transfer_for(w, n), "transfer {w} {n} has other values");
        let (from, to, amount) = t;
        *expected.get_mut(&from).unwrap() -= amount;
        *expected.get_mut(&to).unwrap() += amount;
    }
    assert_eq!(
        bank.accounts, expected,
        "balances differ from initial + transfers"
    );
    for f in ack_files {
        let acked = acks(f);
        let distinct: BTreeSet<_> = acked.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            acked.len(),
            "a transfer acknowledged twice in {f:?}"
        );
        for id in &acked {
            assert!(
                bank.transfers.contains_key(id),
                "acknowledged transfer {id:?} ({f:?}) is not in the database"
            );
        }
    }
}

/// Opens `dir` clustered and then standalone, checks the bank both times (and that both see
/// the same data, and that `verify` is clean); returns the number of commits.
fn check_bank_folder(
    dir: &Path,
    url: &str,
    workers: u64,
    per_worker: u64,
    acks: &[PathBuf],
) -> u64 {
    let db = open_clustered(dir, url).unwrap();
    let clustered = read_bank(&db);
    check_bank(&clustered, workers, per_worker, acks);
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "verify (clustered): {report:?}");
    let seq = db.commit_seq().unwrap();
    drop(db);
    let db = Database::open(db_opts(dir)).unwrap();
    let standalone = read_bank(&db);
    assert!(
        clustered == standalone,
        "standalone reopen shows other data than the clustered one"
    );
    let report = db.verify().unwrap();
    assert!(report.is_ok(), "verify (standalone): {report:?}");
    assert_eq!(db.commit_seq().unwrap(), seq);
    seq
}

// ---------------------------------------------------------------------------------------------
// 1. The bank with four processes, a SIGKILLed worker and a Redis restart

#[test]
fn multi_process_bank_survives_a_killed_worker_and_a_redis_restart() {
    const WORKERS: u64 = 4;
    const PER_WORKER: u64 = 300;
    let started = Instant::now();
    let deadline = started + PARENT_DEADLINE;
    let mut server = RedisServer::start();
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let logs = tmp.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    create_bank(&dir, &url);

    let ack_files: Vec<PathBuf> = (0..WORKERS)
        .map(|w| logs.join(format!("acks-{w}")))
        .collect();
    let spawn = |w: u64, generation: u32| {
        Worker::spawn(
            &format!("bank-{w}.{generation}"),
            &logs,
            "bank",
            &bank_worker_vars(&dir, &url, w, PER_WORKER, &ack_files[w as usize]),
        )
    };
    let mut workers: Vec<Worker> = (0..WORKERS).map(|w| spawn(w, 0)).collect();
    let mut killed: Option<Worker> = None;
    let mut acks_at_kill = 0;
    let mut redis_restarted_at = None;
    loop {
        let mut all_done = true;
        for w in &mut workers {
            all_done &= w.finished();
        }
        if all_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bank did not finish in time:\n{}",
            workers
                .iter()
                .map(Worker::logs)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let done: Vec<usize> = ack_files.iter().map(|f| acks(f).len()).collect();
        let total: usize = done.iter().sum();
        if killed.is_none() && done[0] >= 40 {
            // Killed first: the replacement reads what is done when it starts. It may have
            // to wait for the lease of the killed one to expire.
            workers[0].kill();
            acks_at_kill = acks(&ack_files[0]).len();
            let old = std::mem::replace(&mut workers[0], spawn(0, 1));
            eprintln!(
                "SIGKILLed worker 0 ({:?}) after {acks_at_kill} acknowledged transfers, at {:?}",
                old.status,
                started.elapsed()
            );
            killed = Some(old);
        }
        if redis_restarted_at.is_none() && killed.is_some() && total >= 500 {
            server.restart();
            eprintln!(
                "restarted Redis after {total} acknowledged transfers, at {:?}",
                started.elapsed()
            );
            redis_restarted_at = Some(total);
        }
        sleep(Duration::from_millis(20));
    }
    let run = started.elapsed();
    assert!(killed.is_some(), "worker 0 was never killed");
    let restarted_at = redis_restarted_at.expect("Redis was never restarted during the run");
    for w in &workers {
        for line in w.tagged("START").iter().chain(&w.tagged("STATS")) {
            eprintln!("{}: {line}", w.name);
        }
    }
    if let Some(old) = &killed {
        for line in old.tagged("START") {
            eprintln!("{} (killed): {line}", old.name);
        }
    }
    let seq = check_bank_folder(&dir, &url, WORKERS, PER_WORKER, &ack_files);
    let acked: usize = ack_files.iter().map(|f| acks(f).len()).sum();
    eprintln!(
        "bank: {seq} commits, {acked} acknowledged transfers ({} lost their ack to the kill), \
         worker 0 killed after {acks_at_kill}, Redis restarted after {restarted_at}; \
         run {run:?}, total {:?}",
        (WORKERS * PER_WORKER) as usize - acked,
        started.elapsed()
    );
    assert!(restarted_at < (WORKERS * PER_WORKER) as usize);
}

// ---------------------------------------------------------------------------------------------
// 2. Two processes racing: merge and conflict

/// Creates store `s` with keys 0..10 (one leaf), runs A and B of `case` so that both commit
/// at once, and returns their results, the server and the folder.
fn race(case: &str) -> (RedisServer, tempfile::TempDir, [String; 2]) {
    let server = RedisServer::start();
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let sig = tmp.path().join("sig");
    fs::create_dir_all(&sig).unwrap();
    {
        let db = open_clustered(&dir, &url).unwrap();
        db.transact(|tx| {
            let s = tx.new_btree::<u64, String>("s", StoreOptions::default())?;
            for k in 0..10 {
                s.add(&k, &"base".to_owned())?;
            }
            Ok(())
        })
        .unwrap();
    }
    let mut workers: Vec<Worker> = ["A", "B"]
        .iter()
        .map(|role| {
            Worker::spawn(
                &format!("{case}-{role}"),
                tmp.path(),
                "race",
                &[
                    ("SOP_DIR", dir.display().to_string()),
                    ("SOP_REDIS_URL", url.clone()),
                    ("SOP_CASE", case.to_owned()),
                    ("SOP_ROLE", (*role).to_owned()),
                    ("SOP_SIG", sig.display().to_string()),
                ],
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !["A", "B"]
        .iter()
        .all(|r| sig.join(format!("{r}.ready")).exists())
    {
        for w in &mut workers {
            assert!(
                !w.finished(),
                "{} exited before ready:\n{}",
                w.name,
                w.logs()
            );
        }
        assert!(Instant::now() < deadline, "workers not ready in time");
        sleep(Duration::from_millis(5));
    }
    fs::write(sig.join("go"), b"").unwrap();
    wait_all(&mut workers, deadline);
    let results = [0, 1].map(|i| {
        let lines = workers[i].tagged("RESULT ");
        assert_eq!(lines.len(), 1, "{}", workers[i].logs());
        lines[0]["RESULT ".len()..].to_owned()
    });
    eprintln!("{case}: A -> {}, B -> {}", results[0], results[1]);
    (server, tmp, results)
}

fn all_of(db: &Database, store: &str) -> BTreeMap<u64, String> {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    tx.open_btree::<u64, String>(store)
        .unwrap()
        .iter()
        .map(|i| i.map(|i| (i.key, i.value)))
        .collect::<sop::Result<_>>()
        .unwrap()
}

fn exactly_one_wins(results: &[String; 2]) -> usize {
    let ok: Vec<usize> = (0..2).filter(|&i| results[i] == "ok").collect();
    assert_eq!(ok.len(), 1, "exactly one should commit: {results:?}");
    let loser = 1 - ok[0];
    assert!(
        results[loser].starts_with("retryable conflict"),
        "the other should get a retryable conflict: {results:?}"
    );
    ok[0]
}

#[test]
fn processes_changing_disjoint_keys_of_one_leaf_both_commit_and_merge() {
    let (server, tmp, results) = race("disjoint");
    assert_eq!(results, ["ok", "ok"]);
    let db = open_clustered(&tmp.path().join("db"), &server.url()).unwrap();
    let m = all_of(&db, "s");
    let mut expected: BTreeMap<u64, String> = (0..10).map(|k| (k, "base".to_owned())).collect();
    expected.insert(100, "by A".into());
    expected.insert(1, "by A".into());
    expected.insert(5, "by B".into());
    expected.remove(&6);
    assert_eq!(m, expected);
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    assert_eq!(
        tx.open_btree::<u64, String>("s").unwrap().count().unwrap(),
        10
    );
    drop(tx);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn processes_reading_and_writing_one_key_conflict_and_one_commits() {
    let (server, tmp, results) = race("same-key");
    let winner = exactly_one_wins(&results);
    let db = open_clustered(&tmp.path().join("db"), &server.url()).unwrap();
    let m = all_of(&db, "s");
    let role = ["A", "B"][winner];
    assert_eq!(
        m.get(&7).map(String::as_str),
        Some(&*format!("base+{role}"))
    );
    assert_eq!(m.len(), 10);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn processes_creating_different_stores_both_commit() {
    let (server, tmp, results) = race("new-stores");
    assert_eq!(results, ["ok", "ok"]);
    let db = open_clustered(&tmp.path().join("db"), &server.url()).unwrap();
    for role in ["A", "B"] {
        assert_eq!(
            all_of(&db, &format!("store-{role}")),
            BTreeMap::from([(1, format!("by {role}"))])
        );
    }
    assert_eq!(all_of(&db, "s").len(), 10);
    assert!(db.verify().unwrap().is_ok());
}

#[test]
fn processes_creating_the_same_store_conflict_and_one_commits() {
    let (server, tmp, results) = race("same-store");
    let winner = exactly_one_wins(&results);
    let db = open_clustered(&tmp.path().join("db"), &server.url()).unwrap();
    let role = ["A", "B"][winner];
    assert_eq!(
        all_of(&db, "shared"),
        BTreeMap::from([(winner as u64, format!("by {role}"))])
    );
    assert!(db.verify().unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------------
// 3. Two databases sharing one Redis

#[test]
fn two_databases_share_one_redis_in_separate_namespaces() {
    const PER_WORKER: u64 = 100;
    let started = Instant::now();
    let server = RedisServer::start();
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let dirs = [tmp.path().join("db-x"), tmp.path().join("db-y")];
    let ids = dirs.each_ref().map(|d| create_bank(d, &url));
    assert_ne!(ids[0], ids[1], "two databases with one id");

    let mut workers = Vec::new();
    let mut ack_files = [Vec::new(), Vec::new()];
    for (d, dir) in dirs.iter().enumerate() {
        for w in 0..2 {
            let ack = logs.join(format!("acks-{d}-{w}"));
            workers.push(Worker::spawn(
                &format!("db{d}-worker{w}"),
                &logs,
                "bank",
                &bank_worker_vars(dir, &url, w, PER_WORKER, &ack),
            ));
            ack_files[d].push(ack);
        }
    }
    wait_all(&mut workers, started + PARENT_DEADLINE);

    let mut conn = server.connection(Duration::from_secs(2)).unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    let mut namespaces: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in &keys {
        let (id, rest) = k
            .strip_prefix("sop:{")
            .and_then(|r| r.split_once("}:"))
            .unwrap_or_else(|| panic!("key {k:?} outside any database namespace"));
        namespaces
            .entry(id.to_owned())
            .or_default()
            .push(rest.to_owned());
    }
    let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        namespaces
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        expected,
        "Redis keys: {keys:?}"
    );
    for (d, dir) in dirs.iter().enumerate() {
        let id = &ids[d];
        let mine = &namespaces[id];
        assert!(mine.iter().any(|k| k == "fence"), "{id}: {mine:?}");
        let hint: Option<u64> = redis::cmd("GET")
            .arg(format!("sop:{{{id}}}:seq"))
            .query(&mut conn)
            .unwrap();
        let seq = check_bank_folder(dir, &url, 2, PER_WORKER, &ack_files[d]);
        // Only a hint (a release that timed out does not raise it), but never ahead.
        assert!(
            hint.is_some_and(|h| h <= seq),
            "{id}: seq hint {hint:?}, last commit {seq}"
        );
        eprintln!(
            "database {d} ({id}): {seq} commits, seq hint {hint:?}, Redis keys: {} ({} cache \
             entries)",
            mine.len(),
            mine.iter().filter(|k| k.starts_with("c:")).count()
        );
    }
    eprintln!("two databases: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 4. Configuration errors

/// A loopback port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_redis_settings_fail_quickly_with_a_coordinator_error_and_leave_the_folder_usable() {
    let server = RedisServer::start_with_password("right-password");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let good = RedisOptions {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(1),
        ..server.options()
    };
    // Accepts connections (the kernel does) but never reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let not_redis = TcpListener::bind("127.0.0.1:0").unwrap();
    let cases: Vec<(&str, RedisOptions)> = vec![
        (
            "wrong password",
            RedisOptions {
                password: Some("wrong-password".into()),
                ..good.clone()
            },
        ),
        (
            "no password",
            RedisOptions {
                password: None,
                ..good.clone()
            },
        ),
        (
            "wrong password in the URL",
            RedisOptions {
                url: Some(format!("redis://:wrong-password@{}", server.address())),
                password: None,
                ..good.clone()
            },
        ),
        (
            "closed port",
            RedisOptions {
                address: format!("127.0.0.1:{}", closed_port()),
                ..good.clone()
            },
        ),
        (
            "a server that never answers",
            RedisOptions {
                address: silent.local_addr().unwrap().to_string(),
                connect_timeout: Duration::from_millis(500),
                ..good.clone()
            },
        ),
        (
            "a server that is not Redis",
            RedisOptions {
                address: not_redis.local_addr().unwrap().to_string(),
                ..good.clone()
            },
        ),
    ];
    let mut written = 0u64;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| answer_like_http(&not_redis, &stop));
        try_bad_settings(&dir, &good, &cases, &mut written);
        stop.store(true, Ordering::Relaxed);
    });
    drop(silent);
    let db = Database::open(db_opts(&dir)).unwrap();
    assert_eq!(all_of(&db, "s").len() as u64, written);
    assert!(db.verify().unwrap().is_ok());
}

/// Serves every connection with an HTTP error until `stop`.
fn answer_like_http(listener: &TcpListener, stop: &AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Opens `dir` with each of the bad settings (each must fail with [`Error::Coordinator`]
/// within a bound), and with `good` right after each failure.
fn try_bad_settings(
    dir: &Path,
    good: &RedisOptions,
    cases: &[(&str, RedisOptions)],
    written: &mut u64,
) {
    // First on a folder nobody has open (the failing opener is alone), then while a good
    // handle has it open (the failing opener joins).
    for keep_one_open in [false, true] {
        let keeper =
            keep_one_open.then(|| sop_redis::open(db_opts(dir), cluster_opts(), good).unwrap());
        for (what, bad) in cases {
            let t = Instant::now();
            let r = sop_redis::open(db_opts(dir), cluster_opts(), bad);
            let took = t.elapsed();
            match r {
                Err(Error::Coordinator(m)) => eprintln!("{what}: {took:?}: {m}"),
                Err(e) => panic!("{what}: expected Error::Coordinator, got {e:?}"),
                Ok(_) => panic!("{what}: opened with bad Redis settings"),
            }
            // Generous: only a hang (lease or open waits, retries) should trip it.
            assert!(
                took < bad.connect_timeout + Duration::from_secs(10),
                "{what}: took {took:?}"
            );
            // Right after, the correct settings work.
            let db = sop_redis::open(db_opts(dir), cluster_opts(), good)
                .unwrap_or_else(|e| panic!("after {what}: {e:?}"));
            db.transact(|tx| {
                tx.new_btree::<u64, String>("s", StoreOptions::default())?
                    .add(&*written, &(*what).to_owned())?;
                Ok(())
            })
            .unwrap();
            *written += 1;
        }
        if let Some(k) = &keeper {
            assert_eq!(all_of(k, "s").len() as u64, *written);
        }
    }
}
