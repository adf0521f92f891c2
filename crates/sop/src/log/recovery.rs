//! Recovery: rebuild the committed state from the checkpoint and the log after it.
//!
//! Runs on every open and is idempotent. It applies, in order, every valid commit record after
//! the checkpoint position (sequence numbers must follow one another). At the first invalid
//! record:
//! - in a sealed segment (not the last one) it is corruption;
//! - in the last segment it is a torn tail *unless* a valid commit record follows it that was
//!   written when commit `last + 1` was already durable (its `durable` field is at least
//!   `last + 1`): the bad bytes precede that commit's record, so they had been synced, and the
//!   damage is real corruption. A torn tail is truncated away (it held no acknowledged commit).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::checkpoint::Checkpoint;
use super::files::{LogFiles, SEGMENT_HEADER};
use super::record::{self, Kind};
use crate::error::{Error, Result};
use crate::state::DbState;
use crate::storage::OpenMode;

/// What recovery produced.
#[derive(Debug)]
pub struct Recovered {
    /// The committed state.
    pub state: DbState,
    /// Segment to append to.
    pub seg: u32,
    /// Offset to append at.
    pub end: u64,
    /// Commit records replayed.
    pub replayed: u64,
    /// Bytes of torn tail removed.
    pub truncated: u64,
    /// Prepared transactions without a decision: txn id -> prepare payload.
    pub in_doubt: BTreeMap<u128, Vec<u8>>,
}

/// Recovers from `ckpt` (or from nothing) and the segments in `files`.
pub fn recover(files: &Arc<LogFiles>, ckpt: Option<Checkpoint>) -> Result<Recovered> {
    let segs = files.list()?;
    let (mut state, start_seg, start_off, mut in_doubt) = match ckpt {
        Some(c) => (c.state, c.seg, c.off, c.in_doubt),
        None => (
            DbState::new(),
            segs.first().copied().unwrap_or(1),
            SEGMENT_HEADER,
            BTreeMap::new(),
        ),
    };
    let mut out = Recovered {
        state: DbState::new(),
        seg: start_seg,
        end: start_off,
        replayed: 0,
        truncated: 0,
        in_doubt: BTreeMap::new(),
    };
    if !segs.contains(&start_seg) {
        if segs.iter().any(|s| *s > start_seg) || start_off != SEGMENT_HEADER {
            return Err(Error::corruption(
                files.path(start_seg),
                0,
                "log segment named by the checkpoint is missing",
            ));
        }
        // Fresh database (or crash right before the first segment was created).
        files.create(start_seg)?;
        out.state = state;
        out.in_doubt = in_doubt;
        return Ok(out);
    }
    let todo: Vec<u32> = segs.iter().copied().filter(|s| *s >= start_seg).collect();
    for (i, &seg) in todo.iter().enumerate() {
        if i > 0 && seg != todo[i - 1] + 1 {
            return Err(Error::corruption(
                files.path(seg),
                0,
                "a log segment is missing before this one",
            ));
        }
        let last = i + 1 == todo.len();
        let path = files.path(seg);
        let f = files
            .storage()
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| Error::io(&path, e))?;
        let len = f.len().map_err(|e| Error::io(&path, e))?;
        let len =
            usize::try_from(len).map_err(|_| Error::corruption(&path, 0, "segment too large"))?;
        let mut buf = vec![0u8; len];
        f.read_at(&mut buf, 0).map_err(|e| Error::io(&path, e))?;
        if last
            && len < SEGMENT_HEADER as usize
            && (seg != start_seg || start_off == SEGMENT_HEADER)
        {
            // Torn creation of a new segment: its header is synced before anything is written
            // after it, so nothing was ever committed in it.
            files.remove(seg)?;
            files.create(seg)?;
            out.seg = seg;
            out.end = SEGMENT_HEADER;
            break;
        }
        files.check_header(seg, &buf)?;
        let mut pos = if seg == start_seg {
            start_off as usize
        } else {
            SEGMENT_HEADER as usize
        };
        if pos > len {
            return Err(Error::corruption(
                &path,
                pos as u64,
                "checkpoint position lies past the end of the segment",
            ));
        }
        while pos < len {
            match record::check(&buf[pos..]) {
                Ok((kind, payload)) => {
                    if kind == Kind::Commit {
                        let rec = record::decode_commit(payload).map_err(|e| {
                            Error::corruption(&path, pos as u64, format!("commit record: {e}"))
                        })?;
                        if rec.seq != state.seq + 1 {
                            return Err(Error::corruption(
                                &path,
                                pos as u64,
                                format!("commit sequence {} follows {}", rec.seq, state.seq),
                            ));
                        }
                        state.apply(&rec);
                        if rec.txn_id != 0 {
                            in_doubt.remove(&rec.txn_id);
                        }
                        out.replayed += 1;
                    } else if kind == Kind::Prepare || kind == Kind::Abort {
                        let id = record::prepared_txn_id(payload).ok_or_else(|| {
                            Error::corruption(
                                &path,
                                pos as u64,
                                "prepare/abort record too short or of transaction id 0",
                            )
                        })?;
                        if kind == Kind::Prepare {
                            in_doubt.insert(id, payload.to_vec());
                        } else {
                            in_doubt.remove(&id);
                        }
                    }
                    let h = record::header(&buf[pos..]).map_or(0, |h| h.len);
                    pos += record::framed_len(h);
                }
                Err(why) => {
                    if !last {
                        return Err(Error::corruption(&path, pos as u64, why));
                    }
                    if let Some(at) = later_sync(&buf, pos, state.seq) {
                        return Err(Error::corruption(
                            &path,
                            pos as u64,
                            format!("{why}, and a later durable commit follows at offset {at}"),
                        ));
                    }
                    out.truncated = (len - pos) as u64;
                    f.set_len(pos as u64).map_err(|e| Error::io(&path, e))?;
                    f.sync().map_err(|e| Error::io(&path, e))?;
                    break;
                }
            }
        }
        out.seg = seg;
        out.end = pos.min(len) as u64;
        if !last {
            continue;
        }
        // What was read may sit only in the page cache (the previous process died before its
        // sync): make it durable before anything new is acknowledged after it.
        f.sync().map_err(|e| Error::io(&path, e))?;
        files.insert(seg, f)?;
    }
    out.state = state;
    out.in_doubt = in_doubt;
    Ok(out)
}

/// Looks past a bad record for a valid commit record proving the bad bytes were once durable.
fn later_sync(buf: &[u8], bad: usize, last_seq: u64) -> Option<usize> {
    let mut pos = (bad + 8) & !7;
    while pos + record::HEADER <= buf.len() {
        if let Ok((Kind::Commit, payload)) = record::check(&buf[pos..])
            && let Ok(rec) = record::decode_commit(payload)
            && rec.durable > last_seq
        {
            return Some(pos);
        }
        pos += 8;
    }
    None
}
