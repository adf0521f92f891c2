//! SQLite through rusqlite (bundled): one `WITHOUT ROWID` table, WAL journal,
//! `synchronous=FULL` when durable (`OFF` with `--no-sync`).
//!
//! A `Connection` is not `Sync`, so the adapter keeps a pool of them: each transaction takes an
//! idle connection (opening one when none is idle) and gives it back, so that threads running
//! at once each have their own. Writes begin with `BEGIN IMMEDIATE` and connections wait for
//! the write lock (`busy_timeout`) instead of failing with `SQLITE_BUSY`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use rusqlite::{CachedStatement, Connection, TransactionBehavior, params};

use crate::{BenchDb, EngineConfig, ReadFn, Reader, WriteFn, Writer};

const INSERT: &str = "INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)";
const DELETE: &str = "DELETE FROM kv WHERE k = ?1";
const GET: &str = "SELECT v FROM kv WHERE k = ?1";
const SCAN: &str = "SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2";

/// How long a connection waits for another one's lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// A SQLite database with one key/value table, and a pool of connections to it.
#[derive(Debug)]
pub struct SqliteDb {
    file: PathBuf,
    sync: bool,
    /// Connections not in use by a transaction.
    idle: Mutex<Vec<Connection>>,
}

impl SqliteDb {
    /// A new connection to the database file, set up for the benchmark.
    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.file)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", if self.sync { "FULL" } else { "OFF" })?;
        Ok(conn)
    }

    /// Runs `f` on an idle connection (a new one when none is idle), then gives it back.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        let r = f(&mut conn);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        r
    }
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
        let db = SqliteDb {
            file: path.join("bench.sqlite"),
            sync: cfg.sync,
            idle: Mutex::new(Vec::new()),
        };
        let conn = db.connect()?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID",
        )?;
        db.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        Ok(db)
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn write(&self, body: &mut WriteFn<'_>) -> Result<()> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut w = SqliteWriter {
                    insert: tx.prepare_cached(INSERT)?,
                    delete: tx.prepare_cached(DELETE)?,
                };
                body(&mut w)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn read(&self, body: &mut ReadFn<'_>) -> Result<()> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut r = SqliteReader {
                    get: tx.prepare_cached(GET)?,
                    scan: tx.prepare_cached(SCAN)?,
                };
                body(&mut r)?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}
