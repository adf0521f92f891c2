//! Leaf deltas: a leaf's new items written as an edit of a version before it.
//!
//! A commit that changes a few items of a large leaf writes this edit instead of the whole
//! leaf (ADR 0005): far fewer bytes to write and sync. The edit is over the version the commit
//! changed (a chain of deltas back to a full image, ADR 0008) or over the full image itself.
//! It is positional, so applying it needs no comparator:
//!
//! ```text
//! body: base item count varint | result item count varint | ops until the end:
//!   1 keep n varint    copy the next n items of the base
//!   2 drop n varint    skip the next n items of the base
//!   3 insert item      an item, encoded as inside a leaf, against the low id bits of the
//!                      first item of the version it edits (0 for an empty one)
//! the base items left after the last op are kept
//! ```
//!
//! Invariants: `apply(base, diff(base, new))` is exactly `new`, whatever the order (the diff
//! only emits an item of `new` as kept when it is equal to the base item, byte for byte);
//! `apply_chain(base, [d1, .., dn])` is `apply` over each version in turn, and an error names
//! the first delta that does not apply to the version before it; every count is checked
//! against the version edited and the bytes left before anything is allocated (at most the
//! base's items and a quarter of the bodies' bytes), so a damaged body is an error, never a
//! panic or an unbounded allocation.

use std::cmp::Ordering;

use super::{Item, Order, ValueRef};
use crate::codec::{DecodeError, Reader, Writer};

const KEEP: u8 = 1;
const DROP: u8 = 2;
const INSERT: u8 = 3;
/// Fewest bytes an inserted item takes (empty key, one-byte id, flags, empty value).
const MIN_ITEM: usize = 4;

/// The low id bits inserted items are encoded against.
fn context_lo(base: &[Item]) -> u64 {
    base.first().map_or(0, |i| super::node::id_lo(i.id))
}

/// Appends the edit from `base` to `new` to `w`. Returns false (and leaves `w` as it was)
/// when the edit would take more than `limit` bytes.
pub fn diff(order: &Order, base: &[Item], new: &[Item], limit: usize, w: &mut Writer) -> bool {
    let start = w.len();
    let lo = context_lo(base);
    w.varint(base.len() as u64);
    w.varint(new.len() as u64);
    let mut run: Option<(u8, u64)> = None;
    let (mut i, mut j) = (0, 0);
    loop {
        // Most items of a changed leaf are the base's, unchanged: count each run of them in a
        // tight loop.
        let k = base[i..]
            .iter()
            .zip(&new[j..])
            .take_while(|(a, b)| same(a, b))
            .count();
        if k > 0 {
            extend_run(w, &mut run, KEEP, k as u64);
            i += k;
            j += k;
        }
        let (drop, insert) = match (base.get(i), new.get(j)) {
            (None, None) => break,
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, true),
            (Some(a), Some(b)) => match order.full(&a.key, a.id, &b.key, b.id) {
                Ordering::Equal => (true, true),
                Ordering::Less => (true, false),
                Ordering::Greater => (false, true),
            },
        };
        if drop {
            extend_run(w, &mut run, DROP, 1);
            i += 1;
        }
        if insert {
            flush_run(w, &mut run);
            w.u8(INSERT);
            new[j].encode(w, lo);
            j += 1;
            if w.len() - start > limit {
                w.buf.truncate(start);
                return false;
            }
        }
    }
    // A trailing keep is implicit.
    if let Some((DROP, n)) = run {
        w.u8(DROP);
        w.varint(n);
    }
    if w.len() - start > limit {
        w.buf.truncate(start);
        return false;
    }
    true
}

/// Appends the edit that inserts `item` at position `pos` of `base` (what [`diff`] writes
/// for that change, without walking the leaf).
pub fn insert_one(base: &[Item], pos: usize, item: &Item, w: &mut Writer) {
    w.varint(base.len() as u64);
    w.varint(base.len() as u64 + 1);
    let pos = pos.min(base.len());
    if pos > 0 {
        w.u8(KEEP);
        w.varint(pos as u64);
    }
    w.u8(INSERT);
    item.encode(w, context_lo(base));
}

/// Appends the edit that removes the item at position `pos` of `base` (what [`diff`] writes
/// for that change, without walking the leaf).
pub fn remove_one(base: &[Item], pos: usize, w: &mut Writer) {
    w.varint(base.len() as u64);
    w.varint(base.len().saturating_sub(1) as u64);
    if pos > 0 {
        w.u8(KEEP);
        w.varint(pos as u64);
    }
    w.u8(DROP);
    w.varint(1);
}

/// Byte-for-byte the same item (a value shared with the base compares by pointer).
fn same(a: &Item, b: &Item) -> bool {
    a.id == b.id
        && a.key == b.key
        && match (&a.value, &b.value) {
            (ValueRef::Inline(x), ValueRef::Inline(y)) if x.same_shared(y) => true,
            (x, y) => x == y,
        }
}

fn extend_run(w: &mut Writer, run: &mut Option<(u8, u64)>, op: u8, by: u64) {
    match run {
        Some((o, n)) if *o == op => *n += by,
        _ => {
            flush_run(w, run);
            *run = Some((op, by));
        }
    }
}

fn flush_run(w: &mut Writer, run: &mut Option<(u8, u64)>) {
    if let Some((op, n)) = run.take() {
        w.u8(op);
        w.varint(n);
    }
}

fn bad(r: &Reader<'_>, what: &'static str) -> DecodeError {
    DecodeError { at: r.pos(), what }
}

/// Applies an edit written by [`diff`] to the base image's items.
///
/// # Errors
/// A body that does not match `base` or is damaged (see [`apply_chain`]).
pub fn apply(base: &[Item], body: &[u8]) -> Result<Vec<Item>, DecodeError> {
    apply_chain(base, std::iter::once(body)).map_err(|(_, e)| e)
}

/// Applies a chain of edits written by [`diff`], oldest first, over the base image's items:
/// the items of the chain's newest version, as [`apply`] over each version in turn would
/// make them. Each edit moves indices (of base items, or of items an edit of the chain
/// inserted) rather than items, and every item of the result is cloned once, at the end: a
/// cold read of a leaf with a deep chain does not rebuild the leaf once per delta.
///
/// # Errors
/// The position in `bodies` of the first edit that does not match the version before it
/// (its counts, its runs) or is damaged, with what is wrong.
pub fn apply_chain<'a>(
    base: &[Item],
    bodies: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Item>, (usize, DecodeError)> {
    let mut inserted: Vec<Option<Item>> = Vec::new();
    let mut cur: Vec<usize> = (0..base.len()).collect();
    let mut next: Vec<usize> = Vec::new();
    let mut last = 0;
    for (k, body) in bodies.into_iter().enumerate() {
        edit(base, &mut inserted, &cur, body, &mut next).map_err(|e| (k, e))?;
        std::mem::swap(&mut cur, &mut next);
        last = k;
    }
    // Within a version every index is distinct (an edit keeps each index of the version
    // before it at most once, and a new item gets a new one): each inserted item is taken
    // once, and the error below cannot happen (it stands in for a panic). Runs of the base's
    // items are copied a run at a time (see `node::extend_copied`).
    let mut out = Vec::with_capacity(cur.len());
    let mut i = 0;
    while let Some(&at) = cur.get(i) {
        if at < base.len() {
            let run = cur[i..]
                .iter()
                .zip(at..base.len())
                .take_while(|(c, b)| **c == *b)
                .count();
            super::node::extend_copied(&mut out, &base[at..at + run]);
            i += run;
        } else {
            let item = inserted
                .get_mut(at - base.len())
                .and_then(Option::take)
                .ok_or((last, REPEATED))?;
            out.push(item);
            i += 1;
        }
    }
    Ok(out)
}

/// What [`apply_chain`] would report if an index were used twice (it cannot be).
const REPEATED: DecodeError = DecodeError {
    at: 0,
    what: "leaf delta chain repeats an item",
};

/// The item at index `at` of a chain's version: a base item, or one the chain inserted.
fn item_at<'a>(base: &'a [Item], inserted: &'a [Option<Item>], at: usize) -> Option<&'a Item> {
    match at.checked_sub(base.len()) {
        None => base.get(at),
        Some(j) => inserted.get(j)?.as_ref(),
    }
}

/// One edit of [`apply_chain`]: `over` (indices into `base`, then into `inserted`) edited by
/// `body` into `out`; the items the edit inserts are appended to `inserted`.
fn edit(
    base: &[Item],
    inserted: &mut Vec<Option<Item>>,
    over: &[usize],
    body: &[u8],
    out: &mut Vec<usize>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(body);
    if r.varint("delta base item count")? != over.len() as u64 {
        return Err(bad(&r, "leaf delta does not match its base image"));
    }
    let n = usize::try_from(r.varint("delta item count")?)
        .map_err(|_| bad(&r, "delta item count out of range"))?;
    if n > over.len() + r.remaining() / MIN_ITEM {
        return Err(bad(&r, "delta item count exceeds what the delta can hold"));
    }
    // The low id bits inserted items are encoded against: the version's first item's.
    let lo = match over.first() {
        None => 0,
        Some(&at) => item_at(base, inserted, at)
            .map(|i| super::node::id_lo(i.id))
            .ok_or(REPEATED)?,
    };
    out.clear();
    out.reserve(n);
    let mut i = 0usize;
    while r.remaining() > 0 {
        match r.u8("delta op")? {
            op @ (KEEP | DROP) => {
                let k = r.varint("delta run length")?;
                let end = usize::try_from(k)
                    .ok()
                    .and_then(|k| i.checked_add(k))
                    .filter(|e| *e <= over.len())
                    .ok_or_else(|| bad(&r, "delta run passes the end of its base"))?;
                if op == KEEP {
                    out.extend_from_slice(&over[i..end]);
                }
                i = end;
            }
            INSERT => {
                inserted.push(Some(Item::decode(&mut r, lo)?));
                out.push(base.len() + inserted.len() - 1);
            }
            _ => return Err(bad(&r, "unknown delta op")),
        }
        if out.len() > n {
            return Err(bad(&r, "delta makes more items than it says"));
        }
    }
    out.extend_from_slice(&over[i..]);
    if out.len() != n {
        return Err(bad(&r, "delta item count does not match its edits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::InlineValue;
    use proptest::prelude::*;

    fn item(k: u16, id: u128, v: u8) -> Item {
        Item {
            key: k.swap_bytes().to_le_bytes().to_vec().into(),
            id,
            value: if v == 255 {
                ValueRef::Blob { id: 9, len: 1000 }
            } else {
                ValueRef::Inline(InlineValue::new(&vec![v; usize::from(v % 40)]))
            },
        }
    }

    fn leaf(keys: &std::collections::BTreeMap<u16, u8>) -> Vec<Item> {
        keys.iter()
            .map(|(k, v)| item(*k, u128::from(*k), *v))
            .collect()
    }

    /// A leaf whose items' ids share their low bits in threes: items encode against the low
    /// bits of their version's first item, and most of them carry none of their own.
    fn leaf_lo3(keys: &std::collections::BTreeMap<u16, u8>) -> Vec<Item> {
        keys.iter()
            .map(|(k, v)| item(*k, (u128::from(*k) << 64) | u128::from(k % 3), *v))
            .collect()
    }

    fn order() -> Order {
        Order {
            custom: None,
            unique: true,
        }
    }

    proptest! {
        #[test]
        fn apply_of_diff_is_the_new_leaf(
            base in prop::collection::btree_map(0u16..300, any::<u8>(), 0..80),
            edits in prop::collection::vec((0u16..300, prop::option::of(any::<u8>())), 0..40),
            limit in prop::option::of(0usize..2000),
        ) {
            let mut new = base.clone();
            for (k, v) in edits {
                match v {
                    Some(v) => { new.insert(k, v); }
                    None => { new.remove(&k); }
                }
            }
            let (base, new) = (leaf(&base), leaf(&new));
            let mut w = Writer::default();
            w.u8(0xAB);
            let limit = limit.unwrap_or(usize::MAX);
            if diff(&order(), &base, &new, limit, &mut w) {
                prop_assert!(w.len() - 1 <= limit);
                prop_assert_eq!(apply(&base, &w.buf[1..]), Ok(new));
            } else {
                prop_assert_eq!(w.buf, vec![0xAB]);
            }
        }

        #[test]
        fn one_insert_is_the_diff_of_it(
            base in prop::collection::btree_map(0u16..300, any::<u8>(), 0..80),
            k in 0u16..300,
            v in any::<u8>(),
        ) {
            prop_assume!(!base.contains_key(&k));
            let pos = base.range(..k).count();
            let (base, it) = (leaf(&base), item(k, u128::from(k), v));
            let mut new = base.clone();
            new.insert(pos, it.clone());
            let mut one = Writer::default();
            insert_one(&base, pos, &it, &mut one);
            let mut full = Writer::default();
            prop_assert!(diff(&order(), &base, &new, usize::MAX, &mut full));
            prop_assert_eq!(&one.buf, &full.buf);
            prop_assert_eq!(apply(&base, &one.buf), Ok(new));
        }

        #[test]
        fn one_removal_is_the_diff_of_it(
            base in prop::collection::btree_map(0u16..300, any::<u8>(), 1..80),
            at in any::<prop::sample::Index>(),
        ) {
            let base = leaf(&base);
            let pos = at.index(base.len());
            let mut new = base.clone();
            new.remove(pos);
            let mut one = Writer::default();
            remove_one(&base, pos, &mut one);
            let mut full = Writer::default();
            prop_assert!(diff(&order(), &base, &new, usize::MAX, &mut full));
            prop_assert_eq!(&one.buf, &full.buf);
            prop_assert_eq!(apply(&base, &one.buf), Ok(new));
        }

        #[test]
        fn a_chain_applies_to_its_newest_version(
            base in prop::collection::btree_map(0u16..300, any::<u8>(), 0..50),
            steps in prop::collection::vec(
                prop::collection::vec((0u16..300, prop::option::of(any::<u8>())), 0..8),
                0..10,
            ),
            damaged in any::<prop::sample::Index>(),
        ) {
            // Versions as a leaf's commits make them, each edit over the one before (the low
            // id bits edits are encoded against change with the versions' first items).
            let mut cur = base;
            let mut versions = vec![leaf_lo3(&cur)];
            let mut bodies = Vec::new();
            for edits in steps {
                for (k, v) in edits {
                    match v {
                        Some(v) => { cur.insert(k, v); }
                        None => { cur.remove(&k); }
                    }
                }
                let new = leaf_lo3(&cur);
                let mut w = Writer::default();
                prop_assert!(diff(&order(), &versions[versions.len() - 1], &new, usize::MAX, &mut w));
                prop_assert_eq!(apply(&versions[versions.len() - 1], &w.buf), Ok(new.clone()));
                bodies.push(w.buf);
                versions.push(new);
            }
            let newest = versions[versions.len() - 1].clone();
            prop_assert_eq!(apply_chain(&versions[0], bodies.iter().map(Vec::as_slice)), Ok(newest));
            // An edit whose base count is off (fewer than 127 items: one varint byte) is the
            // one reported, whatever follows it.
            if !bodies.is_empty() {
                let k = damaged.index(bodies.len());
                bodies[k][0] += 1;
                let got = apply_chain(&versions[0], bodies.iter().map(Vec::as_slice));
                prop_assert_eq!(got.map_err(|(at, _)| at), Err(k));
            }
        }

        #[test]
        fn damaged_deltas_are_errors_not_panics(
            base in prop::collection::btree_map(0u16..300, any::<u8>(), 0..30),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let base = leaf(&base);
            if let Ok(items) = apply(&base, &body) {
                prop_assert!(items.len() <= base.len() + body.len() / MIN_ITEM);
            }
        }

        #[test]
        fn a_damaged_delta_after_an_insert_is_an_error_not_a_panic(
            base in prop::collection::btree_map(0u16..300, any::<u8>(), 0..30),
            k in 300u16..400,
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            // The second delta's runs and counts index the items the first one inserted.
            let base = leaf(&base);
            let mut first = Writer::default();
            insert_one(&base, 0, &item(k, u128::from(k), 7), &mut first);
            match apply_chain(&base, [first.buf.as_slice(), body.as_slice()]) {
                Ok(items) => prop_assert!(items.len() <= base.len() + 1 + body.len() / MIN_ITEM),
                Err((at, _)) => prop_assert_eq!(at, 1),
            }
        }
    }

    #[test]
    fn a_changed_value_and_duplicate_ids_are_edits() {
        let base = vec![item(1, 1, 3), item(2, 2, 4), item(3, 3, 5)];
        // Same key, new value; same key, new id (removed and added again).
        let new = vec![item(1, 1, 3), item(2, 2, 9), item(3, 7, 5)];
        let mut w = Writer::default();
        assert!(diff(&order(), &base, &new, usize::MAX, &mut w));
        assert_eq!(apply(&base, &w.buf), Ok(new));
        // Against another base, the same delta is refused.
        assert!(apply(&base[..2], &w.buf).is_err());
    }
}
