//! Opening databases. A standalone engine database has one owner per process, so handles are
//! shared through a process-wide registry keyed by the folder: every `sop.Database` on the same
//! folder uses the same engine database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sop::{DatabaseOptions, TransactionMode};

use crate::errors::{DatabaseError, db_err, txn_err};
use crate::transaction::NativeTransaction;

fn registry() -> &'static Mutex<HashMap<PathBuf, sop::Database>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, sop::Database>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
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

/// An open database.
#[pyclass(module = "sop._sop", frozen)]
pub struct NativeDatabase {
    db: sop::Database,
    path: PathBuf,
}

/// Opens (creating when missing) the database in `path`, or returns the handle already open.
#[pyfunction]
pub fn open_database(py: Python<'_>, path: &str) -> PyResult<NativeDatabase> {
    let path = normalize(path)?;
    let db = py.detach(|| -> PyResult<sop::Database> {
        let mut reg = registry().lock().map_err(|_| poisoned())?;
        if let Some(db) = reg.get(&path) {
            return Ok(db.clone());
        }
        let db = sop::Database::open(DatabaseOptions::new(&path)).map_err(|e| db_err(&e))?;
        reg.insert(path.clone(), db.clone());
        Ok(db)
    })?;
    Ok(NativeDatabase { db, path })
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
    let removed = registry().lock().map_err(|_| poisoned())?.remove(&p);
    Ok(removed.is_some())
}

#[pymethods]
impl NativeDatabase {
    /// The folder.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
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
