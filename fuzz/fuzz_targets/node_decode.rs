//! `Node::decode` on arbitrary bytes: never panics; a decoded node re-encodes to bytes that
//! decode to the same node, and re-encoding is stable (non-canonical varints in the input are
//! allowed to normalise, so the input itself need not come back byte for byte).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sop::btree::node::Node;
use sop::codec::Writer;

fuzz_target!(|data: &[u8]| {
    let Ok(node) = Node::decode(data) else { return };
    let _ = node.weight();
    let _ = node.len();
    let mut w = Writer::default();
    node.encode(&mut w);
    let again = Node::decode(&w.buf).expect("re-encoded node must decode");
    assert_eq!(again, node, "decode(encode(node)) != node");
    let mut w2 = Writer::default();
    again.encode(&mut w2);
    assert_eq!(w.buf, w2.buf, "encoding is not stable");
    assert!(w.buf.len() <= data.len(), "canonical encoding longer than the input");
    for cut in 0..w.buf.len() {
        assert!(Node::decode(&w.buf[..cut]).is_err(), "truncation to {cut} accepted");
    }
});
