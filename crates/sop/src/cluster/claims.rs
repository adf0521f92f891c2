//! Id claims: disjoint ranges of logical ids and store ids for each process of a cluster.
//!
//! ```text
//! <db>/claims/L<chunk>   claims logical ids [chunk * 65536, (chunk + 1) * 65536)
//! <db>/claims/S<chunk>   claims store ids   [chunk * 16, (chunk + 1) * 16)
//! ```
//!
//! Invariants:
//! - a claim file is created exclusively (`O_EXCL`), so two live processes never allocate the
//!   same id, whatever the coordinator says;
//! - a chunk is claimed above the committed high-water mark, so no committed id is reused;
//! - claim files are deleted only by a process holding the database alone (no other process
//!   can be allocating then).

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage};

/// Folder of the claims, inside the database folder.
pub const DIR: &str = "claims";
/// Logical ids per chunk.
pub const LOGICAL_CHUNK: u64 = 1 << 16;
/// Store ids per chunk.
pub const STORE_CHUNK: u64 = 16;

/// Which id space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Logical node and blob ids.
    Logical,
    /// Store ids.
    Store,
}

impl Space {
    fn prefix(self) -> char {
        match self {
            Space::Logical => 'L',
            Space::Store => 'S',
        }
    }

    /// Ids per chunk.
    #[must_use]
    pub fn chunk(self) -> u64 {
        match self {
            Space::Logical => LOGICAL_CHUNK,
            Space::Store => STORE_CHUNK,
        }
    }

    /// Largest id allowed (exclusive).
    fn limit(self) -> u64 {
        match self {
            Space::Logical => crate::registry::MAX_LOGICAL,
            Space::Store => u64::from(u32::MAX),
        }
    }
}

/// One process's current range of an id space.
#[derive(Debug, Default, Clone, Copy)]
pub struct Range {
    /// Next id to hand out.
    pub next: u64,
    /// End of the claimed range (exclusive).
    pub end: u64,
}

fn path(dir: &Path, space: Space, chunk: u64) -> PathBuf {
    dir.join(format!("{}{chunk:012}", space.prefix()))
}

/// Claims the first free chunk whose ids are all at least `floor`; returns its range.
///
/// # Errors
/// I/O errors; [`Error::InvalidArgument`] when the id space is exhausted.
pub fn claim(storage: &dyn Storage, dir: &Path, space: Space, floor: u64) -> Result<Range> {
    storage.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut chunk = floor.div_ceil(space.chunk());
    loop {
        let start = chunk * space.chunk();
        if start + space.chunk() > space.limit() {
            return Err(Error::InvalidArgument(format!(
                "{space:?} id space exhausted"
            )));
        }
        let p = path(dir, space, chunk);
        match storage.open(&p, OpenMode::CreateNew) {
            Ok(_) => {
                storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
                return Ok(Range {
                    next: start,
                    end: start + space.chunk(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => chunk += 1,
            Err(e) => return Err(Error::io(p, e)),
        }
    }
}

/// Deletes every claim (only while holding the database alone).
///
/// # Errors
/// I/O errors.
pub fn remove_all(storage: &dyn Storage, dir: &Path) -> Result<()> {
    if !storage.exists(dir) {
        return Ok(());
    }
    for name in storage.list(dir).map_err(|e| Error::io(dir, e))? {
        let p = dir.join(&name);
        storage.remove(&p).map_err(|e| Error::io(&p, e))?;
    }
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_disjoint_and_above_the_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = crate::storage::FileStorage::new();
        let a = claim(&st, dir.path(), Space::Logical, 10).expect("claim");
        assert_eq!((a.next, a.end), (LOGICAL_CHUNK, 2 * LOGICAL_CHUNK));
        let b = claim(&st, dir.path(), Space::Logical, 10).expect("claim");
        assert_eq!(b.next, 2 * LOGICAL_CHUNK);
        let s = claim(&st, dir.path(), Space::Store, 0).expect("claim");
        assert_eq!((s.next, s.end), (0, STORE_CHUNK));
        remove_all(&st, dir.path()).expect("remove");
        let c = claim(&st, dir.path(), Space::Logical, 10).expect("claim");
        assert_eq!(c.next, LOGICAL_CHUNK);
    }
}
