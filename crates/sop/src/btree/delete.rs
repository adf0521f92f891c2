//! Deletion: remove the item from its leaf, then merge or borrow upwards.
//!
//! A non-root node left with fewer than [`Shape::min_fill`] entries is merged with an adjacent
//! sibling when both fit in one node (the parent loses a separator, and may underflow in turn),
//! and otherwise the two share their entries evenly (the parent's separator between them is
//! replaced). A root internal node left with one child is replaced by that child; an empty root
//! leaf leaves the tree empty (root 0).

use super::{Item, Node, NodeStore, Path, Sep, Shape, descend};
use crate::error::Result;
use crate::registry::LogicalId;

/// Removes the item `(key, id)` (in unique stores, the item with `key`). Returns it, or `None`
/// when absent.
pub fn remove<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: &mut LogicalId,
    key: &[u8],
    id: super::ItemId,
) -> Result<Option<Item>> {
    if *root == 0 {
        return Ok(None);
    }
    let mut path = Path::new();
    let landing = descend(store, shape, *root, key, id, &mut path)?;
    let (leaf_id, pos) = (landing.leaf, landing.pos);
    if !landing.same {
        return Ok(None);
    }
    // `pos` is the first item >= (key, id): with duplicates, it must be that very item.
    let unique = shape.order.unique;
    // A removal that leaves a non-root leaf at least `min_fill` full may be kept pending.
    let min_left = if leaf_id == *root {
        usize::MAX
    } else {
        shape.min_fill()
    };
    let Some((removed, left)) =
        store.remove_in_leaf(leaf_id, pos, &|it| unique || it.id == id, min_left)?
    else {
        return Ok(None);
    };
    // A non-root leaf still at least `min_fill` full needs nothing more.
    if leaf_id == *root || left < shape.min_fill() {
        landing.fill_path(store, &mut path);
        rebalance(store, shape, root, path, leaf_id)?;
    }
    Ok(Some(removed))
}

fn rebalance<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: &mut LogicalId,
    mut path: Path,
    id: LogicalId,
) -> Result<()> {
    let node = store.node(id)?;
    let Some(&(pid, idx)) = path.last() else {
        // The root.
        match &*node {
            Node::Leaf(items) if items.is_empty() => {
                store.free(id);
                *root = 0;
            }
            Node::Internal { seps, children } if seps.is_empty() => {
                let child = children.first().copied().unwrap_or_default();
                store.free(id);
                *root = child;
            }
            _ => {}
        }
        return Ok(());
    };
    if node.len() >= shape.min_fill() {
        return Ok(());
    }
    drop(node);
    let parent = store.node(pid)?;
    let Node::Internal { seps, children } = &*parent else {
        return Ok(());
    };
    let (li, ri) = if idx > 0 {
        (idx - 1, idx)
    } else {
        (idx, idx + 1)
    };
    let (Some(&left_id), Some(&right_id), Some(sep)) =
        (children.get(li), children.get(ri), seps.get(li).cloned())
    else {
        return Ok(());
    };
    drop(parent);
    let left = store.node(left_id)?;
    let right = store.node(right_id)?;
    let is_leaf = matches!(&*left, Node::Leaf(_));
    let total = left.len() + right.len() + usize::from(!is_leaf);
    // Both handles go before the nodes are changed: a node changed while a handle to it is
    // held is copied first.
    drop((left, right));
    if total <= shape.slot_length {
        // Merge right into left.
        let right = std::mem::replace(store.node_mut(right_id)?, Node::Leaf(Vec::new()));
        match (store.node_mut(left_id)?, right) {
            (Node::Leaf(l), Node::Leaf(r)) => l.extend(r),
            (
                Node::Internal {
                    seps: ls,
                    children: lc,
                },
                Node::Internal {
                    seps: rs,
                    children: rc,
                },
            ) => {
                ls.push(sep);
                ls.extend(rs);
                lc.extend(rc);
            }
            _ => return Ok(()),
        }
        store.free(right_id);
        if let Node::Internal { seps, children } = store.node_mut(pid)? {
            seps.remove(li);
            children.remove(ri);
        }
        path.pop();
        return rebalance(store, shape, root, path, pid);
    }
    // Borrow: share the entries of both nodes evenly.
    let right = std::mem::replace(store.node_mut(right_id)?, Node::Leaf(Vec::new()));
    let new_sep = match (store.node_mut(left_id)?, right) {
        (Node::Leaf(l), Node::Leaf(mut r)) => {
            let mut all = std::mem::take(l);
            all.append(&mut r);
            let half = all.len() / 2;
            let r = all.split_off(half);
            *l = all;
            let sep = r.first().map(|f| Sep {
                key: f.key.clone(),
                id: f.id,
            });
            *store.node_mut(right_id)? = Node::Leaf(r);
            sep
        }
        (
            Node::Internal {
                seps: ls,
                children: lc,
            },
            Node::Internal {
                seps: mut rs,
                children: mut rc,
            },
        ) => {
            let mut all_seps = std::mem::take(ls);
            all_seps.push(sep);
            all_seps.append(&mut rs);
            let mut all_children = std::mem::take(lc);
            all_children.append(&mut rc);
            let half = all_seps.len() / 2;
            let mut right_seps = all_seps.split_off(half);
            let promoted = right_seps.remove(0);
            let right_children = all_children.split_off(half + 1);
            *ls = all_seps;
            *lc = all_children;
            *store.node_mut(right_id)? = Node::Internal {
                seps: right_seps,
                children: right_children,
            };
            Some(promoted)
        }
        (_, r) => {
            *store.node_mut(right_id)? = r;
            None
        }
    };
    if let (Some(s), Node::Internal { seps, .. }) = (new_sep, store.node_mut(pid)?)
        && let Some(slot) = seps.get_mut(li)
    {
        *slot = s;
    }
    Ok(())
}
