//! The commit pipeline: validation, merge, write, group sync, publish.
//!
//! ```text
//! commit lock: validate the item-level read set against the commits since the snapshot
//!              -> fast path (the nodes it changed are unchanged) or replay its item changes on
//!                 the current nodes (auto-merge)
//!              -> frame node images + blobs + one commit record, one write -> `latest` state
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
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::access::sorted_keys;
use super::nodes::{TxnNodes, load_node};
use super::{TxnState, TxnStore};
use crate::btree::{self, Item, ItemId, KeyBuf, Node, NodeStore, Seek, ValueRef};
use crate::codec::Writer;
use crate::db::{CommitCtx, Shared};
use crate::error::{Error, Result};
use crate::fasthash::FastMap;
use crate::log::record::{self, ImageId, Kind, image_prefix};
use crate::options::TransactionMode;
use crate::registry::{Entry, Location, LogicalId};
use crate::state::{CommitRecord, DbState, StoreId, StoreOp};

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
    /// Sorted in the store's order.
    pub keys: Vec<KeyBuf>,
    pub count_changed: bool,
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
    node: Option<Arc<Node>>,
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
}

impl Batch {
    fn add_image(&mut self, kind: Kind, id: ImageId, body: &[u8], node: Option<Arc<Node>>) {
        let rel = self.bytes.len() as u64;
        record::frame(&mut self.bytes, kind, &[&image_prefix(id), body]);
        let len = (self.bytes.len() as u64 - rel) as u32;
        self.images.push(Image {
            logical: id.logical,
            store: id.store,
            version: id.version,
            rel,
            len,
            node,
        });
    }
}

pub(crate) fn commit(st: &mut TxnState) -> Result<()> {
    if st.mode != TransactionMode::ForWriting || !st.stores.values().any(TxnStore::is_changed) {
        return Ok(());
    }
    if st.started.elapsed() > st.max {
        return Err(Error::TransactionTimeout(st.max));
    }
    let shared = Arc::clone(&st.shared);
    let seq = {
        let mut guard = shared.commit_lock()?;
        let ctx = &mut *guard;
        let cur = Arc::clone(&ctx.latest);
        validate(st, &cur, &ctx.history)?;
        let batch = prepare(st, &cur)?;
        write_commit(&shared, ctx, &cur, batch, st.id)?.seq
    };
    shared.wait_durable(seq)?;
    // The commit is durable and published: what follows is housekeeping, whose failure must
    // not turn an acknowledged commit into an error. It is recorded for `verify` and stats.
    if let Err(e) = shared
        .commit_lock()
        .and_then(|mut ctx| crate::db::after_commit_hook(&shared, &mut ctx))
    {
        shared.note_background_error(&e);
    }
    Ok(())
}

fn conflict(msg: String) -> Error {
    Error::Conflict(msg)
}

fn validate(st: &TxnState, cur: &DbState, history: &History) -> Result<()> {
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
                if !ts.dropped && cur.stores.contains_key(&ts.meta.name) {
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
            if let Some(k) = ts.access.conflict(&ts.shape.order, &w.keys) {
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

/// One item-level change found by comparing the transaction's leaves with their committed
/// versions.
enum Change {
    Add(Item),
    Remove(KeyBuf, ItemId),
    Set(Item),
}

/// Replays the transaction's item changes in store `ts` on the current state `cur`.
fn replay(shared: &Shared, ts: &mut TxnStore, snapshot: &DbState, cur: &DbState) -> Result<()> {
    let sid = ts.meta.id;
    let mut old: FastMap<ItemId, Item> = FastMap::default();
    let touched: Vec<LogicalId> = ts
        .dirty
        .iter()
        .filter(|(_, d)| d.base > 0)
        .map(|(id, _)| *id)
        .chain(ts.freed.iter().copied())
        .collect();
    for id in touched {
        if let Node::Leaf(items) = &*load_node(shared, snapshot, sid, id)?.0 {
            old.extend(items.iter().map(|i| (i.id, i.clone())));
        }
    }
    let mut changes = Vec::new();
    for d in ts.dirty.values() {
        if let Node::Leaf(items) = &*d.node {
            for it in items {
                match old.remove(&it.id) {
                    None => changes.push(Change::Add(it.clone())),
                    Some(o) if o != *it => changes.push(Change::Set(it.clone())),
                    Some(_) => {}
                }
            }
        }
    }
    changes.extend(old.into_values().map(|o| Change::Remove(o.key, o.id)));
    // Removes first (a key removed and added again in a unique store), then sets, then adds.
    changes.sort_by_key(|c| match c {
        Change::Remove(..) => 0,
        Change::Set(_) => 1,
        Change::Add(_) => 2,
    });

    let base = ts
        .base
        .clone()
        .ok_or_else(|| conflict("store vanished".into()))?;
    let now = cur
        .stores
        .get(&base.name)
        .filter(|m| m.id == sid)
        .cloned()
        .ok_or_else(|| {
            conflict(format!(
                "store {} was removed by another transaction",
                base.name
            ))
        })?;
    let delta = ts.meta.count as i128 - base.count as i128;
    ts.dirty.clear();
    ts.freed.clear();
    ts.meta.root = now.root;
    ts.meta.count = (now.count as i128 + delta).max(0) as u64;
    ts.base = Some(Arc::clone(&now));
    let shape = ts.shape.clone();
    let mut root = now.root;
    let mut seen = FastMap::default();
    let mut nodes = TxnNodes {
        shared,
        snapshot: cur,
        store: ts,
        seen: &mut seen,
        track: false,
    };
    let lost = |what: &str, key: &[u8]| {
        conflict(format!(
            "{what} item {:?} of store {} could not be merged",
            String::from_utf8_lossy(key),
            base.name
        ))
    };
    for c in changes {
        match c {
            Change::Remove(key, id) => {
                if btree::remove(&mut nodes, &shape, &mut root, &key, id)?.is_none() {
                    return Err(lost("removed", &key));
                }
            }
            Change::Set(item) => {
                let pos = btree::seek(&mut nodes, &shape, root, &item.key, item.id, Seek::Ge)?;
                let Some(pos) = pos.filter(|p| p.item().is_some_and(|i| i.id == item.id)) else {
                    return Err(lost("updated", &item.key));
                };
                let (leaf, idx) = (pos.leaf_id, pos.idx);
                drop(pos);
                if let Node::Leaf(items) = nodes.node_mut(leaf)?
                    && let Some(slot) = items.get_mut(idx)
                {
                    *slot = item;
                }
            }
            Change::Add(item) => {
                let key = item.key.clone();
                if !btree::insert(&mut nodes, &shape, &mut root, item)? {
                    return Err(lost("added", &key));
                }
            }
        }
    }
    ts.meta.root = root;
    Ok(())
}

fn prepare(st: &mut TxnState, cur: &DbState) -> Result<Batch> {
    let shared = Arc::clone(&st.shared);
    let snapshot = Arc::clone(&st.snapshot);
    let mut b = Batch::default();
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
            replay(&shared, ts, &snapshot, cur)?;
        }
        // Pending separate-blob values become blobs.
        for d in ts.dirty.values_mut() {
            let has_pending = matches!(&*d.node, Node::Leaf(items) if items.iter().any(|i| matches!(i.value, ValueRef::Pending(_))));
            if !has_pending {
                continue;
            }
            if let Node::Leaf(items) = Arc::make_mut(&mut d.node) {
                for it in items.iter_mut() {
                    if let ValueRef::Pending(v) = &it.value {
                        let id = shared.new_logical();
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
        let mut w = Writer::default();
        for (id, d) in &ts.dirty {
            w.buf.clear();
            d.node.encode(&mut w);
            b.add_image(
                Kind::Node,
                ImageId {
                    store: sid,
                    logical: *id,
                    version: d.base + 1,
                },
                &w.buf,
                Some(Arc::clone(&d.node)),
            );
        }
        b.placed
            .extend(ts.new_blobs.iter().map(|(id, nb)| (*id, nb.entry)));
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
        let keys = sorted_keys(&ts.shape.order, std::mem::take(&mut ts.access.written));
        b.writes.push(StoreWrites {
            store: sid,
            keys,
            count_changed,
        });
    }
    Ok(b)
}

/// Writes a batch and its commit record (not yet synced), makes it the latest state and
/// records its writes in the history. The caller waits for it to be durable.
pub(crate) fn write_commit(
    shared: &Shared,
    ctx: &mut CommitCtx,
    cur: &DbState,
    mut b: Batch,
    txn_id: u128,
) -> Result<Arc<DbState>> {
    let n_updates = b.images.len() + b.placed.len() + b.removals.len();
    let estimate = b.bytes.len() + 256 + n_updates * record::ENTRY_BYTES + b.store_ops.len() * 256;
    let (seg, start) = ctx.writer.reserve(estimate as u64)?;
    let mut rec = CommitRecord {
        seq: cur.seq + 1,
        durable: ctx.writer.durable_seq(),
        txn_id,
        next_logical: shared.next_logical.load(Ordering::Relaxed),
        next_item: shared.next_item.load(Ordering::Relaxed),
        next_store: shared.next_store.load(Ordering::Relaxed),
        store_ops: std::mem::take(&mut b.store_ops),
        updates: Vec::with_capacity(n_updates),
    };
    for im in &b.images {
        rec.updates.push((
            im.logical,
            Entry {
                loc: Location {
                    seg,
                    off: start + im.rel,
                    len: im.len,
                },
                version: im.version,
                store: im.store,
            },
        ));
    }
    rec.updates.extend(b.placed.iter().copied());
    rec.updates
        .extend(b.removals.iter().map(|id| (*id, Entry::default())));
    let payload = record::encode_commit(&rec);
    record::frame(&mut b.bytes, Kind::Commit, &[&payload]);
    ctx.writer.write(&b.bytes)?;
    let mut next = cur.clone();
    let replaced = next.apply(&rec);
    ctx.space
        .on_commit(&replaced, &rec.updates, rec.seq, ctx.writer.position().0);
    let next = Arc::new(next);
    ctx.latest = Arc::clone(&next);
    if !b.writes.is_empty() {
        ctx.history.push_back(HistEntry {
            seq: rec.seq,
            stores: std::mem::take(&mut b.writes),
        });
    }
    let keep_after = shared
        .oldest_snapshot()
        .unwrap_or(u64::MAX)
        .min(shared.published_seq());
    while ctx.history.front().is_some_and(|h| h.seq <= keep_after) {
        ctx.history.pop_front();
    }
    for (im, (_, e)) in b.images.iter().zip(&rec.updates) {
        if let Some(n) = &im.node {
            shared.cache.insert(e.loc, Arc::clone(n));
        }
    }
    Ok(next)
}

/// Moves the live records of segment `seg` to the head of the log (same versions), so the
/// segment holds nothing live and can be deleted. Synced and published before it returns.
pub(crate) fn relocate(shared: &Shared, ctx: &mut CommitCtx, seg: u32) -> Result<()> {
    let cur = Arc::clone(&ctx.latest);
    let mut b = Batch::default();
    for (id, e) in cur.registry.iter().filter(|(_, e)| e.loc.seg == seg) {
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
    write_commit(shared, ctx, &cur, b, 0)?;
    shared.sync_inline(ctx)
}
