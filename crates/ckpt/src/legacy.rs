//! The legacy msgpack `checkpoint` file that older Flax and Orbax versions
//! wrote in place of `_METADATA` and zarr arrays. Read-only.
//!
//! The file is one msgpack document: the tree as nested maps, with
//! extension types for arrays (1: msgpack of `(shape, dtype name, C-order
//! bytes)`), Python complex numbers (2: `(real, imaginary)`), NumPy scalars
//! (3: as 1, 0-d) and tuples (4: a msgpack array). Arrays over 2^30 bytes
//! are split into a map marked `__msgpack_chunked_array__`.

use std::collections::BTreeMap;

use ckpt_core::{num_bytes_usize, DType};
use ckpt_pytree::PyTree;

use crate::{CkptError, HostArray, Leaf, Result, Scalar};

/// Name of the legacy file inside a checkpoint item.
pub(crate) const LEGACY_FILE: &str = "checkpoint";

/// Deepest nesting accepted, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 256;

/// A decoded msgpack value.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

/// Reads msgpack from a byte slice, checking every length against the bytes left.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}: {n} more bytes expected", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, width: usize) -> std::result::Result<u64, String> {
        let bytes = self.take(width)?;
        Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len(&mut self, width: usize) -> std::result::Result<usize, String> {
        let len = self.uint(width)?;
        usize::try_from(len).map_err(|_| format!("length {len} does not fit in memory"))
    }

    /// Checks that `count` items of at least one byte each can still follow.
    fn check_count(&self, count: usize) -> std::result::Result<(), String> {
        if count > self.bytes.len() - self.at {
            return Err(format!(
                "a container of {count} items at byte {} is longer than the {} bytes left",
                self.at,
                self.bytes.len() - self.at
            ));
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH}"));
        }
        let marker = self.byte()?;
        let value = match marker {
            0x00..=0x7f => Value::Int(i128::from(marker)),
            0xe0..=0xff => Value::Int(i128::from(marker as i8)),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xa0..=0xbf => self.string(usize::from(marker & 0x1f))?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let width = 1 << (marker - 0xc4);
                let len = self.len(width)?;
                Value::Bin(self.take(len)?.to_vec())
            }
            0xc7..=0xc9 => {
                let width = 1 << (marker - 0xc7);
                let len = self.len(width)?;
                let kind = self.byte()? as i8;
                Value::Ext(kind, self.take(len)?.to_vec())
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(i128::from(self.uint(1 << (marker - 0xcc))?)),
            0xd0 => Value::Int(i128::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Int(i128::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i128::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(i128::from(self.uint(8)? as i64)),
            0xd4..=0xd8 => {
                let len = 1usize << (marker - 0xd4);
                let kind = self.byte()? as i8;
                Value::Ext(kind, self.take(len)?.to_vec())
            }
            0xd9..=0xdb => {
                let len = self.len(1 << (marker - 0xd9))?;
                self.string(len)?
            }
            0xdc | 0xdd => {
                let len = self.len(2 << (marker - 0xdc))?;
                self.array(len, depth)?
            }
            0xde | 0xdf => {
                let len = self.len(2 << (marker - 0xde))?;
                self.map(len, depth)?
            }
            0xc1 => return Err(format!("byte 0xc1 at {} is not a msgpack type", self.at - 1)),
        };
        Ok(value)
    }

    fn string(&mut self, len: usize) -> std::result::Result<Value, String> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| format!("invalid UTF-8 in a string before byte {}", self.at))?;
        Ok(Value::Str(text.to_owned()))
    }

    fn array(&mut self, len: usize, depth: usize) -> std::result::Result<Value, String> {
        self.check_count(len)?;
        let items = (0..len)
            .map(|_| self.value(depth + 1))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> std::result::Result<Value, String> {
        self.check_count(len.saturating_mul(2))?;
        let mut entries = Vec::with_capacity(len);
        for _ in 0..len {
            let key = self.value(depth + 1)?;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

fn decode_value(bytes: &[u8]) -> std::result::Result<Value, String> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(0)?;
    if reader.at != bytes.len() {
        return Err(format!("{} bytes follow the document", bytes.len() - reader.at));
    }
    Ok(value)
}

/// Largest legacy file read, so a hostile file cannot exhaust memory.
const MAX_LEGACY_FILE_BYTES: u64 = 16 << 30;

/// Reads the legacy `checkpoint` file of an item that has no `_METADATA`;
/// `Ok(None)` when the item is not a legacy checkpoint.
pub(crate) fn read_legacy(item: &ckpt_storage::Store) -> Result<Option<PyTree<Leaf>>> {
    if item.exists(crate::checkpointer::METADATA_FILE)? {
        return Ok(None);
    }
    let Some(size) = item.size(LEGACY_FILE)? else {
        return Ok(None);
    };
    let location = format!("{}/{LEGACY_FILE}", item.url());
    if size > MAX_LEGACY_FILE_BYTES {
        return Err(CkptError::InvalidMetadata {
            path: location,
            reason: format!("the file has {size} bytes, more than the {MAX_LEGACY_FILE_BYTES} read"),
        });
    }
    let bytes = item.get_required(LEGACY_FILE)?;
    decode_legacy(&bytes, &location).map(Some)
}

/// Decodes a legacy msgpack checkpoint into a tree. `location` names the
/// file in errors.
pub(crate) fn decode_legacy(bytes: &[u8], location: &str) -> Result<PyTree<Leaf>> {
    let invalid = |reason: String| CkptError::InvalidMetadata {
        path: location.to_owned(),
        reason,
    };
    let value = decode_value(bytes).map_err(invalid)?;
    to_tree(value, 0).map_err(invalid)
}

fn to_tree(value: Value, depth: usize) -> std::result::Result<PyTree<Leaf>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH}"));
    }
    Ok(match value {
        Value::Nil => PyTree::None,
        Value::Bool(value) => PyTree::leaf(Leaf::Scalar(Scalar::Bool(value))),
        Value::Int(value) => {
            let value = i64::try_from(value).map_err(|_| format!("integer {value} does not fit in int64"))?;
            PyTree::leaf(Leaf::Scalar(Scalar::Int(value)))
        }
        Value::Float(value) => PyTree::leaf(Leaf::Scalar(Scalar::Float(value))),
        Value::Str(text) => PyTree::leaf(Leaf::String(text)),
        Value::Bin(_) => return Err("a bytes leaf has no ckpt type".into()),
        Value::Array(items) => PyTree::list(
            items
                .into_iter()
                .map(|item| to_tree(item, depth + 1))
                .collect::<std::result::Result<Vec<_>, _>>()?,
        ),
        Value::Map(entries) => {
            if is_chunked_array(&entries) {
                return Ok(PyTree::leaf(Leaf::HostArray(unchunk(entries)?)));
            }
            let mut children = BTreeMap::new();
            for (key, value) in entries {
                let key = match key {
                    Value::Str(text) => text,
                    Value::Int(number) => number.to_string(),
                    other => return Err(format!("a dict key is {other:?}, expected a string")),
                };
                children.insert(key, to_tree(value, depth + 1)?);
            }
            PyTree::Dict(children)
        }
        Value::Ext(kind, data) => ext_to_tree(kind, &data, depth)?,
    })
}

fn ext_to_tree(kind: i8, data: &[u8], depth: usize) -> std::result::Result<PyTree<Leaf>, String> {
    Ok(match kind {
        1 => PyTree::leaf(Leaf::HostArray(decode_ndarray(data)?)),
        2 => {
            let Value::Array(parts) = decode_value(data)? else {
                return Err("a complex number is not a (real, imaginary) pair".into());
            };
            let [Value::Float(re), Value::Float(im)] = parts.as_slice() else {
                return Err("a complex number is not a (real, imaginary) pair of floats".into());
            };
            let mut bytes = re.to_le_bytes().to_vec();
            bytes.extend_from_slice(&im.to_le_bytes());
            let array = HostArray::from_bytes(vec![], DType::Complex128, bytes).map_err(|e| e.to_string())?;
            PyTree::leaf(Leaf::HostArray(array))
        }
        3 => {
            let array = decode_ndarray(data)?;
            match Scalar::from_element(array.dtype(), array.bytes()) {
                Some(scalar) if array.shape().is_empty() => PyTree::leaf(Leaf::Scalar(scalar)),
                _ => PyTree::leaf(Leaf::HostArray(array)),
            }
        }
        4 => {
            let Value::Array(items) = decode_value(data)? else {
                return Err("a tuple is not a msgpack array".into());
            };
            PyTree::tuple(
                items
                    .into_iter()
                    .map(|item| to_tree(item, depth + 1))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        }
        other => return Err(format!("unknown msgpack extension type {other}")),
    })
}

/// Decodes extension 1: msgpack of `(shape, dtype name, C-order bytes)`.
fn decode_ndarray(data: &[u8]) -> std::result::Result<HostArray, String> {
    let Value::Array(parts) = decode_value(data)? else {
        return Err("an array is not a (shape, dtype, bytes) triple".into());
    };
    let [Value::Array(shape), name, Value::Bin(bytes)] = parts.as_slice() else {
        return Err("an array is not a (shape, dtype, bytes) triple".into());
    };
    let shape = shape
        .iter()
        .map(|dim| match dim {
            Value::Int(n) => u64::try_from(*n).map_err(|_| format!("invalid dimension {n}")),
            other => Err(format!("invalid dimension {other:?}")),
        })
        .collect::<std::result::Result<Vec<u64>, _>>()?;
    let name = match name {
        Value::Str(text) => text.clone(),
        Value::Bin(raw) => String::from_utf8_lossy(raw).into_owned(),
        other => return Err(format!("invalid dtype name {other:?}")),
    };
    let dtype = DType::from_name(&name).map_err(|e| e.to_string())?;
    let expected = num_bytes_usize(&shape, dtype).map_err(|e| e.to_string())?;
    if bytes.len() != expected {
        return Err(format!(
            "an array of {dtype} {shape:?} holds {} bytes, expected {expected}",
            bytes.len()
        ));
    }
    HostArray::from_bytes(shape, dtype, bytes.clone()).map_err(|e| e.to_string())
}

fn is_chunked_array(entries: &[(Value, Value)]) -> bool {
    entries
        .iter()
        .any(|(key, _)| *key == Value::Str("__msgpack_chunked_array__".into()))
}

/// Rebuilds an array that was split into chunks of at most 2^30 bytes.
fn unchunk(entries: Vec<(Value, Value)>) -> std::result::Result<HostArray, String> {
    let mut shape = None;
    let mut chunks = None;
    for (key, value) in entries {
        match (key, value) {
            (Value::Str(key), Value::Map(map)) if key == "shape" => shape = Some(map),
            (Value::Str(key), Value::Map(map)) if key == "chunks" => chunks = Some(map),
            _ => {}
        }
    }
    let (Some(shape), Some(chunks)) = (shape, chunks) else {
        return Err("a chunked array lacks its shape or chunks".into());
    };
    let shape = indexed(shape)?
        .into_iter()
        .map(|dim| match dim {
            Value::Int(n) => u64::try_from(n).map_err(|_| format!("invalid dimension {n}")),
            other => Err(format!("invalid dimension {other:?}")),
        })
        .collect::<std::result::Result<Vec<u64>, _>>()?;
    let mut dtype = None;
    let mut bytes = Vec::new();
    for chunk in indexed(chunks)? {
        let Value::Ext(1, data) = chunk else {
            return Err("a chunk of a chunked array is not an array".into());
        };
        let part = decode_ndarray(&data)?;
        if *dtype.get_or_insert(part.dtype()) != part.dtype() {
            return Err("the chunks of a chunked array differ in dtype".into());
        }
        bytes.extend_from_slice(part.bytes());
    }
    let dtype = dtype.ok_or("a chunked array has no chunks")?;
    HostArray::from_bytes(shape, dtype, bytes).map_err(|e| e.to_string())
}

/// Orders a map with keys "0", "1", ... into a list, as Orbax stores tuples there.
fn indexed(map: Vec<(Value, Value)>) -> std::result::Result<Vec<Value>, String> {
    let mut slots: Vec<Option<Value>> = vec![None; map.len()];
    for (key, value) in map {
        let Value::Str(key) = key else {
            return Err("a chunked array's index is not a string".into());
        };
        let index: usize = key.parse().map_err(|_| format!("invalid index {key:?}"))?;
        let slot = slots.get_mut(index).ok_or_else(|| format!("index {index} out of range"))?;
        *slot = Some(value);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.ok_or_else(|| format!("index {i} is missing")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nested_map() {
        // {"a": 1, "b": [true, nil], "c": "x"}
        let bytes = [
            0x83, 0xa1, b'a', 0x01, 0xa1, b'b', 0x92, 0xc3, 0xc0, 0xa1, b'c', 0xa1, b'x',
        ];
        let tree = decode_legacy(&bytes, "test").unwrap();
        let expected = PyTree::dict([
            ("a", PyTree::leaf(Leaf::Scalar(Scalar::Int(1)))),
            (
                "b",
                PyTree::list([PyTree::leaf(Leaf::Scalar(Scalar::Bool(true))), PyTree::None]),
            ),
            ("c", PyTree::leaf(Leaf::String("x".into()))),
        ]);
        assert_eq!(tree, expected);
    }

    #[test]
    fn truncated_input_is_rejected() {
        let err = decode_legacy(&[0x92, 0x01], "file").unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }

    #[test]
    fn huge_declared_length_is_rejected_without_allocating() {
        // bin32 declaring 4 GiB with no data.
        let err = decode_legacy(&[0xc6, 0xff, 0xff, 0xff, 0xff], "file").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn huge_container_count_is_rejected() {
        let err = decode_legacy(&[0xdd, 0xff, 0xff, 0xff, 0xff], "file").unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let bytes = vec![0x91; 10_000];
        let err = decode_legacy(&bytes, "file").unwrap_err();
        assert!(err.to_string().contains("nesting"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let err = decode_legacy(&[0xc0, 0xc0], "file").unwrap_err();
        assert!(err.to_string().contains("follow"), "{err}");
    }
}
