//! Log record framing (`record::check`, `record::header`) and the commit payload decoder
//! (`record::decode_commit`).
//!
//! The first byte picks a mode: raw bytes through `check` (CRC gate), or the rest framed with a
//! valid CRC as a commit record so `decode_commit` sees structured garbage. A decoded commit
//! must round-trip through `encode_commit`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sop::log::record::{self, Kind};

fn commit_round_trip(payload: &[u8]) {
    let Ok(c) = record::decode_commit(payload) else { return };
    let bytes = record::encode_commit(&c);
    let again = record::decode_commit(&bytes).expect("re-encoded commit must decode");
    assert_eq!(again, c, "decode(encode(commit)) != commit");
    assert_eq!(record::encode_commit(&again), bytes, "commit encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let _ = record::header(rest);
            if let Ok((kind, payload)) = record::check(rest) {
                assert!(payload.len() + record::HEADER <= rest.len());
                if kind == Kind::Commit {
                    commit_round_trip(payload);
                } else if matches!(kind, Kind::Node | Kind::Blob) {
                    let _ = record::parse_image(payload);
                }
            }
        }
        1 => {
            // Frame the payload validly; check must accept it and give it back unchanged.
            let mut out = Vec::new();
            record::frame(&mut out, Kind::Commit, &[rest]);
            assert_eq!(out.len(), record::framed_len(rest.len()));
            assert_eq!(out.len() % 8, 0);
            let (kind, payload) = record::check(&out).expect("a framed record must check");
            assert_eq!(kind, Kind::Commit);
            assert_eq!(payload, rest);
            // Any single bit flip in header or payload is detected.
            if !out.is_empty() {
                let bit = (rest.len().wrapping_mul(31) + 7) % ((record::HEADER + rest.len()) * 8);
                let mut bad = out.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(record::check(&bad).is_err(), "bit flip {bit} not detected");
            }
            commit_round_trip(payload);
        }
        _ => {
            let mut out = Vec::new();
            record::frame_with(&mut out, Kind::Commit, |o| o.extend_from_slice(rest));
            let (_, payload) = record::check(&out).expect("frame_with record must check");
            assert_eq!(payload, rest);
            commit_round_trip(payload);
        }
    }
});
