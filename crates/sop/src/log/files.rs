//! Segment files: naming, header, and reading one record by location.
//!
//! ```text
//! segment header (32 bytes): magic "SOPLOG01" | format u32 | segment id u32 | 12 zero bytes | crc u32
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::record::{self, Kind};
use crate::error::{Error, Result};
use crate::registry::Location;
use crate::storage::{OpenMode, Storage, StorageFile};

/// Bytes of the segment header; the first record starts here.
pub const SEGMENT_HEADER: u64 = 32;
const MAGIC: &[u8; 8] = b"SOPLOG01";
const FORMAT: u32 = 5;

/// A record read back from the log.
#[derive(Debug)]
pub struct RecordBuf {
    buf: Vec<u8>,
    len: usize,
    /// Its kind.
    pub kind: Kind,
}

impl RecordBuf {
    /// Checks a whole framed record (from a cache) and wraps it.
    ///
    /// # Errors
    /// What failed the check (length, kind, checksum).
    pub fn from_framed(buf: Vec<u8>) -> Result<RecordBuf, &'static str> {
        let (kind, payload) = record::check(&buf)?;
        let len = payload.len();
        Ok(RecordBuf { buf, len, kind })
    }

    /// The whole framed record.
    #[must_use]
    pub fn framed(&self) -> &[u8] {
        &self.buf
    }

    /// The payload bytes.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buf[record::HEADER..record::HEADER + self.len]
    }
}

/// The segment files of one database: opens them lazily and reads records.
#[derive(Debug)]
pub struct LogFiles {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    open: RwLock<HashMap<u32, Arc<dyn StorageFile>>>,
}

impl LogFiles {
    /// The log folder `dir` on `storage`.
    pub fn new(storage: Arc<dyn Storage>, dir: PathBuf) -> Self {
        LogFiles {
            storage,
            dir,
            open: RwLock::new(HashMap::new()),
        }
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The log folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a segment.
    #[must_use]
    pub fn path(&self, seg: u32) -> PathBuf {
        self.dir.join(format!("{seg:010}.seg"))
    }

    /// Segment ids present, ascending.
    pub fn list(&self) -> Result<Vec<u32>> {
        let names = self
            .storage
            .list(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let mut segs: Vec<u32> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".seg")?.parse().ok())
            .collect();
        segs.sort_unstable();
        Ok(segs)
    }

    /// The open file of a segment (opened read-only on first use).
    pub fn file(&self, seg: u32) -> Result<Arc<dyn StorageFile>> {
        if let Some(f) = self.open.read().map_err(poisoned)?.get(&seg) {
            return Ok(Arc::clone(f));
        }
        let path = self.path(seg);
        let f = self
            .storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io(&path, e))?;
        let mut open = self.open.write().map_err(poisoned)?;
        Ok(Arc::clone(open.entry(seg).or_insert(f)))
    }

    /// Registers a file opened for writing so readers share it.
    pub fn insert(&self, seg: u32, f: Arc<dyn StorageFile>) -> Result<()> {
        self.open.write().map_err(poisoned)?.insert(seg, f);
        Ok(())
    }

    /// Creates a new segment with its header, durably (file and folder synced).
    pub fn create(&self, seg: u32) -> Result<Arc<dyn StorageFile>> {
        let path = self.path(seg);
        let f = self
            .storage
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io(&path, e))?;
        self.init(seg, f)
    }

    /// Creates a segment numbered above `after` and above every existing segment (clustered
    /// mode: segment numbers are claimed by exclusive creation, so each segment has one
    /// writer; a number freed by reclamation is never taken again, since the highest segment
    /// is never reclaimed).
    pub fn create_next(&self, after: u32) -> Result<(u32, Arc<dyn StorageFile>)> {
        let highest = self.list()?.last().copied().unwrap_or(0);
        let mut seg = after.max(highest) + 1;
        loop {
            let path = self.path(seg);
            match self.storage.open(&path, OpenMode::CreateNew) {
                Ok(f) => return Ok((seg, self.init(seg, f)?)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    seg = seg.checked_add(1).ok_or_else(|| {
                        Error::InvalidArgument("segment numbers exhausted".into())
                    })?;
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }

    fn init(&self, seg: u32, f: Arc<dyn StorageFile>) -> Result<Arc<dyn StorageFile>> {
        let path = self.path(seg);
        let mut h = [0u8; SEGMENT_HEADER as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        h[12..16].copy_from_slice(&seg.to_le_bytes());
        let crc = record::crc(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        f.write_at(&h, 0).map_err(|e| Error::io(&path, e))?;
        f.sync().map_err(|e| Error::io(&path, e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        self.insert(seg, Arc::clone(&f))?;
        Ok(f)
    }

    /// Checks a segment header read from disk.
    pub fn check_header(&self, seg: u32, h: &[u8]) -> Result<()> {
        let bad = |why: &str| Err(Error::corruption(self.path(seg), 0, why));
        if h.len() < SEGMENT_HEADER as usize {
            return bad("segment header truncated");
        }
        if &h[..8] != MAGIC {
            return bad("bad segment magic");
        }
        let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
        if record::crc(&h[..28]) != crc {
            return bad("segment header checksum mismatch");
        }
        let format = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if format != FORMAT {
            return Err(Error::corruption(
                self.path(seg),
                8,
                format!(
                    "unsupported segment format version {format} (this build reads version \
                     {FORMAT}: the folder was written by another version of sop, or the header \
                     is damaged)"
                ),
            ));
        }
        if u32::from_le_bytes([h[12], h[13], h[14], h[15]]) != seg {
            return bad("segment id in header does not match the file name");
        }
        Ok(())
    }

    /// Reads and validates the record at `loc`.
    pub fn read(&self, loc: Location) -> Result<RecordBuf> {
        let f = self.file(loc.seg)?;
        let mut buf = vec![0u8; loc.len as usize];
        f.read_at(&mut buf, loc.off).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corruption(
                    self.path(loc.seg),
                    loc.off,
                    "record lies past the end of the segment",
                )
            } else {
                Error::io(self.path(loc.seg), e)
            }
        })?;
        let (kind, payload) = record::check(&buf)
            .map_err(|why| Error::corruption(self.path(loc.seg), loc.off, why))?;
        let len = payload.len();
        Ok(RecordBuf { buf, len, kind })
    }

    /// Closes a segment's cached handle (it is reopened on the next read). Clustered mode:
    /// another process may delete a garbage segment, and an open handle would keep its space.
    pub fn forget(&self, seg: u32) -> Result<()> {
        self.open.write().map_err(poisoned)?.remove(&seg);
        Ok(())
    }

    /// Closes and deletes a segment.
    pub fn remove(&self, seg: u32) -> Result<()> {
        self.open.write().map_err(poisoned)?.remove(&seg);
        let path = self.path(seg);
        self.storage.remove(&path).map_err(|e| Error::io(&path, e))
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Poisoned("a thread panicked while holding the segment table".into())
}
