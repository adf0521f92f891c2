//! # SOP: an embedded transactional B-tree storage engine
//!
//! Named, ordered B-tree stores of key/value items inside one database folder, changed by ACID
//! transactions, embedded in the application (no server). A re-make of SOP V2 in Rust.
//!
//! ```
//! # fn main() -> sop::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| sop::Error::InvalidArgument(e.to_string()))?;
//! use sop::{Database, DatabaseOptions, StoreOptions, TransactionMode};
//!
//! let db = Database::open(DatabaseOptions::new(dir.path()))?;
//! let tx = db.begin(TransactionMode::ForWriting)?;
//! let fruit = tx.new_btree::<String, u32>("fruit", StoreOptions::default())?;
//! fruit.add(&"apple".into(), &3)?;
//! fruit.add(&"pear".into(), &5)?;
//! tx.commit()?;
//!
//! let tx = db.begin(TransactionMode::ForReading)?;
//! let fruit = tx.open_btree::<String, u32>("fruit")?;
//! assert_eq!(fruit.get(&"pear".into())?, Some(5));
//! let all: Vec<_> = fruit.iter().map(|i| i.map(|i| i.key)).collect::<sop::Result<_>>()?;
//! assert_eq!(all, ["apple", "pear"]);
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for the modules, the data flow and the guarantees of each
//! transaction mode, and `docs/FORMAT.md` for the on-disk format.

pub mod btree;
pub mod cache;
pub mod cluster;
pub mod codec;
mod db;
pub mod error;
mod fasthash;
pub mod log;
pub mod options;
pub mod registry;
pub mod state;
pub mod storage;
mod store;
mod txn;
pub mod types;

pub use btree::ItemId;
pub use cluster::{ClusterOptions, Coordinator, Lease, LocalCoordinator};
pub use db::{Database, VerifyReport};
pub use error::{Error, Result};
pub use options::{
    DatabaseOptions, DatabaseType, Durability, StoreOptions, TransactionMode, ValuePlacement,
};
pub use store::{Btree, Range, RawBtree, RawItem, RawRange, StoreItem};
pub use txn::{InDoubt, Participant, StoreInfo, Transaction};
pub use types::{Desc, Key, Value};
