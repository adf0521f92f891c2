//! A transaction's view of one store's nodes: the [`NodeStore`] the B-tree algorithms run on.
//!
//! Reads go to the transaction's own changed nodes first, then through its snapshot's registry
//! to the L1 cache or the log. The first write to a committed node copies it into the
//! transaction (copy-on-write); new nodes get fresh logical ids. In `ForWriting` mode every
//! committed node read is recorded with its version, for validation at commit.

use std::collections::hash_map::Entry as MapEntry;
use std::sync::Arc;

use super::access::Access;
use crate::btree::{self, Finger, Item, ItemId, Node, NodeStore, SearchIndex, Shape, ValueRef};
use crate::db::Shared;
use crate::error::{Error, Result};
use crate::fasthash::FastMap;
use crate::log::record::{self, Kind};
use crate::registry::{Entry, Location, LogicalId};
use crate::state::{DbState, StoreId, StoreMeta};

/// A node changed by the transaction.
///
/// A committed leaf whose only change is one inserted or one removed item keeps that change
/// pending (the committed leaf is shared, not copied): the commit writes it as a one-item
/// delta and the new leaf is built after the write, while the device works, usually in place
/// once the transaction has let go of the committed version (ADR 0007). Every other use of
/// the node settles the change first ([`Dirty::node`]).
///
/// Invariant: with `pending`, `node` is the committed leaf of version `base`, and the item
/// inserted or removed has an inline value.
#[derive(Debug, Clone)]
pub(crate) struct Dirty {
    node: Arc<Node>,
    /// A change to `node` not applied yet, and `node`'s search index.
    pending: Option<(Pending, Arc<SearchIndex>)>,
    /// Version of the committed node it replaces (0 for a new node).
    pub base: u64,
    /// Search index of an internal node, built when it is searched again and again and
    /// dropped when it is changed (leaves change on every write and get none).
    pub index: Option<SearchIndex>,
    /// Searches of an internal node since it last changed, up to [`INDEX_AFTER`].
    pub searches: u8,
}

/// A change kept pending on a committed leaf (see [`Dirty`]).
#[derive(Debug, Clone)]
enum Pending {
    /// This item inserted at this position.
    Insert(usize, Item),
    /// The item at this position removed.
    Remove(usize),
}

impl Pending {
    /// A copy of `leaf` with the change applied.
    fn applied_to(self, leaf: &Node) -> Node {
        match self {
            Pending::Insert(pos, item) => leaf.with_inserted(pos, item),
            Pending::Remove(pos) => leaf.with_removed(pos),
        }
    }
}

impl Dirty {
    fn new(node: Arc<Node>, base: u64) -> Dirty {
        Dirty {
            node,
            pending: None,
            base,
            index: None,
            searches: 0,
        }
    }

    /// A committed leaf (of version `base`, with search index `index`) with `change`
    /// pending.
    fn pending(node: Arc<Node>, base: u64, change: Pending, index: Arc<SearchIndex>) -> Dirty {
        Dirty {
            pending: Some((change, index)),
            ..Dirty::new(node, base)
        }
    }

    /// Applies a pending change (copies the leaf).
    fn settle(&mut self) {
        if let Some((change, _)) = self.pending.take() {
            self.node = Arc::new(change.applied_to(&self.node));
        }
    }

    /// The changed node (a pending change applied first).
    pub fn node(&mut self) -> &Arc<Node> {
        self.settle();
        &self.node
    }

    /// The changed node, to change further (a pending change applied first).
    pub fn node_mut(&mut self) -> &mut Arc<Node> {
        self.settle();
        &mut self.node
    }

    /// The changed node, leaving a pending change pending (applied to a copy).
    pub fn current(&self) -> Arc<Node> {
        match &self.pending {
            Some((change, _)) => Arc::new(change.clone().applied_to(&self.node)),
            None => Arc::clone(&self.node),
        }
    }

    /// The node held: the committed leaf while a change is pending, else the changed node.
    pub fn committed_leaf(&self) -> &Arc<Node> {
        &self.node
    }

    /// The changed node when no change is pending.
    pub fn ready(&self) -> Option<&Arc<Node>> {
        self.pending.is_none().then_some(&self.node)
    }

    /// True while a change to the committed leaf is pending.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The insert pending into the committed leaf, if any.
    pub fn pending_insert(&self) -> Option<PendingInsert<'_>> {
        match &self.pending {
            Some((Pending::Insert(pos, item), index)) => Some(PendingInsert {
                leaf: &self.node,
                index,
                pos: *pos,
                item,
            }),
            _ => None,
        }
    }

    /// The removal pending from the committed leaf, if any.
    pub fn pending_remove(&self) -> Option<PendingRemove<'_>> {
        match &self.pending {
            Some((Pending::Remove(pos), index)) => Some(PendingRemove {
                leaf: &self.node,
                index,
                pos: *pos,
            }),
            _ => None,
        }
    }

    /// True when the node is a leaf (a change pending or not).
    pub fn is_leaf(&self) -> bool {
        matches!(*self.node, Node::Leaf(_))
    }
}

/// An insert pending into a committed leaf (see [`Dirty`]).
pub(crate) struct PendingInsert<'a> {
    /// The committed leaf.
    pub leaf: &'a Arc<Node>,
    /// Its search index.
    pub index: &'a Arc<SearchIndex>,
    /// Where the item goes.
    pub pos: usize,
    /// The item.
    pub item: &'a Item,
}

/// A removal pending from a committed leaf (see [`Dirty`]).
pub(crate) struct PendingRemove<'a> {
    /// The committed leaf.
    pub leaf: &'a Arc<Node>,
    /// Its search index.
    pub index: &'a Arc<SearchIndex>,
    /// The position of the item removed.
    pub pos: usize,
}

impl PendingRemove<'_> {
    /// The item removed.
    pub fn item(&self) -> Option<&Item> {
        match &**self.leaf {
            Node::Leaf(items) => items.get(self.pos),
            Node::Internal { .. } => None,
        }
    }
}

/// Searches of a changed internal node after which it gets a search index. Building one
/// reads every separator: a parent searched once or twice between two splits of its
/// children (a run of inserts, where the finger skips it) is searched directly, the root of
/// random inserts (searched by each) gets its index after a few.
const INDEX_AFTER: u8 = 3;

/// Where an actively persisted blob of this transaction was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewBlob {
    pub entry: Entry,
}

/// One store as the transaction sees it.
#[derive(Debug)]
pub(crate) struct TxnStore {
    /// Working copy: root and count include this transaction's changes.
    pub meta: StoreMeta,
    /// The committed meta at the snapshot (None when created by this transaction).
    pub base: Option<Arc<StoreMeta>>,
    pub shape: Shape,
    pub dirty: FastMap<LogicalId, Dirty>,
    /// Committed nodes this transaction frees.
    pub freed: Vec<LogicalId>,
    /// The committed versions of the nodes this transaction changed or freed (what its item
    /// changes are computed against when it must merge).
    pub originals: FastMap<LogicalId, Arc<Node>>,
    /// Committed value blobs this transaction frees.
    pub freed_blobs: Vec<LogicalId>,
    /// Item-level reads and writes (`ForWriting`).
    pub access: Access,
    /// Blobs written before commit (actively persisted values).
    pub new_blobs: FastMap<LogicalId, NewBlob>,
    pub dropped: bool,
    /// The transaction read the item count (validated at commit).
    pub count_read: bool,
    /// Bumped on every change, so cursors know to re-seek.
    pub changes: u64,
    /// Item counters reserved for this transaction's adds (see [`TxnStore::new_item_id`]).
    pub ids: std::ops::Range<u64>,
    /// Size of the next block to reserve (doubles up to [`ID_BLOCK_MAX`]).
    pub id_block: u64,
    /// Where the last descent ended ([`btree::Finger`]).
    pub finger: Finger,
    /// The tree's shape generation: bumped by every node allocation, free and change of an
    /// internal node, and by [`TxnStore::reshaped`].
    pub shape_gen: u64,
}

/// The largest block of item counters a transaction reserves at once.
const ID_BLOCK_MAX: u64 = 1024;

/// Entries past which an emptied working store, or a transaction's table or cursor vector,
/// is not kept for a later transaction (`TxnSpare`): it would hold the memory, and clearing
/// it would cost what allocating saves.
pub(crate) const SPARE_MAX_ENTRIES: usize = 64;

impl TxnStore {
    /// A working store over `meta` (`base`: the committed meta it starts from, `None` for a
    /// store the transaction creates), built in `spare`'s allocations when there is one
    /// ([`TxnStore::emptied`]).
    pub fn new(
        spare: Option<Box<TxnStore>>,
        meta: StoreMeta,
        base: Option<Arc<StoreMeta>>,
        shape: Shape,
    ) -> Box<TxnStore> {
        match spare {
            Some(mut ts) => {
                ts.meta = meta;
                ts.base = base;
                ts.shape = shape;
                ts
            }
            None => Box::new(TxnStore {
                meta,
                base,
                shape,
                dirty: FastMap::default(),
                freed: Vec::new(),
                originals: FastMap::default(),
                freed_blobs: Vec::new(),
                access: Access::default(),
                new_blobs: FastMap::default(),
                dropped: false,
                count_read: false,
                changes: 0,
                ids: 0..0,
                id_block: 1,
                finger: Finger::default(),
                shape_gen: 0,
            }),
        }
    }

    /// This working store emptied as [`TxnStore::new`] builds one, its tables and vectors
    /// kept for a later transaction's (a small transaction then allocates none of them);
    /// `None` when one of them grew past [`SPARE_MAX_ENTRIES`]. `meta` and `shape` are left
    /// for `new` to replace.
    pub fn emptied(mut self: Box<Self>) -> Option<Box<TxnStore>> {
        // Every field named: a field added later must be reset here too.
        let TxnStore {
            meta: _,
            base,
            shape: _,
            dirty,
            freed,
            originals,
            freed_blobs,
            access,
            new_blobs,
            dropped,
            count_read,
            changes,
            ids,
            id_block,
            finger,
            shape_gen,
        } = &mut *self;
        let largest = [
            dirty.capacity(),
            originals.capacity(),
            new_blobs.capacity(),
            freed.capacity(),
            freed_blobs.capacity(),
            access.points.capacity(),
            access.ranges.capacity(),
        ];
        if largest.into_iter().any(|c| c > SPARE_MAX_ENTRIES) {
            return None;
        }
        *base = None;
        dirty.clear();
        freed.clear();
        originals.clear();
        freed_blobs.clear();
        access.clear();
        new_blobs.clear();
        *dropped = false;
        *count_read = false;
        *changes = 0;
        *ids = 0..0;
        *id_block = 1;
        *finger = Finger::default();
        *shape_gen = 0;
        Some(self)
    }

    /// Records that the tree was changed or replaced other than through [`TxnNodes`] (its
    /// changed nodes dropped, or rebuilt over another snapshot): no finger taken before
    /// holds.
    pub fn reshaped(&mut self) {
        self.shape_gen += 1;
    }

    /// A new item id: the next counter of the transaction's reserved block (blocks of 1, 2,
    /// 4, ... up to 1,024, so a small transaction wastes few counters and a large one rarely
    /// touches the shared counter) with the process's tag.
    pub fn new_item_id(&mut self, shared: &Shared) -> ItemId {
        let n = match self.ids.next() {
            Some(n) => n,
            None => {
                let size = self.id_block.clamp(1, ID_BLOCK_MAX);
                self.id_block = size * 2;
                let first = shared.reserve_item_ids(size);
                self.ids = first + 1..first + size;
                first
            }
        };
        (u128::from(n) << 64) | u128::from(shared.item_tag)
    }

    /// True when the transaction changed this store.
    pub fn is_changed(&self) -> bool {
        self.base.is_none()
            || self.dropped
            || !self.dirty.is_empty()
            || !self.freed.is_empty()
            || !self.freed_blobs.is_empty()
            || self
                .base
                .as_ref()
                .is_some_and(|b| b.root != self.meta.root || b.count != self.meta.count)
    }
}

/// A committed node as loaded: the node, its version and its search index.
pub(crate) type Loaded = (Arc<Node>, u64, Arc<SearchIndex>);

/// The version a record read by location must carry.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The registry entry's own image (or delta).
    Exactly(u64),
    /// The base image of a delta of this version.
    Below(u64),
}

impl Want {
    fn ok(self, v: u64) -> bool {
        match self {
            Want::Exactly(x) => v == x,
            Want::Below(x) => v < x,
        }
    }
}

/// Loads and decodes the committed node `id` (through the L1 cache).
pub(crate) fn load_node(
    shared: &Shared,
    snapshot: &DbState,
    store: StoreId,
    id: LogicalId,
) -> Result<Loaded> {
    let entry = snapshot.registry.get(id).copied().ok_or_else(|| {
        Error::corruption(
            shared.files.dir(),
            0,
            format!("node {id} of store {store} is referenced but not in the registry"),
        )
    })?;
    if let Some((n, index)) = shared.cache.get(entry.loc) {
        return Ok((n, entry.version, index));
    }
    let bad = |why: String| Error::corruption(shared.files.path(entry.loc.seg), entry.loc.off, why);
    if entry.store != store {
        return Err(bad(format!(
            "node {id} belongs to store {}, not to store {store}",
            entry.store
        )));
    }
    let node = match entry.delta_base() {
        None => image(
            shared,
            snapshot,
            (store, id),
            entry.loc,
            Want::Exactly(entry.version),
        )?,
        Some(base) => Arc::new(Node::Leaf(leaf_of_chain(
            shared,
            snapshot,
            (store, id),
            &entry,
            base,
        )?)),
    };
    let index = Arc::new(SearchIndex::of(&node));
    shared
        .cache
        .insert(entry.loc, Arc::clone(&node), Arc::clone(&index));
    Ok((node, entry.version, index))
}

/// The items of the leaf at `entry`, a leaf delta: its chain's deltas read back from the
/// newest to the first (each names the version it applies to), then applied in order over the
/// base image. Every delta before the newest must lie in the newest's segment, one version
/// below the next, and the chain must be as deep and take as many bytes as the entry says.
fn leaf_of_chain(
    shared: &Shared,
    snapshot: &DbState,
    node: (StoreId, LogicalId),
    entry: &Entry,
    base: Location,
) -> Result<Vec<Item>> {
    let depth = usize::from(entry.chain.depth());
    let mut deltas = Vec::with_capacity(depth);
    let (mut at, mut version, mut earlier) = (entry.loc, entry.version, 0u64);
    loop {
        let bad = |why: String| Error::corruption(shared.files.path(at.seg), at.off, why);
        let rec = node_record(
            shared,
            snapshot,
            node,
            at,
            Kind::NodeDelta,
            Want::Exactly(version),
        )?;
        let (_, prev, _) = record::parse_delta(rec.payload()).map_err(|e| bad(e.to_string()))?;
        deltas.push((at, rec));
        if prev == base {
            break;
        }
        if deltas.len() >= depth || prev.seg != entry.loc.seg {
            return Err(bad(format!(
                "leaf delta chain of node {} does not reach its base image within {depth} \
                 deltas in segment {}",
                node.1, entry.loc.seg
            )));
        }
        earlier += u64::from(prev.len);
        // Each delta is one version above the one before it (a damaged entry may claim
        // more deltas than versions).
        version = version.checked_sub(1).ok_or_else(|| {
            bad(format!(
                "leaf delta chain of node {} below version 1",
                node.1
            ))
        })?;
        at = prev;
    }
    if deltas.len() != depth || earlier != u64::from(entry.chain.bytes()) {
        let bad = Error::corruption(
            shared.files.path(entry.loc.seg),
            entry.loc.off,
            format!(
                "leaf delta chain of node {} has {} deltas of {earlier} bytes before its newest; \
             the registry says {depth} and {}",
                node.1,
                deltas.len(),
                entry.chain.bytes()
            ),
        );
        return Err(bad);
    }
    let base_node = image(shared, snapshot, node, base, Want::Below(version))?;
    let Node::Leaf(base_items) = &*base_node else {
        return Err(Error::corruption(
            shared.files.path(base.seg),
            base.off,
            "leaf delta over an image that is not a leaf",
        ));
    };
    // Oldest first; each was parsed whole in the walk above.
    let bodies = deltas
        .iter()
        .rev()
        .map(|(_, rec)| record::parse_delta(rec.payload()).map_or(&[][..], |(_, _, body)| body));
    btree::delta::apply_chain(base_items, bodies).map_err(|(k, e)| {
        let at = deltas.iter().rev().nth(k).map_or(entry.loc, |(at, _)| *at);
        Error::corruption(
            shared.files.path(at.seg),
            at.off,
            format!("leaf delta: {e}"),
        )
    })
}

/// The full image the next delta of the committed node `id` (at `entry`) applies to: the
/// base of its delta, or its own image when it has none. Through the L1 cache.
pub(crate) fn base_image(
    shared: &Shared,
    snapshot: &DbState,
    id: LogicalId,
    entry: &Entry,
) -> Result<Arc<Node>> {
    match entry.delta_base() {
        Some(base) => image(
            shared,
            snapshot,
            (entry.store, id),
            base,
            Want::Below(entry.version),
        ),
        None => image(
            shared,
            snapshot,
            (entry.store, id),
            entry.loc,
            Want::Exactly(entry.version),
        ),
    }
}

/// The full node image at `loc` (through the L1 cache, where it is put).
fn image(
    shared: &Shared,
    snapshot: &DbState,
    node: (StoreId, LogicalId),
    loc: Location,
    want: Want,
) -> Result<Arc<Node>> {
    if let Some((n, _)) = shared.cache.get(loc) {
        return Ok(n);
    }
    let rec = node_record(shared, snapshot, node, loc, Kind::Node, want)?;
    let bad = |why: String| Error::corruption(shared.files.path(loc.seg), loc.off, why);
    let (_, body) = record::parse_image(rec.payload()).map_err(|e| bad(e.to_string()))?;
    let n = Arc::new(Node::decode(body).map_err(|e| bad(format!("node: {e}")))?);
    let index = Arc::new(SearchIndex::of(&n));
    shared.cache.insert(loc, Arc::clone(&n), index);
    Ok(n)
}

/// Reads the record at `loc` and checks that it is a `kind` record of `node` with a version
/// `want` accepts.
fn node_record(
    shared: &Shared,
    snapshot: &DbState,
    node: (StoreId, LogicalId),
    loc: Location,
    kind: Kind,
    want: Want,
) -> Result<crate::log::RecordBuf> {
    let rec = read_record(shared, snapshot, node, loc, kind, want)?;
    let bad = |why: String| Error::corruption(shared.files.path(loc.seg), loc.off, why);
    if rec.kind != kind {
        return Err(bad(format!(
            "registry points at a {:?} record where a {kind:?} record belongs",
            rec.kind
        )));
    }
    let (img, _) = record::parse_image(rec.payload()).map_err(|e| bad(e.to_string()))?;
    if img.logical != node.1 || img.store != node.0 || !want.ok(img.version) {
        return Err(bad(format!(
            "node image is {}/{} v{} but the registry expects {}/{} {want:?}",
            img.store, img.logical, img.version, node.0, node.1
        )));
    }
    Ok(rec)
}

/// The node store of one store inside a transaction.
pub(crate) struct TxnNodes<'a> {
    pub shared: &'a Shared,
    pub snapshot: &'a DbState,
    pub store: &'a mut TxnStore,
    /// Committed nodes this transaction read, with their versions: a private cache (the
    /// snapshot never changes) and, in `ForWriting` mode, the read set validated at commit.
    pub seen: &'a mut FastMap<LogicalId, Seen>,
    /// Record every node read (`ForWriting`); otherwise `seen` is only a bounded cache.
    pub track: bool,
}

/// A committed node a transaction has read.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub node: Arc<Node>,
    pub version: u64,
    pub index: Arc<SearchIndex>,
}

/// Most nodes a read-only transaction keeps in its private cache.
const READ_CACHE_NODES: usize = 4096;

impl TxnNodes<'_> {
    /// Puts the committed node `id` into `seen` (a reader's full private cache is emptied
    /// first: it only bounds memory).
    fn load_into_seen(&mut self, id: LogicalId) -> Result<()> {
        let (node, version, index) = load_node(self.shared, self.snapshot, self.store.meta.id, id)?;
        if !self.track && self.seen.len() >= READ_CACHE_NODES {
            self.seen.clear();
        }
        self.seen.insert(
            id,
            Seen {
                node,
                version,
                index,
            },
        );
        Ok(())
    }

    /// Point lookup in a store of unique keys in byte order, without touching a reference
    /// count: calls `f` with the item with `key`, or returns `None`. Committed nodes are
    /// searched through their [`SearchIndex`].
    pub(crate) fn get_plain<R, F: FnOnce(&Item) -> R>(
        &mut self,
        root: LogicalId,
        key: &[u8],
        f: F,
    ) -> Result<Option<R>> {
        debug_assert!(self.store.shape.plain());
        let shape = self.store.shape.clone();
        let mut f = Some(f);
        // Runs of nearby keys start at the leaf the last lookup ended on (`btree::finger`).
        let fingered = if self.store.finger.armed() {
            self.store
                .finger
                .enter(&shape, self.store.shape_gen, root, key, 0)
        } else {
            None
        };
        let (mut cur, hint) = match fingered {
            Some((leaf, at, next_first)) => (leaf, Some((at, next_first))),
            None => (root, None),
        };
        // Whether this walk takes a new finger (random lookups take one now and then only,
        // and record no path otherwise).
        let record = fingered.is_none() && self.store.finger.wants();
        let found = |items: &[Item], i: usize, f: &mut Option<_>| {
            items
                .get(i)
                .filter(|it| it.key.is(key))
                .and_then(|it| f.take().map(|f: F| f(it)))
        };
        let mut path = btree::Path::new();
        while cur != 0 {
            let step = self.visit(cur, |node, index| match node {
                Node::Internal { seps, children } => {
                    let i = btree::child_index_in(&shape, seps, index, key, 0);
                    Ok((i, children.get(i).copied().unwrap_or_default()))
                }
                Node::Leaf(items) => {
                    let near = hint.and_then(|(at, next_first)| {
                        btree::finger::position_near(&shape, items, key, at, next_first)
                    });
                    let i = near.unwrap_or_else(|| {
                        btree::lower_bound_in(&shape, items, index, key, ItemId::MAX)
                    });
                    Err((i, found(items, i, &mut f)))
                }
            })?;
            match step {
                Ok((i, child)) => {
                    if record {
                        path.push((cur, i));
                    }
                    cur = child;
                }
                Err((pos, r)) => {
                    if fingered.is_some() {
                        let _ = self.store.finger.at(pos);
                    } else if record {
                        btree::take_finger(self, root, &path, cur, pos)?;
                    }
                    return Ok(r);
                }
            }
        }
        Ok(None)
    }

    fn committed(&mut self, id: LogicalId) -> Result<Loaded> {
        committed(
            self.shared,
            self.snapshot,
            self.store.meta.id,
            self.seen,
            self.track,
            id,
        )
    }
}

/// The committed node `id` of `store` as of `snapshot`: from the transaction's `seen` nodes,
/// else loaded (and remembered in `seen` when `track`, or while it is small).
fn committed(
    shared: &Shared,
    snapshot: &DbState,
    store: StoreId,
    seen: &mut FastMap<LogicalId, Seen>,
    track: bool,
    id: LogicalId,
) -> Result<Loaded> {
    if let Some(s) = seen.get(&id) {
        return Ok((Arc::clone(&s.node), s.version, Arc::clone(&s.index)));
    }
    let (n, v, index) = load_node(shared, snapshot, store, id)?;
    if track || seen.len() < READ_CACHE_NODES {
        seen.insert(
            id,
            Seen {
                node: Arc::clone(&n),
                version: v,
                index: Arc::clone(&index),
            },
        );
    }
    Ok((n, v, index))
}

impl NodeStore for TxnNodes<'_> {
    fn node(&mut self, id: LogicalId) -> Result<Arc<Node>> {
        if let Some(d) = self.store.dirty.get_mut(&id) {
            return Ok(Arc::clone(d.node()));
        }
        Ok(self.committed(id)?.0)
    }

    fn node_indexed(&mut self, id: LogicalId) -> Result<(Arc<Node>, Option<Arc<SearchIndex>>)> {
        if let Some(d) = self.store.dirty.get_mut(&id) {
            return Ok((Arc::clone(d.node()), None));
        }
        let (n, _, index) = self.committed(id)?;
        Ok((n, Some(index)))
    }

    fn visit<R>(
        &mut self,
        id: LogicalId,
        f: impl FnOnce(&Node, Option<&SearchIndex>) -> R,
    ) -> Result<R> {
        if let Some(d) = self.store.dirty.get_mut(&id) {
            d.settle();
            if d.index.is_none() && matches!(*d.node, Node::Internal { .. }) {
                if d.searches >= INDEX_AFTER {
                    d.index = Some(SearchIndex::of(&d.node));
                } else {
                    d.searches += 1;
                }
            }
            return Ok(f(&d.node, d.index.as_ref()));
        }
        if let Some(s) = self.seen.get(&id) {
            return Ok(f(&s.node, Some(&s.index)));
        }
        self.load_into_seen(id)?;
        match self.seen.get(&id) {
            Some(s) => Ok(f(&s.node, Some(&s.index))),
            None => Err(Error::InvalidArgument(format!(
                "node {id} vanished from the read set"
            ))),
        }
    }

    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node> {
        let TxnNodes {
            shared,
            snapshot,
            store,
            seen,
            track,
        } = self;
        store.changes += 1;
        // One lookup whether the node was changed already (the common case) or not.
        let d = match store.dirty.entry(id) {
            MapEntry::Occupied(o) => {
                let d = o.into_mut();
                d.settle();
                d
            }
            MapEntry::Vacant(v) => {
                let (node, base, _) = committed(shared, snapshot, store.meta.id, seen, *track, id)?;
                let copy = Arc::new(node.to_changed());
                store.originals.insert(id, node);
                v.insert(Dirty::new(copy, base))
            }
        };
        d.index = None;
        d.searches = 0;
        if matches!(*d.node, Node::Internal { .. }) {
            store.shape_gen += 1;
        }
        Ok(unique_mut(&mut d.node))
    }

    fn insert_in_leaf(&mut self, id: LogicalId, pos: usize, item: Item) -> Result<usize> {
        // The first change of a committed leaf, one insert of an inline value: keep it
        // pending (see `Dirty`).
        if !self.store.dirty.contains_key(&id) && matches!(item.value, ValueRef::Inline(_)) {
            let (node, base, index) = self.committed(id)?;
            if let Node::Leaf(items) = &*node
                && pos <= items.len()
            {
                let len = items.len() + 1;
                let store = &mut *self.store;
                store.changes += 1;
                store.originals.insert(id, Arc::clone(&node));
                let d = Dirty::pending(node, base, Pending::Insert(pos, item), index);
                store.dirty.insert(id, d);
                return Ok(len);
            }
        }
        btree::insert_now(self, id, pos, item)
    }

    fn remove_in_leaf(
        &mut self,
        id: LogicalId,
        pos: usize,
        wanted: &dyn Fn(&Item) -> bool,
        min_left: usize,
    ) -> Result<Option<(Item, usize)>> {
        // The first change of a committed leaf, one removal of an item with an inline value
        // that leaves the leaf full enough: keep it pending (see `Dirty`).
        if !self.store.dirty.contains_key(&id) {
            let (node, base, index) = self.committed(id)?;
            if let Node::Leaf(items) = &*node
                && let Some(it) = items.get(pos)
                && wanted(it)
                && matches!(it.value, ValueRef::Inline(_))
                && items.len() > min_left
            {
                let (item, left) = (it.clone(), items.len() - 1);
                let store = &mut *self.store;
                store.changes += 1;
                store.originals.insert(id, Arc::clone(&node));
                let d = Dirty::pending(node, base, Pending::Remove(pos), index);
                store.dirty.insert(id, d);
                return Ok(Some((item, left)));
            }
        }
        btree::remove_now(self, id, pos, wanted)
    }

    fn alloc(&mut self, node: Node) -> Result<LogicalId> {
        let id = self.shared.new_logical()?;
        self.store.dirty.insert(id, Dirty::new(Arc::new(node), 0));
        self.store.changes += 1;
        self.store.shape_gen += 1;
        Ok(id)
    }

    fn free(&mut self, id: LogicalId) {
        self.store.changes += 1;
        self.store.shape_gen += 1;
        if !self.store.originals.contains_key(&id)
            && self.store.dirty.get(&id).is_none_or(|d| d.base != 0)
            && let Ok((node, _, _)) = self.committed(id)
        {
            self.store.originals.insert(id, node);
        }
        match self.store.dirty.remove(&id) {
            Some(d) if d.base == 0 => {}
            _ => self.store.freed.push(id),
        }
    }

    fn finger(&mut self) -> Option<(&mut Finger, u64)> {
        Some((&mut self.store.finger, self.store.shape_gen))
    }
}

/// Reads a node record: through the coordinator's L2 cache for a store that asks for it
/// (clustered mode), else from its segment. A cache entry is keyed by the record's location
/// (never stale: records are immutable) and checked like the file's bytes; a damaged or
/// unavailable cache only costs the storage read.
fn read_record(
    shared: &Shared,
    snapshot: &DbState,
    node: (StoreId, LogicalId),
    loc: Location,
    kind: Kind,
    want: Want,
) -> Result<crate::log::RecordBuf> {
    let ttl = shared.cluster.as_ref().and_then(|c| {
        let d = snapshot
            .store_by_id(node.0)?
            .options
            .node_cache_duration
            .filter(|d| !d.is_zero())?;
        Some((c, d))
    });
    let Some((c, ttl)) = ttl else {
        return shared.files.read(loc);
    };
    let key = format!("n:{}:{}", loc.seg, loc.off);
    // A hit must be the very image the registry names (a location can be reused after the
    // folder was settled and its last segment deleted): anything else is a miss.
    if let Ok(Some(bytes)) = c.coordinator.cache_get(&key)
        && bytes.len() == loc.len as usize
        && let Ok(rec) = crate::log::RecordBuf::from_framed(bytes)
        && rec.kind == kind
        && record::parse_image(rec.payload()).is_ok_and(|(img, _)| {
            img.store == node.0 && img.logical == node.1 && want.ok(img.version)
        })
    {
        return Ok(rec);
    }
    let rec = shared.files.read(loc)?;
    let _ = c.coordinator.cache_put(&key, rec.framed(), ttl);
    Ok(rec)
}

/// [`Arc::make_mut`] without its atomic read-modify-write when `node` is the only handle
/// (a transaction's changed node usually is: handles are lent out only to cursors): two
/// loads instead of a locked compare-exchange on every write to a node.
#[allow(unsafe_code)]
pub(crate) fn unique_mut(node: &mut Arc<Node>) -> &mut Node {
    // The strong count first, then (after the fence) the weak count: a `Weak` made from
    // another handle before that handle was dropped is seen (as in `Arc::get_mut`).
    if Arc::strong_count(node) == 1 {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        if Arc::weak_count(node) == 0 {
            // SAFETY: `node` is the only strong handle and there is no weak one, and the
            // exclusive borrow of `node` keeps anyone from making another (a handle is made
            // only from a handle) while the returned borrow lives. The acquire fence orders
            // this access after every use of the handles dropped before (their release
            // decrements), so no other thread can reach the node.
            return unsafe { &mut *Arc::as_ptr(node).cast_mut() };
        }
    }
    Arc::make_mut(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::{InlineValue, KeyBuf, ValueRef};

    fn leaf(keys: &[&str]) -> Node {
        Node::Leaf(
            keys.iter()
                .map(|k| Item {
                    key: KeyBuf::new(k.as_bytes()),
                    id: 1,
                    value: ValueRef::Inline(InlineValue::new(b"v")),
                })
                .collect(),
        )
    }

    fn working_store(spare: Option<Box<TxnStore>>) -> Box<TxnStore> {
        let meta = StoreMeta {
            id: 3,
            name: "s".into(),
            options: Arc::default(),
            root: 9,
            count: 2,
        };
        let shape = Shape {
            order: btree::Order {
                custom: None,
                unique: true,
            },
            slot_length: 8,
            leaf_load_balancing: false,
        };
        let base = Arc::new(meta.clone());
        TxnStore::new(spare, meta, Some(base), shape)
    }

    #[test]
    fn an_emptied_working_store_is_a_new_one() {
        let fresh = format!("{:?}", working_store(None));
        let mut ts = working_store(None);
        ts.meta.root = 11;
        ts.freed.push(4);
        ts.freed_blobs.push(5);
        ts.originals.insert(6, Arc::new(leaf(&["a"])));
        ts.access.point(b"k");
        ts.access
            .range(std::ops::Bound::Included(b"a"), std::ops::Bound::Unbounded);
        ts.access.wrote(b"k");
        ts.dropped = true;
        ts.count_read = true;
        ts.changes = 7;
        ts.ids = 3..9;
        ts.id_block = 8;
        ts.shape_gen = 5;
        ts.dirty.insert(7, Dirty::new(Arc::new(leaf(&["b"])), 1));
        ts.new_blobs.insert(
            8,
            NewBlob {
                entry: Entry::default(),
            },
        );
        ts.finger.set(1, 9, 10, &btree::Path::new(), None, None);
        let spare = ts.emptied().expect("a small working store is kept");
        // What `new` does not set again is let go of.
        assert!(spare.base.is_none());
        assert_eq!(format!("{:?}", working_store(Some(spare))), fresh);

        // A large one is not kept.
        let mut ts = working_store(None);
        ts.freed.extend(0..=SPARE_MAX_ENTRIES as u64);
        assert!(ts.emptied().is_none());
    }

    #[test]
    fn unique_mut_changes_in_place_only_without_other_handles() {
        // The only handle: changed in place.
        let mut a = Arc::new(leaf(&["a"]));
        let before = Arc::as_ptr(&a);
        if let Node::Leaf(items) = unique_mut(&mut a) {
            items.clear();
        }
        assert_eq!(Arc::as_ptr(&a), before);
        assert_eq!(a.len(), 0);

        // Another strong handle: copied first, the other handle's node is untouched.
        let mut b = Arc::new(leaf(&["a", "b"]));
        let other = Arc::clone(&b);
        if let Node::Leaf(items) = unique_mut(&mut b) {
            items.pop();
        }
        assert!(!Arc::ptr_eq(&b, &other));
        assert_eq!((b.len(), other.len()), (1, 2));

        // A weak handle: copied first, and the weak one still sees the original.
        let mut c = Arc::new(leaf(&["a", "b", "c"]));
        let weak = Arc::downgrade(&c);
        if let Node::Leaf(items) = unique_mut(&mut c) {
            items.pop();
        }
        assert_eq!(c.len(), 2);
        drop(weak);

        // Handles dropped on other threads before: changed in place, and their reads are done.
        let mut d = Arc::new(leaf(&["a", "b"]));
        let before = Arc::as_ptr(&d);
        let handles: Vec<Arc<Node>> = (0..4).map(|_| Arc::clone(&d)).collect();
        let lens: Vec<usize> = handles
            .into_iter()
            .map(|h| std::thread::spawn(move || h.len()))
            .map(|t| t.join().unwrap_or_default())
            .collect();
        assert_eq!(lens, vec![2; 4]);
        if let Node::Leaf(items) = unique_mut(&mut d) {
            items.pop();
        }
        assert_eq!(Arc::as_ptr(&d), before);
        assert_eq!(d.len(), 1);
    }
}
