//! SOP (this project's engine) through [`sop::RawBtree`] on one unique store.

use std::path::Path;

use anyhow::Result;
use sop::{
    Database, DatabaseOptions, Durability, RawBtree, StoreOptions, Transaction, TransactionMode,
};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

const STORE: &str = "bench";

/// A SOP database with one store of byte keys and values.
#[derive(Debug)]
pub struct SopDb {
    db: Database,
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
        match self.store.get(key)? {
            Some(v) => {
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan(
        &mut self,
        from: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let range = match from {
            Some(k) => self.store.range(k.to_vec()..),
            None => self.store.iter(),
        };
        let mut n = 0;
        for item in range.take(limit) {
            let item = item?;
            visit(&item.key, &item.value);
            n += 1;
        }
        Ok(n)
    }
}

impl SopDb {
    fn begin(&self, mode: TransactionMode) -> Result<(Transaction, RawBtree)> {
        let tx = self.db.begin(mode)?;
        let store = tx.open_raw_btree(STORE)?;
        Ok((tx, store))
    }
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
        Ok(SopDb { db })
    }

    fn name(&self) -> &'static str {
        "sop"
    }

    fn write(&mut self, body: &mut WriteFn<'_>) -> Result<()> {
        let (tx, store) = self.begin(TransactionMode::ForWriting)?;
        body(&mut SopWriter { store: &store })?;
        drop(store);
        tx.commit()?;
        Ok(())
    }

    fn read(&mut self, body: &mut ReadFn<'_>) -> Result<()> {
        let (tx, store) = self.begin(TransactionMode::ForReading)?;
        body(&mut SopReader { store: &store })?;
        drop(store);
        tx.rollback()?;
        Ok(())
    }
}
