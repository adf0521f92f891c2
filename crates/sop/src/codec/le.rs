//! Explicit little-endian writer and bounded reader.

/// What went wrong while decoding bytes; callers turn it into `Error::Corruption` with the
/// file and offset they know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset within the decoded slice where decoding failed.
    pub at: usize,
    /// What was expected.
    pub what: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Appends little-endian values to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// A writer over an existing vector (appends to it).
    #[must_use]
    pub fn with(buf: Vec<u8>) -> Self {
        Writer { buf }
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Sixteen bytes, little-endian.
    pub fn u128(&mut self, v: u128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// LEB128 unsigned varint.
    #[inline]
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    /// A varint length followed by the bytes.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    /// Raw bytes, no length.
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// True when nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Reads little-endian values from a slice, never past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// The whole input (positions are offsets into it).
    #[must_use]
    pub fn input(&self) -> &'a [u8] {
        self.buf
    }
    /// Current position.
    #[must_use]
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Bytes left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError { at: self.pos, what }
    }
    /// Takes `n` raw bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.err(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    /// Two bytes.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    /// Four bytes.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    /// Eight bytes.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// Sixteen bytes.
    pub fn u128(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }
    /// LEB128 varint (at most 10 bytes).
    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.u8(what)?;
            if shift == 63 && b > 1 {
                return Err(self.err(what));
            }
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err(what))
    }
    /// A varint length (bounded by the bytes left) followed by that many bytes.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.varint(what)?;
        let n = usize::try_from(n).map_err(|_| self.err(what))?;
        self.take(n, what)
    }
    /// A count of items each at least `min_item_size` bytes long, bounded by the bytes left.
    pub fn count(
        &mut self,
        min_item_size: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        let n = usize::try_from(n).map_err(|_| self.err(what))?;
        if n.saturating_mul(min_item_size.max(1)) > self.remaining() {
            return Err(self.err(what));
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.err(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut w = Writer::default();
        w.u8(7);
        w.u16(0xBEEF);
        w.u32(0xDEAD_BEEF);
        w.u64(u64::MAX - 3);
        w.u128(1 << 100);
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            w.varint(v);
        }
        w.bytes(b"hello");
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8("a"), Ok(7));
        assert_eq!(r.u16("b"), Ok(0xBEEF));
        assert_eq!(r.u32("c"), Ok(0xDEAD_BEEF));
        assert_eq!(r.u64("d"), Ok(u64::MAX - 3));
        assert_eq!(r.u128("e"), Ok(1 << 100));
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint("v"), Ok(v));
        }
        assert_eq!(r.bytes("s"), Ok(&b"hello"[..]));
        assert!(r.finish("end").is_ok());
        assert!(r.u8("past end").is_err());
    }

    #[test]
    fn huge_length_is_rejected_not_allocated() {
        let mut w = Writer::default();
        w.varint(u64::MAX / 2);
        let mut r = Reader::new(&w.buf);
        assert!(r.bytes("len").is_err());
        let mut r = Reader::new(&w.buf);
        assert!(r.count(8, "count").is_err());
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let bytes = [0xFFu8; 11];
        assert!(Reader::new(&bytes).varint("v").is_err());
    }
}
