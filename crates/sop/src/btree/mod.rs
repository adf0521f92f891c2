//! B+tree algorithms over a [`NodeStore`]: search, insert with split (or sibling
//! redistribution), delete with merge and borrow, and cursor positioning.
//!
//! The algorithms know nothing of files, caches or transactions: the transaction layer
//! implements [`NodeStore`] (copy-on-write of the nodes it changes, reads through its
//! snapshot). Items live only in leaves; internal nodes hold separators.
//!
//! # Order
//!
//! Items are ordered by key (bytes, or a custom comparator), then, in stores with duplicate
//! keys, by item id *descending*, so the newest duplicate comes first (as in SOP). In unique
//! stores the id is never compared. Searching for the bound `(key, ItemId::MAX)` lands on the
//! first item with `key`; `(key, 0)` on its last.
//!
//! # Invariants
//!
//! - every leaf but the root holds at least one item; every node holds at most `slot_length`
//!   items (separators for internal nodes);
//! - all leaves are at the same depth;
//! - separators bound their subtrees (see [`node`]).

#[macro_use]
mod search;
mod cursor;
mod delete;
pub mod delta;
pub mod finger;
pub mod index;
mod insert;
pub mod node;

use std::cmp::Ordering;
use std::sync::Arc;

pub use cursor::{Pos, Seek, first, last, seek, step_next, step_prev};
pub use delete::remove;
pub use finger::Finger;
pub use index::SearchIndex;
pub use insert::insert;
pub use node::{InlineValue, Item, ItemId, KeyBuf, Node, Sep, ValueRef};

use crate::error::Result;
use crate::registry::LogicalId;

/// A custom key comparator over encoded keys.
pub type Comparator = Arc<dyn Fn(&[u8], &[u8]) -> Ordering + Send + Sync>;

/// The order of one store.
#[derive(Clone)]
pub struct Order {
    /// Custom key comparator; `None` means byte order.
    pub custom: Option<Comparator>,
    /// Unique keys: item ids are not compared.
    pub unique: bool,
}

impl std::fmt::Debug for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Order")
            .field("custom", &self.custom.is_some())
            .field("unique", &self.unique)
            .finish()
    }
}

/// Byte order of keys (memcmp), with a fast path on the first 8 bytes.
#[inline]
pub fn byte_order(a: &[u8], b: &[u8]) -> Ordering {
    match word8(a).cmp(&word8(b)) {
        Ordering::Equal => a.cmp(b),
        o => o,
    }
}

impl Order {
    /// Compares two keys.
    #[must_use]
    #[inline]
    pub fn keys(&self, a: &[u8], b: &[u8]) -> Ordering {
        match &self.custom {
            Some(c) => c(a, b),
            None => byte_order(a, b),
        }
    }

    /// Compares (key, id) pairs in the store's full order.
    #[must_use]
    pub fn full(&self, ak: &[u8], aid: ItemId, bk: &[u8], bid: ItemId) -> Ordering {
        match self.keys(ak, bk) {
            Ordering::Equal if !self.unique => bid.cmp(&aid),
            o => o,
        }
    }
}

/// Where the algorithms get and put nodes.
pub trait NodeStore {
    /// Reads a node.
    fn node(&mut self, id: LogicalId) -> Result<Arc<Node>>;
    /// Reads a node, with its search index when it is a committed (immutable) one.
    fn node_indexed(&mut self, id: LogicalId) -> Result<(Arc<Node>, Option<Arc<SearchIndex>>)> {
        Ok((self.node(id)?, None))
    }
    /// Calls `f` with a node and its search index (as [`NodeStore::node_indexed`]), without
    /// handing out a reference count where the store can avoid it.
    fn visit<R>(
        &mut self,
        id: LogicalId,
        f: impl FnOnce(&Node, Option<&SearchIndex>) -> R,
    ) -> Result<R> {
        let (node, index) = self.node_indexed(id)?;
        Ok(f(&node, index.as_deref()))
    }
    /// A node to modify in place (copied on first write in a transaction).
    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node>;
    /// Inserts `item` at `pos` of leaf `id`; returns the leaf's new length. A store may keep
    /// the insert pending until the leaf is read or changed again.
    fn insert_in_leaf(&mut self, id: LogicalId, pos: usize, item: Item) -> Result<usize> {
        insert_now(self, id, pos, item)
    }
    /// Removes the item at `pos` of leaf `id` when `wanted` accepts it; returns it and the
    /// leaf's new length (`None` when the item is not wanted or there is none). A store may
    /// keep the removal pending until the leaf is read or changed again when the leaf keeps
    /// more than `min_left` items.
    fn remove_in_leaf(
        &mut self,
        id: LogicalId,
        pos: usize,
        wanted: &dyn Fn(&Item) -> bool,
        min_left: usize,
    ) -> Result<Option<(Item, usize)>> {
        let _ = min_left;
        remove_now(self, id, pos, wanted)
    }
    /// Stores a new node, returning its new logical id.
    fn alloc(&mut self, node: Node) -> Result<LogicalId>;
    /// Frees a node that is no longer referenced.
    fn free(&mut self, id: LogicalId);
    /// The tree's [`Finger`] and its current shape generation, for stores that keep one (the
    /// generation must change with every `alloc`, every `free` and every `node_mut` of an
    /// internal node).
    fn finger(&mut self) -> Option<(&mut Finger, u64)> {
        None
    }
}

/// Inserts `item` at `pos` of leaf `id` through [`NodeStore::node_mut`]; returns the leaf's
/// new length.
pub(crate) fn insert_now<S: NodeStore + ?Sized>(
    store: &mut S,
    id: LogicalId,
    pos: usize,
    item: Item,
) -> Result<usize> {
    let Node::Leaf(items) = store.node_mut(id)? else {
        return Err(crate::error::Error::InvalidArgument(
            "descent ended on an internal node".into(),
        ));
    };
    items.insert(pos, item);
    Ok(items.len())
}

/// Removes the item at `pos` of leaf `id` through [`NodeStore::node_mut`] when `wanted`
/// accepts it; returns it and the leaf's new length.
pub(crate) fn remove_now<S: NodeStore + ?Sized>(
    store: &mut S,
    id: LogicalId,
    pos: usize,
    wanted: &dyn Fn(&Item) -> bool,
) -> Result<Option<(Item, usize)>> {
    match store.node_mut(id)? {
        Node::Leaf(items) if items.get(pos).is_some_and(wanted) => {
            let removed = items.remove(pos);
            Ok(Some((removed, items.len())))
        }
        _ => Ok(None),
    }
}

/// The shape parameters of one tree.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Order of items.
    pub order: Order,
    /// Maximum items (or separators) per node.
    pub slot_length: usize,
    /// Redistribute to a sibling before splitting a full leaf.
    pub leaf_load_balancing: bool,
}

impl Shape {
    /// Fewest items a non-root node keeps before it is merged or refilled.
    #[must_use]
    pub fn min_fill(&self) -> usize {
        (self.slot_length / 4).max(1)
    }
}

/// A path from the root: (internal node, index of the child taken). Inline up to a depth of 8
/// (a tree of 64-slot nodes that deep holds ~2^48 items, and the default is 96): walking
/// allocates nothing.
pub type Path = smallvec::SmallVec<[(LogicalId, usize); 8]>;

impl Shape {
    /// True when keys are unique and in byte order: ids play no part in searches, and a node's
    /// [`SearchIndex`] can be used.
    #[must_use]
    #[inline]
    pub fn plain(&self) -> bool {
        self.order.custom.is_none() && self.order.unique
    }
}

/// [`child_index`], through the node's search index when it has one.
#[inline]
pub(crate) fn child_index_in(
    shape: &Shape,
    seps: &[Sep],
    index: Option<&SearchIndex>,
    key: &[u8],
    id: ItemId,
) -> usize {
    match index {
        Some(ix) if shape.plain() && ix.len() == seps.len() => ix.upper_bound(seps, key),
        _ => child_index(shape, seps, key, id),
    }
}

/// [`lower_bound`], through the node's search index when it has one.
#[inline]
pub(crate) fn lower_bound_in(
    shape: &Shape,
    items: &[Item],
    index: Option<&SearchIndex>,
    key: &[u8],
    id: ItemId,
) -> usize {
    match index {
        Some(ix) if shape.plain() && ix.len() == items.len() => ix.lower_bound(items, key),
        _ => lower_bound(shape, items, key, id),
    }
}

/// Index of the child of an internal node to descend into for target `(key, id)`.
fn child_index(shape: &Shape, seps: &[Sep], key: &[u8], id: ItemId) -> usize {
    if shape.plain() {
        // Unique byte order (the common case): ids play no part; compare 16-byte prefixes,
        // with the probe's computed once.
        let kp = probe_prefix(key);
        return first_not!(seps.len(), |i| key_below(&seps[i].key, key, kp, true));
    }
    seps.partition_point(|s| shape.order.full(&s.key, s.id, key, id) != Ordering::Greater)
}

/// True when `k` orders before the probe (`or_equal`: or is equal to it); `kp` is the probe's
/// 16-byte prefix. Only a tie on the prefixes (rare, well predicted) takes a branch; the common
/// outcome is one comparison a search selects on.
#[inline(always)]
fn key_below(k: &KeyBuf, probe: &[u8], kp: u128, or_equal: bool) -> bool {
    let p = k.prefix16();
    if p == kp {
        match fast_cmp(k, probe, kp) {
            Ordering::Less => true,
            Ordering::Equal => or_equal,
            Ordering::Greater => false,
        }
    } else {
        p < kp
    }
}

/// The first 16 bytes of `k` as a big-endian number, zero-padded: for keys that differ in
/// their first 16 bytes this orders them as memcmp does.
#[inline]
#[must_use]
pub fn probe_prefix(k: &[u8]) -> u128 {
    u128::from(word8(k)) << 64 | u128::from(word8(k.get(8..).unwrap_or_default()))
}

/// The first 8 bytes of `k` as a big-endian number, zero-padded, from at most two
/// overlapping loads (no byte loop, no call into memcpy).
#[inline]
pub(crate) fn word8(k: &[u8]) -> u64 {
    let n = k.len();
    if let Some(w) = k.first_chunk::<8>() {
        return u64::from_le_bytes(*w).swap_bytes();
    }
    if n >= 4 {
        // Bytes 0..4 and n-4..n (they overlap when n < 8; the shared bytes are equal).
        let a = u64::from(u32::from_le_bytes([k[0], k[1], k[2], k[3]]).swap_bytes());
        let b =
            u64::from(u32::from_le_bytes([k[n - 4], k[n - 3], k[n - 2], k[n - 1]]).swap_bytes());
        return a << 32 | b << (64 - 8 * n);
    }
    let mut w = 0u64;
    for (i, b) in k.iter().enumerate() {
        w |= u64::from(*b) << (56 - 8 * i);
    }
    w
}

/// Byte order of a stored key against a probe whose [`probe_prefix`] is `pp`. Keys of at most
/// 16 bytes are decided by the prefixes and lengths alone (equal zero-padded prefixes mean
/// one key is the other plus zero bytes: the shorter one is smaller).
#[inline(always)]
fn fast_cmp(k: &KeyBuf, probe: &[u8], pp: u128) -> Ordering {
    match k.prefix16().cmp(&pp) {
        Ordering::Equal => {
            let kl = k.len();
            if kl <= 16 && probe.len() <= 16 {
                kl.cmp(&probe.len())
            } else {
                (**k).cmp(probe)
            }
        }
        o => o,
    }
}

/// Where a descent ended: the leaf, the position of the first item `>= (key, id)` in it, and
/// whether that item has `key` (in the store's key order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landing {
    /// The leaf.
    pub leaf: LogicalId,
    /// The position in it.
    pub pos: usize,
    /// The item there has the key.
    pub same: bool,
    /// Reached through the finger: the path is the finger's.
    fingered: bool,
    /// Reached through the finger: the position the descent before this one found in the
    /// same leaf (a run of inserts in key order lands one further each time, a run in
    /// descending order at the same place).
    pub prev: Option<usize>,
}

impl Landing {
    /// Makes `path` the descent's path (a descent through the finger leaves it in the finger,
    /// to be copied only when a split or merge needs it, before anything reshapes the tree).
    pub fn fill_path<S: NodeStore>(&self, store: &mut S, path: &mut Path) {
        if self.fingered
            && let Some((f, _)) = store.finger()
        {
            path.clear();
            path.extend_from_slice(f.path());
        }
    }
}

/// Walks from `root` to the leaf that covers `(key, id)`. A full walk fills `path`; one
/// through the finger leaves `path` empty ([`Landing::fill_path`] fills it).
pub fn descend<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: LogicalId,
    key: &[u8],
    id: ItemId,
    path: &mut Path,
) -> Result<Landing> {
    path.clear();
    let mut cur = root;
    let fingered = match store.finger() {
        Some((f, generation)) if f.armed() => f.enter(shape, generation, root, key, id),
        _ => None,
    };
    let mut hint = None;
    if let Some((leaf, at, next_first)) = fingered {
        cur = leaf;
        hint = Some((at, next_first));
    }
    loop {
        let step = store.visit(cur, |node, index| match node {
            Node::Leaf(items) => {
                let near = hint.and_then(|(at, next_first)| {
                    finger::position_near(shape, items, key, at, next_first)
                });
                let pos = match near {
                    Some(pos) => pos,
                    None => lower_bound_in(shape, items, index, key, id),
                };
                let same = items
                    .get(pos)
                    .is_some_and(|it| shape.order.keys(&it.key, key) == Ordering::Equal);
                Err((pos, same))
            }
            Node::Internal { seps, children } => {
                let i = child_index_in(shape, seps, index, key, id);
                Ok((i, children.get(i).copied().unwrap_or_default()))
            }
        })?;
        match step {
            Ok((i, child)) => {
                path.push((cur, i));
                cur = child;
            }
            Err((pos, same)) => {
                let mut prev = None;
                if fingered.is_some() {
                    if let Some((f, _)) = store.finger() {
                        prev = Some(f.at(pos));
                    }
                } else if store.finger().is_some_and(|(f, _)| f.wants()) {
                    take_finger(store, root, path, cur, pos)?;
                }
                return Ok(Landing {
                    leaf: cur,
                    pos,
                    same,
                    fingered: fingered.is_some(),
                    prev,
                });
            }
        }
    }
}

/// Takes a finger at `leaf`, reached from `root` by `path` (the caller asked
/// [`Finger::wants`] first). The leaf's bounds are the nearest separators around the path,
/// found from the parent up (the parent's own, unless the leaf is its first or last child).
pub(crate) fn take_finger<S: NodeStore>(
    store: &mut S,
    root: LogicalId,
    path: &Path,
    leaf: LogicalId,
    pos: usize,
) -> Result<()> {
    let (mut lo, mut hi): (Option<Sep>, Option<Sep>) = (None, None);
    let (mut lo_known, mut hi_known) = (false, false);
    for &(node, i) in path.iter().rev() {
        let ok = store.visit(node, |n, _| match n {
            Node::Internal { seps, .. } => {
                if !lo_known && i > 0 {
                    lo = seps.get(i - 1).cloned();
                    lo_known = true;
                }
                if !hi_known && i < seps.len() {
                    hi = seps.get(i).cloned();
                    hi_known = true;
                }
                true
            }
            Node::Leaf(_) => false,
        })?;
        if !ok {
            return Ok(());
        }
        if lo_known && hi_known {
            break;
        }
    }
    if let Some((f, generation)) = store.finger() {
        f.set(generation, root, leaf, path, lo, hi);
        let _ = f.at(pos);
    }
    Ok(())
}

/// The leaf and index of the first item with `key`, found without recording a path (point
/// lookups). Returns `Lookup::Found`, `Lookup::Absent`, or `Lookup::Ambiguous` when the first item with
/// `key` may lie in the next leaf (only possible in stores with duplicate keys, when a
/// separator falls among the duplicates); the caller then uses [`seek`].
pub fn lookup<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: LogicalId,
    key: &[u8],
) -> Result<Lookup> {
    if root == 0 {
        return Ok(Lookup::Absent);
    }
    let mut cur = root;
    loop {
        let (node, index) = store.node_indexed(cur)?;
        match &*node {
            Node::Leaf(items) => {
                let idx = lower_bound_in(shape, items, index.as_deref(), key, ItemId::MAX);
                return Ok(match items.get(idx) {
                    Some(it) if shape.order.keys(&it.key, key) == Ordering::Equal => {
                        Lookup::Found(node, idx)
                    }
                    Some(_) => Lookup::Absent,
                    None if shape.order.unique => Lookup::Absent,
                    None => Lookup::Ambiguous,
                });
            }
            Node::Internal { seps, children } => {
                let i = child_index_in(shape, seps, index.as_deref(), key, ItemId::MAX);
                cur = children.get(i).copied().unwrap_or_default();
            }
        }
    }
}

/// Result of [`lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// The leaf and the index of the first item with the key.
    Found(Arc<Node>, usize),
    /// No item has the key.
    Absent,
    /// Undecided: use [`seek`].
    Ambiguous,
}

/// Position of the first item `>= (key, id)` in a leaf.
pub(crate) fn lower_bound(shape: &Shape, items: &[Item], key: &[u8], id: ItemId) -> usize {
    if shape.plain() {
        // As in `child_index`.
        let kp = probe_prefix(key);
        return first_not!(items.len(), |i| key_below(&items[i].key, key, kp, false));
    }
    items.partition_point(|it| shape.order.full(&it.key, it.id, key, id) == Ordering::Less)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod order_tests {
    use super::byte_order;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn byte_order_is_memcmp(a in proptest::collection::vec(any::<u8>(), 0..20), b in proptest::collection::vec(any::<u8>(), 0..20)) {
            prop_assert_eq!(byte_order(&a, &b), a.cmp(&b));
            let mut c = a.clone();
            c.push(0);
            prop_assert_eq!(byte_order(&a, &c), a.cmp(&c));
        }

        #[test]
        fn probe_prefix_is_zero_padded_big_endian(a in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut buf = [0u8; 16];
            let n = a.len().min(16);
            buf[..n].copy_from_slice(&a[..n]);
            prop_assert_eq!(super::probe_prefix(&a), u128::from_le_bytes(buf).swap_bytes());
        }

        #[test]
        fn fast_cmp_is_memcmp(a in proptest::collection::vec(0u8..3, 0..40), b in proptest::collection::vec(0u8..3, 0..40)) {
            let ka = super::KeyBuf::new(&a);
            prop_assert_eq!(super::fast_cmp(&ka, &b, super::probe_prefix(&b)), a.cmp(&b));
            let mut c = b.clone();
            c.push(0);
            prop_assert_eq!(super::fast_cmp(&ka, &c, super::probe_prefix(&c)), a.as_slice().cmp(&c));
        }
    }
}
