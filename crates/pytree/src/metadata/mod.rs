//! The Orbax `_METADATA` document: the tree structure of a checkpoint item
//! and the type of each leaf.

mod decode;
mod encode;
mod python_json;

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::flatten::{EmptyNode, FlatNode};
use crate::key::KeyPath;
use crate::repr::tuple_repr;
use crate::tree::PyTree;

/// Maximum size in bytes of a `_METADATA` document that
/// [`TreeMetadata::from_json`] accepts.
///
/// Entries with short key names take about 200 bytes each in the Orbax test
/// checkpoints, so 64 MiB leaves room for over 300,000 leaves while bounding
/// the memory a hostile file can claim. Readers should compare the file size
/// with this before reading the file.
pub const MAX_METADATA_BYTES: usize = 64 * 1024 * 1024;

/// Maximum number of keys in one key path of a decoded `_METADATA`.
///
/// Decoding and the tree functions recurse once per level, so this bounds
/// their stack use. Model state trees are a few dozen levels deep.
pub const MAX_TREE_DEPTH: usize = 512;

/// The type string Orbax stores for a leaf (`value_type`), naming the type
/// handler that wrote it.
///
/// Custom type handlers register their own strings, which are kept in
/// [`ValueType::Other`]. Build values with `From<&str>`, which maps known
/// strings to their variant. Equality and hashing compare the strings, so
/// `Other("scalar")` equals [`ValueType::Scalar`].
#[derive(Debug, Clone, Eq)]
#[non_exhaustive]
pub enum ValueType {
    /// `jax.Array`: a sharded array.
    JaxArray,
    /// `np.ndarray`: a host array, written by process 0.
    NumpyArray,
    /// `scalar`: a Python or NumPy scalar stored as a 0-d array.
    Scalar,
    /// `string`: a string stored in `_strings.json`.
    String,
    /// `Dict`: an empty dict.
    Dict,
    /// `List`: an empty list.
    List,
    /// `Tuple`: an empty tuple.
    Tuple,
    /// `None`: Python `None`.
    None,
    /// `NamedTuple`: an empty namedtuple, which [`PyTree`] cannot represent,
    /// so it stays a leaf.
    NamedTuple,
    /// `placeholder`: a leaf left out of the save.
    Placeholder,
    /// Any other type string, such as one of a custom type handler.
    Other(String),
}

impl ValueType {
    /// Returns the type string as stored in `_METADATA`.
    pub fn as_str(&self) -> &str {
        match self {
            ValueType::JaxArray => "jax.Array",
            ValueType::NumpyArray => "np.ndarray",
            ValueType::Scalar => "scalar",
            ValueType::String => "string",
            ValueType::Dict => "Dict",
            ValueType::List => "List",
            ValueType::Tuple => "Tuple",
            ValueType::None => "None",
            ValueType::NamedTuple => "NamedTuple",
            ValueType::Placeholder => "placeholder",
            ValueType::Other(other) => other,
        }
    }

    /// Returns the empty node that this type represents, if it is `Dict`, `List`,
    /// `Tuple` or `None`.
    pub fn empty_node(&self) -> Option<EmptyNode> {
        match self.as_str() {
            "Dict" => Some(EmptyNode::Dict),
            "List" => Some(EmptyNode::List),
            "Tuple" => Some(EmptyNode::Tuple),
            "None" => Some(EmptyNode::None),
            _ => None,
        }
    }

    /// Returns the type Orbax writes for an empty node.
    pub fn for_empty_node(node: EmptyNode) -> Self {
        match node {
            EmptyNode::Dict => ValueType::Dict,
            EmptyNode::List => ValueType::List,
            EmptyNode::Tuple => ValueType::Tuple,
            EmptyNode::None => ValueType::None,
        }
    }
}

impl From<&str> for ValueType {
    fn from(text: &str) -> Self {
        match text {
            "jax.Array" => ValueType::JaxArray,
            "np.ndarray" => ValueType::NumpyArray,
            "scalar" => ValueType::Scalar,
            "string" => ValueType::String,
            "Dict" => ValueType::Dict,
            "List" => ValueType::List,
            "Tuple" => ValueType::Tuple,
            "None" => ValueType::None,
            "NamedTuple" => ValueType::NamedTuple,
            "placeholder" => ValueType::Placeholder,
            other => ValueType::Other(other.to_owned()),
        }
    }
}

impl From<String> for ValueType {
    fn from(text: String) -> Self {
        match ValueType::from(text.as_str()) {
            ValueType::Other(_) => ValueType::Other(text),
            known => known,
        }
    }
}

impl PartialEq for ValueType {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Hash for ValueType {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `value_metadata` of one `_METADATA` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValueMetadata {
    /// The type handler's type string.
    pub value_type: ValueType,
    /// Whether restore skips this entry. Orbax sets it for empty nodes.
    pub skip_deserialize: bool,
    /// The shape of each shard as written, present for `jax.Array` leaves only.
    pub write_shape: Option<Vec<u64>>,
}

impl ValueMetadata {
    /// Creates the metadata of a leaf of type `value_type` that restore reads.
    pub fn new(value_type: impl Into<ValueType>) -> Self {
        ValueMetadata {
            value_type: value_type.into(),
            skip_deserialize: false,
            write_shape: None,
        }
    }

    /// Creates the metadata of a `jax.Array` leaf written in shards of `write_shape`.
    pub fn jax_array(write_shape: Vec<u64>) -> Self {
        ValueMetadata {
            value_type: ValueType::JaxArray,
            skip_deserialize: false,
            write_shape: Some(write_shape),
        }
    }

    /// Creates the metadata Orbax writes for an empty node.
    pub fn empty(node: EmptyNode) -> Self {
        ValueMetadata {
            value_type: ValueType::for_empty_node(node),
            skip_deserialize: true,
            write_shape: None,
        }
    }
}

/// A decoded `_METADATA` document: the tree of a checkpoint item with the
/// metadata of each leaf, and the storage options it was written with.
///
/// In [`tree`](Self::tree), empty dicts, lists and tuples and `None` are real
/// empty nodes, and every other entry is a leaf. Lists and tuples with items
/// both decode as lists because `_METADATA` does not record the difference.
/// Orbax also returns lists when it restores without a target tree.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TreeMetadata {
    /// The tree, with the metadata of each leaf.
    pub tree: PyTree<ValueMetadata>,
    /// Whether arrays are in an OCDBT database. `None` when the document has
    /// no value, so a reader must check for `manifest.ocdbt`.
    pub use_ocdbt: Option<bool>,
    /// Whether arrays use zarr v3 rather than v2. Missing means false.
    pub use_zarr3: bool,
    /// Whether every chunk was written, even chunks equal to the fill value,
    /// so that a missing chunk is an error on read. Missing means false,
    /// although Orbax 0.12.8 always writes true.
    pub store_array_data_equal_to_fill_value: bool,
    /// The user's `custom_metadata` JSON value, `null` when absent.
    pub custom_metadata: serde_json::Value,
}

impl TreeMetadata {
    /// Creates metadata for `tree` with the options Orbax 0.12.8 writes by
    /// default: OCDBT, zarr v2, every chunk stored, no custom metadata.
    pub fn new(tree: PyTree<ValueMetadata>) -> Self {
        TreeMetadata {
            tree,
            use_ocdbt: Some(true),
            use_zarr3: false,
            store_array_data_equal_to_fill_value: true,
            custom_metadata: serde_json::Value::Null,
        }
    }

    /// Lists the entries of the document in JAX flatten order, empty nodes
    /// included.
    pub fn entries(&self) -> Vec<MetadataEntry> {
        self.tree
            .flatten_with_empty()
            .into_iter()
            .map(|(path, node)| {
                let value_metadata = match node {
                    FlatNode::Leaf(value) => value.clone(),
                    FlatNode::Empty(empty) => ValueMetadata::empty(empty),
                };
                MetadataEntry {
                    path,
                    value_metadata,
                }
            })
            .collect()
    }
}

/// One entry of `tree_metadata`: a key path and its value metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetadataEntry {
    /// The key path, stored as `key_metadata`.
    pub path: KeyPath,
    /// The value metadata.
    pub value_metadata: ValueMetadata,
}

impl MetadataEntry {
    /// Returns the member name of this entry in `tree_metadata`, see [`entry_key`].
    pub fn entry_key(&self) -> String {
        entry_key(&self.path)
    }
}

/// Returns the member name Orbax gives the entry for `path` in
/// `tree_metadata`: Python's `str(tuple(str(k) for k in path))`, such as
/// `('opt', '1', '0')` or `('lr',)`.
///
/// Readers ignore this name and rebuild the path from `key_metadata`.
pub fn entry_key(path: &KeyPath) -> String {
    let names: Vec<_> = path.iter().map(|key| key.name()).collect();
    tuple_repr(names.iter().map(|name| name.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn value_type_round_trips_strings() {
        for text in [
            "jax.Array",
            "np.ndarray",
            "scalar",
            "string",
            "Dict",
            "List",
            "Tuple",
            "None",
            "NamedTuple",
            "placeholder",
            "my_handler.Type",
        ] {
            assert_eq!(ValueType::from(text).as_str(), text);
        }
    }

    #[test]
    fn value_type_keeps_unknown() {
        assert_eq!(
            ValueType::from("my_handler.Type"),
            ValueType::Other("my_handler.Type".to_owned())
        );
    }

    #[test]
    fn value_type_other_equals_known() {
        assert_eq!(ValueType::Other("scalar".to_owned()), ValueType::Scalar);
    }

    #[test]
    fn value_type_empty_nodes() {
        assert_eq!(ValueType::Tuple.empty_node(), Some(EmptyNode::Tuple));
        assert_eq!(ValueType::None.empty_node(), Some(EmptyNode::None));
        assert_eq!(ValueType::NamedTuple.empty_node(), None);
        assert_eq!(ValueType::JaxArray.empty_node(), None);
    }

    #[test]
    fn entry_key_forms() {
        let lr: KeyPath = [Key::from("lr")].into_iter().collect();
        let opt: KeyPath = [Key::from("opt"), Key::Index(1), Key::Index(0)]
            .into_iter()
            .collect();
        assert_eq!(entry_key(&lr), "('lr',)");
        assert_eq!(entry_key(&opt), "('opt', '1', '0')");
        assert_eq!(entry_key(&KeyPath::root()), "()");
    }

    #[test]
    fn entries_include_empty_nodes() {
        let metadata = TreeMetadata::new(PyTree::dict([
            ("b", PyTree::leaf(ValueMetadata::new("scalar"))),
            ("a", PyTree::tuple([])),
        ]));
        let entries = metadata.entries();
        let keys: Vec<String> = entries.iter().map(MetadataEntry::entry_key).collect();
        assert_eq!(keys, ["('a',)", "('b',)"]);
        assert_eq!(
            entries[0].value_metadata,
            ValueMetadata::empty(EmptyNode::Tuple)
        );
        assert!(entries[0].value_metadata.skip_deserialize);
    }
}
