//! fjall 3: one keyspace; a write transaction is a `WriteBatch`, committed with
//! `PersistMode::SyncAll` when durable; a read transaction is a snapshot. Threads share the
//! `Database` and keyspace.

use std::path::Path;

use anyhow::Result;
use fjall::{
    Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch as WriteBatch, PersistMode,
    Readable, Snapshot,
};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

/// A fjall database with one keyspace.
pub struct FjallDb {
    db: Database,
    ks: Keyspace,
    sync: bool,
}

impl std::fmt::Debug for FjallDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallDb")
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

struct FjallWriter<'a> {
    ks: &'a Keyspace,
    batch: WriteBatch,
}

impl Writer for FjallWriter<'_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.batch.insert(self.ks, key, value);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.batch.remove(self.ks, key);
        Ok(())
    }
}

struct FjallReader<'a> {
    ks: &'a Keyspace,
    snap: Snapshot,
}

impl Reader for FjallReader<'_> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        match self.snap.get(self.ks, key)? {
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
            Some(k) => self.snap.range::<&[u8], _>(self.ks, k..),
            None => self.snap.iter(self.ks),
        };
        let mut n = 0;
        for guard in iter.take(limit) {
            let (k, v) = guard.into_inner()?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }
}

impl BenchDb for FjallDb {
    fn open(path: &Path, cfg: &EngineConfig) -> Result<Self> {
        let db = Database::builder(path).open()?;
        let ks = db.keyspace("bench", KeyspaceCreateOptions::default)?;
        Ok(FjallDb {
            db,
            ks,
            sync: cfg.sync,
        })
    }

    fn name(&self) -> &'static str {
        "fjall"
    }

    fn write(&self, body: &mut WriteFn<'_>) -> Result<()> {
        let mode = if self.sync {
            PersistMode::SyncAll
        } else {
            PersistMode::Buffer
        };
        let mut w = FjallWriter {
            ks: &self.ks,
            batch: self.db.batch().durability(Some(mode)),
        };
        body(&mut w)?;
        w.batch.commit()?;
        Ok(())
    }

    fn read(&self, body: &mut ReadFn<'_>) -> Result<()> {
        body(&mut FjallReader {
            ks: &self.ks,
            snap: self.db.snapshot(),
        })
    }
}
