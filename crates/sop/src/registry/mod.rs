//! The registry: logical node id -> (physical location, version).
//!
//! Node images are immutable: a changed node is written as a new image at a new place in the
//! log, and the registry entry of its stable logical id is pointed at it, with the version
//! bumped. Parents reference children by logical id, so rewriting a node never rewrites its
//! parent (no copy up to the root). Value blobs that live outside their node are registered the
//! same way.
//!
//! # Invariants
//!
//! - Logical ids are allocated database-wide from one counter and never reused; id 0 is "none".
//! - An entry's `version` increases by one on every content change and is unchanged when a
//!   compaction only moves the image (so optimistic validation sees no change).
//! - The registry is a persistent (copy-on-write) array of 16-entry chunks under two levels
//!   of 64-way nodes: cloning it is cheap (one `Arc` per 2^16 ids), a commit copies only the
//!   chunks and nodes it changes (~1.8 KiB for one entry, in three allocations small enough
//!   for the allocator's per-thread cache), and a clone is an immutable snapshot that running
//!   transactions read while commits publish newer versions.

use std::sync::Arc;

/// A stable logical id of a node or value blob.
pub type LogicalId = u64;

/// Where an image lives: a record in a log segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Location {
    /// Segment id (file `log/<seg>.seg`).
    pub seg: u32,
    /// Total record length in bytes (header and payload); 0 means "no location".
    pub len: u32,
    /// Byte offset of the record in the segment.
    pub off: u64,
}

/// One registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// Where the current image is: a full image, or a leaf delta over `base`.
    pub loc: Location,
    /// For a leaf delta at `loc`: the full image it applies to (`len` 0: `loc` is a full
    /// image).
    pub base: Location,
    /// Content version, starting at 1.
    pub version: u64,
    /// The store owning the node or blob.
    pub store: u32,
    /// For a leaf delta at `loc`: the deltas between `base` and it (ADR 0008).
    pub chain: Chain,
}

/// A leaf delta's chain: the delta at an entry's `loc` applies to the version before it,
/// which is the base image or an earlier delta of the chain, and so on back to the base.
/// Every delta of a chain lies in the segment of `loc` (the base image may lie anywhere), so
/// that segment's live bytes include the chain's, and compacting it rewrites the leaf whole.
///
/// Kept in one `u32` so an [`Entry`] stays 48 bytes: the depth (the deltas from the base to
/// `loc`, `loc`'s included; 0 for a full image) in the high 8 bits, the bytes of the deltas
/// before `loc` in the low 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Chain(u32);

impl Chain {
    /// The most deltas in a chain: a cold read of the leaf reads this many records and its
    /// base (format 5; 16 before, ADR 0010).
    pub const MAX_DEPTH: u8 = 32;
    /// The most bytes of deltas before the newest (well within the 24 bits).
    pub const MAX_BYTES: u32 = 1 << 20;

    /// A chain of `depth` deltas whose deltas before the newest take `bytes`; `None` past the
    /// bounds.
    #[must_use]
    pub fn new(depth: u8, bytes: u32) -> Option<Chain> {
        (depth <= Self::MAX_DEPTH && bytes <= Self::MAX_BYTES && (depth > 1 || bytes == 0))
            .then_some(Chain((u32::from(depth) << 24) | bytes))
    }

    /// The chain of a delta straight over its base.
    #[must_use]
    pub fn first() -> Chain {
        Chain(1 << 24)
    }

    /// Deltas from the base to the entry's `loc`, `loc`'s included.
    #[must_use]
    pub fn depth(self) -> u8 {
        (self.0 >> 24) as u8
    }

    /// Bytes of the deltas before the entry's `loc`.
    #[must_use]
    pub fn bytes(self) -> u32 {
        self.0 & 0x00FF_FFFF
    }

    /// The chain after one more delta over the newest one, which takes `newest` bytes.
    #[must_use]
    pub fn then(self, newest: u32) -> Option<Chain> {
        let depth = self.depth().checked_add(1)?;
        Chain::new(depth, self.bytes().checked_add(newest)?)
    }
}

impl Entry {
    /// True for an unused slot.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.version == 0
    }

    /// The base image of a delta entry.
    #[must_use]
    pub fn delta_base(&self) -> Option<Location> {
        (self.base.len != 0).then_some(self.base)
    }

    /// The records the entry points at: its image, and the base image of a delta. The
    /// earlier deltas of its chain lie in the segment of the first.
    pub fn records(&self) -> impl Iterator<Item = Location> {
        std::iter::once(self.loc).chain(self.delta_base())
    }

    /// The bytes the entry keeps live, by segment: its image with the earlier deltas of its
    /// chain, and the base image of a delta.
    pub fn live(&self) -> impl Iterator<Item = (u32, u64)> {
        let own = u64::from(self.loc.len) + u64::from(self.chain.bytes());
        std::iter::once((self.loc.seg, own))
            .chain(self.delta_base().map(|b| (b.seg, u64::from(b.len))))
    }
}

/// 16 entries (768 bytes): a single commit copies its chunk, so a chunk stays small (a
/// 128-entry chunk was a 6 KiB allocation and copy per commit, outside glibc's per-thread
/// cache, which made `malloc` consolidate its free lists every time).
const CHUNK_BITS: u32 = 4;
const CHUNK: usize = 1 << CHUNK_BITS;
const FAN_BITS: u32 = 6;
const FAN: usize = 1 << FAN_BITS;

/// Logical ids are below this bound (2^40). Decoders reject larger ids as corruption, so a
/// damaged (but checksum-valid) id can never make the registry allocate without bound.
pub const MAX_LOGICAL: LogicalId = 1 << 40;

type Chunk = [Entry; CHUNK];
type Lower = [Option<Arc<Chunk>>; FAN];
type Upper = [Option<Arc<Lower>>; FAN];

/// The copy-on-write id map. See the module docs. Three levels of shared arrays (64-way,
/// 64-way, 16 entries), allocated only where ids are in use: cloning copies the top level
/// (one pointer per 2^16 ids, the first held inline: a registry of fewer ids clones without
/// allocating); changing an entry copies one array per level (64 pointers, 64 pointers, 16
/// entries), so a commit's reference-count traffic stays small.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Ids below 2^16.
    first: Option<Arc<Upper>>,
    /// Ids from 2^16 on: top-level slot `t` is `rest[t - 1]`.
    rest: Vec<Option<Arc<Upper>>>,
    len: usize,
}

fn split(id: LogicalId) -> Option<(usize, usize, usize, usize)> {
    if id >= MAX_LOGICAL {
        return None;
    }
    let id = usize::try_from(id).ok()?;
    Some((
        id >> (CHUNK_BITS + 2 * FAN_BITS),
        (id >> (CHUNK_BITS + FAN_BITS)) & (FAN - 1),
        (id >> CHUNK_BITS) & (FAN - 1),
        id & (CHUNK - 1),
    ))
}

impl Registry {
    /// The entry of `id`, if it is in use.
    #[must_use]
    pub fn get(&self, id: LogicalId) -> Option<&Entry> {
        let (t, u, l, i) = split(id)?;
        let upper = match t {
            0 => self.first.as_ref()?,
            _ => self.rest.get(t - 1)?.as_ref()?,
        };
        let chunk = upper.get(u)?.as_ref()?.get(l)?.as_ref()?;
        let e = chunk.get(i)?;
        (!e.is_empty()).then_some(e)
    }

    /// Sets the entry of `id` (copying the arrays a snapshot shares). Ids at or above
    /// [`MAX_LOGICAL`] are refused (`false`).
    pub fn set(&mut self, id: LogicalId, entry: Entry) -> bool {
        let Some((t, u, l, i)) = split(id) else {
            return false;
        };
        let top_slot = match t {
            0 => &mut self.first,
            _ => {
                if self.rest.len() < t {
                    self.rest.resize(t, None);
                }
                let Some(slot) = self.rest.get_mut(t - 1) else {
                    return false;
                };
                slot
            }
        };
        let upper =
            Arc::make_mut(top_slot.get_or_insert_with(|| Arc::new(std::array::from_fn(|_| None))));
        let Some(upper_slot) = upper.get_mut(u) else {
            return false;
        };
        let lower = Arc::make_mut(
            upper_slot.get_or_insert_with(|| Arc::new(std::array::from_fn(|_| None))),
        );
        let Some(lower_slot) = lower.get_mut(l) else {
            return false;
        };
        let chunk =
            Arc::make_mut(lower_slot.get_or_insert_with(|| Arc::new([Entry::default(); CHUNK])));
        if let Some(slot) = chunk.get_mut(i) {
            if slot.is_empty() && !entry.is_empty() {
                self.len += 1;
            } else if !slot.is_empty() && entry.is_empty() {
                self.len -= 1;
            }
            *slot = entry;
        }
        true
    }

    /// Clears the entry of `id`, returning what it held.
    pub fn remove(&mut self, id: LogicalId) -> Option<Entry> {
        let old = *self.get(id)?;
        self.set(id, Entry::default());
        Some(old)
    }

    /// Entries in use.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is in use.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry in use, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (LogicalId, &Entry)> + '_ {
        fn present<T>(v: &[Option<Arc<T>>]) -> impl Iterator<Item = (usize, &T)> {
            v.iter()
                .enumerate()
                .filter_map(|(n, x)| Some((n, &**x.as_ref()?)))
        }
        let top = std::iter::once(&self.first).chain(&self.rest);
        top.enumerate()
            .filter_map(|(t, x)| Some((t, &**x.as_ref()?)))
            .flat_map(|(t, upper)| {
                present(upper).flat_map(move |(u, lower)| {
                    present(lower).flat_map(move |(l, chunk)| {
                        let base = ((((t << FAN_BITS) | u) << FAN_BITS) | l) << CHUNK_BITS;
                        chunk
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| !e.is_empty())
                            .map(move |(i, e)| ((base | i) as LogicalId, e))
                    })
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: u64) -> Entry {
        Entry {
            loc: Location {
                seg: 1,
                len: 10,
                off: v * 10,
            },
            base: Location::default(),
            chain: Chain::default(),
            version: v,
            store: 1,
        }
    }

    #[test]
    fn set_get_remove_and_snapshots_are_isolated() {
        let mut r = Registry::default();
        r.set(5, entry(1));
        r.set(5000, entry(2));
        let snap = r.clone();
        r.set(5, entry(3));
        assert_eq!(r.get(5).map(|e| e.version), Some(3));
        assert_eq!(snap.get(5).map(|e| e.version), Some(1));
        assert_eq!(r.len(), 2);
        assert_eq!(r.remove(5000).map(|e| e.version), Some(2));
        assert!(r.get(5000).is_none());
        assert_eq!(snap.get(5000).map(|e| e.version), Some(2));
        assert_eq!(r.len(), 1);
        assert_eq!(r.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![5]);
        assert!(r.get(1 << 40).is_none());
        assert!(!r.set(MAX_LOGICAL, entry(9)));
        r.set(3 << 20, entry(4));
        assert_eq!(
            r.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            vec![5, 3 << 20]
        );
        // Ids on every level's boundaries come back from `get` and `iter`, in order.
        let lower = CHUNK_BITS + FAN_BITS;
        let upper = lower + FAN_BITS;
        let ids = [
            CHUNK as u64 - 1,
            CHUNK as u64,
            (1 << lower) - 1,
            1 << lower,
            (1 << upper) + 1,
            (1 << (upper + 6)) + 3,
            MAX_LOGICAL - 1,
        ];
        for (n, id) in ids.iter().enumerate() {
            assert!(r.set(*id, entry(10 + n as u64)));
        }
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(r.get(*id).map(|e| e.version), Some(10 + n as u64));
        }
        let mut all = ids.to_vec();
        all.extend([5, 3 << 20]);
        all.sort_unstable();
        assert_eq!(r.iter().map(|(id, _)| id).collect::<Vec<_>>(), all);
        assert_eq!(r.len(), all.len());
    }

    #[test]
    fn a_chain_grows_one_delta_at_a_time_within_its_bounds() {
        let mut c = Chain::first();
        assert_eq!((c.depth(), c.bytes()), (1, 0));
        for d in 2..=Chain::MAX_DEPTH {
            c = c.then(100).expect("within the depth");
            assert_eq!((c.depth(), c.bytes()), (d, 100 * u32::from(d - 1)));
        }
        assert_eq!(c.then(1), None, "past the depth");
        let big = Chain::new(2, Chain::MAX_BYTES).expect("at the bound");
        assert_eq!(big.then(1), None, "past the bytes");
        let e = Entry {
            loc: Location {
                seg: 4,
                off: 10,
                len: 30,
            },
            base: Location {
                seg: 2,
                off: 0,
                len: 700,
            },
            version: 3,
            store: 1,
            chain: Chain::new(3, 90).expect("in bounds"),
        };
        assert_eq!(e.live().collect::<Vec<_>>(), vec![(4, 120), (2, 700)]);
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }
}
