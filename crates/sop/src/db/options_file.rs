//! `dboptions.json`: the persisted [`DatabaseOptions`], readable by humans and checksummed.
//!
//! ```text
//! SOP-OPTIONS format=1 crc32c=1a2b3c4d len=312\n
//! { ...JSON of DatabaseOptions... }
//! ```
//!
//! The first line carries the format version, the CRC-32C and the length of the JSON that
//! follows. Replaced atomically (temporary file, sync, rename, folder sync).

use std::path::Path;

use crate::error::{Error, Result};
use crate::log::record::crc;
use crate::options::DatabaseOptions;
use crate::storage::{OpenMode, Storage, replace_file};

/// File name.
pub const FILE: &str = "dboptions.json";
/// Temporary name while the options file is replaced.
pub const TMP: &str = "dboptions.tmp";
/// Current format version of the database.
pub const FORMAT: u32 = 1;
const MAX_LEN: u64 = 1 << 20;

/// Reads and checks the options file of the database in `dir`.
pub fn read(storage: &dyn Storage, dir: &Path) -> Result<DatabaseOptions> {
    let path = dir.join(FILE);
    let f = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io(&path, e))?;
    let len = f.len().map_err(|e| Error::io(&path, e))?;
    if len > MAX_LEN {
        return Err(Error::corruption(
            &path,
            0,
            "options file is larger than 1 MiB",
        ));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_at(&mut buf, 0).map_err(|e| Error::io(&path, e))?;
    let nl = buf
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| Error::corruption(&path, 0, "options header line missing"))?;
    let header = std::str::from_utf8(&buf[..nl])
        .map_err(|_| Error::corruption(&path, 0, "options header is not text"))?;
    let mut parts = header.split(' ');
    if parts.next() != Some("SOP-OPTIONS") {
        return Err(Error::NotADatabase {
            path: dir.to_path_buf(),
            reason: format!("{FILE} does not start with SOP-OPTIONS"),
        });
    }
    let mut field = |name: &str| -> Result<String> {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .map(str::to_owned)
            .ok_or_else(|| Error::corruption(&path, 0, format!("options header lacks {name}")))
    };
    let format: u32 = field("format=")?
        .parse()
        .map_err(|_| Error::corruption(&path, 0, "bad format field"))?;
    let want_crc = u32::from_str_radix(&field("crc32c=")?, 16)
        .map_err(|_| Error::corruption(&path, 0, "bad crc32c field"))?;
    let want_len: usize = field("len=")?
        .parse()
        .map_err(|_| Error::corruption(&path, 0, "bad len field"))?;
    if format != FORMAT {
        return Err(Error::IncompatibleOptions(format!(
            "the database has format version {format}, this library reads version {FORMAT}"
        )));
    }
    let body = &buf[nl + 1..];
    if body.len() != want_len {
        return Err(Error::corruption(
            &path,
            (nl + 1) as u64,
            "options length does not match the header",
        ));
    }
    if crc(body) != want_crc {
        return Err(Error::corruption(
            &path,
            (nl + 1) as u64,
            "options checksum mismatch",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::corruption(&path, (nl + 1) as u64, format!("options JSON: {e}")))
}

/// Writes the options file atomically.
pub fn write(storage: &dyn Storage, dir: &Path, opts: &DatabaseOptions) -> Result<()> {
    let body = serde_json::to_vec_pretty(opts).map_err(|e| Error::InvalidOption(e.to_string()))?;
    let mut out = format!(
        "SOP-OPTIONS format={FORMAT} crc32c={:08x} len={}\n",
        crc(&body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    replace_file(storage, dir, TMP, FILE, &out)
}
