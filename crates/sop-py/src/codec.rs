//! Key and value encodings.
//!
//! **Keys** are encoded so that the engine's byte order is Python's order: `None` < `False` <
//! `True` < numbers (ints and floats compared by value, `1 == 1.0`) < `str` (code point order)
//! < `bytes` < dicts. Every encoding is prefix-free, so fields of a composite key can be
//! concatenated, and a descending field is the bytewise complement of its encoding.
//!
//! ```text
//! None   01
//! False  02          True 03
//! number 10 <f64 order bytes, 8> 01 <i128 order bytes, 16>   (integral values in i128 range)
//!        10 <f64 order bytes, 8> 02                          (other floats, infinities)
//! str    20 <utf-8, 00 escaped as 00 ff> 00 00
//! bytes  30 <bytes, 00 escaped as 00 ff> 00 00
//! dict   40 (02 <str name> <value>)* 01                      (no index specification: all fields by name)
//! spec   <field 1> <field 2> ...                             (index specification: listed fields, in order)
//! ```
//!
//! **Values** are framed as `flags [key json] tag payload`: flag bit 0 says the full key (as JSON)
//! is stored in front of the value, which composite stores need to give back the dict the caller
//! stored (fields outside the index specification are not in the encoded key). Tags: 0 `None`,
//! 1 JSON text, 2 raw bytes.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};

const T_NONE: u8 = 0x01;
const T_FALSE: u8 = 0x02;
const T_TRUE: u8 = 0x03;
const T_NUM: u8 = 0x10;
const T_STR: u8 = 0x20;
const T_BYTES: u8 = 0x30;
const T_MAP: u8 = 0x40;
const NUM_INT: u8 = 0x01;
const NUM_FLOAT: u8 = 0x02;
const MAP_ENTRY: u8 = 0x02;
const MAP_END: u8 = 0x01;

const V_NONE: u8 = 0;
const V_JSON: u8 = 1;
const V_BYTES: u8 = 2;
const F_KEY: u8 = 1;

/// How the keys of a store are shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// Primitive keys: str, int, float, bytes (and None / bool).
    Scalar,
    /// Dict keys without an index specification: ordered by all fields, by name.
    AnyMap,
    /// Dict keys ordered by the listed fields (name, ascending).
    Fields(Vec<(String, bool)>),
}

impl KeySpec {
    /// True when values carry the full key (dict keys).
    pub fn composite(&self) -> bool {
        !matches!(self, KeySpec::Scalar)
    }
}

fn f64_order(x: f64) -> [u8; 8] {
    let b = x.to_bits();
    let b = if b >> 63 == 1 { !b } else { b | (1 << 63) };
    b.to_be_bytes()
}

fn f64_from_order(b: [u8; 8]) -> f64 {
    let b = u64::from_be_bytes(b);
    let b = if b >> 63 == 1 { b & !(1 << 63) } else { !b };
    f64::from_bits(b)
}

fn push_int(i: i128, out: &mut Vec<u8>) {
    out.push(T_NUM);
    #[allow(clippy::cast_precision_loss)]
    out.extend_from_slice(&f64_order(i as f64));
    out.push(NUM_INT);
    out.extend_from_slice(&((i as u128) ^ (1 << 127)).to_be_bytes());
}

fn push_float(x: f64, out: &mut Vec<u8>) -> PyResult<()> {
    if x.is_nan() {
        return Err(PyValueError::new_err("NaN cannot be a key"));
    }
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0; // 2^127
    if x.is_finite() && x.fract() == 0.0 && (-LIMIT..LIMIT).contains(&x) {
        #[allow(clippy::cast_possible_truncation)]
        push_int(x as i128, out);
    } else {
        out.push(T_NUM);
        out.extend_from_slice(&f64_order(x));
        out.push(NUM_FLOAT);
    }
    Ok(())
}

fn push_escaped(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 3);
    out.push(tag);
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| b == 0) {
        out.extend_from_slice(&rest[..=i]);
        out.push(0xFF);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0, 0]);
}

/// Encodes one scalar (or a dict, by all its fields) in the prefix-free form.
pub fn encode_value_key(v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if v.is_none() {
        out.push(T_NONE);
    } else if let Ok(b) = v.cast::<PyBool>() {
        out.push(if b.is_true() { T_TRUE } else { T_FALSE });
    } else if v.is_instance_of::<PyInt>() {
        let i: i128 = v.extract().map_err(|_| {
            PyValueError::new_err("integer key out of range (keys are limited to 128-bit integers)")
        })?;
        push_int(i, out);
    } else if let Ok(f) = v.cast::<PyFloat>() {
        push_float(f.value(), out)?;
    } else if let Ok(s) = v.cast::<PyString>() {
        push_escaped(T_STR, s.to_str()?.as_bytes(), out);
    } else if let Ok(b) = v.cast::<PyBytes>() {
        push_escaped(T_BYTES, b.as_bytes(), out);
    } else if let Ok(d) = v.cast::<PyDict>() {
        let mut fields: Vec<(String, Bound<'_, PyAny>)> = Vec::with_capacity(d.len());
        for (k, val) in d.iter() {
            let name: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err("dict keys of a key must be str"))?;
            fields.push((name, val));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(T_MAP);
        for (name, val) in fields {
            out.push(MAP_ENTRY);
            push_escaped(T_STR, name.as_bytes(), out);
            encode_value_key(&val, out)?;
        }
        out.push(MAP_END);
    } else {
        return Err(PyTypeError::new_err(format!(
            "unsupported key type {}: keys are str, int, float, bytes, bool, None or dict",
            v.get_type().name()?
        )));
    }
    Ok(())
}

/// Encodes a key of a store. With `prefix`, a dict key of an index-specified store may hold
/// only the leading fields (for range bounds).
pub fn encode_key(spec: &KeySpec, key: &Bound<'_, PyAny>, prefix: bool) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(16);
    encode_key_into(spec, key, prefix, &mut out)?;
    Ok(out)
}

/// [`encode_key`], appended to `out` (batches encode into one buffer).
pub fn encode_key_into(
    spec: &KeySpec,
    key: &Bound<'_, PyAny>,
    prefix: bool,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    match spec {
        KeySpec::Scalar => {
            if key.is_instance_of::<PyDict>() {
                return Err(PyTypeError::new_err(
                    "this store has primitive keys; create it with an index_spec (or \
                     is_primitive_key=False) to use dict keys",
                ));
            }
            encode_value_key(key, out)?;
        }
        KeySpec::AnyMap => {
            if !key.is_instance_of::<PyDict>() {
                return Err(PyTypeError::new_err("this store has dict keys"));
            }
            encode_value_key(key, out)?;
        }
        KeySpec::Fields(fields) => {
            let d = key
                .cast::<PyDict>()
                .map_err(|_| PyTypeError::new_err("this store has dict keys"))?;
            for (name, asc) in fields {
                let Some(v) = d.get_item(name)? else {
                    if prefix {
                        break;
                    }
                    return Err(PyValueError::new_err(format!(
                        "key is missing the index field {name:?}"
                    )));
                };
                let start = out.len();
                encode_value_key(&v, out)?;
                if !asc {
                    for b in &mut out[start..] {
                        *b = !*b;
                    }
                }
            }
        }
    }
    Ok(())
}

fn corrupt(what: &str) -> PyErr {
    PyValueError::new_err(format!("undecodable stored key: {what}"))
}

fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> PyResult<&'a [u8]> {
    let s = b.get(*pos..*pos + n).ok_or_else(|| corrupt("truncated"))?;
    *pos += n;
    Ok(s)
}

fn take_escaped(b: &[u8], pos: &mut usize) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let c = *b.get(*pos).ok_or_else(|| corrupt("unterminated string"))?;
        *pos += 1;
        if c == 0 {
            let n = *b.get(*pos).ok_or_else(|| corrupt("unterminated string"))?;
            *pos += 1;
            if n == 0 {
                return Ok(out);
            }
            out.push(0);
        } else {
            out.push(c);
        }
    }
}

/// Decodes one prefix-free encoded key value at `pos`.
pub fn decode_value_key(py: Python<'_>, b: &[u8], pos: &mut usize) -> PyResult<Py<PyAny>> {
    let tag = *b.get(*pos).ok_or_else(|| corrupt("empty"))?;
    *pos += 1;
    Ok(match tag {
        T_NONE => py.None(),
        T_FALSE => PyBool::new(py, false).to_owned().into_any().unbind(),
        T_TRUE => PyBool::new(py, true).to_owned().into_any().unbind(),
        T_NUM => {
            let mut p = [0u8; 8];
            p.copy_from_slice(take(b, pos, 8)?);
            let kind = take(b, pos, 1)?[0];
            if kind == NUM_INT {
                let mut i = [0u8; 16];
                i.copy_from_slice(take(b, pos, 16)?);
                let v = (u128::from_be_bytes(i) ^ (1 << 127)) as i128;
                v.into_pyobject(py)?.into_any().unbind()
            } else {
                PyFloat::new(py, f64_from_order(p)).into_any().unbind()
            }
        }
        T_STR => {
            let s = take_escaped(b, pos)?;
            let s = String::from_utf8(s).map_err(|_| corrupt("bad utf-8"))?;
            PyString::new(py, &s).into_any().unbind()
        }
        T_BYTES => PyBytes::new(py, &take_escaped(b, pos)?).into_any().unbind(),
        T_MAP => {
            let d = PyDict::new(py);
            loop {
                match take(b, pos, 1)?[0] {
                    MAP_END => break,
                    MAP_ENTRY => {
                        let k = decode_value_key(py, b, pos)?;
                        let v = decode_value_key(py, b, pos)?;
                        d.set_item(k, v)?;
                    }
                    _ => return Err(corrupt("bad dict entry")),
                }
            }
            d.into_any().unbind()
        }
        _ => return Err(corrupt("unknown tag")),
    })
}

/// `json.dumps(v, separators=(",", ":"))` and `json.loads`, looked up once per process.
static JSON_DUMPS: PyOnceLock<(Py<PyAny>, Py<PyDict>)> = PyOnceLock::new();
static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn json_dumps_py(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let py = v.py();
    let (dumps, kw) = JSON_DUMPS.get_or_try_init(py, || -> PyResult<_> {
        let kw = PyDict::new(py);
        kw.set_item("separators", (",", ":"))?;
        Ok((py.import("json")?.getattr("dumps")?.unbind(), kw.unbind()))
    })?;
    let s = dumps.bind(py).call((v,), Some(kw.bind(py)))?;
    Ok(s.cast::<PyString>()?.to_str()?.as_bytes().to_vec())
}

/// Appends `s` as a JSON string literal (non-ASCII stays UTF-8, which `json.loads` reads back).
fn push_json_str(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'"' && b != b'\\' && b >= 0x20 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends the JSON text of `v`: str, int and bool in Rust, anything else through `json.dumps`.
fn json_dumps_into(v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(s) = v.cast_exact::<PyString>() {
        if let Ok(s) = s.to_str() {
            push_json_str(s, out);
            return Ok(());
        }
    } else if let Ok(b) = v.cast_exact::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
        return Ok(());
    } else if v.is_exact_instance_of::<PyInt>()
        && let Ok(i) = v.extract::<i64>()
    {
        out.extend_from_slice(i.to_string().as_bytes());
        return Ok(());
    }
    out.extend(json_dumps_py(v)?);
    Ok(())
}

fn json_dumps(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    json_dumps_into(v, &mut out)?;
    Ok(out)
}

/// `json.loads`, with str / small int / true / false / null decoded in Rust.
fn json_loads(py: Python<'_>, b: &[u8]) -> PyResult<Py<PyAny>> {
    match b {
        [b'"', inner @ .., b'"'] if !inner.iter().any(|&c| c == b'\\' || c == b'"' || c < 0x20) => {
            if let Ok(s) = std::str::from_utf8(inner) {
                return Ok(PyString::new(py, s).into_any().unbind());
            }
        }
        b"true" => return Ok(PyBool::new(py, true).to_owned().into_any().unbind()),
        b"false" => return Ok(PyBool::new(py, false).to_owned().into_any().unbind()),
        b"null" => return Ok(py.None()),
        [first, ..]
            if b.len() <= 18
                && (first.is_ascii_digit() || *first == b'-')
                && b.iter().skip(1).all(u8::is_ascii_digit) =>
        {
            if let Ok(s) = std::str::from_utf8(b)
                && let Ok(i) = s.parse::<i64>()
                // JSON has no leading zeros ("01"); leave odd forms to json.loads.
                && i.to_string() == s
            {
                return Ok(i.into_pyobject(py)?.into_any().unbind());
            }
        }
        _ => {}
    }
    let s = std::str::from_utf8(b).map_err(|_| corrupt("stored JSON is not utf-8"))?;
    let loads = JSON_LOADS.get_or_try_init(py, || -> PyResult<_> {
        Ok(py.import("json")?.getattr("loads")?.unbind())
    })?;
    Ok(loads.bind(py).call1((s,))?.unbind())
}

/// Frames a value (and, for composite stores, the full key) for storage.
/// Appends to `out` (batches encode into one buffer).
pub fn encode_stored_into(
    spec: &KeySpec,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    if spec.composite() {
        out.push(F_KEY);
        let k = json_dumps(key)?;
        let len = u32::try_from(k.len()).map_err(|_| PyValueError::new_err("key too large"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&k);
    } else {
        out.push(0);
    }
    if value.is_none() {
        out.push(V_NONE);
    } else if let Ok(b) = value.cast::<PyBytes>() {
        out.push(V_BYTES);
        out.extend_from_slice(b.as_bytes());
    } else {
        out.push(V_JSON);
        json_dumps_into(value, out)?;
    }
    Ok(())
}

/// The JSON form of a key as stored in front of the values of composite stores (None for
/// primitive-key stores, whose keys decode from the key bytes).
pub fn stored_key_json(spec: &KeySpec, key: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    if spec.composite() {
        json_dumps(key).map(Some)
    } else {
        Ok(None)
    }
}

/// A stored value of a composite store with its full key replaced by `key_json` (the value
/// itself is kept).
pub fn restamp_key(key_json: &[u8], stored: &[u8]) -> PyResult<Vec<u8>> {
    let (_, value) = split_stored(stored)?;
    let len = u32::try_from(key_json.len()).map_err(|_| PyValueError::new_err("key too large"))?;
    let mut out = Vec::with_capacity(5 + key_json.len() + value.len());
    out.push(F_KEY);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(key_json);
    out.extend_from_slice(value);
    Ok(out)
}

/// Splits a stored value into (full key JSON if any, value object).
fn split_stored(b: &[u8]) -> PyResult<(Option<&[u8]>, &[u8])> {
    let mut pos = 0;
    let flags = take(b, &mut pos, 1)?[0];
    let key = if flags & F_KEY != 0 {
        let mut l = [0u8; 4];
        l.copy_from_slice(take(b, &mut pos, 4)?);
        let n = u32::from_le_bytes(l) as usize;
        Some(take(b, &mut pos, n)?)
    } else {
        None
    };
    Ok((key, b.get(pos..).unwrap_or_default()))
}

/// Decodes a stored value.
pub fn decode_value(py: Python<'_>, b: &[u8]) -> PyResult<Py<PyAny>> {
    let (_, v) = split_stored(b)?;
    let Some((&tag, rest)) = v.split_first() else {
        return Err(corrupt("empty value"));
    };
    match tag {
        V_NONE => Ok(py.None()),
        V_BYTES => Ok(PyBytes::new(py, rest).into_any().unbind()),
        V_JSON => json_loads(py, rest),
        _ => Err(corrupt("unknown value tag")),
    }
}

/// Decodes a key: from the stored value for composite stores, else from the key bytes.
pub fn decode_key(
    py: Python<'_>,
    spec: &KeySpec,
    key: &[u8],
    stored: Option<&[u8]>,
) -> PyResult<Py<PyAny>> {
    if spec.composite()
        && let Some(s) = stored
        && let (Some(k), _) = split_stored(s)?
    {
        return json_loads(py, k);
    }
    if matches!(spec, KeySpec::Fields(_)) {
        return Err(corrupt("composite key without its stored form"));
    }
    let mut pos = 0;
    decode_value_key(py, key, &mut pos)
}

/// The nil item id as text (what `Item.id` holds when no id is given).
pub const NIL_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Formats an item id as a UUID string (36 ASCII bytes).
pub fn id_to_bytes(id: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = id.to_be_bytes();
    let mut out = [b'-'; 36];
    let mut pos = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            pos += 1;
        }
        out[pos] = HEX[usize::from(b >> 4)];
        out[pos + 1] = HEX[usize::from(b & 15)];
        pos += 2;
    }
    out
}

/// Formats an item id as a UUID string.
pub fn id_to_str(id: u128) -> String {
    id_to_bytes(id).iter().map(|&b| char::from(b)).collect()
}

/// An item id as a Python str.
pub fn id_to_py(py: Python<'_>, id: u128) -> Bound<'_, PyString> {
    let b = id_to_bytes(id);
    // The bytes are ASCII hex digits and dashes.
    PyString::new(py, std::str::from_utf8(&b).unwrap_or_default())
}

/// Parses a UUID string (with or without dashes) into an item id.
pub fn id_from_str(s: &str) -> PyResult<u128> {
    let bad = || PyValueError::new_err(format!("invalid item id {s:?}"));
    let mut id: u128 = 0;
    let mut digits = 0;
    for c in s.bytes() {
        let d = match c {
            b'-' => continue,
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(bad()),
        };
        digits += 1;
        if digits > 32 {
            return Err(bad());
        }
        id = (id << 4) | u128::from(d);
    }
    if digits != 32 {
        return Err(bad());
    }
    Ok(id)
}
