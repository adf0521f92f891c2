//! Pure byte encoding: explicit little-endian integers, varints, CRC-32C and the framing of
//! checksummed files. No I/O happens here.
//!
//! Every on-disk structure is written with [`Writer`] and read back with [`Reader`]; the reader
//! never reads past its slice, and every length it yields is bounded by the bytes left, so a
//! corrupt length can never cause a large allocation.

mod crc;
mod le;

pub use crc::{Crc32c, crc32c};
pub use le::{DecodeError, Reader, Writer};
