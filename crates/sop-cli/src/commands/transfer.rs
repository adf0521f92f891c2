//! Bulk data: `import` and `export` as JSON lines `{"key": ..., "value": ...}`.
//!
//! Keys and values are JSON strings when they are text (typed keys of other types are JSON
//! numbers, arrays, ...); bytes that are not UTF-8 are `{"hex": "..."}`. `export` output
//! imports back into the same kind of store.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value as Json, json};
use sop::TransactionMode;

use super::data::{open_or_create_store, open_store};
use super::{open_existing, open_or_create};
use crate::codec::{StoreCodec, hex_object};
use crate::output::Out;
use crate::{Global, KeyOpts};

/// Options of `sop import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Store name (created as String keys / String values when missing).
    pub store: String,
    /// JSON lines file; `-` for stdin.
    pub file: PathBuf,
    /// Items per transaction.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    #[command(flatten)]
    pub k: KeyOpts,
}

/// Options of `sop export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Store name.
    pub store: String,
    /// Output file; `-` for stdout.
    pub file: PathBuf,
    #[command(flatten)]
    pub k: KeyOpts,
}

fn is_stdio(p: &std::path::Path) -> bool {
    p.as_os_str() == "-"
}

/// Decodes one import line into stored key and value bytes.
fn parse_line(codec: &StoreCodec, line: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let v: Json = serde_json::from_str(line).context("not JSON")?;
    let obj = v.as_object().context("not a JSON object")?;
    let key = obj.get("key").context("no \"key\" field")?;
    let value = obj.get("value").context("no \"value\" field")?;
    let kb = match hex_object(key) {
        Some(b) => b?,
        None => codec.key_from_json(key)?,
    };
    let vb = match (hex_object(value), value) {
        (Some(b), _) => b?,
        (None, Json::String(s)) => s.as_bytes().to_vec(),
        (None, other) => other.to_string().into_bytes(),
    };
    Ok((kb, codec.value_from_bytes(vb)?))
}

/// `sop import`.
pub fn import(g: &Global, a: &ImportArgs, out: Out) -> Result<ExitCode> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (reader, len): (Box<dyn BufRead>, Option<u64>) = if is_stdio(&a.file) {
        (Box::new(BufReader::new(io::stdin().lock())), None)
    } else {
        let f = File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::new(f)), len)
    };
    let db = open_or_create(g)?;
    let pb = match len {
        Some(len) => out.progress(len, &format!("importing into {}", a.store), true),
        None => out.spinner(&format!("importing into {}", a.store)),
    };
    let t = Instant::now();
    let mut tx = db.begin(TransactionMode::ForWriting)?;
    let (mut s, codec) = open_or_create_store(&tx, &a.store, a.k)?;
    let (mut items, mut in_batch, mut commits) = (0u64, 0usize, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", a.file.display()))?;
        if len.is_some() {
            pb.inc(line.len() as u64 + 1);
        } else {
            pb.inc(1);
        }
        if line.trim().is_empty() {
            continue;
        }
        let (k, v) =
            parse_line(&codec, &line).with_context(|| format!("{}:{}", a.file.display(), i + 1))?;
        s.upsert(&k, &v)?;
        items += 1;
        in_batch += 1;
        if in_batch == a.batch {
            drop(s);
            tx.commit().context("commit")?;
            commits += 1;
            tracing::debug!(items, "committed a batch");
            tx = db.begin(TransactionMode::ForWriting)?;
            s = open_store(&tx, &a.store, a.k)?.0;
            in_batch = 0;
        }
    }
    drop(s);
    if in_batch > 0 || commits == 0 {
        tx.commit().context("commit")?;
        commits += 1;
    }
    pb.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    out.emit(
        &json!({ "store": a.store, "imported": items, "transactions": commits, "seconds": secs }),
        || {
            format!(
                "imported {items} items into {} in {commits} transaction(s), {secs:.2}s",
                a.store
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `sop export`.
pub fn export(g: &Global, a: &ExportArgs, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let (s, codec) = open_store(&tx, &a.store, a.k)?;
    let total = s.count()?;
    let to_stdout = is_stdio(&a.file);
    let mut w: Box<dyn Write> = if to_stdout {
        Box::new(BufWriter::new(io::stdout().lock()))
    } else {
        let f = File::create(&a.file).with_context(|| format!("creating {}", a.file.display()))?;
        Box::new(BufWriter::new(f))
    };
    let pb = out.progress(total, &format!("exporting {}", a.store), false);
    let mut n = 0u64;
    for item in s.iter() {
        let item = item.with_context(|| format!("reading store {:?}", a.store))?;
        let line =
            json!({ "key": codec.key_json(&item.key), "value": codec.value_json(&item.value) });
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")
            .with_context(|| format!("writing {}", a.file.display()))?;
        n += 1;
        pb.inc(1);
    }
    w.flush()
        .with_context(|| format!("writing {}", a.file.display()))?;
    drop(w);
    pb.finish_and_clear();
    let summary = json!({ "store": a.store, "exported": n, "file": a.file.display().to_string() });
    let text = format!("exported {n} items of {} to {}", a.store, a.file.display());
    if to_stdout {
        // stdout carries the data: the summary goes to stderr.
        eprintln!("{}", if out.json { summary.to_string() } else { text });
    } else {
        out.emit(&summary, || text)?;
    }
    Ok(ExitCode::SUCCESS)
}
