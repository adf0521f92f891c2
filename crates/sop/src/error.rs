//! The error type of the engine.
//!
//! One umbrella [`Error`] with `#[non_exhaustive]` variants. Two families matter to callers:
//!
//! - **retryable**: [`Error::Conflict`] (another transaction changed what this one read or
//!   wrote). [`Error::is_retryable`] says so; the whole transaction can be run again.
//! - **broken**: everything else. [`Error::Corruption`] always names the file and the byte
//!   offset of the bad structure; [`Error::Poisoned`] means an earlier I/O failure stopped the
//!   database from accepting writes (nothing is retried after a failed fsync).

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the engine reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with the file it concerned.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk failed a checksum or a structural check.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset of the structure that failed the check.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The folder exists but does not hold a database.
    #[error("{path} is not a SOP database: {reason}")]
    NotADatabase {
        /// The folder.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The options given do not match the ones the database was created with.
    #[error("incompatible options: {0}")]
    IncompatibleOptions(String),
    /// An option is out of range or otherwise invalid.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Another process (or another handle in this process) holds the database.
    #[error("database {path} is locked: {detail}")]
    Locked {
        /// The database folder.
        path: PathBuf,
        /// Who holds it, when known.
        detail: String,
    },
    /// The transaction already committed or rolled back.
    #[error("transaction has ended (it was committed or rolled back); begin a new one")]
    TransactionClosed,
    /// A write was attempted in a read-only transaction.
    #[error("transaction is not for writing (mode {0}); use TransactionMode::ForWriting")]
    ReadOnlyTransaction(&'static str),
    /// The transaction ran past its maximum commit duration.
    #[error("transaction exceeded its maximum duration of {0:?}; it was rolled back")]
    TransactionTimeout(std::time::Duration),
    /// Another transaction changed what this transaction read or wrote. Retry the transaction.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No store with this name exists.
    #[error("store not found: {0}")]
    StoreNotFound(String),
    /// A store exists with options that differ from the ones requested.
    #[error("store {name} exists with incompatible options: {detail}")]
    IncompatibleStore {
        /// The store.
        name: String,
        /// Which option differs.
        detail: String,
    },
    /// A bad argument to an operation (empty store name, key that does not encode, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A cursor operation needs a current item and there is none.
    #[error("the cursor is not positioned on an item")]
    NoCurrentItem,
    /// A key or value could not be encoded or decoded by the typed layer.
    #[error("encoding error: {0}")]
    Encoding(String),
    /// An external participant of a two-phase commit failed.
    #[error("participant {name}: {detail}")]
    Participant {
        /// The participant's name.
        name: String,
        /// What failed.
        detail: String,
    },
    /// The clustered-mode coordinator (Redis) failed or refused: unreachable, wrong password,
    /// a script error. The database's files are unaffected.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// A bounded wait ran out (the commit lease was not free, the coordinator did not answer).
    /// Retryable: nothing was changed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// An earlier I/O error stopped the database from accepting writes; reopen it.
    #[error("database is poisoned by an earlier I/O error; reopen it: {0}")]
    Poisoned(String),
}

impl Error {
    /// True when running the same transaction again may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict(_) | Error::Timeout(_))
    }

    /// True when the error reports corrupted bytes on disk.
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}
