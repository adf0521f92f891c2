//! Durable single-insert commits (W4's) of one engine, with a marker system call between the
//! phases of each, for measuring where a commit's time goes (ADR 0007, session 15).
//!
//! Each round makes `getpid` before the write transaction, `getppid` once the engine calls
//! its body (after `begin` and opening the store; fjall: its batch made), `sched_yield` after
//! the insert, and `getcwd` after the commit returns. Traced with the system calls the engine
//! makes itself (`pwrite64`, `sync_file_range`, `fdatasync`; fjall's `write`, `fsync`), the
//! time between consecutive events splits every commit to the microsecond, without sampling:
//!
//! ```text
//! cargo build --release -p sop-bench --features peers-fjall --example commit_phases
//! perf record -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -o phases.data \
//!     target/release/examples/commit_phases sop 3000
//! perf script --ns -i phases.data -F tid,time,event,trace | scripts/commit-phases
//! ```
//!
//! With `--warm`, each round first commits on a second, unsynced database of the same engine:
//! the code is then warm but not the data (how much of a phase is cold code).
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sop_bench::engines::{fjall::FjallDb, sop::SopDb};
use sop_bench::{BenchDb, Data, EngineConfig};

fn open(engine: &str, path: &std::path::Path, sync: bool) -> Result<Box<dyn BenchDb>> {
    let cfg = EngineConfig {
        sync,
        ..EngineConfig::default()
    };
    Ok(match engine {
        "sop" => Box::new(SopDb::open(path, &cfg)?),
        "fjall" => Box::new(FjallDb::open(path, &cfg)?),
        other => bail!("unknown engine {other:?} (sop or fjall)"),
    })
}

/// A system call with no effect on the engine, standing for a marker in the trace.
fn marker(which: u8) -> Result<()> {
    match which {
        0 => {
            std::hint::black_box(std::process::id());
        }
        1 => {
            std::hint::black_box(std::os::unix::process::parent_id());
        }
        2 => std::thread::yield_now(),
        _ => {
            std::hint::black_box(std::env::current_dir()?);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let engine = args.next().unwrap_or_else(|| "sop".into());
    let mut rounds = 3000;
    let mut warm = false;
    for a in args {
        match a.as_str() {
            "--warm" => warm = true,
            n => rounds = n.parse().with_context(|| format!("rounds: {n:?}"))?,
        }
    }
    let dir = tempfile::tempdir()?;
    let db = open(&engine, &dir.path().join("db"), true)?;
    let other = open(&engine, &dir.path().join("warm"), false)?;
    let data = Data::random(rounds, 11);
    let data2 = Data::random(rounds, 12);
    let started = Instant::now();
    for i in 0..rounds {
        if warm {
            other.write(&mut |w| w.insert(&data2.keys[i], &data2.values[i]))?;
        }
        marker(0)?;
        db.write(&mut |w| {
            marker(1)?;
            w.insert(&data.keys[i], &data.values[i])?;
            marker(2)
        })?;
        marker(3)?;
    }
    eprintln!(
        "{engine}: {rounds} commits, {:.1} µs each (markers and warming included)",
        started.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    Ok(())
}
