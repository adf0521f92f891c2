//! Cursor positioning: seek to a bound, first, last, and step to the next or previous item.
//!
//! A [`Pos`] keeps the path from the root and the leaf it points into, so stepping within a leaf
//! costs nothing and crossing to a sibling leaf walks up only as far as needed. A `Pos` is only
//! valid while the tree is unchanged; the transaction layer re-seeks from the current item's
//! (key, id) after any change.

use std::cmp::Ordering;
use std::sync::Arc;

use super::{Item, ItemId, Node, NodeStore, Path, Shape, child_index_in};
use crate::error::Result;
use crate::registry::LogicalId;

/// A position on an item.
#[derive(Debug, Clone)]
pub struct Pos {
    /// Internal nodes from the root and the child index taken in each.
    pub path: Path,
    /// The leaf.
    pub leaf: Arc<Node>,
    /// Its logical id.
    pub leaf_id: LogicalId,
    /// Index of the item in the leaf.
    pub idx: usize,
}

impl Pos {
    /// The item under the cursor.
    #[must_use]
    pub fn item(&self) -> Option<&Item> {
        match &*self.leaf {
            Node::Leaf(items) => items.get(self.idx),
            Node::Internal { .. } => None,
        }
    }
}

/// Which item a seek lands on, relative to the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// First item at or after.
    Ge,
    /// First item after.
    Gt,
    /// Last item at or before.
    Le,
    /// Last item before.
    Lt,
}

fn leaf_items(n: &Node) -> &[Item] {
    match n {
        Node::Leaf(items) => items,
        Node::Internal { .. } => &[],
    }
}

/// Descends to the leftmost (`left = true`) or rightmost leaf under `from`, extending `path`.
fn edge<S: NodeStore>(
    store: &mut S,
    mut cur: LogicalId,
    left: bool,
    path: &mut Path,
) -> Result<(LogicalId, Arc<Node>)> {
    loop {
        let node = store.node(cur)?;
        match &*node {
            Node::Leaf(_) => return Ok((cur, node)),
            Node::Internal { children, .. } => {
                let i = if left {
                    0
                } else {
                    children.len().saturating_sub(1)
                };
                path.push((cur, i));
                cur = children.get(i).copied().unwrap_or_default();
            }
        }
    }
}

/// First item of the tree.
pub fn first<S: NodeStore>(store: &mut S, root: LogicalId) -> Result<Option<Pos>> {
    if root == 0 {
        return Ok(None);
    }
    let mut path = Path::new();
    let (leaf_id, leaf) = edge(store, root, true, &mut path)?;
    let pos = Pos {
        path,
        leaf,
        leaf_id,
        idx: 0,
    };
    if pos.item().is_some() {
        Ok(Some(pos))
    } else {
        step_next_leaf(store, pos)
    }
}

/// Last item of the tree.
pub fn last<S: NodeStore>(store: &mut S, root: LogicalId) -> Result<Option<Pos>> {
    if root == 0 {
        return Ok(None);
    }
    let mut path = Path::new();
    let (leaf_id, leaf) = edge(store, root, false, &mut path)?;
    let n = leaf_items(&leaf).len();
    if n == 0 {
        let pos = Pos {
            path,
            leaf,
            leaf_id,
            idx: 0,
        };
        return step_prev_leaf(store, pos);
    }
    Ok(Some(Pos {
        path,
        leaf,
        leaf_id,
        idx: n - 1,
    }))
}

/// Seeks relative to the bound `(key, id)`.
pub fn seek<S: NodeStore>(
    store: &mut S,
    shape: &Shape,
    root: LogicalId,
    key: &[u8],
    id: ItemId,
    how: Seek,
) -> Result<Option<Pos>> {
    if root == 0 {
        return Ok(None);
    }
    let mut path = Path::new();
    let mut cur = root;
    let (leaf, index) = loop {
        let (node, index) = store.node_indexed(cur)?;
        match &*node {
            Node::Leaf(_) => break (node, index),
            Node::Internal { seps, children } => {
                let i = child_index_in(shape, seps, index.as_deref(), key, id);
                path.push((cur, i));
                cur = children.get(i).copied().unwrap_or_default();
            }
        }
    };
    let items = leaf_items(&leaf);
    let cmp = |it: &Item| shape.order.full(&it.key, it.id, key, id);
    let indexed = index.filter(|ix| shape.plain() && ix.len() == items.len());
    let (idx, forward) = match (how, &indexed) {
        (Seek::Ge | Seek::Lt, Some(ix)) => (ix.lower_bound(items, key), how == Seek::Ge),
        (Seek::Gt | Seek::Le, Some(ix)) => (ix.upper_bound_items(items, key), how == Seek::Gt),
        _ => match how {
            Seek::Ge => (items.partition_point(|it| cmp(it) == Ordering::Less), true),
            Seek::Gt => (
                items.partition_point(|it| cmp(it) != Ordering::Greater),
                true,
            ),
            Seek::Le => (
                items.partition_point(|it| cmp(it) != Ordering::Greater),
                false,
            ),
            Seek::Lt => (items.partition_point(|it| cmp(it) == Ordering::Less), false),
        },
    };
    let n = items.len();
    let pos = Pos {
        path,
        leaf,
        leaf_id: cur,
        idx,
    };
    if forward {
        if idx < n {
            Ok(Some(pos))
        } else {
            step_next_leaf(store, pos)
        }
    } else if idx > 0 {
        Ok(Some(Pos {
            idx: idx - 1,
            ..pos
        }))
    } else {
        step_prev_leaf(store, pos)
    }
}

/// The item after `pos`.
pub fn step_next<S: NodeStore>(store: &mut S, mut pos: Pos) -> Result<Option<Pos>> {
    if pos.idx + 1 < leaf_items(&pos.leaf).len() {
        pos.idx += 1;
        return Ok(Some(pos));
    }
    step_next_leaf(store, pos)
}

/// The item before `pos`.
pub fn step_prev<S: NodeStore>(store: &mut S, mut pos: Pos) -> Result<Option<Pos>> {
    if pos.idx > 0 && pos.idx <= leaf_items(&pos.leaf).len() {
        pos.idx -= 1;
        return Ok(Some(pos));
    }
    step_prev_leaf(store, pos)
}

fn step_next_leaf<S: NodeStore>(store: &mut S, pos: Pos) -> Result<Option<Pos>> {
    let mut path = pos.path;
    while let Some((pid, i)) = path.pop() {
        let parent = store.node(pid)?;
        let Node::Internal { children, .. } = &*parent else {
            return Ok(None);
        };
        if let Some(&next) = children.get(i + 1) {
            path.push((pid, i + 1));
            let (leaf_id, leaf) = edge(store, next, true, &mut path)?;
            if leaf_items(&leaf).is_empty() {
                let p = Pos {
                    path,
                    leaf,
                    leaf_id,
                    idx: 0,
                };
                return step_next_leaf(store, p);
            }
            return Ok(Some(Pos {
                path,
                leaf,
                leaf_id,
                idx: 0,
            }));
        }
    }
    Ok(None)
}

fn step_prev_leaf<S: NodeStore>(store: &mut S, pos: Pos) -> Result<Option<Pos>> {
    let mut path = pos.path;
    while let Some((pid, i)) = path.pop() {
        if i == 0 {
            continue;
        }
        let parent = store.node(pid)?;
        let Node::Internal { children, .. } = &*parent else {
            return Ok(None);
        };
        if let Some(&prev) = children.get(i - 1) {
            path.push((pid, i - 1));
            let (leaf_id, leaf) = edge(store, prev, false, &mut path)?;
            let n = leaf_items(&leaf).len();
            let p = Pos {
                path,
                leaf,
                leaf_id,
                idx: 0,
            };
            if n == 0 {
                return step_prev_leaf(store, p);
            }
            return Ok(Some(Pos { idx: n - 1, ..p }));
        }
    }
    Ok(None)
}
