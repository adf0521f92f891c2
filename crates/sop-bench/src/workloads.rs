//! The workloads of `shared/bench/WORKLOADS.md` and the rows they report.
//!
//! Only the operation named by a row is timed: loading the data a workload reads or removes,
//! the checks that the engine did what it was asked, and closing the database are not.
//!
//! The concurrent rows (W4c, W5's `random_get_2t`) share one open engine between threads
//! (`&dyn BenchDb`); the threads start together at a barrier and the time runs from there until
//! the last one is done.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Result, anyhow, bail, ensure};

use crate::{BenchDb, EngineConfig, dir_size, engines};

/// Key length of the random workloads.
pub const KEY_LEN: usize = 16;
/// Value length of the random workloads.
pub const VALUE_LEN: usize = 100;
/// Items per transaction of the batched workloads (W3, W7).
pub const BATCH: usize = 1_000;
/// Transactions of W4, and of W4c over all its threads.
pub const SINGLE_COMMITS: usize = 1_000;
/// Threads of W4c, each committing its share of [`SINGLE_COMMITS`] on disjoint keys.
pub const WRITE_THREADS: usize = 8;
/// Threads of W5's `random_get_2t`, each reading its share of the N keys.
pub const READ_THREADS: usize = 2;
/// Scans of W6.
pub const SCANS: usize = 1_000;
/// Items per scan of W6.
pub const SCAN_LEN: usize = 100;
/// Default seed of the generated keys and values.
pub const DEFAULT_SEED: u64 = 0x50_50_b3_4c_u64;

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// SOP's own benchmark: `key_{i}`/`value_{i}`, N inserts in one transaction, N reads in
    /// one read transaction, N deletes in one transaction.
    W1,
    /// Bulk load of N random keys in one transaction; file size after.
    W2,
    /// N random inserts in transactions of 1,000.
    W3,
    /// 1,000 single-insert durable transactions.
    W4,
    /// The 1,000 single-insert durable transactions of W4 from 8 threads at once (125 each),
    /// on disjoint keys.
    W4c,
    /// N random point reads of present keys, from one thread, then from 2 threads at once.
    W5,
    /// 1,000 range scans of 100 consecutive keys; one full scan.
    W6,
    /// N/2 random removals in transactions of 1,000; file size after.
    W7,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 8] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W4c,
        Workload::W5,
        Workload::W6,
        Workload::W7,
    ];

    /// `"W1"`... (`"W4c"`)
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W4c => "W4c",
            Workload::W5 => "W5",
            Workload::W6 => "W6",
            Workload::W7 => "W7",
        }
    }

    /// Parses a comma-separated list of workloads, or `all`.
    ///
    /// # Errors
    /// An unknown name.
    pub fn parse_list(s: &str) -> Result<Vec<Workload>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("all") {
                out.extend(Workload::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
        out.sort();
        out.dedup();
        ensure!(!out.is_empty(), "no workload given");
        Ok(out)
    }

    /// Runs the workload on engine `engine` in the fresh folder `dir`.
    ///
    /// # Errors
    /// The engine's errors; an engine that returns wrong results.
    pub fn run(
        self,
        engine: &str,
        dir: &Path,
        cfg: &EngineConfig,
        n: usize,
        seed: u64,
    ) -> Result<Vec<Row>> {
        ensure!(n > 0, "n must be at least 1");
        let mut run = Run {
            engine,
            workload: self,
            dir,
            rows: Vec::new(),
        };
        let db = engines::open(engine, dir, cfg)?;
        match self {
            Workload::W1 => run.w1(db, n)?,
            Workload::W2 => run.w2(db, n, seed)?,
            Workload::W3 => run.w3(db, n, seed)?,
            Workload::W4 => run.w4(db, seed)?,
            Workload::W4c => run.w4c(db, seed)?,
            Workload::W5 => run.w5(db, n, seed)?,
            Workload::W6 => run.w6(db, n, seed)?,
            Workload::W7 => run.w7(db, n, seed)?,
        }
        Ok(run.rows)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match Workload::ALL
            .iter()
            .find(|w| w.name().eq_ignore_ascii_case(s))
        {
            Some(w) => Ok(*w),
            None => bail!("unknown workload {s:?} (W1..W7, W4c or all)"),
        }
    }
}

/// The row that a concurrent row (`workload`, `op`) scales, and the label of their ratio:
/// W4c's commits against W4's, W5's `random_get_2t` against `random_get`.
#[must_use]
pub fn baseline(workload: &str, op: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match (workload, op) {
        ("W4c", _) => Some(("W4", "single_insert_commit", "W4c/W4")),
        ("W5", "random_get_2t") => Some(("W5", "random_get", "2t/1t")),
        _ => None,
    }
}

/// One timed measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Engine name.
    pub engine: String,
    /// Workload name (`W1`...).
    pub workload: String,
    /// The operation timed (`insert`, `read`, `range100`...).
    pub op: String,
    /// Operations timed (items, or scans for `range100`, commits for W4 and W4c).
    pub n: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `n / seconds`.
    pub ops_per_sec: f64,
    /// Size of the database folder after the workload (closed), where the workload reports it.
    pub bytes_on_disk: Option<u64>,
}

/// Adds `r` to `rows`, or replaces the same engine's row of the same workload and op when `r`
/// is faster (the size measured in that run comes with it): the best of repeated runs.
pub fn keep_best(rows: &mut Vec<Row>, r: Row) {
    match rows
        .iter_mut()
        .find(|x| x.engine == r.engine && x.workload == r.workload && x.op == r.op)
    {
        Some(x) if r.ops_per_sec > x.ops_per_sec => *x = r,
        Some(_) => {}
        None => rows.push(r),
    }
}

impl Row {
    /// The row as a JSON object.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "engine": self.engine,
            "workload": self.workload,
            "op": self.op,
            "n": self.n,
            "seconds": self.seconds,
            "ops_per_sec": self.ops_per_sec,
            "bytes_on_disk": self.bytes_on_disk,
        })
    }
}

/// Keys and values of a workload.
#[derive(Debug, Clone)]
pub struct Data {
    /// Keys, in generation order.
    pub keys: Vec<Vec<u8>>,
    /// `values[i]` goes with `keys[i]`.
    pub values: Vec<Vec<u8>>,
}

impl Data {
    /// `n` random 16-byte keys with random 100-byte values, from `seed`.
    #[must_use]
    pub fn random(n: usize, seed: u64) -> Data {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut gen_bytes = |len: usize| {
            let mut b = vec![0; len];
            rng.fill(&mut b);
            b
        };
        let keys = (0..n).map(|_| gen_bytes(KEY_LEN)).collect();
        let values = (0..n).map(|_| gen_bytes(VALUE_LEN)).collect();
        Data { keys, values }
    }

    /// SOP's benchmark data: keys `key_{i}`, values `value_{i}`.
    #[must_use]
    pub fn sop_benchmark(n: usize) -> Data {
        Data {
            keys: (0..n).map(|i| format!("key_{i}").into_bytes()).collect(),
            values: (0..n).map(|i| format!("value_{i}").into_bytes()).collect(),
        }
    }

    /// Number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no items.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// `0..n` in a random order from `seed`.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    fastrand::Rng::with_seed(seed).shuffle(&mut idx);
    idx
}

type Db = Box<dyn BenchDb>;

struct Run<'a> {
    engine: &'a str,
    workload: Workload,
    dir: &'a Path,
    rows: Vec<Row>,
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Runs `f(0)`...`f(threads - 1)` on as many threads at once, started together; returns the
/// seconds from the start until the last one is done, or the first error.
fn parallel(threads: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<f64> {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (f, start) = (&f, &start);
                scope.spawn(move || {
                    start.wait();
                    f(t)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let results: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a benchmark thread panicked")))
            })
            .collect();
        let secs = t0.elapsed().as_secs_f64();
        results.into_iter().collect::<Result<()>>()?;
        Ok(secs)
    })
}

/// Has `threads` threads hold a read transaction at the same time once, untimed, so that the
/// engine sets up whatever it keeps per thread or per concurrent transaction (SQLite's pooled
/// connections, LMDB's reader slots) before the timed run.
fn warm_up(db: &dyn BenchDb, threads: usize) -> Result<()> {
    let inside = Barrier::new(threads);
    parallel(threads, |_| {
        db.read(&mut |r| {
            inside.wait();
            r.scan(None, 1, &mut |_, _| ())?;
            Ok(())
        })
    })?;
    Ok(())
}

/// Inserts `idx` items of `data` in transactions of `batch` items.
fn insert(db: &dyn BenchDb, data: &Data, idx: &[usize], batch: usize) -> Result<()> {
    for chunk in idx.chunks(batch) {
        db.write(&mut |w| {
            for &i in chunk {
                w.insert(&data.keys[i], &data.values[i])?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Inserts every item of `data` in one transaction.
fn load(db: &dyn BenchDb, data: &Data) -> Result<()> {
    let all: Vec<usize> = (0..data.len()).collect();
    insert(db, data, &all, usize::MAX)
}

/// Checks that the items `present` are there with their values and `absent` are not.
fn check(db: &dyn BenchDb, data: &Data, present: &[usize], absent: &[usize]) -> Result<()> {
    let mut buf = Vec::new();
    db.read(&mut |r| {
        for &i in present {
            ensure!(
                r.get(&data.keys[i], &mut buf)?,
                "item {i} is missing after the workload"
            );
            ensure!(buf == data.values[i], "item {i} has a wrong value");
        }
        for &i in absent {
            ensure!(
                !r.get(&data.keys[i], &mut buf)?,
                "item {i} is still there after its removal"
            );
        }
        Ok(())
    })
}

/// Up to 100 items of `idx`, spread over it.
fn sample(idx: &[usize]) -> Vec<usize> {
    let step = (idx.len() / 100).max(1);
    idx.iter().step_by(step).copied().collect()
}

impl Run<'_> {
    fn row(&mut self, op: &str, n: usize, seconds: f64, bytes_on_disk: Option<u64>) {
        self.rows.push(Row {
            engine: self.engine.to_owned(),
            workload: self.workload.name().to_owned(),
            op: op.to_owned(),
            n: n as u64,
            seconds,
            ops_per_sec: if seconds > 0.0 {
                n as f64 / seconds
            } else {
                f64::INFINITY
            },
            bytes_on_disk,
        });
    }

    /// Closes the database and measures its folder.
    fn close(&self, db: Db) -> Result<u64> {
        drop(db);
        dir_size(self.dir)
    }

    fn w1(&mut self, db: Db, n: usize) -> Result<()> {
        let data = Data::sop_benchmark(n);
        let all: Vec<usize> = (0..n).collect();
        let secs = timed(|| insert(&*db, &data, &all, usize::MAX))?;
        self.row("insert", n, secs, None);

        let mut buf = Vec::new();
        let secs = timed(|| {
            db.read(&mut |r| {
                for i in 0..n {
                    ensure!(r.get(&data.keys[i], &mut buf)?, "key_{i} is missing");
                    ensure!(buf == data.values[i], "key_{i} has a wrong value");
                }
                Ok(())
            })
        })?;
        self.row("read", n, secs, None);

        let secs = timed(|| {
            db.write(&mut |w| {
                for k in &data.keys {
                    w.remove(k)?;
                }
                Ok(())
            })
        })?;
        self.row("delete", n, secs, None);
        let mut left = 0;
        db.read(&mut |r| {
            left = r.scan(None, 1, &mut |_, _| ())?;
            Ok(())
        })?;
        ensure!(left == 0, "items are left after deleting them all");
        Ok(())
    }

    fn w2(&mut self, db: Db, n: usize, seed: u64) -> Result<()> {
        let data = Data::random(n, seed);
        let secs = timed(|| load(&*db, &data))?;
        let all: Vec<usize> = (0..n).collect();
        check(&*db, &data, &sample(&all), &[])?;
        let size = self.close(db)?;
        self.row("bulk_load", n, secs, Some(size));
        Ok(())
    }

    fn w3(&mut self, db: Db, n: usize, seed: u64) -> Result<()> {
        let data = Data::random(n, seed);
        let all: Vec<usize> = (0..n).collect();
        let secs = timed(|| insert(&*db, &data, &all, BATCH))?;
        check(&*db, &data, &sample(&all), &[])?;
        let size = self.close(db)?;
        self.row("batched_insert", n, secs, Some(size));
        Ok(())
    }

    fn w4(&mut self, db: Db, seed: u64) -> Result<()> {
        let data = Data::random(SINGLE_COMMITS, seed);
        let all: Vec<usize> = (0..SINGLE_COMMITS).collect();
        let secs = timed(|| insert(&*db, &data, &all, 1))?;
        check(&*db, &data, &sample(&all), &[])?;
        self.row("single_insert_commit", SINGLE_COMMITS, secs, None);
        Ok(())
    }

    /// W4's commits from [`WRITE_THREADS`] threads at once: thread `t` inserts items
    /// `t, t + 8, ...`, one durable transaction each. Afterwards every item must be there, and
    /// nothing else.
    fn w4c(&mut self, db: Db, seed: u64) -> Result<()> {
        let data = Data::random(SINGLE_COMMITS, seed);
        let all: Vec<usize> = (0..SINGLE_COMMITS).collect();
        warm_up(&*db, WRITE_THREADS)?;
        let secs = parallel(WRITE_THREADS, |t| {
            let mine: Vec<usize> = all.iter().copied().skip(t).step_by(WRITE_THREADS).collect();
            insert(&*db, &data, &mine, 1)
        })?;
        check(&*db, &data, &all, &[])?;
        let mut count = 0;
        db.read(&mut |r| {
            count = r.scan(None, usize::MAX, &mut |_, _| ())?;
            Ok(())
        })?;
        ensure!(
            count == SINGLE_COMMITS,
            "{count} items after {SINGLE_COMMITS} concurrent inserts"
        );
        self.row(
            &format!("single_insert_commit_{WRITE_THREADS}t"),
            SINGLE_COMMITS,
            secs,
            None,
        );
        Ok(())
    }

    /// N reads in one read transaction; then the same N reads split between [`READ_THREADS`]
    /// threads, each in its own read transaction.
    fn w5(&mut self, db: Db, n: usize, seed: u64) -> Result<()> {
        let data = Data::random(n, seed);
        load(&*db, &data)?;
        let order = shuffled(n, seed ^ 0x5);
        let reads = |db: &dyn BenchDb, idx: &[usize]| {
            let mut buf = Vec::new();
            db.read(&mut |r| {
                for &i in idx {
                    ensure!(r.get(&data.keys[i], &mut buf)?, "item {i} is missing");
                    ensure!(buf.len() == VALUE_LEN, "item {i} has a wrong value");
                }
                Ok(())
            })
        };
        let secs = timed(|| reads(&*db, &order))?;
        self.row("random_get", n, secs, None);

        warm_up(&*db, READ_THREADS)?;
        let share = n.div_ceil(READ_THREADS);
        let secs = parallel(READ_THREADS, |t| {
            reads(&*db, order.chunks(share).nth(t).unwrap_or_default())
        })?;
        self.row(&format!("random_get_{READ_THREADS}t"), n, secs, None);
        Ok(())
    }

    fn w6(&mut self, db: Db, n: usize, seed: u64) -> Result<()> {
        let data = Data::random(n, seed);
        load(&*db, &data)?;
        let mut sorted = data.keys.clone();
        sorted.sort();
        // Scans start at random present keys with at least SCAN_LEN items from there on.
        let room = n.saturating_sub(SCAN_LEN).max(1);
        let want = SCAN_LEN.min(n);
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x6);
        let starts: Vec<&[u8]> = (0..SCANS)
            .map(|_| sorted[rng.usize(..room)].as_slice())
            .collect();
        let mut bytes = 0usize;
        let secs = timed(|| {
            db.read(&mut |r| {
                for s in &starts {
                    let got = r.scan(Some(s), SCAN_LEN, &mut |k, v| bytes += k.len() + v.len())?;
                    ensure!(got == want, "a scan returned {got} items, not {want}");
                }
                Ok(())
            })
        })?;
        self.row("range100_scans", SCANS, secs, None);

        let secs = timed(|| {
            db.read(&mut |r| {
                let got = r.scan(None, usize::MAX, &mut |k, v| bytes += k.len() + v.len())?;
                ensure!(got == n, "the full scan returned {got} items, not {n}");
                Ok(())
            })
        })?;
        self.row("full_scan_items", n, secs, None);
        ensure!(bytes > 0, "scans visited nothing");
        Ok(())
    }

    fn w7(&mut self, db: Db, n: usize, seed: u64) -> Result<()> {
        let data = Data::random(n, seed);
        load(&*db, &data)?;
        let order = shuffled(n, seed ^ 0x7);
        let (gone, kept) = order.split_at(n / 2);
        let secs = timed(|| {
            for chunk in gone.chunks(BATCH) {
                db.write(&mut |w| {
                    for &i in chunk {
                        w.remove(&data.keys[i])?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        check(&*db, &data, &sample(kept), &sample(gone))?;
        let size = self.close(db)?;
        self.row("random_remove", gone.len(), secs, Some(size));
        Ok(())
    }
}
