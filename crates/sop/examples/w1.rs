//! Quick W1 timing (SOP's own benchmark shape): N inserts in one transaction, N reads, N deletes.
//! The bench harness (`sop-bench`) is the reference; this is a fast local check.

use std::time::Instant;

use sop::{Database, DatabaseOptions, StoreOptions, TransactionMode};

fn main() -> sop::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let slot: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(sop::options::DEFAULT_SLOT_LENGTH);
    let dir = std::env::temp_dir().join(format!("sop-w1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(DatabaseOptions::new(&dir))?;
    let opts = StoreOptions {
        slot_length: slot,
        ..StoreOptions::default()
    };
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key_{i}").into_bytes()).collect();
    let vals: Vec<Vec<u8>> = (0..n).map(|i| format!("value_{i}").into_bytes()).collect();

    let t = Instant::now();
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.new_raw_btree("w1", opts)?;
    for (k, v) in keys.iter().zip(&vals) {
        s.add(k, v)?;
    }
    tx.commit()?;
    let ins = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_raw_btree("w1")?;
    for k in &keys {
        if s.get(k)?.is_none() {
            return Err(sop::Error::InvalidArgument("missing".into()));
        }
    }
    drop(tx);
    let rd = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let tx = db.begin(TransactionMode::ForWriting)?;
    let s = tx.open_raw_btree("w1")?;
    for k in &keys {
        s.remove(k)?;
    }
    tx.commit()?;
    let del = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for i in 0..1000u64 {
        let tx = db.begin(TransactionMode::ForWriting)?;
        let s = tx.open_raw_btree("w1")?;
        s.add(&i.to_le_bytes(), &[7u8; 100])?;
        tx.commit()?;
    }
    let w4 = 1000.0 / t.elapsed().as_secs_f64();
    println!(
        "slot {slot}: W1 insert {ins:.0}/s read {rd:.0}/s delete {del:.0}/s; W4 {w4:.0} commits/s; disk {} bytes",
        db.disk_usage()?
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
