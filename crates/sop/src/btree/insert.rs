//! Insertion: place the item in its leaf, then split (or redistribute) upwards.
//!
//! A full leaf is split in two halves and the first (key, id) of the right half becomes the
//! separator in the parent. A leaf that overflows inside a run of inserts in key order is
//! split after the new item instead (before it, for a run in descending order) when that gives
//! the side the run leaves behind more than half, keeping an eighth of that side free for later
//! inserts: a run never comes back to that side, and halves would stay half full (ascending
//! keys: every leaf; SOP's `key_{i}` benchmark: 53 % full leaves instead of 66 %). Runs are
//! seen through the finger ([`super::finger`]): the previous descent landed just before this
//! one (ascending) or at the same place (descending). Random inserts split in halves as before.
//! A full internal node is split around its middle separator, which moves up. A root split
//! makes a new root. With `leaf_load_balancing`, a full leaf first moves items to an adjacent
//! sibling with room (updating one separator), and splits only when both siblings are full.

use super::{Item, Node, NodeStore, Path, Sep, Shape, descend};
use crate::error::{Error, Result};
use crate::registry::LogicalId;

/// Inserts `item`. Returns `Ok(false)` (and changes nothing) when the store is unique and the
/// key exists.
pub fn insert<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: &mut LogicalId,
    item: Item,
) -> Result<bool> {
    if *root == 0 {
        *root = store.alloc(Node::Leaf(vec![item]))?;
        return Ok(true);
    }
    let mut path = Path::new();
    let landing = descend(store, shape, *root, &item.key, item.id, &mut path)?;
    let (leaf_id, pos) = (landing.leaf, landing.pos);
    if shape.order.unique && landing.same {
        return Ok(false);
    }
    let len = store.insert_in_leaf(leaf_id, pos, item)?;
    if len > shape.slot_length {
        landing.fill_path(store, &mut path);
        if shape.leaf_load_balancing
            && !path.is_empty()
            && balance_leaf(store, shape, &path, leaf_id)?
        {
            return Ok(true);
        }
        let at = split_point(landing.prev, pos, len);
        split_leaf(store, shape, root, path, leaf_id, at)?;
    }
    Ok(true)
}

/// Where to split a leaf of `len` items (at least 2) that the item inserted at `pos` made
/// overfull: the first item of the right part. `prev` is where the descent before landed in
/// this leaf, if it went through the finger (see the module documentation).
fn split_point(prev: Option<usize>, pos: usize, len: usize) -> usize {
    let half = len / 2;
    match prev {
        // Ascending: the left part keeps the run's items, the right part the rest; an eighth
        // of the left stays free for later inserts among them.
        Some(p) if pos == p + 1 && pos + 1 > half => (pos + 1).min(len - (len / 8).max(1)),
        // Descending: the right part keeps them.
        Some(p) if pos == p && pos < half => pos.max((len / 8).max(1)),
        _ => half,
    }
}

fn split_leaf<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: &mut LogicalId,
    path: Path,
    id: LogicalId,
    at: usize,
) -> Result<()> {
    let right = {
        let Node::Leaf(items) = store.node_mut(id)? else {
            return Ok(());
        };
        // The right part gets room to grow to a full node, as the left part has.
        let mut right = Vec::with_capacity(shape.slot_length + 1);
        right.extend(items.drain(at.min(items.len())..));
        right
    };
    let sep = match right.first() {
        Some(f) => Sep {
            key: f.key.clone(),
            id: f.id,
        },
        None => return Ok(()),
    };
    let right_id = store.alloc(Node::Leaf(right))?;
    insert_into_parent(store, shape, root, path, id, sep, right_id)
}

fn insert_into_parent<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: &mut LogicalId,
    mut path: Path,
    left: LogicalId,
    sep: Sep,
    right: LogicalId,
) -> Result<()> {
    let Some((pid, idx)) = path.pop() else {
        *root = store.alloc(Node::Internal {
            seps: vec![sep],
            children: vec![left, right],
        })?;
        return Ok(());
    };
    let split = {
        let Node::Internal { seps, children } = store.node_mut(pid)? else {
            return Err(Error::InvalidArgument(
                "parent on the path is a leaf".into(),
            ));
        };
        seps.insert(idx, sep);
        children.insert(idx + 1, right);
        if seps.len() > shape.slot_length {
            let mid = seps.len() / 2;
            let mut right_seps = seps.split_off(mid);
            let promoted = right_seps.remove(0);
            let right_children = children.split_off(mid + 1);
            Some((promoted, right_seps, right_children))
        } else {
            None
        }
    };
    if let Some((promoted, seps, children)) = split {
        let new_right = store.alloc(Node::Internal { seps, children })?;
        insert_into_parent(store, shape, root, path, pid, promoted, new_right)?;
    }
    Ok(())
}

/// Moves items of the overfull leaf `id` to a sibling with room. Returns false when both
/// siblings are full (the caller splits).
fn balance_leaf<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    path: &Path,
    id: LogicalId,
) -> Result<bool> {
    let Some(&(pid, idx)) = path.last() else {
        return Ok(false);
    };
    let parent = store.node(pid)?;
    let Node::Internal { children, .. } = &*parent else {
        return Ok(false);
    };
    let left = if idx > 0 {
        children.get(idx - 1).copied()
    } else {
        None
    };
    let right = children.get(idx + 1).copied();
    drop(parent);
    let len = store.node(id)?.len();
    if let Some(lid) = left {
        let llen = store.node(lid)?.len();
        if llen < shape.slot_length {
            let m = (llen + len) / 2 - llen;
            if m >= 1 {
                let moved: Vec<Item> = match store.node_mut(id)? {
                    Node::Leaf(items) => items.drain(..m).collect(),
                    Node::Internal { .. } => return Ok(false),
                };
                let new_first = match store.node(id)?.as_ref() {
                    Node::Leaf(items) => items.first().map(|f| Sep {
                        key: f.key.clone(),
                        id: f.id,
                    }),
                    Node::Internal { .. } => None,
                };
                if let Node::Leaf(items) = store.node_mut(lid)? {
                    items.extend(moved);
                }
                if let (Some(sep), Node::Internal { seps, .. }) = (new_first, store.node_mut(pid)?)
                {
                    seps[idx - 1] = sep;
                }
                return Ok(true);
            }
        }
    }
    if let Some(rid) = right {
        let rlen = store.node(rid)?.len();
        if rlen < shape.slot_length {
            let m = (rlen + len) / 2 - rlen;
            if m >= 1 {
                let moved: Vec<Item> = match store.node_mut(id)? {
                    Node::Leaf(items) => {
                        let at = items.len() - m;
                        items.split_off(at)
                    }
                    Node::Internal { .. } => return Ok(false),
                };
                let sep = moved.first().map(|f| Sep {
                    key: f.key.clone(),
                    id: f.id,
                });
                if let Node::Leaf(items) = store.node_mut(rid)? {
                    items.splice(0..0, moved);
                }
                if let (Some(sep), Node::Internal { seps, .. }) = (sep, store.node_mut(pid)?) {
                    seps[idx] = sep;
                }
                return Ok(true);
            }
        }
    }
    Ok(false)
}
