//! Prepare payloads (`txn::prepared::Prepared::decode` is private): fuzzed through the
//! in-doubt list of a checkpoint (valid header and CRC) of a valid database, opened with
//! `Database::open_with_storage` on a `MemoryStorage`; then the in-doubt transaction is
//! resolved (commit or abort) and the database exercised. Nothing may panic.
//!
//! First byte: mode. 0..=127: the rest is the payload. 128..: the rest is a list of
//! (position u16, xor u8) edits applied to a real prepare payload (structure-aware mutation).
//! Bit 0 of the mode: commit (1) or abort (0) the in-doubt transaction.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sop::Database;
use sop_fuzz::{exercise, files_with_in_doubt, options, storage_with, template_prepared};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let payload = if mode < 128 {
        rest.to_vec()
    } else {
        let mut p = template_prepared().1.clone();
        for e in rest.chunks_exact(3) {
            if p.is_empty() {
                break;
            }
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % p.len();
            p[at] ^= e[2];
        }
        p
    };
    let s = storage_with(&files_with_in_doubt(&[&payload]));
    let Ok(db) = Database::open_with_storage(options(), Arc::new(s)) else { return };
    if let Ok(list) = db.in_doubt() {
        for d in list {
            let _ = db.resolve_in_doubt(d.txn_id, mode & 1 == 1);
        }
    }
    exercise(&db);
});
