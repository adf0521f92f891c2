//! Bare group-commit patterns (ADR 0012): T threads, each appending a 450-byte record into a
//! file zeroed ahead and waiting until it is durable, one sync in flight at a time (the
//! engine's group commit), the leader of a sync syncing for every record written before it
//! starts. Modes:
//!
//! - `single`: the leader syncs at once (the engine's rule);
//! - `gather:D`: the leader first waits, up to D µs, until every thread has a record written
//!   (an upper bound: it knows T);
//! - `adapt:D`: the leader first waits, up to D µs, until the threads whose records the last
//!   sync covered have written their next ones (no knowledge of T: with one thread, it never
//!   waits);
//! - `own`: every thread syncs for itself, syncs overlapping.
//!
//! ```text
//! cargo run --release -p sop-bench --example bare_gc -- MODE THREADS COMMITS
//! ```

use std::cell::Cell;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(Default)]
struct S {
    /// Append position.
    written: u64,
    durable: u64,
    syncing: bool,
    syncs: u64,
    sync_time: Duration,
    /// Records written since the last sync started.
    unsynced: usize,
    /// Syncs completed.
    generation: u64,
    /// Threads the last sync covered that have not written their next record yet.
    returning: usize,
}

struct Shared {
    s: Mutex<S>,
    done: Condvar,
    arrived: Condvar,
}

#[derive(Clone, Copy)]
enum Mode {
    Single,
    Gather(Duration),
    Adapt(Duration),
    Own,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode_arg = args.get(1).map_or("single", String::as_str);
    let micros = |d: &str| -> Result<Duration> { Ok(Duration::from_micros(d.parse()?)) };
    let mode = match mode_arg.split_once(':') {
        None if mode_arg == "single" => Mode::Single,
        None if mode_arg == "own" => Mode::Own,
        Some(("gather", d)) => Mode::Gather(micros(d)?),
        Some(("adapt", d)) => Mode::Adapt(micros(d)?),
        _ => bail!("unknown mode {mode_arg:?}"),
    };
    let threads: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let commits: usize = args.get(3).map_or(Ok(1000), |s| s.parse())?;
    let dir = tempfile::tempdir_in(".").context("scratch folder")?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("log"))?;
    // Zeroed 64 KiB at a time, as the engine does (ADR 0007: one large write leaves large
    // folios behind, which makes every later sync slower).
    let zeros = vec![0u8; 64 << 10];
    for i in 0..64 {
        f.write_at(&zeros, i * (64 << 10))?;
    }
    f.sync_all()?;
    let f = Arc::new(f);
    let g = Arc::new(Shared {
        s: Mutex::new(S::default()),
        done: Condvar::new(),
        arrived: Condvar::new(),
    });
    let per = commits / threads;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (f, g) = (Arc::clone(&f), Arc::clone(&g));
            std::thread::spawn(move || committer(&f, &g, mode, threads, per))
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a committer panicked"))??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = g.s.lock().map_err(poisoned)?;
    let n = (per * threads) as f64;
    println!(
        "{mode_arg} t={threads}: {:.1}k commits/s, {} syncs, {:.2} commits per sync, sync {:.0} µs",
        n / secs / 1e3,
        s.syncs,
        n / s.syncs as f64,
        s.sync_time.as_secs_f64() * 1e6 / s.syncs as f64
    );
    Ok(())
}

fn poisoned<T>(_: T) -> anyhow::Error {
    anyhow::anyhow!("a committer panicked holding the lock")
}

fn committer(f: &std::fs::File, g: &Shared, mode: Mode, threads: usize, n: usize) -> Result<()> {
    let record = [7u8; 450];
    // The generation of the sync that covered this thread's last record.
    let covered_by = Cell::new(u64::MAX);
    for _ in 0..n {
        // The transaction's work.
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(5) {}
        let mut s = g.s.lock().map_err(poisoned)?;
        f.write_at(&record, s.written)?;
        s.written += record.len() as u64;
        let end = s.written;
        s.unsynced += 1;
        if covered_by.get() == s.generation {
            s.returning = s.returning.saturating_sub(1);
        }
        g.arrived.notify_all();
        if let Mode::Own = mode {
            drop(s);
            f.sync_data()?;
            continue;
        }
        loop {
            if s.durable >= end {
                covered_by.set(s.generation);
                break;
            }
            if s.syncing {
                s = g.done.wait(s).map_err(poisoned)?;
                continue;
            }
            s.syncing = true;
            let t = Instant::now();
            match mode {
                Mode::Gather(d) => {
                    while s.unsynced < threads && t.elapsed() < d {
                        s = g.arrived.wait_timeout(s, d).map_err(poisoned)?.0;
                    }
                }
                Mode::Adapt(d) => {
                    while s.returning > 0 && t.elapsed() < d {
                        s = g.arrived.wait_timeout(s, d).map_err(poisoned)?.0;
                    }
                }
                Mode::Single | Mode::Own => {}
            }
            let (cover, covered) = (s.written, s.unsynced);
            s.unsynced = 0;
            drop(s);
            let t = Instant::now();
            f.sync_data()?;
            let took = t.elapsed();
            s = g.s.lock().map_err(poisoned)?;
            s.syncing = false;
            s.syncs += 1;
            s.sync_time += took;
            s.durable = s.durable.max(cover);
            s.generation += 1;
            s.returning = covered;
            g.done.notify_all();
        }
    }
    Ok(())
}
