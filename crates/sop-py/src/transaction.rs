//! `NativeTransaction`: begin / commit / rollback and opening stores inside a transaction.
//!
//! Stores created here carry a small JSON document in their persisted options
//! (`key_type = "sop-py/1"`, `value_type = <metadata>`): the key shape (primitive or dict, the
//! index specification) and the sop4py options that have no engine counterpart, so any later
//! `open_btree` encodes keys the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use serde_json::Value as Json;
use sop::{StoreOptions, TransactionMode, ValuePlacement};

use crate::btree::NativeBtree;
use crate::codec::KeySpec;
use crate::errors::{BtreeError, btree_err, txn_err};

/// The marker stored as `key_type` of stores created by this package.
pub const KEY_TYPE: &str = "sop-py/1";

/// A transaction.
#[pyclass(module = "sop._sop", frozen)]
pub struct NativeTransaction {
    db: sop::Database,
    txn: Arc<sop::Transaction>,
    /// Metadata of the stores this transaction created or opened.
    meta: Mutex<HashMap<String, String>>,
    /// The process that began it.
    pid: u32,
}

impl Drop for NativeTransaction {
    /// In a forked child the transaction is the parent's: leak it rather than end it.
    fn drop(&mut self) {
        if crate::database::forked_since(self.pid) {
            std::mem::forget(self.db.clone());
            std::mem::forget(Arc::clone(&self.txn));
        }
    }
}

impl NativeTransaction {
    pub fn new(db: sop::Database, txn: sop::Transaction) -> Self {
        NativeTransaction {
            db,
            txn: Arc::new(txn),
            meta: Mutex::new(HashMap::new()),
            pid: std::process::id(),
        }
    }

    fn remember(&self, name: &str, meta: &str) {
        if let Ok(mut m) = self.meta.lock() {
            m.insert(name.to_owned(), meta.to_owned());
        }
    }

    fn known(&self, name: &str) -> Option<String> {
        self.meta.lock().ok()?.get(name).cloned()
    }

    /// The metadata of an existing store, read in a side transaction so this one does not
    /// record the store's count as read (which would make concurrent writers conflict).
    fn lookup_meta(&self, raw: &sop::RawBtree, name: &str) -> sop::Result<String> {
        if let Some(m) = self.known(name) {
            return Ok(m);
        }
        let side = self.db.begin(TransactionMode::NoCheck)?;
        let opts = match side.store_info(name) {
            Ok(info) => info.options,
            Err(sop::Error::StoreNotFound(_)) => raw.info()?.options,
            Err(e) => return Err(e),
        };
        drop(side);
        let meta = if opts.key_type.as_deref() == Some(KEY_TYPE) {
            opts.value_type.unwrap_or_default()
        } else {
            String::new()
        };
        self.remember(name, &meta);
        Ok(meta)
    }
}

/// The key shape described by a store's metadata.
pub fn spec_of(meta: &str) -> KeySpec {
    let Ok(j) = serde_json::from_str::<Json>(meta) else {
        return KeySpec::Scalar;
    };
    if let Some(fields) = j.get("index_fields").and_then(Json::as_array)
        && !fields.is_empty()
    {
        let fields = fields
            .iter()
            .filter_map(|f| {
                let name = f.get(0)?.as_str()?.to_owned();
                let asc = f.get(1).and_then(Json::as_bool).unwrap_or(true);
                Some((name, asc))
            })
            .collect();
        return KeySpec::Fields(fields);
    }
    if j.get("is_primitive_key").and_then(Json::as_bool) == Some(false) {
        KeySpec::AnyMap
    } else {
        KeySpec::Scalar
    }
}

/// Clamps a slot length as sop4py does (0: default; below 2: 2; above 20000: 20000), rounded
/// up to the even number the engine needs.
fn clamp_slot_length(n: i64) -> usize {
    let n = match n {
        i64::MIN..=0 => sop::options::DEFAULT_SLOT_LENGTH as i64,
        1 => 2,
        n if n > 20_000 => 20_000,
        n => n,
    };
    let n = usize::try_from(n).unwrap_or(sop::options::DEFAULT_SLOT_LENGTH);
    n + n % 2
}

#[pymethods]
impl NativeTransaction {
    /// Commits; on failure the transaction is rolled back.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let t = Arc::clone(&self.txn);
        py.detach(move || t.commit())
            .map_err(|e| txn_err("commit", &e))
    }

    /// Rolls back.
    fn rollback(&self, py: Python<'_>) -> PyResult<()> {
        let t = Arc::clone(&self.txn);
        py.detach(move || t.rollback())
            .map_err(|e| txn_err("rollback", &e))
    }

    /// True until commit or rollback.
    fn is_active(&self) -> bool {
        self.txn.is_active()
    }

    /// The transaction id as 32 hex digits.
    fn id(&self) -> String {
        format!("{:032x}", self.txn.id())
    }

    /// 0 NoCheck, 1 ForWriting, 2 ForReading.
    fn mode(&self) -> u8 {
        match self.txn.mode() {
            TransactionMode::NoCheck => 0,
            TransactionMode::ForWriting => 1,
            TransactionMode::ForReading => 2,
        }
    }

    /// Creates a store, or opens it when it exists (its stored options win, as in sop4py).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (name, slot_length, is_unique, description, value_size, leaf_load_balancing, meta))]
    fn new_btree(
        &self,
        py: Python<'_>,
        name: &str,
        slot_length: i64,
        is_unique: bool,
        description: String,
        value_size: u8,
        leaf_load_balancing: bool,
        meta: String,
    ) -> PyResult<NativeBtree> {
        if name.is_empty() {
            return Err(BtreeError::new_err(
                "error creating Btree, details: b-tree name can't be empty string",
            ));
        }
        let t = Arc::clone(&self.txn);
        let exists = py
            .detach(|| t.store_exists(name))
            .map_err(|e| btree_err(&e))?;
        if exists {
            return self.open_btree(py, name);
        }
        let options = StoreOptions {
            slot_length: clamp_slot_length(slot_length),
            is_unique,
            value_placement: match value_size {
                0 => ValuePlacement::InNode,
                1 => ValuePlacement::SeparateBlob,
                _ => ValuePlacement::ActivelyPersisted,
            },
            leaf_load_balancing,
            description,
            comparator: None,
            key_type: Some(KEY_TYPE.to_owned()),
            value_type: Some(meta.clone()),
            ..StoreOptions::default()
        };
        let raw = py
            .detach(|| t.new_raw_btree(name, options))
            .map_err(|e| BtreeError::new_err(format!("error creating Btree, details: {e}")))?;
        self.remember(name, &meta);
        Ok(NativeBtree::new(raw, spec_of(&meta), name.to_owned()))
    }

    /// Opens an existing store.
    fn open_btree(&self, py: Python<'_>, name: &str) -> PyResult<NativeBtree> {
        let t = Arc::clone(&self.txn);
        let (raw, meta) = py
            .detach(|| -> sop::Result<_> {
                let raw = t.open_raw_btree(name)?;
                let meta = self.lookup_meta(&raw, name)?;
                Ok((raw, meta))
            })
            .map_err(|e| match e {
                sop::Error::StoreNotFound(_) => {
                    BtreeError::new_err(format!("error opening Btree ({name}), store not found"))
                }
                e => BtreeError::new_err(format!("error opening Btree ({name}), details: {e}")),
            })?;
        Ok(NativeBtree::new(raw, spec_of(&meta), name.to_owned()))
    }

    /// The metadata JSON of a store opened or created in this transaction.
    fn store_meta(&self, name: &str) -> Option<String> {
        self.known(name)
    }

    /// Removes a store inside this transaction; false when absent.
    fn remove_btree(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        let t = Arc::clone(&self.txn);
        py.detach(|| t.remove_store(name))
            .map_err(|e| btree_err(&e))
    }

    /// Names of the stores as this transaction sees them.
    fn store_names(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let t = Arc::clone(&self.txn);
        py.detach(|| t.stores()).map_err(|e| btree_err(&e))
    }
}
