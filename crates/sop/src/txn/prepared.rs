//! Item-level changes of a transaction, and prepared (phase-1 committed) transactions.
//!
//! A transaction's changes to a store are found by comparing its changed leaves with their
//! committed versions ([`diff`]): items added, removed, or set (value, or an order-neutral key
//! change). The same list serves two purposes:
//! - auto-merge: [`apply`] replays it on the current tree when other commits changed the
//!   nodes this transaction changed;
//! - two-phase commit: a prepared transaction's changes (with its read set, and values inline)
//!   are written durably in a *prepare record*, so a crash between the phases loses nothing: on
//!   reopen the transaction is listed as in doubt, and the application commits or aborts it.
//!
//! ```text
//! prepare payload: txn id u128 | participants (count varint, names) | stores (count varint):
//!   store id u32 | name | flags u8 (1 created, 2 dropped, 4 count read) | options JSON |
//!   points (count, keys) | ranges (count, (bound, bound)) | written (count, keys) |
//!   changes (count): tag u8 (1 add, 2 remove, 3 set) | key | item id u128 |
//!                    [add/set] value tag u8 (0 inline bytes, 1 committed blob id u64 + len varint)
//! bound: tag u8 (0 unbounded, 1 included, 2 excluded) [+ key]
//! ```

use std::ops::Bound;
use std::sync::Arc;

use super::access::Access;
use super::nodes::{TxnNodes, TxnStore, load_node};
use crate::btree::{self, InlineValue, Item, ItemId, KeyBuf, Node, NodeStore, Seek, ValueRef};
use crate::codec::{DecodeError, Reader, Writer};
use crate::db::Shared;
use crate::error::{Error, Result};
use crate::fasthash::FastMap;
use crate::options::{StoreOptions, ValuePlacement};
use crate::state::{DbState, StoreId};

/// One item-level change.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Add(Item),
    Remove(KeyBuf, ItemId),
    Set(Item),
}

/// The item changes of `ts` relative to `snapshot`, removes first, then sets, then adds.
pub(crate) fn diff(shared: &Shared, ts: &TxnStore, snapshot: &DbState) -> Result<Vec<Change>> {
    let sid = ts.meta.id;
    let mut old: FastMap<ItemId, Item> = FastMap::default();
    // A leaf whose only change is a pending insert or removal is the committed leaf itself
    // (see `Dirty`): that change is its whole diff, found without comparing its items.
    let touched = ts
        .dirty
        .iter()
        .filter(|(_, d)| d.base > 0 && !d.has_pending())
        .map(|(id, _)| *id)
        .chain(ts.freed.iter().copied());
    for id in touched {
        let node = match ts.originals.get(&id) {
            Some(n) => Arc::clone(n),
            None => load_node(shared, snapshot, sid, id)?.0,
        };
        if let Node::Leaf(items) = &*node {
            old.extend(items.iter().map(|i| (i.id, i.clone())));
        }
    }
    let mut changes = Vec::new();
    for d in ts.dirty.values() {
        if let Some(p) = d.pending_insert() {
            changes.push(Change::Add(p.item.clone()));
            continue;
        }
        if let Some(p) = d.pending_remove() {
            if let Some(it) = p.item() {
                changes.push(Change::Remove(it.key.clone(), it.id));
            }
            continue;
        }
        let node = d.current();
        if let Node::Leaf(items) = &*node {
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
    changes.sort_by_key(|c| match c {
        Change::Remove(..) => 0,
        Change::Set(_) => 1,
        Change::Add(_) => 2,
    });
    Ok(changes)
}

/// Applies `changes` to the tree of `ts` as of `cur` (its root and nodes), recording the
/// copy-on-write nodes in `ts`. With `free_old_values`, values the changes replace or remove
/// are freed (when the changes did not come from this process's own operations, which freed
/// them already). A change that cannot apply is a conflict.
pub(crate) fn apply(
    shared: &Shared,
    ts: &mut TxnStore,
    cur: &DbState,
    changes: Vec<Change>,
    free_old_values: bool,
) -> Result<()> {
    let name = ts.meta.name.clone();
    let shape = ts.shape.clone();
    let mut root = ts.meta.root;
    let mut seen = FastMap::default();
    let mut freed = Vec::new();
    let mut delta: i64 = 0;
    {
        let mut nodes = TxnNodes {
            shared,
            snapshot: cur,
            store: ts,
            seen: &mut seen,
            track: false,
        };
        let lost = |what: &str, key: &[u8]| {
            Error::Conflict(format!(
                "{what} item {:?} of store {name} could not be merged",
                String::from_utf8_lossy(key)
            ))
        };
        for c in changes {
            match c {
                Change::Remove(key, id) => {
                    match btree::remove(&mut nodes, &shape, &mut root, &key, id)? {
                        Some(old) => {
                            delta -= 1;
                            if let ValueRef::Blob { id, .. } = old.value {
                                freed.push(id);
                            }
                        }
                        None => return Err(lost("removed", &key)),
                    }
                }
                Change::Set(item) => {
                    let pos = btree::seek(&mut nodes, &shape, root, &item.key, item.id, Seek::Ge)?;
                    let Some(pos) = pos.filter(|p| p.item().is_some_and(|i| i.id == item.id))
                    else {
                        return Err(lost("updated", &item.key));
                    };
                    let (leaf, idx) = (pos.leaf_id, pos.idx);
                    drop(pos);
                    if let Node::Leaf(items) = nodes.node_mut(leaf)?
                        && let Some(slot) = items.get_mut(idx)
                    {
                        if let ValueRef::Blob { id, .. } = slot.value
                            && slot.value != item.value
                        {
                            freed.push(id);
                        }
                        *slot = item;
                    }
                }
                Change::Add(item) => {
                    let key = item.key.clone();
                    if !btree::insert(&mut nodes, &shape, &mut root, item)? {
                        return Err(lost("added", &key));
                    }
                    delta += 1;
                }
            }
        }
    }
    ts.meta.root = root;
    if free_old_values {
        ts.meta.count = (ts.meta.count as i64 + delta).max(0) as u64;
        ts.freed_blobs.extend(freed);
    }
    Ok(())
}

/// Replays the transaction's changes of `ts` on the current state (auto-merge).
pub(crate) fn replay(
    shared: &Shared,
    ts: &mut TxnStore,
    snapshot: &DbState,
    cur: &DbState,
) -> Result<()> {
    let changes = diff(shared, ts, snapshot)?;
    let base = ts
        .base
        .clone()
        .ok_or_else(|| Error::Conflict("store vanished".into()))?;
    let now = cur
        .stores
        .get(&base.name)
        .filter(|m| m.id == ts.meta.id)
        .cloned()
        .ok_or_else(|| {
            Error::Conflict(format!(
                "store {} was removed by another transaction",
                base.name
            ))
        })?;
    let delta = ts.meta.count as i128 - base.count as i128;
    ts.reshaped();
    ts.dirty.clear();
    ts.freed.clear();
    ts.originals.clear();
    ts.meta.root = now.root;
    ts.meta.count = (now.count as i128 + delta).max(0) as u64;
    ts.base = Some(now);
    apply(shared, ts, cur, changes, false)
}

/// One store of a prepared transaction.
#[derive(Debug, Clone)]
pub(crate) struct PreparedStore {
    pub id: StoreId,
    pub name: String,
    pub options: StoreOptions,
    pub created: bool,
    pub dropped: bool,
    pub count_read: bool,
    pub access: Access,
    pub changes: Vec<Change>,
}

/// A transaction that passed phase 1.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub txn_id: u128,
    pub participants: Vec<String>,
    pub stores: Vec<PreparedStore>,
}

fn put_bound(w: &mut Writer, b: &Bound<KeyBuf>) {
    match b {
        Bound::Unbounded => w.u8(0),
        Bound::Included(k) => {
            w.u8(1);
            w.bytes(k);
        }
        Bound::Excluded(k) => {
            w.u8(2);
            w.bytes(k);
        }
    }
}

fn get_bound(r: &mut Reader<'_>) -> Result<Bound<KeyBuf>, DecodeError> {
    Ok(match r.u8("bound tag")? {
        0 => Bound::Unbounded,
        1 => Bound::Included(KeyBuf::new(r.bytes("bound key")?)),
        2 => Bound::Excluded(KeyBuf::new(r.bytes("bound key")?)),
        _ => {
            return Err(DecodeError {
                at: r.pos(),
                what: "unknown bound tag",
            });
        }
    })
}

fn put_keys<'k>(w: &mut Writer, n: usize, keys: impl Iterator<Item = &'k [u8]>) {
    w.varint(n as u64);
    for k in keys {
        w.bytes(k);
    }
}

fn get_keys(r: &mut Reader<'_>) -> Result<Vec<KeyBuf>, DecodeError> {
    let n = r.count(1, "key count")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(KeyBuf::new(r.bytes("key")?));
    }
    Ok(v)
}

impl Prepared {
    /// Encodes the prepare record payload. `value` resolves a value reference to what is
    /// stored (inline bytes, or a committed blob).
    pub fn encode(&self, mut value: impl FnMut(&ValueRef) -> Result<ValueRef>) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        w.u128(self.txn_id);
        w.varint(self.participants.len() as u64);
        for p in &self.participants {
            w.bytes(p.as_bytes());
        }
        w.varint(self.stores.len() as u64);
        for s in &self.stores {
            w.u32(s.id);
            w.bytes(s.name.as_bytes());
            w.u8(u8::from(s.created) | (u8::from(s.dropped) << 1) | (u8::from(s.count_read) << 2));
            let opts =
                serde_json::to_vec(&s.options).map_err(|e| Error::Encoding(e.to_string()))?;
            w.bytes(&opts);
            put_keys(
                &mut w,
                s.access.points.len(),
                s.access.points.iter().map(|k| &k[..]),
            );
            w.varint(s.access.ranges.len() as u64);
            for (lo, hi) in &s.access.ranges {
                put_bound(&mut w, lo);
                put_bound(&mut w, hi);
            }
            put_keys(&mut w, s.access.written.len(), s.access.written.iter());
            w.varint(s.changes.len() as u64);
            for c in &s.changes {
                let (tag, key, id, v) = match c {
                    Change::Add(i) => (1, &i.key, i.id, Some(&i.value)),
                    Change::Remove(k, id) => (2, k, *id, None),
                    Change::Set(i) => (3, &i.key, i.id, Some(&i.value)),
                };
                w.u8(tag);
                w.bytes(key);
                w.u128(id);
                if let Some(v) = v {
                    match value(v)? {
                        ValueRef::Blob { id, len } => {
                            w.u8(1);
                            w.u64(id);
                            w.varint(len);
                        }
                        ValueRef::Inline(b) => {
                            w.u8(0);
                            w.bytes(&b);
                        }
                        ValueRef::Pending(b) => {
                            w.u8(0);
                            w.bytes(&b);
                        }
                    }
                }
            }
        }
        Ok(w.buf)
    }

    /// Decodes a prepare record payload.
    pub fn decode(b: &[u8]) -> Result<Prepared, DecodeError> {
        let mut r = Reader::new(b);
        let txn_id = r.u128("txn id")?;
        if txn_id == 0 {
            // A transaction's id is never 0 (a commit record's 0 decides nothing).
            return Err(DecodeError {
                at: 0,
                what: "prepared transaction id 0",
            });
        }
        let n = r.count(1, "participant count")?;
        let mut participants = Vec::with_capacity(n);
        for _ in 0..n {
            participants.push(String::from_utf8_lossy(r.bytes("participant")?).into_owned());
        }
        let n = r.count(8, "store count")?;
        let mut stores = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u32("store id")?;
            let name = String::from_utf8_lossy(r.bytes("store name")?).into_owned();
            let flags = r.u8("flags")?;
            let options: StoreOptions =
                serde_json::from_slice(r.bytes("options")?).map_err(|_| DecodeError {
                    at: r.pos(),
                    what: "store options are not valid JSON",
                })?;
            let points = get_keys(&mut r)?;
            let nr = r.count(2, "range count")?;
            let mut ranges = Vec::with_capacity(nr);
            for _ in 0..nr {
                ranges.push((get_bound(&mut r)?, get_bound(&mut r)?));
            }
            let written = get_keys(&mut r)?.into_iter().collect();
            let nc = r.count(18, "change count")?;
            let mut changes = Vec::with_capacity(nc);
            for _ in 0..nc {
                let tag = r.u8("change tag")?;
                let key = KeyBuf::new(r.bytes("change key")?);
                let id = r.u128("item id")?;
                let value = |r: &mut Reader<'_>| -> Result<ValueRef, DecodeError> {
                    Ok(match r.u8("value tag")? {
                        0 => {
                            let v = r.bytes("value")?.to_vec();
                            match options.value_placement {
                                ValuePlacement::InNode => ValueRef::Inline(InlineValue::new(&v)),
                                _ => ValueRef::Pending(Arc::new(v)),
                            }
                        }
                        1 => ValueRef::Blob {
                            id: r.u64("blob id")?,
                            len: r.varint("blob len")?,
                        },
                        _ => {
                            return Err(DecodeError {
                                at: r.pos(),
                                what: "unknown value tag",
                            });
                        }
                    })
                };
                changes.push(match tag {
                    1 => Change::Add(Item {
                        key,
                        id,
                        value: value(&mut r)?,
                    }),
                    2 => Change::Remove(key, id),
                    3 => Change::Set(Item {
                        key,
                        id,
                        value: value(&mut r)?,
                    }),
                    _ => {
                        return Err(DecodeError {
                            at: r.pos(),
                            what: "unknown change tag",
                        });
                    }
                });
            }
            stores.push(PreparedStore {
                id,
                name,
                options,
                created: flags & 1 != 0,
                dropped: flags & 2 != 0,
                count_read: flags & 4 != 0,
                access: Access {
                    points,
                    ranges,
                    written,
                },
                changes,
            });
        }
        r.finish("trailing bytes in prepare record")?;
        Ok(Prepared {
            txn_id,
            participants,
            stores,
        })
    }
}
