//! Opening databases. An engine database handle stands for one process (a standalone database
//! has one owner; in clustered mode each process opens the folder once and coordinates with the
//! others through Redis), so handles are shared through a process-wide registry keyed by the
//! folder: every `sop.Database` on the same folder uses the same engine database, in the mode it
//! was first opened in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sop::{ClusterOptions, DatabaseOptions, TransactionMode};
use sop_redis::RedisOptions;

use crate::errors::{DatabaseError, db_err, open_err, txn_err};
use crate::transaction::NativeTransaction;

/// The open databases of this process, by folder.
struct Registry {
    /// The process the handles belong to.
    pid: u32,
    open: HashMap<PathBuf, sop::Database>,
}

/// The registry, emptied first if this process is a fork of the one that filled it: a forked
/// child must not write through its parent's handles (in clustered mode it would append to
/// the parent's own log segment), nor close them (a close checkpoints), so the inherited
/// handles are leaked and the child opens its own.
fn registry() -> PyResult<MutexGuard<'static, Registry>> {
    static OPEN: OnceLock<Mutex<Registry>> = OnceLock::new();
    let mut reg = OPEN
        .get_or_init(|| {
            Mutex::new(Registry {
                pid: std::process::id(),
                open: HashMap::new(),
            })
        })
        .lock()
        .map_err(|_| poisoned())?;
    let pid = std::process::id();
    if reg.pid != pid {
        for (_, db) in reg.open.drain() {
            std::mem::forget(db);
        }
        reg.pid = pid;
    }
    Ok(reg)
}

/// True in a process forked from the one with id `pid`.
pub fn forked_since(pid: u32) -> bool {
    pid != std::process::id()
}

fn normalize(path: &str) -> PyResult<PathBuf> {
    if path.is_empty() {
        return Err(PyValueError::new_err("stores folder must not be empty"));
    }
    let p = Path::new(path);
    Ok(std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf()))
}

fn poisoned() -> PyErr {
    DatabaseError::new_err("database registry poisoned")
}

fn mode_name(clustered: bool) -> &'static str {
    if clustered { "clustered" } else { "standalone" }
}

/// The Redis settings of a clustered open: `url` (a `redis://` URL) wins over `address`
/// (`host:port`); empty strings count as unset; `password` and a non-zero `db` override what
/// the URL says.
fn redis_options(
    url: Option<&str>,
    address: Option<&str>,
    password: Option<&str>,
    db: i64,
) -> RedisOptions {
    let set = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let defaults = RedisOptions::default();
    RedisOptions {
        url: set(url),
        address: set(address).unwrap_or(defaults.address.clone()),
        password: set(password),
        db,
        ..defaults
    }
}

/// An open database.
#[pyclass(module = "sop._sop", frozen)]
pub struct NativeDatabase {
    db: sop::Database,
    path: PathBuf,
    /// The process that opened it.
    pid: u32,
}

impl Drop for NativeDatabase {
    /// In a forked child the handle is the parent's: leak it rather than close it.
    fn drop(&mut self) {
        if forked_since(self.pid) {
            std::mem::forget(self.db.clone());
        }
    }
}

/// Opens (creating when missing) the database in `path`, or returns the handle this process
/// already has open. `clustered`: open in clustered mode with Redis (`redis_url`, else
/// `redis_address`, with `redis_password` / `redis_db`) as the coordinator, so that other
/// processes may open the folder at the same time.
#[pyfunction]
#[pyo3(signature = (path, clustered = false, redis_url = None, redis_address = None, redis_password = None, redis_db = 0))]
pub fn open_database(
    py: Python<'_>,
    path: &str,
    clustered: bool,
    redis_url: Option<&str>,
    redis_address: Option<&str>,
    redis_password: Option<&str>,
    redis_db: i64,
) -> PyResult<NativeDatabase> {
    let path = normalize(path)?;
    let redis =
        clustered.then(|| redis_options(redis_url, redis_address, redis_password, redis_db));
    let db = py.detach(|| -> PyResult<sop::Database> {
        let mut reg = registry()?;
        if let Some(db) = reg.open.get(&path) {
            let open_clustered = db.cluster_id().is_some();
            if open_clustered != clustered {
                return Err(DatabaseError::new_err(format!(
                    "{} is already open in {} mode in this process; it cannot also be opened in \
                     {} mode (close every Database on it first)",
                    path.display(),
                    mode_name(open_clustered),
                    mode_name(clustered),
                )));
            }
            return Ok(db.clone());
        }
        let opts = DatabaseOptions::new(&path);
        let db = match &redis {
            Some(redis) => sop_redis::open(opts, ClusterOptions::default(), redis),
            None => sop::Database::open(opts),
        }
        .map_err(|e| open_err(&e))?;
        reg.open.insert(path.clone(), db.clone());
        Ok(db)
    })?;
    Ok(NativeDatabase {
        db,
        path,
        pid: std::process::id(),
    })
}

/// Reads the persisted options of the database in `path`: (type, folder).
#[pyfunction]
pub fn read_options(py: Python<'_>, path: &str) -> PyResult<(u8, String)> {
    let p = normalize(path)?;
    let opts = py
        .detach(|| sop::Database::read_options(&p))
        .map_err(|e| db_err(&e))?;
    let ty = match opts.db_type {
        sop::DatabaseType::Standalone => 0,
        sop::DatabaseType::Clustered => 1,
    };
    Ok((ty, path.to_owned()))
}

/// Forgets the registry's handle of `path` (the database closes when no transaction uses it).
#[pyfunction]
pub fn close_database(path: &str) -> PyResult<bool> {
    let p = normalize(path)?;
    let removed = registry()?.open.remove(&p);
    Ok(removed.is_some())
}

#[pymethods]
impl NativeDatabase {
    /// The folder.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// True when open in clustered mode.
    #[getter]
    fn clustered(&self) -> bool {
        self.db.cluster_id().is_some()
    }

    /// Begins a transaction: mode 0 NoCheck, 1 ForWriting, 2 ForReading; `max_minutes` is the
    /// maximum duration (0 or less: 15 minutes; capped at 60).
    #[pyo3(signature = (mode = 1, max_minutes = 15.0))]
    fn begin(&self, py: Python<'_>, mode: i64, max_minutes: f64) -> PyResult<NativeTransaction> {
        let mode = match mode {
            0 => TransactionMode::NoCheck,
            1 => TransactionMode::ForWriting,
            2 => TransactionMode::ForReading,
            m => {
                return Err(PyValueError::new_err(format!(
                    "invalid transaction mode {m}: use TransactionMode.NoCheck (0), ForWriting (1) or ForReading (2)"
                )));
            }
        };
        let minutes = if max_minutes.is_finite() && max_minutes > 0.0 {
            max_minutes.min(60.0)
        } else {
            15.0
        };
        let max = Duration::from_secs_f64(minutes * 60.0);
        let db = self.db.clone();
        let txn = py
            .detach(|| db.begin_with_max_duration(mode, max))
            .map_err(|e| txn_err("begin", &e))?;
        Ok(NativeTransaction::new(self.db.clone(), txn))
    }

    /// Removes a store in a transaction of its own; false when absent.
    fn remove_btree(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        let db = self.db.clone();
        py.detach(|| db.transact(|t| t.remove_store(name)))
            .map_err(|e| db_err(&e))
    }

    /// Names of the committed stores.
    fn store_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let db = self.db.clone();
        py.detach(|| db.store_names()).map_err(|e| db_err(&e))
    }
}
