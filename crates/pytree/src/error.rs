use thiserror::Error;

use crate::key::KeyPath;
use crate::tree::NodeKind;

/// Errors of tree operations: unflatten, prefix broadcasting and parameter names.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TreeError {
    /// Unflatten got a number of values other than the structure's leaf count.
    #[error("the structure has {expected} leaves but {found} values were given: pass one value per leaf")]
    LeafCountMismatch {
        /// Leaves in the structure.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The prefix tree has a node of another kind than the full tree at the same path.
    #[error("prefix tree does not match the full tree at {path}: the prefix has a {prefix} node where the full tree has a {full} node")]
    PrefixNodeMismatch {
        /// Path of the node.
        path: KeyPath,
        /// Kind of the prefix node.
        prefix: NodeKind,
        /// Kind of the full tree's node.
        full: NodeKind,
    },
    /// A dict of the prefix tree has other keys than the dict of the full tree at the same path.
    #[error("prefix tree does not match the full tree at {path}: the prefix dict lacks keys {missing:?} and has extra keys {unexpected:?}")]
    PrefixKeysMismatch {
        /// Path of the dict.
        path: KeyPath,
        /// Keys of the full tree's dict that the prefix dict lacks.
        missing: Vec<String>,
        /// Keys of the prefix dict that the full tree's dict lacks.
        unexpected: Vec<String>,
    },
    /// A list or tuple of the prefix tree has another length than the one in the full tree.
    #[error("prefix tree does not match the full tree at {path}: the prefix {kind} has {prefix_len} items but the full tree's has {full_len}")]
    PrefixLengthMismatch {
        /// Path of the list or tuple.
        path: KeyPath,
        /// Whether it is a list or a tuple.
        kind: NodeKind,
        /// Items in the prefix.
        prefix_len: usize,
        /// Items in the full tree.
        full_len: usize,
    },
    /// Two key paths have the same parameter name, so their arrays would share storage.
    #[error("key paths {first} and {second} both have the parameter name {name:?}: rename one of the keys")]
    ParamNameCollision {
        /// The shared parameter name.
        name: String,
        /// The path seen first.
        first: KeyPath,
        /// The path seen second.
        second: KeyPath,
    },
    /// One parameter name is a directory above another, so one array would sit inside the other.
    #[error("parameter name {outer_name:?} of key path {outer} is a directory above {inner_name:?} of key path {inner}: rename one of the keys so that no name starts with another name and '/'")]
    NestedParamName {
        /// Name of the enclosing array.
        outer_name: String,
        /// Path of the enclosing array.
        outer: KeyPath,
        /// Name of the enclosed array.
        inner_name: String,
        /// Path of the enclosed array.
        inner: KeyPath,
    },
    /// A parameter name that is not a safe relative storage path.
    #[error(
        "parameter name {name:?} of key path {path} is invalid because {reason}: rename the key"
    )]
    InvalidParamName {
        /// Path of the leaf.
        path: KeyPath,
        /// Its parameter name.
        name: String,
        /// The rule the name breaks.
        reason: &'static str,
    },
}

/// Text that is not a key path in `jax.tree_util.keystr` form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid key path {text:?} at byte {offset}: {reason}; write it as keystr prints it, such as ['params']['dense'][0]")]
pub struct KeyPathParseError {
    /// The text given.
    pub text: String,
    /// Byte offset of the first character that could not be parsed.
    pub offset: usize,
    /// The expected text at that offset.
    pub reason: String,
}

/// Errors of decoding a `_METADATA` document.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The document is larger than [`MAX_METADATA_BYTES`](crate::MAX_METADATA_BYTES).
    #[error("tree metadata is {size} bytes, more than the maximum of {max} bytes")]
    TooLarge {
        /// Size of the document in bytes.
        size: usize,
        /// The maximum size in bytes.
        max: usize,
    },
    /// The document is not valid JSON or does not have the fields and types of `_METADATA`.
    #[error("invalid tree metadata JSON")]
    Json {
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A `key_type` other than 1 (sequence index) or 2 (dict key).
    #[error("entry {entry:?} has key_type {key_type}: expected 1 for a sequence index or 2 for a dict key")]
    InvalidKeyType {
        /// The entry key in `tree_metadata`.
        entry: String,
        /// The `key_type` value as found, in JSON.
        key_type: String,
    },
    /// A sequence key that is not a decimal index without sign or leading zeros.
    #[error("entry {entry:?} has sequence key {key:?}: expected a decimal index such as \"0\"")]
    InvalidSequenceKey {
        /// The entry key in `tree_metadata`.
        entry: String,
        /// The key as found.
        key: String,
    },
    /// A key path longer than [`MAX_TREE_DEPTH`](crate::MAX_TREE_DEPTH).
    #[error("entry {entry:?} has a key path of {depth} keys, more than the maximum of {max}")]
    TooDeep {
        /// The entry key in `tree_metadata`.
        entry: String,
        /// Number of keys in the path.
        depth: usize,
        /// The maximum number of keys.
        max: usize,
    },
    /// One node has both dict keys and sequence indices as children.
    #[error("node {path} has both dict keys and sequence indices as children")]
    MixedKeyTypes {
        /// Path of the node.
        path: KeyPath,
    },
    /// One path is a leaf or empty node in one entry and has children in another.
    #[error("key path {path} is both a leaf and an interior node")]
    LeafAndInterior {
        /// The path.
        path: KeyPath,
    },
    /// Two entries have the same key path.
    #[error("key path {path} appears in two entries")]
    DuplicatePath {
        /// The path.
        path: KeyPath,
    },
    /// A list whose indices skip a number, so its items cannot be placed.
    #[error("sequence {path} has no entry for index {index} but has entries after it")]
    MissingSequenceIndex {
        /// Path of the list.
        path: KeyPath,
        /// The first missing index.
        index: usize,
    },
}
