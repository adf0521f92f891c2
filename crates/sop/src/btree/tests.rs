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
}

impl NodeStore for Mem {
    fn node(&mut self, id: LogicalId) -> Result<Arc<Node>> {
        Ok(Arc::clone(self.nodes.get(&id).expect("node exists")))
    }
    fn node_mut(&mut self, id: LogicalId) -> Result<&mut Node> {
        Ok(Arc::make_mut(self.nodes.get_mut(&id).expect("node exists")))
    }
    fn alloc(&mut self, node: Node) -> Result<LogicalId> {
        self.next += 1;
        self.nodes.insert(self.next, Arc::new(node));
        Ok(self.next)
    }
    fn free(&mut self, id: LogicalId) {
        assert!(self.nodes.remove(&id).is_some(), "double free of {id}");
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn matches_model(ops in proptest::collection::vec(op(), 0..400), slot in prop::sample::select(vec![2usize, 4, 6, 16]), unique in any::<bool>(), balance in any::<bool>()) {
        let shape = shape(slot, unique, balance);
        let mut store = Mem::default();
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
