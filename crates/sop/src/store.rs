//! Store handles: [`RawBtree`] (byte keys and values) and the typed [`Btree<K, V>`] over it.
//!
//! A handle belongs to one transaction and has its own cursor (SOP's model): `find`, `first`,
//! `next`... move it, `current_*` read under it, `update_current_*` / `remove_current_item`
//! change the item under it. Range iteration ([`RawBtree::range`], [`Btree::range`]) is the
//! idiomatic alternative: a double-ended iterator of `Result` items.
//!
//! Behaviour follows SOP's observed semantics: `add` of an existing key in a unique store
//! returns `false` (and positions the cursor on the existing item); `find` of a missing key
//! returns `false` and leaves the cursor on the next greater item, or on the last item when the
//! key is past the end; `update`/`remove` of a missing key return `false`; `count` includes
//! the transaction's own changes; duplicates iterate newest first.

use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use crate::btree::{self, InlineValue, Item, ItemId, Node, Pos, Seek, ValueRef};
use crate::error::{Error, Result};
use crate::log::record::{self, ImageId, Kind, image_prefix};
use crate::options::{TransactionMode, ValuePlacement};
use crate::state::StoreId;
use crate::txn::access::Access;
use crate::txn::nodes::{NewBlob, TxnNodes};
use crate::txn::{CursorState, StoreInfo, TxnState, info_of, lock};
use crate::types::{Key, Value};

/// An item with raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawItem {
    /// Encoded key.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Item id.
    pub id: ItemId,
}

/// An item of a typed store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreItem<K, V> {
    /// Key.
    pub key: K,
    /// Value.
    pub value: V,
    /// Item id.
    pub id: ItemId,
}

/// The working context of one operation: the store's node view and the handle's cursor.
struct Ctx<'a> {
    nodes: TxnNodes<'a>,
    cursor: &'a mut CursorState,
    mode: TransactionMode,
    /// Counts write operations of the transaction (range iterators drop read-ahead items
    /// when it moves).
    mods: &'a AtomicU64,
}

/// Calls `f` with the first item with `key` (recording the point read); `None` when absent.
fn with_first<R>(
    c: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut Ctx<'_>, &Item) -> Result<R>,
) -> Result<Option<R>> {
    c.read_point(key);
    let shape = c.shape();
    let root = c.root();
    match btree::lookup(&mut c.nodes, &shape, root, key)? {
        btree::Lookup::Found(leaf, idx) => match &*leaf {
            Node::Leaf(items) => match items.get(idx) {
                Some(i) => f(c, i).map(Some),
                None => Ok(None),
            },
            Node::Internal { .. } => Ok(None),
        },
        btree::Lookup::Absent => Ok(None),
        btree::Lookup::Ambiguous => {
            let Some(p) = c.seek(key, ItemId::MAX, Seek::Ge)? else {
                return Ok(None);
            };
            match p.item() {
                Some(i) if c.nodes.store.shape.order.keys(&i.key, key) == Ordering::Equal => {
                    f(c, i).map(Some)
                }
                _ => Ok(None),
            }
        }
    }
}

/// Calls `f` with the key, id and value of the first item with `key` (recording the point
/// read; a value in a separate blob is read first); `None` when absent. Stores of unique keys
/// in byte order take a path that copies nothing.
fn with_first_value<R>(
    c: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&[u8], ItemId, &[u8]) -> R,
) -> Result<Option<R>> {
    if !c.nodes.store.shape.plain() {
        return with_first(c, key, |c, it| match &it.value {
            ValueRef::Inline(v) => Ok(f(&it.key, it.id, v)),
            ValueRef::Pending(v) => Ok(f(&it.key, it.id, v)),
            blob @ ValueRef::Blob { .. } => Ok(f(&it.key, it.id, &c.read_value(blob)?)),
        });
    }
    c.read_point(key);
    let root = c.root();
    let mut f = Some(f);
    let got = c.nodes.get_plain(root, key, |it| match &it.value {
        ValueRef::Inline(v) => Ok(f.take().map(|f| f(&it.key, it.id, v))),
        ValueRef::Pending(v) => Ok(f.take().map(|f| f(&it.key, it.id, v))),
        blob @ ValueRef::Blob { .. } => Err((blob.clone(), it.id)),
    })?;
    match got {
        None => Ok(None),
        Some(Ok(r)) => Ok(r),
        Some(Err((blob, id))) => {
            let v = c.read_value(&blob)?;
            Ok(f.take().map(|f| f(key, id, &v)))
        }
    }
}

fn item_with_key(c: &mut Ctx<'_>, key: &[u8]) -> Result<Option<RawItem>> {
    with_first_value(c, key, |k, id, v| RawItem {
        value: v.to_vec(),
        key: k.to_vec(),
        id,
    })
}

fn with<R>(
    txn: &Mutex<TxnState>,
    store: StoreId,
    cursor: usize,
    f: impl FnOnce(&mut Ctx<'_>) -> Result<R>,
) -> Result<R> {
    let mut guard = lock(txn)?;
    guard.check_active()?;
    let st = &mut *guard;
    let mode = st.mode;
    let ts = st
        .stores
        .get_mut(&store)
        .filter(|s| !s.dropped)
        .ok_or_else(|| {
            Error::StoreNotFound(format!("store #{store} was removed in this transaction"))
        })?;
    let mut spare = CursorState::default();
    let cursor = st.cursors.get_mut(cursor).unwrap_or(&mut spare);
    let track = mode == TransactionMode::ForWriting;
    let mut ctx = Ctx {
        nodes: TxnNodes {
            shared: &st.shared,
            snapshot: &st.snapshot,
            store: ts,
            seen: &mut st.seen,
            track,
        },
        cursor,
        mode,
        mods: &st.mods,
    };
    f(&mut ctx)
}

impl Ctx<'_> {
    fn writable(&self) -> Result<()> {
        if self.mode == TransactionMode::ForWriting {
            // Writers hold the transaction's lock, so a plain increment loses nothing (range
            // iterators only load it); a read-modify-write would cost a locked instruction.
            let n = self.mods.load(AtomicOrdering::Relaxed);
            self.mods.store(n + 1, AtomicOrdering::Relaxed);
            Ok(())
        } else {
            Err(Error::ReadOnlyTransaction(self.mode.name()))
        }
    }

    fn shape(&self) -> btree::Shape {
        self.nodes.store.shape.clone()
    }

    fn root(&self) -> u64 {
        self.nodes.store.meta.root
    }

    fn set_cursor(&mut self, pos: Option<Pos>) {
        match pos {
            Some(p) => {
                self.cursor.current = p.item().map(|i| (i.key.clone(), i.id));
                self.cursor.pos = Some((p, self.nodes.store.changes));
            }
            None => {
                self.cursor.current = None;
                self.cursor.pos = None;
            }
        }
    }

    fn seek(&mut self, key: &[u8], id: ItemId, how: Seek) -> Result<Option<Pos>> {
        let shape = self.shape();
        let root = self.root();
        btree::seek(&mut self.nodes, &shape, root, key, id, how)
    }

    /// The cursor's position, re-seeking after changes. `None` when there is no current item
    /// or it was removed.
    fn position(&mut self) -> Result<Option<Pos>> {
        if let Some((p, stamp)) = &self.cursor.pos
            && *stamp == self.nodes.store.changes
        {
            return Ok(Some(p.clone()));
        }
        let Some((k, id)) = self.cursor.current.clone() else {
            return Ok(None);
        };
        let shape = self.shape();
        let pos = self.seek(&k, id, Seek::Ge)?;
        let exact = pos.filter(|p| {
            p.item()
                .is_some_and(|i| shape.order.full(&i.key, i.id, &k, id) == Ordering::Equal)
        });
        if let Some(p) = &exact {
            self.cursor.pos = Some((p.clone(), self.nodes.store.changes));
        }
        Ok(exact)
    }

    fn current_item(&mut self) -> Result<Item> {
        let pos = self.position()?.ok_or(Error::NoCurrentItem)?;
        pos.item().cloned().ok_or(Error::NoCurrentItem)
    }

    fn read_value(&mut self, v: &ValueRef) -> Result<Vec<u8>> {
        match v {
            ValueRef::Inline(b) => Ok(b.to_vec()),
            ValueRef::Pending(b) => Ok(b.to_vec()),
            ValueRef::Blob { id, len } => {
                let entry = match self.nodes.store.new_blobs.get(id) {
                    Some(nb) => nb.entry,
                    None => self
                        .nodes
                        .snapshot
                        .registry
                        .get(*id)
                        .copied()
                        .ok_or_else(|| {
                            Error::corruption(
                                self.nodes.shared.files.dir(),
                                0,
                                format!("value blob {id} is not in the registry"),
                            )
                        })?,
                };
                let files = &self.nodes.shared.files;
                let rec = files.read(entry.loc)?;
                let bad =
                    |why: String| Error::corruption(files.path(entry.loc.seg), entry.loc.off, why);
                if rec.kind != Kind::Blob {
                    return Err(bad("registry points at a record that is not a blob".into()));
                }
                let (img, body) =
                    record::parse_image(rec.payload()).map_err(|e| bad(e.to_string()))?;
                if img.logical != *id || img.version != entry.version || body.len() as u64 != *len {
                    return Err(bad(format!(
                        "blob image {}/v{} does not match {id}/v{}",
                        img.logical, img.version, entry.version
                    )));
                }
                Ok(body.to_vec())
            }
        }
    }

    /// Makes a value reference for a new value per the store's placement.
    fn new_value(&mut self, value: &[u8]) -> Result<ValueRef> {
        match self.nodes.store.meta.options.value_placement {
            ValuePlacement::InNode => Ok(ValueRef::Inline(InlineValue::new(value))),
            ValuePlacement::SeparateBlob => Ok(ValueRef::Pending(Arc::new(value.to_vec()))),
            // Clustered mode writes values with the commit: a value written ahead would sit
            // unreferenced in a segment other processes may reclaim.
            ValuePlacement::ActivelyPersisted if self.nodes.shared.cluster.is_some() => {
                Ok(ValueRef::Pending(Arc::new(value.to_vec())))
            }
            ValuePlacement::ActivelyPersisted => {
                let shared = self.nodes.shared;
                let id = shared.new_logical()?;
                let store = self.nodes.store.meta.id;
                let prefix = image_prefix(ImageId {
                    store,
                    logical: id,
                    version: 1,
                });
                let loc = {
                    let mut ctx = shared.commit_lock()?;
                    let loc = ctx.writer.append(Kind::Blob, &[prefix.as_bytes(), value])?;
                    // Not referenced until commit: keep its segment from being reclaimed.
                    ctx.space.hold(loc.seg);
                    loc
                };
                self.nodes.store.new_blobs.insert(
                    id,
                    NewBlob {
                        entry: crate::registry::Entry {
                            loc,
                            base: crate::registry::Location::default(),
                            version: 1,
                            store,
                            chain: crate::registry::Chain::default(),
                        },
                    },
                );
                Ok(ValueRef::Blob {
                    id,
                    len: value.len() as u64,
                })
            }
        }
    }

    /// Forgets a value that is no longer referenced.
    fn drop_value(&mut self, v: &ValueRef) {
        if let ValueRef::Blob { id, .. } = v {
            match self.nodes.store.new_blobs.remove(id) {
                Some(nb) => {
                    if let Ok(mut ctx) = self.nodes.shared.commit_lock() {
                        ctx.space.release(nb.entry.loc.seg);
                    }
                }
                None => self.nodes.store.freed_blobs.push(*id),
            }
        }
    }

    /// The read/write set, when this transaction keeps one (`ForWriting`).
    fn access(&mut self) -> Option<&mut Access> {
        if self.nodes.track {
            Some(&mut self.nodes.store.access)
        } else {
            None
        }
    }

    fn read_point(&mut self, k: &[u8]) {
        if let Some(a) = self.access() {
            a.point(k);
        }
    }

    fn read_range(&mut self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) {
        if let Some(a) = self.access() {
            a.range(lo, hi);
        }
    }

    fn wrote(&mut self, k: &[u8]) {
        if let Some(a) = self.access() {
            a.wrote(k);
        }
    }

    /// Records a write that read its key first (an update or a removal). In stores of unique
    /// keys the written key is validated as a read too (see `txn::access`); with duplicates
    /// the read is recorded on its own.
    fn read_and_wrote(&mut self, k: &[u8]) {
        if !self.nodes.store.shape.order.unique {
            self.read_point(k);
        }
        self.wrote(k);
    }

    /// Records that the cursor moved from `from` (exclusive side unknown: included) to `pos`.
    fn read_span(&mut self, from: Bound<&[u8]>, pos: Option<&Pos>, forward: bool) {
        if !self.nodes.track {
            return;
        }
        let to = pos.and_then(Pos::item).map(|i| i.key.clone());
        let to = to.as_deref().map_or(Bound::Unbounded, Bound::Included);
        if forward {
            self.read_range(from, to)
        } else {
            self.read_range(to, from)
        }
    }

    fn add(&mut self, key: &[u8], value: &[u8], only_if_absent: bool) -> Result<bool> {
        self.writable()?;
        self.cursor.pos = None;
        if only_if_absent && !self.nodes.store.shape.order.unique && self.find(key)? {
            return Ok(false);
        }
        let id = self.nodes.store.new_item_id(self.nodes.shared);
        let v = self.new_value(value)?;
        // Only a blob written ahead needs forgetting when the add is refused: keep a copy of
        // that alone (copying an inline value costs more than it looks).
        let blob = matches!(v, ValueRef::Blob { .. }).then(|| v.clone());
        let shape = self.shape();
        let mut root = self.root();
        let item = Item {
            key: key.into(),
            id,
            value: v,
        };
        let added = btree::insert(&mut self.nodes, &shape, &mut root, item)?;
        self.nodes.store.meta.root = root;
        if added {
            self.nodes.store.meta.count += 1;
            // Unique keys: the written key counts as read (that it was absent). Duplicates:
            // adding one reads nothing.
            self.wrote(key);
            self.cursor.current = Some((key.into(), id));
        } else {
            // Adding read that the key exists (unique stores refuse the duplicate).
            self.read_point(key);
            if let Some(v) = &blob {
                self.drop_value(v);
            }
            let pos = self.seek(key, ItemId::MAX, Seek::Ge)?;
            self.set_cursor(pos);
        }
        Ok(added)
    }

    /// Positions on the first item with `key`, or the next greater item, or the last item.
    fn find(&mut self, key: &[u8]) -> Result<bool> {
        let pos = match self.seek(key, ItemId::MAX, Seek::Ge)? {
            Some(p) => Some(p),
            None => {
                let root = self.root();
                btree::last(&mut self.nodes, root)?
            }
        };
        let order = &self.nodes.store.shape.order;
        let found = pos
            .as_ref()
            .and_then(Pos::item)
            .is_some_and(|i| order.keys(&i.key, key) == Ordering::Equal);
        self.read_span(Bound::Included(key), pos.as_ref(), true);
        self.set_cursor(pos);
        Ok(found)
    }

    fn find_with_id(&mut self, key: &[u8], id: ItemId) -> Result<bool> {
        self.read_point(key);
        if self.nodes.store.shape.order.unique {
            let found = self.find(key)?;
            return Ok(found && self.cursor.current.as_ref().is_some_and(|(_, i)| *i == id));
        }
        let pos = self.seek(key, id, Seek::Ge)?;
        let order = self.nodes.store.shape.order.clone();
        let found = pos
            .as_ref()
            .and_then(Pos::item)
            .is_some_and(|i| order.full(&i.key, i.id, key, id) == Ordering::Equal);
        let pos = match pos {
            Some(p) => Some(p),
            None => {
                let root = self.root();
                btree::last(&mut self.nodes, root)?
            }
        };
        self.set_cursor(pos);
        Ok(found)
    }

    fn find_desc(&mut self, key: &[u8]) -> Result<bool> {
        let pos = match self.seek(key, 0, Seek::Le)? {
            Some(p) => Some(p),
            None => {
                let root = self.root();
                btree::first(&mut self.nodes, root)?
            }
        };
        let order = &self.nodes.store.shape.order;
        let found = pos
            .as_ref()
            .and_then(Pos::item)
            .is_some_and(|i| order.keys(&i.key, key) == Ordering::Equal);
        self.read_span(Bound::Included(key), pos.as_ref(), false);
        self.set_cursor(pos);
        Ok(found)
    }

    fn step(&mut self, forward: bool) -> Result<bool> {
        let cached = match &self.cursor.pos {
            Some((p, stamp)) if *stamp == self.nodes.store.changes => Some(p.clone()),
            _ => None,
        };
        let next = match (cached, self.cursor.current.clone()) {
            (Some(p), _) => {
                if forward {
                    btree::step_next(&mut self.nodes, p)?
                } else {
                    btree::step_prev(&mut self.nodes, p)?
                }
            }
            (None, Some((k, id))) => {
                self.seek(&k, id, if forward { Seek::Gt } else { Seek::Lt })?
            }
            (None, None) => return Ok(false),
        };
        if self.nodes.track
            && let Some((k, _)) = self.cursor.current.clone()
        {
            self.read_span(Bound::Included(&k), next.as_ref(), forward);
        }
        let moved = next.is_some();
        self.set_cursor(next);
        Ok(moved)
    }

    /// Replaces the value of the item under the cursor.
    fn set_current(&mut self, new_key: Option<&[u8]>, value: Option<&[u8]>) -> Result<bool> {
        self.writable()?;
        let Some(pos) = self.position()? else {
            return Ok(false);
        };
        self.cursor.pos = None;
        let Some(old) = pos.item().cloned() else {
            return Ok(false);
        };
        if let Some(k) = new_key
            && self.nodes.store.shape.order.keys(k, &old.key) != Ordering::Equal
        {
            return Err(Error::InvalidArgument(
                    "the new key does not compare equal to the current key: changing it would affect the order; remove and add instead".into(),
                ));
        }
        let new_value = match value {
            Some(v) => Some(self.new_value(v)?),
            None => None,
        };
        let (leaf_id, idx) = (pos.leaf_id, pos.idx);
        drop(pos);
        let node = btree::NodeStore::node_mut(&mut self.nodes, leaf_id)?;
        let Node::Leaf(items) = node else {
            return Ok(false);
        };
        let Some(it) = items.get_mut(idx) else {
            return Ok(false);
        };
        if let Some(k) = new_key {
            it.key = k.into();
        }
        let old_value = new_value.map(|v| std::mem::replace(&mut it.value, v));
        let key = it.key.clone();
        if let Some(ov) = old_value {
            self.drop_value(&ov);
        }
        self.read_and_wrote(&key);
        self.cursor.current = Some((key, old.id));
        Ok(true)
    }

    /// Removes the first item with `key`; the cursor is left without a current item.
    fn remove_key(&mut self, key: &[u8]) -> Result<bool> {
        self.set_cursor(None);
        let id = if self.nodes.store.shape.order.unique {
            // Ids are not compared in unique stores: the removal finds the item itself.
            ItemId::MAX
        } else {
            let pos = self.seek(key, ItemId::MAX, Seek::Ge)?;
            let order = &self.nodes.store.shape.order;
            match pos.as_ref().and_then(Pos::item) {
                Some(i) if order.keys(&i.key, key) == Ordering::Equal => i.id,
                _ => {
                    self.read_point(key);
                    return Ok(false);
                }
            }
        };
        let shape = self.shape();
        let mut root = self.root();
        let removed = btree::remove(&mut self.nodes, &shape, &mut root, key, id)?;
        self.nodes.store.meta.root = root;
        match removed {
            Some(r) => {
                self.nodes.store.meta.count = self.nodes.store.meta.count.saturating_sub(1);
                self.drop_value(&r.value);
                self.read_and_wrote(key);
                Ok(true)
            }
            None => {
                // The removal read that the key is absent.
                self.read_point(key);
                Ok(false)
            }
        }
    }

    fn remove_current(&mut self) -> Result<bool> {
        self.writable()?;
        let Some(pos) = self.position()? else {
            return Ok(false);
        };
        let Some((key, id)) = pos.item().map(|i| (i.key.clone(), i.id)) else {
            return Ok(false);
        };
        drop(pos);
        self.cursor.pos = None;
        let shape = self.shape();
        let mut root = self.root();
        let removed = btree::remove(&mut self.nodes, &shape, &mut root, &key, id)?;
        self.nodes.store.meta.root = root;
        let Some(removed) = removed else {
            return Ok(false);
        };
        self.nodes.store.meta.count = self.nodes.store.meta.count.saturating_sub(1);
        self.drop_value(&removed.value);
        self.read_and_wrote(&key);
        // The cursor moves to the item that followed.
        let next = self.seek(&key, id, Seek::Gt)?;
        self.set_cursor(next);
        Ok(true)
    }
}

/// A store of byte keys and byte values inside a transaction, with its own cursor.
#[derive(Debug)]
pub struct RawBtree {
    txn: Arc<Mutex<TxnState>>,
    store: StoreId,
    cursor: usize,
}

impl RawBtree {
    pub(crate) fn new(txn: Arc<Mutex<TxnState>>, st: &mut TxnState, store: StoreId) -> Self {
        // Most transactions open one handle: room for one cursor (a `CursorState` is a few
        // hundred bytes, and `push` would make room for four).
        if st.cursors.capacity() == 0 {
            st.cursors.reserve_exact(1);
        }
        st.cursors.push(CursorState::default());
        let cursor = st.cursors.len() - 1;
        RawBtree { txn, store, cursor }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Ctx<'_>) -> Result<R>) -> Result<R> {
        with(&self.txn, self.store, self.cursor, f)
    }

    /// Adds an item. In a unique store, returns `false` when the key exists (nothing changes
    /// and the cursor moves to the existing item); duplicates are always added.
    ///
    /// # Errors
    /// [`Error::ReadOnlyTransaction`], [`Error::TransactionClosed`], I/O errors.
    pub fn add(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.with(|c| c.add(key, value, false))
    }

    /// Adds an item only when no item has this key (also in stores with duplicates).
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn add_if_not_exist(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.with(|c| c.add(key, value, true))
    }

    /// Updates the first item with `key`, or adds one. Returns true.
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn upsert(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.with(|c| {
            c.writable()?;
            if c.find(key)? {
                c.set_current(None, Some(value))
            } else {
                c.add(key, value, false)
            }
        })
    }

    /// Replaces the value of the first item with `key`. Returns false when absent.
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn update(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.with(|c| {
            c.writable()?;
            if c.find(key)? {
                c.set_current(None, Some(value))
            } else {
                Ok(false)
            }
        })
    }

    /// Replaces the key bytes of the first item with `key` by `new_key`, which must compare
    /// equal to it (for keys that carry data beside their ordering fields, with a custom
    /// comparator). Returns false when absent.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `new_key` would change the order.
    pub fn update_key(&self, key: &[u8], new_key: &[u8]) -> Result<bool> {
        self.with(|c| {
            c.writable()?;
            if c.find(key)? {
                c.set_current(Some(new_key), None)
            } else {
                Ok(false)
            }
        })
    }

    /// Replaces the key of the item under the cursor (see [`RawBtree::update_key`]).
    ///
    /// # Errors
    /// As [`RawBtree::update_key`].
    pub fn update_current_key(&self, new_key: &[u8]) -> Result<bool> {
        self.with(|c| c.set_current(Some(new_key), None))
    }

    /// Replaces the value of the item under the cursor. Returns false when there is none.
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn update_current_value(&self, value: &[u8]) -> Result<bool> {
        self.with(|c| c.set_current(None, Some(value)))
    }

    /// Replaces key (order-neutral) and value of the item under the cursor.
    ///
    /// # Errors
    /// As [`RawBtree::update_key`].
    pub fn update_current_item(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.with(|c| c.set_current(Some(key), Some(value)))
    }

    /// Removes the first item with `key`. Returns false when absent. The cursor is left
    /// without a current item.
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn remove(&self, key: &[u8]) -> Result<bool> {
        self.with(|c| {
            c.writable()?;
            c.remove_key(key)
        })
    }

    /// Removes the item under the cursor; the cursor moves to the item that followed it.
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn remove_current_item(&self) -> Result<bool> {
        self.with(|c| c.remove_current())
    }

    /// Positions the cursor on the first item with `key` and returns true; when absent returns
    /// false with the cursor on the next greater item (or the last item). `first_item_with_key`
    /// is accepted for SOP compatibility: the cursor always lands on the first duplicate.
    ///
    /// # Errors
    /// I/O errors, [`Error::TransactionClosed`].
    pub fn find(&self, key: &[u8], first_item_with_key: bool) -> Result<bool> {
        let _ = first_item_with_key;
        self.with(|c| c.find(key))
    }

    /// Positions the cursor on the item with `key` and `id` (one of several duplicates).
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn find_with_id(&self, key: &[u8], id: ItemId) -> Result<bool> {
        self.with(|c| c.find_with_id(key, id))
    }

    /// Positions the cursor on the last item with `key` or the nearest smaller one, for
    /// iterating backwards with [`RawBtree::previous`]. True when `key` exists.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn find_in_descending_order(&self, key: &[u8]) -> Result<bool> {
        self.with(|c| c.find_desc(key))
    }

    /// Positions the cursor on the first item. False when the store is empty.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn first(&self) -> Result<bool> {
        self.with(|c| {
            let root = c.root();
            let p = btree::first(&mut c.nodes, root)?;
            let found = p.is_some();
            c.read_span(Bound::Unbounded, p.as_ref(), true);
            c.set_cursor(p);
            Ok(found)
        })
    }

    /// Positions the cursor on the last item. False when the store is empty.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn last(&self) -> Result<bool> {
        self.with(|c| {
            let root = c.root();
            let p = btree::last(&mut c.nodes, root)?;
            let found = p.is_some();
            c.read_span(Bound::Unbounded, p.as_ref(), false);
            c.set_cursor(p);
            Ok(found)
        })
    }

    /// Moves the cursor to the next item. False (and no current item) at the end.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn next(&self) -> Result<bool> {
        self.with(|c| c.step(true))
    }

    /// Moves the cursor to the previous item. False (and no current item) at the start.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn previous(&self) -> Result<bool> {
        self.with(|c| c.step(false))
    }

    /// Key and id of the item under the cursor.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn current_key(&self) -> Result<Option<(Vec<u8>, ItemId)>> {
        self.with(|c| match c.position()? {
            Some(p) => Ok(p.item().map(|i| (i.key.to_vec(), i.id))),
            None => Ok(None),
        })
    }

    /// Value of the item under the cursor.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn current_value(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.current_item()?.map(|i| i.value))
    }

    /// The item under the cursor.
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn current_item(&self) -> Result<Option<RawItem>> {
        self.with(|c| match c.current_item() {
            Ok(it) => {
                let value = c.read_value(&it.value)?;
                Ok(Some(RawItem {
                    key: it.key.to_vec(),
                    value,
                    id: it.id,
                }))
            }
            Err(Error::NoCurrentItem) => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// The value of the first item with `key` (does not move the cursor).
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|c| with_first_value(c, key, |_, _, v| v.to_vec()))
    }

    /// Calls `f` with the value of the first item with `key` without copying it (a value in
    /// a separate blob is read first); `None` when absent. Records the same read as
    /// [`RawBtree::get`].
    ///
    /// # Errors
    /// As [`RawBtree::get`].
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.with(|c| with_first_value(c, key, |_, _, v| f(v)))
    }

    /// The first item with `key` (the newest of duplicates): key, value and item id, without
    /// moving the cursor. Records the same read as [`RawBtree::get`].
    ///
    /// # Errors
    /// As [`RawBtree::get`].
    pub fn get_item(&self, key: &[u8]) -> Result<Option<RawItem>> {
        self.with(|c| item_with_key(c, key))
    }

    /// [`RawBtree::get_item`] for many keys under one lock of the transaction (batched
    /// lookups, e.g. from Python): one result per key, in order.
    ///
    /// # Errors
    /// As [`RawBtree::get`]; the first error ends the batch.
    pub fn get_items<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<Vec<Option<RawItem>>> {
        self.with(|c| keys.into_iter().map(|k| item_with_key(c, k)).collect())
    }

    /// True when an item has `key` (does not move the cursor).
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn contains_key(&self, key: &[u8]) -> Result<bool> {
        self.with(|c| {
            c.read_point(key);
            let p = c.seek(key, ItemId::MAX, Seek::Ge)?;
            Ok(p.as_ref()
                .and_then(Pos::item)
                .is_some_and(|i| c.nodes.store.shape.order.keys(&i.key, key) == Ordering::Equal))
        })
    }

    /// Number of items, including this transaction's changes.
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn count(&self) -> Result<u64> {
        self.with(|c| {
            c.nodes.store.count_read = true;
            Ok(c.nodes.store.meta.count)
        })
    }

    /// True for a store with unique keys.
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn is_unique(&self) -> Result<bool> {
        self.with(|c| Ok(c.nodes.store.shape.order.unique))
    }

    /// The store's name, options and count. Reading the count makes the transaction conflict
    /// with any concurrent commit that adds or removes items in the store; see
    /// [`RawBtree::options`].
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn info(&self) -> Result<StoreInfo> {
        let mut st = lock(&self.txn)?;
        st.check_active()?;
        info_of(&mut st, self.store, true)
    }

    /// The store's options (unlike [`RawBtree::info`], this does not read the item count, so
    /// it never makes the transaction conflict with concurrent writers of the store).
    ///
    /// # Errors
    /// [`Error::TransactionClosed`].
    pub fn options(&self) -> Result<crate::options::StoreOptions> {
        Ok(self.info_no_count()?.options)
    }

    /// The store's info without recording the count as read.
    pub(crate) fn info_no_count(&self) -> Result<StoreInfo> {
        let mut st = lock(&self.txn)?;
        st.check_active()?;
        info_of(&mut st, self.store, false)
    }

    /// Calls `f(key, value)` for the items with keys in (`lo`, `hi`), in order, without
    /// copying them (the fast way to scan), until `f` returns `false`. Returns how many items
    /// `f` saw. Holds the transaction for the whole scan (no cursor moves, no writes meanwhile).
    /// In a `ForWriting` transaction the keys scanned are recorded as read, as with a range
    /// iterator.
    ///
    /// # Errors
    /// As [`RawBtree::get`].
    pub fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<usize> {
        self.with(|c| {
            let root = c.root();
            let mut pos = match lo {
                Bound::Included(k) => c.seek(k, ItemId::MAX, Seek::Ge)?,
                Bound::Excluded(k) => c.seek(k, 0, Seek::Gt)?,
                Bound::Unbounded => btree::first(&mut c.nodes, root)?,
            };
            let order = c.nodes.store.shape.order.clone();
            let below_hi = |k: &[u8]| match hi {
                Bound::Included(h) => order.keys(k, h) != Ordering::Greater,
                Bound::Excluded(h) => order.keys(k, h) == Ordering::Less,
                Bound::Unbounded => true,
            };
            let mut seen = 0;
            let mut stopped: Option<Vec<u8>> = None;
            'leaves: while let Some(p) = pos {
                let leaf = Arc::clone(&p.leaf);
                let Node::Leaf(items) = &*leaf else {
                    break;
                };
                for it in items.get(p.idx..).unwrap_or_default() {
                    if !below_hi(&it.key) {
                        break 'leaves;
                    }
                    seen += 1;
                    let go_on = match &it.value {
                        ValueRef::Inline(v) => f(&it.key, v),
                        ValueRef::Pending(v) => f(&it.key, v),
                        blob @ ValueRef::Blob { .. } => {
                            let v = c.read_value(blob)?;
                            f(&it.key, &v)
                        }
                    };
                    if !go_on {
                        stopped = Some(it.key.to_vec());
                        break 'leaves;
                    }
                }
                let mut last = p;
                last.idx = items.len().saturating_sub(1);
                pos = btree::step_next(&mut c.nodes, last)?;
            }
            match &stopped {
                Some(k) => c.read_range(lo, Bound::Included(k)),
                None => c.read_range(lo, hi),
            }
            Ok(seen)
        })
    }

    /// Items with keys in `range`, in order; `.rev()` iterates backwards.
    #[must_use]
    pub fn range<R: RangeBounds<Vec<u8>>>(&self, range: R) -> RawRange {
        let mods = lock(&self.txn)
            .map(|st| Arc::clone(&st.mods))
            .unwrap_or_default();
        RawRange {
            txn: Arc::clone(&self.txn),
            mods,
            store: self.store,
            lo: range.start_bound().cloned(),
            hi: range.end_bound().cloned(),
            front: End::default(),
            back: End::default(),
            done: false,
        }
    }

    /// Every item, in order.
    #[must_use]
    pub fn iter(&self) -> RawRange {
        self.range::<std::ops::RangeFull>(..)
    }
}

/// One end of a range iteration: the furthest item it has claimed, its position, and the
/// items claimed but not yet returned (a leaf's worth is taken per lock of the transaction).
#[derive(Debug, Default)]
struct End {
    last: Option<(btree::KeyBuf, ItemId)>,
    pos: Option<(Pos, u64)>,
    buf: std::collections::VecDeque<RawItem>,
    /// The transaction's write counter when `buf` was filled.
    stamp: u64,
    /// The last item returned from this end.
    returned: Option<(btree::KeyBuf, ItemId)>,
}

impl End {
    /// Forgets read-ahead items: the next step continues after the last item returned.
    fn rewind(&mut self) {
        self.buf.clear();
        self.last = self.returned.clone();
        self.pos = None;
    }

    fn take(&mut self, from_back: bool) -> Option<RawItem> {
        if from_back {
            self.buf.pop_back()
        } else {
            self.buf.pop_front()
        }
    }
}

/// Most items one step of a range iterator takes from a leaf.
const RANGE_BATCH: usize = 64;

/// Iterator over a key range of a [`RawBtree`].
#[derive(Debug)]
pub struct RawRange {
    txn: Arc<Mutex<TxnState>>,
    mods: Arc<AtomicU64>,
    store: StoreId,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    front: End,
    back: End,
    done: bool,
}

impl RawRange {
    fn step(&mut self, forward: bool) -> Result<Option<RawItem>> {
        let stamp = self.mods.load(AtomicOrdering::Relaxed);
        let (lo, hi) = (&self.lo, &self.hi);
        let (me, other) = if forward {
            (&mut self.front, &self.back)
        } else {
            (&mut self.back, &self.front)
        };
        with(&self.txn, self.store, usize::MAX, |c| {
            let changes = c.nodes.store.changes;
            let cached = match me.pos.take() {
                Some((p, stamp)) if stamp == changes => Some(p),
                _ => None,
            };
            let next = match (cached, &me.last) {
                (Some(p), _) => {
                    if forward {
                        btree::step_next(&mut c.nodes, p)?
                    } else {
                        btree::step_prev(&mut c.nodes, p)?
                    }
                }
                (None, Some((k, id))) => {
                    c.seek(k, *id, if forward { Seek::Gt } else { Seek::Lt })?
                }
                (None, None) => {
                    let root = c.root();
                    match (forward, lo, hi) {
                        (true, Bound::Included(k), _) => c.seek(k, ItemId::MAX, Seek::Ge)?,
                        (true, Bound::Excluded(k), _) => c.seek(k, 0, Seek::Gt)?,
                        (true, Bound::Unbounded, _) => btree::first(&mut c.nodes, root)?,
                        (false, _, Bound::Included(k)) => c.seek(k, 0, Seek::Le)?,
                        (false, _, Bound::Excluded(k)) => c.seek(k, ItemId::MAX, Seek::Lt)?,
                        (false, _, Bound::Unbounded) => btree::last(&mut c.nodes, root)?,
                    }
                }
            };
            let from: Bound<Vec<u8>> = match &me.last {
                Some((k, _)) => Bound::Included(k.to_vec()),
                None if forward => lo.clone(),
                None => hi.clone(),
            };
            let end = if forward { hi } else { lo };
            let record_to_end = |c: &mut Ctx<'_>| {
                let (f, e) = (
                    from.as_ref().map(Vec::as_slice),
                    end.as_ref().map(Vec::as_slice),
                );
                if forward {
                    c.read_range(f, e)
                } else {
                    c.read_range(e, f)
                }
            };
            let Some(p) = next else {
                record_to_end(c);
                return Ok(None);
            };
            let Some(item) = p.item() else {
                record_to_end(c);
                return Ok(None);
            };
            let order = c.nodes.store.shape.order.clone();
            let takes = |item: &Item| {
                let inside = if forward {
                    match hi {
                        Bound::Included(h) => order.keys(&item.key, h) != Ordering::Greater,
                        Bound::Excluded(h) => order.keys(&item.key, h) == Ordering::Less,
                        Bound::Unbounded => true,
                    }
                } else {
                    match lo {
                        Bound::Included(l) => order.keys(&item.key, l) != Ordering::Less,
                        Bound::Excluded(l) => order.keys(&item.key, l) == Ordering::Greater,
                        Bound::Unbounded => true,
                    }
                };
                inside
                    && other.last.as_ref().is_none_or(|(k, id)| {
                        let o = order.full(&item.key, item.id, k, *id);
                        if forward {
                            o == Ordering::Less
                        } else {
                            o == Ordering::Greater
                        }
                    })
            };
            if !takes(item) {
                record_to_end(c);
                return Ok(None);
            }
            // Take this item and the following ones of the same leaf, up to a batch.
            let Node::Leaf(items) = &*p.leaf else {
                return Ok(None);
            };
            let mut idx = p.idx;
            while let Some(it) = items.get(idx) {
                let value = c.read_value(&it.value)?;
                me.buf.push_back(RawItem {
                    key: it.key.to_vec(),
                    value,
                    id: it.id,
                });
                me.last = Some((it.key.clone(), it.id));
                let next_idx = if forward {
                    idx.checked_add(1)
                } else {
                    idx.checked_sub(1)
                };
                match next_idx.and_then(|n| items.get(n).map(|it| (n, it))) {
                    Some((n, it)) if me.buf.len() < RANGE_BATCH && takes(it) => idx = n,
                    _ => break,
                }
            }
            let f = from.as_ref().map(Vec::as_slice);
            if let Some((k, _)) = &me.last {
                if forward {
                    c.read_range(f, Bound::Included(k));
                } else {
                    c.read_range(Bound::Included(k), f);
                }
            }
            let mut p = p;
            p.idx = idx;
            me.pos = Some((p, changes));
            me.stamp = stamp;
            Ok(me.buf.pop_front())
        })
    }
}

impl RawRange {
    /// Drops read-ahead items when the transaction wrote since they were read, so iteration
    /// continues on the changed store right after the last item returned.
    fn refresh(&mut self) {
        let now = self.mods.load(AtomicOrdering::Relaxed);
        let mut rewound = false;
        for end in [&mut self.front, &mut self.back] {
            if !end.buf.is_empty() && end.stamp != now {
                end.rewind();
                rewound = true;
            }
        }
        if rewound {
            self.done = false;
        }
    }

    fn next_from(&mut self, forward: bool) -> Option<Result<RawItem>> {
        self.refresh();
        let me = if forward {
            &mut self.front
        } else {
            &mut self.back
        };
        let mut item = me.take(false);
        if item.is_none() && !self.done {
            match self.step(forward) {
                Ok(Some(i)) => item = Some(i),
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        // The ends met: what is left was claimed by the other end and not yet returned.
        let item = match item {
            Some(i) => Some(i),
            None => {
                let other = if forward {
                    &mut self.back
                } else {
                    &mut self.front
                };
                other.take(true)
            }
        }?;
        let me = if forward {
            &mut self.front
        } else {
            &mut self.back
        };
        me.returned = Some((btree::KeyBuf::new(&item.key), item.id));
        Some(Ok(item))
    }
}

impl Iterator for RawRange {
    type Item = Result<RawItem>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_from(true)
    }
}

impl DoubleEndedIterator for RawRange {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.next_from(false)
    }
}

/// A typed store: keys through the order-preserving [`Key`] encoding, values through serde.
/// Every method mirrors the [`RawBtree`] one of the same name.
#[derive(Debug)]
pub struct Btree<K, V> {
    raw: RawBtree,
    _types: PhantomData<fn() -> (K, V)>,
}

fn enc<K: Key>(k: &K) -> Vec<u8> {
    let mut out = Vec::new();
    k.encode_key(&mut out);
    out
}

fn enc_value<V: Value>(v: &V) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    v.encode_value(&mut out)?;
    Ok(out)
}

impl<K: Key, V: Value> Btree<K, V> {
    pub(crate) fn wrap(raw: RawBtree) -> Self {
        Btree {
            raw,
            _types: PhantomData,
        }
    }

    /// The untyped handle underneath.
    #[must_use]
    pub fn raw(&self) -> &RawBtree {
        &self.raw
    }

    /// See [`RawBtree::add`].
    ///
    /// # Errors
    /// As [`RawBtree::add`]; [`Error::Encoding`] when the value does not serialize.
    pub fn add(&self, key: &K, value: &V) -> Result<bool> {
        self.raw.add(&enc(key), &enc_value(value)?)
    }
    /// See [`RawBtree::add_if_not_exist`].
    ///
    /// # Errors
    /// As [`Btree::add`].
    pub fn add_if_not_exist(&self, key: &K, value: &V) -> Result<bool> {
        self.raw.add_if_not_exist(&enc(key), &enc_value(value)?)
    }
    /// See [`RawBtree::upsert`].
    ///
    /// # Errors
    /// As [`Btree::add`].
    pub fn upsert(&self, key: &K, value: &V) -> Result<bool> {
        self.raw.upsert(&enc(key), &enc_value(value)?)
    }
    /// See [`RawBtree::update`].
    ///
    /// # Errors
    /// As [`Btree::add`].
    pub fn update(&self, key: &K, value: &V) -> Result<bool> {
        self.raw.update(&enc(key), &enc_value(value)?)
    }
    /// See [`RawBtree::update_key`].
    ///
    /// # Errors
    /// As [`RawBtree::update_key`].
    pub fn update_key(&self, key: &K, new_key: &K) -> Result<bool> {
        self.raw.update_key(&enc(key), &enc(new_key))
    }
    /// See [`RawBtree::update_current_key`].
    ///
    /// # Errors
    /// As [`RawBtree::update_key`].
    pub fn update_current_key(&self, new_key: &K) -> Result<bool> {
        self.raw.update_current_key(&enc(new_key))
    }
    /// See [`RawBtree::update_current_value`].
    ///
    /// # Errors
    /// As [`Btree::add`].
    pub fn update_current_value(&self, value: &V) -> Result<bool> {
        self.raw.update_current_value(&enc_value(value)?)
    }
    /// See [`RawBtree::update_current_item`].
    ///
    /// # Errors
    /// As [`RawBtree::update_key`].
    pub fn update_current_item(&self, key: &K, value: &V) -> Result<bool> {
        self.raw.update_current_item(&enc(key), &enc_value(value)?)
    }
    /// See [`RawBtree::remove`].
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn remove(&self, key: &K) -> Result<bool> {
        self.raw.remove(&enc(key))
    }
    /// See [`RawBtree::remove_current_item`].
    ///
    /// # Errors
    /// As [`RawBtree::add`].
    pub fn remove_current_item(&self) -> Result<bool> {
        self.raw.remove_current_item()
    }
    /// See [`RawBtree::find`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn find(&self, key: &K, first_item_with_key: bool) -> Result<bool> {
        self.raw.find(&enc(key), first_item_with_key)
    }
    /// See [`RawBtree::find_with_id`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn find_with_id(&self, key: &K, id: ItemId) -> Result<bool> {
        self.raw.find_with_id(&enc(key), id)
    }
    /// See [`RawBtree::find_in_descending_order`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn find_in_descending_order(&self, key: &K) -> Result<bool> {
        self.raw.find_in_descending_order(&enc(key))
    }
    /// See [`RawBtree::first`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn first(&self) -> Result<bool> {
        self.raw.first()
    }
    /// See [`RawBtree::last`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn last(&self) -> Result<bool> {
        self.raw.last()
    }
    /// See [`RawBtree::next`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    #[allow(clippy::should_implement_trait)]
    pub fn next(&self) -> Result<bool> {
        self.raw.next()
    }
    /// See [`RawBtree::previous`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn previous(&self) -> Result<bool> {
        self.raw.previous()
    }
    /// See [`RawBtree::current_key`].
    ///
    /// # Errors
    /// As [`RawBtree::find`]; [`Error::Encoding`] when stored bytes do not decode.
    pub fn current_key(&self) -> Result<Option<(K, ItemId)>> {
        match self.raw.current_key()? {
            Some((k, id)) => Ok(Some((K::decode_key(&k)?, id))),
            None => Ok(None),
        }
    }
    /// See [`RawBtree::current_value`].
    ///
    /// # Errors
    /// As [`Btree::current_key`].
    pub fn current_value(&self) -> Result<Option<V>> {
        match self.raw.current_value()? {
            Some(v) => Ok(Some(V::decode_value(&v)?)),
            None => Ok(None),
        }
    }
    /// See [`RawBtree::current_item`].
    ///
    /// # Errors
    /// As [`Btree::current_key`].
    pub fn current_item(&self) -> Result<Option<StoreItem<K, V>>> {
        match self.raw.current_item()? {
            Some(i) => Ok(Some(decode_item(i)?)),
            None => Ok(None),
        }
    }
    /// See [`RawBtree::get`].
    ///
    /// # Errors
    /// As [`Btree::current_key`].
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        match self.raw.get(&enc(key))? {
            Some(v) => Ok(Some(V::decode_value(&v)?)),
            None => Ok(None),
        }
    }
    /// See [`RawBtree::contains_key`].
    ///
    /// # Errors
    /// As [`RawBtree::find`].
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.raw.contains_key(&enc(key))
    }
    /// See [`RawBtree::count`].
    ///
    /// # Errors
    /// As [`RawBtree::count`].
    pub fn count(&self) -> Result<u64> {
        self.raw.count()
    }
    /// See [`RawBtree::is_unique`].
    ///
    /// # Errors
    /// As [`RawBtree::count`].
    pub fn is_unique(&self) -> Result<bool> {
        self.raw.is_unique()
    }
    /// See [`RawBtree::info`].
    ///
    /// # Errors
    /// As [`RawBtree::count`].
    pub fn info(&self) -> Result<StoreInfo> {
        self.raw.info()
    }
    /// Items with keys in `range`, in order; `.rev()` iterates backwards.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> Range<K, V> {
        let map = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(enc(k)),
            Bound::Excluded(k) => Bound::Excluded(enc(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        Range {
            raw: self
                .raw
                .range((map(range.start_bound()), map(range.end_bound()))),
            _types: PhantomData,
        }
    }
    /// Every item, in order.
    pub fn iter(&self) -> Range<K, V> {
        Range {
            raw: self.raw.iter(),
            _types: PhantomData,
        }
    }
}

fn decode_item<K: Key, V: Value>(i: RawItem) -> Result<StoreItem<K, V>> {
    Ok(StoreItem {
        key: K::decode_key(&i.key)?,
        value: V::decode_value(&i.value)?,
        id: i.id,
    })
}

/// Iterator over a key range of a [`Btree`].
#[derive(Debug)]
pub struct Range<K, V> {
    raw: RawRange,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key, V: Value> Iterator for Range<K, V> {
    type Item = Result<StoreItem<K, V>>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.raw.next()?.and_then(decode_item))
    }
}

impl<K: Key, V: Value> DoubleEndedIterator for Range<K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        Some(self.raw.next_back()?.and_then(decode_item))
    }
}
