//! The search index of a committed node: its keys' common prefix and, per key, the next 8
//! bytes as a number, in one contiguous array.
//!
//! A binary search over the items of a leaf touches one cache line per probe, spread over the
//! whole node (items are ~80 bytes each); over the index it touches a few lines of a small
//! array (8 bytes per key) that stays in the CPU caches for the hot part of a tree, and then
//! only the item it lands on. Built once per immutable node (when it is decoded or committed)
//! and shared by every transaction that reads the node; nodes a transaction changes have none.
//!
//! Invariants: `words[i]` is the big-endian, zero-padded number of bytes
//! `common.len()..common.len() + 8` of key `i`; every key starts with `common`; keys are in
//! byte order, so `words` is non-decreasing. Equal words do not mean equal keys (the keys may
//! differ further on, or in trailing zero bytes): ties are settled on the keys themselves.
//! The index orders keys as bytes; stores with a custom comparator or duplicate keys do not
//! use it.

use std::cmp::Ordering;

use super::node::{Item, KeyBuf, LooseCensus, Node, Sep};
use super::probe_prefix;

/// The search index of one node (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct SearchIndex {
    common: Box<[u8]>,
    /// The first 16 bytes of `common`, as [`probe_prefix`] computes them.
    common16: u128,
    words: Vec<u64>,
    /// A leaf's items' encoded length (0 for an internal node): what a commit bounds a
    /// delta of the leaf by, without walking it again.
    leaf_bytes: usize,
    /// A leaf's loose values (the values [`Node::packed`] would move into the leaf's buffer
    /// that lie outside the buffer the others share): a commit packs the leaf once there are
    /// enough, and reads the count here instead of walking the leaf. A hint: a wrong count
    /// only packs a leaf early or late.
    loose: usize,
}

/// Bytes `from..from + 8` of `k` as a big-endian number, zero-padded.
#[inline]
fn word(k: &[u8], from: usize) -> u64 {
    super::word8(k.get(from..).unwrap_or_default())
}

/// Where a search lands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// First key `>=` the probe.
    Lower,
    /// First key `>` the probe.
    Upper,
}

impl SearchIndex {
    /// The index of a node's keys (item keys of a leaf, separators of an internal node).
    #[must_use]
    pub fn of(node: &Node) -> SearchIndex {
        match node {
            Node::Leaf(items) => {
                // One walk of the items: their words, encoded length and loose values.
                let mut leaf_bytes = 0;
                let mut census = LooseCensus::default();
                let index = Self::build(
                    items.len(),
                    |i| &items[i].key,
                    |i| {
                        leaf_bytes += items[i].encoded_len();
                        census.add(&items[i]);
                    },
                );
                SearchIndex {
                    leaf_bytes,
                    loose: census.loose,
                    ..index
                }
            }
            Node::Internal { seps, .. } => Self::build(seps.len(), |i| &seps[i].key, |_| {}),
        }
    }

    /// The index of `n` sorted keys, `key(i)` the `i`th; `each(i)` is called for each too.
    fn build<'a>(
        n: usize,
        key: impl Fn(usize) -> &'a KeyBuf,
        mut each: impl FnMut(usize),
    ) -> SearchIndex {
        if n == 0 {
            return SearchIndex::default();
        }
        // Keys are sorted: the common prefix of all is that of the first and the last.
        let (first, last): (&[u8], &[u8]) = (key(0), key(n - 1));
        let c = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        let words = (0..n)
            .map(|i| {
                each(i);
                key(i).word_at(c)
            })
            .collect();
        SearchIndex {
            common: first[..c].into(),
            common16: probe_prefix(&first[..c]),
            words,
            leaf_bytes: 0,
            loose: 0,
        }
    }

    /// Approximate bytes held (for the cache's weigher): the words' capacity, which an
    /// index patched in place ([`SearchIndex::insert`]) may hold beyond their number.
    #[must_use]
    pub fn weight(&self) -> u64 {
        (self.common.len() + self.words.capacity() * 8 + 32) as u64
    }

    /// The index of this leaf with `item` inserted at `pos`, without walking the leaf; `None`
    /// when the insert is at either end (the common prefix may shrink: build it with
    /// [`SearchIndex::of`]).
    #[must_use]
    pub fn with_inserted(&self, pos: usize, item: &Item) -> Option<Self> {
        if pos == 0 || pos >= self.words.len() {
            return None;
        }
        // Room for the word the insert adds: no second allocation.
        let mut words = Vec::with_capacity(self.words.len() + 1);
        words.extend_from_slice(&self.words);
        let mut grown = SearchIndex {
            common: self.common.clone(),
            words,
            ..*self
        };
        grown.insert(pos, item).then_some(grown)
    }

    /// [`SearchIndex::with_inserted`] in place: `false` (and unchanged) when the insert is at
    /// either end.
    pub fn insert(&mut self, pos: usize, item: &Item) -> bool {
        if pos == 0 || pos >= self.words.len() {
            return false;
        }
        self.words.insert(pos, item.key.word_at(self.common.len()));
        self.leaf_bytes += item.encoded_len();
        self.loose += usize::from(item.is_loose());
        true
    }

    /// The index of this leaf without its item `item` at `pos`, without walking the leaf;
    /// `None` when it is either end (the common prefix may grow: build it with
    /// [`SearchIndex::of`]).
    #[must_use]
    pub fn with_removed(&self, pos: usize, item: &Item) -> Option<Self> {
        if pos == 0 || pos + 1 >= self.words.len() {
            return None;
        }
        let mut shrunk = self.clone();
        shrunk.remove(pos, item).then_some(shrunk)
    }

    /// [`SearchIndex::with_removed`] in place: `false` (and unchanged) when `pos` is either
    /// end.
    pub fn remove(&mut self, pos: usize, item: &Item) -> bool {
        if pos == 0 || pos + 1 >= self.words.len() {
            return false;
        }
        self.words.remove(pos);
        self.leaf_bytes = self.leaf_bytes.saturating_sub(item.encoded_len());
        self.loose = self.loose.saturating_sub(usize::from(item.is_loose()));
        true
    }

    /// Marks the index as that of the leaf's packed copy ([`SearchIndex::packed`]).
    pub fn set_packed(&mut self) {
        self.loose = 0;
    }

    /// The leaf's loose values, as far as the index knows (see the field).
    #[must_use]
    pub fn loose(&self) -> usize {
        self.loose
    }

    /// This index for the leaf's packed copy ([`Node::packed`]: the same keys, no loose
    /// values).
    #[must_use]
    pub fn packed(self) -> Self {
        SearchIndex { loose: 0, ..self }
    }

    /// The encoded length of the items of the leaf indexed (0 for an internal node).
    #[must_use]
    pub fn leaf_bytes(&self) -> usize {
        self.leaf_bytes
    }

    /// Number of keys indexed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when the node has no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Position of the first item `>= probe` in `items` (the leaf this index was built from).
    #[must_use]
    pub fn lower_bound(&self, items: &[Item], probe: &[u8]) -> usize {
        self.search(probe, Bound::Lower, |i| {
            items.get(i).map_or(&[][..], |it| &it.key)
        })
    }

    /// Position of the first item `> probe` in `items` (the leaf this index was built from).
    #[must_use]
    pub fn upper_bound_items(&self, items: &[Item], probe: &[u8]) -> usize {
        self.search(probe, Bound::Upper, |i| {
            items.get(i).map_or(&[][..], |it| &it.key)
        })
    }

    /// Position of the first separator `> probe` in `seps` (the child to descend into).
    #[must_use]
    pub fn upper_bound(&self, seps: &[Sep], probe: &[u8]) -> usize {
        self.search(probe, Bound::Upper, |i| {
            seps.get(i).map_or(&[][..], |s| &s.key)
        })
    }

    fn search<'a>(&self, probe: &[u8], bound: Bound, key: impl Fn(usize) -> &'a [u8]) -> usize {
        let n = self.words.len();
        let c = self.common.len();
        let m = probe.len().min(c);
        let head = if m <= 16 {
            // Both prefixes are zero-padded: keep their first `m` bytes and compare.
            let mask = u128::MAX.checked_shl(8 * (16 - m) as u32).unwrap_or(0);
            (probe_prefix(probe) & mask).cmp(&(self.common16 & mask))
        } else {
            probe[..m].cmp(&self.common[..m])
        };
        match head {
            Ordering::Less => return 0,
            Ordering::Greater => return n,
            // A proper prefix of `common` is below every key.
            Ordering::Equal if probe.len() < c => return 0,
            Ordering::Equal => {}
        }
        let pw = word(probe, c);
        let words = &self.words[..];
        let lo = first_not!(words.len(), |i| words[i] < pw);
        // Ties are rare (keys equal in their first `c + 8` bytes): count them only when the
        // first word at `lo` is one.
        if self.words.get(lo) != Some(&pw) {
            return lo;
        }
        let ties = self.words[lo..].iter().take_while(|&&w| w == pw).count();
        // Keys with the probe's word: compare what follows the common prefix.
        let tail = &probe[c..];
        let below = |i: usize| {
            let k = key(i);
            let o = k.get(c..).unwrap_or_default().cmp(tail);
            match bound {
                Bound::Lower => o == Ordering::Less,
                Bound::Upper => o != Ordering::Greater,
            }
        };
        let (mut a, mut b) = (lo, lo + ties);
        while a < b {
            let mid = a + (b - a) / 2;
            if below(mid) {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::{KeyBuf, ValueRef};
    use proptest::prelude::*;

    fn leaf(keys: &[Vec<u8>]) -> Vec<Item> {
        keys.iter()
            .map(|k| Item {
                key: KeyBuf::new(k),
                id: 0,
                value: ValueRef::Inline(crate::btree::InlineValue::new(b"")),
            })
            .collect()
    }

    proptest! {
        // Small alphabets with zero bytes and shared prefixes: ties and padding are common.
        #[test]
        fn searches_agree_with_the_slice(
            mut keys in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..20), 0..40),
            prefix in proptest::collection::vec(0u8..3, 0..12),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..24), 1..20),
        ) {
            for k in &mut keys {
                let mut p = prefix.clone();
                p.append(k);
                *k = p;
            }
            keys.sort();
            keys.dedup();
            let items = leaf(&keys);
            let seps: Vec<Sep> = keys.iter().map(|k| Sep { key: KeyBuf::new(k), id: 0 }).collect();
            let li = SearchIndex::of(&Node::Leaf(items.clone()));
            let si = SearchIndex::of(&Node::Internal { seps: seps.clone(), children: vec![0; seps.len() + 1] });
            let mut all = probes.clone();
            all.extend(keys.iter().cloned());
            all.push(prefix.clone());
            prop_assert_eq!(li.leaf_bytes(), items.iter().map(Item::encoded_len).sum::<usize>());
            prop_assert_eq!(si.leaf_bytes(), 0);
            // Inserting a key inside the leaf patches the index as a rebuild would.
            for (pos, k) in keys.windows(2).enumerate().filter_map(|(i, w)| {
                let mut k = w[0].clone();
                k.push(0);
                (k < w[1]).then_some((i + 1, k))
            }) {
                let mut grown = items.clone();
                // Small values stay in the item; a larger one is a loose value.
                let value: &[u8] = if pos % 2 == 0 { b"xyz" } else { &[7; 40] };
                let it = Item { key: KeyBuf::new(&k), id: 0, value: ValueRef::Inline(crate::btree::InlineValue::new(value)) };
                grown.insert(pos, it.clone());
                let patched = li.with_inserted(pos, &it);
                let rebuilt = SearchIndex::of(&Node::Leaf(grown.clone()));
                let patched = patched.expect("an inside insert patches");
                prop_assert_eq!(&patched.words, &rebuilt.words);
                prop_assert_eq!(&patched.common, &rebuilt.common);
                prop_assert_eq!(patched.common16, rebuilt.common16);
                prop_assert_eq!(patched.leaf_bytes, rebuilt.leaf_bytes);
                prop_assert_eq!(patched.loose, rebuilt.loose);
                prop_assert_eq!(rebuilt.loose, li.loose + usize::from(pos % 2 == 1));
                // In place, the same.
                let mut in_place = li.clone();
                prop_assert!(in_place.insert(pos, &it));
                prop_assert_eq!(&in_place.words, &rebuilt.words);
                prop_assert_eq!(in_place.leaf_bytes, rebuilt.leaf_bytes);
                prop_assert_eq!(in_place.loose, rebuilt.loose);
            }
            // Removing a key inside the leaf patches the index as a rebuild would.
            // Every other value a larger (loose) one: the loose count goes down with them.
            let mixed: Vec<Item> = items.iter().enumerate().map(|(i, it)| Item {
                value: ValueRef::Inline(crate::btree::InlineValue::new(if i % 2 == 0 { b"xyz" } else { &[7; 40] })),
                ..it.clone()
            }).collect();
            let mi = SearchIndex::of(&Node::Leaf(mixed.clone()));
            for pos in 1..keys.len().saturating_sub(1) {
                let mut shrunk = mixed.clone();
                let it = shrunk.remove(pos);
                let rebuilt = SearchIndex::of(&Node::Leaf(shrunk));
                prop_assert_eq!(rebuilt.loose, mi.loose - pos % 2);
                let patched = mi.with_removed(pos, &it).expect("an inside removal patches");
                prop_assert_eq!(&patched.words, &rebuilt.words);
                prop_assert_eq!(&patched.common, &rebuilt.common);
                prop_assert_eq!(patched.common16, rebuilt.common16);
                prop_assert_eq!(patched.leaf_bytes, rebuilt.leaf_bytes);
                prop_assert_eq!(patched.loose, rebuilt.loose);
            }
            // Removing either end may grow the common prefix: neither patches.
            for pos in [0, keys.len().saturating_sub(1), keys.len()] {
                let mut end = li.clone();
                if let Some(it) = items.get(pos) {
                    prop_assert!(li.with_removed(pos, it).is_none());
                    prop_assert!(!end.remove(pos, it));
                    prop_assert_eq!(&end.words, &li.words);
                }
            }
            // At either end the common prefix may shrink: neither patches.
            let mut at_end = li.clone();
            for pos in [0, keys.len()] {
                let it = Item { key: KeyBuf::new(b""), id: 0, value: ValueRef::Inline(crate::btree::InlineValue::new(b"")) };
                prop_assert!(li.with_inserted(pos, &it).is_none());
                prop_assert!(!at_end.insert(pos, &it));
            }
            prop_assert_eq!(&at_end.words, &li.words);
            for p in &all {
                prop_assert_eq!(li.lower_bound(&items, p), keys.partition_point(|k| k < p));
                prop_assert_eq!(li.upper_bound_items(&items, p), keys.partition_point(|k| k <= p));
                prop_assert_eq!(si.upper_bound(&seps, p), keys.partition_point(|k| k <= p));
            }
        }
    }
}
