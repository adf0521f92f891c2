//! Database administration: `init`, `stores`, `info`, `verify`, `checkpoint`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use sop::{Database, DatabaseOptions, Durability, TransactionMode};

use super::open_existing;
use crate::Global;
use crate::output::{Out, human_bytes};

/// Options of `sop init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Size at which a log segment is sealed and a new one started (e.g. 64M; 64K to 4G).
    #[arg(long, value_parser = parse_size)]
    pub segment_bytes: Option<u64>,
    /// Log bytes since the last checkpoint that trigger a new one (e.g. 128M; at least 64K).
    #[arg(long, value_parser = parse_size)]
    pub checkpoint_bytes: Option<u64>,
    /// Bytes of decoded nodes cached in memory (e.g. 256M).
    #[arg(long, value_parser = parse_size)]
    pub node_cache_bytes: Option<u64>,
    /// Acknowledge commits without fsync (a power cut may lose the latest commits).
    #[arg(long)]
    pub no_sync: bool,
    /// Use O_DIRECT for the log files.
    #[arg(long)]
    pub direct_io: bool,
    /// Do not checkpoint when the database is closed (the next open replays the log).
    #[arg(long)]
    pub no_checkpoint_on_close: bool,
}

/// Parses `1234`, `64K`, `64KiB`, `16M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 65536, 64K, 16M, 1G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `sop init`.
pub fn init(g: &Global, a: &InitArgs, out: Out) -> Result<ExitCode> {
    if Database::is_database(&g.db) {
        bail!("{} already holds a database", g.db.display());
    }
    let mut opts = DatabaseOptions::new(&g.db);
    if let Some(b) = a.segment_bytes {
        opts.segment_bytes = b;
    }
    if let Some(b) = a.checkpoint_bytes {
        opts.checkpoint_bytes = b;
    }
    if let Some(b) = a.node_cache_bytes {
        opts.node_cache_bytes = b;
    }
    if a.no_sync {
        opts.durability = Durability::None;
    }
    opts.direct_io = a.direct_io;
    opts.checkpoint_on_close = !a.no_checkpoint_on_close;
    opts.validate()?;
    let db =
        Database::open(opts).with_context(|| format!("creating database {}", g.db.display()))?;
    let o = db.options();
    tracing::info!(path = %g.db.display(), "created database");
    out.emit(
        &json!({
            "created": g.db.display().to_string(),
            "segment_bytes": o.segment_bytes,
            "checkpoint_bytes": o.checkpoint_bytes,
            "node_cache_bytes": o.node_cache_bytes,
            "sync": o.durability == Durability::Immediate,
            "direct_io": o.direct_io,
            "checkpoint_on_close": o.checkpoint_on_close,
        }),
        || {
            format!(
                "created database {} (segments {}, checkpoint every {}, sync {})",
                g.db.display(),
                human_bytes(o.segment_bytes),
                human_bytes(o.checkpoint_bytes),
                if o.durability == Durability::Immediate {
                    "on"
                } else {
                    "off"
                }
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn type_or(t: &Option<String>, raw: &str) -> String {
    t.clone().unwrap_or_else(|| raw.to_owned())
}

/// `sop stores`.
pub fn stores(g: &Global, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let mut rows = Vec::new();
    for name in db.store_names()? {
        let info = tx
            .store_info(&name)
            .with_context(|| format!("reading store {name}"))?;
        let key = type_or(&info.options.key_type, "raw bytes");
        let value = type_or(&info.options.value_type, "raw bytes");
        if out.json {
            out.json_line(&json!({
                "store": name,
                "count": info.count,
                "key_type": info.options.key_type,
                "value_type": info.options.value_type,
            }))?;
        } else {
            rows.push(vec![name, info.count.to_string(), key, value]);
        }
    }
    if !out.json {
        if rows.is_empty() {
            out.text("no stores")?;
        } else {
            out.table(&["store", "items", "key type", "value type"], rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sop info [STORE]`: a store, or the database when no store is named.
pub fn info(g: &Global, store: Option<&str>, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let Some(store) = store else {
        return db_info(&db, out);
    };
    let tx = db.begin(TransactionMode::ForReading)?;
    let info = tx
        .store_info(store)
        .with_context(|| format!("store {store:?} in {}", g.db.display()))?;
    if out.json {
        out.json_line(&json!({
            "store": info.name,
            "count": info.count,
            "options": info.options_json(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        vec!["store".into(), info.name.clone()],
        vec!["items".into(), info.count.to_string()],
    ];
    if let serde_json::Value::Object(m) = info.options_json() {
        for (k, v) in m {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "-".into(),
                v => v.to_string(),
            };
            rows.push(vec![k, v]);
        }
    }
    out.table(&["field", "value"], rows)?;
    Ok(ExitCode::SUCCESS)
}

fn db_info(db: &Database, out: Out) -> Result<ExitCode> {
    let o = db.options();
    let names = db.store_names()?;
    let usage = db.disk_usage()?;
    let seq = db.commit_seq()?;
    let in_doubt = db.in_doubt()?.len();
    if out.json {
        out.json_line(&json!({
            "path": db.path().display().to_string(),
            "stores": names,
            "commits": seq,
            "log_bytes": usage,
            "in_doubt": in_doubt,
            "segment_bytes": o.segment_bytes,
            "checkpoint_bytes": o.checkpoint_bytes,
            "node_cache_bytes": o.node_cache_bytes,
            "sync": o.durability == Durability::Immediate,
            "direct_io": o.direct_io,
            "checkpoint_on_close": o.checkpoint_on_close,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    out.table(
        &["field", "value"],
        vec![
            vec!["path".into(), db.path().display().to_string()],
            vec!["stores".into(), names.len().to_string()],
            vec!["commits".into(), seq.to_string()],
            vec!["log on disk".into(), human_bytes(usage)],
            vec!["in-doubt transactions".into(), in_doubt.to_string()],
            vec!["segment size".into(), human_bytes(o.segment_bytes)],
            vec!["checkpoint every".into(), human_bytes(o.checkpoint_bytes)],
            vec!["node cache".into(), human_bytes(o.node_cache_bytes)],
            vec![
                "sync on commit".into(),
                (o.durability == Durability::Immediate).to_string(),
            ],
            vec!["direct I/O".into(), o.direct_io.to_string()],
            vec![
                "checkpoint on close".into(),
                o.checkpoint_on_close.to_string(),
            ],
        ],
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `sop verify`: exit status 1 when anything is wrong, including damage that stops the
/// database from opening.
pub fn verify(g: &Global, out: Out) -> Result<ExitCode> {
    let db = match open_existing(g) {
        Ok(db) => db,
        Err(e) => {
            // Damage found by recovery is a verify result, not a usage error.
            if let Some(sop::Error::Corruption { .. }) = e.downcast_ref::<sop::Error>() {
                let msg = format!("{e:#}");
                out.emit(&json!({ "problem": msg }), || format!("PROBLEM: {msg}"))?;
                out.emit(&json!({ "ok": false, "problems": 1 }), || {
                    "verify failed: the database does not open".into()
                })?;
                return Ok(ExitCode::FAILURE);
            }
            return Err(e);
        }
    };
    let spinner = out.spinner("verifying");
    let r = db.verify().context("verify")?;
    spinner.finish_and_clear();
    for p in &r.problems {
        out.emit(&json!({ "problem": p }), || format!("PROBLEM: {p}"))?;
    }
    out.emit(
        &json!({
            "ok": r.is_ok(),
            "stores": r.stores,
            "items": r.items,
            "nodes": r.nodes,
            "blobs": r.blobs,
            "segments": r.segments,
            "records": r.records,
            "problems": r.problems.len(),
        }),
        || {
            format!(
                "{} stores, {} items, {} nodes, {} blobs, {} segments, {} records: {}",
                r.stores,
                r.items,
                r.nodes,
                r.blobs,
                r.segments,
                r.records,
                if r.is_ok() {
                    "ok".to_owned()
                } else {
                    format!("{} problem(s)", r.problems.len())
                }
            )
        },
    )?;
    Ok(if r.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `sop checkpoint`.
pub fn checkpoint(g: &Global, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let before = db.disk_usage()?;
    db.checkpoint().context("checkpoint")?;
    let after = db.disk_usage()?;
    out.emit(
        &json!({ "checkpoint": true, "log_bytes_before": before, "log_bytes_after": after }),
        || {
            format!(
                "checkpoint written; log {} -> {}",
                human_bytes(before),
                human_bytes(after)
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("3Q").is_err());
    }
}
