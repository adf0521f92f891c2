//! The checkpoint: the whole catalog and registry as of one commit, so recovery replays only
//! the log after it.
//!
//! ```text
//! checkpoint.sop: magic "SOPCKPT1" | format u32 | payload length u64 | crc u32 | payload
//! payload: seq u64 | log segment u32 | log offset u64 | next_logical u64 |
//!          next_item u64 | next_store u32 | store count varint | store metas |
//!          entry count varint | entries |
//!          in-doubt count varint | prepare payloads (varint length + bytes)
//! ```
//!
//! A checkpoint written in clustered mode has segment 0 (no log position: recovery follows the
//! commit markers from its `seq` instead of scanning a log). It is replaced atomically: written to `checkpoint.tmp`, synced, renamed over
//! `checkpoint.sop`, and the folder synced. The log up to the recorded position is synced
//! before the checkpoint is written, so everything it points at is durable.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::record::{self, ENTRY_MIN_BYTES, get_entry, get_meta, put_entry, put_meta};
use crate::codec::{DecodeError, Reader, Writer};
use crate::error::{Error, Result};
use crate::state::DbState;
use crate::storage::{OpenMode, Storage, replace_file};

const MAGIC: &[u8; 8] = b"SOPCKPT1";
/// The checkpoint file's format version.
pub const FORMAT: u32 = 5;
const HEADER: usize = 24;
/// File name of the checkpoint.
pub const FILE: &str = "checkpoint.sop";
const TMP: &str = "checkpoint.tmp";

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The state.
    pub state: DbState,
    /// Log position right after the last commit the state includes.
    pub seg: u32,
    /// See `seg`.
    pub off: u64,
    /// Prepared transactions without a decision (txn id -> prepare payload).
    pub in_doubt: BTreeMap<u128, Vec<u8>>,
}

/// Writes a checkpoint of `state`, whose last commit ends at log position (`seg`, `off`).
pub fn write_checkpoint(
    storage: &dyn Storage,
    dir: &Path,
    state: &DbState,
    seg: u32,
    off: u64,
    in_doubt: &BTreeMap<u128, Vec<u8>>,
) -> Result<()> {
    write_checkpoint_via(storage, dir, TMP, state, seg, off, in_doubt)
}

/// [`write_checkpoint`] through the temporary file `tmp` (clustered mode: one per process, so
/// processes checkpointing at once do not collide; the last rename wins, and any of them is a
/// valid starting point because commit markers are kept while the cluster runs).
pub fn write_checkpoint_via(
    storage: &dyn Storage,
    dir: &Path,
    tmp: &str,
    state: &DbState,
    seg: u32,
    off: u64,
    in_doubt: &BTreeMap<u128, Vec<u8>>,
) -> Result<()> {
    let mut w = Writer::default();
    w.u64(state.seq);
    w.u32(seg);
    w.u64(off);
    w.u64(state.next_logical);
    w.u64(state.next_item);
    w.u32(state.next_store);
    w.varint(state.stores.len() as u64);
    for m in state.stores.values() {
        put_meta(&mut w, m);
    }
    w.varint(state.registry.len() as u64);
    for (id, e) in state.registry.iter() {
        put_entry(&mut w, id, e);
    }
    w.varint(in_doubt.len() as u64);
    for p in in_doubt.values() {
        w.bytes(p);
    }
    let payload = w.buf;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&record::crc(&payload).to_le_bytes());
    out.extend_from_slice(&payload);

    replace_file(storage, dir, tmp, FILE, &out)
}

/// The commit seq of the checkpoint on disk, if there is one and its header and seq can be
/// read (the rest is not checked: for deciding whether a newer one may replace it).
///
/// # Errors
/// I/O errors other than a missing file.
pub fn peek_seq(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(FILE);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let f = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io(&path, e))?;
    let mut b = [0u8; HEADER + 8];
    if f.read_at(&mut b, 0).is_err() || &b[..8] != MAGIC {
        return Ok(None);
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[HEADER..]);
    Ok(Some(u64::from_le_bytes(n)))
}

/// Reads the checkpoint, if there is one.
pub fn read_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(FILE);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let f = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io(&path, e))?;
    let len = f.len().map_err(|e| Error::io(&path, e))?;
    let len =
        usize::try_from(len).map_err(|_| Error::corruption(&path, 0, "checkpoint too large"))?;
    if len < HEADER {
        return Err(Error::corruption(&path, 0, "checkpoint header truncated"));
    }
    let mut buf = vec![0u8; len];
    f.read_at(&mut buf, 0).map_err(|e| Error::io(&path, e))?;
    if &buf[..8] != MAGIC {
        return Err(Error::corruption(&path, 0, "bad checkpoint magic"));
    }
    let format = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if format != FORMAT {
        return Err(Error::corruption(
            &path,
            8,
            format!(
                "unsupported checkpoint format version {format} (this build reads version \
                 {FORMAT}: the folder was written by another version of sop, or the header is \
                 damaged)"
            ),
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&buf[12..20]);
    let plen = u64::from_le_bytes(n);
    if plen != (len - HEADER) as u64 {
        return Err(Error::corruption(
            &path,
            12,
            "checkpoint length does not match the file size",
        ));
    }
    let crc = u32::from_le_bytes([buf[20], buf[21], buf[22], buf[23]]);
    let payload = &buf[HEADER..];
    if record::crc(payload) != crc {
        return Err(Error::corruption(
            &path,
            HEADER as u64,
            "checkpoint checksum mismatch",
        ));
    }
    decode(payload)
        .map_err(|e| Error::corruption(&path, (HEADER + e.at) as u64, e.what))
        .map(Some)
}

fn decode(payload: &[u8]) -> Result<Checkpoint, DecodeError> {
    let mut r = Reader::new(payload);
    let mut state = DbState::new();
    state.seq = r.u64("seq")?;
    let seg = r.u32("segment")?;
    let off = r.u64("offset")?;
    state.next_logical = r.u64("next logical")?;
    state.next_item = r.u64("next item")?;
    state.next_store = r.u32("next store")?;
    let n = r.count(4, "store count")?;
    for _ in 0..n {
        let m = get_meta(&mut r)?;
        state.stores.insert(m.name.clone(), Arc::new(m));
    }
    let n = r.count(ENTRY_MIN_BYTES, "entry count")?;
    for _ in 0..n {
        let (id, e) = get_entry(&mut r)?;
        state.registry.set(id, e);
    }
    let n = r.count(17, "in-doubt count")?;
    let mut in_doubt = BTreeMap::new();
    for _ in 0..n {
        let p = r.bytes("prepare payload")?;
        let id = super::record::prepared_txn_id(p).ok_or(DecodeError {
            at: r.pos(),
            what: "prepare payload too short or of transaction id 0",
        })?;
        in_doubt.insert(id, p.to_vec());
    }
    r.finish("trailing bytes in checkpoint")?;
    Ok(Checkpoint {
        state,
        seg,
        off,
        in_doubt,
    })
}
