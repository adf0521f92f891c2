//! `sop-bench`: runs the workloads of `shared/bench/WORKLOADS.md` against SOP and its peers
//! in one run and prints ops/s per engine with each engine's ratio to SOP, and for the
//! concurrent rows (W4c, W5 with 2 threads) each engine's ratio to its own single-thread row.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{CellAlignment, ContentArrangement, Table};
use sop_bench::workloads::{DEFAULT_SEED, baseline, keep_best};
use sop_bench::{EngineConfig, Row, Workload, engines};

#[derive(Debug, Parser)]
#[command(name = "sop-bench", about = "Benchmarks SOP against its peers")]
struct Cli {
    /// Workloads: W1..W7 and W4c (8 writer threads), comma-separated, or `all`.
    #[arg(long, short, default_value = "all")]
    workload: String,
    /// Items per workload.
    #[arg(long, short, default_value_t = 100_000)]
    n: usize,
    /// Engines, comma-separated: sop, redb, and with their features lmdb, sqlite, fjall, sled.
    #[arg(long, short, default_value = "sop,redb")]
    engines: String,
    /// Folder for the databases (default: a fresh temporary folder under ./target/bench-tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Do not fsync on commit.
    #[arg(long)]
    no_sync: bool,
    /// One JSON object per result line instead of a table.
    #[arg(long)]
    json: bool,
    /// SOP's items per node (default: `StoreOptions::default()`).
    #[arg(long)]
    slot_length: Option<usize>,
    /// Seed of the random keys and values.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Print the table as Markdown.
    #[arg(long)]
    markdown: bool,
    /// Keep the database folders after the run.
    #[arg(long)]
    keep: bool,
    /// Runs of each workload per engine (each on a fresh database, engines taking turns so
    /// the machine's drift hits all alike); each row reports the engine's best run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let workloads = Workload::parse_list(&cli.workload)?;
    let names = engines::parse_list(&cli.engines)?;
    let cfg = EngineConfig {
        sync: !cli.no_sync,
        slot_length: cli.slot_length,
    };

    // The folder: given, or a fresh temporary one (removed at the end unless --keep).
    let mut temp = None;
    let root = match &cli.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            let base = Path::new("target").join("bench-tmp");
            std::fs::create_dir_all(&base)
                .with_context(|| format!("creating {}", base.display()))?;
            let t = tempfile::Builder::new().prefix("run-").tempdir_in(&base)?;
            let p = t.path().to_path_buf();
            temp = Some(t);
            p
        }
    };
    if !cli.json {
        eprintln!(
            "sop-bench: n={} engines={} sync={} dir={}",
            cli.n,
            names.join(","),
            cfg.sync,
            root.display()
        );
    }

    let mut rows: Vec<Row> = Vec::new();
    let mut failures = 0;
    let quiet_threads = thread_count();
    for w in &workloads {
        for (round, name) in (0..cli.repeat).flat_map(|r| names.iter().map(move |n| (r, n))) {
            if round > 0 && !cli.json {
                eprintln!("  (run {} of {})", round + 1, cli.repeat);
            }
            let dir = root.join(format!("{w}-{name}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            match w.run(name, &dir, &cfg, cli.n, cli.seed) {
                Ok(got) => {
                    for r in got {
                        if cli.json {
                            if cli.repeat == 1 {
                                println!("{}", r.to_json());
                            }
                        } else {
                            eprintln!(
                                "  {:<3} {:<7} {:<24} {:>10} ops/s {:>9.3} s{}",
                                r.workload,
                                r.engine,
                                r.op,
                                human(r.ops_per_sec),
                                r.seconds,
                                r.bytes_on_disk
                                    .map(|b| format!("  {}", mib(b)))
                                    .unwrap_or_default()
                            );
                        }
                        keep_best(&mut rows, r);
                    }
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("{w} on {name} failed: {e:#}");
                }
            }
            if !cli.keep && dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            settle(quiet_threads);
        }
    }
    if cli.json && cli.repeat > 1 {
        for r in &rows {
            println!("{}", r.to_json());
        }
    }
    if !cli.json {
        println!("{}", table(&rows, &names, cli.markdown));
    }
    if cli.keep
        && let Some(t) = temp.take()
    {
        eprintln!("kept {}", t.keep().display());
    }
    if failures > 0 {
        bail!("{failures} workload run(s) failed");
    }
    Ok(())
}

/// Threads of this process (Linux), if known.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

/// Lets an engine's background threads (flushers, compactions) finish after it was closed, so
/// they do not run during the next engine's timed work: waits until the process is back to
/// `quiet` threads (at most 2 s), then a moment more.
fn settle(quiet: Option<usize>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while let (Some(q), Some(now)) = (quiet, thread_count()) {
        if now <= q || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// Ops/s with a k/M suffix.
fn human(x: f64) -> String {
    if !x.is_finite() {
        "inf".into()
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
}

/// One line per (workload, op) with each engine's ops/s and its ratio to sop, each concurrent
/// row followed by a line of each engine's ratio to its single-thread row (see [`baseline`]);
/// then one line per (workload, op) that measured the folder, with sizes and ratios.
fn table(rows: &[Row], engines: &[String], markdown: bool) -> Table {
    let mut keys: Vec<(String, String, u64)> = Vec::new();
    for r in rows {
        let k = (r.workload.clone(), r.op.clone(), r.n);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let find = |w: &str, op: &str, e: &str| {
        rows.iter()
            .find(|r| r.workload == w && r.op == op && r.engine == e)
    };
    let others: Vec<&String> = engines.iter().filter(|e| *e != "sop").collect();
    let has_sop = engines.iter().any(|e| e == "sop");

    let mut t = Table::new();
    t.load_style(if markdown {
        ASCII_MARKDOWN
    } else {
        UTF8_FULL_CONDENSED
    })
    .set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec!["workload".to_owned(), "op".to_owned(), "n".to_owned()];
    header.extend(engines.iter().map(|e| format!("{e} ops/s")));
    if has_sop {
        header.extend(others.iter().map(|e| format!("{e}/sop")));
    }
    t.set_header(header);

    let ratio = |x: Option<f64>, sop: Option<f64>| match (x, sop) {
        (Some(x), Some(s)) if s > 0.0 => format!("{:.2}x", x / s),
        _ => "-".into(),
    };
    for (w, op, n) in &keys {
        let mut line = vec![w.clone(), op.clone(), n.to_string()];
        let ops = |e: &str| find(w, op, e).map(|r| r.ops_per_sec);
        line.extend(engines.iter().map(|e| ops(e).map_or("-".into(), human)));
        if has_sop {
            line.extend(others.iter().map(|e| ratio(ops(e), ops("sop"))));
        }
        t.add_row(line);
        if let Some((bw, bop, label)) = baseline(w, op) {
            let base = |e: &str| find(bw, bop, e).map(|r| r.ops_per_sec);
            if engines.iter().any(|e| base(e).is_some()) {
                let mut line = vec![w.clone(), label.to_owned(), String::new()];
                line.extend(engines.iter().map(|e| ratio(ops(e), base(e))));
                if has_sop {
                    line.extend(others.iter().map(|_| String::new()));
                }
                t.add_row(line);
            }
        }
    }
    for (w, op, _) in &keys {
        let size = |e: &str| find(w, op, e).and_then(|r| r.bytes_on_disk);
        if engines.iter().all(|e| size(e).is_none()) {
            continue;
        }
        let mut line = vec![w.clone(), format!("{op}: size"), String::new()];
        line.extend(engines.iter().map(|e| size(e).map_or("-".into(), mib)));
        if has_sop {
            line.extend(
                others
                    .iter()
                    .map(|e| ratio(size(e).map(|b| b as f64), size("sop").map(|b| b as f64))),
            );
        }
        t.add_row(line);
    }
    for i in 2..t.column_count() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}
