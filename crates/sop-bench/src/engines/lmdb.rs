//! LMDB through heed: one unnamed database of byte keys and values. Threads share the `Env`;
//! its write transactions wait for one another, and each thread reads in its own transaction.

use std::ops::Bound;
use std::path::Path;

use anyhow::Result;
use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

/// Address space reserved for the map (LMDB grows the file only as it is used).
const MAP_SIZE: usize = 16 << 30;

/// An LMDB environment with one database.
#[derive(Debug)]
pub struct LmdbDb {
    env: Env,
    db: Database<Bytes, Bytes>,
}

struct LmdbWriter<'a, 'e> {
    db: Database<Bytes, Bytes>,
    txn: &'a mut RwTxn<'e>,
}

impl Writer for LmdbWriter<'_, '_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put(self.txn, key, value)?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.db.delete(self.txn, key)?;
        Ok(())
    }
}

struct LmdbReader<'a, 'e> {
    db: Database<Bytes, Bytes>,
    txn: &'a RoTxn<'e>,
}

impl Reader for LmdbReader<'_, '_> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        match self.db.get(self.txn, key)? {
            Some(v) => {
                out.extend_from_slice(v);
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
        let start = from.map_or(Bound::Unbounded, Bound::Included);
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (start, Bound::Unbounded);
        let mut n = 0;
        for item in self.db.range(self.txn, &range)?.take(limit) {
            let (k, v) = item?;
            visit(k, v);
            n += 1;
        }
        Ok(n)
    }
}

impl BenchDb for LmdbDb {
    #[allow(unsafe_code)]
    fn open(path: &Path, cfg: &EngineConfig) -> Result<Self> {
        let mut opts = EnvOpenOptions::new();
        opts.map_size(MAP_SIZE).max_dbs(1);
        // SAFETY: NO_SYNC only weakens durability (the benchmark's `--no-sync`), and the folder
        // is fresh and private to this process, so no other handle maps the same file.
        let env = unsafe {
            if !cfg.sync {
                opts.flags(EnvFlags::NO_SYNC);
            }
            opts.open(path)?
        };
        let mut txn = env.write_txn()?;
        let db: Database<Bytes, Bytes> = env.create_database(&mut txn, None)?;
        txn.commit()?;
        Ok(LmdbDb { env, db })
    }

    fn name(&self) -> &'static str {
        "lmdb"
    }

    fn write(&self, body: &mut WriteFn<'_>) -> Result<()> {
        let mut txn = self.env.write_txn()?;
        body(&mut LmdbWriter {
            db: self.db,
            txn: &mut txn,
        })?;
        txn.commit()?;
        Ok(())
    }

    fn read(&self, body: &mut ReadFn<'_>) -> Result<()> {
        let txn = self.env.read_txn()?;
        body(&mut LmdbReader {
            db: self.db,
            txn: &txn,
        })
    }
}
