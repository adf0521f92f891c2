//! Durable single-insert commits (W4's) of sop and fjall, taking turns commit by commit with
//! three bare I/O patterns: a 1,500-byte append into blocks zeroed ahead plus `fdatasync` (a
//! small sop commit), a 163-byte append to a sparse file plus `fsync` (a fjall commit), and a
//! 4 KiB `O_DIRECT` write into blocks zeroed ahead plus `fdatasync`. Prints each one's latency
//! percentiles (ADR 0007).
//!
//! On a disk whose speed drifts between runs (this project's machine: by up to 2x within
//! minutes), only commits interleaved like this compare: each round runs all five in turn,
//! reversing the order every other round. Usage:
//!
//! ```text
//! cargo run --release -p sop-bench --features peers-fjall --example commit_latency [ROUNDS]
//! ```
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use sop_bench::engines::{fjall::FjallDb, sop::SopDb};
use sop_bench::{BenchDb, Data, EngineConfig};

const ZEROED: usize = 16 << 20;
const SPARSE: u64 = 64 << 20;

/// 4 KiB at a 4 KiB-aligned address, for `O_DIRECT`.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

fn create(path: &Path) -> Result<File> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?)
}

/// A file of zeros written 64 KiB at a time, as the engine writes its zeros ahead. Not in one
/// large write: the page cache would then hold the file in large folios, and each small write
/// after would dirty, and its sync write back, a whole folio (ADR 0007's addendum).
fn zeroed_file(path: &Path) -> Result<File> {
    let f = create(path)?;
    let chunk = vec![0u8; 64 << 10];
    for at in (0..ZEROED).step_by(chunk.len()) {
        f.write_all_at(&chunk, at as u64)?;
    }
    f.sync_all()?;
    Ok(f)
}

fn sparse_file(path: &Path) -> Result<File> {
    let f = create(path)?;
    f.set_len(SPARSE)?;
    f.sync_all()?;
    Ok(f)
}

fn main() -> Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().context("ROUNDS must be a number")?,
        None => 3000,
    };
    anyhow::ensure!(rounds > 0, "ROUNDS must be at least 1");
    let dir = tempfile::tempdir()?;
    let cfg = EngineConfig::default();
    for sub in ["sop", "fjall"] {
        std::fs::create_dir_all(dir.path().join(sub))?;
    }
    let sop = SopDb::open(&dir.path().join("sop"), &cfg)?;
    let fjall = FjallDb::open(&dir.path().join("fjall"), &cfg)?;
    let zeroed = zeroed_file(&dir.path().join("zeroed"))?;
    let sparse = sparse_file(&dir.path().join("sparse"))?;
    drop(zeroed_file(&dir.path().join("direct"))?);
    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.path().join("direct"))
        .context("O_DIRECT open (the temporary folder's file system must allow it)")?;
    let aligned = Box::new(Block([3u8; 4096]));
    let data = Data::random(rounds, 11);
    let block = [9u8; 1500];
    let record = [5u8; 163];
    let names = [
        "sop",
        "fjall",
        "1.5 KB append + fdatasync",
        "163 B append + fsync",
        "4 KiB O_DIRECT + fdatasync",
    ];
    let mut lat: [Vec<u64>; 5] = Default::default();
    for i in 0..rounds {
        let order = if i % 2 == 0 {
            [0, 1, 2, 3, 4]
        } else {
            [4, 3, 2, 1, 0]
        };
        for which in order {
            let t = Instant::now();
            match which {
                0 | 1 => {
                    let db: &dyn BenchDb = if which == 0 { &sop } else { &fjall };
                    db.write(&mut |w| w.insert(&data.keys[i], &data.values[i]))?;
                }
                2 => {
                    // sop's commits average ~1.5 KB.
                    let at = (i as u64 * 1500) % (ZEROED as u64 - 1500);
                    zeroed.write_all_at(&block, at)?;
                    zeroed.sync_data()?;
                }
                3 => {
                    sparse.write_all_at(&record, i as u64 * 163 % SPARSE)?;
                    sparse.sync_all()?;
                }
                _ => {
                    // The block holding a 1.5 KB-per-commit append position.
                    let at = (i as u64 * 1500) % (ZEROED as u64) / 4096 * 4096;
                    direct.write_all_at(&aligned.0, at)?;
                    direct.sync_data()?;
                }
            }
            lat[which].push(t.elapsed().as_nanos() as u64);
        }
    }
    println!("{rounds} commits each, interleaved (µs):");
    for (name, l) in names.iter().zip(lat.iter_mut()) {
        let mean = l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0;
        l.sort_unstable();
        let p = |q: usize| l[(l.len() * q / 100).min(l.len() - 1)] as f64 / 1000.0;
        println!(
            "  {name:26} mean {mean:6.1}  p10 {:6.1}  median {:6.1}  p90 {:6.1}",
            p(10),
            p(50),
            p(90)
        );
    }
    Ok(())
}
