//! `sop bench`: the sop-bench workloads, run from the `sop` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use sop_bench::workloads::{DEFAULT_SEED, keep_best};
use sop_bench::{EngineConfig, Row, Workload, engines};

use crate::output::Out;

/// Options of `sop bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workloads, comma-separated (W1..W7, W4c), or `all`.
    #[arg(long, short, default_value = "all")]
    pub workload: String,
    /// Items per workload.
    #[arg(long, short, default_value_t = 100_000)]
    pub n: usize,
    /// Engines, comma-separated (built in: sop, redb).
    #[arg(long, short, default_value = "sop,redb")]
    pub engines: String,
    /// Do not fsync on commit.
    #[arg(long)]
    pub no_sync: bool,
    /// Folder for the databases (default: a fresh folder under the system temp folder,
    /// removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the random keys and values.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Runs of each workload per engine (fresh databases, engines taking turns); each row
    /// reports the engine's best run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
}

/// Removes the folder it holds when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sop bench`.
pub fn run(a: &BenchArgs, out: Out) -> Result<ExitCode> {
    let workloads = Workload::parse_list(&a.workload)?;
    let names = engines::parse_list(&a.engines)?;
    let cfg = EngineConfig {
        sync: !a.no_sync,
        slot_length: None,
    };
    let (root, _cleanup) = match &a.dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = std::env::temp_dir().join(format!("sop-bench-{}", std::process::id()));
            (d.clone(), Some(TempDir(d)))
        }
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    tracing::info!(n = a.n, engines = %names.join(","), dir = %root.display(), "benchmark");
    let mut rows: Vec<Row> = Vec::new();
    let mut failures = 0;
    let runs = workloads.len() * names.len() * a.repeat as usize;
    let pb = out.progress(runs as u64, "bench", false);
    for w in &workloads {
        for name in (0..a.repeat).flat_map(|_| names.iter()) {
            pb.set_message(format!("{w} on {name}"));
            let dir = root.join(format!("{w}-{name}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            match w.run(name, &dir, &cfg, a.n, a.seed) {
                Ok(got) => {
                    for r in got {
                        if out.json && a.repeat == 1 {
                            pb.suspend(|| out.json_line(&r.to_json()))?;
                        }
                        keep_best(&mut rows, r);
                    }
                }
                Err(e) => {
                    failures += 1;
                    pb.suspend(|| eprintln!("{w} on {name} failed: {e:#}"));
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    if out.json && a.repeat > 1 {
        for r in &rows {
            out.json_line(&r.to_json())?;
        }
    }
    if !out.json {
        out.table(
            &[
                "workload", "engine", "op", "n", "seconds", "ops/s", "on disk",
            ],
            rows.iter()
                .map(|r| {
                    vec![
                        r.workload.clone(),
                        r.engine.clone(),
                        r.op.clone(),
                        r.n.to_string(),
                        format!("{:.3}", r.seconds),
                        format!("{:.0}", r.ops_per_sec),
                        r.bytes_on_disk
                            .map(crate::output::human_bytes)
                            .unwrap_or_default(),
                    ]
                })
                .collect(),
        )?;
    }
    if failures > 0 {
        bail!("{failures} workload run(s) failed");
    }
    Ok(ExitCode::SUCCESS)
}
