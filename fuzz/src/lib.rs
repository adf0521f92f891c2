//! Helpers shared by the fuzz targets: building in-memory database folders that hold fuzzed
//! files, and wrapping fuzzed payloads in valid headers/checksums so the fuzzer gets past the
//! CRC checks and reaches the structural decoders.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sop::codec::crc32c;
use sop::storage::{MemoryStorage, OpenMode, Storage};
use sop::{Database, DatabaseOptions, StoreOptions, TransactionMode};

/// The database folder used by every target.
pub const DB: &str = "/db";

/// The files of a database folder, path -> bytes.
pub type Files = Vec<(PathBuf, Vec<u8>)>;

/// Writes `bytes` as `path` (creating the parent folder) and makes it durable.
pub fn put_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        storage.create_dir_all(parent).expect("mkdir in memory");
    }
    if storage.exists(path) {
        storage.remove(path).expect("remove in memory");
    }
    let f = storage.open(path, OpenMode::CreateNew).expect("create in memory");
    f.write_at(bytes, 0).expect("write in memory");
    f.sync().expect("sync in memory");
    if let Some(parent) = path.parent() {
        storage.sync_dir(parent).expect("sync dir in memory");
    }
}

/// Reads a whole file.
pub fn get_file(storage: &dyn Storage, path: &Path) -> Vec<u8> {
    let f = storage.open(path, OpenMode::Read).expect("open in memory");
    let len = f.len().expect("len") as usize;
    let mut buf = vec![0u8; len];
    f.read_at(&mut buf, 0).expect("read in memory");
    buf
}

/// Every file under `dir` (recursively).
pub fn snapshot(storage: &dyn Storage, dir: &Path) -> Files {
    let mut out = Vec::new();
    for name in storage.list(dir).expect("list") {
        let p = dir.join(&name);
        match storage.open(&p, OpenMode::Read) {
            Ok(f) => {
                let len = f.len().expect("len") as usize;
                let mut buf = vec![0u8; len];
                f.read_at(&mut buf, 0).expect("read");
                out.push((p, buf));
            }
            Err(_) => out.extend(snapshot(storage, &p)),
        }
    }
    out
}

/// A fresh memory storage holding `files` (minus the lock file).
pub fn storage_with(files: &Files) -> MemoryStorage {
    let s = MemoryStorage::new();
    s.create_dir_all(Path::new(DB)).expect("mkdir");
    for (p, b) in files {
        if p.file_name().is_some_and(|n| n.to_string_lossy().contains("lock")) {
            continue;
        }
        put_file(&s, p, b);
    }
    s
}

/// Options of the databases the targets open.
pub fn options() -> DatabaseOptions {
    DatabaseOptions {
        segment_bytes: 1 << 16,
        checkpoint_bytes: 1 << 16,
        node_cache_bytes: 1 << 20,
        ..DatabaseOptions::new(DB)
    }
}

/// A small valid database (a store "s" with a few items, checkpointed), built once.
pub fn template() -> &'static Files {
    static T: OnceLock<Files> = OnceLock::new();
    T.get_or_init(|| {
        let s = MemoryStorage::new();
        let db = Database::open_with_storage(options(), Arc::new(s.clone())).expect("create db");
        let tx = db.begin(TransactionMode::ForWriting).expect("begin");
        let b = tx
            .new_raw_btree(
                "s",
                StoreOptions {
                    slot_length: 4,
                    ..StoreOptions::default()
                },
            )
            .expect("store");
        for i in 0u8..10 {
            b.add(&[b'a' + i], &[i; 3]).expect("add");
        }
        tx.commit().expect("commit");
        db.checkpoint().expect("checkpoint");
        drop(db);
        snapshot(&s, Path::new(DB))
    })
}

/// Checkpoint header constants (see `log/checkpoint.rs`).
pub const CKPT_MAGIC: &[u8; 8] = b"SOPCKPT1";
/// Bytes of the checkpoint header.
pub const CKPT_HEADER: usize = 24;

/// A checkpoint file with a valid header and checksum around `payload`.
pub fn wrap_checkpoint(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CKPT_HEADER + payload.len());
    out.extend_from_slice(CKPT_MAGIC);
    out.extend_from_slice(&sop::log::CHECKPOINT_FORMAT.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// An options file with a valid header (format, CRC, length) around `body`.
pub fn wrap_options(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "SOP-OPTIONS format=1 crc32c={:08x} len={}\n",
        crc32c(body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Appends a LEB128 varint.
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Path of the checkpoint file.
pub fn ckpt_path() -> PathBuf {
    Path::new(DB).join("checkpoint.sop")
}

/// Path of the options file.
pub fn options_path() -> PathBuf {
    Path::new(DB).join("dboptions.json")
}

/// Exercises an opened database a little (reads everything, verifies, writes one item,
/// commits): none of it may panic, errors are fine.
pub fn exercise(db: &Database) {
    let _ = db.verify();
    let _ = db.in_doubt();
    if let Ok(tx) = db.begin(TransactionMode::ForReading)
        && let Ok(names) = tx.stores()
    {
        for n in names {
            if let Ok(b) = tx.open_raw_btree(&n) {
                let _ = b.count();
                for it in b.iter().take(64) {
                    if it.is_err() {
                        break;
                    }
                }
            }
        }
    }
    if let Ok(tx) = db.begin(TransactionMode::ForWriting) {
        if let Ok(b) = tx.open_raw_btree("s") {
            let _ = b.upsert(b"zz", b"fuzz");
            let _ = b.remove(b"a");
        }
        let _ = tx.commit();
    }
    let _ = db.checkpoint();
}

/// The template with, in addition, one prepared (phase 1) transaction left in doubt and a
/// checkpoint holding it; returns the files and the prepare payload.
pub fn template_prepared() -> &'static (Files, Vec<u8>) {
    static T: OnceLock<(Files, Vec<u8>)> = OnceLock::new();
    T.get_or_init(|| {
        let s = storage_with(template());
        let db = Database::open_with_storage(options(), Arc::new(s.clone())).expect("open");
        let tx = db.begin(TransactionMode::ForWriting).expect("begin");
        let b = tx.open_raw_btree("s").expect("open store");
        b.upsert(b"b", b"prepared").expect("upsert");
        b.remove(b"c").expect("remove");
        b.add(b"q", &[7u8; 40]).expect("add");
        let _ = b.get(b"d");
        let _ = b.range(b"e".to_vec()..b"g".to_vec()).count();
        tx.phase1_commit().expect("phase 1");
        std::mem::forget(tx);
        db.checkpoint().expect("checkpoint");
        drop(db);
        let files = snapshot(&s, Path::new(DB));
        let ck = get_file(&s, &ckpt_path());
        let payload = &ck[CKPT_HEADER..];
        let in_doubt = split_in_doubt(payload).expect("template checkpoint has its in-doubt list");
        let p = in_doubt.1.first().cloned().expect("one prepared transaction in the template");
        (files, p)
    })
}

/// Splits a checkpoint payload into (everything before the in-doubt list, the in-doubt
/// payloads). Knows the layout of `log/checkpoint.rs`.
pub fn split_in_doubt(payload: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    use sop::codec::Reader;
    use sop::log::record::{get_entry, get_meta};
    let mut r = Reader::new(payload);
    r.u64("").ok()?;
    r.u32("").ok()?;
    r.u64("").ok()?;
    r.u64("").ok()?;
    r.u64("").ok()?;
    r.u32("").ok()?;
    let n = r.count(4, "").ok()?;
    for _ in 0..n {
        get_meta(&mut r).ok()?;
    }
    let n = r.count(sop::log::record::ENTRY_MIN_BYTES, "").ok()?;
    for _ in 0..n {
        get_entry(&mut r).ok()?;
    }
    let head = payload[..r.pos()].to_vec();
    let n = r.count(17, "").ok()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(r.bytes("").ok()?.to_vec());
    }
    Some((head, out))
}

/// The template-with-prepared files with the in-doubt list of the checkpoint replaced by
/// `payloads`.
pub fn files_with_in_doubt(payloads: &[&[u8]]) -> Files {
    let (files, _) = template_prepared();
    let mut files = files.clone();
    for (p, bytes) in &mut files {
        if *p == ckpt_path() {
            let (mut head, _) = split_in_doubt(&bytes[CKPT_HEADER..]).expect("template layout");
            varint(&mut head, payloads.len() as u64);
            for x in payloads {
                varint(&mut head, x.len() as u64);
                head.extend_from_slice(x);
            }
            *bytes = wrap_checkpoint(&head);
        }
    }
    files
}

/// Known engine bug (see fuzz/README.md, "Registry::set"): a logical id in a CRC-valid
/// checkpoint or commit record makes the registry allocate `id / 1024` chunks, so a large id
/// exhausts memory instead of being reported as corruption. Returns true when the checkpoint
/// payload holds such an id, so targets can skip it; set `SOP_FUZZ_HUGE_IDS=1` to let the
/// fuzzer hit the bug again.
pub fn has_huge_logical_id(payload: &[u8]) -> bool {
    use sop::codec::Reader;
    use sop::log::record::{get_entry, get_meta};
    if std::env::var_os("SOP_FUZZ_HUGE_IDS").is_some() {
        return false;
    }
    let mut r = Reader::new(payload);
    let fixed = r.take(40, "").is_ok();
    if !fixed {
        return false;
    }
    let Ok(n) = r.count(4, "") else { return false };
    for _ in 0..n {
        if get_meta(&mut r).is_err() {
            return false;
        }
    }
    let Ok(n) = r.count(sop::log::record::ENTRY_MIN_BYTES, "") else { return false };
    for _ in 0..n {
        match get_entry(&mut r) {
            Ok((id, _)) if id > HUGE_ID => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Ids above this are "huge" for [`has_huge_logical_id`] (16M ids = 512 MiB of registry).
pub const HUGE_ID: u64 = 1 << 24;
