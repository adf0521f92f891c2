//! Commit markers: the decision of which record is commit `seq`.
//!
//! ```text
//! <db>/commits/<seq, 20 digits>  ->  "<segment>.<offset>.<length>"   (a symbolic link)
//! ```
//!
//! Invariants:
//! - a marker is created only if absent (`symlink(2)` fails when the name exists), so for each
//!   `seq` exactly one commit record wins, even when two processes both believe they hold the
//!   commit lease; the loser gets [`crate::Error::Conflict`] and its record stays unreferenced;
//! - a marker is created only after the record it names is durable, and the commit is
//!   acknowledged only after the folder holding the marker is synced;
//! - markers are read in `seq` order: commit `seq` is applied only after `seq - 1`;
//! - markers up to a checkpoint's `seq` are deleted only by a process that holds the database
//!   alone (the exclusive lock), so a running process never misses one.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::registry::Location;
use crate::storage::Storage;

/// Folder of the markers, inside the database folder.
pub const DIR: &str = "commits";

/// Path of the marker of commit `seq`.
#[must_use]
pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}"))
}

fn target(loc: Location) -> String {
    format!("{}.{}.{}", loc.seg, loc.off, loc.len)
}

fn parse(t: &str) -> Option<Location> {
    let mut it = t.split('.');
    let seg = it.next()?.parse().ok()?;
    let off = it.next()?.parse().ok()?;
    let len = it.next()?.parse().ok()?;
    if it.next().is_some() || len == 0 {
        return None;
    }
    Some(Location { seg, off, len })
}

/// Creates the marker of commit `seq`; `Ok(false)` when another process created it first.
///
/// # Errors
/// I/O errors other than "already exists".
pub fn create(storage: &dyn Storage, dir: &Path, seq: u64, loc: Location) -> Result<bool> {
    let p = path(dir, seq);
    match storage.create_link(&p, &target(loc)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// The location of commit `seq`'s record, if its marker exists.
///
/// # Errors
/// I/O errors; [`Error::Corruption`] for a marker that does not name a location.
pub fn read(storage: &dyn Storage, dir: &Path, seq: u64) -> Result<Option<Location>> {
    let p = path(dir, seq);
    match storage.read_link(&p) {
        Ok(t) => parse(&t)
            .map(Some)
            .ok_or_else(|| Error::corruption(p, 0, format!("bad commit marker target {t:?}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Deletes the markers of commits up to `seq` (only while holding the database alone).
///
/// # Errors
/// I/O errors.
pub fn remove_upto(storage: &dyn Storage, dir: &Path, seq: u64) -> Result<usize> {
    if !storage.exists(dir) {
        return Ok(0);
    }
    let mut n = 0;
    for name in storage.list(dir).map_err(|e| Error::io(dir, e))? {
        if let Ok(s) = name.parse::<u64>()
            && s <= seq
        {
            let p = dir.join(&name);
            storage.remove(&p).map_err(|e| Error::io(&p, e))?;
            n += 1;
        }
    }
    if n > 0 {
        storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_round_trip_and_bad_targets() {
        let l = Location {
            seg: 7,
            off: 4096,
            len: 96,
        };
        assert_eq!(parse(&target(l)), Some(l));
        for bad in ["", "1.2", "1.2.3.4", "a.2.3", "1.2.0", "1.-2.3"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_marker_is_created_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = crate::storage::FileStorage::new();
        let l = Location {
            seg: 1,
            off: 32,
            len: 64,
        };
        assert_eq!(read(&st, dir.path(), 5).expect("read"), None);
        assert!(create(&st, dir.path(), 5, l).expect("create"));
        let other = Location { seg: 2, ..l };
        assert!(!create(&st, dir.path(), 5, other).expect("second create loses"));
        assert_eq!(read(&st, dir.path(), 5).expect("read"), Some(l));
        assert_eq!(remove_upto(&st, dir.path(), 5).expect("remove"), 1);
        assert_eq!(read(&st, dir.path(), 5).expect("read"), None);
    }
}
