//! The commit pipeline: validation, merge, write, group sync, publish.
//!
//! ```text
//! commit lock: validate the item-level read set against the commits since the snapshot
//!              -> fast path (the nodes it changed are unchanged) or replay its item changes on
//!                 the current nodes (auto-merge)
//!              -> frame node images (from 128 changed nodes, on two threads) + blobs + one
//!                 commit record, one write -> `latest` state
//! unlock;      group sync: one committer syncs for every commit written so far (the commit
//!              point), then publishes that state; the others wait for it
//! housekeeping: compaction, checkpoint, segment deletion
//! ```
//!
//! Validation: a `ForWriting` transaction conflicts ([`Error::Conflict`]) with a transaction
//! that committed after its snapshot when that one wrote a key this one read, looked up, scanned
//! over or wrote (see [`super::access`]), or changed a count it read; a store it created must
//! not have been created meanwhile and a store it uses must not have been removed. Without a
//! conflict, changes to the same nodes merge: the transaction's item changes (found by
//! comparing its changed leaves with their committed versions) are replayed on the current
//! tree. Committed `ForWriting` transactions are thus serializable in commit order.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::access::sorted_keys;
use super::keylist::KeyList;
use super::nodes;
use super::nodes::{Dirty, PendingInsert, PendingRemove};
use super::prepared::{self, Prepared, PreparedStore};
use super::{TxnState, TxnStore};
use crate::btree::{Item, KeyBuf, Node, Order, SearchIndex, ValueRef, delta};
use crate::codec::Writer;
use crate::db::{CommitCtx, Shared};
use crate::error::{Error, Result};
use crate::fasthash::{FastMap, FastSet};
use crate::log::record::{self, ImageId, Kind, image_prefix};
use crate::options::{TransactionMode, ValuePlacement};
use crate::registry::{Chain, Entry, Location, LogicalId};
use crate::state::{CommitRecord, DbState, StoreId, StoreOp, WrittenKeys};

/// What one commit changed, kept while older snapshots may still validate against it.
#[derive(Debug)]
pub(crate) struct HistEntry {
    pub seq: u64,
    pub stores: Vec<StoreWrites>,
}

/// Keys one commit wrote in one store.
#[derive(Debug)]
pub(crate) struct StoreWrites {
    pub store: StoreId,
    /// The keys in the store's order: given so, or sorted from `unsorted` on first use.
    sorted: OnceLock<Vec<KeyBuf>>,
    /// Keys in the order they were written, and the order to sort them in. Sorted only when
    /// a concurrent transaction validates against them, which most commits never see.
    unsorted: Option<(KeyList, Order)>,
    pub count_changed: bool,
}

impl StoreWrites {
    /// Keys already sorted in the store's order.
    pub fn sorted(store: StoreId, keys: Vec<KeyBuf>, count_changed: bool) -> Self {
        StoreWrites {
            store,
            sorted: OnceLock::from(keys),
            unsorted: None,
            count_changed,
        }
    }

    /// Keys in any order (sorted in `order` on first use).
    pub fn unsorted(store: StoreId, keys: KeyList, order: Order, count_changed: bool) -> Self {
        StoreWrites {
            store,
            sorted: OnceLock::new(),
            unsorted: Some((keys, order)),
            count_changed,
        }
    }

    /// The keys, sorted in the store's order, without duplicates.
    pub fn keys(&self) -> &[KeyBuf] {
        self.sorted.get_or_init(|| match &self.unsorted {
            Some((keys, order)) => sorted_keys(order, keys.to_vec()),
            None => Vec::new(),
        })
    }
}

/// Commit history for validation.
pub(crate) type History = VecDeque<HistEntry>;

/// An image framed into the commit buffer.
struct Image {
    logical: LogicalId,
    store: u32,
    version: u64,
    rel: u64,
    len: u32,
    /// The base image of a leaf delta (`len` 0 for a full image).
    base: Location,
    /// A leaf delta's chain (ADR 0008).
    chain: Chain,
    /// The node for the node cache, with its search index and cache weight when they were
    /// built where it was encoded.
    node: Option<ForCache>,
}

/// A committed node on its way to the cache.
enum ForCache {
    /// Packed, indexed and weighed on the thread that encoded it (a commit encoding on two
    /// threads).
    Built(CacheEntry),
    /// To build (a leaf's pending insert), pack (a changed leaf that existed before the
    /// transaction, see [`Node::packed`]), index and weigh after the write, while the device
    /// works on the bytes.
    Later { node: NewNode, pack: bool },
}

/// A node a commit writes, as the cache is to get it.
enum NewNode {
    /// The node itself.
    Ready(Arc<Node>),
    /// A committed leaf, its search index, and an item to insert into it at a position (see
    /// [`Dirty`]).
    Insert(Arc<Node>, Arc<SearchIndex>, usize, Item),
    /// A committed leaf, its search index, and the position of an item to remove from it.
    Remove(Arc<Node>, Arc<SearchIndex>, usize),
}

impl NewNode {
    /// The node, and its search index when it is cheaper to patch than to build.
    fn into_node(self) -> (Arc<Node>, Option<Arc<SearchIndex>>) {
        let (mut leaf, mut index, pos, item) = match self {
            NewNode::Ready(n) => return (n, None),
            NewNode::Insert(leaf, index, pos, item) => (leaf, index, pos, item),
            NewNode::Remove(leaf, index, pos) => return Self::removed(leaf, index, pos),
        };
        // The replaced version's index, patched in place when nothing else holds it.
        let patched = match Arc::get_mut(&mut index) {
            Some(own) => own.insert(pos, &item).then_some(index),
            None => index.with_inserted(pos, &item).map(Arc::new),
        };
        let node = match Arc::get_mut(&mut leaf) {
            // The transaction and the cache let go of the version it replaces: when no
            // reader holds it either, it becomes the new version in place (its items and
            // its allocation taken, not copied).
            Some(node) => {
                if let Node::Leaf(items) = node {
                    items.insert(pos.min(items.len()), item);
                }
                leaf
            }
            None => Arc::new(leaf.with_inserted(pos, item)),
        };
        (node, patched)
    }

    /// [`NewNode::into_node`] of a pending removal.
    fn removed(
        mut leaf: Arc<Node>,
        mut index: Arc<SearchIndex>,
        pos: usize,
    ) -> (Arc<Node>, Option<Arc<SearchIndex>>) {
        let Node::Leaf(items) = &*leaf else {
            return (leaf, None);
        };
        let Some(item) = items.get(pos) else {
            return (leaf, None);
        };
        let patched = match Arc::get_mut(&mut index) {
            Some(own) => own.remove(pos, item).then_some(index),
            None => index.with_removed(pos, item).map(Arc::new),
        };
        let node = match Arc::get_mut(&mut leaf) {
            // As for an insert: the version it replaces is taken when no one else holds it.
            Some(node) => {
                if let Node::Leaf(items) = node
                    && pos < items.len()
                {
                    items.remove(pos);
                }
                leaf
            }
            None => Arc::new(leaf.with_removed(pos)),
        };
        (node, patched)
    }
}

impl ForCache {
    /// Builds (a pending insert), packs (when asked), indexes and weighs `node`.
    fn build(node: NewNode, pack: bool) -> CacheEntry {
        let (node, index) = node.into_node();
        let mut index = index.unwrap_or_else(|| Arc::new(SearchIndex::of(&node)));
        // The index counts the loose values: no walk of the leaf to learn it need not be
        // packed (most single inserts).
        let packed = if pack && index.loose() >= PACK_LOOSE_MIN {
            node.packed(PACK_LOOSE_MIN)
        } else {
            None
        };
        // Packing moves values, not keys: the index holds for the packed copy.
        match packed {
            Some(p) => {
                match Arc::get_mut(&mut index) {
                    Some(own) => own.set_packed(),
                    None => index = Arc::new((*index).clone().packed()),
                }
                CacheEntry::with_index(Arc::new(p), index)
            }
            None => CacheEntry::with_index(node, index),
        }
    }

    fn entry(self) -> CacheEntry {
        match self {
            ForCache::Built(c) => c,
            ForCache::Later { node, pack } => ForCache::build(node, pack),
        }
    }
}

/// A committed node as the cache takes it (built where the node is encoded, so a commit
/// encoding on two threads builds these on two threads too).
struct CacheEntry {
    node: Arc<Node>,
    index: Arc<SearchIndex>,
    weight: u64,
}

impl CacheEntry {
    fn with_index(node: Arc<Node>, index: Arc<SearchIndex>) -> CacheEntry {
        let weight = crate::cache::weight(&node, &index);
        CacheEntry {
            node,
            index,
            weight,
        }
    }
}

/// What a commit writes.
#[derive(Default)]
pub(crate) struct Batch {
    bytes: Vec<u8>,
    images: Vec<Image>,
    /// Entries already written (actively persisted blobs).
    placed: Vec<(LogicalId, Entry)>,
    removals: Vec<LogicalId>,
    store_ops: Vec<StoreOp>,
    writes: Vec<StoreWrites>,
    /// Scratch space for leaf deltas.
    scratch: Writer,
    /// A leaf delta extends a chain whose deltas lie in the segment the batch was encoded for:
    /// the batch must be written to that segment.
    chained: bool,
    /// Build the cache's search indexes as nodes are encoded (on the encoding threads of a
    /// large commit), not after the write.
    build_cache_entries: bool,
    /// Cache the leaves written as deltas packed too (see [`PACK_DELTAS_UPTO`]).
    pack_deltas: bool,
}

/// A commit of at most this many changed nodes caches the leaves it writes as deltas packed
/// ([`Node::packed`]), as it does the leaves it writes whole: the next copy on write of such
/// a leaf, and its drop, touch one reference count instead of one per value (W4: about 1 µs
/// per commit), and the packing itself runs after the write, while the device works. A larger
/// commit would pay for packing all its leaves on its own path (W3, ~600 leaves per commit:
/// a quarter slower).
const PACK_DELTAS_UPTO: usize = 8;

/// A leaf a commit writes is cached packed ([`Node::packed`]) once at least this many of its
/// values lie outside its buffer, not at every change: a commit adding one value to a leaf
/// repacked all of it (~2.5 µs of a W4 commit's 10.4 µs of CPU without syncs; 8.1 µs with
/// this bound), while a copy on write pays one more reference count per loose value.
const PACK_LOOSE_MIN: usize = 8;

/// The most bytes a delta over `over` may take for a leaf whose items encode in `full`
/// bytes, or `None` when the leaf is to be written whole: the delta takes at most a
/// [`DELTA_SHARE`]th of the leaf's bytes, the deltas of its chain before it at most three
/// quarters, and the base image at most a quarter more than the leaf (a leaf that lost many
/// items is written whole). So the live bytes of a leaf's chain and base stay within two and a
/// half times the leaf's, and a cold read reads at most [`Chain::MAX_DEPTH`] deltas (ADR 0010).
fn delta_limit(full: usize, over: &DeltaOver<'_>) -> Option<usize> {
    // The base image's record length stands for its items' bytes (it exceeds them by its
    // frame and header, a few dozen bytes).
    let base_len = over.base.len as usize;
    (base_len <= full + full / 4 && over.chain.bytes() as usize <= full - full / 4)
        .then_some(full / DELTA_SHARE)
}

/// What a leaf delta applies to.
struct DeltaOver<'a> {
    /// The version it applies to: the base image, or the newest delta of the chain.
    prev: Location,
    /// That version's items.
    items: &'a [Item],
    /// The chain's base image.
    base: Location,
    /// The chain with the new delta (its bytes still without the new delta's).
    chain: Chain,
}

impl Batch {
    /// Frames a node image, encoding the node straight into the batch. With `pack`, the
    /// cache gets the node's [`Node::packed`] copy when it has one.
    fn add_node(&mut self, id: ImageId, node: &Arc<Node>, pack: bool) {
        let rel = self.bytes.len() as u64;
        record::frame_with(&mut self.bytes, Kind::Node, |out| {
            out.extend_from_slice(image_prefix(id).as_bytes());
            let mut w = Writer::with(std::mem::take(out));
            node.encode(&mut w);
            *out = w.buf;
        });
        self.framed(
            rel,
            id,
            (Location::default(), Chain::default()),
            Some((NewNode::Ready(Arc::clone(node)), pack)),
        );
    }

    /// Records the image framed at `rel..` (to the end of the batch), with the base and chain
    /// of a leaf delta, and the node to cache (packed when asked, see [`Node::packed`]).
    fn framed(
        &mut self,
        rel: u64,
        id: ImageId,
        (base, chain): (Location, Chain),
        node: Option<(NewNode, bool)>,
    ) {
        let len = (self.bytes.len() as u64 - rel) as u32;
        self.images.push(Image {
            logical: id.logical,
            store: id.store,
            version: id.version,
            rel,
            len,
            base,
            chain,
            node: node.map(|(node, pack)| {
                // A pending insert or removal is built after the write even in a large
                // commit: by then the transaction has let go of the leaf it applies to (see
                // `TxnState::free_working_set`), which then usually takes the change in place
                // instead of being copied.
                if self.build_cache_entries && matches!(node, NewNode::Ready(_)) {
                    ForCache::Built(ForCache::build(node, pack))
                } else {
                    ForCache::Later { node, pack }
                }
            }),
        });
    }

    /// Appends the images of `other` (a batch of node images only, encoded on another
    /// thread) after this batch's bytes.
    fn append(&mut self, other: Batch) {
        debug_assert!(other.placed.is_empty() && other.removals.is_empty());
        let off = self.bytes.len() as u64;
        self.chained |= other.chained;
        self.bytes.extend_from_slice(&other.bytes);
        self.images.extend(other.images.into_iter().map(|mut im| {
            im.rel += off;
            im
        }));
    }

    /// Frames `node` (a changed leaf) as a delta over the version `over.prev`, if that is
    /// worth it (see [`delta_limit`]).
    fn add_leaf_delta(
        &mut self,
        id: ImageId,
        order: &Order,
        node: &Arc<Node>,
        over: &DeltaOver<'_>,
    ) -> bool {
        let Node::Leaf(items) = &**node else {
            return false;
        };
        let full: usize = items.iter().map(Item::encoded_len).sum();
        let Some(limit) = delta_limit(full, over) else {
            return false;
        };
        self.scratch.buf.clear();
        self.scratch.buf.reserve(limit + 64);
        if !delta::diff(order, over.items, items, limit, &mut self.scratch) {
            return false;
        }
        self.frame_delta(id, over, NewNode::Ready(Arc::clone(node)));
        true
    }

    /// Frames the insert of `item` at `pos` into `leaf` (the version `over.prev`, whose items
    /// are `over.items`; `index` is its search index) as a delta, on the terms of
    /// [`Batch::add_leaf_delta`], without building the new leaf: the cache gets it after the
    /// write.
    fn add_insert_delta(
        &mut self,
        id: ImageId,
        &PendingInsert {
            leaf,
            index,
            pos,
            item,
        }: &PendingInsert<'_>,
        over: &DeltaOver<'_>,
    ) -> bool {
        let full = index.leaf_bytes() + item.encoded_len();
        let Some(limit) = delta_limit(full, over) else {
            return false;
        };
        self.scratch.buf.clear();
        // The delta's counts and position, and the item: one allocation, not a growth per
        // part.
        self.scratch.buf.reserve(32 + item.encoded_len());
        delta::insert_one(over.items, pos, item, &mut self.scratch);
        if self.scratch.len() > limit {
            return false;
        }
        self.frame_delta(
            id,
            over,
            NewNode::Insert(Arc::clone(leaf), Arc::clone(index), pos, item.clone()),
        );
        true
    }

    /// Frames the removal of the item at `pos` from `leaf` (the version `over.prev`) as a
    /// delta, as [`Batch::add_insert_delta`] frames an insert.
    fn add_remove_delta(
        &mut self,
        id: ImageId,
        pending: &PendingRemove<'_>,
        over: &DeltaOver<'_>,
    ) -> bool {
        let Some(item) = pending.item() else {
            return false;
        };
        let full = pending
            .index
            .leaf_bytes()
            .saturating_sub(item.encoded_len());
        let Some(limit) = delta_limit(full, over) else {
            return false;
        };
        self.scratch.buf.clear();
        delta::remove_one(over.items, pending.pos, &mut self.scratch);
        if self.scratch.len() > limit {
            return false;
        }
        self.frame_delta(
            id,
            over,
            NewNode::Remove(
                Arc::clone(pending.leaf),
                Arc::clone(pending.index),
                pending.pos,
            ),
        );
        true
    }

    /// Frames the delta in `scratch` over `over.prev`, extending `over.chain`.
    fn frame_delta(&mut self, id: ImageId, over: &DeltaOver<'_>, node: NewNode) {
        let rel = self.bytes.len() as u64;
        record::frame(
            &mut self.bytes,
            Kind::NodeDelta,
            &[
                record::delta_prefix(id, over.prev).as_bytes(),
                &self.scratch.buf,
            ],
        );
        let pack = self.pack_deltas;
        self.framed(rel, id, (over.base, over.chain), Some((node, pack)));
    }

    fn add_image(&mut self, kind: Kind, id: ImageId, body: &[u8], node: Option<Arc<Node>>) {
        let rel = self.bytes.len() as u64;
        record::frame(&mut self.bytes, kind, &[image_prefix(id).as_bytes(), body]);
        self.framed(
            rel,
            id,
            (Location::default(), Chain::default()),
            node.map(|n| (NewNode::Ready(n), false)),
        );
    }
}

pub(crate) fn commit(st: &mut TxnState) -> Result<()> {
    if st.mode != TransactionMode::ForWriting || !st.stores.values().any(|t| t.is_changed()) {
        return Ok(());
    }
    if st.started.elapsed() > st.max {
        return Err(Error::TransactionTimeout(st.max));
    }
    let shared = Arc::clone(&st.shared);
    if shared.cluster.is_some() {
        return commit_clustered(st, &shared);
    }
    let _committing = Committing::enter(&shared);
    let (seq, fill, housekeeping) = {
        let mut guard = shared.commit_lock()?;
        let ctx = &mut *guard;
        let cur = Arc::clone(&ctx.latest);
        validate(st, &cur, &ctx.history, &ctx.prepared)?;
        let batch = prepare(st, &cur, ctx.writer.chain_segment(), &mut ctx.spare)?;
        let (state, fill) = write_commit(&shared, ctx, &cur, batch, st.id)?;
        let due = ctx.space.housekeeping_due(&shared, &ctx.writer);
        (state.seq, fill, due)
    };
    after_write(st, &shared, fill, seq, housekeeping)
}

/// What a commit does once its record is written: while the device works, it frees its
/// transaction's working set (the leaf versions its commit replaced among it: garbage from
/// here on, freed before the sync's sleep evicts them from the caches, so the cache entries
/// built next take the items of a leaf no one else holds) and the state the last commit
/// replaced, lets go of its snapshot and caches its nodes; then it waits for the sync, and
/// does the housekeeping when some can be due.
fn after_write(
    st: &mut TxnState,
    shared: &Shared,
    fill: CacheFill,
    seq: u64,
    housekeeping: bool,
) -> Result<()> {
    st.free_working_set(|| fill.built_in_place());
    st.release_snapshot();
    fill.fill(shared);
    shared.free_retired();
    finish_commit(shared, seq, housekeeping)
}

/// Counts a commit in progress in [`Shared::committing`] while it lives.
struct Committing<'a>(&'a Shared);

impl<'a> Committing<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.committing.fetch_add(1, Ordering::Relaxed);
        Committing(shared)
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.committing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A commit in clustered mode: under the commit lease, catch up with the other processes,
/// validate and merge against the result, write, and decide with the commit marker.
fn commit_clustered(st: &mut TxnState, shared: &Arc<Shared>) -> Result<()> {
    let Some(c) = &shared.cluster else {
        return Err(Error::InvalidArgument("not clustered".into()));
    };
    let mut guard = shared.commit_lock()?;
    let ctx = &mut *guard;
    let lease = c
        .coordinator
        .acquire_commit_lease(c.opts.lease_ttl, c.opts.lease_wait)?;
    let r = (|| {
        crate::db::catch_up(shared, ctx, false)?;
        let cur = Arc::clone(&ctx.latest);
        validate(st, &cur, &ctx.history, &ctx.prepared)?;
        // Other processes append to segments of their own: no chains (see `chain_segment`).
        let batch = prepare(st, &cur, None, &mut ctx.spare)?;
        let (next, fill) =
            write_commit_with(shared, ctx, &cur, batch, st.id, &mut |ctx, seq, loc| {
                crate::db::commit_point(shared, ctx, &lease, seq, loc)
            })?;
        fill.fill(shared);
        Ok(next)
    })();
    // A failed release only delays the others until the lease expires. The lease is not
    // needed for the folder sync that makes the marker durable.
    let _ = c.coordinator.release_commit_lease(&lease, ctx.latest.seq);
    let next = r?;
    crate::db::sync_markers(shared, ctx)?;
    shared.mark_synced(next)?;
    if let Err(e) = crate::db::after_commit_hook(shared, ctx) {
        shared.note_background_error(&e);
    }
    Ok(())
}

/// Waits for commit `seq` to be durable, then does the housekeeping.
fn finish_commit(shared: &Shared, seq: u64, housekeeping: bool) -> Result<()> {
    shared.wait_durable(seq)?;
    // Most commits find nothing to do (see `Space::housekeeping_due`, checked under the
    // commit lock they held): they need not take it again after the sync.
    if !housekeeping {
        return Ok(());
    }
    // The commit is durable and published: what follows is housekeeping, whose failure must
    // not turn an acknowledged commit into an error. It is recorded for `verify` and stats.
    if let Err(e) = shared
        .commit_lock()
        .and_then(|mut ctx| crate::db::after_commit_hook(shared, &mut ctx))
    {
        shared.note_background_error(&e);
    }
    Ok(())
}

/// Phase 1 of a two-phase commit: validates, and writes the transaction's item changes and
/// read set durably in a prepare record, without applying them. From then on, commits that
/// would conflict with it are refused until it is decided.
pub(crate) fn phase1(st: &mut TxnState, participants: Vec<String>) -> Result<()> {
    if st.mode != TransactionMode::ForWriting || !st.stores.values().any(|t| t.is_changed()) {
        return Ok(());
    }
    if st.shared.cluster.is_some() {
        return Err(Error::InvalidArgument(
            "two-phase commit is not available in clustered mode yet (prepared transactions \
             would have to block other processes' commits); commit with Transaction::commit"
                .into(),
        ));
    }
    if st.started.elapsed() > st.max {
        return Err(Error::TransactionTimeout(st.max));
    }
    let shared = Arc::clone(&st.shared);
    let mut guard = shared.commit_lock()?;
    let ctx = &mut *guard;
    let cur = Arc::clone(&ctx.latest);
    validate(st, &cur, &ctx.history, &ctx.prepared)?;
    let mut stores = Vec::new();
    let mut new_blobs = FastMap::default();
    // Stores only read count too: their read set must block writers until the decision.
    let involved = |t: &TxnStore| {
        t.is_changed() || t.count_read || !t.access.points.is_empty() || !t.access.ranges.is_empty()
    };
    for ts in st.stores.values().map(|t| &**t).filter(|t| involved(t)) {
        new_blobs.extend(ts.new_blobs.iter().map(|(id, nb)| (*id, nb.entry)));
        let changes = if ts.dropped || !ts.is_changed() {
            Vec::new()
        } else {
            prepared::diff(&shared, ts, &st.snapshot)?
        };
        stores.push(PreparedStore {
            id: ts.meta.id,
            name: ts.meta.name.to_string(),
            options: (*ts.meta.options).clone(),
            created: ts.base.is_none(),
            dropped: ts.dropped,
            count_read: ts.count_read,
            access: ts.access.clone(),
            changes,
        });
    }
    let p = Prepared {
        txn_id: st.id,
        participants,
        stores,
    };
    let payload = p.encode(|v| match v {
        ValueRef::Blob { id, .. } if new_blobs.contains_key(id) => {
            let e = new_blobs.get(id).copied().unwrap_or_default();
            let rec = shared.files.read(e.loc)?;
            let (_, body) = record::parse_image(rec.payload()).map_err(|err| {
                Error::corruption(shared.files.path(e.loc.seg), e.loc.off, err.to_string())
            })?;
            Ok(ValueRef::Inline(crate::btree::InlineValue::new(body)))
        }
        other => Ok(other.clone()),
    })?;
    ctx.writer.append(Kind::Prepare, &[&payload])?;
    shared.sync_inline(ctx)?;
    ctx.prepared.insert(st.id, Arc::new(p));
    ctx.in_doubt.insert(st.id, payload);
    Ok(())
}

/// Phase 2: applies a prepared transaction (merging with what committed meanwhile; no
/// conflict is possible, conflicting commits were refused) with one commit record, the decision.
pub(crate) fn phase2(st: &mut TxnState) -> Result<()> {
    if st.mode != TransactionMode::ForWriting || !st.stores.values().any(|t| t.is_changed()) {
        return Ok(());
    }
    let shared = Arc::clone(&st.shared);
    let (seq, fill) = {
        let mut guard = shared.commit_lock()?;
        let ctx = &mut *guard;
        // Decided meanwhile (a resolve from another thread): its decision record is written,
        // and this one must not apply the transaction again (nor after an abort).
        if !ctx.prepared.contains_key(&st.id) {
            return Err(Error::TransactionClosed);
        }
        let cur = Arc::clone(&ctx.latest);
        let batch = prepare(st, &cur, ctx.writer.chain_segment(), &mut ctx.spare)?;
        let (state, fill) = write_commit(&shared, ctx, &cur, batch, st.id)?;
        (state.seq, fill)
    };
    after_write(st, &shared, fill, seq, true)
}

/// Records the abort of a prepared transaction.
pub(crate) fn abort_prepared(shared: &Shared, txn_id: u128) -> Result<()> {
    let mut guard = shared.commit_lock()?;
    let ctx = &mut *guard;
    if ctx.prepared.remove(&txn_id).is_none() {
        return Ok(());
    }
    ctx.in_doubt.remove(&txn_id);
    ctx.writer.append(Kind::Abort, &[&txn_id.to_le_bytes()])?;
    shared.sync_inline(ctx)
}

fn conflict(msg: String) -> Error {
    Error::Conflict(msg)
}

fn validate(
    st: &TxnState,
    cur: &DbState,
    history: &History,
    prepared: &FastMap<u128, Arc<Prepared>>,
) -> Result<()> {
    for p in prepared.values().filter(|p| p.txn_id != st.id) {
        check_against_prepared(st, p)?;
    }
    // No commit since the snapshot (a state's seq names it): the catalog is the one the
    // transaction saw, and no history entry is newer.
    if cur.seq == st.snapshot.seq {
        return Ok(());
    }
    for ts in st.stores.values() {
        match &ts.base {
            Some(base) => {
                let now = cur.stores.get(&base.name).filter(|m| m.id == base.id);
                if now.is_none() {
                    return Err(conflict(format!(
                        "store {} was removed by another transaction",
                        base.name
                    )));
                }
            }
            None => {
                let dropped_here = |id: StoreId| {
                    st.stores
                        .values()
                        .any(|o| o.dropped && o.base.as_ref().is_some_and(|b| b.id == id))
                };
                if !ts.dropped
                    && cur
                        .stores
                        .get(&ts.meta.name)
                        .is_some_and(|m| !dropped_here(m.id))
                {
                    return Err(conflict(format!(
                        "store {} was created by another transaction",
                        ts.meta.name
                    )));
                }
            }
        }
    }
    for h in history.iter().filter(|h| h.seq > st.snapshot.seq) {
        for w in &h.stores {
            let Some(ts) = st.stores.get(&w.store) else {
                continue;
            };
            if ts.base.is_none() {
                continue;
            }
            if ts.count_read && w.count_changed {
                return Err(conflict(format!(
                    "the item count of store {} changed after this transaction read it",
                    ts.meta.name
                )));
            }
            if let Some(k) = ts.access.conflict(&ts.shape.order, w.keys()) {
                return Err(conflict(format!(
                    "item {:?} of store {} was changed by a concurrent transaction (commit {})",
                    String::from_utf8_lossy(k),
                    ts.meta.name,
                    h.seq
                )));
            }
        }
    }
    Ok(())
}

/// A prepared transaction has promised to commit: a transaction that writes what it read or
/// wrote, or that creates or removes a store it uses, must not commit before it is decided.
fn check_against_prepared(st: &TxnState, p: &Prepared) -> Result<()> {
    let held = |what: &str| {
        Err(conflict(format!(
            "{what} is held by prepared transaction {:032x} (waiting for its phase 2)",
            p.txn_id
        )))
    };
    for ps in &p.stores {
        for ts in st.stores.values() {
            if *ts.meta.name != *ps.name {
                continue;
            }
            if !ts.is_changed() {
                continue;
            }
            if ps.created || ps.dropped || ts.dropped || ts.base.is_none() {
                return held(&format!("store {}", ps.name));
            }
            if ps.count_read && ts.meta.count != ts.base.as_ref().map_or(0, |b| b.count) {
                return held(&format!("the item count of store {}", ps.name));
            }
            let mine = sorted_keys(&ts.shape.order, ts.access.written.to_vec());
            if let Some(k) = ps.access.conflict(&ts.shape.order, &mine) {
                return held(&format!(
                    "item {:?} of store {}",
                    String::from_utf8_lossy(k),
                    ps.name
                ));
            }
        }
    }
    Ok(())
}

/// True when the nodes the transaction changed are still the committed ones, so its node
/// images can be written as they are.
fn unchanged_since(ts: &TxnStore, st: &FastMap<LogicalId, super::Seen>, cur: &DbState) -> bool {
    let Some(base) = &ts.base else { return true };
    let Some(now) = cur.stores.get(&base.name) else {
        return false;
    };
    if ts.meta.root != base.root && now.root != base.root {
        return false;
    }
    let same = |id: &LogicalId, v: u64| cur.registry.get(*id).map(|e| e.version) == Some(v);
    ts.dirty
        .iter()
        .filter(|(_, d)| d.base > 0)
        .all(|(id, d)| same(id, d.base))
        && ts
            .freed
            .iter()
            .all(|id| st.get(id).is_some_and(|s| same(id, s.version)))
}

fn prepare(
    st: &mut TxnState,
    cur: &DbState,
    chain_seg: Option<u32>,
    spare: &mut SpareBuffers,
) -> Result<Batch> {
    let shared = Arc::clone(&st.shared);
    let snapshot = Arc::clone(&st.snapshot);
    let mut b = Batch {
        bytes: std::mem::take(&mut spare.bytes),
        images: std::mem::take(&mut spare.images),
        store_ops: std::mem::take(&mut spare.store_ops),
        scratch: Writer::with(std::mem::take(&mut spare.scratch)),
        ..Batch::default()
    };
    for ts in st.stores.values_mut() {
        if !ts.is_changed() {
            continue;
        }
        let sid = ts.meta.id;
        if ts.dropped {
            if ts.base.is_some() {
                b.store_ops.push(StoreOp::Drop { id: sid });
                b.removals.extend(
                    cur.registry
                        .iter()
                        .filter(|(_, e)| e.store == sid)
                        .map(|(id, _)| id),
                );
            }
            continue;
        }
        if cur.seq != snapshot.seq && !unchanged_since(ts, &st.seen, cur) {
            prepared::replay(&shared, ts, &snapshot, cur)?;
        }
        // About a leaf per changed node (grown by doubling when leaves are larger); a pending
        // insert is one small delta: a single-insert commit's batch stays within the
        // allocator's per-thread cache (a 4 KiB allocation per commit is not).
        b.bytes.reserve(
            ts.dirty
                .values()
                .map(|d| if d.ready().is_some() { 4096 } else { 256 })
                .sum::<usize>()
                + 512,
        );
        // Pending separate-blob values become blobs (there are none in a store that keeps its
        // values in its nodes).
        let in_node = ts.meta.options.value_placement == ValuePlacement::InNode;
        for d in ts.dirty.values_mut().filter(|_| !in_node) {
            // A leaf with an insert pending has none: its item's value is inline, the rest
            // are committed.
            let has_pending = d.ready().is_some_and(|n| matches!(&**n, Node::Leaf(items) if items.iter().any(|i| matches!(i.value, ValueRef::Pending(_)))));
            if !has_pending {
                continue;
            }
            if let Node::Leaf(items) = Arc::make_mut(d.node_mut()) {
                for it in items.iter_mut() {
                    if let ValueRef::Pending(v) = &it.value {
                        let id = shared.new_logical()?;
                        b.add_image(
                            Kind::Blob,
                            ImageId {
                                store: sid,
                                logical: id,
                                version: 1,
                            },
                            v,
                            None,
                        );
                        it.value = ValueRef::Blob {
                            id,
                            len: v.len() as u64,
                        };
                    }
                }
            }
        }
        // One changed node (most small commits) needs no vector.
        let one: [(LogicalId, &Dirty); 1];
        let many: Vec<(LogicalId, &Dirty)>;
        let jobs: &[(LogicalId, &Dirty)] = match ts.dirty.iter().next() {
            Some((id, d)) if ts.dirty.len() == 1 => {
                one = [(*id, d)];
                &one
            }
            _ => {
                many = ts.dirty.iter().map(|(id, d)| (*id, d)).collect();
                &many
            }
        };
        let to = Target {
            sid,
            order: &ts.shape.order,
            chain_seg,
        };
        // One image per changed node (a `Vec`'s first growth makes room for four).
        b.images.reserve_exact(jobs.len());
        encode_nodes(&mut b, &shared, cur, to, jobs)?;
        b.placed
            .extend(ts.new_blobs.drain().map(|(id, nb)| (id, nb.entry)));
        b.removals.extend(ts.freed.iter().copied());
        b.removals.extend(ts.freed_blobs.iter().copied());
        let count_changed;
        match &ts.base {
            None => {
                b.store_ops.push(StoreOp::Create(ts.meta.clone()));
                count_changed = ts.meta.count != 0;
            }
            Some(base) => {
                let now = cur.stores.get(&base.name);
                let (now_root, now_count) =
                    now.map_or((base.root, base.count), |m| (m.root, m.count));
                let root = if ts.meta.root != base.root {
                    ts.meta.root
                } else {
                    now_root
                };
                let count =
                    (now_count as i128 + ts.meta.count as i128 - base.count as i128).max(0) as u64;
                count_changed = count != now_count;
                if root != now_root || count != now_count {
                    b.store_ops.push(StoreOp::Meta {
                        id: sid,
                        root,
                        count,
                    });
                }
            }
        }
        let keys = std::mem::take(&mut ts.access.written);
        b.writes.push(if shared.cluster.is_some() {
            // The commit record carries them, sorted.
            StoreWrites::sorted(
                sid,
                sorted_keys(&ts.shape.order, keys.to_vec()),
                count_changed,
            )
        } else {
            StoreWrites::unsorted(sid, keys, ts.shape.order.clone(), count_changed)
        });
    }
    Ok(b)
}

/// A leaf delta is written while it takes at most this fraction (1/n) of the leaf's bytes,
/// and a chain while the deltas before its newest take at most three quarters; past that the
/// leaf is written whole again. Bytes appended by W4's 1,000 single-insert commits into an
/// empty store (ADR 0010; `--example log_bytes`): chains of 16 with a quarter and a half 584 KB,
/// with a half and three quarters 496 KB; chains of 32 with a quarter and the whole leaf
/// 536 KB, with a half and three quarters 438 KB (chosen), with a half and a half 552 KB;
/// chains of 48, 387 KB.
const DELTA_SHARE: usize = 2;

/// Changed nodes from which a commit encodes them on two threads (below, a thread costs
/// more than it saves).
const PARALLEL_NODES: usize = 128;

/// True when this machine runs two threads at once (asked once per process).
fn parallel() -> bool {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from)) > 1
}

/// Frames the changed nodes `jobs` of store `sid` into `b` (see [`encode_node`]). A large
/// commit encodes the second half on another thread into a batch of its own, appended after
/// the first: encoding is most of a large commit's work, and nothing in it is shared but
/// immutable nodes and the state committed before.
fn encode_nodes(
    b: &mut Batch,
    shared: &Shared,
    cur: &DbState,
    to: Target<'_>,
    jobs: &[(LogicalId, &Dirty)],
) -> Result<()> {
    let encode = |b: &mut Batch, jobs: &[(LogicalId, &Dirty)]| {
        jobs.iter()
            .try_for_each(|(id, d)| encode_node(b, shared, cur, to, *id, d))
    };
    b.pack_deltas = jobs.len() <= PACK_DELTAS_UPTO;
    if jobs.len() < PARALLEL_NODES || !parallel() {
        return encode(b, jobs);
    }
    let (mine, theirs) = jobs.split_at(jobs.len() / 2);
    b.build_cache_entries = true;
    let other = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut other = Batch {
                build_cache_entries: true,
                ..Batch::default()
            };
            other.bytes.reserve(theirs.len() * 4096);
            encode(&mut other, theirs).map(|()| other)
        });
        let mine = encode(b, mine);
        let theirs = worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        mine.and(theirs)
    })?;
    b.append(other);
    Ok(())
}

/// What a store's changed nodes are encoded for: the store, its order, and the segment the
/// batch goes to when it may extend leaf delta chains (see `LogWriter::chain_segment`).
#[derive(Clone, Copy)]
struct Target<'a> {
    sid: StoreId,
    order: &'a Order,
    chain_seg: Option<u32>,
}

/// Frames the changed node `id` (store `sid`, at `d`) into `b`: a changed leaf whose
/// committed version is the one it was changed from as a delta when that is small (over the
/// committed version, extending its chain, when the chain's deltas lie in `chain_seg`, the
/// segment the batch goes to; else over the chain's base image); any other node as a full
/// image.
fn encode_node(
    b: &mut Batch,
    shared: &Shared,
    cur: &DbState,
    Target {
        sid,
        order,
        chain_seg,
    }: Target<'_>,
    id: LogicalId,
    d: &Dirty,
) -> Result<()> {
    let img = ImageId {
        store: sid,
        logical: id,
        version: d.base + 1,
    };
    // The node as changed, built only if a pending insert is not written as it is.
    let settled = std::cell::OnceCell::new();
    let node = || settled.get_or_init(|| d.current());
    if d.base > 0
        && d.is_leaf()
        && let Some(entry) = cur.registry.get(id).copied()
        && entry.version == d.base
        && entry.store == sid
    {
        let base_loc = entry.delta_base().unwrap_or(entry.loc);
        // The chain this delta extends: the committed version's, when its deltas lie in the
        // segment the batch goes to.
        let chain = entry
            .delta_base()
            .filter(|_| chain_seg == Some(entry.loc.seg))
            .and_then(|base| Some((base, entry.chain.then(entry.loc.len)?)));
        // A pending insert or removal applies to the committed version: written as it is
        // over that version (a full image, or a delta whose chain it extends).
        if d.has_pending()
            && let Node::Leaf(items) = &**d.committed_leaf()
            && let Some((base, chain)) = match entry.delta_base() {
                None => Some((entry.loc, Chain::first())),
                Some(_) => chain,
            }
        {
            let over = DeltaOver {
                prev: entry.loc,
                items,
                base,
                chain,
            };
            let framed = match (d.pending_insert(), d.pending_remove()) {
                (Some(insert), _) => b.add_insert_delta(img, &insert, &over),
                (None, Some(remove)) => b.add_remove_delta(img, &remove, &over),
                (None, None) => false,
            };
            if framed {
                b.chained |= entry.delta_base().is_some();
                return Ok(());
            }
        }
        if let Some((base, chain)) = chain {
            let (prev, _, _) = nodes::load_node(shared, cur, sid, id)?;
            if let Node::Leaf(items) = &*prev {
                let over = DeltaOver {
                    prev: entry.loc,
                    items,
                    base,
                    chain,
                };
                if b.add_leaf_delta(img, order, node(), &over) {
                    b.chained = true;
                    return Ok(());
                }
            }
        }
        let base = nodes::base_image(shared, cur, id, &entry)?;
        if let Node::Leaf(items) = &*base {
            let over = DeltaOver {
                prev: base_loc,
                items,
                base: base_loc,
                chain: Chain::first(),
            };
            if b.add_leaf_delta(img, order, node(), &over) {
                return Ok(());
            }
        }
    }
    // A leaf that was committed before this transaction changed it is cached with its values
    // in one buffer (the transaction's copy, one allocation per value it added, goes with the
    // transaction): later transactions copy it on write and drop it touching one reference
    // count, not one per value. A leaf this transaction created (a split, a bulk load) is
    // cached as it is: packing a bulk load's every leaf would cost more than it saves, and
    // the leaf is packed when a later transaction changes it and writes it whole.
    b.add_node(img, node(), d.base > 0);
    Ok(())
}

/// Writes a batch and its commit record (not yet synced), makes it the latest state and
/// records its writes in the history. The caller waits for it to be durable.
pub(crate) fn write_commit(
    shared: &Shared,
    ctx: &mut CommitCtx,
    cur: &DbState,
    b: Batch,
    txn_id: u128,
) -> Result<(Arc<DbState>, CacheFill)> {
    write_commit_with(shared, ctx, cur, b, txn_id, &mut |_, _, _| Ok(()))
}

/// What decides a written commit before it is applied (clustered mode: the commit point).
type Decide<'a> = dyn FnMut(&mut CommitCtx, u64, Location) -> Result<()> + 'a;

/// [`write_commit`], calling `decide` with the commit's seq and record location after the
/// write and before the commit is applied; an error from it leaves the state unchanged (the
/// written bytes stay unreferenced).
fn write_commit_with(
    shared: &Shared,
    ctx: &mut CommitCtx,
    cur: &DbState,
    mut b: Batch,
    txn_id: u128,
    decide: &mut Decide<'_>,
) -> Result<(Arc<DbState>, CacheFill)> {
    let n_updates = b.images.len() + b.placed.len() + b.removals.len();
    let estimate =
        b.bytes.len() + 256 + n_updates * record::ENTRY_MAX_BYTES + b.store_ops.len() * 256;
    // A batch extending delta chains goes to the segment their deltas lie in, even past its
    // size (by one batch: the next commit starts a new segment, see `chain_segment`).
    let (seg, start) = if b.chained {
        ctx.writer.reserve_here()?
    } else {
        ctx.writer.reserve(estimate as u64)?
    };
    let (next_logical, next_store) = shared.high_water(cur)?;
    let writes = if shared.cluster.is_some() {
        b.writes
            .iter()
            .map(|w| WrittenKeys {
                store: w.store,
                keys: w.keys().iter().map(|k| k.to_vec()).collect(),
                count_changed: w.count_changed,
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut rec = CommitRecord {
        updates: std::mem::take(&mut ctx.spare.updates),
        seq: cur.seq + 1,
        durable: ctx.writer.durable_seq(),
        // The id is written only as the decision of a prepared transaction (`phase2` checks
        // under this lock that it still is one; other commits' ids never are).
        txn_id: if ctx.prepared.contains_key(&txn_id) {
            txn_id
        } else {
            0
        },
        // Compaction's relocations commit with id 0 (a transaction's is never 0).
        housekeeping: txn_id == 0,
        next_logical,
        next_item: shared.next_item.load(Ordering::Relaxed),
        next_store,
        store_ops: std::mem::take(&mut b.store_ops),
        writes,
    };
    rec.updates.reserve(n_updates);
    for im in &b.images {
        rec.updates.push((
            im.logical,
            Entry {
                loc: Location {
                    seg,
                    off: start + im.rel,
                    len: im.len,
                },
                base: im.base,
                version: im.version,
                store: im.store,
                chain: im.chain,
            },
        ));
    }
    rec.updates.extend(b.placed.iter().copied());
    rec.updates
        .extend(b.removals.iter().map(|id| (*id, Entry::default())));
    let rec_rel = b.bytes.len() as u64;
    record::frame_with(&mut b.bytes, Kind::Commit, |out| {
        let mut w = Writer::with(std::mem::take(out));
        record::put_commit(&mut w, &rec);
        *out = w.buf;
    });
    ctx.writer.write(&b.bytes)?;
    // A commit alone syncs for itself: the device starts on these bytes now, while the commit
    // applies its state and frees its transaction, and the sync waits less. Among concurrent
    // commits the next sync takes these bytes with the others', in one request.
    if shared.lone_committer() {
        ctx.writer.start_sync();
    }
    let rec_loc = Location {
        seg,
        off: start + rec_rel,
        len: (b.bytes.len() as u64 - rec_rel) as u32,
    };
    decide(ctx, rec.seq, rec_loc)?;
    let mut next = cur.clone();
    let mut replaced = std::mem::take(&mut ctx.spare.replaced);
    next.apply_into(&rec, &mut replaced);
    for (_, e) in &b.placed {
        ctx.space.release(e.loc.seg);
    }
    // Superseded images will not be read by new transactions: make room in the cache.
    shared.cache.forget_replaced(&replaced, &rec.updates);
    ctx.space
        .on_commit(&replaced, &rec.updates, rec.seq, ctx.writer.position().0);
    let next = Arc::new(next);
    ctx.latest = Arc::clone(&next);
    // A commit record carrying a prepared transaction's id is its decision.
    if ctx.prepared.remove(&txn_id).is_some() {
        ctx.in_doubt.remove(&txn_id);
    }
    if !b.writes.is_empty() {
        ctx.history.push_back(HistEntry {
            seq: rec.seq,
            stores: std::mem::take(&mut b.writes),
        });
    }
    trim_history(shared, ctx);
    let mut fill = Vec::with_capacity(b.images.len());
    fill.extend(
        b.images
            .drain(..)
            .zip(&rec.updates)
            .filter_map(|(im, (_, e))| Some((e.loc, im.node?))),
    );
    ctx.spare = SpareBuffers::keep(b, rec, replaced);
    Ok((next, CacheFill(fill)))
}

/// The buffers of a written commit's batch and record, emptied, for the next commit's (the
/// commit lock's holder takes them): a small commit allocates none of them. Buffers grown
/// past [`SpareBuffers::MAX_BYTES`] by a large commit are freed instead.
#[derive(Default)]
pub(crate) struct SpareBuffers {
    bytes: Vec<u8>,
    images: Vec<Image>,
    store_ops: Vec<StoreOp>,
    scratch: Vec<u8>,
    updates: Vec<(LogicalId, Entry)>,
    replaced: Vec<Entry>,
}

impl std::fmt::Debug for SpareBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpareBuffers")
            .field("bytes", &self.bytes.capacity())
            .field("images", &self.images.capacity())
            .field("store_ops", &self.store_ops.capacity())
            .field("scratch", &self.scratch.capacity())
            .field("updates", &self.updates.capacity())
            .field("replaced", &self.replaced.capacity())
            .finish()
    }
}

impl SpareBuffers {
    /// The most bytes a kept buffer may hold.
    const MAX_BYTES: usize = 64 << 10;

    fn keep(b: Batch, rec: CommitRecord, replaced: Vec<Entry>) -> SpareBuffers {
        fn emptied<T>(mut v: Vec<T>) -> Vec<T> {
            v.clear();
            if v.capacity() * std::mem::size_of::<T>() > SpareBuffers::MAX_BYTES {
                Vec::new()
            } else {
                v
            }
        }
        SpareBuffers {
            bytes: emptied(b.bytes),
            images: emptied(b.images),
            store_ops: emptied(rec.store_ops),
            scratch: emptied(b.scratch.buf),
            updates: emptied(rec.updates),
            replaced: emptied(replaced),
        }
    }
}

/// The nodes a written commit puts in the cache, by location: built (and inserted) by
/// [`CacheFill::fill`] after the write. A single commit fills it after freeing its
/// transaction's working set, so a leaf with an insert pending is usually the only holder of
/// the version it replaces and takes its items instead of copying them.
#[must_use]
pub(crate) struct CacheFill(Vec<(Location, ForCache)>);

impl CacheFill {
    /// The committed leaves that pending inserts and removals are to be applied to when the
    /// fill builds them (identified by address, never dereferenced): a transaction lets go of
    /// its own handles to these before the fill, so that it can change them in place.
    pub(crate) fn built_in_place(&self) -> FastSet<usize> {
        self.0
            .iter()
            .filter_map(|(_, c)| match c {
                ForCache::Later {
                    node: NewNode::Insert(leaf, ..) | NewNode::Remove(leaf, ..),
                    ..
                } => Some(Arc::as_ptr(leaf) as usize),
                _ => None,
            })
            .collect()
    }

    /// Builds the entries and inserts them into the cache. A record is immutable and its
    /// location never reused while referenced, so an entry inserted late (after a later
    /// commit replaced it) is only evicted late, never wrong.
    pub(crate) fn fill(self, shared: &Shared) {
        for (loc, node) in self.0 {
            let c = node.entry();
            shared.cache.insert_weighed(loc, c.node, c.index, c.weight);
        }
    }
}

/// Moves the live records of segment `seg` to the head of the log (same versions), so the
/// segment holds nothing live and can be deleted. Synced and published before it returns.
pub(crate) fn relocate(shared: &Shared, ctx: &mut CommitCtx, seg: u32) -> Result<()> {
    let cur = Arc::clone(&ctx.latest);
    let mut b = Batch::default();
    let held = |e: &Entry| e.records().any(|l| l.seg == seg);
    for (id, e) in cur.registry.iter().filter(|(_, e)| held(e)) {
        if e.delta_base().is_some() {
            // A leaf delta (or its base) moves as one full image.
            let (node, _, _) = nodes::load_node(shared, &cur, e.store, id)?;
            let img = ImageId {
                store: e.store,
                logical: id,
                version: e.version,
            };
            b.add_node(img, &node, true);
            continue;
        }
        let rec = shared.files.read(e.loc)?;
        let (img, body) = record::parse_image(rec.payload())
            .map_err(|err| Error::corruption(shared.files.path(seg), e.loc.off, err.to_string()))?;
        if img.logical != id || img.version != e.version {
            return Err(Error::corruption(
                shared.files.path(seg),
                e.loc.off,
                "image does not match its registry entry",
            ));
        }
        b.add_image(rec.kind, img, body, None);
    }
    if b.images.is_empty() {
        return Ok(());
    }
    write_commit(shared, ctx, &cur, b, 0)?.1.fill(shared);
    shared.sync_inline(ctx)
}

/// Drops the history no running or future transaction can validate against.
pub(crate) fn trim_history(shared: &Shared, ctx: &mut CommitCtx) {
    // Published first: a transaction beginning after this read has a snapshot at least as
    // new, so nothing it needs is trimmed.
    let published = shared.published_seq();
    let keep_after = shared.oldest_snapshot().unwrap_or(u64::MAX).min(published);
    while ctx.history.front().is_some_and(|h| h.seq <= keep_after) {
        ctx.history.pop_front();
    }
}
