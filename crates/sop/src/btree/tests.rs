//! Model tests of the algorithms over an in-memory node store.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

#[derive(Default)]
struct Mem {
    nodes: HashMap<LogicalId, Arc<Node>>,
    next: LogicalId,
    /// A finger and the shape generation, when the store keeps one (as transactions do).
    finger: Option<(Finger, u64)>,
    /// Node reads so far.
    reads: usize,
}

impl Mem {
    fn fingered() -> Self {
        Mem {
            finger: Some((Finger::default(), 0)),
            ..Mem::default()
        }
    }

    fn reshaped(&mut self) {
        if let Some((_, generation)) = &mut self.finger {
            *generation += 1;
        }
    }
}

impl NodeStore for Mem {
    fn node(&mut self, id: LogicalId) -> Result<Arc<Node>> {
        self.reads += 1;
        Ok(Arc::clone(self.nodes.get(&id).expect("node exists")))
    }
    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node> {
        if matches!(
            **self.nodes.get(&id).expect("node exists"),
            Node::Internal { .. }
        ) {
            self.reshaped();
        }
        Ok(Arc::make_mut(self.nodes.get_mut(&id).expect("node exists")))
    }
    fn alloc(&mut self, node: Node) -> Result<LogicalId> {
        self.reshaped();
        self.next += 1;
        self.nodes.insert(self.next, Arc::new(node));
        Ok(self.next)
    }
    fn free(&mut self, id: LogicalId) {
        self.reshaped();
        assert!(self.nodes.remove(&id).is_some(), "double free of {id}");
    }
    fn finger(&mut self) -> Option<(&mut Finger, u64)> {
        self.finger.as_mut().map(|(f, g)| (f, *g))
    }
}

fn shape(slot: usize, unique: bool, balance: bool) -> Shape {
    Shape {
        order: Order {
            custom: None,
            unique,
        },
        slot_length: slot,
        leaf_load_balancing: balance,
    }
}

/// A usable finger leads where a descent from the root does: for every key (and the ids
/// around it), the fingered descent and a fresh one agree on the leaf, the path, the position
/// and the key match.
fn check_finger(store: &mut Mem, shape: &Shape, root: LogicalId) {
    if root == 0 || store.finger.is_none() {
        return;
    }
    let saved = store.finger.clone();
    for k in (0..=255u8).step_by(3) {
        for id in [0, ItemId::MAX] {
            store.finger.clone_from(&saved);
            let mut with = Path::new();
            let got = descend(store, shape, root, &[k], id, &mut with).unwrap();
            got.fill_path(store, &mut with);
            let kept = store.finger.take();
            let mut without = Path::new();
            let want = descend(store, shape, root, &[k], id, &mut without).unwrap();
            store.finger = kept;
            assert_eq!(
                (got.leaf, got.pos, got.same),
                (want.leaf, want.pos, want.same),
                "fingered descent to {k}/{id} differs"
            );
            assert_eq!(with, without, "fingered path to {k}/{id} differs");
        }
    }
    store.finger = saved;
}

/// Checks structure and returns the items in order.
fn check(store: &mut Mem, shape: &Shape, root: LogicalId) -> Vec<(Vec<u8>, ItemId)> {
    #[allow(clippy::too_many_arguments)]
    fn walk(
        store: &mut Mem,
        shape: &Shape,
        id: LogicalId,
        depth: usize,
        is_root: bool,
        leaf_depth: &mut Option<usize>,
        out: &mut Vec<(Vec<u8>, ItemId)>,
        reached: &mut usize,
    ) {
        *reached += 1;
        let node = store.node(id).unwrap();
        assert!(node.len() <= shape.slot_length, "node over capacity");
        match &*node {
            Node::Leaf(items) => {
                if !is_root {
                    assert!(!items.is_empty(), "empty non-root leaf");
                }
                match leaf_depth {
                    Some(d) => assert_eq!(*d, depth, "leaves at different depths"),
                    None => *leaf_depth = Some(depth),
                }
                out.extend(items.iter().map(|i| (i.key.to_vec(), i.id)));
            }
            Node::Internal { seps, children } => {
                assert_eq!(seps.len() + 1, children.len());
                assert!(!seps.is_empty());
                for c in children.clone() {
                    walk(store, shape, c, depth + 1, false, leaf_depth, out, reached);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut reached = 0;
    if root != 0 {
        walk(
            store,
            shape,
            root,
            0,
            true,
            &mut None,
            &mut out,
            &mut reached,
        );
    }
    assert_eq!(reached, store.nodes.len(), "leaked or unreachable nodes");
    for w in out.windows(2) {
        assert_eq!(
            shape.order.full(&w[0].0, w[0].1, &w[1].0, w[1].1),
            Ordering::Less,
            "items out of order"
        );
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u8),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => any::<u8>().prop_map(Op::Insert), 2 => any::<u8>().prop_map(Op::Remove)]
}

/// Single operations, and runs of operations on ascending or descending keys (where a finger
/// is used most).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let run = (any::<bool>(), any::<u8>(), 1u8..40, any::<bool>()).prop_map(
        |(insert, start, len, up)| {
            (0..len)
                .map(|i| {
                    let k = if up {
                        start.wrapping_add(i)
                    } else {
                        start.wrapping_sub(i)
                    };
                    if insert { Op::Insert(k) } else { Op::Remove(k) }
                })
                .collect::<Vec<_>>()
        },
    );
    proptest::collection::vec(
        prop_oneof![3 => op().prop_map(|o| vec![o]), 1 => run],
        0..60,
    )
    .prop_map(|v| v.into_iter().flatten().take(400).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn matches_model(ops in ops(), slot in prop::sample::select(vec![2usize, 4, 6, 16]), unique in any::<bool>(), balance in any::<bool>(), fingered in any::<bool>()) {
        let shape = shape(slot, unique, balance);
        let mut store = if fingered { Mem::fingered() } else { Mem::default() };
        let mut root = 0;
        // Model: set of (key, id) in the store's order.
        let mut model: BTreeSet<(Vec<u8>, std::cmp::Reverse<ItemId>)> = BTreeSet::new();
        let mut next_id: ItemId = 1;
        for op in ops {
            match op {
                Op::Insert(k) => {
                    let key = vec![k];
                    next_id += 1;
                    let exists = model.iter().any(|(mk, _)| *mk == key);
                    let added = insert(&mut store, &shape, &mut root, Item { key: key.clone().into(), id: next_id, value: ValueRef::Inline(crate::btree::InlineValue::new(&[k])) }).unwrap();
                    prop_assert_eq!(added, !(unique && exists));
                    if added {
                        model.insert((key, std::cmp::Reverse(if unique { 0 } else { next_id })));
                        if unique { /* ids not compared */ }
                    }
                }
                Op::Remove(k) => {
                    let key = vec![k];
                    // Remove the first item with the key (newest duplicate).
                    let target = model.iter().find(|(mk, _)| *mk == key).cloned();
                    let got = match &target {
                        Some((_, std::cmp::Reverse(id))) => {
                            let id = if unique { 0 } else { *id };
                            remove(&mut store, &shape, &mut root, &key, id).unwrap()
                        }
                        None => remove(&mut store, &shape, &mut root, &key, 0).unwrap(),
                    };
                    prop_assert_eq!(got.is_some(), target.is_some());
                    if let Some(t) = target { model.remove(&t); }
                }
            }
            let items = check(&mut store, &shape, root);
            check_finger(&mut store, &shape, root);
            let keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| k.clone()).collect();
            let want: Vec<Vec<u8>> = model.iter().map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(keys, want);
        }
        // Cursor walks both ways agree with the structure.
        let items = check(&mut store, &shape, root);
        let mut fwd = Vec::new();
        let mut p = first(&mut store, root).unwrap();
        while let Some(pos) = p {
            let it = pos.item().unwrap();
            fwd.push((it.key.to_vec(), it.id));
            p = step_next(&mut store, pos).unwrap();
        }
        prop_assert_eq!(&fwd, &items);
        let mut back = Vec::new();
        let mut p = last(&mut store, root).unwrap();
        while let Some(pos) = p {
            let it = pos.item().unwrap();
            back.push((it.key.to_vec(), it.id));
            p = step_prev(&mut store, pos).unwrap();
        }
        back.reverse();
        prop_assert_eq!(&back, &items);
        // Seeks agree with a linear search.
        for k in 0..=255u8 {
            let key = [k];
            let ge = seek(&mut store, &shape, root, &key, ItemId::MAX, Seek::Ge).unwrap().map(|p| p.item().unwrap().key.to_vec());
            let want = items.iter().find(|(ik, _)| ik.as_slice() >= &key[..]).map(|(ik, _)| ik.clone());
            prop_assert_eq!(ge, want);
            let first_id = items.iter().find(|(ik, _)| ik.as_slice() == &key[..]).map(|(_, id)| *id);
            match lookup(&mut store, &shape, root, &key).unwrap() {
                Lookup::Found(leaf, idx) => {
                    let Node::Leaf(l) = &*leaf else { panic!("lookup returned an internal node") };
                    prop_assert_eq!(Some(l[idx].id), first_id);
                }
                Lookup::Absent => prop_assert_eq!(first_id, None),
                Lookup::Ambiguous => prop_assert!(!unique, "ambiguous lookup in a unique store"),
            }
            let le = seek(&mut store, &shape, root, &key, 0, Seek::Le).unwrap().map(|p| p.item().unwrap().key.to_vec());
            let want = items.iter().rev().find(|(ik, _)| ik.as_slice() <= &key[..]).map(|(ik, _)| ik.clone());
            prop_assert_eq!(le, want);
        }
    }
}

proptest! {
    #[test]
    fn first_not_is_the_partition_point(n in 0usize..300, cut in 0usize..301) {
        let cut = cut.min(n);
        let v: Vec<bool> = (0..n).map(|i| i < cut).collect();
        prop_assert_eq!(first_not!(n, |i| v[i]), cut);
        prop_assert_eq!(v.partition_point(|b| *b), cut);
    }
}

/// Ascending and descending runs of inserts and removals go through the finger: the
/// descents read far fewer nodes than without one, and every step does what the model says.
#[test]
fn runs_use_the_finger() {
    let key = |k: u16| vec![(k >> 8) as u8, k as u8];
    let run = |store: &mut Mem| {
        let shape = shape(32, true, false);
        let mut root = 0;
        let keys: Vec<u16> = (0..2000u16).chain((0..2000u16).rev()).collect();
        for (i, &k) in keys.iter().enumerate() {
            let value = ValueRef::Inline(crate::btree::InlineValue::new(&key(k)));
            let item = Item {
                key: key(k).into(),
                id: 1,
                value,
            };
            let added = insert(store, &shape, &mut root, item).unwrap();
            assert_eq!(added, i < 2000, "insert {i} of key {k}");
        }
        assert_eq!(check(store, &shape, root).len(), 2000);
        for (i, &k) in keys.iter().enumerate() {
            let gone = remove(store, &shape, &mut root, &key(k), 0).unwrap();
            assert_eq!(gone.is_some(), i < 2000, "removal {i} of key {k}");
        }
        assert!(check(store, &shape, root).is_empty());
        store.reads
    };
    let plain = run(&mut Mem::default());
    let fingered = run(&mut Mem::fingered());
    assert!(
        fingered * 2 < plain,
        "a finger saved too few reads: {fingered} against {plain}"
    );
}

/// Runs of inserts in key order (either direction) leave the leaves behind them full; random
/// inserts still split in halves. Leaves of 16: 4,000 items take 267 leaves of 15 (an
/// eighth left free), 500 half full ones, ~360 after random inserts.
#[test]
fn runs_of_inserts_fill_their_leaves() {
    let load = |keys: &[u16]| {
        let mut store = Mem::fingered();
        let shape = shape(16, true, false);
        let mut root = 0;
        for &k in keys {
            let key = vec![(k >> 8) as u8, k as u8];
            let item = Item {
                key: key.as_slice().into(),
                id: 1,
                value: ValueRef::Inline(crate::btree::InlineValue::new(&key)),
            };
            assert!(insert(&mut store, &shape, &mut root, item).unwrap());
        }
        assert_eq!(check(&mut store, &shape, root).len(), keys.len());
        store
            .nodes
            .values()
            .filter(|n| matches!(***n, Node::Leaf(_)))
            .count()
    };
    let up: Vec<u16> = (0..4000).collect();
    let down: Vec<u16> = up.iter().rev().copied().collect();
    let up_leaves = load(&up);
    let down_leaves = load(&down);
    assert!(
        up_leaves <= 280,
        "ascending inserts made {up_leaves} leaves"
    );
    assert!(
        down_leaves <= 280,
        "descending inserts made {down_leaves} leaves"
    );
    let mut random = up.clone();
    fastrand::Rng::with_seed(11).shuffle(&mut random);
    let random_leaves = load(&random);
    assert!(
        (300..450).contains(&random_leaves),
        "random inserts made {random_leaves} leaves"
    );
}

/// The first descent of a tree takes no finger (a transaction of one operation would never
/// use it); the second one that misses does.
#[test]
fn the_second_descent_takes_the_finger() {
    let shape = shape(4, true, false);
    let mut store = Mem::fingered();
    let mut root = 0;
    for k in 0..64u8 {
        let item = Item {
            key: [k].as_slice().into(),
            id: 1,
            value: ValueRef::Inline(crate::btree::InlineValue::new(&[k])),
        };
        assert!(insert(&mut store, &shape, &mut root, item).unwrap());
    }
    // A fresh finger, as a new transaction's working store has.
    store.finger = Some((Finger::default(), 0));
    let mut path = Path::new();
    descend(&mut store, &shape, root, &[10], ItemId::MAX, &mut path).unwrap();
    assert!(
        !store.finger.as_ref().unwrap().0.armed(),
        "the first descent took a finger"
    );
    descend(&mut store, &shape, root, &[40], ItemId::MAX, &mut path).unwrap();
    assert!(
        store.finger.as_ref().unwrap().0.armed(),
        "the second descent took no finger"
    );
}
