//! CRC-32C (Castagnoli), the checksum of every on-disk structure.

use crc_fast::{CrcAlgorithm, Digest};

/// CRC-32C of `bytes`.
#[must_use]
pub fn crc32c(bytes: &[u8]) -> u32 {
    // crc-fast returns the CRC widened to u64; CRC-32 values always fit in 32 bits.
    (crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, bytes) & 0xFFFF_FFFF) as u32
}

/// Incremental CRC-32C over several slices.
pub struct Crc32c(Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A fresh digest.
    #[must_use]
    pub fn new() -> Self {
        Crc32c(Digest::new(CrcAlgorithm::Crc32Iscsi))
    }
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The CRC of everything added.
    #[must_use]
    pub fn finish(&self) -> u32 {
        (self.0.finalize() & 0xFFFF_FFFF) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // The CRC-32C check value of "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let mut d = Crc32c::new();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finish(), 0xE306_9283);
    }
}
