//! Bytes a workload of single-insert commits appends to the log, by record kind (ADR 0010).
//!
//! Opens a fresh database as the benchmark does, makes `N` (default 1,000: W4's) durable
//! single-insert commits of W4's items, then reads the log segments and sums the framed
//! records each kind took since the store was created: full node images (those of nodes the
//! commits created, and those of nodes that existed before), leaf deltas, commit records.
//! The layout read is docs/FORMAT.md's: a 32-byte segment header, then 8-byte aligned
//! records `crc u32 | len u32 | kind u8 | 3 zero bytes | payload`, zeros after the last.
//!
//! ```text
//! cargo run --release -p sop-bench --example log_bytes [N]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use sop::log::record::{self, Kind};
use sop_bench::engines::sop::SopDb;
use sop_bench::{BenchDb, Data, EngineConfig};

/// (records, bytes) per label.
type Tally = BTreeMap<&'static str, (u64, u64)>;

fn label(kind: u8, payload: &[u8]) -> &'static str {
    match kind {
        k if k == Kind::Node as u8 => match record::parse_image(payload) {
            Ok((id, _)) if id.version == 1 => "node image, new node",
            Ok(_) => "node image, later version",
            Err(_) => "node image, unparsed",
        },
        k if k == Kind::NodeDelta as u8 => "leaf delta",
        k if k == Kind::Commit as u8 => "commit record",
        k if k == Kind::Blob as u8 => "blob",
        _ => "other",
    }
}

fn tally(dir: &Path) -> Result<Tally> {
    let mut t = Tally::new();
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("log"))
        .context("reading the log folder")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    for seg in segs {
        let b = std::fs::read(&seg)?;
        let mut off = 32;
        while let Some(h) = b.get(off..).and_then(record::header) {
            if h.len == 0 && h.kind == 0 {
                break;
            }
            let framed = record::framed_len(h.len);
            let Some(payload) = b.get(off + record::HEADER..off + record::HEADER + h.len) else {
                break;
            };
            let e = t.entry(label(h.kind, payload)).or_default();
            e.0 += 1;
            e.1 += framed as u64;
            off += framed;
        }
    }
    Ok(t)
}

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(1000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let db = SopDb::open(dir.path(), &EngineConfig::default())?;
    let before = tally(dir.path())?;
    let data = Data::random(n, 11);
    for i in 0..n {
        db.write(&mut |w| w.insert(&data.keys[i], &data.values[i]))?;
    }
    let after = tally(dir.path())?;
    let mut total = 0;
    for (what, (records, bytes)) in &after {
        let (r0, b0) = before.get(what).copied().unwrap_or_default();
        let (records, bytes) = (records - r0, bytes - b0);
        total += bytes;
        println!(
            "{what:26} {records:6} records {bytes:9} bytes {:7.1} per commit",
            bytes as f64 / n as f64
        );
    }
    println!(
        "{:26} {:6}         {total:9} bytes {:7.1} per commit",
        "all",
        "",
        total as f64 / n as f64
    );
    Ok(())
}
