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
//! - The registry is a persistent (copy-on-write) array of 128-entry chunks under two levels
//!   of 64-way nodes: cloning it is cheap (one `Arc` per 2^19 ids), a commit copies only the
//!   chunks and nodes it changes (~7 KiB and 128 reference counts for one entry), and a clone
//!   is an immutable snapshot that running transactions read while commits publish newer
//!   versions.

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

    /// Every record the entry keeps live: its image, and the base image of a delta.
    pub fn records(&self) -> impl Iterator<Item = Location> {
        std::iter::once(self.loc).chain(self.delta_base())
    }
}

const CHUNK_BITS: u32 = 7;
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
/// 64-way, 128 entries), allocated only where ids are in use: cloning copies the top level
/// (one pointer per 2^19 ids); changing an entry copies one array per level (64 pointers,
/// 64 pointers, 128 entries), so a commit's reference-count traffic stays small.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    top: Vec<Option<Arc<Upper>>>,
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
        let upper = self.top.get(t)?.as_ref()?;
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
        if self.top.len() <= t {
            self.top.resize(t + 1, None);
        }
        let Some(top_slot) = self.top.get_mut(t) else {
            return false;
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
        present(&self.top).flat_map(|(t, upper)| {
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
        let ids = [
            127,
            128,
            (1 << 13) - 1,
            1 << 13,
            (1 << 19) + 1,
            (1 << 25) + 3,
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
}
