//! Cold loads of leaves with delta chains (ADR 0010).
//!
//! Builds a store with `N` (default 5,000) single-insert commits (not synced: the chains are
//! the same), then three times: reopens it (the node cache empty, the page cache warm) and
//! reads every key once (each leaf loaded from its base image and chain), then every key again
//! (all cached). The difference is the cost of the cold loads.
//!
//! ```text
//! cargo run --release -p sop-bench --example cold_loads [N]
//! ```

use std::time::Instant;

use anyhow::{Result, ensure};
use sop_bench::engines::sop::SopDb;
use sop_bench::{BenchDb, Data, EngineConfig};

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(5000), |s| s.parse())?;
    let cfg = EngineConfig {
        sync: false,
        ..EngineConfig::default()
    };
    let dir = tempfile::tempdir()?;
    let data = Data::random(n, 5);
    {
        let db = SopDb::open(dir.path(), &cfg)?;
        for i in 0..n {
            db.write(&mut |w| w.insert(&data.keys[i], &data.values[i]))?;
        }
    }
    let read_all = |db: &SopDb| -> Result<f64> {
        let mut buf = Vec::new();
        let t = Instant::now();
        db.read(&mut |r| {
            for (i, k) in data.keys.iter().enumerate() {
                ensure!(r.get(k, &mut buf)?, "key {i} is missing");
                ensure!(buf == data.values[i], "key {i} has a wrong value");
            }
            Ok(())
        })?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for round in 1..=3 {
        let db = SopDb::open(dir.path(), &cfg)?;
        let cold = read_all(&db)?;
        let warm = read_all(&db)?;
        println!("round {round}: {n} keys read cold {cold:.2} ms, warm {warm:.2} ms");
    }
    Ok(())
}
