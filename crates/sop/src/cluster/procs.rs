//! The running processes of a cluster and how far back each may still read.
//!
//! ```text
//! <db>/procs/<instance>.lock   held (flock, exclusive) by the live process for its whole life
//! <db>/procs/<instance>.info   "horizon=<seq> writer=<segment>", replaced (rename) as it moves
//! ```
//!
//! Invariants:
//! - a process registers (lock + `horizon=0`) before it reads the checkpoint, so no segment it
//!   may need is reclaimed while it starts;
//! - `horizon` is a lower bound: the process holds no snapshot older than it and will take none
//!   (snapshots only move forward), so a stale file is merely conservative;
//! - `writer` names the segment the process appends to; it is published before the first
//!   commit that puts anything in that segment;
//! - a process whose lock file can be locked by someone else is dead: its files are removed and
//!   it constrains nothing.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage};

/// Folder of the process files, inside the database folder.
pub const DIR: &str = "procs";

/// What a live process publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Info {
    /// No snapshot older than this commit seq is held or will be taken.
    pub horizon: u64,
    /// The segment it appends to (0: none yet).
    pub writer: u32,
}

/// A live registration: dropping it releases the lock (the process is then seen as gone).
pub struct Registration {
    _lock: Box<dyn Send + Sync + fmt::Debug>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}

fn lock_path(dir: &Path, instance: u64) -> PathBuf {
    dir.join(format!("{instance:016x}.lock"))
}

fn info_path(dir: &Path, instance: u64) -> PathBuf {
    dir.join(format!("{instance:016x}.info"))
}

/// Registers `instance` as live, with horizon 0 (it may read anything).
///
/// # Errors
/// I/O errors.
pub fn register(storage: &dyn Storage, dir: &Path, instance: u64) -> Result<Registration> {
    storage.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let p = lock_path(dir, instance);
    let lock = storage.lock_exclusive(&p).map_err(|e| Error::io(&p, e))?;
    publish(storage, dir, instance, Info::default())?;
    Ok(Registration { _lock: lock })
}

/// Publishes `info` (atomic rename; not synced: after a crash the process is dead anyway).
///
/// # Errors
/// I/O errors.
pub fn publish(storage: &dyn Storage, dir: &Path, instance: u64, info: Info) -> Result<()> {
    let tmp = dir.join(format!("{instance:016x}.tmp"));
    if storage.exists(&tmp) {
        storage.remove(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let f = storage
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io(&tmp, e))?;
    let text = format!("horizon={} writer={}", info.horizon, info.writer);
    f.write_at(text.as_bytes(), 0)
        .map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    let dst = info_path(dir, instance);
    storage.rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))
}

fn parse(text: &str) -> Option<Info> {
    let mut it = text.split(' ');
    let horizon = it.next()?.strip_prefix("horizon=")?.parse().ok()?;
    let writer = it.next()?.strip_prefix("writer=")?.parse().ok()?;
    it.next().is_none().then_some(Info { horizon, writer })
}

fn read_info(storage: &dyn Storage, p: &Path) -> Option<Info> {
    let f = storage.open(p, OpenMode::Read).ok()?;
    let len = usize::try_from(f.len().ok()?).ok()?.min(64);
    let mut b = vec![0u8; len];
    f.read_at(&mut b, 0).ok()?;
    parse(std::str::from_utf8(&b).ok()?)
}

/// The live processes' published infos (removing the files of dead ones). A live process
/// whose info cannot be read counts as horizon 0 with an unknown writer (`None`): the caller
/// must then reclaim nothing.
///
/// # Errors
/// I/O errors listing the folder.
pub fn live(storage: &dyn Storage, dir: &Path) -> Result<Vec<Option<Info>>> {
    if !storage.exists(dir) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in storage.list(dir).map_err(|e| Error::io(dir, e))? {
        let Some(id) = name
            .strip_suffix(".lock")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        let lp = lock_path(dir, id);
        match storage.lock_exclusive(&lp) {
            Ok(guard) => {
                // Nobody holds it: that process is gone.
                for p in [info_path(dir, id), lp.clone()] {
                    if storage.exists(&p) {
                        let _ = storage.remove(&p);
                    }
                }
                drop(guard);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                out.push(read_info(storage, &info_path(dir, id)));
            }
            Err(e) => return Err(Error::io(&lp, e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sees_registered_processes_and_forgets_dead_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = crate::storage::FileStorage::new();
        let d = dir.path().join(DIR);
        let a = register(&st, &d, 1).expect("register");
        let b = register(&st, &d, 2).expect("register");
        publish(
            &st,
            &d,
            2,
            Info {
                horizon: 9,
                writer: 4,
            },
        )
        .expect("publish");
        let mut l = live(&st, &d).expect("live");
        l.sort_by_key(|i| i.map(|i| i.horizon));
        assert_eq!(
            l,
            vec![
                Some(Info::default()),
                Some(Info {
                    horizon: 9,
                    writer: 4
                })
            ]
        );
        drop(b);
        assert_eq!(live(&st, &d).expect("live"), vec![Some(Info::default())]);
        assert!(!st.exists(&info_path(&d, 2)));
        drop(a);
        assert!(live(&st, &d).expect("live").is_empty());
        assert_eq!(parse("horizon=1 writer=x"), None);
    }
}
