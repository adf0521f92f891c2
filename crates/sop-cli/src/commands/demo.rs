//! `sop demo`: create a database, write, read, scan, delete, verify, and say what happened.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use sop::{Database, DatabaseOptions, StoreOptions, TransactionMode};

use crate::output::Out;

fn key(i: u64) -> (String, u32) {
    (format!("user{i:07}"), (i % 97) as u32)
}

/// `sop demo DIR`.
pub fn run(dir: &Path, n: u64, out: Out) -> Result<ExitCode> {
    let db = Database::open(DatabaseOptions::new(dir))
        .with_context(|| format!("opening demo database {}", dir.display()))?;
    out.emit(
        &json!({ "step": "open", "path": dir.display().to_string() }),
        || format!("opened standalone database in {}", dir.display()),
    )?;

    let t = Instant::now();
    let tx = db.begin(TransactionMode::ForWriting)?;
    let people = tx.new_btree::<(String, u32), String>("people", StoreOptions::default())?;
    let pb = out.progress(n, "writing", false);
    for i in 0..n {
        people.upsert(&key(i), &format!("value of user {i}"))?;
        if i % 4096 == 0 {
            pb.set_position(i);
        }
    }
    pb.finish_and_clear();
    drop(people);
    tx.commit()?;
    let secs = t.elapsed().as_secs_f64();
    out.emit(
        &json!({ "step": "write", "items": n, "seconds": secs }),
        || {
            format!(
                "wrote {n} items in one transaction: {secs:.3}s ({:.0} items/s)",
                n as f64 / secs
            )
        },
    )?;

    let t = Instant::now();
    let tx = db.begin(TransactionMode::ForReading)?;
    let people = tx.open_btree::<(String, u32), String>("people")?;
    let mut found = 0u64;
    for i in (0..n).step_by(7) {
        if people.get(&key(i))?.is_some() {
            found += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    out.emit(
        &json!({ "step": "read", "found": found, "seconds": secs }),
        || format!("read {found} items by key: {secs:.3}s"),
    )?;

    let lo = ("user0000100".to_string(), 0);
    let hi = ("user0000105".to_string(), 0);
    if !out.json {
        out.text(format!("scan from {lo:?} to {hi:?}:"))?;
    }
    for item in people.range(lo..hi) {
        let item = item?;
        out.emit(
            &json!({ "step": "scan", "key": [item.key.0, item.key.1], "value": item.value }),
            || format!("  {:?} => {}", item.key, item.value),
        )?;
    }
    people.last()?;
    if let Some((k, _)) = people.current_key()? {
        let count = people.count()?;
        out.emit(
            &json!({ "step": "last", "key": [k.0, k.1], "count": count }),
            || format!("last key: {k:?}, count: {count}"),
        )?;
    }
    drop(people);
    tx.commit()?;

    let t = Instant::now();
    for i in 0..10u64.min(n) {
        let tx = db.begin(TransactionMode::ForWriting)?;
        let people = tx.open_btree::<(String, u32), String>("people")?;
        people.remove(&key(i))?;
        drop(people);
        tx.commit()?;
    }
    let secs = t.elapsed().as_secs_f64();
    out.emit(
        &json!({ "step": "delete", "transactions": 10u64.min(n), "seconds": secs }),
        || format!("10 durable single-delete transactions: {secs:.3}s"),
    )?;

    let r = db.verify()?;
    out.emit(
        &json!({
            "step": "verify", "stores": r.stores, "items": r.items, "nodes": r.nodes,
            "records": r.records, "problems": r.problems.len(), "ok": r.is_ok(),
        }),
        || {
            format!(
                "verify: {} stores, {} items, {} nodes, {} records, {} problems",
                r.stores,
                r.items,
                r.nodes,
                r.records,
                r.problems.len()
            )
        },
    )?;
    if !r.is_ok() {
        bail!("verify found problems: {:?}", r.problems);
    }
    if !out.json {
        out.text(format!(
            "try: sop --db {} stores; sop --db {} scan people --limit 5",
            dir.display(),
            dir.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
