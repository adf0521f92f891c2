//! SQLite through rusqlite (bundled): one `WITHOUT ROWID` table, WAL journal,
//! `synchronous=FULL` when durable (`OFF` with `--no-sync`).

use std::path::Path;

use anyhow::Result;
use rusqlite::{CachedStatement, Connection, params};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

const INSERT: &str = "INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)";
const DELETE: &str = "DELETE FROM kv WHERE k = ?1";
const GET: &str = "SELECT v FROM kv WHERE k = ?1";
const SCAN: &str = "SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2";

/// A SQLite database with one key/value table.
#[derive(Debug)]
pub struct SqliteDb {
    conn: Connection,
}

struct SqliteWriter<'a> {
    insert: CachedStatement<'a>,
    delete: CachedStatement<'a>,
}

impl Writer for SqliteWriter<'_> {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert.execute(params![key, value])?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<()> {
        self.delete.execute(params![key])?;
        Ok(())
    }
}

struct SqliteReader<'a> {
    get: CachedStatement<'a>,
    scan: CachedStatement<'a>,
}

impl Reader for SqliteReader<'_> {
    fn get(&mut self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        let mut rows = self.get.query(params![key])?;
        match rows.next()? {
            Some(row) => {
                out.extend_from_slice(row.get_ref(0)?.as_blob()?);
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
        // Every key is a BLOB and the empty BLOB sorts first; LIMIT -1 is no limit.
        let from = from.unwrap_or(&[]);
        let limit = i64::try_from(limit).unwrap_or(-1);
        let mut rows = self.scan.query(params![from, limit])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            visit(row.get_ref(0)?.as_blob()?, row.get_ref(1)?.as_blob()?);
            n += 1;
        }
        Ok(n)
    }
}

impl BenchDb for SqliteDb {
    fn open(path: &Path, cfg: &EngineConfig) -> Result<Self> {
        let conn = Connection::open(path.join("bench.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if cfg.sync { "FULL" } else { "OFF" })?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID",
        )?;
        Ok(SqliteDb { conn })
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn write(&mut self, body: &mut WriteFn<'_>) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut w = SqliteWriter {
                insert: tx.prepare_cached(INSERT)?,
                delete: tx.prepare_cached(DELETE)?,
            };
            body(&mut w)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn read(&mut self, body: &mut ReadFn<'_>) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut r = SqliteReader {
                get: tx.prepare_cached(GET)?,
                scan: tx.prepare_cached(SCAN)?,
            };
            body(&mut r)?;
        }
        tx.commit()?;
        Ok(())
    }
}
