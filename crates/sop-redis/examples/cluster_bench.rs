//! Commit throughput of clustered mode with 1, 2 and 4 processes on one database folder,
//! against a standalone single-process baseline, for two workloads:
//!
//! - `disjoint`: each process commits transactions of one upsert (`u64` key, 100-byte value)
//!   on its own key range (`worker * 1e9 + i`): no conflicts;
//! - `hot`: every process increments counters drawn from a shared set of 100 keys
//!   (read-modify-write), retrying retryable errors and counting the retries. At the end the
//!   sum of the counters must equal the number of successful commits (checked; the bench
//!   aborts if not).
//!
//! Every commit is durable (`Durability::Immediate`). Each run gets a fresh folder (so a fresh
//! database id, hence a fresh namespace in the one throwaway `redis-server` of the bench). The
//! example starts itself again as the worker processes (`--worker`); they open the database,
//! say `ready`, and start together when the parent writes `go` on their stdin.
//!
//! ```text
//! cargo run --release -p sop-redis --example cluster_bench --features testing -- --seconds 5
//! ```
//!
//! Options: `--seconds N` (default 5), `--procs 1,2,4`, `--workloads disjoint,hot`,
//! `--dir PATH` (where the temporary folders go; default the system temp folder), `--json`
//! (JSON on stdout, the table on stderr).

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use sop::{
    ClusterOptions, Database, DatabaseOptions, Durability, Error, StoreOptions, TransactionMode,
};
use sop_redis::RedisOptions;
use sop_redis::testing::RedisServer;

type BoxResult<T> = Result<T, Box<dyn StdError>>;

const STORE: &str = "bench";
const HOT_KEYS: u64 = 100;
const VALUE_BYTES: usize = 100;
const KEY_STRIDE: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Disjoint,
    Hot,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Disjoint => "disjoint",
            Workload::Hot => "hot",
        }
    }

    fn parse(s: &str) -> BoxResult<Self> {
        match s {
            "disjoint" => Ok(Workload::Disjoint),
            "hot" => Ok(Workload::Hot),
            _ => Err(format!("unknown workload {s:?} (disjoint, hot)").into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Standalone,
    Clustered,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Clustered => "clustered",
        }
    }

    fn parse(s: &str) -> BoxResult<Self> {
        match s {
            "standalone" => Ok(Mode::Standalone),
            "clustered" => Ok(Mode::Clustered),
            _ => Err(format!("unknown mode {s:?}").into()),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = if args.first().map(String::as_str) == Some("--worker") {
        worker(&args[1..])
    } else {
        parent(&args)
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_db(mode: Mode, path: &Path, redis: &str) -> sop::Result<Database> {
    let mut opts = DatabaseOptions::new(path);
    opts.durability = Durability::Immediate;
    match mode {
        Mode::Standalone => Database::open(opts),
        Mode::Clustered => sop_redis::open(
            opts,
            ClusterOptions::default(),
            &RedisOptions {
                address: redis.to_owned(),
                ..RedisOptions::default()
            },
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Worker
// ---------------------------------------------------------------------------------------------

/// What a worker did, sent to the parent as one `result key=value ...` line.
#[derive(Debug, Default, Clone)]
struct WorkerReport {
    commits: u64,
    /// Refused by validation (read-write conflict).
    conflicts: u64,
    /// Lost the race for the commit marker ("decided by another process").
    marker_races: u64,
    /// The lease expired before the commit point.
    lease_lost: u64,
    /// `Error::Timeout` (waiting for the lease).
    timeouts: u64,
    elapsed_us: u64,
    /// Latency of a successful transaction, retries included.
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl WorkerReport {
    fn retries(&self) -> u64 {
        self.conflicts + self.marker_races + self.lease_lost + self.timeouts
    }

    fn rate(&self) -> f64 {
        self.commits as f64 / (self.elapsed_us.max(1) as f64 / 1e6)
    }

    fn classify(&mut self, e: &Error) {
        let msg = e.to_string();
        if matches!(e, Error::Timeout(_)) {
            self.timeouts += 1;
        } else if msg.contains("decided by another process") {
            self.marker_races += 1;
        } else if msg.contains("lease expired") {
            self.lease_lost += 1;
        } else {
            self.conflicts += 1;
        }
    }

    fn to_line(&self) -> String {
        format!(
            "result commits={} conflicts={} marker_races={} lease_lost={} timeouts={} \
             elapsed_us={} p50_us={} p99_us={} max_us={}",
            self.commits,
            self.conflicts,
            self.marker_races,
            self.lease_lost,
            self.timeouts,
            self.elapsed_us,
            self.p50_us,
            self.p99_us,
            self.max_us
        )
    }

    fn from_line(line: &str) -> BoxResult<Self> {
        let mut r = WorkerReport::default();
        let mut words = line.split_whitespace();
        if words.next() != Some("result") {
            return Err(format!("unexpected worker output {line:?}").into());
        }
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("bad field {w:?} in {line:?}"))?;
            let v: u64 = v.parse().map_err(|e| format!("bad {k} in {line:?}: {e}"))?;
            match k {
                "commits" => r.commits = v,
                "conflicts" => r.conflicts = v,
                "marker_races" => r.marker_races = v,
                "lease_lost" => r.lease_lost = v,
                "timeouts" => r.timeouts = v,
                "elapsed_us" => r.elapsed_us = v,
                "p50_us" => r.p50_us = v,
                "p99_us" => r.p99_us = v,
                "max_us" => r.max_us = v,
                _ => return Err(format!("unknown field {k:?} in {line:?}").into()),
            }
        }
        Ok(r)
    }
}

/// `--worker <mode> <workload> <id> <seconds> <path> <redis address>`
fn worker(args: &[String]) -> BoxResult<()> {
    let [mode, workload, id, seconds, path, redis] = args else {
        return Err(format!("worker: bad arguments {args:?}").into());
    };
    let mode = Mode::parse(mode)?;
    let workload = Workload::parse(workload)?;
    let id: u64 = id.parse()?;
    let seconds: f64 = seconds.parse()?;
    let db = open_db(mode, Path::new(path), redis)?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    if go.trim() != "go" {
        return Err(format!("worker {id}: expected `go`, got {go:?}").into());
    }

    let mut report = WorkerReport::default();
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
    let mut rng = fastrand::Rng::with_seed(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let value = vec![0xabu8; VALUE_BYTES];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut notes: Vec<String> = Vec::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let key = match workload {
            Workload::Disjoint => id * KEY_STRIDE + i,
            Workload::Hot => rng.u64(..HOT_KEYS),
        };
        loop {
            let tx = db.begin(TransactionMode::ForWriting)?;
            let r = match workload {
                Workload::Disjoint => tx
                    .open_btree::<u64, Vec<u8>>(STORE)
                    .and_then(|b| b.upsert(&key, &value))
                    .and_then(|_| tx.commit()),
                Workload::Hot => (|| {
                    let b = tx.open_btree::<u64, u64>(STORE)?;
                    let v = b.get(&key)?.ok_or_else(|| {
                        Error::InvalidArgument(format!("hot key {key} is missing"))
                    })?;
                    b.update(&key, &(v + 1))?;
                    tx.commit()
                })(),
            };
            match r {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    report.classify(&e);
                    // The first message of each kind of reason, a few at most, for the parent.
                    let msg = e.to_string();
                    let shape = reason_shape(&msg);
                    if notes.len() < 4 && !notes.iter().any(|n| reason_shape(n) == shape) {
                        notes.push(msg);
                    }
                }
                Err(e) => return Err(format!("worker {id}: transaction {i}: {e}").into()),
            }
        }
        latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
        report.commits += 1;
        i += 1;
    }
    report.elapsed_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    latencies.sort_unstable();
    let pct = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let idx = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        u64::from(latencies[idx])
    };
    report.p50_us = pct(0.50);
    report.p99_us = pct(0.99);
    report.max_us = latencies.last().copied().map_or(0, u64::from);
    for n in &notes {
        writeln!(out, "note {}", n.replace('\n', " "))?;
    }
    writeln!(out, "{}", report.to_line())?;
    out.flush()?;
    drop(db);
    Ok(())
}

/// The kind of a retry reason: its message with the item key (`item "..."`) and each run of
/// digits masked.
fn reason_shape(msg: &str) -> String {
    let mut m = msg.to_owned();
    if let Some(start) = m.find("item \"")
        && let Some(len) = m[start + 6..].find("\" of ")
    {
        m.replace_range(start + 6..start + 6 + len, "...");
    }
    let mut shape = String::with_capacity(m.len());
    for c in m.chars() {
        if !c.is_ascii_digit() {
            shape.push(c);
        } else if !shape.ends_with('#') {
            shape.push('#');
        }
    }
    shape
}

// ---------------------------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------------------------

struct Config {
    seconds: f64,
    procs: Vec<usize>,
    workloads: Vec<Workload>,
    dir: Option<PathBuf>,
    json: bool,
}

const USAGE: &str = "usage: cluster_bench [--seconds N] [--procs 1,2,4] \
                     [--workloads disjoint,hot] [--dir PATH] [--json]";

fn parse_args(args: &[String]) -> BoxResult<Config> {
    let mut c = Config {
        seconds: 5.0,
        procs: vec![1, 2, 4],
        workloads: vec![Workload::Disjoint, Workload::Hot],
        dir: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--seconds" => {
                c.seconds = value()?.parse()?;
                if !(c.seconds > 0.0 && c.seconds.is_finite()) {
                    return Err("--seconds must be positive".into());
                }
            }
            "--procs" => {
                c.procs = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
                if c.procs.iter().any(|&p| p == 0 || p > 64) {
                    return Err("--procs: each count must be 1..=64".into());
                }
            }
            "--workloads" => {
                c.workloads = value()?
                    .split(',')
                    .map(|s| Workload::parse(s.trim()))
                    .collect::<BoxResult<_>>()?;
            }
            "--dir" => c.dir = Some(PathBuf::from(value()?)),
            "--json" => c.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}").into()),
        }
    }
    Ok(c)
}

/// One measured run: a workload, a mode, a number of processes.
struct RunResult {
    workload: Workload,
    mode: Mode,
    procs: usize,
    workers: Vec<WorkerReport>,
    /// Commits found in the folder afterwards (disjoint: items; hot: sum of the counters).
    found: u64,
    /// Reasons of retries as the workers saw them (the first message of each kind).
    notes: Vec<String>,
}

impl RunResult {
    fn commits(&self) -> u64 {
        self.workers.iter().map(|w| w.commits).sum()
    }
    fn total_rate(&self) -> f64 {
        self.workers.iter().map(WorkerReport::rate).sum()
    }
    fn min_rate(&self) -> f64 {
        self.workers
            .iter()
            .map(WorkerReport::rate)
            .fold(f64::INFINITY, f64::min)
    }
    fn max_rate(&self) -> f64 {
        self.workers
            .iter()
            .map(WorkerReport::rate)
            .fold(0.0, f64::max)
    }
    fn sum(&self, f: impl Fn(&WorkerReport) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }
    fn max(&self, f: impl Fn(&WorkerReport) -> u64) -> u64 {
        self.workers.iter().map(f).max().unwrap_or(0)
    }
}

fn parent(args: &[String]) -> BoxResult<()> {
    let cfg = parse_args(args)?;
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let base = cfg.dir.clone().unwrap_or_else(std::env::temp_dir);
    eprintln!(
        "cluster_bench: {} s per run, {cores} cores, folders under {}, durable commits",
        cfg.seconds,
        base.display()
    );
    let redis = RedisServer::start();
    eprintln!("redis-server on {}", redis.address());

    let mut results: Vec<RunResult> = Vec::new();
    let started = Instant::now();
    for &workload in &cfg.workloads {
        let mut plan = vec![(Mode::Standalone, 1)];
        plan.extend(cfg.procs.iter().map(|&p| (Mode::Clustered, p)));
        for (mode, procs) in plan {
            eprint!("  {:<8} {:<10} x{procs} ... ", workload.name(), mode.name());
            let dir = tempfile::Builder::new()
                .prefix("sop-cluster-bench-")
                .tempdir_in(&base)?;
            let r = match run(
                &exe,
                &cfg,
                &redis.address(),
                dir.path(),
                workload,
                mode,
                procs,
            ) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("FAILED");
                    let kept = dir.keep();
                    return Err(format!(
                        "{} {} x{procs}: {e}\n(folder kept: {})",
                        workload.name(),
                        mode.name(),
                        kept.display()
                    )
                    .into());
                }
            };
            eprintln!(
                "{:.0} commits/s, {} retries",
                r.total_rate(),
                r.sum(WorkerReport::retries)
            );
            let ok = r.found == r.commits();
            results.push(r);
            if !ok {
                let r = results.last().ok_or("no result")?;
                eprint!("{}", table(&results));
                let kept = dir.keep();
                let what = match workload {
                    Workload::Hot => "sum of the hot counters",
                    Workload::Disjoint => "items in the store",
                };
                return Err(format!(
                    "CORRECTNESS CHECK FAILED: {} {} x{procs}: {what} = {}, successful commits \
                     reported by the workers = {} (difference {:+}); per worker: {:?}\n\
                     folder kept for inspection: {}",
                    workload.name(),
                    mode.name(),
                    r.found,
                    r.commits(),
                    i128::from(r.found) - i128::from(r.commits()),
                    r.workers.iter().map(|w| w.commits).collect::<Vec<_>>(),
                    kept.display()
                )
                .into());
            }
        }
    }
    drop(redis);
    let t = table(&results);
    if cfg.json {
        eprint!("{t}");
        println!("{}", json(&cfg, &results));
    } else {
        print!("{t}");
    }
    eprintln!("total wall time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Creates the store (hot: with its counters at zero), runs `procs` workers, checks the result.
fn run(
    exe: &Path,
    cfg: &Config,
    redis: &str,
    dir: &Path,
    workload: Workload,
    mode: Mode,
    procs: usize,
) -> BoxResult<RunResult> {
    {
        let db = open_db(mode, dir, redis)?;
        db.transact(|tx| {
            match workload {
                Workload::Disjoint => {
                    tx.new_btree::<u64, Vec<u8>>(STORE, StoreOptions::default())?;
                }
                Workload::Hot => {
                    let b = tx.new_btree::<u64, u64>(STORE, StoreOptions::default())?;
                    for k in 0..HOT_KEYS {
                        b.upsert(&k, &0)?;
                    }
                }
            }
            Ok(())
        })?;
    }

    let mut children: Vec<(Child, ChildStdin, BufReader<ChildStdout>)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let result = (|| -> BoxResult<Vec<WorkerReport>> {
        for id in 0..procs {
            let mut child = Command::new(exe)
                .arg("--worker")
                .arg(mode.name())
                .arg(workload.name())
                .arg(id.to_string())
                .arg(cfg.seconds.to_string())
                .arg(dir)
                .arg(redis)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdin = child.stdin.take().ok_or("worker stdin")?;
            let stdout = BufReader::new(child.stdout.take().ok_or("worker stdout")?);
            children.push((child, stdin, stdout));
        }
        for (id, (_, _, out)) in children.iter_mut().enumerate() {
            let line = read_line(out)?;
            if line != "ready" {
                return Err(format!("worker {id} did not get ready (said {line:?})").into());
            }
        }
        for (_, stdin, _) in &mut children {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
        let mut reports = Vec::new();
        for (id, (child, _, out)) in children.iter_mut().enumerate() {
            let mut line = read_line(out)?;
            while let Some(note) = line.strip_prefix("note ") {
                if !notes.iter().any(|n| reason_shape(n) == reason_shape(note)) {
                    notes.push(note.to_owned());
                }
                line = read_line(out)?;
            }
            reports.push(WorkerReport::from_line(&line)?);
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("worker {id} exited with {status}").into());
            }
        }
        Ok(reports)
    })();
    let workers = match result {
        Ok(w) => w,
        Err(e) => {
            for (child, _, _) in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(e);
        }
    };

    let db = open_db(mode, dir, redis)?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let found = match workload {
        Workload::Disjoint => tx.open_btree::<u64, Vec<u8>>(STORE)?.count()?,
        Workload::Hot => {
            let b = tx.open_btree::<u64, u64>(STORE)?;
            let mut sum = 0u64;
            let mut keys = 0u64;
            for item in b.iter() {
                let item = item?;
                sum += item.value;
                keys += 1;
            }
            if keys != HOT_KEYS {
                return Err(format!("{keys} hot keys found, expected {HOT_KEYS}").into());
            }
            sum
        }
    };
    drop(tx);
    let report = db.verify()?;
    if !report.is_ok() {
        return Err(format!("verify found problems: {:?}", report.problems).into());
    }
    Ok(RunResult {
        workload,
        mode,
        procs,
        workers,
        found,
        notes,
    })
}

fn read_line(r: &mut impl BufRead) -> BoxResult<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err("a worker exited early (see its error above)".into());
    }
    Ok(line.trim_end().to_owned())
}

fn table(results: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:<10} {:>5} {:>8} {:>9} {:>10} {:>15} {:>8} {:>8} {:>24} {:>8} {:>8} {:>8}",
        "workload",
        "mode",
        "procs",
        "commits",
        "total/s",
        "per-proc/s",
        "min..max/s",
        "vs-alone",
        "retries",
        "(confl/marker/lease/to)",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for r in results {
        let alone = results
            .iter()
            .find(|b| b.workload == r.workload && b.mode == Mode::Standalone)
            .map(RunResult::total_rate);
        let ratio = alone.map_or_else(|| "-".to_owned(), |a| format!("{:.2}", r.total_rate() / a));
        let breakdown = format!(
            "{}/{}/{}/{}",
            r.sum(|w| w.conflicts),
            r.sum(|w| w.marker_races),
            r.sum(|w| w.lease_lost),
            r.sum(|w| w.timeouts)
        );
        let p50 =
            r.workers.iter().map(|w| w.p50_us).sum::<u64>() as f64 / r.workers.len().max(1) as f64;
        let _ = writeln!(
            s,
            "{:<9} {:<10} {:>5} {:>8} {:>9.0} {:>10.0} {:>15} {:>8} {:>8} {:>24} {:>8.2} {:>8.2} {:>8.1}",
            r.workload.name(),
            r.mode.name(),
            r.procs,
            r.commits(),
            r.total_rate(),
            r.total_rate() / r.procs as f64,
            format!("{:.0}..{:.0}", r.min_rate(), r.max_rate()),
            ratio,
            r.sum(WorkerReport::retries),
            breakdown,
            p50 / 1e3,
            r.max(|w| w.p99_us) as f64 / 1e3,
            r.max(|w| w.max_us) as f64 / 1e3,
        );
    }
    s.push_str(
        "vs-alone: total/s over the standalone total/s of the same workload; p50: mean of the \
         workers' medians; p99, max: worst worker. Latency includes retries.\n",
    );
    for r in results.iter().filter(|r| !r.notes.is_empty()) {
        let _ = writeln!(
            s,
            "retry reasons (first of each kind), {} {} x{}:",
            r.workload.name(),
            r.mode.name(),
            r.procs
        );
        for n in &r.notes {
            let _ = writeln!(s, "  {n}");
        }
    }
    s
}

fn json(cfg: &Config, results: &[RunResult]) -> String {
    let mut s = format!("{{\"seconds\":{},\"runs\":[", cfg.seconds);
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"workload\":\"{}\",\"mode\":\"{}\",\"processes\":{},\"commits\":{},\
             \"commits_per_s\":{:.1},\"per_process_commits_per_s\":{:.1},\"retries\":{},\
             \"conflicts\":{},\"marker_races\":{},\"lease_lost\":{},\"timeouts\":{},\
             \"found\":{},\"retry_reasons\":[{}],\"workers\":[",
            r.workload.name(),
            r.mode.name(),
            r.procs,
            r.commits(),
            r.total_rate(),
            r.total_rate() / r.procs as f64,
            r.sum(WorkerReport::retries),
            r.sum(|w| w.conflicts),
            r.sum(|w| w.marker_races),
            r.sum(|w| w.lease_lost),
            r.sum(|w| w.timeouts),
            r.found,
            r.notes
                .iter()
                .map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(","),
        );
        for (j, w) in r.workers.iter().enumerate() {
            if j > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"commits\":{},\"commits_per_s\":{:.1},\"retries\":{},\"elapsed_us\":{},\
                 \"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                w.commits,
                w.rate(),
                w.retries(),
                w.elapsed_us,
                w.p50_us,
                w.p99_us,
                w.max_us
            );
        }
        s.push_str("]}");
    }
    s.push_str("]}");
    s
}
