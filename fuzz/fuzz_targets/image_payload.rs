//! Image payloads (`record::parse_image`) and the node body inside: no panic, prefix round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sop::btree::node::Node;
use sop::log::record;

fuzz_target!(|data: &[u8]| {
    let Ok((id, body)) = record::parse_image(data) else { return };
    // Varints: re-encoded canonically, the prefix is at most as long and reads back the same.
    let mut again = record::image_prefix(id).as_bytes().to_vec();
    assert!(again.len() + body.len() <= data.len(), "image prefix re-encodes longer");
    again.extend_from_slice(body);
    assert_eq!(record::parse_image(&again), Ok((id, body)), "image prefix does not round-trip");
    let _ = Node::decode(body);
});
