//! `btree::delta::apply` on arbitrary bytes over an arbitrary base leaf: never panics, never
//! makes more items than the bytes can hold; an applied delta is reproduced exactly by
//! `diff` + `apply` of the base and the result.
//!
//! Input: first byte `n`, then `n` bytes decoded as a node (the base; a leaf or nothing), then
//! the delta body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sop::btree::node::Node;
use sop::btree::{Order, delta};
use sop::codec::Writer;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n).min(rest.len());
    let (base, body) = rest.split_at(n);
    let base = match Node::decode(base) {
        Ok(Node::Leaf(items)) => items,
        _ => Vec::new(),
    };
    let Ok(items) = delta::apply(&base, body) else { return };
    assert!(items.len() <= base.len() + body.len() / 4, "more items than the delta holds");
    for unique in [false, true] {
        let order = Order { custom: None, unique };
        let mut w = Writer::default();
        assert!(delta::diff(&order, &base, &items, usize::MAX, &mut w));
        assert_eq!(delta::apply(&base, &w.buf).as_ref(), Ok(&items), "apply(diff) differs");
    }
});
