//! Typed key decoding (`sop::types::Key::decode_key` / `decode_key_nested`) for every key
//! type family: no panic; a decoded key re-encodes to exactly the input bytes (encodings are
//! canonical) and decodes back equal; the nested decoder consumes exactly the nested encoding;
//! and for two decoded keys, `memcmp` of their encodings orders them as `Ord` does.
//!
//! Input: selector byte (which type), split byte, then two byte strings.
#![no_main]

use std::cmp::Ordering;
use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use sop::Desc;
use sop::types::{Key, compare_encoded};

fn enc<T: Key>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode_key(&mut out);
    out
}

fn enc_nested<T: Key>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode_key_nested(&mut out);
    out
}

/// Decode checks; `eq` compares two values (bit-exact for floats).
fn one<T: Key + Debug>(b: &[u8], eq: fn(&T, &T) -> bool) -> Option<T> {
    let mut rest = b;
    if let Ok(v) = T::decode_key_nested(&mut rest) {
        let used = &b[..b.len() - rest.len()];
        assert_eq!(enc_nested(&v), used, "{}: nested encoding not canonical for {v:?}", T::type_name());
    }
    let v = T::decode_key(b).ok()?;
    let e = enc(&v);
    assert_eq!(e, b, "{}: top-level encoding not canonical for {v:?}", T::type_name());
    let again = T::decode_key(&e).expect("re-encoded key must decode");
    assert!(eq(&again, &v), "{}: decode(encode(v)) != v for {v:?}", T::type_name());
    Some(v)
}

fn ordered<T: Key + Debug>(a: &[u8], b: &[u8], eq: fn(&T, &T) -> bool, cmp: fn(&T, &T) -> Ordering) {
    let (Some(x), Some(y)) = (one::<T>(a, eq), one::<T>(b, eq)) else { return };
    assert_eq!(
        compare_encoded(&enc(&x), &enc(&y)),
        cmp(&x, &y),
        "{}: byte order differs from value order for {x:?} vs {y:?}",
        T::type_name()
    );
}

fn run<T: Key + Debug + Ord>(a: &[u8], b: &[u8]) {
    ordered::<T>(a, b, |x, y| x == y, |x, y| x.cmp(y));
}

fuzz_target!(|data: &[u8]| {
    let [sel, split, rest @ ..] = data else { return };
    let at = usize::from(*split).min(rest.len());
    let (a, b) = rest.split_at(at);
    match sel % 26 {
        0 => run::<u8>(a, b),
        1 => run::<u16>(a, b),
        2 => run::<u32>(a, b),
        3 => run::<u64>(a, b),
        4 => run::<u128>(a, b),
        5 => run::<i8>(a, b),
        6 => run::<i16>(a, b),
        7 => run::<i32>(a, b),
        8 => run::<i64>(a, b),
        9 => run::<i128>(a, b),
        10 => run::<usize>(a, b),
        11 => run::<isize>(a, b),
        12 => ordered::<f32>(a, b, |x, y| x.to_bits() == y.to_bits(), |x, y| x.total_cmp(y)),
        13 => ordered::<f64>(a, b, |x, y| x.to_bits() == y.to_bits(), |x, y| x.total_cmp(y)),
        14 => run::<bool>(a, b),
        15 => run::<char>(a, b),
        16 => run::<()>(a, b),
        17 => run::<String>(a, b),
        18 => run::<Vec<u8>>(a, b),
        19 => run::<[u8; 5]>(a, b),
        20 => run::<Option<String>>(a, b),
        21 => run::<Desc<u64>>(a, b),
        22 => run::<Desc<String>>(a, b),
        23 => run::<(u32, Desc<String>)>(a, b),
        24 => run::<(String, Vec<u8>, Option<i64>)>(a, b),
        _ => run::<(Desc<Option<Vec<u8>>>, Desc<(String, u8)>, char)>(a, b),
    }
});
