//! The commit pipeline.
//!
//! ```text
//! commit lock -> validate against the current state -> materialise pending blobs
//!   -> frame node images + blobs -> append them and the commit record in one write
//!   -> sync (the commit point) -> apply to a copy of the state -> publish -> cache the nodes
//!   -> space work (compaction, checkpoint, segment deletion) -> unlock
//! ```
//!
//! Validation (`ForWriting`): every committed node the transaction read, including the ones it
//! changed, must still have the version it read; a store it read the count of must still have
//! that count; a store it created must not have been created meanwhile; a store it uses must
//! not have been dropped. Otherwise the commit fails with [`Error::Conflict`] and nothing of
//! the transaction is written. Nodes it did not read may have changed: count deltas and roots
//! are merged (a root it did not replace stays as the current one).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::TxnState;
use crate::btree::{Node, ValueRef};
use crate::codec::Writer;
use crate::db::{CommitCtx, Shared};
use crate::error::{Error, Result};
use crate::log::record::{self, ImageId, Kind, image_prefix};
use crate::options::TransactionMode;
use crate::registry::{Entry, Location, LogicalId};
use crate::state::{CommitRecord, DbState, StoreOp};

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
    /// Entries already written (actively persisted blobs, relocated records keep theirs).
    placed: Vec<(LogicalId, Entry)>,
    removals: Vec<LogicalId>,
    store_ops: Vec<StoreOp>,
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
    if st.mode != TransactionMode::ForWriting
        || !st.stores.values().any(super::TxnStore::is_changed)
    {
        return Ok(());
    }
    if st.started.elapsed() > st.max {
        return Err(Error::TransactionTimeout(st.max));
    }
    let shared = Arc::clone(&st.shared);
    let mut guard = shared.commit_lock()?;
    let ctx = &mut *guard;
    let cur = shared.state()?;
    validate(st, &cur)?;
    let batch = prepare(st, &cur)?;
    write_commit(&shared, ctx, &cur, batch, st.id)?;
    // The commit is durable and published: what follows is housekeeping, whose failure must
    // not turn an acknowledged commit into an error. It is recorded for `verify` and stats.
    if let Err(e) = crate::db::after_commit_hook(&shared, ctx) {
        shared.note_background_error(&e);
    }
    Ok(())
}

fn conflict(msg: String) -> Error {
    Error::Conflict(msg)
}

fn validate(st: &TxnState, cur: &DbState) -> Result<()> {
    for ts in st.stores.values() {
        match &ts.base {
            Some(base) => {
                let now = cur.stores.get(&base.name).filter(|m| m.id == base.id);
                let Some(now) = now else {
                    return Err(conflict(format!(
                        "store {} was removed by another transaction",
                        base.name
                    )));
                };
                if ts.count_read && now.count != base.count {
                    return Err(conflict(format!(
                        "the item count of store {} changed after this transaction read it",
                        base.name
                    )));
                }
                if ts.meta.root != base.root && now.root != base.root {
                    return Err(conflict(format!(
                        "the root of store {} was replaced by another transaction",
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
    for (id, s) in &st.seen {
        if cur.registry.get(*id).map(|e| e.version) != Some(s.version) {
            return Err(conflict(format!(
                "node {id} changed after this transaction read it"
            )));
        }
    }
    Ok(())
}

fn prepare(st: &mut TxnState, cur: &DbState) -> Result<Batch> {
    let shared = Arc::clone(&st.shared);
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
        match &ts.base {
            None => {
                let mut meta = ts.meta.clone();
                meta.root = ts.meta.root;
                b.store_ops.push(StoreOp::Create(meta));
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
                if root != now_root || count != now_count {
                    b.store_ops.push(StoreOp::Meta {
                        id: sid,
                        root,
                        count,
                    });
                }
            }
        }
    }
    Ok(b)
}

/// Writes a batch and its commit record, syncs, and publishes the new state.
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
    ctx.writer.sync(rec.seq)?;
    let mut next = cur.clone();
    let replaced = next.apply(&rec);
    ctx.space
        .on_commit(&replaced, &rec.updates, rec.seq, ctx.writer.position().0);
    let next = Arc::new(next);
    shared.publish(Arc::clone(&next))?;
    for (im, (_, e)) in b.images.iter().zip(&rec.updates) {
        if let Some(n) = &im.node {
            shared.cache.insert(e.loc, Arc::clone(n));
        }
    }
    Ok(next)
}

/// Moves the live records of segment `seg` to the head of the log (same versions), so the
/// segment holds nothing live and can be deleted.
pub(crate) fn relocate(shared: &Shared, ctx: &mut CommitCtx, seg: u32) -> Result<()> {
    let cur = shared.state()?;
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
    Ok(())
}
