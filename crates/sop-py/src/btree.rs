//! `NativeBtree`: one store opened in one transaction, with its cursor. Python objects are
//! encoded while attached to the interpreter; the engine work runs detached (GIL released).

use std::ops::Bound as RangeBound;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::{ffi, intern};
use sop::{RawBtree, RawItem, RawRange};

use crate::codec::{self, KeySpec};
use crate::errors::btree_err;

/// The item shape handed to Python: (key, value, id).
type PyItem = (Py<PyAny>, Py<PyAny>, String);

/// A store handle bound to a transaction.
#[pyclass(module = "sop._sop", frozen)]
pub struct NativeBtree {
    raw: Arc<RawBtree>,
    spec: KeySpec,
    name: String,
    /// The process that opened it.
    pid: u32,
}

impl Drop for NativeBtree {
    /// In a forked child the store handle is the parent's: leak it rather than drop it.
    fn drop(&mut self) {
        if crate::database::forked_since(self.pid) {
            std::mem::forget(Arc::clone(&self.raw));
        }
    }
}

/// A write operation of a batch.
#[derive(Clone, Copy)]
enum WriteOp {
    Add,
    AddIfNotExists,
    Upsert,
    Update,
}

impl WriteOp {
    fn from_code(op: u8) -> PyResult<Self> {
        Ok(match op {
            0 => WriteOp::Add,
            1 => WriteOp::AddIfNotExists,
            2 => WriteOp::Upsert,
            3 => WriteOp::Update,
            _ => return Err(PyValueError::new_err(format!("unknown write op {op}"))),
        })
    }
}

fn engine<T>(r: sop::Result<T>) -> PyResult<T> {
    r.map_err(|e| btree_err(&e))
}

impl NativeBtree {
    /// Looks up each key (the first item with the key when its id is None), with the GIL
    /// released; `None` for a missing item. `keys[i]` is (end of key i in `buf`, id).
    fn fetch(
        &self,
        py: Python<'_>,
        buf: &[u8],
        keys: &[(usize, Option<u128>)],
    ) -> PyResult<Vec<Option<RawItem>>> {
        engine(py.detach(|| -> sop::Result<Vec<Option<RawItem>>> {
            let mut out = Vec::with_capacity(keys.len());
            // Keys without an id are looked up in runs, under one lock each
            // (`RawBtree::get_items`, which leaves the cursor alone); keys with an id move
            // the cursor as before.
            let mut run: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for &(end, id) in keys {
                let k = &buf[start..end];
                start = end;
                match id {
                    None => run.push(k),
                    Some(id) => {
                        if !run.is_empty() {
                            out.extend(self.raw.get_items(run.drain(..))?);
                        }
                        out.push(if self.raw.find_with_id(k, id)? {
                            self.raw.current_item()?
                        } else {
                            None
                        });
                    }
                }
            }
            if let Some(last) = run.last().copied() {
                out.extend(self.raw.get_items(run.drain(..))?);
                // The cursor ends where the item-at-a-time lookups left it.
                self.raw.find(last, true)?;
            }
            Ok(out)
        }))
    }

    pub fn new(raw: RawBtree, spec: KeySpec, name: String) -> Self {
        NativeBtree {
            raw: Arc::new(raw),
            spec,
            name,
            pid: std::process::id(),
        }
    }

    fn item(&self, py: Python<'_>, it: &RawItem, with_value: bool) -> PyResult<PyItem> {
        let key = codec::decode_key(py, &self.spec, &it.key, Some(&it.value))?;
        let value = if with_value {
            codec::decode_value(py, &it.value)?
        } else {
            py.None()
        };
        Ok((key, value, codec::id_to_str(it.id)))
    }

    fn key_only(&self, py: Python<'_>, key: &[u8], id: u128) -> PyResult<PyItem> {
        let key = codec::decode_key(py, &self.spec, key, None)?;
        Ok((key, py.None(), codec::id_to_str(id)))
    }

    /// Items from the cursor (read while detached).
    fn read_current(&self, with_value: bool) -> sop::Result<Option<Cur>> {
        if with_value || self.spec.composite() {
            Ok(self.raw.current_item()?.map(Cur::Item))
        } else {
            Ok(self.raw.current_key()?.map(|(k, id)| Cur::Key(k, id)))
        }
    }

    fn to_py(&self, py: Python<'_>, c: &Cur, with_value: bool) -> PyResult<PyItem> {
        match c {
            Cur::Item(it) => self.item(py, it, with_value),
            Cur::Key(k, id) => self.key_only(py, k, *id),
        }
    }

    fn write(
        &self,
        py: Python<'_>,
        items: Vec<(Py<PyAny>, Py<PyAny>)>,
        op: WriteOp,
    ) -> PyResult<bool> {
        let mut enc = Encoded::with_capacity(items.len());
        for (k, v) in &items {
            self.push_item(&mut enc, k.bind(py), v.bind(py))?;
        }
        self.apply(py, &enc, op)
    }

    /// Encodes one (key, value) onto a batch.
    fn push_item(
        &self,
        enc: &mut Encoded,
        k: &Bound<'_, PyAny>,
        v: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        codec::encode_key_into(&self.spec, k, false, &mut enc.buf)?;
        let key_end = enc.buf.len();
        codec::encode_stored_into(&self.spec, k, v, &mut enc.buf)?;
        enc.spans.push((key_end, enc.buf.len()));
        Ok(())
    }

    /// Applies a write to every item of a batch, detached; true when all succeeded.
    fn apply(&self, py: Python<'_>, enc: &Encoded, op: WriteOp) -> PyResult<bool> {
        let raw = &self.raw;
        engine(py.detach(move || {
            let mut all = true;
            for (k, v) in enc.iter() {
                let ok = match op {
                    WriteOp::Add => raw.add(k, v)?,
                    WriteOp::AddIfNotExists => raw.add_if_not_exist(k, v)?,
                    WriteOp::Upsert => raw.upsert(k, v)?,
                    WriteOp::Update => raw.update(k, v)?,
                };
                all &= ok;
            }
            Ok(all)
        }))
    }

    fn enc(&self, key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        codec::encode_key(&self.spec, key, false)
    }
}

/// An optional item id from Python (None, "" and the nil UUID: no id).
fn opt_id(id: Option<&str>) -> PyResult<Option<u128>> {
    match id {
        Some(s) if !s.is_empty() && s != codec::NIL_ID => {
            let id = codec::id_from_str(s)?;
            Ok((id != 0).then_some(id))
        }
        _ => Ok(None),
    }
}

/// Makes instances of the Python `Item` dataclass without running its `__init__`: the class's
/// own `tp_new` (as `Item.__new__(Item)` would), then the three fields set as attributes.
struct ItemMaker<'py> {
    cls: Bound<'py, PyType>,
    new: ffi::newfunc,
    args: Bound<'py, PyTuple>,
    names: [Bound<'py, PyString>; 3],
}

impl<'py> ItemMaker<'py> {
    fn new(cls: &Bound<'py, PyType>) -> PyResult<Self> {
        let py = cls.py();
        // SAFETY: `cls` is a live type object; Py_tp_new is a valid slot id, and a non-null
        // result is the class's `newfunc`.
        let slot = unsafe { ffi::PyType_GetSlot(cls.as_type_ptr(), ffi::Py_tp_new) };
        if slot.is_null() {
            return Err(PyTypeError::new_err("Item class cannot be instantiated"));
        }
        // SAFETY: the Py_tp_new slot holds a `newfunc`.
        let new = unsafe { std::mem::transmute::<*mut std::ffi::c_void, ffi::newfunc>(slot) };
        Ok(ItemMaker {
            cls: cls.clone(),
            new,
            args: PyTuple::empty(py),
            names: [
                intern!(py, "key").clone(),
                intern!(py, "value").clone(),
                intern!(py, "id").clone(),
            ],
        })
    }

    fn make(
        &self,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = self.cls.py();
        // SAFETY: calling the type's `tp_new` with (type, empty args, no kwargs) as
        // `type.__new__(type)` does; the result is a new reference or null with an exception.
        let obj = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                (self.new)(
                    self.cls.as_type_ptr(),
                    self.args.as_ptr(),
                    std::ptr::null_mut(),
                ),
            )?
        };
        let [k, v, i] = &self.names;
        obj.setattr(k, key)?;
        obj.setattr(v, value)?;
        obj.setattr(i, id)?;
        Ok(obj)
    }
}

/// True for the types `_plain` passes through unchanged (its `_PRIM`): exact str, int, float,
/// bytes, bool, None, dict and list. Others go through `_plain` (dataclasses become dicts).
fn plain_type(v: &Bound<'_, PyAny>) -> bool {
    v.is_exact_instance_of::<PyString>()
        || v.is_exact_instance_of::<PyInt>()
        || v.is_none()
        || v.is_exact_instance_of::<PyFloat>()
        || v.is_exact_instance_of::<PyBytes>()
        || v.is_exact_instance_of::<PyBool>()
        || v.is_exact_instance_of::<PyDict>()
        || v.is_exact_instance_of::<PyList>()
}

/// `_plain(v)`, calling back into Python only for the types it converts.
fn to_plain<'py>(v: Bound<'py, PyAny>, plain: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if plain_type(&v) {
        Ok(v)
    } else {
        plain.call1((v,))
    }
}

/// Encoded items of a batch, in one buffer: `spans[i]` is (key end, value end) of item i.
struct Encoded {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Encoded {
    fn with_capacity(n: usize) -> Self {
        Encoded {
            buf: Vec::with_capacity(n * 48),
            spans: Vec::with_capacity(n),
        }
    }

    /// (key, value) of each item.
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.spans.iter().map(move |&(k, v)| {
            let item = (&self.buf[start..k], &self.buf[k..v]);
            start = v;
            item
        })
    }
}

/// Replaces the key of the item under the cursor by `new_key` (its encoded form) when both
/// compare equal; `key_json` (composite stores) is the new full key stored beside the value.
/// False when there is no current item or the keys differ.
fn set_current_key(raw: &RawBtree, new_key: &[u8], key_json: Option<&[u8]>) -> PyResult<bool> {
    match key_json {
        Some(json) => {
            let Some(cur) = engine(raw.current_item())? else {
                return Ok(false);
            };
            if cur.key != new_key {
                return Ok(false);
            }
            let stored = codec::restamp_key(json, &cur.value)?;
            engine(raw.update_current_item(new_key, &stored))
        }
        None => {
            let Some((key, _)) = engine(raw.current_key())? else {
                return Ok(false);
            };
            if key != new_key {
                return Ok(false);
            }
            engine(raw.update_current_key(new_key))
        }
    }
}

enum Cur {
    Item(RawItem),
    Key(Vec<u8>, u128),
}

#[pymethods]
impl NativeBtree {
    /// The store's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// True for stores with dict keys.
    #[getter]
    fn composite(&self) -> bool {
        self.spec.composite()
    }

    /// Adds items; false when any key exists (unique store). Others stay added.
    fn add(&self, py: Python<'_>, items: Vec<(Py<PyAny>, Py<PyAny>)>) -> PyResult<bool> {
        self.write(py, items, WriteOp::Add)
    }

    /// Adds items whose key is absent; false when any existed.
    fn add_if_not_exists(
        &self,
        py: Python<'_>,
        items: Vec<(Py<PyAny>, Py<PyAny>)>,
    ) -> PyResult<bool> {
        self.write(py, items, WriteOp::AddIfNotExists)
    }

    /// Adds or replaces items.
    fn upsert(&self, py: Python<'_>, items: Vec<(Py<PyAny>, Py<PyAny>)>) -> PyResult<bool> {
        self.write(py, items, WriteOp::Upsert)
    }

    /// Replaces the values of existing items; false when any key is missing.
    fn update(&self, py: Python<'_>, items: Vec<(Py<PyAny>, Py<PyAny>)>) -> PyResult<bool> {
        self.write(py, items, WriteOp::Update)
    }

    /// Removes items by key; false when any key is missing (the others are removed).
    fn remove(&self, py: Python<'_>, keys: Vec<Py<PyAny>>) -> PyResult<bool> {
        let enc = keys
            .iter()
            .map(|k| self.enc(k.bind(py)))
            .collect::<PyResult<Vec<_>>>()?;
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || {
            let mut all = true;
            for k in &enc {
                all &= raw.remove(k)?;
            }
            Ok(all)
        }))
    }

    /// `Btree.add` / `add_if_not_exists` / `upsert` / `update` (op 0..3) of a list in one call:
    /// `items` holds `Item`s (of class `cls`) or (key, value) tuples; keys and values go
    /// through `plain` (`_plain`) unless they are of the types it passes through. False when
    /// any item failed (the others stay applied).
    fn write_items<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyList>,
        op: u8,
        cls: &Bound<'py, PyType>,
        plain: &Bound<'py, PyAny>,
    ) -> PyResult<bool> {
        let op = WriteOp::from_code(op)?;
        let (k_key, k_value) = (intern!(py, "key"), intern!(py, "value"));
        let mut enc = Encoded::with_capacity(items.len());
        for it in items.iter() {
            let (k, v) = if it.is_exact_instance(cls) || it.is_instance(cls)? {
                (it.getattr(k_key)?, it.getattr(k_value)?)
            } else if let Ok(t) = it.cast::<PyTuple>()
                && t.len() == 2
            {
                (t.get_item(0)?, t.get_item(1)?)
            } else {
                return Err(PyTypeError::new_err(
                    "a batch is a list of Items (or (key, value) tuples)",
                ));
            };
            let k = to_plain(k, plain)?;
            let v = to_plain(v, plain)?;
            self.push_item(&mut enc, &k, &v)?;
        }
        self.apply(py, &enc, op)
    }

    /// `Btree.remove` of a list in one call: each entry is a key, or an `Item` (of class
    /// `cls`) standing for its key; keys go through `plain` as in `write_items`.
    fn remove_items<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyList>,
        cls: &Bound<'py, PyType>,
        plain: &Bound<'py, PyAny>,
    ) -> PyResult<bool> {
        let k_key = intern!(py, "key");
        let mut buf = Vec::with_capacity(keys.len() * 24);
        let mut ends = Vec::with_capacity(keys.len());
        for k in keys.iter() {
            let k = if plain_type(&k) {
                k
            } else if k.is_instance(cls)? {
                to_plain(k.getattr(k_key)?, plain)?
            } else {
                plain.call1((k,))?
            };
            codec::encode_key_into(&self.spec, &k, false, &mut buf)?;
            ends.push(buf.len());
        }
        let raw = &self.raw;
        engine(py.detach(move || {
            let mut all = true;
            let mut start = 0;
            for &end in &ends {
                all &= raw.remove(&buf[start..end])?;
                start = end;
            }
            Ok(all)
        }))
    }

    /// Positions the cursor at `key` (or the next greater item / the last item).
    #[pyo3(signature = (key, first_item_with_key = false))]
    fn find(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        first_item_with_key: bool,
    ) -> PyResult<bool> {
        let k = self.enc(key)?;
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.find(&k, first_item_with_key)))
    }

    /// Positions the cursor at the item with `key` and `id`.
    fn find_with_id(&self, py: Python<'_>, key: &Bound<'_, PyAny>, id: &str) -> PyResult<bool> {
        let k = self.enc(key)?;
        let id = codec::id_from_str(id)?;
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.find_with_id(&k, id)))
    }

    fn first(&self, py: Python<'_>) -> PyResult<bool> {
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.first()))
    }

    fn last(&self, py: Python<'_>) -> PyResult<bool> {
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.last()))
    }

    fn next(&self, py: Python<'_>) -> PyResult<bool> {
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.next()))
    }

    fn previous(&self, py: Python<'_>) -> PyResult<bool> {
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.previous()))
    }

    /// The item under the cursor as (key, value, id), or None.
    #[pyo3(signature = (with_value = true))]
    fn current(&self, py: Python<'_>, with_value: bool) -> PyResult<Option<PyItem>> {
        let c = engine(py.detach(|| self.read_current(with_value)))?;
        c.map(|c| self.to_py(py, &c, with_value)).transpose()
    }

    /// A page of items from the cursor, advancing it. A cursor that is off the ends starts
    /// at the first (forward) or last (backward) item, so paging wraps around.
    fn page(
        &self,
        py: Python<'_>,
        count: usize,
        skip: usize,
        backward: bool,
        with_values: bool,
    ) -> PyResult<Vec<PyItem>> {
        let got = engine(py.detach(|| -> sop::Result<Vec<Cur>> {
            let raw = &self.raw;
            let step = || if backward { raw.previous() } else { raw.next() };
            let mut out = Vec::new();
            if raw.current_key()?.is_none() {
                let any = if backward { raw.last()? } else { raw.first()? };
                if !any {
                    return Ok(out);
                }
            }
            for _ in 0..skip {
                if !step()? {
                    return Ok(out);
                }
            }
            while out.len() < count {
                match self.read_current(with_values)? {
                    Some(c) => out.push(c),
                    None => break,
                }
                if !step()? {
                    break;
                }
            }
            Ok(out)
        }))?;
        got.iter().map(|c| self.to_py(py, c, with_values)).collect()
    }

    /// Point lookups: for each (key, id or None) the found item, or None.
    fn get_values(
        &self,
        py: Python<'_>,
        items: Vec<(Py<PyAny>, Option<String>)>,
    ) -> PyResult<Vec<Option<PyItem>>> {
        let mut buf = Vec::with_capacity(items.len() * 24);
        let mut keys = Vec::with_capacity(items.len());
        for (k, id) in &items {
            let id = match id.as_deref() {
                Some(s) => {
                    let id = codec::id_from_str(s)?;
                    (id != 0).then_some(id)
                }
                None => None,
            };
            codec::encode_key_into(&self.spec, k.bind(py), false, &mut buf)?;
            keys.push((buf.len(), id));
        }
        let got = self.fetch(py, &buf, &keys)?;
        got.iter()
            .map(|o| o.as_ref().map(|it| self.item(py, it, true)).transpose())
            .collect()
    }

    /// For each (key, id or None): finds the item by key (and id) and replaces its key by
    /// `key`, which compares equal to it (dict keys: fields outside the index specification may
    /// change). False when any item is missing (the others are updated).
    fn update_key(
        &self,
        py: Python<'_>,
        items: Vec<(Py<PyAny>, Option<String>)>,
    ) -> PyResult<bool> {
        let mut enc = Vec::with_capacity(items.len());
        for (k, id) in &items {
            let k = k.bind(py);
            enc.push((
                self.enc(k)?,
                codec::stored_key_json(&self.spec, k)?,
                opt_id(id.as_deref())?,
            ));
        }
        let raw = Arc::clone(&self.raw);
        py.detach(move || -> PyResult<bool> {
            let mut all = true;
            for (k, json, id) in &enc {
                let found = engine(match id {
                    Some(id) => raw.find_with_id(k, *id),
                    None => raw.find(k, true),
                })?;
                all &= found && set_current_key(&raw, k, json.as_deref())?;
            }
            Ok(all)
        })
    }

    /// Replaces the key of the item under the cursor by `key`, which must compare equal to it
    /// (else false, nothing changes).
    fn update_current_key(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = self.enc(key)?;
        let json = codec::stored_key_json(&self.spec, key)?;
        let raw = Arc::clone(&self.raw);
        py.detach(move || set_current_key(&raw, &k, json.as_deref()))
    }

    /// `Btree.get_values` in one call: `items` holds `Item`s (looked up by key, and id when not
    /// nil) or bare keys; returns the found items as new `Item`s (of class `cls`), a missing
    /// one as the input item (a bare key as `Item(key)`). `plain` converts other key types
    /// (dataclasses) as the Python layer does.
    fn get_value_items<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyList>,
        cls: &Bound<'py, PyType>,
        plain: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let n = items.len();
        // (input, key given to the codec, whether the input is an Item)
        let mut inputs: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>, bool)> = Vec::with_capacity(n);
        let mut buf = Vec::with_capacity(n * 24);
        let mut keys = Vec::with_capacity(n);
        let (k_key, k_id) = (intern!(py, "key"), intern!(py, "id"));
        for it in items.iter() {
            let is_item = it.is_exact_instance(cls) || it.is_instance(cls)?;
            let (key, id) = if is_item {
                let id = it.getattr(k_id)?;
                let id = if id.is_none() {
                    None
                } else if let Ok(s) = id.cast::<PyString>() {
                    opt_id(Some(s.to_str()?))?
                } else {
                    opt_id(Some(id.str()?.to_str()?))?
                };
                (it.getattr(k_key)?, id)
            } else {
                (it.clone(), None)
            };
            let key = to_plain(key, plain)?;
            codec::encode_key_into(&self.spec, &key, false, &mut buf)?;
            keys.push((buf.len(), id));
            inputs.push((it, key, is_item));
        }
        let got = self.fetch(py, &buf, &keys)?;
        let maker = ItemMaker::new(cls)?;
        let scalar = !self.spec.composite();
        let none = py.None().into_bound(py);
        let nil = PyString::new(py, codec::NIL_ID).into_any();
        let mut out = Vec::with_capacity(n);
        for ((it, key, is_item), found) in inputs.into_iter().zip(got) {
            let obj = match found {
                Some(raw) => {
                    // An exact str / int key equals the stored one: reuse the caller's object.
                    let key = if scalar
                        && (key.is_exact_instance_of::<PyString>()
                            || key.is_exact_instance_of::<PyInt>())
                    {
                        key
                    } else {
                        codec::decode_key(py, &self.spec, &raw.key, Some(&raw.value))?
                            .into_bound(py)
                    };
                    let value = codec::decode_value(py, &raw.value)?.into_bound(py);
                    maker.make(&key, &value, codec::id_to_py(py, raw.id).as_any())?
                }
                None if is_item => it,
                None => maker.make(&it, &none, &nil)?,
            };
            out.push(obj);
        }
        PyList::new(py, out)
    }

    /// (found, value) of the first item with `key`; does not move the cursor.
    fn get(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<(bool, Py<PyAny>)> {
        let k = self.enc(key)?;
        let raw = Arc::clone(&self.raw);
        match engine(py.detach(move || raw.get(&k)))? {
            Some(v) => Ok((true, codec::decode_value(py, &v)?)),
            None => Ok((false, py.None())),
        }
    }

    fn contains(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = self.enc(key)?;
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.contains_key(&k)))
    }

    fn count(&self, py: Python<'_>) -> PyResult<u64> {
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.count()))
    }

    fn is_unique(&self, py: Python<'_>) -> PyResult<bool> {
        let raw = Arc::clone(&self.raw);
        engine(py.detach(move || raw.is_unique()))
    }

    /// (name, options as JSON text, count).
    fn info(&self, py: Python<'_>) -> PyResult<(String, String, u64)> {
        let raw = Arc::clone(&self.raw);
        let info = engine(py.detach(move || raw.info()))?;
        Ok((
            info.name.clone(),
            info.options_json().to_string(),
            info.count,
        ))
    }

    /// Items with `lo <= key < hi` (None: unbounded), lazily, optionally in reverse.
    #[pyo3(signature = (lo = None, hi = None, reverse = false))]
    fn range(
        &self,
        lo: Option<&Bound<'_, PyAny>>,
        hi: Option<&Bound<'_, PyAny>>,
        reverse: bool,
    ) -> PyResult<NativeRange> {
        let lo = match lo {
            Some(k) => RangeBound::Included(codec::encode_key(&self.spec, k, true)?),
            None => RangeBound::Unbounded,
        };
        let hi = match hi {
            Some(k) => RangeBound::Excluded(codec::encode_key(&self.spec, k, true)?),
            None => RangeBound::Unbounded,
        };
        if let (RangeBound::Included(a), RangeBound::Excluded(b)) = (&lo, &hi)
            && a > b
        {
            return Err(PyValueError::new_err("range: lo is greater than hi"));
        }
        Ok(NativeRange {
            iter: Mutex::new(self.raw.range((lo, hi))),
            spec: self.spec.clone(),
            reverse,
        })
    }
}

/// Lazy iterator over a key range, yielding (key, value, id) tuples.
#[pyclass(module = "sop._sop", frozen)]
pub struct NativeRange {
    iter: Mutex<RawRange>,
    spec: KeySpec,
    reverse: bool,
}

const RANGE_CHUNK: usize = 64;

#[pymethods]
impl NativeRange {
    /// Up to 64 next items (an empty list at the end).
    fn next_chunk(&self, py: Python<'_>) -> PyResult<Vec<PyItem>> {
        let got = py.detach(|| -> sop::Result<Vec<RawItem>> {
            let mut it = self
                .iter
                .lock()
                .map_err(|_| sop::Error::Poisoned("range iterator".into()))?;
            let mut out = Vec::with_capacity(RANGE_CHUNK);
            while out.len() < RANGE_CHUNK {
                let next = if self.reverse {
                    it.next_back()
                } else {
                    it.next()
                };
                match next {
                    Some(r) => out.push(r?),
                    None => break,
                }
            }
            Ok(out)
        });
        let got = engine(got)?;
        got.iter()
            .map(|it| {
                let key = codec::decode_key(py, &self.spec, &it.key, Some(&it.value))?;
                let value = codec::decode_value(py, &it.value)?;
                Ok((key, value, codec::id_to_str(it.id)))
            })
            .collect()
    }
}
