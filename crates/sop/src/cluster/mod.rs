//! Clustered mode: several processes (each with its own `Database` handle) on one folder.
//!
//! See `docs/adr/0004-clustered-commit-protocol.md`. In short: every process appends to log
//! segments it created itself (segment numbers are claimed by exclusive file creation), and the
//! order of commits is decided by *commit markers*: `commits/<seq>` is a symbolic link naming
//! the location of commit `seq`'s record, created only if absent, so for every `seq` exactly
//! one process wins, whatever the coordinator says. Processes catch up by following the
//! markers. The coordinator (Redis) serializes committers with a fenced lease so they rarely
//! race, and keeps the L2 cache; it holds no source of truth.

mod coordinator;

pub use coordinator::{Coordinator, Lease, LocalCoordinator};
pub(crate) mod claims;
pub(crate) mod markers;
pub(crate) mod procs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::LogFiles;
use crate::log::record::{self, Kind};
use crate::state::CommitRecord;

/// Tuning of clustered mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Time to live of the commit lease (a committer that stalls longer loses it; a process
    /// that dies holding it blocks others at most this long). Default 5 s.
    pub lease_ttl: Duration,
    /// How long a commit waits for the commit lease before [`Error::Timeout`]. Default 30 s.
    pub lease_wait: Duration,
    /// How long opening waits for other processes that are opening or closing. Default 30 s.
    pub open_wait: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            lease_ttl: Duration::from_secs(5),
            lease_wait: Duration::from_secs(30),
            open_wait: Duration::from_secs(30),
        }
    }
}

/// What a clustered `Database` handle keeps.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub coordinator: Arc<dyn Coordinator>,
    pub opts: ClusterOptions,
    /// The database id (namespace in the coordinator).
    pub db_id: String,
    /// Random id of this handle (names its temporary files).
    pub instance: u64,
    pub markers: PathBuf,
    pub claims: PathBuf,
    /// This handle's claimed ranges: logical ids, store ids.
    pub ids: Mutex<(claims::Range, claims::Range)>,
    /// `procs/`: this process's registration and what it last published there.
    pub procs: PathBuf,
    pub registration: Mutex<Option<procs::Registration>>,
    pub published: Mutex<(procs::Info, std::time::Instant)>,
    /// Markers of other processes were applied without syncing the marker folder.
    pub markers_unsynced: std::sync::atomic::AtomicBool,
}

/// File holding the database id.
pub(crate) const ID_FILE: &str = "cluster.id";

/// Reads the database id, creating it when `create` (only while holding the folder alone).
pub(crate) fn database_id(
    storage: &dyn crate::storage::Storage,
    dir: &Path,
    create: bool,
) -> Result<String> {
    let p = dir.join(ID_FILE);
    if storage.exists(&p) {
        let f = storage
            .open(&p, crate::storage::OpenMode::Read)
            .map_err(|e| Error::io(&p, e))?;
        let mut b = [0u8; 32];
        f.read_at(&mut b, 0)
            .map_err(|_| Error::corruption(&p, 0, "database id truncated"))?;
        let id = std::str::from_utf8(&b)
            .ok()
            .filter(|s| s.bytes().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| Error::corruption(&p, 0, "database id is not 32 hex digits"))?;
        return Ok(id.to_owned());
    }
    if !create {
        return Err(Error::corruption(&p, 0, "the database id file is missing"));
    }
    let id = format!("{:032x}", fastrand::u128(..));
    crate::storage::replace_file(storage, dir, "cluster.id.tmp", ID_FILE, id.as_bytes())?;
    Ok(id)
}

/// Reads commit `after + 1` through its marker, if it exists.
pub(crate) fn next_commit(
    files: &LogFiles,
    markers_dir: &Path,
    after: u64,
) -> Result<Option<CommitRecord>> {
    let seq = after + 1;
    let Some(loc) = markers::read(&**files.storage(), markers_dir, seq)? else {
        return Ok(None);
    };
    let rec = files.read(loc)?;
    let bad = |why: String| Error::corruption(files.path(loc.seg), loc.off, why);
    if rec.kind != Kind::Commit {
        return Err(bad(format!(
            "commit marker {seq} names a record that is not a commit"
        )));
    }
    let c = record::decode_commit(rec.payload()).map_err(|e| bad(format!("commit record: {e}")))?;
    if c.seq != seq {
        return Err(bad(format!(
            "commit marker {seq} names the record of commit {}",
            c.seq
        )));
    }
    Ok(Some(c))
}
