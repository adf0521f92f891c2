//! Log records: the framing of everything appended to a segment, and the payload encodings.
//!
//! ```text
//! record (8-byte aligned):
//! +--------+--------+------+---------+-----------------+---------+
//! | crc u32| len u32| kind | 3 bytes | payload (len)   | pad to 8|
//! +--------+--------+------+---------+-----------------+---------+
//!   crc = CRC-32C of bytes 4..12 and the payload
//! image payload (kind 1 node, 2 blob, 6 leaf delta): store | logical id | version (varints) | body
//! commit payload (kind 3): see `encode_commit`
//! prepare payload (kind 4): see `txn::prepared`; abort payload (kind 5): txn id u128
//! ```
//!
//! Invariants: a record is valid only if its CRC matches; `len` is bounded by the bytes left
//! in the segment before anything is allocated; readers check that an image's store, logical
//! id and version are the ones the registry expects.

use crate::codec::{Crc32c, DecodeError, Reader, Writer, crc32c};
use crate::options::StoreOptions;
use crate::registry::{Chain, Entry, Location, LogicalId};
use crate::state::{CommitRecord, StoreMeta, StoreOp, WrittenKeys};

/// Bytes of the record header.
pub const HEADER: usize = 12;
/// Largest payload accepted (bounded before allocation).
pub const MAX_PAYLOAD: usize = 1 << 30;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A B-tree node image.
    Node = 1,
    /// A value blob.
    Blob = 2,
    /// A commit record.
    Commit = 3,
    /// A prepared transaction (phase 1 of a two-phase commit).
    Prepare = 4,
    /// The abort of a prepared transaction.
    Abort = 5,
    /// A leaf delta: the edit from a full leaf image (the registry entry's base) to this
    /// version (`btree::delta`).
    NodeDelta = 6,
}

/// The transaction a prepare or abort record's payload (or an in-doubt entry of a checkpoint)
/// is about: the payload starts with its id, little-endian, and a transaction's id is never
/// 0 (a commit record's 0 decides nothing). `None` when the payload is too short or says 0.
#[must_use]
pub fn prepared_txn_id(payload: &[u8]) -> Option<u128> {
    Reader::new(payload)
        .u128("txn id")
        .ok()
        .filter(|id| *id != 0)
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Node),
            2 => Some(Kind::Blob),
            3 => Some(Kind::Commit),
            4 => Some(Kind::Prepare),
            5 => Some(Kind::Abort),
            6 => Some(Kind::NodeDelta),
            _ => None,
        }
    }
}

/// Total on-disk size of a record with this payload length (header + payload + padding).
#[must_use]
pub fn framed_len(payload: usize) -> usize {
    (HEADER + payload + 7) & !7
}

/// Appends a framed record made of `parts` (concatenated payload) to `out`.
pub fn frame(out: &mut Vec<u8>, kind: Kind, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[kind as u8, 0, 0, 0]);
    for p in parts {
        out.extend_from_slice(p);
    }
    let mut crc = Crc32c::new();
    crc.update(&out[start + 4..]);
    let crc = crc.finish();
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + framed_len(len), 0);
}

/// Appends a framed record whose payload `fill` writes directly into `out` (no intermediate
/// buffer).
pub fn frame_with(out: &mut Vec<u8>, kind: Kind, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    fill(out);
    let len = out.len() - start - HEADER;
    out[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 8] = kind as u8;
    let mut crc = Crc32c::new();
    crc.update(&out[start + 4..]);
    let crc = crc.finish();
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + framed_len(len), 0);
}

/// Parsed header: kind and payload length.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Stored CRC.
    pub crc: u32,
    /// Payload length.
    pub len: usize,
    /// Kind byte (validated by [`check`]).
    pub kind: u8,
}

/// Reads a header from the first [`HEADER`] bytes.
#[must_use]
pub fn header(b: &[u8]) -> Option<Header> {
    let b: &[u8; HEADER] = b.get(..HEADER)?.try_into().ok()?;
    Some(Header {
        crc: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize,
        kind: b[8],
    })
}

/// Validates a whole framed record in `rec` (at least `framed_len`): returns kind and payload.
pub fn check(rec: &[u8]) -> Result<(Kind, &[u8]), &'static str> {
    let h = header(rec).ok_or("record header truncated")?;
    if h.len > MAX_PAYLOAD || HEADER + h.len > rec.len() {
        return Err("record length out of bounds");
    }
    let kind = Kind::from_u8(h.kind).ok_or("unknown record kind")?;
    let mut crc = Crc32c::new();
    crc.update(&rec[4..HEADER + h.len]);
    if crc.finish() != h.crc {
        return Err("record checksum mismatch");
    }
    Ok((kind, &rec[HEADER..HEADER + h.len]))
}

/// The fixed prefix of an image payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageId {
    /// Owning store.
    pub store: u32,
    /// Logical id.
    pub logical: LogicalId,
    /// Version.
    pub version: u64,
}

/// The most bytes an image prefix takes: store, logical id and version as varints.
const IMAGE_PREFIX_MAX: usize = 5 + 10 + 10;
/// The most bytes a location takes: segment, offset and length as varints.
const LOCATION_MAX: usize = 5 + 10 + 5;
/// The most bytes a leaf delta's prefix takes: the image prefix and the location of the
/// version it applies to.
const DELTA_PREFIX_MAX: usize = IMAGE_PREFIX_MAX + LOCATION_MAX;

/// A record's prefix (an image's, or a leaf delta's), encoded on the stack.
#[derive(Debug, Clone, Copy)]
pub struct Prefix {
    buf: [u8; DELTA_PREFIX_MAX],
    len: usize,
}

impl Prefix {
    fn new() -> Prefix {
        Prefix {
            buf: [0; DELTA_PREFIX_MAX],
            len: 0,
        }
    }

    /// LEB128, as [`Writer::varint`]; the callers stay within `DELTA_PREFIX_MAX`.
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                self.buf[self.len] = b;
                self.len += 1;
                return;
            }
            self.buf[self.len] = b | 0x80;
            self.len += 1;
        }
    }

    fn location(&mut self, l: &Location) {
        self.varint(u64::from(l.seg));
        self.varint(l.off);
        self.varint(u64::from(l.len));
    }

    /// The encoded bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Encodes the image prefix.
#[must_use]
pub fn image_prefix(id: ImageId) -> Prefix {
    let mut p = Prefix::new();
    p.varint(u64::from(id.store));
    p.varint(id.logical);
    p.varint(id.version);
    p
}

fn get_u32(r: &mut Reader<'_>, what: &'static str) -> Result<u32, DecodeError> {
    let at = r.pos();
    u32::try_from(r.varint(what)?).map_err(|_| DecodeError { at, what })
}

/// Reads what [`image_prefix`] wrote.
fn get_image_id(r: &mut Reader<'_>) -> Result<ImageId, DecodeError> {
    Ok(ImageId {
        store: get_u32(r, "image store")?,
        logical: r.varint("image logical id")?,
        version: r.varint("image version")?,
    })
}

/// Splits an image payload into its id and body.
pub fn parse_image(payload: &[u8]) -> Result<(ImageId, &[u8]), DecodeError> {
    let mut r = Reader::new(payload);
    let id = get_image_id(&mut r)?;
    Ok((id, &payload[r.pos()..]))
}

fn put_location(w: &mut Writer, l: &Location) {
    w.varint(u64::from(l.seg));
    w.varint(l.off);
    w.varint(u64::from(l.len));
}

fn get_location(r: &mut Reader<'_>) -> Result<Location, DecodeError> {
    Ok(Location {
        seg: get_u32(r, "segment")?,
        off: r.varint("offset")?,
        len: get_u32(r, "length")?,
    })
}

/// Encodes a registry entry (id included): logical id | store | version | location | base
/// location (varints) | chain depth u8 | chain bytes varint.
pub fn put_entry(w: &mut Writer, id: LogicalId, e: &Entry) {
    w.varint(id);
    w.varint(u64::from(e.store));
    w.varint(e.version);
    put_location(w, &e.loc);
    put_location(w, &e.base);
    w.u8(e.chain.depth());
    w.varint(u64::from(e.chain.bytes()));
}

/// Decodes what [`put_entry`] wrote.
pub fn get_entry(r: &mut Reader<'_>) -> Result<(LogicalId, Entry), DecodeError> {
    let id = r.varint("logical id")?;
    if id >= crate::registry::MAX_LOGICAL {
        return Err(DecodeError {
            at: r.pos(),
            what: "logical id out of range",
        });
    }
    let store = get_u32(r, "entry store")?;
    let version = r.varint("entry version")?;
    let loc = get_location(r)?;
    let base = get_location(r)?;
    let depth = r.u8("chain depth")?;
    let bytes = get_u32(r, "chain bytes")?;
    let chain = Chain::new(depth, bytes)
        .filter(|c| (c.depth() == 0) == (base.len == 0))
        .ok_or(DecodeError {
            at: r.pos(),
            what: "leaf delta chain out of bounds or without a base",
        })?;
    Ok((
        id,
        Entry {
            loc,
            base,
            version,
            store,
            chain,
        },
    ))
}

/// The fewest bytes an encoded entry takes (every varint one byte).
pub const ENTRY_MIN_BYTES: usize = 11;
/// The most bytes an encoded entry takes.
pub const ENTRY_MAX_BYTES: usize = 10 + 5 + 10 + 2 * LOCATION_MAX + 1 + 5;

/// The head of a leaf delta's payload: its image prefix and the location of the version it
/// applies to (the base image, or the previous delta of its chain).
#[must_use]
pub fn delta_prefix(id: ImageId, prev: Location) -> Prefix {
    let mut p = image_prefix(id);
    p.location(&prev);
    p
}

/// Splits a leaf delta's payload into its id, the location of the version it applies to, and
/// its body.
pub fn parse_delta(payload: &[u8]) -> Result<(ImageId, Location, &[u8]), DecodeError> {
    let mut r = Reader::new(payload);
    let id = get_image_id(&mut r)?;
    let prev = get_location(&mut r)?;
    Ok((id, prev, &payload[r.pos()..]))
}

/// Encodes store metadata.
pub fn put_meta(w: &mut Writer, m: &StoreMeta) {
    w.varint(u64::from(m.id));
    w.bytes(m.name.as_bytes());
    // Options are small and evolve: JSON inside the checksummed record.
    let opts = serde_json::to_vec(&*m.options).unwrap_or_default();
    w.bytes(&opts);
    w.varint(m.root);
    w.varint(m.count);
}

/// Decodes what [`put_meta`] wrote.
pub fn get_meta(r: &mut Reader<'_>) -> Result<StoreMeta, DecodeError> {
    let id = get_u32(r, "store id")?;
    let name = std::str::from_utf8(r.bytes("store name")?)
        .map_err(|_| DecodeError {
            at: r.pos(),
            what: "store name is not UTF-8",
        })?
        .into();
    let opts = r.bytes("store options")?;
    let options: StoreOptions = serde_json::from_slice(opts).map_err(|_| DecodeError {
        at: r.pos(),
        what: "store options are not valid JSON",
    })?;
    Ok(StoreMeta {
        id,
        name,
        options: std::sync::Arc::new(options),
        root: r.varint("store root")?,
        count: r.varint("store count")?,
    })
}

/// Encodes a commit record payload.
#[must_use]
pub fn encode_commit(c: &CommitRecord) -> Vec<u8> {
    let mut w = Writer::with(Vec::with_capacity(
        64 + c.store_ops.len() * 64 + c.updates.len() * ENTRY_MAX_BYTES,
    ));
    put_commit(&mut w, c);
    w.buf
}

/// Appends a commit record payload (what [`encode_commit`] returns) to `w`.
pub fn put_commit(w: &mut Writer, c: &CommitRecord) {
    w.varint(c.seq);
    w.varint(c.durable);
    // Flags: 1 = the id of the prepared transaction it decides follows (a commit record
    // carries a transaction id only as such a decision), 2 = housekeeping.
    w.u8(u8::from(c.txn_id != 0) | (u8::from(c.housekeeping) << 1));
    if c.txn_id != 0 {
        w.u128(c.txn_id);
    }
    w.varint(c.next_logical);
    w.varint(c.next_item);
    w.varint(u64::from(c.next_store));
    w.varint(c.store_ops.len() as u64);
    for op in &c.store_ops {
        match op {
            StoreOp::Create(m) => {
                w.u8(1);
                put_meta(w, m);
            }
            StoreOp::Drop { id } => {
                w.u8(2);
                w.varint(u64::from(*id));
            }
            StoreOp::Meta { id, root, count } => {
                w.u8(3);
                w.varint(u64::from(*id));
                w.varint(*root);
                w.varint(*count);
            }
        }
    }
    w.varint(c.updates.len() as u64);
    for (id, e) in &c.updates {
        put_entry(w, *id, e);
    }
    if !c.writes.is_empty() {
        // Optional trailing section: the keys written (clustered mode).
        w.u8(1);
        w.varint(c.writes.len() as u64);
        for sw in &c.writes {
            w.varint(u64::from(sw.store));
            w.u8(u8::from(sw.count_changed));
            w.varint(sw.keys.len() as u64);
            for k in &sw.keys {
                w.bytes(k);
            }
        }
    }
}

/// Decodes a commit record payload.
pub fn decode_commit(payload: &[u8]) -> Result<CommitRecord, DecodeError> {
    let mut r = Reader::new(payload);
    let seq = r.varint("seq")?;
    let durable = r.varint("durable seq")?;
    let flags = r.u8("commit flags")?;
    if flags > 3 {
        return Err(DecodeError {
            at: r.pos(),
            what: "unknown commit flags",
        });
    }
    let txn_id = if flags & 1 == 0 {
        0
    } else {
        match r.u128("txn id")? {
            0 => {
                return Err(DecodeError {
                    at: r.pos(),
                    what: "txn id 0",
                });
            }
            id => id,
        }
    };
    let mut c = CommitRecord {
        seq,
        durable,
        txn_id,
        housekeeping: flags & 2 != 0,
        next_logical: r.varint("next logical")?,
        next_item: r.varint("next item")?,
        next_store: get_u32(&mut r, "next store")?,
        ..CommitRecord::default()
    };
    let n = r.count(2, "store op count")?;
    for _ in 0..n {
        let op = match r.u8("store op")? {
            1 => StoreOp::Create(get_meta(&mut r)?),
            2 => StoreOp::Drop {
                id: get_u32(&mut r, "store id")?,
            },
            3 => StoreOp::Meta {
                id: get_u32(&mut r, "store id")?,
                root: r.varint("root")?,
                count: r.varint("count")?,
            },
            _ => {
                return Err(DecodeError {
                    at: r.pos(),
                    what: "unknown store op",
                });
            }
        };
        c.store_ops.push(op);
    }
    let n = r.count(ENTRY_MIN_BYTES, "update count")?;
    // Bounded: a damaged count must not reserve several times the record's size.
    c.updates.reserve(n.min(4096));
    for _ in 0..n {
        c.updates.push(get_entry(&mut r)?);
    }
    if r.remaining() > 0 {
        if r.u8("commit section tag")? != 1 {
            return Err(DecodeError {
                at: r.pos(),
                what: "unknown commit section",
            });
        }
        let n = r.count(3, "written store count")?;
        for _ in 0..n {
            let store = get_u32(&mut r, "written store")?;
            let count_changed = match r.u8("count changed")? {
                0 => false,
                1 => true,
                _ => {
                    return Err(DecodeError {
                        at: r.pos(),
                        what: "bad count-changed flag",
                    });
                }
            };
            let nk = r.count(1, "written key count")?;
            let mut keys = Vec::with_capacity(nk);
            for _ in 0..nk {
                keys.push(r.bytes("written key")?.to_vec());
            }
            c.writes.push(WrittenKeys {
                store,
                keys,
                count_changed,
            });
        }
    }
    r.finish("trailing bytes in commit")?;
    Ok(c)
}

/// CRC of a whole byte string (re-exported for checkpoint and options files).
#[must_use]
pub fn crc(bytes: &[u8]) -> u32 {
    crc32c(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_check_round_trip_and_every_bit_flip_is_caught() {
        let mut out = Vec::new();
        frame(&mut out, Kind::Blob, &[b"abc", b"defgh"]);
        assert_eq!(out.len() % 8, 0);
        let (k, p) = check(&out).expect("valid");
        assert_eq!(k, Kind::Blob);
        assert_eq!(p, b"abcdefgh");
        for bit in 0..(HEADER + 8) * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(check(&bad).is_err(), "flip of bit {bit} not detected");
        }
    }

    #[test]
    fn commit_round_trip() {
        let c = CommitRecord {
            seq: 9,
            durable: 3,
            txn_id: 77,
            housekeeping: true,
            next_logical: 100,
            next_item: 55,
            next_store: 4,
            store_ops: vec![
                StoreOp::Create(StoreMeta {
                    id: 3,
                    name: "s".into(),
                    options: std::sync::Arc::default(),
                    root: 0,
                    count: 0,
                }),
                StoreOp::Meta {
                    id: 3,
                    root: 12,
                    count: 40,
                },
                StoreOp::Drop { id: 2 },
            ],
            updates: vec![(
                12,
                Entry {
                    loc: Location {
                        seg: 1,
                        len: 64,
                        off: 4096,
                    },
                    base: Location {
                        seg: 1,
                        len: 1024,
                        off: 2048,
                    },
                    version: 2,
                    store: 3,
                    chain: Chain::new(3, 200).expect("in bounds"),
                },
            )],
            writes: vec![WrittenKeys {
                store: 3,
                keys: vec![b"a".to_vec(), b"bc".to_vec()],
                count_changed: true,
            }],
        };
        let bytes = encode_commit(&c);
        assert_eq!(decode_commit(&bytes), Ok(c.clone()));
        // A commit that decides no prepared transaction carries no id.
        let plain = CommitRecord {
            txn_id: 0,
            housekeeping: false,
            ..c.clone()
        };
        let plain_bytes = encode_commit(&plain);
        assert_eq!(plain_bytes.len() + 16, bytes.len());
        assert_eq!(decode_commit(&plain_bytes), Ok(plain));
        // Unknown flags and a stated id of 0 are refused.
        let flags_at = 2;
        for bad_flags in [4u8, 0x80] {
            let mut bad = bytes.clone();
            bad[flags_at] = bad_flags;
            assert!(decode_commit(&bad).is_err(), "flags {bad_flags:#x}");
        }
        let mut zero_id = bytes.clone();
        zero_id[flags_at + 1..flags_at + 17].fill(0);
        assert!(decode_commit(&zero_id).is_err());
        // The written-keys section is optional: cut right before it, the record is the same
        // commit without it; every other cut is an error.
        let without = CommitRecord {
            writes: Vec::new(),
            ..c
        };
        let section = encode_commit(&without).len();
        for cut in 0..bytes.len() {
            match decode_commit(&bytes[..cut]) {
                Ok(d) => assert!(cut == section && d == without, "cut {cut} decoded"),
                Err(_) => assert_ne!(cut, section),
            }
        }
    }

    #[test]
    fn a_delta_names_the_version_it_applies_to() {
        let id = ImageId {
            store: 2,
            logical: 77,
            version: 9,
        };
        let prev = Location {
            seg: 3,
            off: 1 << 33,
            len: 4321,
        };
        let prefix = delta_prefix(id, prev);
        let mut payload = prefix.as_bytes().to_vec();
        payload.extend_from_slice(b"body");
        let (got, at, body) = parse_delta(&payload).expect("a whole prefix");
        assert_eq!((got, at, body), (id, prev, &b"body"[..]));
        for cut in 0..prefix.as_bytes().len() {
            assert!(parse_delta(&payload[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn an_entry_with_a_chain_out_of_bounds_or_without_a_base_is_refused() {
        let base = Location {
            seg: 1,
            off: 64,
            len: 500,
        };
        let entry = |base: Location, depth: u8, bytes: u32| {
            let mut w = Writer::default();
            put_entry(
                &mut w,
                5,
                &Entry {
                    loc: Location {
                        seg: 2,
                        off: 8,
                        len: 40,
                    },
                    base,
                    version: 4,
                    store: 1,
                    chain: Chain::default(),
                },
            );
            // The chain is the last two bytes (an empty one): depth u8 | bytes varint.
            let n = w.buf.len();
            assert_eq!(&w.buf[n - 2..], &[0, 0]);
            w.buf.truncate(n - 2);
            w.u8(depth);
            w.varint(u64::from(bytes));
            assert!((ENTRY_MIN_BYTES..=ENTRY_MAX_BYTES).contains(&w.buf.len()));
            get_entry(&mut Reader::new(&w.buf)).map(|(_, e)| e.chain)
        };
        assert_eq!(
            entry(base, 3, 100),
            Ok(Chain::new(3, 100).expect("in bounds"))
        );
        assert_eq!(entry(Location::default(), 0, 0), Ok(Chain::default()));
        // A delta without a base, a full image with a chain, and chains past the bounds.
        assert!(entry(Location::default(), 1, 0).is_err());
        assert!(entry(base, 0, 0).is_err());
        assert!(entry(base, Chain::MAX_DEPTH + 1, 0).is_err());
        assert!(entry(base, 2, Chain::MAX_BYTES + 1).is_err());
        // One delta has no earlier deltas to take bytes.
        assert!(entry(base, 1, 8).is_err());
    }
}
