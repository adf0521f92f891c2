//! `sop._sop`: the native half of the `sop` Python package (the Python half, in
//! `python/sop/`, gives the sop4py-compatible classes and the pythonic layer).
//!
//! | module | concept |
//! |---|---|
//! | `database` | opening databases (shared per folder), beginning transactions |
//! | `transaction` | commit / rollback, creating and opening stores |
//! | `btree` | item operations, cursor, paging, ranges |
//! | `codec` | order-preserving key encoding, value framing, item ids |
//! | `errors` | exception classes and engine error mapping |

mod btree;
mod codec;
mod database;
mod errors;
mod transaction;

use pyo3::prelude::*;

/// The native module.
#[pymodule]
fn _sop(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<database::NativeDatabase>()?;
    m.add_class::<transaction::NativeTransaction>()?;
    m.add_class::<btree::NativeBtree>()?;
    m.add_class::<btree::NativeRange>()?;
    m.add_function(wrap_pyfunction!(database::open_database, m)?)?;
    m.add_function(wrap_pyfunction!(database::read_options, m)?)?;
    m.add_function(wrap_pyfunction!(database::close_database, m)?)?;
    m.add("ENGINE_VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
