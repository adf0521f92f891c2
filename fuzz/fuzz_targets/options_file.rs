//! `dboptions.json` (decoder `db::options_file::read` is private): fuzzed through
//! `Database::open_with_storage` on a `MemoryStorage` holding a valid database whose options
//! file is replaced. First byte: odd = the rest is the whole file; even = the rest is the JSON
//! body under a valid header (format, CRC, length). Opening must fail cleanly or give a
//! working database.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sop::Database;
use sop_fuzz::{exercise, options, options_path, put_file, storage_with, template, wrap_options};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let file = if mode & 1 == 1 { rest.to_vec() } else { wrap_options(rest) };
    let s = storage_with(template());
    put_file(&s, &options_path(), &file);
    if let Ok(db) = Database::open_with_storage(options(), Arc::new(s)) {
        exercise(&db);
    }
});
