//! SOP (this project's engine) through [`sop::RawBtree`] on one unique store.
//!
//! [`Database`] is `Clone + Send + Sync`: threads share the adapter and begin a transaction per
//! call. A write whose commit fails with a retryable [`sop::Error::Conflict`] runs again in a
//! new transaction, with backoff, as [`Database::transact`] does; the number of such retries
//! is printed to stderr when the database is closed, if any.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use sop::{
    Database, DatabaseOptions, Durability, RawBtree, StoreOptions, Transaction, TransactionMode,
};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

const STORE: &str = "bench";
/// Attempts of a write transaction that conflicts (as [`Database::transact`]).
const MAX_ATTEMPTS: u32 = 16;

/// A SOP database with one store of byte keys and values.
#[derive(Debug)]
pub struct SopDb {
    db: Database,
    /// Write transactions run again after a conflict.
    retries: AtomicU64,
}

impl Drop for SopDb {
    fn drop(&mut self) {
        let n = *self.retries.get_mut();
        if n > 0 {
            eprintln!("sop: {n} write transaction(s) retried after a conflict");
        }
    }
}

struct SopWriter<'a> {
    store: &'a RawBtree,
}

impl Writer for SopWriter<'_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // Every workload inserts distinct keys: `add` is SOP's insert (its benchmark's call).
        self.store.add(key, value)?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.store.remove(key)?;
        Ok(())
    }
}

struct SopReader<'a> {
    store: &'a RawBtree,
}

impl Reader for SopReader<'_> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        Ok(self
            .store
            .get_with(key, |v| out.extend_from_slice(v))?
            .is_some())
    }

    fn scan(
        &mut self,
        from: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        if limit == 0 {
            return Ok(0);
        }
        let lo = from.map_or(Bound::Unbounded, Bound::Included);
        let mut n = 0;
        self.store.for_each_in(lo, Bound::Unbounded, |k, v| {
            visit(k, v);
            n += 1;
            n < limit
        })?;
        Ok(n)
    }
}

impl SopDb {
    fn begin(&self, mode: TransactionMode) -> Result<(Transaction, RawBtree)> {
        let tx = self.db.begin(mode)?;
        let store = tx.open_raw_btree(STORE)?;
        Ok((tx, store))
    }

    /// One attempt of [`BenchDb::write`].
    fn write_once(&self, body: &mut WriteFn<'_>) -> Result<()> {
        let (tx, store) = self.begin(TransactionMode::ForWriting)?;
        body(&mut SopWriter { store: &store })?;
        drop(store);
        tx.commit()?;
        Ok(())
    }
}

/// True when `e` is SOP's retryable conflict.
fn is_retryable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sop::Error>()
        .is_some_and(sop::Error::is_retryable)
}

impl BenchDb for SopDb {
    fn open(path: &Path, cfg: &EngineConfig) -> Result<Self> {
        let opts = DatabaseOptions {
            durability: if cfg.sync {
                Durability::Immediate
            } else {
                Durability::None
            },
            ..DatabaseOptions::new(path)
        };
        let db = Database::open(opts)?;
        let mut store_opts = StoreOptions::default();
        if let Some(n) = cfg.slot_length {
            store_opts.slot_length = n;
        }
        let tx = db.begin(TransactionMode::ForWriting)?;
        tx.new_raw_btree(STORE, store_opts)?;
        tx.commit()?;
        Ok(SopDb {
            db,
            retries: AtomicU64::new(0),
        })
    }

    fn name(&self) -> &'static str {
        "sop"
    }

    fn write(&self, body: &mut WriteFn<'_>) -> Result<()> {
        let mut backoff = Duration::from_micros(200);
        let mut attempt = 1;
        loop {
            match self.write_once(body) {
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => {
                    let jitter = fastrand::u64(..=backoff.as_micros() as u64);
                    std::thread::sleep(backoff / 2 + Duration::from_micros(jitter / 2));
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                }
                r => return r,
            }
        }
    }

    fn read(&self, body: &mut ReadFn<'_>) -> Result<()> {
        let (tx, store) = self.begin(TransactionMode::ForReading)?;
        body(&mut SopReader { store: &store })?;
        drop(store);
        tx.rollback()?;
        Ok(())
    }
}
