//! Item-level read and write sets of a `ForWriting` transaction, and the check of a read set
//! against the keys a concurrent commit wrote.
//!
//! Reads are recorded as points (a key looked up, present or not) and ranges (the key interval
//! a cursor step, a `find` or a range scan covered, so an item inserted into it by someone else
//! is a detected phantom). Writes are the keys added, updated or removed. A transaction
//! conflicts with a transaction that committed after its snapshot when that one wrote a key
//! this one read (which includes every key this one wrote: writes read first; in stores of
//! unique keys a written key is checked as a read and not recorded twice, while in stores with
//! duplicates adding a duplicate reads nothing, so removals and updates there record their read)
//! or changed the item count this one read. This is backward-validation optimistic concurrency: committed
//! `ForWriting` transactions are serializable in commit order.

use std::cmp::Ordering;
use std::ops::Bound;

use super::keylist::KeyList;
use crate::btree::{KeyBuf, Order};

/// Reads and writes of one store.
#[derive(Debug, Default, Clone)]
pub(crate) struct Access {
    pub points: Vec<KeyBuf>,
    pub ranges: Vec<(Bound<KeyBuf>, Bound<KeyBuf>)>,
    pub written: KeyList,
}

fn own(b: Bound<&[u8]>) -> Bound<KeyBuf> {
    match b {
        Bound::Included(k) => Bound::Included(KeyBuf::new(k)),
        Bound::Excluded(k) => Bound::Excluded(KeyBuf::new(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Access {
    /// Empties the sets, keeping the vectors' room (a field added later must be emptied
    /// here too).
    pub fn clear(&mut self) {
        let Access {
            points,
            ranges,
            written,
        } = self;
        points.clear();
        ranges.clear();
        *written = KeyList::default();
    }

    /// A key was looked up.
    pub fn point(&mut self, k: &[u8]) {
        self.points.push(KeyBuf::new(k));
    }

    /// The interval between `lo` and `hi` was read. Consecutive cursor steps extend the last
    /// range instead of adding one.
    pub fn range(&mut self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) {
        if let (Some((_, last_hi)), Bound::Included(l)) = (self.ranges.last_mut(), lo)
            && let Bound::Included(h) = last_hi
            && **h == *l
        {
            *last_hi = own(hi);
            return;
        }
        self.ranges.push((own(lo), own(hi)));
    }

    /// A key was written.
    pub fn wrote(&mut self, k: &[u8]) {
        self.written.push(k);
    }

    /// The first key of `written` (sorted in `order`) that this read set covers.
    pub fn conflict<'w>(&self, order: &Order, written: &'w [KeyBuf]) -> Option<&'w KeyBuf> {
        if written.is_empty() {
            return None;
        }
        // In stores of unique keys a key written is a key read (writes read first).
        let also_written = order
            .unique
            .then(|| self.written.iter())
            .into_iter()
            .flatten();
        for p in self.points.iter().map(|p| &p[..]).chain(also_written) {
            if let Ok(i) = written.binary_search_by(|w| order.keys(w, p)) {
                return written.get(i);
            }
        }
        for (lo, hi) in &self.ranges {
            let start = match lo {
                Bound::Included(l) => {
                    written.partition_point(|w| order.keys(w, l) == Ordering::Less)
                }
                Bound::Excluded(l) => {
                    written.partition_point(|w| order.keys(w, l) != Ordering::Greater)
                }
                Bound::Unbounded => 0,
            };
            let Some(w) = written.get(start) else {
                continue;
            };
            let inside = match hi {
                Bound::Included(h) => order.keys(w, h) != Ordering::Greater,
                Bound::Excluded(h) => order.keys(w, h) == Ordering::Less,
                Bound::Unbounded => true,
            };
            if inside {
                return Some(w);
            }
        }
        None
    }
}

/// Sorts and deduplicates written keys in the store's order (for [`Access::conflict`]).
pub(crate) fn sorted_keys(order: &Order, mut keys: Vec<KeyBuf>) -> Vec<KeyBuf> {
    keys.sort_by(|a, b| order.keys(a, b));
    keys.dedup_by(|a, b| order.keys(a, b) == Ordering::Equal);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> KeyBuf {
        KeyBuf::new(s.as_bytes())
    }

    #[test]
    fn points_and_ranges_detect_writes() {
        let order = Order {
            custom: None,
            unique: true,
        };
        let written = sorted_keys(&order, vec![k("m"), k("c"), k("x")]);
        let mut a = Access::default();
        a.point(b"d");
        assert!(a.conflict(&order, &written).is_none());
        a.range(Bound::Included(b"e"), Bound::Excluded(b"m"));
        assert!(a.conflict(&order, &written).is_none());
        a.range(Bound::Excluded(b"m"), Bound::Included(b"w"));
        assert!(a.conflict(&order, &written).is_none());
        a.point(b"x");
        assert_eq!(
            a.conflict(&order, &written).map(|w| w.to_vec()),
            Some(b"x".to_vec())
        );
        let mut b = Access::default();
        b.range(Bound::Unbounded, Bound::Included(b"c"));
        assert!(b.conflict(&order, &written).is_some());
    }

    #[test]
    fn consecutive_steps_coalesce() {
        let mut a = Access::default();
        a.range(Bound::Included(b"a"), Bound::Included(b"b"));
        a.range(Bound::Included(b"b"), Bound::Included(b"c"));
        a.range(Bound::Included(b"c"), Bound::Unbounded);
        assert_eq!(a.ranges.len(), 1);
    }
}
