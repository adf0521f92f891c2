//! Log records: the framing of everything appended to a segment, and the payload encodings.
//!
//! ```text
//! record (8-byte aligned):
//! +--------+--------+------+---------+-----------------+---------+
//! | crc u32| len u32| kind | 3 bytes | payload (len)   | pad to 8|
//! +--------+--------+------+---------+-----------------+---------+
//!   crc = CRC-32C of bytes 4..12 and the payload
//! image payload (kind 1 node, 2 blob, 6 leaf delta): store u32 | logical u64 | version u64 | body
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

/// Bytes of the image prefix.
pub const IMAGE_PREFIX: usize = 20;

/// Encodes the image prefix.
#[must_use]
pub fn image_prefix(id: ImageId) -> [u8; IMAGE_PREFIX] {
    let mut b = [0u8; IMAGE_PREFIX];
    b[0..4].copy_from_slice(&id.store.to_le_bytes());
    b[4..12].copy_from_slice(&id.logical.to_le_bytes());
    b[12..20].copy_from_slice(&id.version.to_le_bytes());
    b
}

/// Splits an image payload into its id and body.
pub fn parse_image(payload: &[u8]) -> Result<(ImageId, &[u8]), DecodeError> {
    let mut r = Reader::new(payload);
    let store = r.u32("image store")?;
    let logical = r.u64("image logical id")?;
    let version = r.u64("image version")?;
    Ok((
        ImageId {
            store,
            logical,
            version,
        },
        &payload[IMAGE_PREFIX..],
    ))
}

/// A location's byte form: segment u32 | offset u64 | length u32.
fn location_bytes(l: &Location) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&l.seg.to_le_bytes());
    b[4..12].copy_from_slice(&l.off.to_le_bytes());
    b[12..].copy_from_slice(&l.len.to_le_bytes());
    b
}

fn put_location(w: &mut Writer, l: &Location) {
    w.raw(&location_bytes(l));
}

fn get_location(r: &mut Reader<'_>) -> Result<Location, DecodeError> {
    Ok(Location {
        seg: r.u32("segment")?,
        off: r.u64("offset")?,
        len: r.u32("length")?,
    })
}

/// Encodes a registry entry (id included).
pub fn put_entry(w: &mut Writer, id: LogicalId, e: &Entry) {
    w.u64(id);
    w.u32(e.store);
    w.u64(e.version);
    put_location(w, &e.loc);
    put_location(w, &e.base);
    w.u8(e.chain.depth());
    w.u32(e.chain.bytes());
}

/// Decodes what [`put_entry`] wrote.
pub fn get_entry(r: &mut Reader<'_>) -> Result<(LogicalId, Entry), DecodeError> {
    let id = r.u64("logical id")?;
    if id >= crate::registry::MAX_LOGICAL {
        return Err(DecodeError {
            at: r.pos(),
            what: "logical id out of range",
        });
    }
    let store = r.u32("entry store")?;
    let version = r.u64("entry version")?;
    let loc = get_location(r)?;
    let base = get_location(r)?;
    let depth = r.u8("chain depth")?;
    let bytes = r.u32("chain bytes")?;
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

/// Bytes of one encoded entry.
pub const ENTRY_BYTES: usize = 57;

/// Bytes before the body of a leaf delta's payload: the image prefix and the location of the
/// version it applies to.
pub const DELTA_PREFIX: usize = IMAGE_PREFIX + 16;

/// The head of a leaf delta's payload: its image prefix and the location of the version it
/// applies to (the base image, or the previous delta of its chain).
#[must_use]
pub fn delta_prefix(id: ImageId, prev: Location) -> [u8; DELTA_PREFIX] {
    let mut b = [0u8; DELTA_PREFIX];
    b[..IMAGE_PREFIX].copy_from_slice(&image_prefix(id));
    b[IMAGE_PREFIX..].copy_from_slice(&location_bytes(&prev));
    b
}

/// Splits a leaf delta's payload into its id, the location of the version it applies to, and
/// its body.
pub fn parse_delta(payload: &[u8]) -> Result<(ImageId, Location, &[u8]), DecodeError> {
    let (id, rest) = parse_image(payload)?;
    let mut r = Reader::new(rest);
    let prev = get_location(&mut r)?;
    Ok((id, prev, &rest[16..]))
}

/// Encodes store metadata.
pub fn put_meta(w: &mut Writer, m: &StoreMeta) {
    w.u32(m.id);
    w.bytes(m.name.as_bytes());
    // Options are small and evolve: JSON inside the checksummed record.
    let opts = serde_json::to_vec(&m.options).unwrap_or_default();
    w.bytes(&opts);
    w.u64(m.root);
    w.u64(m.count);
}

/// Decodes what [`put_meta`] wrote.
pub fn get_meta(r: &mut Reader<'_>) -> Result<StoreMeta, DecodeError> {
    let id = r.u32("store id")?;
    let name = std::str::from_utf8(r.bytes("store name")?)
        .map_err(|_| DecodeError {
            at: r.pos(),
            what: "store name is not UTF-8",
        })?
        .to_owned();
    let opts = r.bytes("store options")?;
    let options: StoreOptions = serde_json::from_slice(opts).map_err(|_| DecodeError {
        at: r.pos(),
        what: "store options are not valid JSON",
    })?;
    Ok(StoreMeta {
        id,
        name,
        options,
        root: r.u64("store root")?,
        count: r.u64("store count")?,
    })
}

/// Encodes a commit record payload.
#[must_use]
pub fn encode_commit(c: &CommitRecord) -> Vec<u8> {
    let mut w = Writer::with(Vec::with_capacity(
        64 + c.store_ops.len() * 64 + c.updates.len() * ENTRY_BYTES,
    ));
    put_commit(&mut w, c);
    w.buf
}

/// Appends a commit record payload (what [`encode_commit`] returns) to `w`.
pub fn put_commit(w: &mut Writer, c: &CommitRecord) {
    w.u64(c.seq);
    w.u64(c.durable);
    w.u128(c.txn_id);
    w.u64(c.next_logical);
    w.u64(c.next_item);
    w.u32(c.next_store);
    w.varint(c.store_ops.len() as u64);
    for op in &c.store_ops {
        match op {
            StoreOp::Create(m) => {
                w.u8(1);
                put_meta(w, m);
            }
            StoreOp::Drop { id } => {
                w.u8(2);
                w.u32(*id);
            }
            StoreOp::Meta { id, root, count } => {
                w.u8(3);
                w.u32(*id);
                w.u64(*root);
                w.u64(*count);
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
            w.u32(sw.store);
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
    let mut c = CommitRecord {
        seq: r.u64("seq")?,
        durable: r.u64("durable seq")?,
        txn_id: r.u128("txn id")?,
        next_logical: r.u64("next logical")?,
        next_item: r.u64("next item")?,
        next_store: r.u32("next store")?,
        ..CommitRecord::default()
    };
    let n = r.count(5, "store op count")?;
    for _ in 0..n {
        let op = match r.u8("store op")? {
            1 => StoreOp::Create(get_meta(&mut r)?),
            2 => StoreOp::Drop {
                id: r.u32("store id")?,
            },
            3 => StoreOp::Meta {
                id: r.u32("store id")?,
                root: r.u64("root")?,
                count: r.u64("count")?,
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
    let n = r.count(ENTRY_BYTES, "update count")?;
    c.updates.reserve(n);
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
        let n = r.count(6, "written store count")?;
        for _ in 0..n {
            let store = r.u32("written store")?;
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
            next_logical: 100,
            next_item: 55,
            next_store: 4,
            store_ops: vec![
                StoreOp::Create(StoreMeta {
                    id: 3,
                    name: "s".into(),
                    options: StoreOptions::default(),
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
        let mut payload = delta_prefix(id, prev).to_vec();
        payload.extend_from_slice(b"body");
        let (got, at, body) = parse_delta(&payload).expect("a whole prefix");
        assert_eq!((got, at, body), (id, prev, &b"body"[..]));
        for cut in 0..DELTA_PREFIX {
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
            // The chain is the last five bytes: depth u8 | bytes u32.
            let n = w.buf.len();
            w.buf[n - 5] = depth;
            w.buf[n - 4..].copy_from_slice(&bytes.to_le_bytes());
            assert_eq!(n, ENTRY_BYTES);
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
