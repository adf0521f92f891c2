//! The finger: where a tree's last descent ended, so the next one can start there.
//!
//! Writes often come in key order, or near it: time-ordered keys, imports, `key_1`, `key_2`,
//! ... A descent whose target lies in the key range of the leaf the previous descent ended on
//! takes the same path, so [`super::descend`] skips the internal levels (a lookup and a search
//! each) and searches that leaf only. This is the "last leaf" optimisation of B-tree engines
//! (SQLite's cursor reuse for appends, LMDB's `MDB_APPEND`), without any hint from the caller.
//!
//! # Invariants
//!
//! - A finger is used only while the tree's root and *shape generation* are those it was taken
//!   at. The node store bumps that generation on every node allocation, every free, and every
//!   change of an internal node: splits, merges, borrows and root changes all do one of these,
//!   and nothing else moves a separator or a child. So the path and the bounds a usable finger
//!   holds are exactly those a full descent would find.
//! - `lo` and `hi` are the nearest separators around the leaf along its path: its parent's,
//!   or, for a first or last child, an ancestor's (each level's range lies inside its
//!   parent's). `None` means no separator on that side up to the root: unbounded.
//! - The descent's own decision rule is used to check the range: a child covers the targets
//!   `t` with `lo <= t < hi` in the store's full order (see `child_index`).
//! - A descent through the finger first tries the position the last one found in the leaf,
//!   and the one after it ([`position_near`]), checking that the item before is below the
//!   key and the item there is not (exactly `lower_bound`'s answer), before searching.
//! - Random access pays little: a finger whose range misses before it was ever used is
//!   dropped, and a new one (a visit of the parent, rarely more, and two key copies) is taken
//!   only every [`RETRY`]th miss after that. The first descent of a tree takes none: a
//!   transaction of one operation would never use it.

use std::cmp::Ordering;

use super::{Item, ItemId, LogicalId, Path, Sep, Shape, key_below, probe_prefix};

/// Misses between two fingers when the last one was never used.
pub const RETRY: u32 = 64;

/// Where the last descent of a tree ended (see the module docs).
#[derive(Debug, Clone)]
pub struct Finger {
    /// The shape generation and the root the finger was taken at.
    generation: u64,
    root: LogicalId,
    /// The leaf; 0 when there is no finger.
    leaf: LogicalId,
    /// The internal nodes above it and the child taken in each.
    path: Path,
    /// The leaf's bounds (`None`: unbounded).
    lo: Option<Sep>,
    hi: Option<Sep>,
    /// The position the last descent found in the leaf, and whether it was one further than
    /// the one before (then the next descent tries one further first).
    pos: usize,
    moved: bool,
    /// Descents that used this finger.
    hits: u32,
    /// Misses left before a new finger is taken (while the last one had no hits).
    wait: u32,
}

impl Default for Finger {
    /// No finger yet, and none taken at the first descent that misses: a finger pays from
    /// the second descent on, and a transaction of one operation (a single durable insert)
    /// would take one for nothing (a visit of the parent, the separators' copies, the path).
    fn default() -> Self {
        Finger {
            generation: 0,
            root: 0,
            leaf: 0,
            path: Path::new(),
            lo: None,
            hi: None,
            pos: 0,
            moved: false,
            hits: 0,
            wait: 1,
        }
    }
}

impl Finger {
    /// True when there is a finger to try (a cheap test before [`Finger::enter`]).
    #[inline]
    #[must_use]
    pub fn armed(&self) -> bool {
        self.leaf != 0
    }

    /// The leaf for a descent to `(key, id)` when the finger covers it, with the position
    /// last found there and whether to try the next one first ([`position_near`]); `None`
    /// otherwise. The path stays in the finger ([`Finger::path`]) until a split or merge
    /// needs it.
    pub fn enter(
        &mut self,
        shape: &Shape,
        generation: u64,
        root: LogicalId,
        key: &[u8],
        id: ItemId,
    ) -> Option<(LogicalId, usize, bool)> {
        if self.leaf == 0 || self.generation != generation || self.root != root {
            return None;
        }
        // `s <= target`, decided as `child_index` decides it.
        let plain = shape.plain();
        let kp = if plain { probe_prefix(key) } else { 0 };
        let at_or_below = |s: &Sep| {
            if plain {
                key_below(&s.key, key, kp, true)
            } else {
                shape.order.full(&s.key, s.id, key, id) != Ordering::Greater
            }
        };
        if self.lo.as_ref().is_some_and(|lo| !at_or_below(lo))
            || self.hi.as_ref().is_some_and(at_or_below)
        {
            if self.hits == 0 {
                // Never used: random access. Stop checking it (a new one is taken after
                // [`RETRY`] misses).
                self.leaf = 0;
            }
            return None;
        }
        self.hits = self.hits.saturating_add(1);
        Some((self.leaf, self.pos, self.moved))
    }

    /// The internal nodes above the finger's leaf, and the child taken in each.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the position a descent found in the finger's leaf.
    pub fn at(&mut self, pos: usize) -> usize {
        // Removals in order land where the last one did; inserts in order one further.
        let prev = self.pos;
        self.moved = pos != prev;
        self.pos = pos;
        prev
    }

    /// After a full descent that missed: whether to take a new finger now.
    #[inline]
    pub fn wants(&mut self) -> bool {
        if self.hits > 0 || self.wait == 0 {
            return true;
        }
        self.wait -= 1;
        false
    }

    /// Takes a finger at `leaf`, reached from `root` by `path`, which bounds it by `lo` and
    /// `hi`: the nearest separators on each side along the path (`None`: none on that side
    /// up to the root, so unbounded).
    pub fn set(
        &mut self,
        generation: u64,
        root: LogicalId,
        leaf: LogicalId,
        path: &Path,
        lo: Option<Sep>,
        hi: Option<Sep>,
    ) {
        self.hits = 0;
        self.wait = RETRY - 1;
        self.generation = generation;
        self.root = root;
        self.leaf = leaf;
        self.path.clone_from(path);
        self.lo = lo;
        self.hi = hi;
    }
}

/// The position of `key` in `items` (as `lower_bound` finds it: the first item `>= key`) when
/// it is the last position found there, or the one after it: where the next of a run of
/// removals, or of ascending inserts, lands (`next_first`: try the one after first). Two
/// comparisons each; `None` when neither is it (or the store is not plain, where ids take
/// part), and the caller searches.
pub fn position_near(
    shape: &Shape,
    items: &[Item],
    key: &[u8],
    last: usize,
    next_first: bool,
) -> Option<usize> {
    if !shape.plain() {
        return None;
    }
    let kp = probe_prefix(key);
    // `items[i] < key`.
    let below = |i: usize| key_below(&items[i].key, key, kp, false);
    let order = if next_first {
        [last + 1, last]
    } else {
        [last, last + 1]
    };
    order
        .into_iter()
        .find(|&p| p <= items.len() && (p == 0 || below(p - 1)) && (p == items.len() || !below(p)))
}
