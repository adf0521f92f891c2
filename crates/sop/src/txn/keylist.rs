//! [`KeyList`]: an append-only list of byte keys kept in a few large buffers.
//!
//! A transaction records every key it writes (its write set, `txn::access`). A bulk
//! transaction writes hundreds of thousands: as one `KeyBuf` (24 bytes) each, in a vector
//! that doubles and copies as it grows, the set alone touched ~5 MB of fresh memory for
//! 100,000 short keys, a tenth of the page faults of such a transaction. Here each key takes
//! its length (a varint) and its bytes, in chunks that are never reallocated: ~1 MB for the
//! same keys, written once.
//!
//! Invariants: chunks hold whole entries (`len varint | bytes`), appended in order and never
//! moved; `len` counts the entries. Chunk capacities double from [`FIRST_CHUNK`] up to
//! [`MAX_CHUNK`] (a longer key gets a chunk of its own size), so a transaction writing one key
//! allocates a few hundred bytes.

use crate::btree::KeyBuf;
use crate::codec::{Reader, Writer};

/// Capacity of the first chunk.
const FIRST_CHUNK: usize = 256;
/// Largest capacity a chunk grows to (unless one key needs more).
const MAX_CHUNK: usize = 256 << 10;
/// Most bytes a length varint takes.
const MAX_VARINT: usize = 10;

/// Keys in insertion order (see the module documentation).
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyList {
    chunks: Vec<Writer>,
    len: usize,
}

impl KeyList {
    /// Appends a copy of `key`.
    pub fn push(&mut self, key: &[u8]) {
        let need = key.len() + MAX_VARINT;
        let room = self
            .chunks
            .last()
            .map_or(0, |c| c.buf.capacity().saturating_sub(c.buf.len()));
        if room < need {
            let next = self
                .chunks
                .last()
                .map_or(FIRST_CHUNK, |c| (c.buf.capacity() * 2).min(MAX_CHUNK));
            self.chunks
                .push(Writer::with(Vec::with_capacity(next.max(need))));
        }
        if let Some(c) = self.chunks.last_mut() {
            // Within capacity: the chunk's buffer does not move.
            c.bytes(key);
            self.len += 1;
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The keys, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.chunks.iter().flat_map(|c| {
            let mut r = Reader::new(&c.buf);
            // Only `push` writes chunks, so every entry is whole.
            std::iter::from_fn(move || (r.remaining() > 0).then(|| r.bytes("key").ok()).flatten())
        })
    }

    /// The keys as `KeyBuf`s, in the order they were pushed.
    pub fn to_vec(&self) -> Vec<KeyBuf> {
        let mut v = Vec::with_capacity(self.len);
        v.extend(self.iter().map(KeyBuf::new));
        v
    }
}

impl FromIterator<KeyBuf> for KeyList {
    fn from_iter<I: IntoIterator<Item = KeyBuf>>(iter: I) -> Self {
        let mut l = KeyList::default();
        for k in iter {
            l.push(&k);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keeps_every_key_in_order(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..400),
        ) {
            let mut l = KeyList::default();
            for k in &keys {
                l.push(k);
            }
            prop_assert_eq!(l.len(), keys.len());
            let got: Vec<Vec<u8>> = l.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(&got, &keys);
            let bufs: Vec<Vec<u8>> = l.to_vec().iter().map(|k| k.to_vec()).collect();
            prop_assert_eq!(&bufs, &keys);
            let again: KeyList = l.to_vec().into_iter().collect();
            prop_assert_eq!(again.iter().collect::<Vec<_>>(), l.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_key_longer_than_a_chunk_gets_its_own() {
        let mut l = KeyList::default();
        let big = vec![7u8; MAX_CHUNK * 2];
        l.push(b"a");
        l.push(&big);
        l.push(b"b");
        let got: Vec<&[u8]> = l.iter().collect();
        assert_eq!(got, vec![&b"a"[..], &big[..], &b"b"[..]]);
    }

    #[test]
    fn chunks_are_never_reallocated() {
        let mut l = KeyList::default();
        let mut seen = Vec::new();
        for i in 0..2_000u32 {
            l.push(format!("key_{i}").as_bytes());
            for (j, c) in l.chunks.iter().enumerate() {
                match seen.get(j) {
                    Some(&p) => assert_eq!(p, c.buf.as_ptr(), "chunk {j} moved"),
                    None => seen.push(c.buf.as_ptr()),
                }
            }
        }
        assert!(l.chunks.len() > 1);
        assert!(l.chunks.iter().all(|c| c.buf.capacity() <= MAX_CHUNK));
    }
}
