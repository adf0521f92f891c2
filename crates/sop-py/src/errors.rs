//! The Python exception classes and the mapping of engine errors onto them.
//!
//! The hierarchy follows sop4py: `TransactionError(Exception)`, with `BtreeError` and
//! `InvalidTransactionStateError` below it. `ConflictError` (a `TransactionError`) marks the
//! retryable failures; `DatabaseError` is raised by database-level calls (sop4py raises a plain
//! `Exception` there, and `DatabaseError` is one). `RedisConnectionError` (a `DatabaseError`)
//! is raised when a clustered database cannot open because Redis is unreachable, too slow or
//! refuses the password.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    sop,
    TransactionError,
    PyException,
    "A transaction failed (begin, commit, rollback, or use after it ended)."
);
create_exception!(
    sop,
    InvalidTransactionStateError,
    TransactionError,
    "The transaction is in a state that does not allow the call."
);
create_exception!(
    sop,
    BtreeError,
    TransactionError,
    "A B-tree call failed; the message names the cause."
);
create_exception!(
    sop,
    ConflictError,
    TransactionError,
    "Another transaction committed a conflicting change first; run the transaction again."
);
create_exception!(
    sop,
    DatabaseError,
    PyException,
    "A database-level call failed (open, options, remove_btree)."
);

create_exception!(
    sop,
    RedisConnectionError,
    DatabaseError,
    "Clustered mode could not reach Redis (unreachable, no answer in time, or wrong password)."
);

/// An engine error raised by a B-tree call.
pub fn btree_err(e: &sop::Error) -> PyErr {
    if e.is_retryable() {
        return ConflictError::new_err(e.to_string());
    }
    BtreeError::new_err(e.to_string())
}

/// An engine error raised by `commit` / `rollback` / `begin`.
pub fn txn_err(what: &str, e: &sop::Error) -> PyErr {
    let msg = format!("Transaction {what} failed, details {e}");
    if e.is_retryable() {
        ConflictError::new_err(msg)
    } else {
        TransactionError::new_err(msg)
    }
}

/// An engine error raised by a database-level call.
pub fn db_err(e: &sop::Error) -> PyErr {
    DatabaseError::new_err(e.to_string())
}

/// An engine error raised while opening a database: coordinator failures (Redis unreachable,
/// wrong password, no answer in time) become `RedisConnectionError`. (A `Timeout` at open is
/// the folder's open lock held by other processes, not Redis: a `DatabaseError`.)
pub fn open_err(e: &sop::Error) -> PyErr {
    match e {
        sop::Error::Coordinator(_) => {
            RedisConnectionError::new_err(format!("cannot open the clustered database: {e}"))
        }
        e => db_err(e),
    }
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TransactionError", py.get_type::<TransactionError>())?;
    m.add(
        "InvalidTransactionStateError",
        py.get_type::<InvalidTransactionStateError>(),
    )?;
    m.add("BtreeError", py.get_type::<BtreeError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("DatabaseError", py.get_type::<DatabaseError>())?;
    m.add(
        "RedisConnectionError",
        py.get_type::<RedisConnectionError>(),
    )?;
    Ok(())
}
