//! The L1 cache: decoded nodes shared by every transaction of the process.
//!
//! Keyed by *physical* location (segment, offset). Node images are immutable and a location is
//! never reused (segment ids only grow), so a cache hit can never be stale; a changed node simply
//! has a new location. Bounded by the approximate bytes of the decoded nodes.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::btree::{Node, SearchIndex};
use crate::fasthash::FastMap;
use crate::registry::{Entry, Location, LogicalId};

#[derive(Clone)]
struct Cached {
    node: Arc<Node>,
    index: Arc<SearchIndex>,
    weight: u64,
}

#[derive(Clone, Copy)]
struct ByWeight;

impl Weighter<(u32, u64), Cached> for ByWeight {
    fn weight(&self, _key: &(u32, u64), val: &Cached) -> u64 {
        val.weight
    }
}

/// The approximate bytes a cached node and its search index hold (what the cache is bounded
/// by). A leaf's comes from the encoded length its index carries, without a walk of its items
/// (a single-insert commit caches a leaf of ~100 items); an internal node's is counted.
#[must_use]
pub fn weight(node: &Node, index: &SearchIndex) -> u64 {
    let own = match node {
        Node::Leaf(items) => (64 + 48 * items.len() + index.leaf_bytes()) as u64,
        Node::Internal { .. } => node.weight(),
    };
    own + index.weight()
}

/// Up to this many updates, [`NodeCache::forget_replaced`] scans them rather than build a map.
const SCAN_UPDATES: usize = 16;

/// Decoded nodes by location.
pub struct NodeCache {
    inner: Option<Cache<(u32, u64), Cached, ByWeight>>,
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl NodeCache {
    /// A cache holding about `bytes` of decoded nodes (0 disables it).
    #[must_use]
    pub fn new(bytes: u64) -> Self {
        let inner = (bytes > 0).then(|| {
            let items = usize::try_from(bytes / 16_384)
                .unwrap_or(usize::MAX)
                .max(16);
            Cache::with_weighter(items, bytes, ByWeight)
        });
        NodeCache { inner }
    }

    /// The node at `loc` and its search index, if cached.
    #[must_use]
    pub fn get(&self, loc: Location) -> Option<(Arc<Node>, Arc<SearchIndex>)> {
        self.inner
            .as_ref()?
            .get(&(loc.seg, loc.off))
            .map(|c| (c.node, c.index))
    }

    /// Drops the node at `loc` (it was superseded).
    pub fn remove(&self, loc: Location) {
        if let Some(c) = &self.inner {
            c.remove(&(loc.seg, loc.off));
        }
    }

    /// Caches `node` (immutable from now on) at `loc`, with its search index.
    pub fn insert(&self, loc: Location, node: Arc<Node>, index: Arc<SearchIndex>) {
        if self.inner.is_some() {
            let weight = weight(&node, &index);
            self.insert_weighed(loc, node, index, weight);
        }
    }

    /// [`NodeCache::insert`] with the weight computed by the caller ([`weight`]).
    pub fn insert_weighed(
        &self,
        loc: Location,
        node: Arc<Node>,
        index: Arc<SearchIndex>,
        weight: u64,
    ) {
        if let Some(c) = &self.inner {
            c.insert(
                (loc.seg, loc.off),
                Cached {
                    node,
                    index,
                    weight,
                },
            );
        }
    }

    /// Drops what a commit superseded: the records of the `replaced` entries, except those
    /// an entry of `updates` still uses as the base of a leaf delta.
    pub fn forget_replaced(&self, replaced: &[Entry], updates: &[(LogicalId, Entry)]) {
        if self.inner.is_none() {
            return;
        }
        // A commit's few updates are scanned; a map is built for many (an empty map does
        // not allocate).
        let many = updates.len() > SCAN_UPDATES;
        let bases: FastMap<Location, ()> = if many {
            updates
                .iter()
                .filter_map(|(_, e)| e.delta_base())
                .map(|l| (l, ()))
                .collect()
        } else {
            FastMap::default()
        };
        let is_base = |loc: Location| {
            if many {
                bases.contains_key(&loc)
            } else {
                updates.iter().any(|(_, e)| e.delta_base() == Some(loc))
            }
        };
        for loc in replaced.iter().flat_map(Entry::records) {
            if !is_base(loc) {
                self.remove(loc);
            }
        }
    }
}
