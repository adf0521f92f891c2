//! Items: `get`, `put`, `del`, `scan`.

use std::ops::Bound;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use sop::{RawBtree, StoreOptions, Transaction, TransactionMode};

use super::{open_existing, open_or_create};
use crate::codec::StoreCodec;
use crate::output::Out;
use crate::{Global, KeyOpts};

/// Options of `sop scan`.
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Store name.
    pub store: String,
    /// First key (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// Last key (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// Newest-first: walk the range from its end.
    #[arg(long)]
    pub reverse: bool,
    /// At most this many items (0: all).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub k: KeyOpts,
}

/// Opens an existing store as raw bytes, with the codec for its types.
pub fn open_store(tx: &Transaction, name: &str, k: KeyOpts) -> Result<(RawBtree, StoreCodec)> {
    let raw = tx
        .open_raw_btree(name)
        .with_context(|| format!("opening store {name:?}"))?;
    let info = raw.info()?;
    let codec = StoreCodec::for_store(&info, k.raw, k.hex);
    tracing::debug!(store = name, ?codec, "opened store");
    Ok((raw, codec))
}

/// Opens a store for writing, creating it as a `Btree<String, String>` when missing.
pub fn open_or_create_store(
    tx: &Transaction,
    name: &str,
    k: KeyOpts,
) -> Result<(RawBtree, StoreCodec)> {
    if !tx.store_exists(name)? {
        tracing::info!(store = name, "creating store (String keys, String values)");
        tx.new_btree::<String, String>(name, StoreOptions::default())
            .with_context(|| format!("creating store {name:?}"))?;
    }
    open_store(tx, name, k)
}

/// `sop get`.
pub fn get(g: &Global, store: &str, key: &str, k: KeyOpts, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let (s, codec) = open_store(&tx, store, k)?;
    let kb = codec.key_from_arg(key)?;
    match s.get(&kb)? {
        Some(v) => out.emit(
            &json!({ "key": codec.key_json(&kb), "value": codec.value_json(&v) }),
            || codec.value_text(&v),
        )?,
        None => bail!("key {key:?} not found in store {store:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `sop put`.
pub fn put(
    g: &Global,
    store: &str,
    key: &str,
    value: &str,
    k: KeyOpts,
    out: Out,
) -> Result<ExitCode> {
    let db = open_or_create(g)?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    let (s, codec) = open_or_create_store(&tx, store, k)?;
    let kb = codec.key_from_arg(key)?;
    let vb = codec.value_from_arg(value)?;
    let existed = s.contains_key(&kb)?;
    s.upsert(&kb, &vb)?;
    drop(s);
    tx.commit().context("commit")?;
    if out.json {
        out.json_line(&json!({ "store": store, "key": codec.key_json(&kb), "updated": existed }))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `sop del`.
pub fn del(g: &Global, store: &str, key: &str, k: KeyOpts, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let tx = db.begin(TransactionMode::ForWriting)?;
    let (s, codec) = open_store(&tx, store, k)?;
    let kb = codec.key_from_arg(key)?;
    if !s.remove(&kb)? {
        bail!("key {key:?} not found in store {store:?}");
    }
    drop(s);
    tx.commit().context("commit")?;
    if out.json {
        out.json_line(&json!({ "store": store, "key": codec.key_json(&kb), "removed": true }))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `sop scan`.
pub fn scan(g: &Global, a: &ScanArgs, out: Out) -> Result<ExitCode> {
    let db = open_existing(g)?;
    let tx = db.begin(TransactionMode::ForReading)?;
    let (s, codec) = open_store(&tx, &a.store, a.k)?;
    let lo = match &a.from {
        Some(k) => Bound::Included(codec.key_from_arg(k)?),
        None => Bound::Unbounded,
    };
    let hi = match &a.to {
        Some(k) => Bound::Excluded(codec.key_from_arg(k)?),
        None => Bound::Unbounded,
    };
    if let (Bound::Included(l), Bound::Excluded(h)) = (&lo, &hi)
        && l > h
    {
        bail!("--from is after --to");
    }
    let range = s.range((lo, hi));
    let items: Box<dyn Iterator<Item = sop::Result<sop::RawItem>>> = if a.reverse {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let limit = if a.limit == 0 { usize::MAX } else { a.limit };
    let mut rows = Vec::new();
    for item in items.take(limit) {
        let item = item.with_context(|| format!("scanning store {:?}", a.store))?;
        if out.json {
            out.json_line(&json!({
                "key": codec.key_json(&item.key),
                "value": codec.value_json(&item.value),
            }))?;
        } else {
            rows.push(vec![
                codec.key_text(&item.key),
                codec.value_text(&item.value),
            ]);
        }
    }
    if !out.json {
        let n = rows.len();
        out.table(&["key", "value"], rows)?;
        if n == limit {
            eprintln!("(stopped at --limit {limit}; --limit 0 shows all)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
