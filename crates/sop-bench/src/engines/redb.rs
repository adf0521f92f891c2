//! redb 4: one table of byte keys and values in one file. Threads share the `Database`; its
//! write transactions wait for one another.

use std::path::Path;

use anyhow::Result;
use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition,
};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

/// A redb database with one table.
#[derive(Debug)]
pub struct RedbDb {
    db: Database,
    sync: bool,
}

struct RedbWriter<'a, 'txn> {
    table: &'a mut Table<'txn, &'static [u8], &'static [u8]>,
}

impl Writer for RedbWriter<'_, '_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.table.insert(key, value)?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.table.remove(key)?;
        Ok(())
    }
}

struct RedbReader<'a> {
    table: &'a ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl Reader for RedbReader<'_> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        match self.table.get(key)? {
            Some(v) => {
                out.extend_from_slice(v.value());
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
            Some(k) => self.table.range::<&[u8]>(k..)?,
            None => self.table.iter()?,
        };
        let mut n = 0;
        for item in iter.take(limit) {
            let (k, v) = item?;
            visit(k.value(), v.value());
            n += 1;
        }
        Ok(n)
    }
}

impl BenchDb for RedbDb {
    fn open(path: &Path, cfg: &EngineConfig) -> Result<Self> {
        let db = Database::create(path.join("bench.redb"))?;
        let me = RedbDb { db, sync: cfg.sync };
        // Create the table so that readers find it.
        me.write(&mut |_| Ok(()))?;
        Ok(me)
    }

    fn name(&self) -> &'static str {
        "redb"
    }

    fn write(&self, body: &mut WriteFn<'_>) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if self.sync {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        {
            let mut table = tx.open_table(TABLE)?;
            body(&mut RedbWriter { table: &mut table })?;
        }
        tx.commit()?;
        Ok(())
    }

    fn read(&self, body: &mut ReadFn<'_>) -> Result<()> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(TABLE)?;
        body(&mut RedbReader { table: &table })
    }
}
