//! Typed keys and values: order-preserving key encoding, serde values.
//!
//! The engine core orders keys as raw bytes (`memcmp`, see [`compare_encoded`]). The typed
//! layer maps every key type to bytes through [`Key`] so that comparing the encodings with
//! `memcmp` gives exactly the order of the values, and maps values through [`Value`]
//! (postcard, any serde type).
//!
//! # Two encodings per key type
//!
//! Every key type has
//!
//! - a **top-level** encoding ([`Key::encode_key`]), used when the value is the whole key. It
//!   may rely on the end of the slice to know where it stops (a `String` is its raw UTF-8
//!   bytes);
//! - a **nested** encoding ([`Key::encode_key_nested`]), used inside tuples, [`Option`] and
//!   [`Desc`]. It is *prefix-free*: no nested encoding of a value is a proper prefix of the
//!   nested encoding of another value of the same type, so a decoder reading from the front of
//!   a longer slice always knows where the field ends.
//!
//! Both encodings are order-preserving and canonical: decoding accepts exactly the bytes that
//! encoding produces, so `decode(bytes) == Ok(v)` implies `encode(v) == bytes`.
//!
//! # Why the order is preserved
//!
//! Write `a < b` for the order of values and `x <ₘ y` for `memcmp` order of byte strings
//! (lexicographic, a proper prefix sorts first).
//!
//! - **Fixed-width types** (integers, floats, `bool`, `char`, `[u8; N]`, `()`): all encodings
//!   of a type have the same length, so `memcmp` compares them as big-endian unsigned numbers.
//!   Unsigned integers are their big-endian bytes. Signed integers flip the sign bit, which
//!   maps `MIN..=MAX` monotonically onto `0..=UMAX` (two's complement plus `2^(w-1)`). Floats
//!   are mapped as in [`f64::total_cmp`]: negative values have all bits flipped (a larger
//!   magnitude becomes a smaller number), non-negative values have the sign bit set (they all
//!   land above every negative value, magnitude order kept). Fixed-width encodings are
//!   trivially prefix-free, so nested = top-level.
//! - **Byte strings** (`String`, `Vec<u8>`): the top level is the raw bytes, whose `memcmp`
//!   order *is* the order of `str`/`[u8]`. The nested form writes every byte `0x00` as
//!   `0x00 0xFF`, every other byte as itself, and ends with `0x00 0x01`. Take `a < b` and the
//!   first position `i` where they differ, or `i = len(a)` when `a` is a proper prefix of `b`;
//!   the encodings agree up to the encoding of position `i`. If `a` ended, `a` continues with
//!   `0x00 0x01` while `b` continues with either a byte `c ≥ 0x01` (and `0x00 < c`) or with
//!   `0x00 0xFF` (and `0x01 < 0xFF`). Otherwise `a[i] < b[i]`: both non-zero compare directly,
//!   and if `a[i] = 0x00` then `b[i] > 0x00` compares against the leading `0x00`. So
//!   `enc(a) <ₘ enc(b)`. The form is prefix-free because a `0x00` byte is always followed by
//!   `0xFF` (escape, the string continues) or `0x01` (terminator, the string ends), so the
//!   terminator is the first `0x00 0x01` pair and nothing of the same type can follow it.
//! - **Concatenation** (tuples; `Option` is a one-byte tag followed by a field): let every
//!   field encoding be order-preserving, injective and prefix-free. Compare `(a1, a2, ..)` with
//!   `(b1, b2, ..)`. If `a1 = b1` their encodings are equal and the comparison moves on to the
//!   next field, just like the lexicographic [`Ord`] of tuples. If `a1 ≠ b1`, the encodings
//!   differ and neither is a prefix of the other, so they differ at some byte inside both;
//!   `memcmp` decides there, in the order of `a1` vs `b1`, whatever follows. The concatenation
//!   is itself prefix-free, so tuples nest. `Option` uses tag `0x00` for `None` and `0x01`
//!   for `Some`, hence **`None` sorts before every `Some`**, as in [`Option`]'s `Ord`.
//! - **Complement** ([`Desc`]): replacing each byte `x` by `!x = 0xFF - x` reverses every
//!   byte comparison. For two byte strings that differ at some position inside both, `memcmp`
//!   decides at that position, so complementing reverses their order. It does *not* reverse
//!   the order of a string and its proper prefix: the prefix still sorts first (`"a" < "ab"`
//!   but also `!"a" < !"ab"`). That is why [`Desc`] complements the *nested* (prefix-free)
//!   encoding, where any two distinct encodings differ inside both, and why the top-level
//!   encoding of `Desc<T>` is that same nested form. Complementing keeps prefix-freeness, so
//!   `Desc` nests too.
//!
//! Floats have no [`Ord`]; their key order is [`f64::total_cmp`] / [`f32::total_cmp`]:
//! `-NaN < -inf < ... < -0.0 < 0.0 < ... < inf < NaN` (NaNs ordered by payload, sign first).
//! Note that `-0.0` and `0.0` are different keys.
//!
//! Decoding never panics and never allocates more than the length of the input slice; bad
//! bytes give [`Error::Encoding`].

use std::cmp::Ordering;

use crate::error::{Error, Result};

/// The engine's default key order: plain `memcmp` of the encoded bytes (shorter prefix first).
///
/// Every [`Key`] encoding is designed so that this order equals the order of the values.
#[must_use]
pub fn compare_encoded(a: &[u8], b: &[u8]) -> Ordering {
    a.cmp(b)
}

/// A type usable as a store key.
///
/// `encode_key` output compared with `memcmp` must order exactly as the values do ([`Ord`];
/// `total_cmp` for floats); decoding the encoding gives back an equal value. See the
/// [module documentation](self) for the reasoning behind each implementation.
pub trait Key: Sized {
    /// Persisted name of the key type, checked when a store is reopened (e.g. `"u64"`,
    /// `"String"`, `"(u32,Desc<String>)"`).
    fn type_name() -> String;

    /// Appends the top-level encoding (may be non-self-delimiting, e.g. raw UTF-8 bytes for
    /// `String`).
    fn encode_key(&self, out: &mut Vec<u8>);

    /// Decodes the top-level encoding from the whole slice.
    ///
    /// # Errors
    /// [`Error::Encoding`] when `bytes` is not exactly one valid encoding.
    fn decode_key(bytes: &[u8]) -> Result<Self>;

    /// Appends a self-delimiting (prefix-free) encoding used inside tuples, [`Option`] and
    /// [`Desc`]; default: same as `encode_key` (correct for fixed-width types).
    fn encode_key_nested(&self, out: &mut Vec<u8>) {
        self.encode_key(out);
    }

    /// Decodes a nested encoding from the front of `bytes`, advancing it past the encoding.
    ///
    /// # Errors
    /// [`Error::Encoding`] when `bytes` does not start with a valid nested encoding (`bytes`
    /// is then left in an unspecified position).
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self>;
}

/// Values are any serde type, encoded with postcard.
pub trait Value: Sized {
    /// Persisted name of the value type ([`std::any::type_name`]).
    fn type_name() -> String;

    /// Appends the postcard encoding of `self` to `out` (on error `out` is left unchanged).
    ///
    /// # Errors
    /// [`Error::Encoding`] when serde serialization fails.
    fn encode_value(&self, out: &mut Vec<u8>) -> Result<()>;

    /// Decodes a value from the whole slice.
    ///
    /// # Errors
    /// [`Error::Encoding`] when the bytes are not a valid encoding or have trailing bytes.
    fn decode_value(bytes: &[u8]) -> Result<Self>;
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Value for T {
    fn type_name() -> String {
        std::any::type_name::<T>().to_owned()
    }

    fn encode_value(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        match postcard::to_io(self, &mut *out) {
            Ok(_) => Ok(()),
            Err(e) => {
                out.truncate(start);
                Err(Error::Encoding(format!(
                    "cannot encode value of type {}: {e}",
                    std::any::type_name::<T>()
                )))
            }
        }
    }

    fn decode_value(bytes: &[u8]) -> Result<Self> {
        let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| {
            Error::Encoding(format!(
                "cannot decode value of type {}: {e}",
                std::any::type_name::<T>()
            ))
        })?;
        if rest.is_empty() {
            Ok(value)
        } else {
            Err(Error::Encoding(format!(
                "value of type {}: {} trailing bytes",
                std::any::type_name::<T>(),
                rest.len()
            )))
        }
    }
}

/// Reverses the order of the wrapped key (for descending fields of composite keys).
///
/// `Desc(a) < Desc(b)` exactly when `b < a`, both for [`Ord`] and for the key encoding: the
/// encoding is the nested (prefix-free) encoding of `T` with every byte complemented, which
/// reverses `memcmp` order (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Desc<T>(pub T);

impl<T: PartialOrd> PartialOrd for Desc<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        other.0.partial_cmp(&self.0)
    }
}

impl<T: Ord> Ord for Desc<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Builds an [`Error::Encoding`] for key type `what`.
fn bad(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::Encoding(format!("bad {what} key: {msg}"))
}

/// Decodes a top-level encoding that is the nested one: the whole slice must be consumed.
fn decode_whole<T: Key>(bytes: &[u8]) -> Result<T> {
    let mut rest = bytes;
    let value = T::decode_key_nested(&mut rest)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(bad(
            &T::type_name(),
            format_args!("{} trailing bytes", rest.len()),
        ))
    }
}

/// Takes exactly `N` bytes from the front of `bytes`.
fn take_array<const N: usize>(bytes: &mut &[u8], what: &str) -> Result<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>().ok_or_else(|| {
        bad(
            what,
            format_args!("need {N} bytes, only {} left", bytes.len()),
        )
    })?;
    *bytes = rest;
    Ok(*head)
}

/// Appends the nested form of a byte string: `0x00` → `0x00 0xFF`, then `0x00 0x01`.
fn encode_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    for &b in bytes {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Reads the nested form of a byte string from the front of `bytes` (see [`encode_escaped`]).
/// Allocates at most `bytes.len()` bytes.
fn decode_escaped(bytes: &mut &[u8], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = *bytes;
    loop {
        let Some(zero) = rest.iter().position(|&b| b == 0) else {
            return Err(bad(what, "missing terminator 0x00 0x01"));
        };
        let (plain, tail) = rest.split_at(zero);
        out.extend_from_slice(plain);
        match tail {
            [0x00, 0xFF, more @ ..] => {
                out.push(0x00);
                rest = more;
            }
            [0x00, 0x01, more @ ..] => {
                *bytes = more;
                return Ok(out);
            }
            [0x00, other, ..] => {
                return Err(bad(what, format_args!("invalid escape 0x00 {other:#04x}")));
            }
            _ => return Err(bad(what, "truncated escape or missing terminator")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Integers
// ---------------------------------------------------------------------------------------------

impl Key for u8 {
    fn type_name() -> String {
        "u8".to_owned()
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        let [b] = take_array::<1>(bytes, "u8")?;
        Ok(b)
    }
}

/// Unsigned integers wider than a byte: big-endian, built with shifts.
macro_rules! unsigned_key {
    ($($t:ty => $name:literal),+ $(,)?) => {$(
        impl Key for $t {
            fn type_name() -> String {
                $name.to_owned()
            }
            fn encode_key(&self, out: &mut Vec<u8>) {
                const WIDTH: usize = size_of::<$t>();
                let v = *self;
                for i in (0..WIDTH).rev() {
                    out.push((v >> (8 * i)) as u8);
                }
            }
            fn decode_key(bytes: &[u8]) -> Result<Self> {
                decode_whole(bytes)
            }
            fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
                const WIDTH: usize = size_of::<$t>();
                let raw = take_array::<WIDTH>(bytes, $name)?;
                let mut v: $t = 0;
                for (i, &b) in raw.iter().rev().enumerate() {
                    v |= <$t>::from(b) << (8 * i);
                }
                Ok(v)
            }
        }
    )+};
}

unsigned_key!(u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128");

/// Signed integers: the unsigned encoding of the two's complement with the sign bit flipped.
macro_rules! signed_key {
    ($($t:ty => $u:ty, $name:literal),+ $(,)?) => {$(
        impl Key for $t {
            fn type_name() -> String {
                $name.to_owned()
            }
            fn encode_key(&self, out: &mut Vec<u8>) {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                ((*self as $u) ^ SIGN).encode_key(out);
            }
            fn decode_key(bytes: &[u8]) -> Result<Self> {
                decode_whole(bytes)
            }
            fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                let u = <$u>::decode_key_nested(bytes).map_err(|_| {
                    bad($name, format_args!("need {} bytes", size_of::<$t>()))
                })?;
                Ok((u ^ SIGN) as $t)
            }
        }
    )+};
}

signed_key!(
    i8 => u8, "i8",
    i16 => u16, "i16",
    i32 => u32, "i32",
    i64 => u64, "i64",
    i128 => u128, "i128",
);

/// Encoded as `u64`, whatever the platform's pointer width.
impl Key for usize {
    fn type_name() -> String {
        "usize".to_owned()
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        (*self as u64).encode_key(out);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        let v = u64::decode_key_nested(bytes).map_err(|_| bad("usize", "need 8 bytes"))?;
        usize::try_from(v).map_err(|_| bad("usize", format_args!("{v} does not fit in usize")))
    }
}

/// Encoded as `i64`, whatever the platform's pointer width.
impl Key for isize {
    fn type_name() -> String {
        "isize".to_owned()
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        (*self as i64).encode_key(out);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        let v = i64::decode_key_nested(bytes).map_err(|_| bad("isize", "need 8 bytes"))?;
        isize::try_from(v).map_err(|_| bad("isize", format_args!("{v} does not fit in isize")))
    }
}

// ---------------------------------------------------------------------------------------------
// Floats
// ---------------------------------------------------------------------------------------------

/// Floats in IEEE total order ([`f64::total_cmp`]): negatives have all bits flipped,
/// non-negatives (sign bit clear) have the sign bit set. A bijection on bit patterns, so every
/// NaN payload round-trips. Key order: `-NaN < -inf < .. < -0.0 < 0.0 < .. < inf < NaN`.
macro_rules! float_key {
    ($($t:ty => $u:ty, $name:literal),+ $(,)?) => {$(
        impl Key for $t {
            fn type_name() -> String {
                $name.to_owned()
            }
            fn encode_key(&self, out: &mut Vec<u8>) {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                let bits = self.to_bits();
                let ordered = if bits & SIGN != 0 { !bits } else { bits ^ SIGN };
                ordered.encode_key(out);
            }
            fn decode_key(bytes: &[u8]) -> Result<Self> {
                decode_whole(bytes)
            }
            fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
                const SIGN: $u = 1 << (<$u>::BITS - 1);
                let ordered = <$u>::decode_key_nested(bytes).map_err(|_| {
                    bad($name, format_args!("need {} bytes", size_of::<$t>()))
                })?;
                let bits = if ordered & SIGN != 0 { ordered ^ SIGN } else { !ordered };
                Ok(<$t>::from_bits(bits))
            }
        }
    )+};
}

float_key!(f32 => u32, "f32", f64 => u64, "f64");

// ---------------------------------------------------------------------------------------------
// bool, char, ()
// ---------------------------------------------------------------------------------------------

/// `false` = `0x00`, `true` = `0x01`; any other byte is rejected.
impl Key for bool {
    fn type_name() -> String {
        "bool".to_owned()
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        match take_array::<1>(bytes, "bool")? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(bad(
                "bool",
                format_args!("byte {b:#04x} is neither 0 nor 1"),
            )),
        }
    }
}

/// The Unicode scalar value as a big-endian `u32`; surrogates and values above `0x10FFFF`
/// are rejected.
impl Key for char {
    fn type_name() -> String {
        "char".to_owned()
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode_key(out);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        let v = u32::decode_key_nested(bytes).map_err(|_| bad("char", "need 4 bytes"))?;
        char::from_u32(v).ok_or_else(|| bad("char", format_args!("{v:#x} is not a scalar value")))
    }
}

/// The empty encoding (a single value is trivially order-preserving and prefix-free).
impl Key for () {
    fn type_name() -> String {
        "()".to_owned()
    }
    fn encode_key(&self, _out: &mut Vec<u8>) {}
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(_bytes: &mut &[u8]) -> Result<Self> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Byte strings
// ---------------------------------------------------------------------------------------------

/// Top level: raw UTF-8 bytes. Nested: `0x00` escaped as `0x00 0xFF`, terminated by
/// `0x00 0x01`.
impl Key for String {
    fn type_name() -> String {
        "String".to_owned()
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| bad("String", e))
    }
    fn encode_key_nested(&self, out: &mut Vec<u8>) {
        encode_escaped(self.as_bytes(), out);
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        let raw = decode_escaped(bytes, "String")?;
        String::from_utf8(raw).map_err(|e| bad("String", e.utf8_error()))
    }
}

/// Top level: the raw bytes. Nested: `0x00` escaped as `0x00 0xFF`, terminated by
/// `0x00 0x01`.
impl Key for Vec<u8> {
    fn type_name() -> String {
        "Vec<u8>".to_owned()
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        Ok(bytes.to_vec())
    }
    fn encode_key_nested(&self, out: &mut Vec<u8>) {
        encode_escaped(self, out);
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        decode_escaped(bytes, "Vec<u8>")
    }
}

/// Fixed width: the `N` bytes as they are.
impl<const N: usize> Key for [u8; N] {
    fn type_name() -> String {
        format!("[u8;{N}]")
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        take_array::<N>(bytes, "[u8;N]")
    }
}

// ---------------------------------------------------------------------------------------------
// Option, Desc, tuples
// ---------------------------------------------------------------------------------------------

/// `None` = `0x00`; `Some(v)` = `0x01` followed by the nested encoding of `v`. So `None` sorts
/// before every `Some`, as in [`Option`]'s [`Ord`]. Top-level and nested forms are the same.
impl<T: Key> Key for Option<T> {
    fn type_name() -> String {
        format!("Option<{}>", T::type_name())
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0x00),
            Some(v) => {
                out.push(0x01);
                v.encode_key_nested(out);
            }
        }
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        match take_array::<1>(bytes, "Option")? {
            [0x00] => Ok(None),
            [0x01] => T::decode_key_nested(bytes).map(Some),
            [b] => Err(bad(
                &Self::type_name(),
                format_args!("tag {b:#04x} is neither 0 nor 1"),
            )),
        }
    }
}

/// The nested encoding of `T` with every byte complemented; top-level = nested. Complement
/// reverses `memcmp` order only between strings that differ inside both, which the prefix-free
/// nested form guarantees (see the [module documentation](self)).
impl<T: Key> Key for Desc<T> {
    fn type_name() -> String {
        format!("Desc<{}>", T::type_name())
    }
    fn encode_key(&self, out: &mut Vec<u8>) {
        self.encode_key_nested(out);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self> {
        decode_whole(bytes)
    }
    fn encode_key_nested(&self, out: &mut Vec<u8>) {
        let start = out.len();
        self.0.encode_key_nested(out);
        if let Some(written) = out.get_mut(start..) {
            for b in written {
                *b = !*b;
            }
        }
    }
    /// The end of the field is only known once `T` has decoded it, so this complements the
    /// rest of the input into a scratch buffer (bounded by the input length) and decodes `T`
    /// from there.
    fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
        let flipped: Vec<u8> = bytes.iter().map(|b| !b).collect();
        let mut rest = flipped.as_slice();
        let value = T::decode_key_nested(&mut rest)?;
        let used = flipped.len() - rest.len();
        *bytes = bytes
            .get(used..)
            .ok_or_else(|| bad(&Self::type_name(), "decoder overran the input"))?;
        Ok(Desc(value))
    }
}

/// Tuples: the concatenation of the nested encodings of the fields, at top level too.
macro_rules! tuple_key {
    ($($name:ident . $idx:tt),+) => {
        impl<$($name: Key),+> Key for ($($name,)+) {
            fn type_name() -> String {
                let fields: &[String] = &[$($name::type_name()),+];
                let trailing_comma = if fields.len() == 1 { "," } else { "" };
                format!("({}{trailing_comma})", fields.join(","))
            }
            fn encode_key(&self, out: &mut Vec<u8>) {
                $(self.$idx.encode_key_nested(out);)+
            }
            fn decode_key(bytes: &[u8]) -> Result<Self> {
                decode_whole(bytes)
            }
            fn decode_key_nested(bytes: &mut &[u8]) -> Result<Self> {
                Ok(($($name::decode_key_nested(bytes)?,)+))
            }
        }
    };
}

tuple_key!(A.0);
tuple_key!(A.0, B.1);
tuple_key!(A.0, B.1, C.2);
tuple_key!(A.0, B.1, C.2, D.3);
tuple_key!(A.0, B.1, C.2, D.3, E.4);
tuple_key!(A.0, B.1, C.2, D.3, E.4, F.5);
tuple_key!(A.0, B.1, C.2, D.3, E.4, F.5, G.6);
tuple_key!(A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7);

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fmt::Debug;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::*;

    fn enc<K: Key>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.encode_key(&mut out);
        out
    }

    fn enc_nested<K: Key>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.encode_key_nested(&mut out);
        out
    }

    fn is_encoding_err<T>(r: &Result<T>) -> bool {
        matches!(r, Err(Error::Encoding(_)))
    }

    /// Round trips, nested round trip with trailing data, truncations of `x`'s encodings.
    fn check_one<K: Key + Debug>(
        x: &K,
        same: &impl Fn(&K, &K) -> bool,
    ) -> Result<(), TestCaseError> {
        // Top-level round trip.
        let top = enc(x);
        let back = K::decode_key(&top).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, x), "top-level round trip {:?} -> {:?}", x, back);

        // Nested round trip with trailing data left in place.
        let nested = enc_nested(x);
        let mut buf = nested.clone();
        buf.extend_from_slice(&[0x00, 0x01, 0xFF, 0x00, b't']);
        let mut rest = buf.as_slice();
        let back =
            K::decode_key_nested(&mut rest).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&back, x), "nested round trip {:?} -> {:?}", x, back);
        prop_assert_eq!(rest, &buf[nested.len()..]);

        // Top-level decoding of the nested form must not panic; if it succeeds, canonical.
        check_canonical::<K>(&nested)?;

        // Truncations of the top-level encoding: an error, or a value re-encoding to them.
        for cut in 0..top.len() {
            let prefix = &top[..cut];
            match K::decode_key(prefix) {
                Ok(v) => prop_assert_eq!(enc(&v), prefix),
                r => prop_assert!(is_encoding_err(&r)),
            }
        }
        // Truncations of the nested encoding: always an error (prefix-free + canonical).
        for cut in 0..nested.len() {
            let mut prefix = &nested[..cut];
            let r = K::decode_key_nested(&mut prefix);
            prop_assert!(
                is_encoding_err(&r),
                "truncated nested decoded: {:?}",
                r.ok()
            );
        }
        Ok(())
    }

    /// Order of top-level and nested encodings, prefix-freeness, then [`check_one`] for each.
    fn check_pair_by<K: Key + Debug>(
        a: &K,
        b: &K,
        cmp: impl Fn(&K, &K) -> Ordering,
        same: impl Fn(&K, &K) -> bool,
    ) -> Result<(), TestCaseError> {
        let want = cmp(a, b);
        prop_assert_eq!(
            want,
            compare_encoded(&enc(a), &enc(b)),
            "top {:?} {:?}",
            a,
            b
        );
        let (na, nb) = (enc_nested(a), enc_nested(b));
        prop_assert_eq!(want, na.cmp(&nb), "nested {:?} {:?}", a, b);
        if want != Ordering::Equal {
            prop_assert!(
                !na.starts_with(&nb) && !nb.starts_with(&na),
                "not prefix-free"
            );
        }
        check_one(a, &same)?;
        check_one(b, &same)
    }

    /// [`check_pair_by`] for `K` and for `Desc<K>`.
    fn check_pair<K: Key + Ord + Clone + Debug>(a: &K, b: &K) -> Result<(), TestCaseError> {
        check_pair_by(a, b, K::cmp, K::eq)?;
        check_pair_by(&Desc(a.clone()), &Desc(b.clone()), Desc::cmp, Desc::eq)
    }

    /// If `bytes` decodes, the value re-encodes to exactly the bytes consumed.
    fn check_canonical<K: Key + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
        match K::decode_key(bytes) {
            Ok(v) => prop_assert_eq!(enc(&v), bytes, "non-canonical top {:?}", v),
            r => prop_assert!(is_encoding_err(&r)),
        }
        let mut rest = bytes;
        match K::decode_key_nested(&mut rest) {
            Ok(v) => {
                let used = bytes.len() - rest.len();
                prop_assert_eq!(
                    enc_nested(&v),
                    &bytes[..used],
                    "non-canonical nested {:?}",
                    v
                );
            }
            r => prop_assert!(is_encoding_err(&r)),
        }
        Ok(())
    }

    fn check_garbage<K: Key + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
        check_canonical::<K>(bytes)?;
        check_canonical::<Desc<K>>(bytes)?;
        check_canonical::<Option<K>>(bytes)?;
        check_canonical::<(K, u8)>(bytes)
    }

    /// Random bytes, biased towards the bytes the escapes and tags use.
    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            3 => any::<u8>(),
            1 => Just(0x00u8),
            1 => Just(0x01u8),
            1 => Just(0xFEu8),
            1 => Just(0xFFu8),
        ];
        prop_oneof![vec(any::<u8>(), 0..40), vec(byte, 0..40)]
    }

    /// Short byte strings over a small alphabet, so prefixes and escapes are common.
    fn small_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(0x00u8),
            Just(0x01u8),
            Just(0x02u8),
            Just(0xFEu8),
            Just(0xFFu8),
            any::<u8>(),
        ];
        prop_oneof![vec(byte, 0..6), vec(any::<u8>(), 0..24)]
    }

    fn small_string() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            Just('\0'),
            Just('\u{1}'),
            Just('a'),
            Just('b'),
            Just('\u{7f}'),
            Just('é'),
            Just('\u{ffff}'),
            Just('\u{10ffff}'),
            any::<char>(),
        ];
        prop_oneof![
            vec(ch, 0..6).prop_map(|cs| cs.into_iter().collect::<String>()),
            any::<String>(),
        ]
    }

    fn float64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            any::<u64>().prop_map(f64::from_bits),
            prop::sample::select(vec![
                0.0,
                -0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                -f64::NAN,
                f64::MIN_POSITIVE,
                -f64::MIN_POSITIVE,
                f64::from_bits(1),
                -f64::from_bits(1),
                f64::MAX,
                f64::MIN,
                1.0,
                -1.0,
            ]),
        ]
    }

    fn float32() -> impl Strategy<Value = f32> {
        prop_oneof![
            any::<f32>(),
            any::<u32>().prop_map(f32::from_bits),
            prop::sample::select(vec![
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                -f32::NAN,
                f32::MIN_POSITIVE,
                f32::from_bits(1),
                -f32::from_bits(1),
                f32::MAX,
                f32::MIN,
            ]),
        ]
    }

    macro_rules! int_props {
        ($($test:ident: $t:ty;)+) => {
            proptest! {
                $(
                    #[test]
                    fn $test(
                        a in prop_oneof![
                            4 => any::<$t>(),
                            1 => Just(<$t>::MIN),
                            1 => Just(<$t>::MAX),
                            1 => (0 as $t)..=(3 as $t),
                        ],
                        b in any::<$t>(),
                        g in garbage(),
                    ) {
                        check_pair(&a, &b)?;
                        check_pair(&a, &a.wrapping_add(1))?;
                        check_pair(&a, &a.wrapping_sub(1))?;
                        check_pair(&a, &(a ^ 0x40))?;
                        check_pair(&a, &a)?;
                        check_garbage::<$t>(&g)?;
                    }
                )+
            }
        };
    }

    int_props! {
        prop_u8: u8;
        prop_u16: u16;
        prop_u32: u32;
        prop_u64: u64;
        prop_u128: u128;
        prop_usize: usize;
        prop_i8: i8;
        prop_i16: i16;
        prop_i32: i32;
        prop_i64: i64;
        prop_i128: i128;
        prop_isize: isize;
    }

    macro_rules! key_props {
        ($($test:ident: $t:ty = $strat:expr;)+) => {
            proptest! {
                $(
                    #[test]
                    fn $test(a in $strat, b in $strat, g in garbage()) {
                        let (a, b): ($t, $t) = (a, b);
                        check_pair(&a, &b)?;
                        check_pair(&a, &a)?;
                        check_garbage::<$t>(&g)?;
                    }
                )+
            }
        };
    }

    key_props! {
        prop_bool: bool = any::<bool>();
        prop_char: char = any::<char>();
        prop_unit: () = Just(());
        prop_string: String = small_string();
        prop_bytes: Vec<u8> = small_bytes();
        prop_array0: [u8; 0] = any::<[u8; 0]>();
        prop_array3: [u8; 3] = prop::array::uniform3(prop_oneof![Just(0u8), Just(0xFF), any::<u8>()]);
        prop_array16: [u8; 16] = any::<[u8; 16]>();
        prop_option_string: Option<String> = proptest::option::of(small_string());
        prop_option_option: Option<Option<Vec<u8>>> =
            proptest::option::of(proptest::option::of(small_bytes()));
        prop_option_unit: Option<()> = proptest::option::of(Just(()));
        prop_desc_desc: Desc<Desc<String>> = small_string().prop_map(|s| Desc(Desc(s)));
        prop_tuple1: (String,) = (small_string(),);
        prop_tuple_u32_desc_string: (u32, Desc<String>) =
            (0u32..4, small_string().prop_map(Desc));
        prop_tuple3: (String, Vec<u8>, Option<i64>) =
            (small_string(), small_bytes(), proptest::option::of(-2i64..2));
        prop_tuple_nested_desc: (Desc<Option<String>>, bool, Desc<(u8, Vec<u8>)>) = (
            proptest::option::of(small_string()).prop_map(Desc),
            any::<bool>(),
            (0u8..3, small_bytes()).prop_map(Desc),
        );
        prop_tuple_units: ((), String, ()) = (Just(()), small_string(), Just(()));
        prop_tuple_desc_bytes_bytes: (Desc<Vec<u8>>, Vec<u8>) =
            (small_bytes().prop_map(Desc), small_bytes());
        prop_tuple8: (u8, i16, Desc<u32>, Desc<i64>, String, char, Option<Vec<u8>>, Desc<String>) = (
            0u8..2,
            -1i16..1,
            (0u32..2).prop_map(Desc),
            (-1i64..1).prop_map(Desc),
            small_string(),
            prop_oneof![Just('a'), any::<char>()],
            proptest::option::of(small_bytes()),
            small_string().prop_map(Desc),
        );
    }

    proptest! {
        #[test]
        fn prop_f64(a in float64(), b in float64(), g in garbage()) {
            let same = |x: &f64, y: &f64| x.to_bits() == y.to_bits();
            let next = f64::from_bits(a.to_bits().wrapping_add(1));
            for (x, y) in [(a, b), (a, a), (a, next), (a, -a)] {
                check_pair_by(&x, &y, f64::total_cmp, same)?;
                check_pair_by(
                    &Desc(x),
                    &Desc(y),
                    |p: &Desc<f64>, q: &Desc<f64>| q.0.total_cmp(&p.0),
                    |p: &Desc<f64>, q: &Desc<f64>| same(&p.0, &q.0),
                )?;
                check_pair_by(
                    &(x, 1u8),
                    &(y, 0u8),
                    |p: &(f64, u8), q: &(f64, u8)| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)),
                    |p: &(f64, u8), q: &(f64, u8)| same(&p.0, &q.0) && p.1 == q.1,
                )?;
            }
            check_garbage::<f64>(&g)?;
        }

        #[test]
        fn prop_f32(a in float32(), b in float32(), g in garbage()) {
            let same = |x: &f32, y: &f32| x.to_bits() == y.to_bits();
            let next = f32::from_bits(a.to_bits().wrapping_add(1));
            for (x, y) in [(a, b), (a, a), (a, next), (a, -a)] {
                check_pair_by(&x, &y, f32::total_cmp, same)?;
                check_pair_by(
                    &Desc(x),
                    &Desc(y),
                    |p: &Desc<f32>, q: &Desc<f32>| q.0.total_cmp(&p.0),
                    |p: &Desc<f32>, q: &Desc<f32>| same(&p.0, &q.0),
                )?;
            }
            check_garbage::<f32>(&g)?;
        }

        /// Garbage for composite types too (the per-type tests cover the scalars).
        #[test]
        fn prop_garbage_composites(g in garbage()) {
            check_garbage::<String>(&g)?;
            check_garbage::<Vec<u8>>(&g)?;
            check_garbage::<(u32, Desc<String>)>(&g)?;
            check_garbage::<(Desc<Option<String>>, bool, Desc<(u8, Vec<u8>)>)>(&g)?;
            check_garbage::<Desc<Desc<Vec<u8>>>>(&g)?;
            check_garbage::<(char, [u8; 2], Option<bool>, (), Desc<f64>)>(&g)?;
        }

        /// Exhaustive check over a tiny domain: sorting by encoding equals sorting by value.
        #[test]
        fn prop_sort_matches(mut keys in vec((small_string(), proptest::option::of(small_bytes()).prop_map(Desc), -3i8..3), 0..20)) {
            let mut by_bytes = keys.clone();
            by_bytes.sort_by_key(enc);
            keys.sort();
            prop_assert_eq!(keys, by_bytes);
        }
    }

    #[test]
    fn known_encodings() {
        assert_eq!(enc(&0x0102_0304u32), [1, 2, 3, 4]);
        assert_eq!(enc(&0x0102u16), [1, 2]);
        assert_eq!(enc(&0xABu8), [0xAB]);
        assert_eq!(enc(&(u128::MAX - 1))[15], 0xFE);
        assert_eq!(enc(&-1i8), [0x7F]);
        assert_eq!(enc(&0i8), [0x80]);
        assert_eq!(enc(&i32::MIN), [0, 0, 0, 0]);
        assert_eq!(enc(&1usize), enc(&1u64));
        assert_eq!(enc(&-1isize), enc(&-1i64));
        assert_eq!(enc(&0.0f64), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            enc(&-0.0f64),
            [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert!(enc(&-0.0f64) < enc(&0.0f64));
        assert!(enc(&f64::INFINITY) < enc(&f64::NAN));
        assert!(enc(&-f64::NAN) < enc(&f64::NEG_INFINITY));
        assert_eq!(enc(&'A'), [0, 0, 0, 0x41]);
        assert_eq!(enc(&true), [1]);
        assert_eq!(enc(&()), [0u8; 0]);
        assert_eq!(enc(&"a\0b".to_owned()), b"a\0b");
        assert_eq!(enc_nested(&"a\0b".to_owned()), [b'a', 0, 0xFF, b'b', 0, 1]);
        assert_eq!(enc_nested(&String::new()), [0, 1]);
        assert_eq!(enc(&None::<u8>), [0]);
        assert_eq!(enc(&Some(7u8)), [1, 7]);
        assert_eq!(enc(&Some(String::new())), [1, 0, 1]);
        assert_eq!(enc(&Desc(String::new())), [0xFF, 0xFE]);
        assert_eq!(enc(&Desc(5u8)), [0xFA]);
        assert_eq!(
            enc(&(1u16, "x".to_owned())),
            [0, 1, b'x', 0, 1],
            "top-level tuple is nested fields concatenated"
        );
        assert_eq!(enc(&[9u8, 8]), [9, 8]);
    }

    #[test]
    fn desc_needs_prefix_free_form() {
        // Raw bytes complemented would keep "a" < "ab"; Desc must reverse it.
        let a = Desc("a".to_owned());
        let ab = Desc("ab".to_owned());
        assert!(ab < a);
        assert!(enc(&ab) < enc(&a));
        assert_eq!(Desc(1).partial_cmp(&Desc(2)), Some(Ordering::Greater));
        assert_eq!(Desc(f64::NAN).partial_cmp(&Desc(1.0)), None);
    }

    #[test]
    fn decode_errors() {
        assert!(is_encoding_err(&u32::decode_key(&[1, 2, 3])));
        assert!(is_encoding_err(&u32::decode_key(&[1, 2, 3, 4, 5])));
        assert!(is_encoding_err(&u8::decode_key(&[])));
        assert!(is_encoding_err(&i64::decode_key(&[0; 7])));
        assert!(is_encoding_err(&f32::decode_key(&[0; 5])));
        assert!(is_encoding_err(&bool::decode_key(&[2])));
        assert!(is_encoding_err(&char::decode_key(&[0, 0, 0xD8, 0])));
        assert!(is_encoding_err(&char::decode_key(&[0, 0x11, 0, 0])));
        assert!(is_encoding_err(&<()>::decode_key(&[0])));
        assert!(is_encoding_err(&String::decode_key(&[0xFF])));
        assert!(is_encoding_err(&<[u8; 2]>::decode_key(&[1])));
        assert!(is_encoding_err(&Option::<u8>::decode_key(&[2, 0])));
        assert!(is_encoding_err(&Option::<u8>::decode_key(&[1])));
        assert!(is_encoding_err(&Option::<u8>::decode_key(&[0, 0])));
        assert!(is_encoding_err(&<(u8, u8)>::decode_key(&[1, 2, 3])));
        assert!(is_encoding_err(&Desc::<String>::decode_key(&[0x9E])));
        // Nested strings: missing terminator, bad escape, truncated escape, invalid UTF-8.
        let nested = |b: &[u8]| {
            let mut s = b;
            String::decode_key_nested(&mut s)
        };
        assert!(is_encoding_err(&nested(b"abc")));
        assert!(is_encoding_err(&nested(&[b'a', 0, 2, 0, 1])));
        assert!(is_encoding_err(&nested(&[b'a', 0])));
        assert!(is_encoding_err(&nested(&[0xC3, 0, 1])));
        assert_eq!(nested(&[0, 0xFF, 0, 1]).unwrap(), "\0");
        // Top level rejects trailing bytes after a nested-form key.
        assert!(is_encoding_err(&<(String,)>::decode_key(&[b'a', 0, 1, 0])));
        assert!(is_encoding_err(&Desc::<u8>::decode_key(&[1, 2])));
        // Variable-width top-level types accept any (valid) slice.
        assert_eq!(Vec::<u8>::decode_key(&[0, 1, 2]).unwrap(), vec![0, 1, 2]);
        assert_eq!(String::decode_key(b"").unwrap(), "");
    }

    #[test]
    fn type_names() {
        assert_eq!(<u64 as Key>::type_name(), "u64");
        assert_eq!(<usize as Key>::type_name(), "usize");
        assert_eq!(<String as Key>::type_name(), "String");
        assert_eq!(
            <(u32, Desc<String>) as Key>::type_name(),
            "(u32,Desc<String>)"
        );
        assert_eq!(<(String,) as Key>::type_name(), "(String,)");
        assert_eq!(<Option<Vec<u8>> as Key>::type_name(), "Option<Vec<u8>>");
        assert_eq!(<[u8; 16] as Key>::type_name(), "[u8;16]");
        assert_eq!(<() as Key>::type_name(), "()");
        assert_eq!(<f64 as Key>::type_name(), "f64");
        assert_eq!(
            <(u8, u8, u8, u8, u8, u8, u8, Desc<i128>) as Key>::type_name(),
            "(u8,u8,u8,u8,u8,u8,u8,Desc<i128>)"
        );
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Record {
        name: String,
        n: u32,
        tags: Vec<String>,
    }

    #[test]
    fn values_round_trip() {
        let r = Record {
            name: "x".into(),
            n: 7,
            tags: vec!["a".into(), String::new()],
        };
        let mut out = vec![0xAA];
        r.encode_value(&mut out).unwrap();
        assert_eq!(out[0], 0xAA, "appends");
        assert_eq!(Record::decode_value(&out[1..]).unwrap(), r);
        let mut long = out[1..].to_vec();
        long.push(0);
        assert!(is_encoding_err(&Record::decode_value(&long)));
        assert!(is_encoding_err(&Record::decode_value(&out[1..3])));
        assert!(<Record as Value>::type_name().ends_with("Record"));
        assert_eq!(<String as Value>::type_name(), "alloc::string::String");
    }

    proptest! {
        #[test]
        fn prop_value_garbage(g in garbage()) {
            let _ = Record::decode_value(&g);
            let _ = <(String, Vec<u64>, Option<f64>) as Value>::decode_value(&g);
        }

        #[test]
        fn prop_value_round_trip(s in small_string(), v in vec(any::<u64>(), 0..8), o in proptest::option::of(any::<i32>())) {
            let x = (s, v, o);
            let mut out = Vec::new();
            x.encode_value(&mut out).unwrap();
            prop_assert_eq!(<(String, Vec<u64>, Option<i32>)>::decode_value(&out).unwrap(), x);
        }
    }
}
