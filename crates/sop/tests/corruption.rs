//! Corruption tests: damage every kind of file the engine writes and check that the engine
//! either reports a clean [`Error::Corruption`] naming the damaged file and an offset, or — only
//! where the documented recovery policy allows it — drops a torn tail of the last log segment
//! and shows a consistent prefix of the committed transactions. Never a panic, never wrong
//! data returned silently.
//!
//! Each layout is built once into a "golden" folder (never opened again); every case copies
//! it, damages the copy (one flipped byte, or a truncation), reopens it and reads everything
//! (iteration of every store, a point lookup of every key, `verify`).
//!
//! The policy (see `sop::log`): recovery applies the commit records after the checkpoint; the
//! first invalid record of the *last* segment ends the log (torn tail) unless a commit of a
//! later sync batch follows it; in a sealed segment it is corruption. Records before the
//! checkpoint are checked (CRC, registry version) when read, and by `verify`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use sop::{Database, DatabaseOptions, Error, StoreOptions, TransactionMode, ValuePlacement};

const SEG_HEADER: u64 = 32;
const REC_HEADER: u64 = 12;
const KIND_NODE: u8 = 1;
const KIND_BLOB: u8 = 2;
const KIND_COMMIT: u8 = 3;
const KIND_DELTA: u8 = 6;

// ---------------------------------------------------------------------------------------------
// Workloads and models
// ---------------------------------------------------------------------------------------------

const INL: &str = "inl";
const BLOB: &str = "blob";
/// Stores of the delta layouts: large leaves, so small commits write leaf deltas (ADR 0005).
const DLT: &str = "dlt";
const DLT_BLOB: &str = "dltblob";

/// One change: `Some(value)` sets the key, `None` removes it.
type Op = (&'static str, Vec<u8>, Option<Vec<u8>>);
/// Store name -> key -> value.
type Model = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn value(commit: usize, i: u32, len: usize) -> Vec<u8> {
    let mut v = format!("c{commit}-i{i}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + ((commit as u32 * 7 + i + v.len() as u32) % 26) as u8);
    }
    v
}

fn store_options(name: &str) -> StoreOptions {
    StoreOptions {
        slot_length: if name == DLT || name == DLT_BLOB {
            64
        } else {
            4
        },
        value_placement: if name == BLOB || name == DLT_BLOB {
            ValuePlacement::SeparateBlob
        } else {
            ValuePlacement::InNode
        },
        ..StoreOptions::default()
    }
}

/// The commits of a layout. Commit 1 creates both stores.
fn commits(big: bool) -> Vec<Vec<Op>> {
    let n_commits = if big { 14 } else { 6 };
    let mut out = Vec::new();
    for c in 1..=n_commits {
        let mut ops: Vec<Op> = Vec::new();
        let base = (c as u32) * 10;
        for i in base..base + 6 {
            ops.push((INL, key(i), Some(value(c, i, 30))));
        }
        let blob_items = if big { 12 } else { 4 };
        let blob_len = if big { 2500 } else { 150 };
        for i in base..base + blob_items {
            ops.push((BLOB, key(i), Some(value(c, i, blob_len))));
        }
        if c > 1 {
            // Update and remove items of earlier commits.
            let prev = base - 10;
            ops.push((INL, key(prev), Some(value(c, prev, 12))));
            ops.push((INL, key(prev + 1), None));
            ops.push((BLOB, key(prev + 2), Some(value(c, prev + 2, 40))));
            ops.push((BLOB, key(prev + 3), None));
        }
        out.push(ops);
    }
    out
}

/// The commits of the delta layouts: commit 1 creates two stores of one large leaf each, the
/// others change an item or two, which writes a leaf delta over the leaf's last full image.
fn delta_commits() -> Vec<Vec<Op>> {
    let mut first: Vec<Op> = Vec::new();
    for i in 0..40 {
        first.push((DLT, key(i), Some(value(1, i, 60))));
    }
    for i in 0..30 {
        first.push((DLT_BLOB, key(i), Some(value(1, i, 150))));
    }
    let mut out = vec![first];
    for c in 2..=9usize {
        let i = (c as u32 * 7) % 40;
        let mut ops: Vec<Op> = vec![(DLT, key(i), Some(value(c, i, 50)))];
        if c % 3 == 0 {
            ops.push((DLT, key(i + 1), None));
        }
        if c % 2 == 0 {
            ops.push((DLT_BLOB, key(i % 30), Some(value(c, i, 120))));
        }
        out.push(ops);
    }
    out
}

fn apply(m: &mut Model, ops: &[Op]) {
    for (store, k, v) in ops {
        let s = m.entry((*store).to_owned()).or_default();
        match v {
            Some(v) => {
                s.insert(k.clone(), v.clone());
            }
            None => {
                s.remove(k);
            }
        }
    }
}

fn run_commit(db: &Database, n: usize, ops: &[Op]) {
    let tx = db.begin(TransactionMode::ForWriting).unwrap();
    let mut handles = BTreeMap::new();
    if n == 1 {
        // Commit 1 creates the stores it names.
        for s in ops.iter().map(|o| o.0).collect::<BTreeSet<_>>() {
            handles.insert(s, tx.new_raw_btree(s, store_options(s)).unwrap());
        }
    }
    for (store, k, v) in ops {
        let h = handles
            .entry(*store)
            .or_insert_with(|| tx.open_raw_btree(store).unwrap());
        match v {
            Some(v) => {
                h.upsert(k, v).unwrap();
            }
            None => {
                h.remove(k).unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Golden databases
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One segment, no checkpoint: every commit is replayed at open.
    Small,
    /// One segment, a checkpoint after commit 3.
    SmallCheckpoint,
    /// 64 KiB segments, several of them sealed, no checkpoint.
    Multi,
    /// 64 KiB segments, a checkpoint in the middle.
    MultiCheckpoint,
    /// Small commits into large leaves (leaf deltas), one segment, no checkpoint.
    Deltas,
    /// As `Deltas`, with a checkpoint before the last two commits: most deltas and their bases
    /// are read only when a key needs them.
    DeltasCheckpoint,
}

struct Golden {
    layout: Layout,
    dir: tempfile::TempDir,
    /// `models[j]` = the state after the first `j` commits.
    models: Vec<Model>,
}

impl Golden {
    fn k(&self) -> usize {
        self.models.len() - 1
    }

    fn options(&self, path: &Path) -> DatabaseOptions {
        options(self.layout, path)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn segments(&self) -> Vec<u32> {
        let mut segs: Vec<u32> = std::fs::read_dir(self.log())
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

    /// (segment, offset) of the checkpoint, if there is one.
    fn checkpoint_position(&self) -> Option<(u32, u64)> {
        let b = std::fs::read(self.dir.path().join("checkpoint.sop")).ok()?;
        // docs/FORMAT.md: 24-byte header, then seq u64 | log segment u32 | log offset u64 | ...
        let p = &b[24..];
        let seg = u32::from_le_bytes(p[8..12].try_into().unwrap());
        let off = u64::from_le_bytes(p[12..20].try_into().unwrap());
        assert!(
            self.segments().contains(&seg) && off >= SEG_HEADER,
            "checkpoint position ({seg}, {off}) misparsed (did the format change?)"
        );
        Some((seg, off))
    }
}

fn options(layout: Layout, path: &Path) -> DatabaseOptions {
    // No checkpoint at close: each layout places its checkpoint (or none) itself.
    let base = DatabaseOptions {
        checkpoint_on_close: false,
        ..DatabaseOptions::new(path)
    };
    match layout {
        Layout::Small | Layout::SmallCheckpoint | Layout::Deltas | Layout::DeltasCheckpoint => base,
        Layout::Multi | Layout::MultiCheckpoint => DatabaseOptions {
            segment_bytes: 1 << 16,
            ..base
        },
    }
}

fn build(layout: Layout) -> Golden {
    let dir = scratch();
    let big = matches!(layout, Layout::Multi | Layout::MultiCheckpoint);
    let deltas = matches!(layout, Layout::Deltas | Layout::DeltasCheckpoint);
    let all = if deltas {
        delta_commits()
    } else {
        commits(big)
    };
    let checkpoint_after = match layout {
        Layout::Small | Layout::Multi | Layout::Deltas => None,
        Layout::SmallCheckpoint => Some(3),
        Layout::MultiCheckpoint => Some(all.len() / 2),
        Layout::DeltasCheckpoint => Some(all.len() - 2),
    };
    let mut models = vec![Model::new()];
    {
        let db = Database::open(options(layout, dir.path())).unwrap();
        for (i, ops) in all.iter().enumerate() {
            run_commit(&db, i + 1, ops);
            let mut m = models.last().unwrap().clone();
            if i == 0 {
                for (store, _, _) in ops {
                    m.insert((*store).into(), BTreeMap::new());
                }
            }
            apply(&mut m, ops);
            models.push(m);
            if checkpoint_after == Some(i + 1) {
                db.checkpoint().unwrap();
            }
        }
        let r = db.verify().unwrap();
        assert!(r.is_ok(), "{layout:?}: {r:?}");
    }
    let g = Golden {
        layout,
        dir,
        models,
    };
    if big {
        assert!(
            g.segments().len() >= 3,
            "{layout:?}: expected several segments, got {:?}",
            g.segments()
        );
    }
    assert_eq!(
        g.checkpoint_position().is_some(),
        checkpoint_after.is_some()
    );
    g
}

// ---------------------------------------------------------------------------------------------
// Log structure
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Rec {
    off: u64,
    payload: u64,
    kind: u8,
    /// For a commit record: whether it is the engine's own housekeeping commit, which moves
    /// records to compact a segment.
    housekeeping: Option<bool>,
}

/// Where the engine's housekeeping after the last commit begins in a segment: records from
/// there on belong to a relocation commit (same contents at new places), which a torn tail
/// may drop without losing anything.
fn housekeeping_from(recs: &[Rec]) -> u64 {
    let mut from = u64::MAX;
    for r in recs.iter().rev() {
        match r.housekeeping {
            Some(true) => from = r.off,
            Some(false) => break,
            None => {}
        }
    }
    // The images framed before a relocation commit in the same write belong to it too.
    recs.iter()
        .rev()
        .skip_while(|r| r.off >= from)
        .take_while(|r| r.housekeeping.is_none())
        .last()
        .map_or(from, |r| if from == u64::MAX { from } else { r.off })
}

fn records(seg: &Path) -> Vec<Rec> {
    let b = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut pos = SEG_HEADER as usize;
    while pos + REC_HEADER as usize <= b.len() {
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as u64;
        let kind = b[pos + 8];
        let p = pos + REC_HEADER as usize;
        out.push(Rec {
            off: pos as u64,
            payload: len,
            kind,
            // Commit payload: seq varint | durable varint | flags u8 (2 = housekeeping) | ...
            housekeeping: (kind == KIND_COMMIT).then(|| {
                let mut at = p;
                for _ in 0..2 {
                    while b[at] & 0x80 != 0 {
                        at += 1;
                    }
                    at += 1;
                }
                b[at] & 2 != 0
            }),
        });
        pos += ((REC_HEADER + len + 7) & !7) as usize;
    }
    assert_eq!(pos, b.len(), "{} does not end on a record", seg.display());
    out
}

fn seg_name(seg: u32) -> String {
    format!("{seg:010}.seg")
}

/// Offsets inside a record that a CRC covers (not the padding); fewer when `few`.
fn record_offsets(r: &Rec, few: bool) -> Vec<u64> {
    let end = REC_HEADER + r.payload;
    if few {
        return [0, 5, 8, REC_HEADER + r.payload / 2]
            .into_iter()
            .map(|o| r.off + o)
            .collect();
    }
    let mut v: Vec<u64> = [
        0,
        3,
        5,
        8,
        10,
        REC_HEADER,
        REC_HEADER + r.payload / 2,
        end - 1,
    ]
    .into_iter()
    .filter(|o| *o < end)
    .map(|o| r.off + o)
    .collect();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

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

fn flip(path: &Path, off: u64, mask: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[off as usize] ^= mask;
    std::fs::write(path, b).unwrap();
}

fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

#[derive(Debug)]
enum Outcome {
    OpenErr(Error),
    ReadErr(Error),
    /// Everything read fine: the data equals `models[j]`; `problems` are verify's findings.
    Data {
        j: usize,
        problems: Vec<String>,
    },
}

/// Reads every store (iteration, and a lookup of every key any model knows).
fn read_all(db: &Database, keys: &BTreeSet<Vec<u8>>) -> sop::Result<Model> {
    let tx = db.begin(TransactionMode::ForReading)?;
    let mut out = Model::new();
    for name in tx.stores()? {
        let s = tx.open_raw_btree(&name)?;
        let mut items = BTreeMap::new();
        for it in s.iter() {
            let it = it?;
            items.insert(it.key, it.value);
        }
        for k in keys {
            let got = s.get(k)?;
            assert_eq!(
                got.as_ref(),
                items.get(k),
                "store {name}: get({}) disagrees with iteration",
                String::from_utf8_lossy(k)
            );
        }
        if s.count()? != items.len() as u64 {
            return Err(Error::InvalidArgument(format!(
                "WRONG DATA: store {name} counts {} items but iterates {}",
                s.count()?,
                items.len()
            )));
        }
        out.insert(name, items);
    }
    Ok(out)
}

/// A scratch folder, in memory when possible: every case opens a database, and recovery
/// syncs, which on a disk costs more than everything else the case does.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("sop-corruption")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn run_case(g: &Golden, label: &str, damage: impl FnOnce(&Path)) -> Outcome {
    let work = scratch();
    let dir = work.path().join("db");
    copy_dir(g.dir.path(), &dir);
    damage(&dir);
    let keys: BTreeSet<Vec<u8>> = g
        .models
        .iter()
        .flat_map(|m| m.values().flat_map(|s| s.keys().cloned()))
        .collect();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let db = match Database::open(g.options(&dir)) {
            Ok(db) => db,
            Err(e) => return Outcome::OpenErr(e),
        };
        let data = match read_all(&db, &keys) {
            Ok(d) => d,
            Err(e) => return Outcome::ReadErr(e),
        };
        let Some(j) = g.models.iter().position(|m| *m == data) else {
            panic!("WRONG DATA: the data read matches no prefix of the commits: {data:?}");
        };
        match db.verify() {
            Ok(r) => Outcome::Data {
                j,
                problems: r.problems,
            },
            Err(e) => Outcome::ReadErr(e),
        }
    }));
    match r {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{:?} {label}: panic: {msg}", g.layout);
        }
    }
}

/// What a case may produce.
#[derive(Debug, Clone)]
struct Expect {
    /// Names of which one must appear in a corruption error (the damaged file, or for damage
    /// that shows only later, the files where it may show).
    names: Vec<String>,
    /// The smallest number of commits the data may keep without an error (`k`: no loss).
    min_j: usize,
    /// The damage may be harmless: it only removed records nothing needs any more (garbage
    /// before the checkpoint), so clean reads of all the data are fine.
    harmless_ok: bool,
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    open_err: usize,
    read_err: usize,
    verify_found: usize,
    torn_tail: usize,
    harmless: usize,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, g: &Golden, label: &str, exp: &Expect, o: Outcome) {
        self.cases += 1;
        let k = g.k();
        let fail = |why: String| format!("{:?} {label}: {why}", g.layout);
        let check_err = |e: &Error| -> Option<String> {
            let msg = e.to_string();
            if !e.is_corruption() {
                return Some(fail(format!("not a corruption error: {e:?}")));
            }
            if !exp.names.iter().any(|n| msg.contains(n.as_str())) || !msg.contains("at offset") {
                return Some(fail(format!(
                    "the error does not name the file ({:?}) and offset: {msg}",
                    exp.names
                )));
            }
            // The offset lies inside the file as it was before the damage.
            if let Error::Corruption { file, offset, .. } = e {
                let name = file.file_name().unwrap_or_default();
                let golden = [g.dir.path().join(name), g.log().join(name)]
                    .into_iter()
                    .find_map(|p| std::fs::metadata(p).ok().filter(|m| m.is_file()));
                if let Some(m) = golden
                    && *offset > m.len()
                {
                    return Some(fail(format!(
                        "offset {offset} lies past the end of the file ({} bytes): {msg}",
                        m.len()
                    )));
                }
            }
            None
        };
        match o {
            Outcome::OpenErr(e) => {
                self.open_err += 1;
                if let Some(f) = check_err(&e) {
                    self.failures.push(f);
                }
            }
            Outcome::ReadErr(e) => {
                self.read_err += 1;
                if let Some(f) = check_err(&e) {
                    self.failures.push(f);
                }
            }
            Outcome::Data { j, problems } if j == k => {
                if problems.is_empty() && exp.harmless_ok {
                    self.harmless += 1;
                } else if problems.is_empty() {
                    self.failures.push(fail(
                        "the damage went unnoticed (open, reads and verify all clean)".into(),
                    ));
                } else {
                    self.verify_found += 1;
                    if !problems
                        .iter()
                        .any(|p| exp.names.iter().any(|n| p.contains(n)))
                    {
                        self.failures.push(fail(format!(
                            "verify's problems do not name the file ({:?}): {problems:?}",
                            exp.names
                        )));
                    }
                }
            }
            Outcome::Data { j, problems } => {
                self.torn_tail += 1;
                if j < exp.min_j {
                    self.failures.push(fail(format!(
                        "silently lost committed transactions: {j} of {k} survive, the policy \
                         allows dropping at most down to {}",
                        exp.min_j
                    )));
                }
                if !problems.is_empty() {
                    self.failures.push(fail(format!(
                        "after dropping a torn tail verify still reports: {problems:?}"
                    )));
                }
            }
        }
    }

    fn finish(self, what: &str) {
        eprintln!(
            "{what}: {} cases: {} open errors, {} read errors, {} found by verify, {} torn tails, \
             {} harmless",
            self.cases,
            self.open_err,
            self.read_err,
            self.verify_found,
            self.torn_tail,
            self.harmless
        );
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} cases failed:\n{}",
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Log segments
// ---------------------------------------------------------------------------------------------

/// Which records of a segment to damage: all of them for small logs, a sample for big ones.
fn pick(recs: &[Rec], all: bool) -> Vec<Rec> {
    if all || recs.len() <= 12 {
        return recs.to_vec();
    }
    let mut picked: Vec<Rec> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut take = |r: &Rec, picked: &mut Vec<Rec>| {
        if seen.insert(r.off) {
            picked.push(*r);
        }
    };
    for r in recs.iter().take(3).chain(recs.iter().rev().take(3)) {
        take(r, &mut picked);
    }
    // One of each kind, and every few commit records.
    for kind in [KIND_NODE, KIND_BLOB, KIND_COMMIT] {
        if let Some(r) = recs.iter().find(|r| r.kind == kind) {
            take(r, &mut picked);
        }
    }
    for r in recs.iter().filter(|r| r.kind == KIND_COMMIT).step_by(3) {
        take(r, &mut picked);
    }
    picked.sort_by_key(|r| r.off);
    picked
}

fn damage_log(layout: Layout) {
    let g = build(layout);
    let k = g.k();
    let segs = g.segments();
    let last = *segs.last().unwrap();
    let ckpt = g.checkpoint_position();
    eprintln!("{layout:?}: segments {segs:?}, checkpoint at {ckpt:?}");
    let all = !matches!(layout, Layout::Multi | Layout::MultiCheckpoint);
    let mut tally = Tally::default();
    let mut kinds = BTreeSet::new();
    let any_seg: Vec<String> = segs.iter().map(|s| seg_name(*s)).collect();

    for &seg in &segs {
        let name = seg_name(seg);
        let rel = PathBuf::from("log").join(&name);
        let exact = Expect {
            names: vec![name.clone()],
            min_j: k,
            harmless_ok: false,
        };
        // The segment header.
        for (i, off) in [0u64, 4, 7, 8, 11, 12, 15, 16, 27, 28, 31]
            .into_iter()
            .enumerate()
        {
            let mask = if i % 2 == 0 { 0x01 } else { 0xFF };
            let label = format!("{name}: header byte {off} ^ {mask:#x}");
            let o = run_case(&g, &label, |d| flip(&d.join(&rel), off, mask));
            tally.check(&g, &label, &exact, o);
        }
        for len in [0u64, 1, 16, 31] {
            let label = format!("{name}: truncated to {len} (header)");
            let o = run_case(&g, &label, |d| truncate(&d.join(&rel), len));
            // A last segment shorter than its header is a torn segment creation (recreated
            // empty) unless the checkpoint or recovery starts in it.
            let exp = if seg == last {
                Expect {
                    names: vec![name.clone()],
                    min_j: 0,
                    harmless_ok: false,
                }
            } else {
                exact.clone()
            };
            tally.check(&g, &label, &exp, o);
        }
        // The records.
        let recs = records(&g.log().join(&name));
        let tail = if seg == last {
            housekeeping_from(&recs)
        } else {
            u64::MAX
        };
        for r in pick(&recs, all) {
            kinds.insert(r.kind);
            let replayed = ckpt.is_none_or(|c| (seg, r.off) >= c);
            // Only a replayed record of the last segment may be taken for a torn tail, and
            // then only the last commit may be dropped (or nothing, when the damage hits a
            // relocation written after the last commit).
            let flip_exp = if seg == last && replayed {
                Expect {
                    names: vec![name.clone()],
                    min_j: k - 1,
                    harmless_ok: r.off >= tail,
                }
            } else {
                exact.clone()
            };
            for (i, off) in record_offsets(&r, !all).into_iter().enumerate() {
                let mask = if i % 2 == 0 { 0x01 } else { 0xFF };
                let label = format!(
                    "{name}: record kind {} at {}, byte {off} ^ {mask:#x}",
                    r.kind, r.off
                );
                let o = run_case(&g, &label, |d| flip(&d.join(&rel), off, mask));
                tally.check(&g, &label, &flip_exp, o);
            }
            // Truncation at the record start, inside its header, inside its payload. In the
            // last segment any prefix of the commits may remain (a log cut at a record
            // boundary cannot be told from a shorter log); in a sealed one it is corruption,
            // which may show in the next segment (a gap in the commit sequence) — except that
            // a cut at a record boundary of a segment wholly before the checkpoint may remove
            // only garbage, which nothing needs.
            for off in [r.off, r.off + 6, r.off + REC_HEADER + r.payload / 2] {
                let exp = if seg == last {
                    Expect {
                        names: vec![name.clone()],
                        min_j: 0,
                        harmless_ok: r.off >= tail,
                    }
                } else {
                    Expect {
                        names: any_seg.clone(),
                        min_j: k,
                        harmless_ok: off == r.off && ckpt.is_some_and(|c| seg < c.0),
                    }
                };
                let label = format!(
                    "{name}: record kind {} at {}, truncated to {off}",
                    r.kind, r.off
                );
                let o = run_case(&g, &label, |d| truncate(&d.join(&rel), off));
                tally.check(&g, &label, &exp, o);
            }
        }
    }
    assert!(
        kinds.contains(&KIND_NODE) && kinds.contains(&KIND_BLOB) && kinds.contains(&KIND_COMMIT),
        "{layout:?}: not every record kind was damaged: {kinds:?}"
    );
    if matches!(layout, Layout::Deltas | Layout::DeltasCheckpoint) {
        let n = segs
            .iter()
            .flat_map(|s| records(&g.log().join(seg_name(*s))))
            .filter(|r| r.kind == KIND_DELTA)
            .count();
        assert!(n >= 8, "{layout:?}: only {n} leaf delta records");
        assert!(kinds.contains(&KIND_DELTA));
    }
    if segs.len() > 1 {
        // A sealed segment that disappears.
        let mid = segs[segs.len() / 2];
        let label = format!("{} removed", seg_name(mid));
        let o = run_case(&g, &label, |d| {
            std::fs::remove_file(d.join("log").join(seg_name(mid))).unwrap();
        });
        tally.check(
            &g,
            &label,
            &Expect {
                names: any_seg.clone(),
                min_j: k,
                // Before the checkpoint a segment may hold nothing live any more.
                harmless_ok: ckpt.is_some_and(|c| mid < c.0),
            },
            o,
        );
    }
    tally.finish(&format!("{layout:?} log"));
}

#[test]
fn damaged_log_one_segment_no_checkpoint() {
    damage_log(Layout::Small);
}

#[test]
fn damaged_log_one_segment_with_checkpoint() {
    damage_log(Layout::SmallCheckpoint);
}

#[test]
fn damaged_log_sealed_segments_no_checkpoint() {
    damage_log(Layout::Multi);
}

#[test]
fn damaged_log_sealed_segments_with_checkpoint() {
    damage_log(Layout::MultiCheckpoint);
}

/// Every byte class of every leaf delta and of the full images the deltas apply to.
#[test]
fn damaged_log_leaf_deltas_no_checkpoint() {
    damage_log(Layout::Deltas);
}

#[test]
fn damaged_log_leaf_deltas_with_checkpoint() {
    damage_log(Layout::DeltasCheckpoint);
}

/// Every commit record of a sealed segment, damaged: recovery must refuse to open (a sealed
/// segment never has a torn tail).
#[test]
fn damaged_commit_record_in_sealed_segment_fails_open() {
    let g = build(Layout::Multi);
    let segs = g.segments();
    let sealed = &segs[..segs.len() - 1];
    let mut n = 0;
    for &seg in sealed {
        let name = seg_name(seg);
        let rel = PathBuf::from("log").join(&name);
        for r in records(&g.log().join(&name))
            .into_iter()
            .filter(|r| r.kind == KIND_COMMIT)
        {
            let off = r.off + REC_HEADER + r.payload / 2;
            let label = format!("{name}: commit at {} byte {off}", r.off);
            match run_case(&g, &label, |d| flip(&d.join(&rel), off, 0x40)) {
                Outcome::OpenErr(e) => {
                    assert!(e.is_corruption(), "{label}: {e:?}");
                    let msg = e.to_string();
                    assert!(msg.contains(&name), "{label}: {msg}");
                    assert!(msg.contains(&format!("offset {}", r.off)), "{label}: {msg}");
                }
                o => panic!("{label}: open did not fail: {o:?}"),
            }
            n += 1;
        }
    }
    assert!(n > 0);
}

// ---------------------------------------------------------------------------------------------
// checkpoint.sop
// ---------------------------------------------------------------------------------------------

#[test]
fn damaged_checkpoint() {
    let g = build(Layout::SmallCheckpoint);
    let k = g.k();
    let path = g.dir.path().join("checkpoint.sop");
    let len = std::fs::metadata(&path).unwrap().len();
    let exp = Expect {
        names: vec!["checkpoint.sop".into()],
        min_j: k,
        harmless_ok: false,
    };
    let mut tally = Tally::default();
    // Every byte of the header and the fixed fields, then a sample of the catalog and registry.
    let sampled = |off: u64, stride: u64| off < 80 || off.is_multiple_of(stride) || off + 1 == len;
    for off in 0..len {
        for (mask, stride) in [(0x01u8, 3), (0xFF, 7)] {
            if !sampled(off, stride) {
                continue;
            }
            let label = format!("checkpoint.sop byte {off} ^ {mask:#x}");
            let o = run_case(&g, &label, |d| flip(&d.join("checkpoint.sop"), off, mask));
            tally.check(&g, &label, &exp, o);
        }
    }
    for to in (0..len).filter(|o| sampled(*o, 5)) {
        let label = format!("checkpoint.sop truncated to {to}");
        let o = run_case(&g, &label, |d| truncate(&d.join("checkpoint.sop"), to));
        tally.check(&g, &label, &exp, o);
    }
    tally.finish("checkpoint.sop");
}

// ---------------------------------------------------------------------------------------------
// dboptions.json
// ---------------------------------------------------------------------------------------------

#[test]
fn damaged_options_file() {
    let g = build(Layout::Small);
    let path = g.dir.path().join("dboptions.json");
    let bytes = std::fs::read(&path).unwrap();
    let header_end = bytes.iter().position(|b| *b == b'\n').unwrap();
    let header = std::str::from_utf8(&bytes[..header_end]).unwrap();
    assert!(header.starts_with("SOP-OPTIONS format=1 "), "{header}");
    let magic = "SOP-OPTIONS ".len() as u64;
    let format_digit = "SOP-OPTIONS format=".len() as u64;
    let mut cases = 0;
    let mut check = |label: String, off: Option<u64>, o: Outcome| {
        cases += 1;
        match o {
            Outcome::OpenErr(e) => {
                let msg = e.to_string();
                match &e {
                    Error::Corruption { file, .. } => assert!(
                        file.ends_with("dboptions.json") && msg.contains("at offset"),
                        "{label}: {msg}"
                    ),
                    // A damaged magic makes it "not a database file".
                    Error::NotADatabase { .. } if off.is_some_and(|o| o < magic) => {
                        assert!(msg.contains("dboptions.json"), "{label}: {msg}");
                    }
                    // Another format digit is another format version.
                    Error::IncompatibleOptions(_) if off == Some(format_digit) => {}
                    _ => panic!("{label}: unexpected error {e:?}"),
                }
            }
            o => panic!("{label}: the damaged options file was accepted: {o:?}"),
        }
    };
    for off in 0..bytes.len() as u64 {
        for mask in [0x01u8, 0xFF] {
            let label = format!("dboptions.json byte {off} ^ {mask:#x}");
            let o = run_case(&g, &label, |d| flip(&d.join("dboptions.json"), off, mask));
            check(label, Some(off), o);
        }
    }
    for to in 0..bytes.len() as u64 {
        let label = format!("dboptions.json truncated to {to}");
        let o = run_case(&g, &label, |d| truncate(&d.join("dboptions.json"), to));
        check(label, None, o);
    }
    eprintln!("dboptions.json: {cases} cases");
}

#[test]
fn options_file_of_another_format_version_is_incompatible() {
    let g = build(Layout::Small);
    let o = run_case(&g, "format=2", |d| {
        let path = d.join("dboptions.json");
        let bytes = std::fs::read(&path).unwrap();
        let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        let header = std::str::from_utf8(&bytes[..nl]).unwrap();
        let header = header.replace("format=1", "format=2");
        let mut out = header.into_bytes();
        out.extend_from_slice(&bytes[nl..]);
        std::fs::write(&path, out).unwrap();
    });
    match o {
        Outcome::OpenErr(Error::IncompatibleOptions(msg)) => {
            assert!(msg.contains('2'), "{msg}");
        }
        o => panic!("expected IncompatibleOptions, got {o:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Not a database
// ---------------------------------------------------------------------------------------------

#[test]
fn folder_with_other_files_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut junk = vec![0u8; 100];
    fastrand::fill(&mut junk);
    std::fs::write(dir.path().join("notes.bin"), &junk).unwrap();
    match Database::open(DatabaseOptions::new(dir.path())) {
        Err(Error::NotADatabase { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("expected NotADatabase, got {other:?}"),
    }
    // Nothing was created in it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.bin"]);

    // A folder holding only a subfolder is not one either.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    assert!(matches!(
        Database::open(DatabaseOptions::new(dir.path())),
        Err(Error::NotADatabase { .. })
    ));

    // An options file that is not ours.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dboptions.json"), b"{\"path\": \"x\"}\n").unwrap();
    assert!(matches!(
        Database::open(DatabaseOptions::new(dir.path())),
        Err(Error::NotADatabase { .. })
    ));
}
