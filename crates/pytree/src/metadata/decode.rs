//! Decoding of `_METADATA`, which comes from a checkpoint and so is untrusted.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{TreeMetadata, ValueMetadata, ValueType, MAX_METADATA_BYTES, MAX_TREE_DEPTH};
use crate::error::MetadataError;
use crate::key::{Key, KeyPath, KeyType};
use crate::tree::PyTree;

#[derive(Deserialize)]
struct RawDocument {
    tree_metadata: RawEntries,
    #[serde(default)]
    use_ocdbt: Option<bool>,
    #[serde(default)]
    use_zarr3: Option<bool>,
    #[serde(default)]
    store_array_data_equal_to_fill_value: Option<bool>,
    #[serde(default)]
    custom_metadata: serde_json::Value,
}

/// The members of `tree_metadata` in document order.
struct RawEntries(Vec<(String, RawEntry)>);

#[derive(Deserialize)]
struct RawEntry {
    key_metadata: Vec<RawKey>,
    value_metadata: RawValueMetadata,
}

#[derive(Deserialize)]
struct RawKey {
    key: RawKeyName,
    // Kept as raw JSON so that an out-of-range code gets its own error.
    key_type: serde_json::Value,
}

/// Orbax 0.12.8 always writes `key` as a string. A 2026 revision of Orbax's
/// `tree.py` writes integer keys as JSON integers, so those are accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawKeyName {
    String(String),
    Integer(u64),
}

#[derive(Deserialize)]
struct RawValueMetadata {
    value_type: String,
    #[serde(default)]
    skip_deserialize: bool,
    #[serde(default)]
    write_shape: Option<Vec<u64>>,
}

impl<'de> Deserialize<'de> for RawEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = RawEntries;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object of tree metadata entries")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawEntry>()? {
                    entries.push(entry);
                }
                Ok(RawEntries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl TreeMetadata {
    /// Decodes a `_METADATA` document.
    ///
    /// The tree is rebuilt from each entry's `key_metadata`, and the entry's
    /// member name is ignored, as in Orbax. A missing `use_ocdbt` gives
    /// `None`. A missing `use_zarr3`, `store_array_data_equal_to_fill_value`
    /// or `skip_deserialize` gives false. Unknown members, such as
    /// `value_metadata_tree`, are ignored. A document without entries decodes
    /// to an empty dict.
    ///
    /// Parameter names are not checked: call
    /// [`PyTree::check_param_names`] before using them as storage paths.
    ///
    /// # Errors
    ///
    /// Every failed check has its own [`MetadataError`] variant:
    /// - [`TooLarge`](MetadataError::TooLarge): over [`MAX_METADATA_BYTES`];
    /// - [`Json`](MetadataError::Json): invalid JSON or a wrong schema;
    /// - [`InvalidKeyType`](MetadataError::InvalidKeyType): a `key_type` other than 1 or 2;
    /// - [`InvalidSequenceKey`](MetadataError::InvalidSequenceKey): a sequence key that is not a decimal index;
    /// - [`TooDeep`](MetadataError::TooDeep): a path of over [`MAX_TREE_DEPTH`] keys;
    /// - [`MixedKeyTypes`](MetadataError::MixedKeyTypes): a node with both kinds of keys;
    /// - [`LeafAndInterior`](MetadataError::LeafAndInterior): a path that is both a leaf and an interior node;
    /// - [`DuplicatePath`](MetadataError::DuplicatePath): a path given twice;
    /// - [`MissingSequenceIndex`](MetadataError::MissingSequenceIndex): list indices with holes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MetadataError> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge {
                size: bytes.len(),
                max: MAX_METADATA_BYTES,
            });
        }
        let raw: RawDocument =
            serde_json::from_slice(bytes).map_err(|source| MetadataError::Json { source })?;

        let mut root = Slot::Vacant;
        for (entry, raw_entry) in raw.tree_metadata.0 {
            let keys = decode_keys(&entry, raw_entry.key_metadata)?;
            let node = decode_value(raw_entry.value_metadata);
            insert(&mut root, keys, node)?;
        }
        let tree = into_tree(root, &mut KeyPath::root())?;

        Ok(TreeMetadata {
            tree,
            use_ocdbt: raw.use_ocdbt,
            use_zarr3: raw.use_zarr3.unwrap_or(false),
            store_array_data_equal_to_fill_value: raw
                .store_array_data_equal_to_fill_value
                .unwrap_or(false),
            custom_metadata: raw.custom_metadata,
        })
    }
}

fn decode_keys(entry: &str, raw_keys: Vec<RawKey>) -> Result<Vec<Key>, MetadataError> {
    if raw_keys.len() > MAX_TREE_DEPTH {
        return Err(MetadataError::TooDeep {
            entry: entry.to_owned(),
            depth: raw_keys.len(),
            max: MAX_TREE_DEPTH,
        });
    }
    raw_keys
        .into_iter()
        .map(|raw_key| decode_key(entry, raw_key))
        .collect()
}

fn decode_key(entry: &str, raw_key: RawKey) -> Result<Key, MetadataError> {
    let Some(key_type) = raw_key.key_type.as_u64().and_then(KeyType::from_code) else {
        return Err(MetadataError::InvalidKeyType {
            entry: entry.to_owned(),
            key_type: raw_key.key_type.to_string(),
        });
    };
    let name = match raw_key.key {
        RawKeyName::String(name) => name,
        RawKeyName::Integer(number) => number.to_string(),
    };

    match key_type {
        KeyType::Dict => Ok(Key::Dict(name)),
        KeyType::Sequence => match parse_index(&name) {
            Some(index) => Ok(Key::Index(index)),
            None => Err(MetadataError::InvalidSequenceKey {
                entry: entry.to_owned(),
                key: name,
            }),
        },
    }
}

/// Parses a decimal index as Python's `str(int)` writes it: digits only, no
/// sign, no leading zeros, so that each index has exactly one spelling.
fn parse_index(text: &str) -> Option<usize> {
    let digits_only = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return None;
    }
    text.parse().ok()
}

fn decode_value(raw: RawValueMetadata) -> PyTree<ValueMetadata> {
    let value_type = ValueType::from(raw.value_type);
    // NOTE: an empty-node type decodes to the empty node even with
    // skip_deserialize false or a write_shape, and those fields are lost.
    // Orbax never writes such entries.
    if let Some(empty) = value_type.empty_node() {
        return empty.to_tree();
    }
    PyTree::Leaf(ValueMetadata {
        value_type,
        skip_deserialize: raw.skip_deserialize,
        write_shape: raw.write_shape,
    })
}

/// A node of the tree under construction.
enum Slot {
    /// A node without a kind yet. Only the root stays vacant, and only when
    /// there are no entries.
    Vacant,
    Dict(BTreeMap<String, Slot>),
    /// List items by index, checked for holes when the tree is finished.
    Sequence(BTreeMap<usize, Slot>),
    /// A leaf or an empty node, which takes no children.
    Terminal(PyTree<ValueMetadata>),
}

fn insert(
    root: &mut Slot,
    keys: Vec<Key>,
    value: PyTree<ValueMetadata>,
) -> Result<(), MetadataError> {
    let mut slot = root;
    for (depth, key) in keys.iter().enumerate() {
        if let Slot::Vacant = slot {
            *slot = match key {
                Key::Dict(_) => Slot::Dict(BTreeMap::new()),
                Key::Index(_) => Slot::Sequence(BTreeMap::new()),
            };
        }
        slot = match (slot, key) {
            (Slot::Dict(children), Key::Dict(name)) => {
                children.entry(name.clone()).or_insert(Slot::Vacant)
            }
            (Slot::Sequence(children), Key::Index(index)) => {
                children.entry(*index).or_insert(Slot::Vacant)
            }
            (Slot::Terminal(_), _) => {
                return Err(MetadataError::LeafAndInterior {
                    path: keys[..depth].iter().cloned().collect(),
                })
            }
            _ => {
                return Err(MetadataError::MixedKeyTypes {
                    path: keys[..depth].iter().cloned().collect(),
                })
            }
        };
    }

    match slot {
        Slot::Vacant => {
            *slot = Slot::Terminal(value);
            Ok(())
        }
        Slot::Terminal(_) => Err(MetadataError::DuplicatePath { path: keys.into() }),
        Slot::Dict(_) | Slot::Sequence(_) => {
            Err(MetadataError::LeafAndInterior { path: keys.into() })
        }
    }
}

/// Converts the finished slots to a tree. Recursion depth is bounded by
/// [`MAX_TREE_DEPTH`] because every path was checked against it.
fn into_tree(slot: Slot, path: &mut KeyPath) -> Result<PyTree<ValueMetadata>, MetadataError> {
    match slot {
        Slot::Vacant => Ok(PyTree::Dict(BTreeMap::new())),
        Slot::Terminal(tree) => Ok(tree),
        Slot::Dict(children) => {
            let mut tree = BTreeMap::new();
            for (name, child) in children {
                path.push(name.as_str());
                let result = into_tree(child, path);
                path.pop();
                tree.insert(name, result?);
            }
            Ok(PyTree::Dict(tree))
        }
        Slot::Sequence(children) => {
            let mut items = Vec::with_capacity(children.len());
            for (expected, (index, child)) in children.into_iter().enumerate() {
                if index != expected {
                    return Err(MetadataError::MissingSequenceIndex {
                        path: path.clone(),
                        index: expected,
                    });
                }
                path.push(index);
                let result = into_tree(child, path);
                path.pop();
                items.push(result?);
            }
            Ok(PyTree::List(items))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::EmptyNode;

    fn decode(json: &str) -> Result<TreeMetadata, MetadataError> {
        TreeMetadata::from_json(json.as_bytes())
    }

    /// Wraps `entries` (the inside of `tree_metadata`) in a document.
    fn document(entries: &str) -> String {
        format!(r#"{{"tree_metadata": {{{entries}}}, "use_ocdbt": true}}"#)
    }

    fn entry(name: &str, keys: &str, value_type: &str) -> String {
        format!(
            r#""{name}": {{"key_metadata": [{keys}], "value_metadata": {{"value_type": "{value_type}", "skip_deserialize": false}}}}"#
        )
    }

    fn path(keys: impl IntoIterator<Item = Key>) -> KeyPath {
        keys.into_iter().collect()
    }

    #[test]
    fn decode_nested() {
        let json = document(
            &[
                entry(
                    "x",
                    r#"{"key": "opt", "key_type": 2}, {"key": "1", "key_type": 1}"#,
                    "np.ndarray",
                ),
                entry(
                    "y",
                    r#"{"key": "opt", "key_type": 2}, {"key": "0", "key_type": 1}"#,
                    "scalar",
                ),
                entry("z", r#"{"key": "e", "key_type": 2}"#, "Tuple"),
            ]
            .join(", "),
        );
        let decoded = decode(&json).map(|metadata| metadata.tree);
        let expected = PyTree::dict([
            (
                "opt",
                PyTree::list([
                    PyTree::leaf(ValueMetadata::new("scalar")),
                    PyTree::leaf(ValueMetadata::new("np.ndarray")),
                ]),
            ),
            ("e", EmptyNode::Tuple.to_tree()),
        ]);
        assert_eq!(decoded.ok(), Some(expected));
    }

    #[test]
    fn decode_defaults() {
        let Ok(metadata) = decode(r#"{"tree_metadata": {}}"#) else {
            panic!("a document without entries is valid");
        };
        assert_eq!(metadata.use_ocdbt, None);
        assert!(!metadata.use_zarr3);
        assert!(!metadata.store_array_data_equal_to_fill_value);
        assert_eq!(metadata.custom_metadata, serde_json::Value::Null);
        assert_eq!(metadata.tree, PyTree::dict::<String>([]));
    }

    #[test]
    fn decode_null_options() {
        let json = r#"{"tree_metadata": {}, "use_ocdbt": null, "use_zarr3": null,
            "store_array_data_equal_to_fill_value": null}"#;
        let metadata = decode(json).ok();
        assert_eq!(metadata.as_ref().map(|m| m.use_ocdbt), Some(None));
        assert_eq!(metadata.as_ref().map(|m| m.use_zarr3), Some(false));
    }

    #[test]
    fn decode_ignores_entry_names() {
        let json = document(&entry(
            "('wrong',)",
            r#"{"key": "right", "key_type": 2}"#,
            "scalar",
        ));
        let tree = decode(&json).map(|metadata| metadata.tree).ok();
        assert_eq!(
            tree,
            Some(PyTree::dict([(
                "right",
                PyTree::leaf(ValueMetadata::new("scalar"))
            )]))
        );
    }

    #[test]
    fn decode_integer_keys() {
        let json = document(&entry(
            "e",
            r#"{"key": "opt", "key_type": 2}, {"key": 0, "key_type": 1}"#,
            "scalar",
        ));
        let tree = decode(&json).map(|metadata| metadata.tree).ok();
        let expected = PyTree::dict([(
            "opt",
            PyTree::list([PyTree::leaf(ValueMetadata::new("scalar"))]),
        )]);
        assert_eq!(tree, Some(expected));
    }

    #[test]
    fn decode_root_leaf() {
        let json = document(&entry("()", "", "scalar"));
        let tree = decode(&json).map(|metadata| metadata.tree).ok();
        assert_eq!(tree, Some(PyTree::leaf(ValueMetadata::new("scalar"))));
    }

    #[test]
    fn decode_keeps_custom_type() {
        let json = document(&entry("e", r#"{"key": "k", "key_type": 2}"#, "my.Handler"));
        let tree = decode(&json).map(|metadata| metadata.tree).ok();
        let expected = PyTree::dict([(
            "k",
            PyTree::leaf(ValueMetadata::new(ValueType::Other(
                "my.Handler".to_owned(),
            ))),
        )]);
        assert_eq!(tree, Some(expected));
    }

    #[test]
    fn decode_max_depth_accepted() {
        let keys = vec![r#"{"key": "k", "key_type": 2}"#; MAX_TREE_DEPTH].join(", ");
        let json = document(&entry("deep", &keys, "scalar"));
        let depth = decode(&json).map(|metadata| metadata.entries()[0].path.len());
        assert_eq!(depth.ok(), Some(MAX_TREE_DEPTH));
    }

    #[test]
    fn error_too_large() {
        let bytes = vec![b' '; MAX_METADATA_BYTES + 1];
        let result = TreeMetadata::from_json(&bytes);
        assert!(
            matches!(result, Err(MetadataError::TooLarge { size, .. }) if size == MAX_METADATA_BYTES + 1)
        );
    }

    #[test]
    fn error_json() {
        for json in [
            "",
            "{",
            "[]",
            r#"{"use_ocdbt": true}"#,
            r#"{"tree_metadata": []}"#,
            r#"{"tree_metadata": {"e": {"key_metadata": [{"key": "a", "key_type": 2}]}}}"#,
            r#"{"tree_metadata": {"e": {"key_metadata": [{"key": -1, "key_type": 1}], "value_metadata": {"value_type": "scalar"}}}}"#,
            r#"{"tree_metadata": {}, "use_zarr3": "yes"}"#,
        ] {
            let result = decode(json);
            assert!(
                matches!(result, Err(MetadataError::Json { .. })),
                "{json:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn error_invalid_key_type() {
        for key_type in ["0", "3", "-1", "1.5", "\"1\"", "null"] {
            let json = document(&entry(
                "e",
                &format!(r#"{{"key": "a", "key_type": {key_type}}}"#),
                "scalar",
            ));
            let result = decode(&json);
            assert!(
                matches!(&result, Err(MetadataError::InvalidKeyType { key_type: found, .. }) if found == key_type),
                "key_type {key_type} gave {result:?}"
            );
        }
    }

    #[test]
    fn error_invalid_sequence_key() {
        for key in [
            "a",
            "",
            "-1",
            "+1",
            "01",
            " 1",
            "1.0",
            "99999999999999999999999",
        ] {
            let json = document(&entry(
                "e",
                &format!(r#"{{"key": "{key}", "key_type": 1}}"#),
                "scalar",
            ));
            let result = decode(&json);
            assert!(
                matches!(&result, Err(MetadataError::InvalidSequenceKey { key: found, .. }) if found == key),
                "key {key:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn error_too_deep() {
        let keys = vec![r#"{"key": "k", "key_type": 2}"#; MAX_TREE_DEPTH + 1].join(", ");
        let json = document(&entry("deep", &keys, "scalar"));
        let result = decode(&json);
        assert!(
            matches!(result, Err(MetadataError::TooDeep { depth, .. }) if depth == MAX_TREE_DEPTH + 1)
        );
    }

    #[test]
    fn error_mixed_key_types() {
        let json = document(
            &[
                entry(
                    "x",
                    r#"{"key": "a", "key_type": 2}, {"key": "0", "key_type": 1}"#,
                    "scalar",
                ),
                entry(
                    "y",
                    r#"{"key": "a", "key_type": 2}, {"key": "b", "key_type": 2}"#,
                    "scalar",
                ),
            ]
            .join(", "),
        );
        let result = decode(&json);
        assert!(
            matches!(&result, Err(MetadataError::MixedKeyTypes { path: found }) if *found == path([Key::from("a")])),
            "{result:?}"
        );
    }

    #[test]
    fn error_leaf_then_interior() {
        let json = document(
            &[
                entry("x", r#"{"key": "a", "key_type": 2}"#, "scalar"),
                entry(
                    "y",
                    r#"{"key": "a", "key_type": 2}, {"key": "b", "key_type": 2}"#,
                    "scalar",
                ),
            ]
            .join(", "),
        );
        let result = decode(&json);
        assert!(
            matches!(&result, Err(MetadataError::LeafAndInterior { path: found }) if *found == path([Key::from("a")])),
            "{result:?}"
        );
    }

    #[test]
    fn error_interior_then_empty_node() {
        let json = document(
            &[
                entry(
                    "y",
                    r#"{"key": "a", "key_type": 2}, {"key": "b", "key_type": 2}"#,
                    "scalar",
                ),
                entry("x", r#"{"key": "a", "key_type": 2}"#, "Dict"),
            ]
            .join(", "),
        );
        let result = decode(&json);
        assert!(
            matches!(&result, Err(MetadataError::LeafAndInterior { path: found }) if *found == path([Key::from("a")])),
            "{result:?}"
        );
    }

    #[test]
    fn error_root_leaf_and_children() {
        let json = document(
            &[
                entry("x", "", "scalar"),
                entry("y", r#"{"key": "a", "key_type": 2}"#, "scalar"),
            ]
            .join(", "),
        );
        let result = decode(&json);
        assert!(
            matches!(&result, Err(MetadataError::LeafAndInterior { path: found }) if found.is_empty()),
            "{result:?}"
        );
    }

    #[test]
    fn error_duplicate_path() {
        let json = document(
            &[
                entry("x", r#"{"key": "a", "key_type": 2}"#, "scalar"),
                entry("y", r#"{"key": "a", "key_type": 2}"#, "string"),
            ]
            .join(", "),
        );
        let result = decode(&json);
        assert!(
            matches!(&result, Err(MetadataError::DuplicatePath { path: found }) if *found == path([Key::from("a")])),
            "{result:?}"
        );
    }

    #[test]
    fn error_missing_sequence_index() {
        let json = document(
            &[
                entry(
                    "x",
                    r#"{"key": "l", "key_type": 2}, {"key": "0", "key_type": 1}"#,
                    "scalar",
                ),
                entry(
                    "y",
                    r#"{"key": "l", "key_type": 2}, {"key": "2", "key_type": 1}"#,
                    "scalar",
                ),
            ]
            .join(", "),
        );
        let result = decode(&json);
        assert!(
            matches!(&result, Err(MetadataError::MissingSequenceIndex { path: found, index: 1 }) if *found == path([Key::from("l")])),
            "{result:?}"
        );
    }

    #[test]
    fn error_sequence_without_zero() {
        let json = document(&entry(
            "x",
            r#"{"key": "18446744073709551615", "key_type": 1}"#,
            "scalar",
        ));
        let result = decode(&json);
        assert!(
            matches!(&result, Err(MetadataError::MissingSequenceIndex { path: found, index: 0 }) if found.is_empty()),
            "{result:?}"
        );
    }
}
