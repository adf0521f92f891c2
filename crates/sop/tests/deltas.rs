//! Leaf deltas and the zeros written ahead in the log (ADR 0005), end to end.
//!
//! - A small commit into a large leaf appends a leaf delta (record kind 6) over the version it
//!   changed, extending that version's chain back to a full image (ADR 0008), and the commit's
//!   registry entry names that base and the chain's depth and bytes; every value reads back in
//!   the same process, after a replaying reopen and after a checkpointed reopen with the node
//!   cache disabled (so bases and deltas come from disk). Chains are cut at 32 deltas and by a
//!   new log segment. A leaf that shrinks is written whole again.
//! - Random single-item commits (unique keys and duplicates, inline values and blobs) match a
//!   model after every commit, across clean and crash-like reopens.
//! - Merged commits, concurrent committers, two-phase commits, in-doubt decisions and clustered
//!   handles (deltas over bases in another handle's segments) write deltas that read back.
//! - Compaction moves delta/base pairs out of old segments (as one full image), an old snapshot
//!   still reads what it saw, and the log stays bounded.
//! - The log writer's zeros ahead of the append position are there while the database runs and
//!   gone after a clean close (never in a sealed segment, never in clustered mode); after a
//!   crash (a copy of the folder, or a child process killed with SIGKILL) they are a torn tail
//!   that recovery cuts off, with every acknowledged commit kept.
//! - A damaged delta or base image (a flipped byte, or a structural change with a valid
//!   checksum) is `Error::Corruption` naming the record, never a panic or wrong data.
//!
//! The tests parse the log segments and the checkpoint themselves (docs/FORMAT.md): a 32-byte
//! segment header, then 8-byte aligned records `crc u32 | len u32 | kind u8 | 3 zero bytes |
//! payload`. `SOP_DELTAS_CASES` sets the number of cases of the random test (default 48).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use sop::{
    Database, DatabaseOptions, Durability, Error, StoreOptions, TransactionMode, ValuePlacement,
};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

// ---------------------------------------------------------------------------------------------
// Log parsing (docs/FORMAT.md)
// ---------------------------------------------------------------------------------------------

const SEG_HEADER: u64 = 32;
const REC_HEADER: u64 = 12;
/// The most bytes of a delta's prefix: its image prefix (store, logical id, version), then
/// the location of the version it applies to (segment, offset, length), all varints.
const DELTA_PREFIX_MAX: u64 = 5 + 10 + 10 + 5 + 10 + 5;
const KIND_NODE: u8 = 1;
const KIND_BLOB: u8 = 2;
const KIND_COMMIT: u8 = 3;
const KIND_DELTA: u8 = 6;
/// The writer's zeros ahead (`log::writer::ZERO_AHEAD`).
const ZERO_AHEAD: u64 = 1 << 20;

/// CRC-32C (Castagnoli), table-driven.
fn crc32c(parts: &[&[u8]]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        std::array::from_fn(|i| {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            c
        })
    });
    let mut crc = !0u32;
    for p in parts {
        for &b in *p {
            crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn seg_name(seg: u32) -> String {
    format!("{seg:010}.seg")
}

fn seg_path(db: &Path, seg: u32) -> PathBuf {
    db.join("log").join(seg_name(seg))
}

fn segments(db: &Path) -> Vec<u32> {
    let mut segs: Vec<u32> = std::fs::read_dir(db.join("log"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()
        })
        .collect();
    segs.sort_unstable();
    segs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    seg: u32,
    off: u64,
    payload: u64,
    kind: u8,
}

impl Rec {
    fn framed(&self) -> u64 {
        (REC_HEADER + self.payload + 7) & !7
    }
}

/// One segment file: its bytes and its valid records up to the first invalid one.
struct Segment {
    bytes: Vec<u8>,
    recs: Vec<Rec>,
    /// End of the last valid record.
    end: u64,
}

impl Segment {
    fn read(db: &Path, seg: u32) -> Segment {
        let bytes = std::fs::read(seg_path(db, seg)).unwrap();
        assert!(
            bytes.len() >= SEG_HEADER as usize && &bytes[..8] == b"SOPLOG01",
            "{}: not a segment",
            seg_name(seg)
        );
        assert_eq!(le_u32(&bytes, 8), 5, "segment format version");
        let mut recs = Vec::new();
        let mut pos = SEG_HEADER as usize;
        while pos + REC_HEADER as usize <= bytes.len() {
            let len = le_u32(&bytes, pos + 4) as usize;
            let Some(end) = (pos + REC_HEADER as usize)
                .checked_add(len)
                .filter(|e| *e <= bytes.len())
            else {
                break;
            };
            let crc = crc32c(&[&bytes[pos + 4..pos + 12], &bytes[pos + 12..end]]);
            if crc != le_u32(&bytes, pos) {
                break;
            }
            let r = Rec {
                seg,
                off: pos as u64,
                payload: len as u64,
                kind: bytes[pos + 8],
            };
            recs.push(r);
            pos += r.framed() as usize;
        }
        Segment {
            end: pos.min(bytes.len()) as u64,
            bytes,
            recs,
        }
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Bytes after the last valid record.
    fn tail(&self) -> &[u8] {
        &self.bytes[self.end as usize..]
    }

    fn payload(&self, r: &Rec) -> &[u8] {
        let start = (r.off + REC_HEADER) as usize;
        &self.bytes[start..start + r.payload as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Loc {
    seg: u32,
    off: u64,
    len: u32,
}

/// The most deltas in a leaf's chain (`registry::Chain::MAX_DEPTH`).
const MAX_CHAIN: u8 = 32;

/// One registry update of a commit record.
#[derive(Debug, Clone, Copy)]
struct Update {
    logical: u64,
    store: u32,
    version: u64,
    loc: Loc,
    base: Loc,
    /// Deltas from the base to `loc` (0 for a full image).
    depth: u8,
    /// Bytes of the chain's deltas before `loc`.
    chain_bytes: u32,
}

/// A location: segment, offset, length (varints).
fn get_loc(b: &[u8], pos: &mut usize) -> Loc {
    Loc {
        seg: u32::try_from(varint(b, pos)).unwrap(),
        off: varint(b, pos),
        len: u32::try_from(varint(b, pos)).unwrap(),
    }
}

/// A registry update: logical id, store, version, location, base location (varints), chain
/// depth u8, chain bytes (varint).
fn get_update(b: &[u8], pos: &mut usize) -> Update {
    let logical = varint(b, pos);
    let store = u32::try_from(varint(b, pos)).unwrap();
    let version = varint(b, pos);
    let loc = get_loc(b, pos);
    let base = get_loc(b, pos);
    let depth = b[*pos];
    *pos += 1;
    Update {
        logical,
        store,
        version,
        loc,
        base,
        depth,
        chain_bytes: u32::try_from(varint(b, pos)).unwrap(),
    }
}

/// Skips a store's meta (`put_meta`): id | name | options | root | count.
fn skip_meta(p: &[u8], pos: &mut usize) {
    varint(p, pos);
    for _ in 0..2 {
        let n = varint(p, pos) as usize;
        *pos += n;
    }
    varint(p, pos);
    varint(p, pos);
}

/// Decodes a commit payload: (seq, updates).
fn parse_commit(p: &[u8]) -> (u64, Vec<Update>) {
    let mut pos = 0;
    let seq = varint(p, &mut pos);
    varint(p, &mut pos); // durable
    let flag = p[pos];
    pos += 1 + if flag & 1 != 0 { 16 } else { 0 }; // the txn id of a decision
    for _ in 0..3 {
        varint(p, &mut pos); // next logical, next item, next store
    }
    for _ in 0..varint(p, &mut pos) {
        let op = p[pos];
        pos += 1;
        match op {
            1 => skip_meta(p, &mut pos),
            2 => {
                varint(p, &mut pos);
            }
            3 => {
                for _ in 0..3 {
                    varint(p, &mut pos);
                }
            }
            _ => panic!("unknown store op {op}"),
        }
    }
    let n = varint(p, &mut pos) as usize;
    let updates = (0..n).map(|_| get_update(p, &mut pos)).collect();
    (seq, updates)
}

/// The byte ranges in an image payload of its store, logical id and version (varints); the
/// last one ends where its body (or a delta's location) starts.
fn image_fields(p: &[u8]) -> [std::ops::Range<usize>; 3] {
    let mut pos = 0;
    std::array::from_fn(|_| {
        let at = pos;
        varint(p, &mut pos);
        at..pos
    })
}

/// (store, logical id, version) of an image payload.
fn image_id(p: &[u8]) -> (u32, u64, u64) {
    let mut pos = 0;
    let store = u32::try_from(varint(p, &mut pos)).unwrap();
    (store, varint(p, &mut pos), varint(p, &mut pos))
}

/// The body of an image payload (after its prefix).
fn image_body(p: &[u8]) -> &[u8] {
    &p[image_fields(p)[2].end..]
}

/// The byte range in a delta payload of the location of the version it applies to.
fn delta_prev_range(p: &[u8]) -> std::ops::Range<usize> {
    let at = image_fields(p)[2].end;
    let mut pos = at;
    get_loc(p, &mut pos);
    at..pos
}

/// The location of the version a delta payload applies to.
fn delta_prev(p: &[u8]) -> Loc {
    get_loc(p, &mut delta_prev_range(p).start.clone())
}

/// The body of a delta payload (after its prefix).
fn delta_body(p: &[u8]) -> &[u8] {
    &p[delta_prev_range(p).end..]
}

/// The keys of a leaf node body (`kind 1 | count | items`).
fn leaf_keys(body: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(body[0], 1, "not a leaf");
    let mut pos = 1;
    let n = varint(body, &mut pos);
    if n > 0 {
        pos += 8; // the node's low id bits
    }
    let mut keys = Vec::new();
    for _ in 0..n {
        let kl = varint(body, &mut pos) as usize;
        keys.push(body[pos..pos + kl].to_vec());
        pos += kl;
        varint(body, &mut pos); // high id bits
        let flags = body[pos];
        pos += 1;
        if flags & 0x80 != 0 {
            pos += 8; // the item's own low id bits
        }
        let tag = flags & 0x7F;
        match tag {
            0 => {
                let vl = varint(body, &mut pos) as usize;
                pos += vl;
            }
            1 => {
                pos += 8;
                varint(body, &mut pos);
            }
            _ => panic!("unknown value tag {tag}"),
        }
    }
    assert_eq!(pos, body.len(), "leaf body has trailing bytes");
    keys
}

/// Every segment of a database folder.
struct LogView {
    segs: BTreeMap<u32, Segment>,
}

impl LogView {
    fn read(db: &Path) -> LogView {
        LogView {
            segs: segments(db)
                .into_iter()
                .map(|s| (s, Segment::read(db, s)))
                .collect(),
        }
    }

    fn records(&self) -> impl Iterator<Item = (&Segment, &Rec)> {
        self.segs
            .values()
            .flat_map(|s| s.recs.iter().map(move |r| (s, r)))
    }

    fn count(&self, kind: u8) -> usize {
        self.records().filter(|(_, r)| r.kind == kind).count()
    }

    /// The record at `loc`, which must be exactly one record.
    fn at(&self, loc: Loc) -> (&Segment, Rec) {
        let s = self
            .segs
            .get(&loc.seg)
            .unwrap_or_else(|| panic!("{loc:?}: no such segment"));
        let r = *s
            .recs
            .iter()
            .find(|r| r.off == loc.off)
            .unwrap_or_else(|| panic!("{loc:?}: no record starts there"));
        assert_eq!(r.framed(), u64::from(loc.len), "{loc:?}: record length");
        (s, r)
    }

    /// The commit records, segment by segment, with the records each commit appended.
    fn commits(&self) -> Vec<CommitInfo> {
        let mut out = Vec::new();
        for s in self.segs.values() {
            let mut bytes = 0;
            let mut kinds = Vec::new();
            for r in &s.recs {
                bytes += r.framed();
                if r.kind == KIND_COMMIT {
                    let (seq, updates) = parse_commit(s.payload(r));
                    out.push(CommitInfo {
                        seq,
                        updates,
                        bytes,
                        kinds: std::mem::take(&mut kinds),
                    });
                    bytes = 0;
                } else {
                    kinds.push((r.kind, r.framed()));
                }
            }
        }
        out
    }

    /// The chain of the delta entry `u`, newest first: each delta names the version it
    /// applies to after its image prefix; every delta before the newest lies in the newest's
    /// segment, one version below the next, and the last names the base. Checks the depth and
    /// the bytes the entry states.
    fn chain(&self, u: &Update) -> Vec<Loc> {
        let mut out = vec![u.loc];
        let mut earlier = 0u64;
        loop {
            let at = *out.last().unwrap();
            let (s, r) = self.at(at);
            assert_eq!(r.kind, KIND_DELTA, "{at:?} in the chain of {u:?}");
            let p = s.payload(&r);
            let want = u.version + 1 - out.len() as u64;
            assert_eq!(
                image_id(p),
                (u.store, u.logical, want),
                "{at:?} in the chain of {u:?}"
            );
            let prev = delta_prev(p);
            if prev == u.base {
                break;
            }
            assert_eq!(
                prev.seg, u.loc.seg,
                "an earlier delta of {u:?} in another segment"
            );
            assert!(
                out.len() < usize::from(u.depth),
                "chain of {u:?} deeper than stated"
            );
            earlier += u64::from(prev.len);
            out.push(prev);
        }
        assert_eq!(out.len(), usize::from(u.depth), "depth of {u:?}");
        assert_eq!(earlier, u64::from(u.chain_bytes), "chain bytes of {u:?}");
        out
    }

    /// Checks every registry update against the records it names: a delta entry names a
    /// chain of kind-6 records of the same node ([`LogView::chain`]) over a full image
    /// (kind 1) of the same node with a lower version; each delta states the item count of
    /// the version it applies to. Returns the number of delta entries seen.
    fn check_entries(&self) -> usize {
        let mut deltas = 0;
        for c in self.commits() {
            for u in c.updates.iter().filter(|u| u.version != 0) {
                // Entries may name records of segments already deleted (compaction).
                if !self.segs.contains_key(&u.loc.seg) {
                    continue;
                }
                let (s, r) = self.at(u.loc);
                let p = s.payload(&r);
                assert_eq!(image_id(p), (u.store, u.logical, u.version), "{u:?}");
                if u.base.len == 0 {
                    assert_eq!((u.depth, u.chain_bytes), (0, 0), "{u:?}");
                    assert!(
                        r.kind == KIND_NODE || r.kind == KIND_BLOB,
                        "commit {}: entry {u:?} without base names a kind {} record",
                        c.seq,
                        r.kind
                    );
                    continue;
                }
                deltas += 1;
                assert!((1..=MAX_CHAIN).contains(&u.depth), "{u:?}");
                assert_eq!(r.kind, KIND_DELTA, "commit {}: {u:?}", c.seq);
                let chain = self.chain(u);
                if !self.segs.contains_key(&u.base.seg) {
                    continue;
                }
                let (bs, br) = self.at(u.base);
                assert_eq!(br.kind, KIND_NODE, "commit {}: base of {u:?}", c.seq);
                let bp = bs.payload(&br);
                let (bstore, blogical, bversion) = image_id(bp);
                assert_eq!((bstore, blogical), (u.store, u.logical), "base of {u:?}");
                assert!(
                    bversion < u.version + 1 - chain.len() as u64,
                    "base v{bversion} of {u:?}"
                );
                let body = image_body(bp);
                assert_eq!(body[0], 1, "the base of {u:?} is not a leaf");
                let mut pos = 1;
                let mut count = varint(body, &mut pos);
                for at in chain.iter().rev() {
                    let (base, items) = delta_counts(self, *at);
                    assert_eq!(
                        base, count,
                        "the delta at {at:?} of {u:?} states another base item count"
                    );
                    count = items;
                }
            }
        }
        deltas
    }
}

#[derive(Debug)]
struct CommitInfo {
    seq: u64,
    updates: Vec<Update>,
    /// Bytes appended by the commit: its images and its commit record.
    bytes: u64,
    /// (kind, framed length) of its records before the commit record.
    kinds: Vec<(u8, u64)>,
}

/// Asserts that no segment ends in anything but its last record; with `all` also the last
/// (after a clean close), else only the sealed ones.
fn assert_no_zero_tail(db: &Path, all: bool, ctx: &str) {
    let segs = segments(db);
    for (i, &seg) in segs.iter().enumerate() {
        if !all && i + 1 == segs.len() {
            continue;
        }
        let s = Segment::read(db, seg);
        assert_eq!(
            s.end,
            s.len(),
            "{ctx}: {} ends {} bytes after its last record (at {}){}",
            seg_name(seg),
            s.len() - s.end,
            s.end,
            if s.tail().iter().all(|b| *b == 0) {
                ", all zeros"
            } else {
                ""
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Databases, stores and models
// ---------------------------------------------------------------------------------------------

/// A scratch folder, in memory when possible (commits sync).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("sop-deltas")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn no_cache(o: DatabaseOptions) -> DatabaseOptions {
    DatabaseOptions {
        node_cache_bytes: 0,
        ..o
    }
}

fn store_opts(slot_length: usize) -> StoreOptions {
    StoreOptions {
        slot_length,
        ..StoreOptions::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

fn value(tag: u64, i: u32, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}:{i}:").into_bytes();
    while v.len() < len {
        v.push(b'a' + ((tag as usize * 7 + i as usize + v.len()) % 26) as u8);
    }
    v.truncate(len.max(1));
    v
}

/// One change: `Some(value)` sets the key, `None` removes it.
type Change = (Vec<u8>, Option<Vec<u8>>);

fn apply(m: &mut Model, changes: &[Change]) {
    for (k, v) in changes {
        match v {
            Some(v) => m.insert(k.clone(), v.clone()),
            None => m.remove(k),
        };
    }
}

/// Commits `changes` to store `name` in one transaction (creating the store when `create`).
fn commit(db: &Database, name: &str, create: Option<StoreOptions>, changes: &[Change]) {
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    let s = match create {
        Some(o) => tx.new_raw_btree(name, o).unwrap(),
        None => tx.open_raw_btree(name).unwrap(),
    };
    for (k, v) in changes {
        match v {
            Some(v) => {
                s.upsert(k, v).unwrap();
            }
            None => {
                s.remove(k).unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

/// Creates store `s` (slot_length 64) holding 50 items of ~100 bytes (keys `key(0)`,
/// `key(2)`, ... `key(98)`): one leaf of ~6 KB, which small commits then change by deltas.
/// Creates store "s" (64-item leaves) holding keys `0..n`, each with a 100-byte value.
fn load_store(db: &Database, model: &mut Model, n: u32) {
    let bulk: Vec<Change> = (0..n).map(|i| (key(i), Some(value(0, i, 100)))).collect();
    commit(db, "s", Some(store_opts(64)), &bulk);
    apply(model, &bulk);
}

fn seed_one_leaf(db: &Database, model: &mut Model) {
    let bulk: Vec<Change> = (0..50u32)
        .map(|i| (key(2 * i), Some(value(0, 2 * i, 100))))
        .collect();
    commit(db, "s", Some(store_opts(64)), &bulk);
    apply(model, &bulk);
}

fn read_store(db: &Database, name: &str) -> sop::Result<Model> {
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_raw_btree(name)?;
    let mut m = Model::new();
    for it in s.iter() {
        let it = it?;
        m.insert(it.key, it.value);
    }
    assert_eq!(s.count()?, m.len() as u64, "count of store {name}");
    Ok(m)
}

fn show(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

fn assert_same(got: &Model, want: &Model, ctx: &str) {
    if got == want {
        return;
    }
    let diff: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "{}: want {} bytes, got {:?}",
                show(k),
                v.len(),
                got.get(k).map(Vec::len)
            )
        })
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{}: should not be there", show(k))),
        )
        .collect();
    panic!("{ctx}: the store differs from the model: {diff:?}");
}

/// Iteration, a point lookup of every key of the model and of `absent` keys, and `verify`.
fn check_db(db: &Database, name: &str, want: &Model, absent: &[Vec<u8>], ctx: &str) {
    let got = read_store(db, name).unwrap_or_else(|e| panic!("{ctx}: read failed: {e}"));
    assert_same(&got, want, ctx);
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    let s = tx.open_raw_btree(name).unwrap();
    for (k, v) in want {
        assert_eq!(
            s.get(k).unwrap().as_ref(),
            Some(v),
            "{ctx}: get({})",
            show(k)
        );
    }
    for k in absent.iter().filter(|k| !want.contains_key(*k)) {
        assert_eq!(
            s.get(k).unwrap(),
            None,
            "{ctx}: get({}) of a removed key",
            show(k)
        );
    }
    drop(tx);
    let r = db.verify().unwrap();
    assert!(r.is_ok(), "{ctx}: verify: {r:?}");
}

// ---------------------------------------------------------------------------------------------
// 1. Small commits into a large leaf write deltas
// ---------------------------------------------------------------------------------------------

#[test]
fn small_commits_into_a_large_leaf_write_deltas_that_read_back_everywhere() {
    let dir = scratch();
    let path = dir.path().join("db");
    // No checkpoint at close: the first reopen replays every commit from the log.
    let opts = DatabaseOptions {
        checkpoint_on_close: false,
        ..DatabaseOptions::new(&path)
    };
    let mut model = Model::new();
    let mut touched: Vec<Vec<u8>> = Vec::new();
    {
        let db = Database::open(opts.clone()).unwrap();
        seed_one_leaf(&db, &mut model);
        let mut rng = fastrand::Rng::with_seed(7);
        for c in 1..=45u64 {
            let change: Change = match c % 3 {
                // Insert a new (odd) key.
                0 => {
                    let i = 2 * rng.u32(..50) + 1;
                    (key(i), Some(value(c, i, rng.usize(20..120))))
                }
                // Update an existing key.
                1 => {
                    let k = model.keys().nth(rng.usize(..model.len())).unwrap().clone();
                    (k, Some(value(c, 0, rng.usize(20..120))))
                }
                // Remove an existing key.
                _ => {
                    let k = model.keys().nth(rng.usize(..model.len())).unwrap().clone();
                    (k, None)
                }
            };
            touched.push(change.0.clone());
            commit(&db, "s", None, std::slice::from_ref(&change));
            apply(&mut model, std::slice::from_ref(&change));
            // The change is visible at once.
            let tx = db.begin(TransactionMode::ForReading).unwrap();
            let got = tx.open_raw_btree("s").unwrap().get(&change.0).unwrap();
            assert_eq!(got, change.1, "commit {c}: read back in the same process");
        }
        check_db(&db, "s", &model, &touched, "same process");
    }

    // The log: one full leaf in the bulk commit, then mostly deltas.
    let log = LogView::read(&path);
    assert_no_zero_tail(&path, true, "after a clean close");
    let commits = log.commits();
    assert_eq!(commits.len(), 46, "{commits:?}");
    let full_leaf = commits[0]
        .kinds
        .iter()
        .filter(|(k, _)| *k == KIND_NODE)
        .map(|(_, len)| *len)
        .max()
        .unwrap();
    assert!(
        full_leaf > 5_000,
        "the bulk-loaded leaf takes {full_leaf} bytes"
    );
    let small = &commits[1..];
    let mut delta_commits = 0;
    for c in small {
        // Each small commit writes its one leaf (as a delta or whole) and its commit record.
        let images: Vec<_> = c.kinds.iter().filter(|(k, _)| *k != KIND_COMMIT).collect();
        assert_eq!(images.len(), 1, "commit {}: {:?}", c.seq, c.kinds);
        if images[0].0 == KIND_DELTA {
            delta_commits += 1;
            assert!(
                images[0].1 <= full_leaf / 2 + 64,
                "commit {}: a delta of {} bytes over a leaf of {full_leaf}",
                c.seq,
                images[0].1
            );
            // The delta (at most half the leaf, `DELTA_SHARE`) and a commit record.
            assert!(
                c.bytes < full_leaf / 2 + 256,
                "commit {}: appended {} bytes with a delta (full leaf {full_leaf})",
                c.seq,
                c.bytes
            );
        } else {
            assert_eq!(images[0].0, KIND_NODE, "commit {}", c.seq);
        }
    }
    let mut sizes: Vec<u64> = small.iter().map(|c| c.bytes).collect();
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2];
    eprintln!(
        "full leaf {full_leaf} bytes; {delta_commits} of {} small commits wrote a delta; \
         bytes per small commit: min {} median {median} mean {} max {}",
        small.len(),
        sizes[0],
        sizes.iter().sum::<u64>() / sizes.len() as u64,
        sizes[sizes.len() - 1]
    );
    assert!(
        delta_commits >= small.len() * 2 / 3,
        "only {delta_commits} of {} small commits wrote a delta",
        small.len()
    );
    // A delta holds one commit's changes over the version before it (a chain, ADR 0008), or
    // when a chain is cut, the changes since the base image: a few hundred bytes, at most
    // half the leaf.
    assert!(
        sizes[0] * 10 < full_leaf,
        "the smallest commit appends {} bytes, the full leaf is {full_leaf}",
        sizes[0]
    );
    assert!(
        median * 4 < full_leaf,
        "a small commit appends {median} bytes (median), the full leaf is {full_leaf}"
    );
    let total: u64 = sizes.iter().sum();
    assert!(
        total * 3 < full_leaf * small.len() as u64,
        "{} small commits append {total} bytes, the full leaf is {full_leaf}",
        small.len()
    );
    // Chains are cut at MAX_CHAIN deltas (a delta over the base again, or a full image), so
    // 45 changes start a new chain at least once; and a chained delta is one change.
    let leaf_updates: Vec<Update> = small
        .iter()
        .map(|c| *c.updates.iter().find(|u| u.version > 0).unwrap())
        .collect();
    let depths: Vec<u8> = leaf_updates.iter().map(|u| u.depth).collect();
    assert!(
        depths.windows(2).any(|w| w[1] <= w[0]),
        "45 changes never cut the chain: depths {depths:?}"
    );
    assert!(
        depths.iter().filter(|d| **d >= 2).count() >= small.len() / 2,
        "few chained deltas: depths {depths:?}"
    );
    for (c, u) in small
        .iter()
        .zip(&leaf_updates)
        .filter(|(_, u)| u.depth >= 2)
    {
        assert!(
            c.bytes * 8 < full_leaf,
            "commit {}: a chained delta commit appends {} bytes (full leaf {full_leaf}): {u:?}",
            c.seq,
            c.bytes
        );
    }
    assert_eq!(log.check_entries(), delta_commits);
    assert_eq!(log.count(KIND_DELTA), delta_commits);

    // Reopen: the registry comes from replaying the commit records.
    {
        let db = Database::open(opts.clone()).unwrap();
        check_db(&db, "s", &model, &touched, "reopened (replayed)");
    }
    // Reopen without a node cache: the registry comes from the checkpoint written after the
    // replay, and every base and delta is read from disk.
    {
        let db = Database::open(no_cache(opts.clone())).unwrap();
        check_db(&db, "s", &model, &touched, "reopened without cache");
        // A further small commit over a delta entry, read back without a cache.
        let change: Change = (key(1000), Some(value(99, 1000, 50)));
        commit(&db, "s", None, std::slice::from_ref(&change));
        apply(&mut model, std::slice::from_ref(&change));
        check_db(&db, "s", &model, &touched, "commit without cache");
    }
    let db = Database::open(no_cache(opts)).unwrap();
    check_db(&db, "s", &model, &touched, "reopened without cache, again");
}

/// (item count of the version it applies to, item count) stated by a delta record's body.
fn delta_counts(log: &LogView, loc: Loc) -> (u64, u64) {
    let (s, r) = log.at(loc);
    let p = delta_body(s.payload(&r));
    let mut pos = 0;
    let base = varint(p, &mut pos);
    (base, varint(p, &mut pos))
}

#[test]
fn a_leaf_that_shrinks_is_written_whole_again() {
    let dir = scratch();
    let path = dir.path().join("db");
    let db = Database::open(DatabaseOptions::new(&path)).unwrap();
    let mut model = Model::new();
    // Items of one size, so a leaf's bytes are proportional to its item count.
    load_store(&db, &mut model, 60u32);
    let mut counts = Vec::new();
    for i in 0..45u32 {
        let ch = (key(i), None);
        commit(&db, "s", None, std::slice::from_ref(&ch));
        apply(&mut model, std::slice::from_ref(&ch));
        counts.push((db.commit_seq().unwrap(), model.len() as u64));
    }
    check_db(
        &db,
        "s",
        &model,
        &(0..60).map(key).collect::<Vec<_>>(),
        "same process",
    );
    drop(db);
    let log = LogView::read(&path);
    log.check_entries();
    let commits = log.commits();
    let (mut deltas, mut full) = (0, 0);
    for (seq, count) in counts {
        let c = commits.iter().find(|c| c.seq == seq).unwrap();
        let leaf: Vec<&Update> = c.updates.iter().filter(|u| u.version > 0).collect();
        assert_eq!(leaf.len(), 1, "commit {seq}: {:?}", c.updates);
        let u = leaf[0];
        if u.base.len == 0 {
            full += 1;
            continue;
        }
        deltas += 1;
        let (base, items) = delta_counts(&log, u.loc);
        assert_eq!(items, count, "commit {seq}: the delta's item count");
        // A base at most a quarter larger than the leaf (`add_leaf_delta`).
        assert!(
            base * 4 <= items * 5 + 4,
            "commit {seq}: a delta of {items} items over a base of {base}"
        );
        // A removal is a drop run: a few bytes.
        assert!(
            u64::from(u.loc.len) <= REC_HEADER + DELTA_PREFIX_MAX + 16,
            "commit {seq}: {} bytes for removals",
            u.loc.len
        );
    }
    eprintln!("shrinking leaf: {deltas} deltas, {full} full images");
    assert!(
        full >= 3 && deltas >= 30,
        "{deltas} deltas, {full} full images"
    );
    let db = Database::open(no_cache(DatabaseOptions::new(&path))).unwrap();
    check_db(&db, "s", &model, &[], "reopened without cache");
}

/// A leaf's chain never spans segments: when the log moves on to a new segment, the leaf's
/// next change starts a new chain there (a delta over its base, wherever that is), and every
/// version reads back from disk.
#[test]
fn a_new_segment_cuts_the_chains() {
    let dir = scratch();
    let path = dir.path().join("db");
    // No checkpoint, so no segment is deleted and the test sees every commit record.
    let opts = DatabaseOptions {
        segment_bytes: 64 << 10,
        checkpoint_bytes: 1 << 30,
        checkpoint_on_close: false,
        ..DatabaseOptions::new(&path)
    };
    let db = Database::open(opts.clone()).unwrap();
    let mut model = Model::new();
    load_store(&db, &mut model, 60u32);
    let mut seqs = Vec::new();
    for n in 1..=700u64 {
        let i = (n * 7 % 60) as u32;
        let ch = (key(i), Some(value(n, i, 60 + (n % 50) as usize)));
        commit(&db, "s", None, std::slice::from_ref(&ch));
        apply(&mut model, std::slice::from_ref(&ch));
        seqs.push(db.commit_seq().unwrap());
    }
    check_db(&db, "s", &model, &[], "same process");
    drop(db);
    let log = LogView::read(&path);
    assert!(log.segs.len() >= 3, "{} segments", log.segs.len());
    log.check_entries();
    let commits = log.commits();
    let leaf: Vec<Update> = seqs
        .iter()
        .map(|seq| {
            let c = commits.iter().find(|c| c.seq == *seq).unwrap();
            *c.updates.iter().find(|u| u.version > 0).unwrap()
        })
        .collect();
    let cut_by_segment = leaf
        .windows(2)
        .filter(|w| w[0].depth >= 1 && w[1].loc.seg > w[0].loc.seg)
        .inspect(|w| assert!(w[1].depth <= 1, "a chain across segments: {w:?}"))
        .count();
    assert!(
        cut_by_segment >= 2,
        "{cut_by_segment} chains cut by a new segment"
    );
    assert!(
        leaf.iter().any(|u| u.depth == MAX_CHAIN),
        "no chain reached {MAX_CHAIN} deltas"
    );
    let db = Database::open(no_cache(opts)).unwrap();
    check_db(&db, "s", &model, &[], "reopened without cache");
}

/// A commit changing hundreds of nodes encodes them on two threads (`txn::commit`, from 128
/// changed nodes) and appends the second thread's records after the first's: every registry
/// entry must name its own record (kind, store, id, version) and every item must read back,
/// for full images (a bulk load) and for deltas (one item into each of hundreds of leaves).
#[test]
fn large_commits_encoded_on_two_threads_name_their_own_records() {
    let dir = scratch();
    let path = dir.path().join("db");
    let mut model = Model::new();
    {
        let db = Database::open(DatabaseOptions::new(&path)).unwrap();
        // ~100-byte values in leaves of at most 64 items: several hundred new leaves.
        let bulk: Vec<Change> = (0..20_000u32)
            .map(|i| (key(2 * i), Some(value(0, 2 * i, 100))))
            .collect();
        commit(&db, "s", Some(store_opts(64)), &bulk);
        apply(&mut model, &bulk);
        let log = LogView::read(&path);
        let images = log.commits().pop().unwrap().updates.len();
        assert!(images >= 300, "the bulk commit wrote {images} images");
        // One key between every 40th pair: one small edit in each of hundreds of leaves.
        let edits: Vec<Change> = (0..20_000u32)
            .step_by(40)
            .map(|i| (key(2 * i + 1), Some(value(1, 2 * i + 1, 100))))
            .collect();
        commit(&db, "s", None, &edits);
        apply(&mut model, &edits);
        let deltas = last_commit_deltas(&path);
        assert!(deltas >= 256, "the edit commit wrote {deltas} deltas");
        check_db(&db, "s", &model, &[], "same process");
    }
    let db = Database::open(no_cache(DatabaseOptions::new(&path))).unwrap();
    check_db(&db, "s", &model, &[], "reopened without cache");
}

// ---------------------------------------------------------------------------------------------
// 2. Random single-item commits against a model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Upsert(u32, usize),
    Add(u32, usize),
    Update(u32, usize),
    Remove(u32),
    /// Reopen, with or without the node cache; `crash`: continue on a copy of the folder taken
    /// while the database was open (as a crash leaves it: zeros ahead, no checkpoint).
    Reopen {
        cache: bool,
        crash: bool,
    },
}

#[derive(Debug, Clone)]
struct Cfg {
    slot_length: usize,
    unique: bool,
    blobs: bool,
    initial: Vec<(u32, usize)>,
    /// Segments of 64 KiB (the smallest): the log moves to new segments, cutting chains
    /// (ADR 0008: a chain's deltas share a segment).
    small_segments: bool,
}

const KEYS: u32 = 48;

fn cfg_strategy() -> impl Strategy<Value = Cfg> {
    (
        (8usize..=32).prop_map(|h| 2 * h),
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.25),
        prop::collection::vec((0..KEYS, 0usize..150), 0..40),
        prop::bool::weighted(0.5),
    )
        .prop_map(
            |(slot_length, unique, blobs, initial, small_segments)| Cfg {
                slot_length,
                unique,
                blobs,
                initial,
                small_segments,
            },
        )
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..KEYS, 0usize..150).prop_map(|(k, l)| Step::Upsert(k, l)),
        2 => (0..KEYS, 0usize..150).prop_map(|(k, l)| Step::Add(k, l)),
        2 => (0..KEYS, 0usize..150).prop_map(|(k, l)| Step::Update(k, l)),
        3 => (0..KEYS).prop_map(Step::Remove),
        1 => (any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(cache, crash)| Step::Reopen { cache, crash }),
    ]
}

static PROP_DELTAS: AtomicUsize = AtomicUsize::new(0);

/// Key -> values, newest first (a store with duplicates orders a key's items newest first;
/// the single-item operations act on the first).
type MultiModel = BTreeMap<Vec<u8>, Vec<Vec<u8>>>;

fn flatten(m: &MultiModel) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
        .collect()
}

/// Every item of a store, in order.
fn read_items(db: &Database, name: &str) -> sop::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let tx = db.begin(TransactionMode::ForReading)?;
    let s = tx.open_raw_btree(name)?;
    let mut out = Vec::new();
    for it in s.iter() {
        let it = it?;
        out.push((it.key, it.value));
    }
    assert_eq!(s.count()?, out.len() as u64, "count of store {name}");
    Ok(out)
}

fn run_steps(cfg: &Cfg, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut dirs = vec![scratch()];
    let mut path = dirs[0].path().join("db");
    let opts = |p: &Path, cache: bool| {
        let mut o = DatabaseOptions::new(p);
        if cfg.small_segments {
            o.segment_bytes = 64 << 10;
        }
        if cache { o } else { no_cache(o) }
    };
    let fail = |what: String| TestCaseError::fail(what);
    let mut db = Database::open(opts(&path, true)).unwrap();
    let mut model = MultiModel::new();
    let so = StoreOptions {
        is_unique: cfg.unique,
        value_placement: if cfg.blobs {
            ValuePlacement::SeparateBlob
        } else {
            ValuePlacement::InNode
        },
        ..store_opts(cfg.slot_length)
    };
    {
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        let s = tx.new_raw_btree("s", so).unwrap();
        for (k, l) in &cfg.initial {
            let v = value(0, *k, *l);
            s.add(&key(*k), &v).unwrap();
            let vs = model.entry(key(*k)).or_default();
            if cfg.unique && !vs.is_empty() {
                continue;
            }
            vs.insert(0, v);
        }
        tx.commit().unwrap();
    }
    for (n, step) in steps.iter().enumerate() {
        let ctx = format!("step {n} {step:?}");
        let tag = n as u64 + 1;
        let (k, v) = match step {
            Step::Reopen { cache, crash } => {
                if *crash {
                    let d = scratch();
                    let p = d.path().join("db");
                    copy_dir(&path, &p);
                    drop(db);
                    dirs.push(d);
                    path = p;
                } else {
                    drop(db);
                }
                db = Database::open(opts(&path, *cache))
                    .map_err(|e| fail(format!("{ctx}: reopen: {e}")))?;
                let got = read_items(&db, "s").map_err(|e| fail(format!("{ctx}: read: {e}")))?;
                prop_assert_eq!(got, flatten(&model), "{}", ctx);
                continue;
            }
            Step::Upsert(k, l) | Step::Add(k, l) | Step::Update(k, l) => {
                (key(*k), value(tag, *k, *l))
            }
            Step::Remove(k) => (key(*k), Vec::new()),
        };
        let present = model.contains_key(&k);
        let tx = db.begin(TransactionMode::ForWriting).unwrap();
        let s = tx.open_raw_btree("s").unwrap();
        let done = match step {
            Step::Upsert(..) => s.upsert(&k, &v),
            Step::Add(..) => s.add(&k, &v),
            Step::Update(..) => s.update(&k, &v),
            Step::Remove(_) => s.remove(&k),
            Step::Reopen { .. } => unreachable!(),
        }
        .map_err(|e| fail(format!("{ctx}: {e}")))?;
        let vs = model.entry(k.clone()).or_default();
        let expect = match step {
            Step::Upsert(..) | Step::Update(..) if present => {
                vs[0] = v;
                true
            }
            Step::Upsert(..) => {
                vs.insert(0, v);
                true
            }
            Step::Add(..) if present && cfg.unique => false,
            Step::Add(..) => {
                vs.insert(0, v);
                true
            }
            Step::Remove(_) if present => {
                vs.remove(0);
                true
            }
            _ => false,
        };
        if vs.is_empty() {
            model.remove(&k);
        }
        prop_assert_eq!(done, expect, "{}: returned {}", ctx, done);
        tx.commit()
            .map_err(|e| fail(format!("{ctx}: commit: {e}")))?;
        drop((s, tx));
        let got = read_items(&db, "s").map_err(|e| fail(format!("{ctx}: read: {e}")))?;
        prop_assert_eq!(got, flatten(&model), "{}", ctx);
    }
    let r = db.verify().unwrap();
    prop_assert!(r.is_ok(), "verify: {:?}", r);
    drop(db);
    let log = LogView::read(&path);
    PROP_DELTAS.fetch_add(log.check_entries(), Ordering::Relaxed);
    assert_no_zero_tail(&path, true, "after the case");
    let db = Database::open(opts(&path, false)).unwrap();
    let got = read_items(&db, "s").unwrap();
    prop_assert_eq!(got, flatten(&model), "after a final reopen without cache");
    prop_assert!(db.verify().unwrap().is_ok());
    Ok(())
}

#[test]
fn random_single_item_commits_match_a_model() {
    let cases = std::env::var("SOP_DELTAS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(PtConfig {
        cases,
        failure_persistence: None,
        ..PtConfig::default()
    });
    runner
        .run(
            &(
                cfg_strategy(),
                prop::collection::vec(step_strategy(), 1..100),
            ),
            |(cfg, steps)| run_steps(&cfg, &steps),
        )
        .unwrap();
    let deltas = PROP_DELTAS.load(Ordering::Relaxed);
    eprintln!("delta entries written over all cases: {deltas}");
    assert!(deltas > 0, "no case wrote a leaf delta");
}

// ---------------------------------------------------------------------------------------------
// 3. Compaction with deltas
// ---------------------------------------------------------------------------------------------

/// The registry entries of `checkpoint.sop` (docs/FORMAT.md), by logical id.
fn checkpoint_entries(db: &Path) -> BTreeMap<u64, Update> {
    let b = std::fs::read(db.join("checkpoint.sop")).unwrap();
    assert_eq!(&b[..8], b"SOPCKPT1");
    let p = &b[24..];
    let mut pos = 8 + 4 + 8 + 8 + 8 + 4;
    for _ in 0..varint(p, &mut pos) {
        skip_meta(p, &mut pos);
    }
    let n = varint(p, &mut pos) as usize;
    (0..n)
        .map(|_| get_update(p, &mut pos))
        .map(|u| (u.logical, u))
        .collect()
}

/// Single-item commits on the hot keys of the compaction test: updates, some inserts and
/// removes, far from the cold keys.
struct Churn {
    rng: fastrand::Rng,
    n: u64,
    max_segs: usize,
    max_usage: u64,
}

impl Churn {
    fn step(&mut self, db: &Database, path: &Path, model: &mut Model) {
        const HOT: u32 = 250;
        self.n += 1;
        let n = self.n;
        let i = HOT + self.rng.u32(..COMPACT_KEYS - HOT);
        let ch: Change = match self.rng.u8(..10) {
            0 => (key(i), None),
            1 => (
                key(COMPACT_KEYS + self.rng.u32(..200)),
                Some(value(n + 10, i, 80)),
            ),
            _ => (key(i), Some(value(n + 10, i, self.rng.usize(60..140)))),
        };
        commit(db, "s", None, std::slice::from_ref(&ch));
        apply(model, std::slice::from_ref(&ch));
        if n.is_multiple_of(25) {
            self.max_segs = self.max_segs.max(segments(path).len());
            self.max_usage = self.max_usage.max(db.disk_usage().unwrap());
            assert_no_zero_tail(path, false, &format!("churn commit {n}"));
        }
    }
}

const COMPACT_KEYS: u32 = 400;

/// The delta entries written by the commit with sequence number `seq`.
fn deltas_of_commit(path: &Path, seq: u64) -> Vec<Update> {
    let log = LogView::read(path);
    let c = log.commits().into_iter().find(|c| c.seq == seq).unwrap();
    c.updates.into_iter().filter(|u| u.base.len != 0).collect()
}

#[test]
fn compaction_moves_deltas_and_bases_and_the_log_stays_bounded() {
    let dir = scratch();
    let path = dir.path().join("db");
    // Small segments, frequent checkpoints, and no node cache: every base and delta (and every
    // node compaction moves) is read from disk.
    let opts = no_cache(DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 16,
        ..DatabaseOptions::new(&path)
    });
    let db = Database::open(opts.clone()).unwrap();
    let mut model = Model::new();
    load_store(&db, &mut model, COMPACT_KEYS);
    let started = Instant::now();
    let mut churn = Churn {
        rng: fastrand::Rng::with_seed(42),
        n: 0,
        max_segs: 0,
        max_usage: 0,
    };
    // Cold leaves get one small change each and are never touched again, so their deltas and
    // bases stay live until compaction moves them: one delta next to its base (in the first
    // segment), two written after some churn (in a later segment than their base).
    let cold_change = |db: &Database, model: &mut Model, i: u32| {
        let ch = (key(i), Some(value(1, i, 60)));
        commit(db, "s", None, std::slice::from_ref(&ch));
        apply(model, std::slice::from_ref(&ch));
        let d = deltas_of_commit(&path, db.commit_seq().unwrap());
        assert_eq!(d.len(), 1, "cold change of key {i}: {d:?}");
        d[0]
    };
    let mut cold = vec![cold_change(&db, &mut model, 0)];
    assert_eq!(cold[0].loc.seg, cold[0].base.seg);
    for _ in 0..150 {
        churn.step(&db, &path, &mut model);
    }
    // Where compaction has put the cold bases depends on record sizes: change more cold keys,
    // with churn in between, until one delta lands in a later segment than its base.
    let mut k = 45;
    while !cold[1..].iter().any(|d| d.base.seg < d.loc.seg) {
        assert!(
            k < 250,
            "no cold delta lies in a later segment than its base: {cold:?}"
        );
        cold.push(cold_change(&db, &mut model, k));
        k += 15;
        // Churn until the log moves on to a new segment (chained deltas are small, ADR 0008:
        // that takes many commits), so the next cold change may land past its base.
        let head = *segments(&path).last().unwrap();
        for _ in 0..400 {
            churn.step(&db, &path, &mut model);
            if *segments(&path).last().unwrap() > head {
                break;
            }
        }
    }
    eprintln!("cold deltas: {cold:?}");
    // A leaf changed twice counts with its last change.
    let cold: Vec<Update> = cold
        .iter()
        .map(|d| (d.logical, *d))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    let early = segments(&path);
    let early_last = *early.last().unwrap();

    // A reader holding an old snapshot while compaction moves the records it reads.
    let snap_model = model.clone();
    let reader = db.begin(TransactionMode::ForReading).unwrap();
    for _ in 0..300 {
        churn.step(&db, &path, &mut model);
    }
    let rs = reader.open_raw_btree("s").unwrap();
    let mut seen = Model::new();
    for it in rs.iter() {
        let it = it.unwrap();
        seen.insert(it.key, it.value);
    }
    assert_same(&seen, &snap_model, "an old snapshot after compaction");
    drop((rs, reader));
    let held = (churn.max_segs, churn.max_usage);
    // The segments the reader kept are reclaimed; from then on the log stays small.
    for _ in 0..100 {
        churn.step(&db, &path, &mut model);
    }
    churn.max_segs = 0;
    churn.max_usage = 0;

    while churn.n < 3000
        && (churn.n < 1200 || segments(&path).first().is_some_and(|s| *s <= early_last))
    {
        churn.step(&db, &path, &mut model);
    }
    let n = churn.n;
    let (max_segs, max_usage) = (churn.max_segs, churn.max_usage);
    let segs = segments(&path);
    eprintln!(
        "{n} churn commits in {:?}: early segments {early:?}, now {segs:?}; at most {max_segs} \
         segment files, {max_usage} bytes ({held:?} while a reader held an old snapshot)",
        started.elapsed()
    );
    assert!(
        segs.iter().all(|s| !early.contains(s)),
        "the first segments (bulk load, cold deltas and bases) were never reclaimed: {segs:?}"
    );
    // About 60 KB of live items (the last 650 commits appended about 400 KB): the log must
    // stay within a small multiple of the live data.
    assert!(max_segs <= 5, "up to {max_segs} segment files");
    assert!(max_usage <= 5 << 16, "up to {max_usage} bytes on disk");
    check_db(&db, "s", &model, &[], "after churn");
    let probes: Vec<Vec<u8>> = (0..COMPACT_KEYS + 200).map(key).collect();
    drop(db);
    assert_no_zero_tail(&path, true, "after a clean close");

    // The cold leaves were moved as whole images of the same versions (the delta/base pair
    // rewritten as one full image).
    let entries = checkpoint_entries(&path);
    for d in &cold {
        let e = entries
            .get(&d.logical)
            .unwrap_or_else(|| panic!("cold leaf {} vanished from the registry", d.logical));
        assert_eq!(e.version, d.version, "the cold leaf {} changed", d.logical);
        assert_eq!(
            e.base.len, 0,
            "cold leaf {} is still a delta: {e:?}",
            d.logical
        );
        assert!(e.loc.seg > early_last, "{e:?}");
    }
    let log = LogView::read(&path);
    log.check_entries();
    assert!(log.count(KIND_DELTA) > 0, "no delta in the live segments");

    let db = Database::open(no_cache(opts)).unwrap();
    check_db(&db, "s", &model, &probes, "reopened without cache");
}

// ---------------------------------------------------------------------------------------------
// Concurrent writers to one leaf: merged commits write deltas too
// ---------------------------------------------------------------------------------------------

#[test]
fn merged_and_concurrent_commits_into_one_leaf() {
    let dir = scratch();
    let path = dir.path().join("db");
    let db = Database::open(DatabaseOptions::new(&path)).unwrap();
    let mut model = Model::new();
    seed_one_leaf(&db, &mut model);

    // A transaction that changed the leaf commits after another one changed it: its change is
    // replayed on the committed leaf (auto-merge), written as a delta over the same base.
    let t1 = db.begin(TransactionMode::ForWriting).unwrap();
    t1.open_raw_btree("s")
        .unwrap()
        .upsert(&key(11), b"from t1")
        .unwrap();
    let t2 = db.begin(TransactionMode::ForWriting).unwrap();
    t2.open_raw_btree("s")
        .unwrap()
        .upsert(&key(13), b"from t2")
        .unwrap();
    t2.commit().unwrap();
    t1.commit().unwrap();
    drop((t1, t2));
    apply(
        &mut model,
        &[
            (key(11), Some(b"from t1".to_vec())),
            (key(13), Some(b"from t2".to_vec())),
        ],
    );
    let log = LogView::read(&path);
    let commits = log.commits();
    let last2: Vec<usize> = commits[commits.len() - 2..]
        .iter()
        .map(|c| c.updates.iter().filter(|u| u.base.len != 0).count())
        .collect();
    assert_eq!(last2, [1, 1], "the two commits did not both write a delta");
    check_db(&db, "s", &model, &[], "after a merged commit");

    // Threads committing single items into the same leaf at once.
    let threads = 4u32;
    let per_thread = 40u32;
    let workers = (0..threads)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for j in 0..per_thread {
                    let k = key(1000 + t * per_thread + j);
                    let v = value(u64::from(t), j, 40 + (j as usize % 50));
                    db.transact(|tx| {
                        tx.open_raw_btree("s")?.upsert(&k, &v)?;
                        Ok(())
                    })
                    .unwrap();
                    // Keep the leaf within one node: remove again every other key.
                    if j % 2 == 1 {
                        db.transact(|tx| {
                            tx.open_raw_btree("s")?.remove(&k)?;
                            Ok(())
                        })
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    common::join_all(workers);
    for t in 0..threads {
        for j in (0..per_thread).filter(|j| j % 2 == 0) {
            model.insert(
                key(1000 + t * per_thread + j),
                value(u64::from(t), j, 40 + (j as usize % 50)),
            );
        }
    }
    check_db(&db, "s", &model, &[], "after concurrent commits");
    drop(db);
    let log = LogView::read(&path);
    let deltas = log.check_entries();
    assert!(deltas > 20, "only {deltas} delta entries");
    let db = Database::open(no_cache(DatabaseOptions::new(&path))).unwrap();
    check_db(&db, "s", &model, &[], "reopened without cache");
}

/// The number of delta entries of the last commit record in the log.
fn last_commit_deltas(path: &Path) -> usize {
    let log = LogView::read(path);
    log.check_entries();
    let c = log.commits().pop().unwrap();
    c.updates.iter().filter(|u| u.base.len != 0).count()
}

#[test]
fn two_phase_commits_and_in_doubt_decisions_write_deltas() {
    let dir = scratch();
    let path = dir.path().join("db");
    let crashed = dir.path().join("crashed");
    let db = Database::open(DatabaseOptions::new(&path)).unwrap();
    let mut model = Model::new();
    seed_one_leaf(&db, &mut model);

    // Phase 1, a commit into the same leaf, phase 2 (merged onto the newer leaf).
    let t = db.begin(TransactionMode::ForWriting).unwrap();
    t.open_raw_btree("s")
        .unwrap()
        .upsert(&key(11), b"two-phase")
        .unwrap();
    t.phase1_commit().unwrap();
    let other = (key(13), Some(b"meanwhile".to_vec()));
    commit(&db, "s", None, std::slice::from_ref(&other));
    assert_eq!(last_commit_deltas(&path), 1);
    t.phase2_commit().unwrap();
    drop(t);
    assert_eq!(last_commit_deltas(&path), 1, "phase 2 wrote the leaf whole");
    apply(&mut model, &[other, (key(11), Some(b"two-phase".to_vec()))]);
    check_db(&db, "s", &model, &[], "after phase 2");

    // A prepared transaction in a crash image: decided after recovery.
    let t = db.begin(TransactionMode::ForWriting).unwrap();
    t.open_raw_btree("s").unwrap().remove(&key(20)).unwrap();
    t.phase1_commit().unwrap();
    let id = t.id();
    copy_dir(&path, &crashed);
    t.rollback().unwrap();
    drop((t, db));
    let db = Database::open(no_cache(DatabaseOptions::new(&crashed))).unwrap();
    let listed = db.in_doubt().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].txn_id, id);
    let more = (key(31), Some(b"after the crash".to_vec()));
    commit(&db, "s", None, std::slice::from_ref(&more));
    db.resolve_in_doubt(id, true).unwrap();
    assert_eq!(
        last_commit_deltas(&crashed),
        1,
        "the decision wrote the leaf whole"
    );
    apply(&mut model, &[more, (key(20), None)]);
    check_db(&db, "s", &model, &[key(20)], "after the in-doubt decision");
    drop(db);
    let db = Database::open(no_cache(DatabaseOptions::new(&crashed))).unwrap();
    assert!(db.in_doubt().unwrap().is_empty());
    check_db(&db, "s", &model, &[key(20)], "reopened after the decision");
}

// ---------------------------------------------------------------------------------------------
// Clustered mode: deltas over bases in another handle's segments, and no zeros ahead
// ---------------------------------------------------------------------------------------------

#[test]
fn clustered_handles_read_each_others_deltas_and_write_no_zeros_ahead() {
    let dir = scratch();
    let path = dir.path().join("db");
    let coord: std::sync::Arc<dyn sop::Coordinator> =
        std::sync::Arc::new(sop::LocalCoordinator::new());
    let o = DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 17,
        ..DatabaseOptions::new(&path)
    };
    let open = || {
        let c = std::sync::Arc::clone(&coord);
        Database::open_clustered(o.clone(), sop::ClusterOptions::default(), move |_| Ok(c)).unwrap()
    };
    let (a, b) = (open(), open());
    let mut model = Model::new();
    seed_one_leaf(&a, &mut model);
    let mut rng = fastrand::Rng::with_seed(11);
    for c in 1..=300u64 {
        let db = if c % 2 == 0 { &a } else { &b };
        let i = rng.u32(..100);
        let ch: Change = if rng.u8(..4) == 0 {
            (key(i), None)
        } else {
            (key(i), Some(value(c, i, rng.usize(20..120))))
        };
        commit(db, "s", None, std::slice::from_ref(&ch));
        apply(&mut model, std::slice::from_ref(&ch));
        if c % 25 == 0 {
            // Other handles read these segments: none may end in zeros, not even the ones
            // being appended to.
            for seg in segments(&path) {
                let s = Segment::read(&path, seg);
                assert_eq!(s.end, s.len(), "commit {c}: {} has a tail", seg_name(seg));
            }
            for h in [&a, &b] {
                assert_same(&read_store(h, "s").unwrap(), &model, &format!("commit {c}"));
            }
        }
    }
    let log = LogView::read(&path);
    let deltas = log.check_entries();
    let cross = log
        .commits()
        .iter()
        .flat_map(|c| c.updates.iter().copied())
        .filter(|u| u.base.len != 0 && u.base.seg != u.loc.seg)
        .count();
    eprintln!("clustered: {deltas} delta entries, {cross} over a base in another segment");
    assert!(deltas > 50, "only {deltas} delta entries");
    assert!(cross > 0);
    check_db(&a, "s", &model, &[], "handle a");
    check_db(&b, "s", &model, &[], "handle b");
    drop((a, b));
    // Standalone again, without cache.
    let db = Database::open(no_cache(DatabaseOptions::new(&path))).unwrap();
    check_db(&db, "s", &model, &[], "standalone after clustered use");
}

// ---------------------------------------------------------------------------------------------
// 4. Zeros ahead: present while running, gone after a clean close, a torn tail after a crash
// ---------------------------------------------------------------------------------------------

/// Asserts that the last segment ends in zeros written ahead (and returns how many).
fn assert_zero_tail(db: &Path, ctx: &str) -> u64 {
    let seg = *segments(db).last().unwrap();
    let s = Segment::read(db, seg);
    let tail = s.tail();
    assert!(
        !tail.is_empty() && tail.iter().all(|b| *b == 0),
        "{ctx}: {} is {} bytes, its records end at {}: no zeros ahead",
        seg_name(seg),
        s.len(),
        s.end
    );
    assert!(
        tail.len() as u64 <= ZERO_AHEAD,
        "{ctx}: {} bytes of zeros ahead",
        tail.len()
    );
    tail.len() as u64
}

/// Small commits, a copy of the folder taken while the database is open (what a crash leaves
/// behind), a clean close; then both folders are checked and reopened.
fn zeros_ahead_case(root: &Path, o: impl Fn(&Path) -> DatabaseOptions) {
    let path = root.join("db");
    let crashed = root.join("crashed");
    let mut model = Model::new();
    {
        let db = Database::open(o(&path)).unwrap();
        load_store(&db, &mut model, 40u32);
        for c in 1..=10u64 {
            let ch = (key(c as u32 * 3), Some(value(c, 0, 70)));
            commit(&db, "s", None, std::slice::from_ref(&ch));
            apply(&mut model, std::slice::from_ref(&ch));
        }
        let z = assert_zero_tail(&path, "while open");
        assert!(z >= ZERO_AHEAD / 2, "only {z} bytes of zeros ahead");
        // What a crash now leaves behind.
        copy_dir(&path, &crashed);
    }
    assert_no_zero_tail(&path, true, "after a clean close");
    assert!(LogView::read(&path).count(KIND_DELTA) > 0);
    {
        let db = Database::open(no_cache(o(&path))).unwrap();
        check_db(&db, "s", &model, &[], "reopened after a clean close");
    }

    // The crash image: the zeros are a torn tail; every commit is there.
    assert_zero_tail(&crashed, "the crash image");
    {
        let db = Database::open(no_cache(o(&crashed))).unwrap();
        check_db(&db, "s", &model, &[], "recovered from the crash image");
        let ch = (key(1), None);
        commit(&db, "s", None, std::slice::from_ref(&ch));
        apply(&mut model, std::slice::from_ref(&ch));
        assert_zero_tail(&crashed, "after recovery and a commit");
    }
    assert_no_zero_tail(&crashed, true, "recovered, then closed");
    let db = Database::open(no_cache(o(&crashed))).unwrap();
    check_db(&db, "s", &model, &[], "reopened after recovery");
}

#[test]
fn zeros_ahead_are_cut_at_a_clean_close_and_are_a_torn_tail_after_a_crash() {
    let dir = scratch();
    zeros_ahead_case(dir.path(), |p| DatabaseOptions::new(p));
}

#[test]
fn zeros_ahead_without_syncs() {
    let dir = scratch();
    zeros_ahead_case(dir.path(), |p| DatabaseOptions {
        durability: Durability::None,
        ..DatabaseOptions::new(p)
    });
}

#[test]
fn zeros_ahead_with_direct_io() {
    // O_DIRECT (4096-byte aligned I/O, read-modify-write of partial blocks) on a disk file
    // system: the zeros ahead and the cut at close go through the same translation.
    let dir = tempfile::tempdir().unwrap();
    zeros_ahead_case(dir.path(), |p| DatabaseOptions {
        direct_io: true,
        ..DatabaseOptions::new(p)
    });
}

#[test]
fn sealed_segments_never_end_in_zeros() {
    let dir = scratch();
    let path = dir.path().join("db");
    let opts = DatabaseOptions {
        segment_bytes: 1 << 16,
        // No checkpoint (and so no segment deletion) during the run: every sealed segment
        // stays there to be looked at.
        checkpoint_bytes: 1 << 30,
        ..DatabaseOptions::new(&path)
    };
    let db = Database::open(opts.clone()).unwrap();
    let mut model = Model::new();
    load_store(&db, &mut model, 60u32);
    let mut rng = fastrand::Rng::with_seed(3);
    for c in 1..=600u64 {
        let i = rng.u32(..60);
        let ch = (key(i), Some(value(c, i, rng.usize(50..150))));
        commit(&db, "s", None, std::slice::from_ref(&ch));
        apply(&mut model, std::slice::from_ref(&ch));
        if c.is_multiple_of(20) {
            assert_no_zero_tail(&path, false, &format!("commit {c}"));
            // Zeros ahead never reach past the segment size.
            let last = *segments(&path).last().unwrap();
            let len = std::fs::metadata(seg_path(&path, last)).unwrap().len();
            assert!(len <= 1 << 16, "{} is {len} bytes", seg_name(last));
        }
    }
    let segs = segments(&path);
    assert!(segs.len() >= 4, "{segs:?}");
    check_db(&db, "s", &model, &[], "same process");
    drop(db);
    assert_no_zero_tail(&path, true, "after a clean close");
    let log = LogView::read(&path);
    assert!(log.count(KIND_DELTA) > 0);
    log.check_entries();
    let db = Database::open(no_cache(opts)).unwrap();
    check_db(&db, "s", &model, &[], "reopened without cache");
}

// A child process killed with SIGKILL (after its last commit, then in the middle of commits).

const CHILD_ENV: &str = "SOP_DELTAS_CHILD";
const CHILD_STOP_ENV: &str = "SOP_DELTAS_CHILD_STOP";
const LAST: &[u8] = b"~last";
const CHILD_KEYS: u32 = 56;

/// The changes of transaction `n` (n >= 1), a pure function of `n`; each sets `~last = n`.
fn child_txn(n: u64) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    if n == 1 {
        out.extend((0..40u32).map(|i| (key(i), Some(value(0, i, 100)))));
    } else {
        let mut rng = fastrand::Rng::with_seed(n ^ 0xD1_7A5);
        let i = rng.u32(..CHILD_KEYS);
        if rng.u8(..4) == 0 {
            out.push((key(i), None));
        } else {
            out.push((key(i), Some(value(n, i, rng.usize(10..120)))));
        }
    }
    out.push((LAST.to_vec(), Some(n.to_string().into_bytes())));
    out
}

fn child_state(n: u64) -> Model {
    let mut m = Model::new();
    for t in 1..=n {
        apply(&mut m, &child_txn(t));
    }
    m
}

fn child_commit(db: &Database, n: u64) {
    let create = (n == 1).then(|| store_opts(64));
    commit(db, "s", create, &child_txn(n));
}

fn child_last(db: &Database) -> u64 {
    let tx = db.begin(TransactionMode::ForReading).unwrap();
    if !tx.store_exists("s").unwrap() {
        return 0;
    }
    let v = tx.open_raw_btree("s").unwrap().get(LAST).unwrap();
    v.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap())
}

/// The child: commits `last+1, last+2, ...`, printing `ACK n`; with a stop, prints `DONE` after
/// that many and waits to be killed.
#[test]
fn zero_tail_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let stop: Option<u64> = std::env::var(CHILD_STOP_ENV)
        .ok()
        .and_then(|s| s.parse().ok());
    let started = Instant::now();
    let db = Database::open(DatabaseOptions::new(Path::new(&dir))).unwrap();
    let mut n = child_last(&db);
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {n}").unwrap();
    out.flush().unwrap();
    while started.elapsed() < Duration::from_secs(20) {
        if stop.is_some_and(|s| n >= s) {
            writeln!(out, "DONE").unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_secs(20));
            return;
        }
        n += 1;
        child_commit(&db, n);
        writeln!(out, "ACK {n}").unwrap();
        out.flush().unwrap();
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the child; kills it when it prints `DONE` (with `stop`) or after `delay`. Returns the
/// acknowledged transactions.
fn run_child(dir: &Path, stop: Option<u64>, delay: Duration) -> Vec<u64> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "zero_tail_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ENV, dir)
    .env_remove(CHILD_STOP_ENV)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(s) = stop {
        cmd.env(CHILD_STOP_ENV, s.to_string());
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("ACK ") {
                acks.push(n.trim().parse::<u64>().unwrap());
            } else if line == "DONE" {
                let _ = tx.send(());
            }
        }
        acks
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    if stop.is_some() {
        let done = rx.recv_timeout(Duration::from_secs(20));
        assert!(done.is_ok(), "the child never got to DONE");
    } else {
        std::thread::sleep(delay);
    }
    let early = child.0.try_wait().unwrap();
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    let acks = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(
        early.is_none(),
        "the child exited before it was killed ({status:?}); stderr:\n{err}"
    );
    acks
}

#[test]
fn sigkill_leaves_zeros_ahead_that_recovery_cuts_off() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("db");

    // Killed while idle after 30 commits: a zero tail, nothing lost.
    let acks = run_child(&path, Some(30), Duration::ZERO);
    assert_eq!(acks, (1..=30).collect::<Vec<_>>());
    let z = assert_zero_tail(&path, "after SIGKILL");
    assert!(z >= ZERO_AHEAD / 2, "only {z} bytes of zeros ahead");
    let deltas = LogView::read(&path).count(KIND_DELTA);
    assert!(deltas >= 10, "the child wrote {deltas} leaf deltas");
    {
        let db = Database::open(no_cache(DatabaseOptions::new(&path))).unwrap();
        assert_eq!(child_last(&db), 30);
        check_db(&db, "s", &child_state(30), &[], "recovered after SIGKILL");
        // Recovery cut the zeros off.
        assert_no_zero_tail(&path, true, "right after recovery");
        child_commit(&db, 31);
        check_db(&db, "s", &child_state(31), &[], "a commit after recovery");
    }
    assert_no_zero_tail(&path, true, "recovered, committed, closed");

    // Killed at random moments while committing.
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut recovered = 31;
    for round in 0..5 {
        let delay = Duration::from_millis(rng.u64(30..=200));
        let acks = run_child(&path, None, delay);
        let ctx = format!("seed {seed}, round {round}, delay {delay:?}");
        for (i, a) in acks.iter().enumerate() {
            assert_eq!(*a, recovered + 1 + i as u64, "{ctx}: acknowledgements");
        }
        let acked = acks.last().copied().unwrap_or(recovered);
        if !acks.is_empty() {
            let s = Segment::read(&path, *segments(&path).last().unwrap());
            assert!(s.len() > s.end, "{ctx}: no bytes ahead of the last record");
        }
        let db = Database::open(no_cache(DatabaseOptions::new(&path)))
            .unwrap_or_else(|e| panic!("{ctx}: reopen after SIGKILL: {e}"));
        let last = child_last(&db);
        assert!(
            last == acked || last == acked + 1,
            "{ctx}: acknowledged {acked}, recovered {last}"
        );
        check_db(&db, "s", &child_state(last), &[], &ctx);
        drop(db);
        assert_no_zero_tail(&path, true, &format!("{ctx}: recovered and closed"));
        recovered = last;
    }
    eprintln!("seed {seed}: {recovered} transactions");
    LogView::read(&path).check_entries();
}

// ---------------------------------------------------------------------------------------------
// 5. Damaged deltas and damaged bases
// ---------------------------------------------------------------------------------------------

/// A database whose store has a leaf written as a delta over a base image, closed cleanly
/// (checkpointed: reopening replays nothing, the records are read only when a key needs them).
struct DeltaGolden {
    dir: tempfile::TempDir,
    model: Model,
    /// The live delta entry.
    entry: Update,
    /// Its chain, newest first.
    chain: Vec<Loc>,
    /// The keys of the leaf it holds.
    leaf_keys: BTreeSet<Vec<u8>>,
}

impl DeltaGolden {
    fn path(&self) -> PathBuf {
        self.dir.path().join("db")
    }
}

/// A key that sorts between `key(4)` and `key(5)`.
fn inserted_key() -> Vec<u8> {
    b"k00004+".to_vec()
}

/// The golden database's small commits.
fn changes_len() -> usize {
    4
}

fn delta_golden() -> DeltaGolden {
    let dir = scratch();
    let path = dir.path().join("db");
    let mut model = Model::new();
    {
        let db = Database::open(DatabaseOptions::new(&path)).unwrap();
        // Several leaves; then small changes to keys of the first leaf.
        load_store(&db, &mut model, 150u32);
        let changes: Vec<Change> = vec![
            (key(3), Some(value(1, 3, 40))),
            (key(5), None),
            (inserted_key(), Some(value(3, 1003, 30))),
            (key(7), Some(value(4, 7, 90))),
        ];
        assert_eq!(changes.len(), changes_len());
        for ch in &changes {
            commit(&db, "s", None, std::slice::from_ref(ch));
        }
        apply(&mut model, &changes);
        check_db(&db, "s", &model, &[], "golden");
    }
    let log = LogView::read(&path);
    let last = log.commits().pop().unwrap();
    let entry = *last
        .updates
        .iter()
        .find(|u| u.base.len != 0)
        .expect("the last small commit wrote a delta");
    let (bs, br) = log.at(entry.base);
    let mut leaf_keys: BTreeSet<Vec<u8>> =
        leaf_keys(image_body(bs.payload(&br))).into_iter().collect();
    leaf_keys.insert(inserted_key());
    for k in [key(3), key(7)] {
        assert!(
            leaf_keys.contains(&k),
            "the changed keys are not in that leaf"
        );
    }
    assert!(leaf_keys.len() < model.len(), "the store has one leaf only");
    let chain = log.chain(&entry);
    assert_eq!(
        chain.len(),
        changes_len(),
        "one chained delta per small commit"
    );
    DeltaGolden {
        dir,
        model,
        entry,
        chain,
        leaf_keys,
    }
}

/// Rewrites the CRC of the record at `off` of a segment file (after a change that must pass
/// the checksum and be caught by the structural checks).
fn fix_crc(bytes: &mut [u8], off: usize) {
    let len = le_u32(bytes, off + 4) as usize;
    let crc = crc32c(&[&bytes[off + 4..off + 12], &bytes[off + 12..off + 12 + len]]);
    bytes[off..off + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Damages the segment of `loc` in a copy of the golden folder, reopens it without cache and
/// reads everything: the keys of the damaged leaf give `Error::Corruption` naming one of
/// `expect` (the damaged record, or for some damage the other record of the pair), the others
/// their values, and `verify` reports the damage.
fn damaged_case(
    g: &DeltaGolden,
    label: &str,
    loc: Loc,
    expect: &[Loc],
    damage: impl FnOnce(&mut Vec<u8>),
) {
    let work = scratch();
    let path = work.path().join("db");
    copy_dir(&g.path(), &path);
    let file = seg_path(&path, loc.seg);
    let mut bytes = std::fs::read(&file).unwrap();
    let before = bytes.clone();
    damage(&mut bytes);
    assert_ne!(bytes, before, "{label}: nothing damaged");
    std::fs::write(&file, bytes).unwrap();

    let check_err = |e: &Error, what: &str| match e {
        Error::Corruption { file, offset, .. } => {
            assert!(
                expect
                    .iter()
                    .any(|l| file.ends_with(seg_name(l.seg)) && *offset == l.off),
                "{label}: {what}: the error names {} at {offset}, not the damaged record at \
                 {expect:?}: {e}",
                file.display(),
            );
        }
        e => panic!("{label}: {what}: not a corruption error: {e:?}"),
    };
    let db = Database::open(no_cache(DatabaseOptions::new(&path)))
        .unwrap_or_else(|e| panic!("{label}: open (nothing to replay) failed: {e}"));
    let mut bad = 0;
    for k in g.model.keys().chain(std::iter::once(&key(5))) {
        let tx = db.begin(TransactionMode::ForReading).unwrap();
        let s = tx.open_raw_btree("s").unwrap();
        match s.get(k) {
            Err(e) => {
                assert!(g.leaf_keys.contains(k), "{label}: get({}): {e}", show(k));
                check_err(&e, &format!("get({})", show(k)));
                bad += 1;
            }
            Ok(v) => {
                assert!(
                    !g.leaf_keys.contains(k),
                    "{label}: get({}) of the damaged leaf returned {:?}",
                    show(k),
                    v.map(|v| show(&v))
                );
                assert_eq!(v.as_ref(), g.model.get(k), "{label}: get({})", show(k));
            }
        }
    }
    assert!(bad > 0);
    match read_store(&db, "s") {
        Err(e) => check_err(&e, "iteration"),
        Ok(_) => panic!("{label}: iteration read the damaged leaf"),
    }
    // A write to the damaged leaf fails too, and changes nothing.
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    let s = tx.open_raw_btree("s").unwrap();
    let r = s.upsert(&key(3), b"x").and_then(|_| tx.commit());
    match r {
        Err(e) => check_err(&e, "upsert"),
        Ok(()) => panic!("{label}: a write into the damaged leaf committed"),
    }
    drop((s, tx));
    let r = db.verify().unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| expect.iter().any(|l| p.contains(&seg_name(l.seg)))),
        "{label}: verify did not report the damage: {r:?}"
    );
    drop(db);
    // Still the same after another reopen (nothing was "repaired" into wrong data).
    let db = Database::open(no_cache(DatabaseOptions::new(&path))).unwrap();
    assert!(
        read_store(&db, "s").is_err(),
        "{label}: after a second reopen"
    );
}

#[test]
fn damaged_delta_or_base_is_corruption_not_wrong_data() {
    let g = delta_golden();
    let d = g.entry.loc;
    let b = g.entry.base;
    let (d0, b0) = (d.off as usize, b.off as usize);
    let dseg = std::fs::read(seg_path(&g.path(), d.seg)).unwrap();
    let bseg = std::fs::read(seg_path(&g.path(), b.seg)).unwrap();
    let dlen = le_u32(&dseg, d0 + 4) as usize;
    let blen = le_u32(&bseg, b0 + 4) as usize;
    // Field positions in the segment files (payloads start 12 bytes into their records).
    let dpay = &dseg[d0 + 12..d0 + 12 + dlen];
    let [_, dlogical, dversion] = image_fields(dpay).map(|r| d0 + 12 + r.start);
    let dprev = delta_prev_range(dpay);
    let dprev = d0 + 12 + dprev.start..d0 + 12 + dprev.end;
    let dbody = dprev.end;
    let bpay = &bseg[b0 + 12..b0 + 12 + blen];
    let [_, blogical, bversion] = image_fields(bpay).map(|r| b0 + 12 + r.start..b0 + 12 + r.end);
    let bbody = bversion.end;

    // Checksum failures.
    for (what, at) in [
        ("first byte", dbody),
        ("middle", dbody + (d0 + 12 + dlen - dbody) / 2),
        ("previous version's location", dprev.start + 1),
        ("last byte", d0 + 12 + dlen - 1),
        ("version", dversion),
    ] {
        damaged_case(&g, &format!("delta {what} flipped"), d, &[d], |bytes| {
            bytes[at] ^= 0x01;
        });
    }
    for (what, at) in [
        ("first byte", bbody),
        ("middle", bbody + (b0 + 12 + blen - bbody) / 2),
        ("last byte", b0 + 12 + blen - 1),
        ("kind", b0 + 8),
    ] {
        damaged_case(&g, &format!("base {what} flipped"), b, &[b], |bytes| {
            bytes[at] ^= 0x40;
        });
    }

    // Damage that passes the checksum: the structural checks must catch it.
    damaged_case(
        &g,
        "delta: another base item count (CRC fixed)",
        d,
        &[d],
        |bytes| {
            bytes[dbody] ^= 0x02;
            fix_crc(bytes, d0);
        },
    );
    // Bit 0 of a varint's first byte: the same length, another value.
    damaged_case(&g, "delta: another version (CRC fixed)", d, &[d], |bytes| {
        bytes[dversion] ^= 0x01;
        fix_crc(bytes, d0);
    });
    damaged_case(
        &g,
        "delta: another logical id (CRC fixed)",
        d,
        &[d],
        |bytes| {
            bytes[dlogical] ^= 0x01;
            fix_crc(bytes, d0);
        },
    );
    damaged_case(&g, "delta: an unknown op (CRC fixed)", d, &[d], |bytes| {
        // base count and item count are one-byte varints here (< 128 items).
        assert!(bytes[dbody] < 0x80 && bytes[dbody + 1] < 0x80);
        bytes[dbody + 2] = 0x77;
        fix_crc(bytes, d0);
    });
    damaged_case(
        &g,
        "delta: a run past its base (CRC fixed)",
        d,
        &[d],
        |bytes| {
            // The first op is a keep or drop run (the changed keys are not the leaf's first).
            let op = bytes[dbody + 2];
            assert!(op == 1 || op == 2, "first op {op}");
            bytes[dbody + 3] = 0x7F;
            fix_crc(bytes, d0);
        },
    );
    damaged_case(
        &g,
        "base: version of the delta (CRC fixed)",
        b,
        &[b],
        |bytes| {
            // Both versions are one-byte varints here.
            assert!(bversion.len() == 1 && g.entry.version < 0x80);
            bytes[bversion.start] = g.entry.version as u8;
            fix_crc(bytes, b0);
        },
    );
    damaged_case(
        &g,
        "base: another logical id (CRC fixed)",
        b,
        &[b],
        |bytes| {
            bytes[blogical.start] ^= 0x01;
            fix_crc(bytes, b0);
        },
    );
    damaged_case(&g, "base: a delta record (CRC fixed)", b, &[b], |bytes| {
        bytes[b0 + 8] = KIND_DELTA;
        fix_crc(bytes, b0);
    });
    // The chain: the delta before the newest, and where the newest says it is.
    let m = g.chain[1];
    let m0 = m.off as usize;
    let mseg = std::fs::read(seg_path(&g.path(), m.seg)).unwrap();
    let mlen = le_u32(&mseg, m0 + 4) as usize;
    let mpay = &mseg[m0 + 12..m0 + 12 + mlen];
    let mversion = m0 + 12 + image_fields(mpay)[2].start;
    let mprev = delta_prev_range(mpay);
    let mprev = m0 + 12 + mprev.start..m0 + 12 + mprev.end;
    damaged_case(&g, "earlier delta: middle flipped", m, &[m], |bytes| {
        bytes[mprev.end + (m0 + 12 + mlen - mprev.end) / 2] ^= 0x01;
    });
    damaged_case(
        &g,
        "earlier delta: another version (CRC fixed)",
        m,
        &[m],
        |bytes| {
            bytes[mversion] ^= 0x01;
            fix_crc(bytes, m0);
        },
    );
    damaged_case(
        &g,
        "delta: skips the version before it (CRC fixed)",
        d,
        &[d, g.chain[2]],
        |bytes| {
            // The version it applies to replaced by the one the version before it applies to
            // (locations in one segment, of encodings as long).
            assert_eq!(dprev.len(), mprev.len());
            let skip: Vec<u8> = bytes[mprev.clone()].to_vec();
            bytes[dprev.clone()].copy_from_slice(&skip);
            fix_crc(bytes, d0);
        },
    );
    damaged_case(
        &g,
        "delta: names its base directly (CRC fixed)",
        d,
        &[d],
        |bytes| {
            let mut base = Vec::new();
            for v in [u64::from(b.seg), b.off, u64::from(b.len)] {
                put_varint(&mut base, v);
            }
            // As long as the encoding it replaces (the record keeps its length): the length's
            // varint padded with continuation bytes, which read as the same number.
            assert!(base.len() <= dprev.len());
            while base.len() < dprev.len() {
                *base.last_mut().unwrap() |= 0x80;
                base.push(0);
            }
            bytes[dprev.clone()].copy_from_slice(&base);
            fix_crc(bytes, d0);
        },
    );
    let mut base_or_chain = vec![b];
    base_or_chain.extend(&g.chain);
    damaged_case(
        &g,
        "base: one item fewer (CRC fixed)",
        b,
        &base_or_chain,
        |bytes| {
            assert!(bytes[bbody + 1] < 0x80);
            bytes[bbody + 1] -= 1;
            fix_crc(bytes, b0);
        },
    );
}

#[test]
fn crc32c_matches_the_engine() {
    assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
    assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
}
