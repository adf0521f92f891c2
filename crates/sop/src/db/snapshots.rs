//! The snapshots running transactions hold: commit sequence numbers with counts.
//!
//! Every transaction takes one when it begins and lets go of it when its commit is written or
//! it ends; housekeeping asks for the oldest (segments and history older than it are no longer
//! needed). So the set is small (one entry per distinct snapshot in use, a handful at most),
//! new entries are the newest, and the common case is one transaction at a time.
//!
//! # Invariants
//!
//! - `held` is sorted by sequence number, strictly ascending, and every count is at least 1
//!   (an entry whose count drops to 0 is removed).
//! - Its allocation is kept when it empties: a transaction at a time takes and releases a
//!   snapshot without allocating (a `BTreeMap` allocated and freed a node for each).

/// Snapshot sequence numbers in use, with how many transactions hold each.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    held: Vec<(u64, usize)>,
}

impl Snapshots {
    /// Counts one more holder of snapshot `seq`.
    pub fn take(&mut self, seq: u64) {
        // Snapshots are taken of the latest state: `seq` is the newest, or equal to it.
        match self.held.last_mut() {
            Some((last, n)) if *last == seq => *n += 1,
            Some((last, _)) if *last < seq => self.held.push((seq, 1)),
            None => self.held.push((seq, 1)),
            Some(_) => match self.held.binary_search_by_key(&seq, |&(s, _)| s) {
                Ok(i) => self.held[i].1 += 1,
                Err(i) => self.held.insert(i, (seq, 1)),
            },
        }
    }

    /// Counts one holder of snapshot `seq` less (nothing when none holds it).
    pub fn release(&mut self, seq: u64) {
        if let Ok(i) = self.held.binary_search_by_key(&seq, |&(s, _)| s) {
            self.held[i].1 -= 1;
            if self.held[i].1 == 0 {
                self.held.remove(i);
            }
        }
    }

    /// The oldest snapshot in use.
    pub fn oldest(&self) -> Option<u64> {
        self.held.first().map(|&(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::Snapshots;

    proptest! {
        /// Takes and releases in any order agree with a map of counts.
        #[test]
        fn agrees_with_a_map_of_counts(ops in prop::collection::vec((any::<bool>(), 0u64..8), 0..200)) {
            let mut s = Snapshots::default();
            let mut model: BTreeMap<u64, usize> = BTreeMap::new();
            for (take, seq) in ops {
                if take {
                    s.take(seq);
                    *model.entry(seq).or_insert(0) += 1;
                } else {
                    s.release(seq);
                    if let Some(n) = model.get_mut(&seq) {
                        *n -= 1;
                        if *n == 0 {
                            model.remove(&seq);
                        }
                    }
                }
                prop_assert_eq!(s.oldest(), model.keys().next().copied());
                prop_assert_eq!(&s.held, &model.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn one_transaction_at_a_time_keeps_the_allocation() {
        let mut s = Snapshots::default();
        s.take(1);
        let cap = s.held.capacity();
        s.release(1);
        assert_eq!(s.oldest(), None);
        for seq in 2..100 {
            s.take(seq);
            assert_eq!(s.oldest(), Some(seq));
            s.release(seq);
        }
        assert_eq!(s.held.capacity(), cap);
    }
}
