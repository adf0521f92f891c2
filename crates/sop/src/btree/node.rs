//! B+tree nodes: the in-memory form and the hand-written byte layout.
//!
//! ```text
//! node body:   kind u8 (1 leaf, 2 internal) | count varint | entries
//! leaf item:   key (varint len + bytes) | item id u128 | tag u8
//!              tag 0: value (varint len + bytes)        -- value inside the node
//!              tag 1: blob logical id u64 | len varint   -- value in a separate blob
//! internal:    count separators (key + item id u128), then count+1 child logical ids u64
//! ```
//!
//! Invariants (checked by [`Node::decode`] and by `verify`):
//! - leaf items are strictly increasing in the store's order;
//! - an internal node with `n` separators has `n + 1` children; child `i` holds items below
//!   separator `i`, child `i + 1` items at or above it;
//! - nodes carry no parent or sibling pointers: cursors keep the path they walked.

use std::sync::Arc;

use crate::codec::{DecodeError, Reader, Writer};
use crate::registry::LogicalId;

/// Identity of an item, stable for its life; tells duplicates apart. The high 64 bits come from
/// a database-wide counter (reserved in blocks per transaction: newer items of a transaction
/// have larger ids), the low 64 bits tell processes apart.
pub type ItemId = u128;

/// Bytes of a key kept inside the item itself (no heap allocation, no pointer to chase when
/// comparing).
const INLINE_KEY: usize = 22;

/// An encoded key: short keys inline, longer ones on the heap.
///
/// Invariant: an inline key's bytes past `len` are zero (every constructor goes through
/// [`KeyBuf::new`]); prefix loads and equality rely on it.
#[derive(Clone)]
pub enum KeyBuf {
    /// Up to 22 bytes, inline.
    Inline {
        /// Length.
        len: u8,
        /// Bytes (the first `len` are the key).
        data: [u8; INLINE_KEY],
    },
    /// Longer keys.
    Heap(Box<[u8]>),
}

impl KeyBuf {
    /// A copy of `b`.
    #[must_use]
    pub fn new(b: &[u8]) -> Self {
        if b.len() <= INLINE_KEY {
            let mut data = [0u8; INLINE_KEY];
            data[..b.len()].copy_from_slice(b);
            KeyBuf::Inline {
                len: b.len() as u8,
                data,
            }
        } else {
            KeyBuf::Heap(b.into())
        }
    }

    /// The first 16 bytes as a big-endian number, zero-padded (see [`super::probe_prefix`]):
    /// inline keys are stored zero-padded, so this is two loads, no copy.
    #[inline]
    #[must_use]
    pub fn prefix16(&self) -> u128 {
        match self {
            KeyBuf::Inline { data, .. } => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&data[..16]);
                u128::from_le_bytes(b).swap_bytes()
            }
            KeyBuf::Heap(b) => super::probe_prefix(b),
        }
    }

    /// Bytes `from..from + 8` of the key as a big-endian number, zero-padded (as
    /// `word8` of `key[from..]`): one load for an inline key, whose bytes past its
    /// length are zero.
    #[inline]
    #[must_use]
    pub fn word_at(&self, from: usize) -> u64 {
        match self {
            KeyBuf::Inline { data, .. } if from + 8 <= INLINE_KEY => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[from..from + 8]);
                u64::from_le_bytes(b).swap_bytes()
            }
            _ => super::word8(self.get(from..).unwrap_or_default()),
        }
    }

    /// True when the key is `k` (short keys compared as two numbers, without memcmp).
    #[inline]
    #[must_use]
    pub fn is(&self, k: &[u8]) -> bool {
        match self {
            KeyBuf::Inline { len, .. } if k.len() <= 16 => {
                usize::from(*len) == k.len() && self.prefix16() == super::probe_prefix(k)
            }
            _ => **self == *k,
        }
    }

    /// The bytes as a vector.
    #[must_use]
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            KeyBuf::Heap(b) => b.into_vec(),
            KeyBuf::Inline { .. } => self.to_vec(),
        }
    }
}

impl std::ops::Deref for KeyBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            KeyBuf::Inline { len, data } => &data[..usize::from(*len)],
            KeyBuf::Heap(b) => b,
        }
    }
}

impl PartialEq for KeyBuf {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            // Inline keys are zero-padded (as `prefix16` relies on too): compare the arrays,
            // no call into memcmp.
            (KeyBuf::Inline { len: a, data: x }, KeyBuf::Inline { len: b, data: y }) => {
                a == b && x == y
            }
            _ => **self == **other,
        }
    }
}

impl Eq for KeyBuf {}

impl std::fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl From<&[u8]> for KeyBuf {
    fn from(b: &[u8]) -> Self {
        KeyBuf::new(b)
    }
}

impl From<Vec<u8>> for KeyBuf {
    fn from(b: Vec<u8>) -> Self {
        if b.len() <= INLINE_KEY {
            KeyBuf::new(&b)
        } else {
            KeyBuf::Heap(b.into_boxed_slice())
        }
    }
}

/// Bytes of a value kept inside the item itself.
const SMALL_VALUE: usize = 22;

/// The bytes of a value kept in its node: small values inside the item (no allocation, no
/// pointer to chase), larger ones shared (copying a node on write copies no value bytes).
///
/// Larger values come in two forms. A value given to a transaction is one allocation of its
/// own ([`InlineValue::Shared`]). The larger values of a leaf read from the log, or written
/// whole at commit, are ranges of one buffer for the whole leaf ([`InlineValue::Packed`], see
/// [`Node::packed`]): copying that leaf on write, and dropping it, then updates one reference
/// count, on one cache line, instead of one per value, each on a line of its own (ADR 0007).
///
/// Invariant: a packed value's range lies inside its buffer (every constructor is in this
/// module and takes the range from the buffer it builds).
#[derive(Clone)]
pub enum InlineValue {
    /// Up to 22 bytes.
    Small {
        /// Length.
        len: u8,
        /// Bytes (the first `len` are the value).
        data: [u8; SMALL_VALUE],
    },
    /// Larger values, one allocation each.
    Shared(Arc<[u8]>),
    /// A larger value inside the buffer shared by the values of one leaf.
    Packed {
        /// The leaf's buffer.
        buf: Arc<[u8]>,
        /// Where the value starts in `buf`.
        off: u32,
        /// Its length.
        len: u16,
    },
}

impl InlineValue {
    /// A copy of `b`.
    #[must_use]
    pub fn new(b: &[u8]) -> Self {
        if b.len() <= SMALL_VALUE {
            let mut data = [0u8; SMALL_VALUE];
            data[..b.len()].copy_from_slice(b);
            InlineValue::Small {
                len: b.len() as u8,
                data,
            }
        } else {
            InlineValue::Shared(Arc::from(b))
        }
    }
}

impl InlineValue {
    /// True when both are the same shared bytes (same allocation and range): equal without
    /// reading them.
    #[must_use]
    #[inline]
    pub fn same_shared(&self, other: &InlineValue) -> bool {
        match (self, other) {
            (InlineValue::Shared(a), InlineValue::Shared(b)) => Arc::ptr_eq(a, b),
            (
                InlineValue::Packed { buf: a, off: x, .. },
                InlineValue::Packed { buf: b, off: y, .. },
            ) => x == y && Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// True for a value that [`Node::packed`] would copy into a leaf's buffer.
    fn packable(&self) -> bool {
        match self {
            InlineValue::Small { .. } => false,
            InlineValue::Shared(b) => b.len() <= PACKED_MAX,
            InlineValue::Packed { .. } => true,
        }
    }
}

/// The longest value kept in a leaf's shared buffer; longer ones keep their own allocation.
const PACKED_MAX: usize = u16::MAX as usize;

impl std::ops::Deref for InlineValue {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            InlineValue::Small { len, data } => &data[..usize::from(*len)],
            InlineValue::Shared(b) => b,
            InlineValue::Packed { buf, off, len } => {
                let at = *off as usize;
                &buf[at..at + usize::from(*len)]
            }
        }
    }
}

impl PartialEq for InlineValue {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for InlineValue {}

impl std::fmt::Debug for InlineValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl From<&[u8]> for InlineValue {
    fn from(b: &[u8]) -> Self {
        InlineValue::new(b)
    }
}

/// Where an item's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueRef {
    /// The bytes, inside the node.
    Inline(InlineValue),
    /// A committed (or already persisted) blob.
    Blob {
        /// Logical id of the blob.
        id: LogicalId,
        /// Value length.
        len: u64,
    },
    /// A separate-blob value of this transaction, written at commit.
    Pending(Arc<Vec<u8>>),
}

/// One key/value item of a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Encoded key.
    pub key: KeyBuf,
    /// Item id.
    pub id: ItemId,
    /// The value.
    pub value: ValueRef,
}

/// Flags byte of an encoded item or separator: the low 64 bits of its id follow explicitly
/// (they differ from the node's).
const OWN_LO: u8 = 0x80;
/// Flags byte: the value tag bits (0 inline, 1 blob).
const TAG_BITS: u8 = 0x7F;

/// The low 64 bits of an id: the part that tells processes apart (usually one per node).
#[must_use]
pub fn id_lo(id: ItemId) -> u64 {
    id as u64
}

/// The low id half a node is encoded against: the most common one among `ids` (the first of
/// equally common ones), so the fewest ids carry their own. Almost always every id of a node
/// has the same one.
fn node_lo(ids: impl Iterator<Item = ItemId> + Clone) -> u64 {
    let mut all = ids.clone().map(id_lo);
    let Some(first) = all.next() else {
        return 0;
    };
    if all.all(|lo| lo == first) {
        return first;
    }
    let mut counts: Vec<(u64, usize)> = Vec::new();
    for lo in ids.map(id_lo) {
        match counts.iter_mut().find(|(l, _)| *l == lo) {
            Some((_, n)) => *n += 1,
            None => counts.push((lo, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
    counts
        .iter()
        .find(|(_, n)| *n == best)
        .map_or(first, |(lo, _)| *lo)
}

/// Appends an id as `hi varint | flags | [lo u64]` against the node's `lo`.
fn put_id(w: &mut Writer, id: ItemId, lo: u64, tag: u8) {
    w.varint((id >> 64) as u64);
    if id_lo(id) == lo {
        w.u8(tag);
    } else {
        w.u8(tag | OWN_LO);
        w.u64(id_lo(id));
    }
}

/// Reads what [`put_id`] wrote: the id and the tag bits.
fn get_id(r: &mut Reader<'_>, lo: u64) -> Result<(ItemId, u8), DecodeError> {
    let hi = r.varint("item id")?;
    let flags = r.u8("item flags")?;
    let lo = if flags & OWN_LO != 0 {
        r.u64("item id low bits")?
    } else {
        lo
    };
    Ok(((u128::from(hi) << 64) | u128::from(lo), flags & TAG_BITS))
}

impl Item {
    /// True when its value would count among a leaf's loose values (those [`Node::packed`]
    /// would move into the leaf's buffer) as a new item: packable and not in a leaf's buffer.
    #[must_use]
    pub fn is_loose(&self) -> bool {
        matches!(&self.value, ValueRef::Inline(v) if v.packable() && !matches!(v, InlineValue::Packed { .. }))
    }

    /// Appends the byte form (as inside a leaf) against the node's `lo` (see [`id_lo`]): key,
    /// item id, value.
    pub fn encode(&self, w: &mut Writer, lo: u64) {
        if let (
            KeyBuf::Inline { len: kl, data: kd },
            ValueRef::Inline(InlineValue::Small { len: vl, data: vd }),
        ) = (&self.key, &self.value)
        {
            self.encode_small(w, lo, (usize::from(*kl), kd), (usize::from(*vl), vd));
        } else {
            self.encode_general(w, lo);
        }
    }

    /// [`Item::encode`] of an item whose key and value are both inline: the byte form is
    /// put together on the stack with fixed-size copies of the zero-padded arrays (no copy
    /// of a run-time length, no capacity check per byte), then appended at once. Byte for
    /// byte what [`Item::encode_general`] writes.
    #[inline]
    fn encode_small(
        &self,
        w: &mut Writer,
        lo: u64,
        (kl, kd): (usize, &[u8; INLINE_KEY]),
        (vl, vd): (usize, &[u8; SMALL_VALUE]),
    ) {
        // Lengths below 128 are one varint byte; the widest form is 1 + 22 + 10 (hi varint)
        // + 1 + 8 + 1 + 22 = 65 bytes.
        const _: () = assert!(INLINE_KEY < 128 && SMALL_VALUE < 128);
        let mut buf = [0u8; 72];
        buf[0] = kl as u8;
        buf[1..1 + INLINE_KEY].copy_from_slice(kd);
        let mut n = 1 + kl;
        let mut hi = (self.id >> 64) as u64;
        while hi >= 0x80 {
            buf[n] = (hi as u8) | 0x80;
            hi >>= 7;
            n += 1;
        }
        buf[n] = hi as u8;
        n += 1;
        if id_lo(self.id) == lo {
            buf[n] = 0;
            n += 1;
        } else {
            buf[n] = OWN_LO;
            buf[n + 1..n + 9].copy_from_slice(&id_lo(self.id).to_le_bytes());
            n += 9;
        }
        buf[n] = vl as u8;
        buf[n + 1..n + 1 + SMALL_VALUE].copy_from_slice(vd);
        n += 1 + vl;
        w.raw(&buf[..n]);
    }

    /// [`Item::encode`] of any item.
    fn encode_general(&self, w: &mut Writer, lo: u64) {
        w.bytes(&self.key);
        match &self.value {
            ValueRef::Inline(v) => {
                put_id(w, self.id, lo, 0);
                w.bytes(v);
            }
            ValueRef::Blob { id, len } => {
                put_id(w, self.id, lo, 1);
                w.u64(*id);
                w.varint(*len);
            }
            // The commit path turns every pending value into a blob first.
            ValueRef::Pending(v) => {
                put_id(w, self.id, lo, 0);
                w.bytes(v);
            }
        }
    }

    /// Bytes of the byte form, about (exact up to varint lengths and ids from other
    /// processes).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        6 + self.key.len()
            + match &self.value {
                ValueRef::Inline(v) => 1 + v.len(),
                ValueRef::Blob { .. } => 11,
                ValueRef::Pending(v) => 3 + v.len(),
            }
    }

    /// Decodes what [`Item::encode`] wrote (with the same `lo`).
    pub fn decode(r: &mut Reader<'_>, lo: u64) -> Result<Item, DecodeError> {
        Item::decode_with(r, lo, InlineValue::new)
    }

    /// [`Item::decode`], with `inline` making the value of an item whose value is in the
    /// node from its bytes.
    fn decode_with<'a>(
        r: &mut Reader<'a>,
        lo: u64,
        inline: impl FnOnce(&'a [u8]) -> InlineValue,
    ) -> Result<Item, DecodeError> {
        let key = r.bytes("item key")?.into();
        let (id, tag) = get_id(r, lo)?;
        let value = match tag {
            0 => ValueRef::Inline(inline(r.bytes("inline value")?)),
            1 => ValueRef::Blob {
                id: r.u64("blob id")?,
                len: r.varint("blob length")?,
            },
            _ => {
                return Err(DecodeError {
                    at: r.pos(),
                    what: "unknown value tag",
                });
            }
        };
        Ok(Item { key, id, value })
    }
}

/// Decodes `n` leaf items from `r` (see [`Item::decode`]), their larger values packed into
/// one buffer (see [`InlineValue`]): one allocation for the leaf's values, not one per value.
fn decode_leaf_items(r: &mut Reader<'_>, n: usize, lo: u64) -> Result<Vec<Item>, DecodeError> {
    let body = r.input();
    let mut items = Vec::with_capacity(n);
    // (item, start in `body`, length) of each value to pack.
    let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
    let mut total = 0usize;
    for i in 0..n {
        let mut to_pack = 0;
        let item = Item::decode_with(r, lo, |v| {
            if v.len() <= SMALL_VALUE || v.len() > PACKED_MAX {
                return InlineValue::new(v);
            }
            to_pack = v.len();
            InlineValue::new(&[])
        })?;
        if to_pack > 0 {
            // The value is the last field of an item: it ends where the reader is now.
            ranges.push((i, r.pos() - to_pack, to_pack));
            total += to_pack;
        }
        items.push(item);
    }
    if ranges.is_empty() {
        return Ok(items);
    }
    if u32::try_from(total).is_err() {
        // Too large to address with packed offsets: one allocation per value.
        for (i, start, len) in ranges {
            items[i].value =
                ValueRef::Inline(InlineValue::Shared(Arc::from(&body[start..start + len])));
        }
        return Ok(items);
    }
    let mut packer = Packer::new(
        total,
        ranges
            .iter()
            .map(|&(_, start, len)| &body[start..start + len]),
    );
    for (i, _, _) in ranges {
        items[i].value = ValueRef::Inline(packer.next());
    }
    Ok(items)
}

/// One buffer holding values back to back, handing out each one's packed form in turn: the
/// only maker of [`InlineValue::Packed`], so every range lies inside its buffer.
struct Packer {
    buf: Arc<[u8]>,
    /// Start and end of each value, in order.
    bounds: std::vec::IntoIter<(u32, u16)>,
}

impl Packer {
    /// Copies `values` (`total` bytes in all, below 4 GiB; each at most [`PACKED_MAX`]) into
    /// one buffer.
    fn new<'a>(total: usize, values: impl Iterator<Item = &'a [u8]>) -> Packer {
        let mut bytes = Vec::with_capacity(total);
        let mut bounds = Vec::new();
        for v in values {
            bounds.push((bytes.len() as u32, v.len() as u16));
            bytes.extend_from_slice(v);
        }
        debug_assert!(u32::try_from(bytes.len()).is_ok());
        Packer {
            buf: Arc::from(bytes),
            bounds: bounds.into_iter(),
        }
    }

    /// The next value, in the order given to [`Packer::new`] (an empty value past the last).
    fn next(&mut self) -> InlineValue {
        debug_assert!(self.bounds.len() > 0, "more values taken than packed");
        match self.bounds.next() {
            Some((off, len)) => InlineValue::Packed {
                buf: Arc::clone(&self.buf),
                off,
                len,
            },
            None => InlineValue::new(&[]),
        }
    }
}

// Items are moved around in leaves on every insert and removal: keep them at one cache line.
const _: () = assert!(std::mem::size_of::<Item>() == 64);

/// A separator of an internal node: a (key, id) bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sep {
    /// Key.
    pub key: KeyBuf,
    /// Item id (only compared in stores with duplicate keys).
    pub id: ItemId,
}

/// A node.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    /// Items in order.
    Leaf(Vec<Item>),
    /// Separators and children.
    Internal {
        /// `n` separators.
        seps: Vec<Sep>,
        /// `n + 1` children.
        children: Vec<LogicalId>,
    },
}

impl Clone for Node {
    fn clone(&self) -> Self {
        match self {
            Node::Leaf(items) => Node::Leaf(copy_items(items, 0)),
            Node::Internal { seps, children } => Node::Internal {
                seps: seps.clone(),
                children: children.clone(),
            },
        }
    }
}

/// A copy of a leaf's items, with room for `room` more: the items' bytes copied at once, then
/// the handles among them (a long key's box, a value's shared buffer) cloned in place.
///
/// Cloning item by item moves each 64-byte item through the stack and costs ~20 ns an item
/// even when nothing in it is shared: 1.3 µs for a leaf of 70, a fifth of a batched insert's
/// time, paid once per leaf a transaction changes (ADR 0011). One copy of the
/// bytes and a pass over the handles costs a fifth of that for small values; the reference
/// counts of shared values remain, one atomic increment each.
fn copy_items(src: &[Item], room: usize) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::with_capacity(src.len() + room);
    extend_copied(&mut out, src);
    out
}

/// Appends a copy of `src` to `out` as [`copy_items`] copies (the bytes at once, then the
/// handles cloned in place).
#[allow(unsafe_code)]
pub fn extend_copied(out: &mut Vec<Item>, src: &[Item]) {
    out.reserve(src.len());
    let len = out.len();
    // SAFETY: after `reserve`, `out` has room for `src.len()` items past its length, and
    // `out` and `src` are distinct allocations (`out` is borrowed mutably, `src` shared).
    // After the copy every item past the length is a bitwise duplicate of one in `src`: its
    // plain fields are valid copies, and its handles alias the source's without owning
    // anything. The loop below gives each aliasing handle its own ownership, writing over it
    // with `ptr::write` (the alias is not dropped) or taking one more reference count for it,
    // so that once the length is set every new item of `out` owns exactly what a `clone`
    // would own. The length is set only after the loop: if a clone in it panicked, `out`
    // would not drop the copies and only leak the counts taken.
    // The destructuring and the matches below name every field and variant (no wildcard),
    // so a handle added to `Item`, `KeyBuf` or `ValueRef` fails to compile here rather than
    // be copied without being counted.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
        for (i, it) in src.iter().enumerate() {
            let Item { key, id: _, value } = it;
            match key {
                KeyBuf::Inline { .. } => {}
                KeyBuf::Heap(b) => {
                    std::ptr::write(&raw mut (*dst.add(i)).key, KeyBuf::Heap(b.clone()));
                }
            }
            match value {
                ValueRef::Inline(InlineValue::Small { .. }) | ValueRef::Blob { .. } => {}
                ValueRef::Inline(InlineValue::Shared(a) | InlineValue::Packed { buf: a, .. }) => {
                    Arc::increment_strong_count(Arc::as_ptr(a));
                }
                ValueRef::Pending(a) => Arc::increment_strong_count(Arc::as_ptr(a)),
            }
        }
        out.set_len(len + src.len());
    }
}

const LEAF: u8 = 1;
const INTERNAL: u8 = 2;

/// The value of `it` if [`Node::packed`] would copy it into the leaf's buffer.
fn packable(it: &Item) -> Option<&InlineValue> {
    match &it.value {
        ValueRef::Inline(v) if v.packable() => Some(v),
        _ => None,
    }
}

/// Of a leaf's packable values: how many lie outside the buffer the first packed one is in,
/// and their total length.
fn pack_census(items: &[Item]) -> (usize, usize) {
    let mut census = LooseCensus::default();
    items.iter().for_each(|it| census.add(it));
    (census.loose, census.total)
}

/// [`pack_census`] one item at a time (for walks of a leaf that do more).
#[derive(Default)]
pub(crate) struct LooseCensus<'a> {
    /// The buffer of the first packed value seen.
    common: Option<&'a Arc<[u8]>>,
    /// Packable values outside `common`.
    pub loose: usize,
    /// Total length of the packable values.
    pub total: usize,
}

impl<'a> LooseCensus<'a> {
    /// Counts the next item of the leaf.
    pub fn add(&mut self, it: &'a Item) {
        let Some(v) = packable(it) else {
            return;
        };
        self.total += v.len();
        match (v, self.common) {
            (InlineValue::Packed { buf, .. }, None) => self.common = Some(buf),
            (InlineValue::Packed { buf, .. }, Some(c)) if Arc::ptr_eq(buf, c) => {}
            _ => self.loose += 1,
        }
    }
}

impl Node {
    /// Number of items (leaf) or separators (internal).
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Node::Leaf(items) => items.len(),
            Node::Internal { seps, .. } => seps.len(),
        }
    }

    /// True for a leaf or internal node with nothing in it.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy to change, with room for a few more entries (the first inserts into a copied
    /// node do not reallocate it).
    #[must_use]
    pub fn to_changed(&self) -> Node {
        fn with_room<T: Clone>(v: &[T]) -> Vec<T> {
            let mut out = Vec::with_capacity(v.len() + 2);
            out.extend_from_slice(v);
            out
        }
        match self {
            Node::Leaf(items) => Node::Leaf(copy_items(items, 2)),
            Node::Internal { seps, children } => Node::Internal {
                seps: with_room(seps),
                children: with_room(children),
            },
        }
    }

    /// A copy of this leaf, changed, with `item` inserted at `pos` (at the end past it); an
    /// internal node is copied unchanged.
    #[must_use]
    pub fn with_inserted(&self, pos: usize, item: Item) -> Node {
        let mut n = self.to_changed();
        if let Node::Leaf(items) = &mut n {
            items.insert(pos.min(items.len()), item);
        }
        n
    }

    /// A copy of this leaf, changed, without its item at `pos` (an internal node, or a
    /// position past the end, is copied unchanged).
    #[must_use]
    pub fn with_removed(&self, pos: usize) -> Node {
        let mut n = self.to_changed();
        if let Node::Leaf(items) = &mut n
            && pos < items.len()
        {
            items.remove(pos);
        }
        n
    }

    /// A copy of a leaf whose larger values are ranges of one new buffer (see
    /// [`InlineValue`]), or `None` when that gains too little: not a leaf, or fewer than
    /// `min_loose` (at least one) values outside the buffer the others are in.
    ///
    /// The commit path caches this copy of a leaf it writes, so later copies on write of the
    /// leaf, and its drop, touch one reference count instead of one per value.
    #[must_use]
    pub fn packed(&self, min_loose: usize) -> Option<Node> {
        let Node::Leaf(items) = self else {
            return None;
        };
        let (loose, total) = pack_census(items);
        if loose < min_loose.max(1) || u32::try_from(total).is_err() {
            return None;
        }
        let mut packer = Packer::new(total, items.iter().filter_map(packable).map(|v| &**v));
        // Room for the inserts that come before the leaf is packed again.
        let mut packed = Vec::with_capacity(items.len() + min_loose.max(1));
        packed.extend(items.iter().map(|it| {
            let value = match packable(it) {
                Some(_) => ValueRef::Inline(packer.next()),
                None => it.value.clone(),
            };
            Item {
                key: it.key.clone(),
                id: it.id,
                value,
            }
        }));
        Some(Node::Leaf(packed))
    }

    /// Approximate memory footprint (for the cache's weigher).
    #[must_use]
    pub fn weight(&self) -> u64 {
        let n = match self {
            Node::Leaf(items) => items
                .iter()
                .map(|i| {
                    48 + i.key.len()
                        + match &i.value {
                            ValueRef::Inline(v) => v.len(),
                            _ => 16,
                        }
                })
                .sum::<usize>(),
            Node::Internal { seps, children } => {
                seps.iter().map(|s| 32 + s.key.len()).sum::<usize>() + children.len() * 8
            }
        };
        (n + 64) as u64
    }

    /// Appends the byte form.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Node::Leaf(items) => {
                w.u8(LEAF);
                w.varint(items.len() as u64);
                if !items.is_empty() {
                    let lo = node_lo(items.iter().map(|i| i.id));
                    w.u64(lo);
                    for it in items {
                        it.encode(w, lo);
                    }
                }
            }
            Node::Internal { seps, children } => {
                w.u8(INTERNAL);
                w.varint(seps.len() as u64);
                if !seps.is_empty() {
                    let lo = node_lo(seps.iter().map(|s| s.id));
                    w.u64(lo);
                    for s in seps {
                        w.bytes(&s.key);
                        put_id(w, s.id, lo, 0);
                    }
                }
                for c in children {
                    w.u64(*c);
                }
            }
        }
    }

    /// Decodes a node body. Structural checks only; ordering is checked by `verify`.
    pub fn decode(b: &[u8]) -> Result<Node, DecodeError> {
        let mut r = Reader::new(b);
        let node = match r.u8("node kind")? {
            LEAF => {
                let n = r.count(4, "leaf item count")?;
                let lo = if n > 0 { r.u64("node id low bits")? } else { 0 };
                Node::Leaf(decode_leaf_items(&mut r, n, lo)?)
            }
            INTERNAL => {
                let n = r.count(11, "separator count")?;
                let lo = if n > 0 { r.u64("node id low bits")? } else { 0 };
                let mut seps = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = r.bytes("separator key")?.into();
                    let (id, tag) = get_id(&mut r, lo)?;
                    if tag != 0 {
                        return Err(DecodeError {
                            at: r.pos(),
                            what: "separator flags hold unknown bits",
                        });
                    }
                    seps.push(Sep { key, id });
                }
                if r.remaining() != (n + 1) * 8 {
                    return Err(DecodeError {
                        at: r.pos(),
                        what: "internal node child count does not match separators",
                    });
                }
                let mut children = Vec::with_capacity(n + 1);
                for _ in 0..=n {
                    children.push(r.u64("child id")?);
                }
                Node::Internal { seps, children }
            }
            _ => {
                return Err(DecodeError {
                    at: 0,
                    what: "unknown node kind",
                });
            }
        };
        r.finish("trailing bytes in node")?;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_against_the_most_common_low_half() {
        let item = |k: u8, lo: u64| Item {
            key: vec![k].into(),
            id: (u128::from(k) << 64) | u128::from(lo),
            value: ValueRef::Inline(InlineValue::new(b"v")),
        };
        // The first item is the odd one out: the others must not pay for it.
        let odd_first = Node::Leaf(vec![item(1, 9), item(2, 5), item(3, 5), item(4, 5)]);
        let same = Node::Leaf(vec![item(1, 5), item(2, 5), item(3, 5), item(4, 5)]);
        let (mut a, mut b) = (Writer::default(), Writer::default());
        odd_first.encode(&mut a);
        same.encode(&mut b);
        assert_eq!(a.buf.len(), b.buf.len() + 8);
        assert_eq!(Node::decode(&a.buf).as_ref(), Ok(&odd_first));
        // A tie takes the first of the most common.
        assert_eq!(node_lo([1u128, 2, 2, 1].into_iter()), 1);
        assert_eq!(node_lo(std::iter::empty()), 0);
    }

    proptest::proptest! {
        #[test]
        fn word_at_is_word8_of_the_rest(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            from in 0usize..45,
        ) {
            let want = super::super::word8(key.get(from..).unwrap_or_default());
            proptest::prop_assert_eq!(KeyBuf::new(&key).word_at(from), want);
        }

        // The stack-built form of small items is the general form, byte for byte.
        #[test]
        fn small_items_encode_as_the_general_form(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=22),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=22),
            hi in proptest::prelude::any::<u64>(),
            own in proptest::prelude::any::<u64>(),
            same_lo in proptest::prelude::any::<bool>(),
        ) {
            let lo = if same_lo { own } else { own ^ 1 };
            let item = Item {
                key: KeyBuf::new(&key),
                id: (u128::from(hi) << 64) | u128::from(own),
                value: ValueRef::Inline(InlineValue::new(&value)),
            };
            let (mut fast, mut general) = (Writer::default(), Writer::default());
            item.encode(&mut fast, lo);
            item.encode_general(&mut general, lo);
            proptest::prop_assert_eq!(&fast.buf, &general.buf);
            let mut r = Reader::new(&fast.buf);
            proptest::prop_assert_eq!(Item::decode(&mut r, lo), Ok(item));
        }
    }

    /// The buffers the larger inline values of a leaf are in: `(packed, shared)` counts of
    /// values, and the distinct packed buffers.
    fn homes(node: &Node) -> (usize, usize, usize) {
        let Node::Leaf(items) = node else {
            panic!("not a leaf")
        };
        let (mut packed, mut shared) = (0, 0);
        let mut bufs: Vec<*const u8> = Vec::new();
        for it in items {
            match &it.value {
                ValueRef::Inline(InlineValue::Packed { buf, .. }) => {
                    packed += 1;
                    if !bufs.contains(&buf.as_ptr()) {
                        bufs.push(buf.as_ptr());
                    }
                }
                ValueRef::Inline(InlineValue::Shared(_)) => shared += 1,
                _ => {}
            }
        }
        (packed, shared, bufs.len())
    }

    // `copy_items` copies the items' bytes at once and then takes ownership of each handle:
    // a copy equals the original, owns one more count of every shared value and its own
    // long keys, and dropping either leaves the other whole.
    #[test]
    fn a_copied_leaf_owns_what_a_clone_would() {
        let shared: Arc<[u8]> = Arc::from(vec![6u8; 300]);
        let pending = Arc::new(vec![8u8; 77]);
        let long_key = vec![5u8; 40];
        let mut items = vec![
            Item {
                key: KeyBuf::new(b"a"),
                id: 1,
                value: ValueRef::Inline(InlineValue::new(b"small")),
            },
            Item {
                key: KeyBuf::new(&long_key),
                id: 2,
                value: ValueRef::Inline(InlineValue::Shared(Arc::clone(&shared))),
            },
            Item {
                key: KeyBuf::new(b"c"),
                id: 3,
                value: ValueRef::Blob {
                    id: 9,
                    len: 1 << 20,
                },
            },
            Item {
                key: KeyBuf::new(&[7u8; 30]),
                id: 4,
                value: ValueRef::Pending(Arc::clone(&pending)),
            },
        ];
        // Two values packed into one buffer.
        let Some(Node::Leaf(packed)) = Node::Leaf(vec![
            Item {
                key: KeyBuf::new(b"e"),
                id: 5,
                value: ValueRef::Inline(InlineValue::new(&[1; 100])),
            },
            Item {
                key: KeyBuf::new(b"f"),
                id: 6,
                value: ValueRef::Inline(InlineValue::new(&[2; 60])),
            },
        ])
        .packed(1) else {
            panic!("two shared values pack")
        };
        let ValueRef::Inline(InlineValue::Packed { buf, .. }) = &packed[0].value else {
            panic!("packed")
        };
        let buf = Arc::clone(buf);
        items.extend(packed);
        let leaf = Node::Leaf(items);
        let counts = || {
            (
                Arc::strong_count(&shared),
                Arc::strong_count(&pending),
                Arc::strong_count(&buf),
            )
        };
        assert_eq!(counts(), (2, 2, 3));
        let insert = |n: &Node| {
            n.with_inserted(
                1,
                Item {
                    key: KeyBuf::new(b"b"),
                    id: 0,
                    value: ValueRef::Inline(InlineValue::new(b"new")),
                },
            )
        };
        let copies: [&dyn Fn(&Node) -> Node; 3] = [&Node::clone, &Node::to_changed, &insert];
        for make in copies {
            let copy = make(&leaf);
            assert_eq!(counts(), (3, 3, 5));
            let (Node::Leaf(a), Node::Leaf(b)) = (&leaf, &copy) else {
                panic!("leaves")
            };
            assert!(b.capacity() >= b.len());
            // The long keys are boxes of their own, the shared values the same buffers.
            let heap = |it: &Item| match &it.key {
                KeyBuf::Heap(k) => k.as_ptr(),
                KeyBuf::Inline { .. } => std::ptr::null(),
            };
            let b: Vec<&Item> = b.iter().filter(|it| it.id != 0).collect();
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x, *y);
                if matches!(x.key, KeyBuf::Heap(_)) {
                    assert_ne!(heap(x), heap(y));
                }
            }
            drop(copy);
            assert_eq!(counts(), (2, 2, 3));
        }
        // Appended after items already there, twice over.
        let Node::Leaf(items) = &leaf else {
            panic!("leaf")
        };
        let mut twice = vec![items[0].clone()];
        extend_copied(&mut twice, items);
        extend_copied(&mut twice, &items[1..]);
        assert_eq!(counts(), (4, 4, 7));
        assert_eq!(twice.len(), 2 * items.len());
        assert_eq!(&twice[1..=items.len()], &items[..]);
        assert_eq!(&twice[items.len() + 1..], &items[1..]);
        drop(twice);
        drop(leaf);
        assert_eq!(counts(), (1, 1, 1));
    }

    fn leaf_of(values: &[Vec<u8>]) -> Node {
        Node::Leaf(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| Item {
                    key: vec![i as u8, 7].into(),
                    id: i as u128 + 1,
                    value: if v.is_empty() {
                        ValueRef::Blob {
                            id: 40 + i as u64,
                            len: 1 << 20,
                        }
                    } else {
                        ValueRef::Inline(InlineValue::new(v))
                    },
                })
                .collect(),
        )
    }

    #[test]
    fn a_leaf_packs_its_larger_values_into_one_buffer() {
        // Small (inside the item), larger, a blob (empty here), and one too long to pack.
        let values = vec![
            b"small".to_vec(),
            vec![1; 100],
            Vec::new(),
            vec![2; 23],
            vec![3; PACKED_MAX + 1],
            vec![4; 5000],
        ];
        let leaf = leaf_of(&values);
        assert_eq!(homes(&leaf), (0, 4, 0));
        let packed = leaf.packed(1).expect("a leaf of shared values packs");
        // The same items, byte for byte; three values in one buffer, the longest on its own.
        assert_eq!(packed, leaf);
        assert_eq!(homes(&packed), (3, 1, 1));
        // Packing again gains nothing; internal nodes have no values.
        assert!(packed.packed(1).is_none());
        let internal = Node::Internal {
            seps: Vec::new(),
            children: vec![1],
        };
        assert!(internal.packed(1).is_none());
        // A value added later (its own allocation) makes the leaf worth packing again, into
        // one buffer.
        let Node::Leaf(mut items) = packed.to_changed() else {
            unreachable!()
        };
        items.push(Item {
            key: vec![200].into(),
            id: 99,
            value: ValueRef::Inline(InlineValue::new(&[9; 64])),
        });
        let grown = Node::Leaf(items);
        assert_eq!(homes(&grown), (3, 2, 1));
        // One value outside the buffer: packed only when one is enough.
        assert!(grown.packed(2).is_none());
        let again = grown.packed(1).expect("a new shared value packs");
        assert_eq!(again, grown);
        assert_eq!(homes(&again), (4, 1, 1));
        // Nothing but small values and blobs: nothing to pack.
        assert!(leaf_of(&[b"a".to_vec(), Vec::new()]).packed(1).is_none());
    }

    #[test]
    fn a_decoded_leaf_keeps_its_larger_values_in_one_buffer() {
        let values: Vec<Vec<u8>> = (0..40u8)
            .map(|i| vec![i; usize::from(i) * 7])
            .chain([vec![5; PACKED_MAX + 1], Vec::new()])
            .collect();
        let leaf = leaf_of(&values);
        let mut w = Writer::default();
        leaf.encode(&mut w);
        let decoded = Node::decode(&w.buf).expect("decodes");
        assert_eq!(decoded, leaf);
        // 1..=3 are up to 21 bytes (inside the item), 0 is empty, 36 more are packed.
        assert_eq!(homes(&decoded), (36, 1, 1));
        assert!(decoded.packed(1).is_none());
        // Same bytes in the same buffer: the delta diff's shortcut takes them as equal.
        let Node::Leaf(items) = &decoded else {
            unreachable!()
        };
        let copy = items.clone();
        assert!(
            items
                .iter()
                .zip(&copy)
                .all(|(a, b)| match (&a.value, &b.value) {
                    (ValueRef::Inline(x), ValueRef::Inline(y)) if x.len() > SMALL_VALUE =>
                        x.same_shared(y),
                    _ => true,
                })
        );
        assert!(!InlineValue::new(&[1; 30]).same_shared(&InlineValue::new(&[1; 30])));
    }

    #[test]
    fn round_trip_and_truncations_fail() {
        let leaf = Node::Leaf(vec![
            Item {
                key: b"a".to_vec().into(),
                id: 7,
                value: ValueRef::Inline(InlineValue::new(b"xyz")),
            },
            Item {
                key: b"b".to_vec().into(),
                id: 8,
                value: ValueRef::Blob { id: 99, len: 1000 },
            },
            Item {
                key: b"c".to_vec().into(),
                id: (u128::from(u64::MAX) << 64) | 7,
                value: ValueRef::Inline(InlineValue::new(&[5; 40])),
            },
        ]);
        let internal = Node::Internal {
            seps: vec![
                Sep {
                    key: b"m".to_vec().into(),
                    id: 3,
                },
                Sep {
                    key: b"n".to_vec().into(),
                    id: (9 << 64) | 4,
                },
            ],
            children: vec![4, 5, 6],
        };
        for node in [leaf, internal] {
            let mut w = Writer::default();
            node.encode(&mut w);
            assert_eq!(Node::decode(&w.buf).as_ref(), Ok(&node));
            for cut in 0..w.buf.len() {
                assert!(Node::decode(&w.buf[..cut]).is_err());
            }
        }
    }
}
