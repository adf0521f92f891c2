//! Appending to the log: one write per commit, one sync per commit, segment rollover.
//!
//! Invariants:
//! - Bytes are only ever appended at `end`; nothing already written is modified.
//! - After an I/O error the writer is poisoned: every later call fails with
//!   [`Error::Poisoned`], and a failed sync is never retried (the kernel may have dropped the
//!   dirty pages, so a retried fsync could "succeed" without the data).
//! - A new segment is created (and its folder synced) before anything is written to it, and the
//!   previous segment is synced before the switch.
//! - Zero-fill ahead (standalone mode): past `end` the current segment may hold up to
//!   [`ZERO_AHEAD`] bytes of zeros written in advance, so a small commit's `fdatasync` neither
//!   grows the file nor allocates blocks (no file-system journal commit: see ADR 0005). The
//!   zeros are bytes after the last record, like a torn tail, and never lie in a sealed
//!   segment: a segment is cut back to `end` before it is sealed and at a clean close.

use std::sync::Arc;

use super::files::{LogFiles, SEGMENT_HEADER};
use super::record::{self, Kind};
use crate::error::{Error, Result};
use crate::options::Durability;
use crate::registry::Location;
use crate::storage::StorageFile;

/// Bytes of zeros kept written ahead of the append position (standalone mode).
pub const ZERO_AHEAD: u64 = 1 << 20;
/// A write at least this large lets the file grow instead (zeroing ahead of it would add I/O
/// for nothing: its own size change is cheap next to its data).
const ZERO_AHEAD_BELOW: usize = 64 << 10;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The appending end of the log. Owned by the commit path (behind the database's commit lock).
#[derive(Debug)]
pub struct LogWriter {
    files: Arc<LogFiles>,
    seg: u32,
    file: Arc<dyn StorageFile>,
    end: u64,
    segment_bytes: u64,
    durability: Durability,
    /// Highest commit seq made durable (stamped into commit records as `durable`).
    durable_seq: u64,
    /// Bytes appended since the last checkpoint.
    pub since_checkpoint: u64,
    poisoned: Option<String>,
    unsynced: bool,
    /// The current segment holds zeros (or records) up to here; `>= end`.
    zeroed: u64,
    /// Clustered mode: other processes create segments too, so a new segment takes the first
    /// free number.
    shared_namespace: bool,
    /// Offset and length of the last write in the current segment.
    last: (u64, u64),
}

impl LogWriter {
    /// A writer appending to segment `seg` (already open for writing) at `end`.
    pub fn new(
        files: Arc<LogFiles>,
        seg: u32,
        file: Arc<dyn StorageFile>,
        end: u64,
        segment_bytes: u64,
        durability: Durability,
        durable_seq: u64,
    ) -> Self {
        LogWriter {
            files,
            seg,
            file,
            end,
            segment_bytes,
            durability,
            durable_seq,
            since_checkpoint: 0,
            poisoned: None,
            unsynced: false,
            zeroed: end,
            shared_namespace: false,
            last: (end, 0),
        }
    }

    /// Clustered mode: new segments take the first free number (see `LogFiles::create_next`).
    #[must_use]
    pub fn with_shared_namespace(mut self) -> Self {
        self.shared_namespace = true;
        self
    }

    /// The segment files.
    pub fn files(&self) -> &Arc<LogFiles> {
        &self.files
    }

    /// Current segment and append offset.
    #[must_use]
    pub fn position(&self) -> (u32, u64) {
        (self.seg, self.end)
    }

    /// Highest commit seq known durable.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        self.poisoned = Some(e.to_string());
        e
    }

    /// Makes room for `len` bytes: starts a new segment when the current one is full. Returns
    /// where the bytes will go.
    pub fn reserve(&mut self, len: u64) -> Result<(u32, u64)> {
        self.check()?;
        if self.end > SEGMENT_HEADER
            && self.end + len > self.segment_bytes
            && let Err(e) = self.roll()
        {
            return Err(self.poison(e));
        }
        Ok((self.seg, self.end))
    }

    /// Where bytes appended now go in the current segment, past its size if need be (a batch
    /// extending leaf delta chains, whose deltas must share a segment).
    pub fn reserve_here(&mut self) -> Result<(u32, u64)> {
        self.check()?;
        Ok((self.seg, self.end))
    }

    /// The segment in which a commit encoded now may extend leaf delta chains (ADR 0008): the
    /// current one while it is not full (the next write stays in it, see
    /// [`LogWriter::reserve_here`]). `None` once it is full, so a segment grows past its size
    /// by one batch at most; and `None` in clustered mode, where segments are numbered by
    /// several writers.
    #[must_use]
    pub fn chain_segment(&self) -> Option<u32> {
        (!self.shared_namespace && self.end < self.segment_bytes).then_some(self.seg)
    }

    fn roll(&mut self) -> Result<()> {
        self.cut_zero_tail()?;
        if self.unsynced {
            let path = self.files.path(self.seg);
            self.file.sync().map_err(|e| Error::io(path, e))?;
            self.unsynced = false;
        }
        if self.shared_namespace {
            let (seg, file) = self.files.create_next(self.seg)?;
            self.file = file;
            self.seg = seg;
        } else {
            let next = self.seg + 1;
            self.file = self.files.create(next)?;
            self.seg = next;
        }
        self.end = SEGMENT_HEADER;
        self.zeroed = SEGMENT_HEADER;
        self.last = (SEGMENT_HEADER, 0);
        Ok(())
    }

    /// Cuts the zeros written ahead off the current segment (before sealing it, at close).
    fn cut_zero_tail(&mut self) -> Result<()> {
        if self.zeroed > self.end {
            self.file
                .set_len(self.end)
                .map_err(|e| Error::io(self.files.path(self.seg), e))?;
            self.zeroed = self.end;
            self.unsynced = true;
        }
        Ok(())
    }

    /// A clean close: cuts the zeros written ahead and syncs, so the segment ends at its last
    /// record.
    pub fn close(&mut self) -> Result<()> {
        self.check()?;
        if let Err(e) = self.cut_zero_tail() {
            return Err(self.poison(e));
        }
        self.sync_always()
    }

    /// Writes zeros ahead of a small write ending at `upto`, unless they are already there.
    fn zero_ahead(&mut self, upto: u64, len: usize) -> std::io::Result<()> {
        if self.shared_namespace || upto <= self.zeroed.saturating_sub(ZERO_AHEAD / 2) {
            return Ok(());
        }
        if len >= ZERO_AHEAD_BELOW {
            self.zeroed = self.zeroed.max(upto);
            return Ok(());
        }
        let target = (upto + ZERO_AHEAD).min(self.segment_bytes.max(upto));
        let mut at = self.zeroed.max(upto);
        while at < target {
            let n = usize::try_from(target - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.file.write_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        self.zeroed = self.zeroed.max(target);
        Ok(())
    }

    /// Writes `bytes` (whole framed records) at the reserved position; returns its offset.
    pub fn write(&mut self, bytes: &[u8]) -> Result<u64> {
        self.check()?;
        let off = self.end;
        let upto = off + bytes.len() as u64;
        if let Err(e) = self
            .file
            .write_at(bytes, off)
            .and_then(|()| self.zero_ahead(upto, bytes.len()))
        {
            let err = Error::io(self.files.path(self.seg), e);
            return Err(self.poison(err));
        }
        self.end = upto;
        self.since_checkpoint += bytes.len() as u64;
        self.unsynced = true;
        self.last = (off, bytes.len() as u64);
        Ok(off)
    }

    /// When commits are synced, starts writing the bytes of the last [`LogWriter::write`] to
    /// the device without waiting ([`StorageFile::start_sync`]), so the sync that follows
    /// waits less. A hint: a failure changes nothing (the sync reports errors).
    pub fn start_sync(&self) {
        if self.durability == Durability::Immediate && self.last.1 > 0 {
            let _ = self.file.start_sync(self.last.0, self.last.1);
        }
    }

    /// Appends one record (for values written before commit); not synced.
    pub fn append(&mut self, kind: Kind, parts: &[&[u8]]) -> Result<Location> {
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let mut buf = Vec::with_capacity(record::framed_len(payload));
        record::frame(&mut buf, kind, parts);
        let (seg, _) = self.reserve(buf.len() as u64)?;
        let off = self.write(&buf)?;
        Ok(Location {
            seg,
            off,
            len: buf.len() as u32,
        })
    }

    /// Makes everything written durable (per the durability setting); `upto` is the seq of
    /// the last commit written.
    pub fn sync(&mut self, upto: u64) -> Result<()> {
        self.check()?;
        if self.durability == Durability::Immediate {
            if self.unsynced {
                if let Err(e) = self.file.sync() {
                    let err = Error::io(self.files.path(self.seg), e);
                    return Err(self.poison(err));
                }
                self.unsynced = false;
            }
            // Only real syncs count: with `Durability::None` a power cut may drop any unsynced
            // commits, and recovery must then treat the whole unsynced tail as torn.
            self.durable_seq = self.durable_seq.max(upto);
        }
        Ok(())
    }

    /// The current segment file and its number, for a sync done outside the commit lock
    /// (group commit).
    pub fn file_handle(&self) -> (Arc<dyn StorageFile>, u32) {
        (Arc::clone(&self.file), self.seg)
    }

    /// Records that commits up to `seq` were made durable by a sync done outside.
    pub fn mark_durable(&mut self, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
    }

    /// Poisons the writer after a sync failed outside.
    pub fn poison_with(&mut self, e: &Error) {
        self.poisoned = Some(e.to_string());
    }

    /// True when commits are synced (`Durability::Immediate`).
    #[must_use]
    pub fn is_durable(&self) -> bool {
        self.durability == Durability::Immediate
    }

    /// Syncs regardless of the durability setting (before a checkpoint or at close).
    pub fn sync_always(&mut self) -> Result<()> {
        self.check()?;
        if self.unsynced {
            if let Err(e) = self.file.sync() {
                let err = Error::io(self.files.path(self.seg), e);
                return Err(self.poison(err));
            }
            self.unsynced = false;
        }
        Ok(())
    }
}
