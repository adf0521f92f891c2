//! How the CLI reads and shows the keys and values of a store.
//!
//! Stores created by the CLI are `Btree<String, String>`. Other stores are shown as well as
//! their persisted type names allow: keys of common key types (strings, integers, floats,
//! `bool`, `char`, byte vectors, tuples, `Option`, `Desc`) are decoded to JSON values; `String`
//! values are decoded; anything else is shown as UTF-8 text when valid, else as hex. `--raw`
//! bypasses the types: keys and values are the stored bytes.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value as Json;
use sop::{Key, StoreInfo};

/// The persisted value type name of `String` values.
pub fn string_value_type() -> String {
    std::any::type_name::<String>().to_owned()
}

/// A key type the CLI can decode and encode, parsed from a persisted type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    Str,
    Bytes,
    Bool,
    Char,
    Unit,
    U8,
    U16,
    U32,
    U64,
    U128,
    Usize,
    I8,
    I16,
    I32,
    I64,
    I128,
    Isize,
    F32,
    F64,
    Tuple(Vec<KeyType>),
    Option(Box<KeyType>),
    Desc(Box<KeyType>),
}

impl KeyType {
    /// Parses a type name as written by `sop::Key::type_name`; `None` when unknown.
    pub fn parse(name: &str) -> Option<KeyType> {
        let (t, rest) = parse_type(name.trim())?;
        rest.trim().is_empty().then_some(t)
    }
}

fn parse_type(s: &str) -> Option<(KeyType, &str)> {
    let s = s.trim_start();
    if let Some(mut rest) = s.strip_prefix('(') {
        let mut fields = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(')') {
                return if fields.is_empty() {
                    Some((KeyType::Unit, r))
                } else {
                    Some((KeyType::Tuple(fields), r))
                };
            }
            let (t, r) = parse_type(rest)?;
            fields.push(t);
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with(')') {
                return None;
            }
        }
    }
    for (prefix, wrap) in [
        ("Option<", KeyType::Option as fn(Box<KeyType>) -> KeyType),
        ("Desc<", KeyType::Desc),
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let (inner, r) = parse_type(rest)?;
            let r = r.trim_start().strip_prefix('>')?;
            return Some((wrap(Box::new(inner)), r));
        }
    }
    // `Vec<u8>` is the one scalar name with angle brackets.
    let (word, rest) = if s.starts_with("Vec<u8>") {
        s.split_at("Vec<u8>".len())
    } else {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        s.split_at(end)
    };
    let t = match word {
        "String" => KeyType::Str,
        "Vec<u8>" => KeyType::Bytes,
        "bool" => KeyType::Bool,
        "char" => KeyType::Char,
        "u8" => KeyType::U8,
        "u16" => KeyType::U16,
        "u32" => KeyType::U32,
        "u64" => KeyType::U64,
        "u128" => KeyType::U128,
        "usize" => KeyType::Usize,
        "i8" => KeyType::I8,
        "i16" => KeyType::I16,
        "i32" => KeyType::I32,
        "i64" => KeyType::I64,
        "i128" => KeyType::I128,
        "isize" => KeyType::Isize,
        "f32" => KeyType::F32,
        "f64" => KeyType::F64,
        _ => return None,
    };
    Some((t, rest))
}

fn enc_err(e: sop::Error) -> anyhow::Error {
    anyhow!(e)
}

/// Decodes one nested field into JSON.
fn decode_nested(t: &KeyType, b: &mut &[u8]) -> Result<Json> {
    macro_rules! num {
        ($ty:ty) => {
            Json::from(<$ty as Key>::decode_key_nested(b).map_err(enc_err)?)
        };
    }
    macro_rules! big {
        ($ty:ty) => {
            Json::from(
                <$ty as Key>::decode_key_nested(b)
                    .map_err(enc_err)?
                    .to_string(),
            )
        };
    }
    Ok(match t {
        KeyType::Str => Json::from(String::decode_key_nested(b).map_err(enc_err)?),
        KeyType::Bytes => Json::from(hex::encode(
            Vec::<u8>::decode_key_nested(b).map_err(enc_err)?,
        )),
        KeyType::Bool => num!(bool),
        KeyType::Char => Json::from(char::decode_key_nested(b).map_err(enc_err)?.to_string()),
        KeyType::Unit => {
            <() as Key>::decode_key_nested(b).map_err(enc_err)?;
            Json::Null
        }
        KeyType::U8 => num!(u8),
        KeyType::U16 => num!(u16),
        KeyType::U32 => num!(u32),
        KeyType::U64 => num!(u64),
        KeyType::U128 => big!(u128),
        KeyType::Usize => num!(usize),
        KeyType::I8 => num!(i8),
        KeyType::I16 => num!(i16),
        KeyType::I32 => num!(i32),
        KeyType::I64 => num!(i64),
        KeyType::I128 => big!(i128),
        KeyType::Isize => num!(isize),
        KeyType::F32 => num!(f32),
        KeyType::F64 => num!(f64),
        KeyType::Tuple(fields) => Json::Array(
            fields
                .iter()
                .map(|f| decode_nested(f, b))
                .collect::<Result<_>>()?,
        ),
        KeyType::Option(inner) => match take_byte(b)? {
            0 => Json::Null,
            1 => decode_nested(inner, b)?,
            x => bail!("Option tag {x:#04x}"),
        },
        KeyType::Desc(inner) => {
            let flipped: Vec<u8> = b.iter().map(|x| !x).collect();
            let mut rest = flipped.as_slice();
            let v = decode_nested(inner, &mut rest)?;
            let used = flipped.len() - rest.len();
            *b = b.get(used..).context("Desc decoder overran the input")?;
            v
        }
    })
}

fn take_byte(b: &mut &[u8]) -> Result<u8> {
    let (&x, rest) = b.split_first().context("key ends early")?;
    *b = rest;
    Ok(x)
}

/// Decodes a whole (top-level) key into JSON.
pub fn decode_key(t: &KeyType, bytes: &[u8]) -> Result<Json> {
    match t {
        KeyType::Str => Ok(Json::from(
            std::str::from_utf8(bytes).context("key is not UTF-8")?,
        )),
        KeyType::Bytes => Ok(Json::from(hex::encode(bytes))),
        _ => {
            let mut b = bytes;
            let v = decode_nested(t, &mut b)?;
            if !b.is_empty() {
                bail!("{} trailing bytes after the key", b.len());
            }
            Ok(v)
        }
    }
}

/// Encodes one nested field from JSON.
fn encode_nested(t: &KeyType, v: &Json, out: &mut Vec<u8>) -> Result<()> {
    macro_rules! int {
        ($ty:ty) => {{
            let n: $ty = match v {
                Json::Number(n) => n.to_string().parse().ok(),
                Json::String(s) => s.parse().ok(),
                _ => None,
            }
            .with_context(|| format!("{v} is not a {}", stringify!($ty)))?;
            n.encode_key_nested(out)
        }};
    }
    match t {
        KeyType::Str => v
            .as_str()
            .with_context(|| format!("{v} is not a string"))?
            .to_owned()
            .encode_key_nested(out),
        KeyType::Bytes => hex::decode(v.as_str().with_context(|| format!("{v} is not hex"))?)
            .context("bytes must be given in hex")?
            .encode_key_nested(out),
        KeyType::Bool => v
            .as_bool()
            .with_context(|| format!("{v} is not a bool"))?
            .encode_key_nested(out),
        KeyType::Char => {
            let s = v.as_str().with_context(|| format!("{v} is not a char"))?;
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => c.encode_key_nested(out),
                _ => bail!("{v} is not a single char"),
            }
        }
        KeyType::Unit => ().encode_key_nested(out),
        KeyType::U8 => int!(u8),
        KeyType::U16 => int!(u16),
        KeyType::U32 => int!(u32),
        KeyType::U64 => int!(u64),
        KeyType::U128 => int!(u128),
        KeyType::Usize => int!(usize),
        KeyType::I8 => int!(i8),
        KeyType::I16 => int!(i16),
        KeyType::I32 => int!(i32),
        KeyType::I64 => int!(i64),
        KeyType::I128 => int!(i128),
        KeyType::Isize => int!(isize),
        KeyType::F32 => int!(f32),
        KeyType::F64 => int!(f64),
        KeyType::Tuple(fields) => {
            let items = v
                .as_array()
                .filter(|a| a.len() == fields.len())
                .with_context(|| format!("{v} is not an array of {} fields", fields.len()))?;
            for (f, x) in fields.iter().zip(items) {
                encode_nested(f, x, out)?;
            }
        }
        KeyType::Option(inner) => {
            if v.is_null() {
                out.push(0);
            } else {
                out.push(1);
                encode_nested(inner, v, out)?;
            }
        }
        KeyType::Desc(inner) => {
            let start = out.len();
            encode_nested(inner, v, out)?;
            for b in out.get_mut(start..).unwrap_or_default() {
                *b = !*b;
            }
        }
    }
    Ok(())
}

/// Encodes a whole key from JSON.
pub fn encode_key(t: &KeyType, v: &Json) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match t {
        KeyType::Str => out.extend_from_slice(
            v.as_str()
                .with_context(|| format!("{v} is not a string"))?
                .as_bytes(),
        ),
        KeyType::Bytes => out = hex::decode(v.as_str().unwrap_or_default())?,
        _ => encode_nested(t, v, &mut out)?,
    }
    Ok(out)
}

/// Bytes shown as UTF-8 text when valid (and free of control characters other than tab and
/// newlines), else as `0x` and hex.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s)
            if !s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) =>
        {
            s.to_owned()
        }
        _ => format!("0x{}", hex::encode(b)),
    }
}

/// How keys of one store are read and shown.
#[derive(Debug, Clone)]
pub enum KeyCodec {
    Typed(KeyType),
    /// Raw bytes (raw stores, unknown key types, `--raw`).
    Raw,
}

/// How values of one store are read and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueCodec {
    /// Postcard `String`.
    Str,
    /// Raw bytes.
    Raw,
}

/// Everything needed to read and write the items of one store from the command line.
#[derive(Debug, Clone)]
pub struct StoreCodec {
    pub key: KeyCodec,
    pub value: ValueCodec,
    /// Whether values of this store may be written with the CLI (String or raw stores).
    pub value_writable: bool,
    /// Inputs are hex strings.
    pub hex: bool,
}

impl StoreCodec {
    /// The codec for a store, from its persisted type names.
    pub fn for_store(info: &StoreInfo, raw: bool, hex: bool) -> StoreCodec {
        let key = match (&info.options.key_type, raw) {
            (Some(t), false) => KeyType::parse(t).map_or(KeyCodec::Raw, KeyCodec::Typed),
            _ => KeyCodec::Raw,
        };
        let (value, value_writable) = match &info.options.value_type {
            _ if raw => (ValueCodec::Raw, true),
            Some(t) if *t == string_value_type() => (ValueCodec::Str, true),
            Some(_) => (ValueCodec::Raw, false),
            None => (ValueCodec::Raw, true),
        };
        StoreCodec {
            key,
            value,
            value_writable,
            hex,
        }
    }

    /// Encodes a key given on the command line.
    pub fn key_from_arg(&self, arg: &str) -> Result<Vec<u8>> {
        if self.hex {
            return hex::decode(arg.trim_start_matches("0x"))
                .with_context(|| format!("key {arg:?} is not hex"));
        }
        match &self.key {
            KeyCodec::Raw => Ok(arg.as_bytes().to_vec()),
            KeyCodec::Typed(KeyType::Str) => Ok(arg.as_bytes().to_vec()),
            KeyCodec::Typed(t) => {
                let v: Json = serde_json::from_str(arg).unwrap_or_else(|_| Json::from(arg));
                encode_key(t, &v).with_context(|| {
                    format!("key {arg:?} does not fit the store's key type (write it as JSON, or use --raw)")
                })
            }
        }
    }

    /// Encodes a key given as JSON (import).
    pub fn key_from_json(&self, v: &Json) -> Result<Vec<u8>> {
        match (&self.key, v) {
            (KeyCodec::Typed(t), _) => encode_key(t, v),
            (KeyCodec::Raw, Json::String(s)) => Ok(s.as_bytes().to_vec()),
            (KeyCodec::Raw, _) => bail!("key {v} of a raw store must be a string (or key_hex)"),
        }
    }

    /// Encodes a value given on the command line.
    pub fn value_from_arg(&self, arg: &str) -> Result<Vec<u8>> {
        let bytes = if self.hex {
            hex::decode(arg.trim_start_matches("0x"))
                .with_context(|| format!("value {arg:?} is not hex"))?
        } else {
            arg.as_bytes().to_vec()
        };
        self.value_from_bytes(bytes)
    }

    /// Encodes value bytes (UTF-8 text or raw) for this store.
    pub fn value_from_bytes(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        if !self.value_writable {
            bail!("the store's values are not strings; use --raw to write the encoded bytes");
        }
        match self.value {
            ValueCodec::Raw => Ok(bytes),
            ValueCodec::Str => {
                let s = String::from_utf8(bytes).context("a String value must be UTF-8")?;
                let mut out = Vec::new();
                sop::Value::encode_value(&s, &mut out)?;
                Ok(out)
            }
        }
    }

    /// A stored key as JSON: decoded, else text when UTF-8, else `{"hex": ...}`.
    pub fn key_json(&self, b: &[u8]) -> Json {
        if let KeyCodec::Typed(t) = &self.key
            && let Ok(v) = decode_key(t, b)
        {
            return v;
        }
        bytes_json(b)
    }

    /// A stored key as text: decoded keys of string type as they are, other decoded keys as
    /// JSON, undecodable or raw keys as UTF-8 text or hex.
    pub fn key_text(&self, b: &[u8]) -> String {
        match &self.key {
            KeyCodec::Typed(t) => match decode_key(t, b) {
                Ok(Json::String(s)) => s,
                Ok(v) => v.to_string(),
                Err(_) => show_bytes(b),
            },
            KeyCodec::Raw => show_bytes(b),
        }
    }

    /// A stored value as text.
    pub fn value_text(&self, b: &[u8]) -> String {
        match self.decode_str_value(b) {
            Some(s) => s,
            None => show_bytes(b),
        }
    }

    /// A stored value as JSON: a string when it is text, else `{"hex": ...}`.
    pub fn value_json(&self, b: &[u8]) -> Json {
        match self.decode_str_value(b) {
            Some(s) => Json::from(s),
            None => bytes_json(b),
        }
    }

    fn decode_str_value(&self, b: &[u8]) -> Option<String> {
        match self.value {
            ValueCodec::Str => <String as sop::Value>::decode_value(b).ok(),
            ValueCodec::Raw => None,
        }
    }
}

/// Raw bytes as JSON: the string when UTF-8, else `{"hex": "..."}`.
pub fn bytes_json(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::from(s),
        Err(_) => serde_json::json!({ "hex": hex::encode(b) }),
    }
}

/// The bytes a JSON field denotes when it is `{"hex": "..."}`.
pub fn hex_object(v: &Json) -> Option<Result<Vec<u8>>> {
    let h = v.as_object()?.get("hex")?.as_str()?;
    Some(hex::decode(h).context("bad hex"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sop::Desc;

    #[test]
    fn parses_type_names() -> Result<()> {
        assert_eq!(KeyType::parse("String"), Some(KeyType::Str));
        assert_eq!(
            KeyType::parse("(String,u32)"),
            Some(KeyType::Tuple(vec![KeyType::Str, KeyType::U32]))
        );
        assert_eq!(
            KeyType::parse("(u64,Desc<Option<Vec<u8>>>,)"),
            Some(KeyType::Tuple(vec![
                KeyType::U64,
                KeyType::Desc(Box::new(KeyType::Option(Box::new(KeyType::Bytes))))
            ]))
        );
        assert_eq!(KeyType::parse("()"), Some(KeyType::Unit));
        assert_eq!(KeyType::parse("MyType"), None);
        Ok(())
    }

    #[test]
    fn round_trips_typed_keys() -> Result<()> {
        let t = KeyType::parse("(String,u32,Desc<i64>,Option<bool>)").context("parse")?;
        let key = ("ab\0c".to_string(), 7u32, Desc(-3i64), Some(true));
        let mut bytes = Vec::new();
        key.encode_key(&mut bytes);
        let j = decode_key(&t, &bytes)?;
        assert_eq!(j, serde_json::json!(["ab\0c", 7, -3, true]));
        assert_eq!(encode_key(&t, &j)?, bytes);
        Ok(())
    }
}
