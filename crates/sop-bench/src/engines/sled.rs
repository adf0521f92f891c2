//! sled 0.34: the default tree; a write transaction is an atomic `Batch`, followed by a
//! `flush` (fsync) when durable. sled has no read snapshot: reads go to the tree. Threads share
//! the `Db`.

use std::path::Path;

use anyhow::Result;
use sled::{Batch, Db};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

/// A sled database.
#[derive(Debug)]
pub struct SledDb {
    db: Db,
    sync: bool,
}

struct SledWriter {
    batch: Batch,
}

impl Writer for SledWriter {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.batch.insert(key, value);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.batch.remove(key);
        Ok(())
    }
}

struct SledReader<'a> {
    db: &'a Db,
}

impl Reader for SledReader<'_> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        match self.db.get(key)? {
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
        let iter = match from {
            Some(k) => self.db.range(k..),
            None => self.db.iter(),
        };
        let mut n = 0;
        for item in iter.take(limit) {
            let (k, v) = item?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }
}

impl BenchDb for SledDb {
    fn open(path: &Path, cfg: &EngineConfig) -> Result<Self> {
        let db = sled::Config::new().path(path.join("sled")).open()?;
        Ok(SledDb { db, sync: cfg.sync })
    }

    fn name(&self) -> &'static str {
        "sled"
    }

    fn write(&self, body: &mut WriteFn<'_>) -> Result<()> {
        let mut w = SledWriter {
            batch: Batch::default(),
        };
        body(&mut w)?;
        self.db.apply_batch(w.batch)?;
        if self.sync {
            self.db.flush()?;
        }
        Ok(())
    }

    fn read(&self, body: &mut ReadFn<'_>) -> Result<()> {
        body(&mut SledReader { db: &self.db })
    }
}
