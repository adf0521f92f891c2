//! Image payloads (`record::parse_image`) and the node body inside: no panic, prefix round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sop::btree::node::Node;
use sop::log::record;

fuzz_target!(|data: &[u8]| {
    let Ok((id, body)) = record::parse_image(data) else {
        assert!(data.len() < record::IMAGE_PREFIX, "parse_image refused a long enough payload");
        return;
    };
    let mut again = record::image_prefix(id).to_vec();
    again.extend_from_slice(body);
    assert_eq!(again, data, "image prefix does not round-trip");
    let _ = Node::decode(body);
});
