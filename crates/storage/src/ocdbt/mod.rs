//! OCDBT, the versioned key-value database that TensorStore writes and that
//! Orbax stores each checkpoint item's zarr arrays in.
//!
//! A database is a directory in a [`Store`](crate::Store). The format has
//! these layers, from the files inward:
//!
//! - **Files.** `manifest.ocdbt` is the entry point. `d/<32 hex digits>` data
//!   files contain encoded nodes and out-of-line values back to back, and
//!   readers find both by (file, offset, length) references.
//! - **Envelope.** The manifest and every node are wrapped the same way: a
//!   magic number, the total length, format version 0, a compression method
//!   (none or one zstd frame), the body, and a CRC-32C over everything
//!   before it.
//! - **Manifest.** The configuration (uuid, inline value limit, node size
//!   limit, version tree arity, compression), a data file table and the
//!   newest versions. Older versions are in version tree nodes. The last
//!   version in the manifest is the newest, so reading the current state
//!   never touches the version tree.
//! - **Data file table.** Each manifest and node starts its references with
//!   a prefix-compressed list of (base path, relative path) pairs. A node
//!   read from a file resolves its own table against that file's base path,
//!   which is how a merged database refers to files in the per-process
//!   databases below it.
//! - **B+tree.** Leaves contain keys with their values, either inline (up to
//!   `max_inline_value_bytes`, 1024 in Orbax) or as references to data
//!   files. Interior nodes contain the lowest key of each child. Keys are
//!   prefix-compressed within a node. An interior entry can also declare a
//!   prefix that every key of its child shares, which the child then omits.
//!
//! [`OcdbtReader`] reads the newest version, [`OcdbtWriter`] creates a
//! database with one version, and [`merge_databases`] joins per-process
//! databases the way Orbax finalizes a multi-process save. The decoders of
//! each structure are public in [`format`] so that each can be fuzzed alone.

mod btree;
mod build;
mod cursor;
mod data_file_table;
mod envelope;
mod error;
mod manifest;
mod merge;
mod reader;
mod reference;
mod version_tree;
mod writer;

use self::cursor::Cursor;
pub use self::{
    data_file_table::DataFileId,
    error::OcdbtError,
    manifest::{OcdbtCompression, OcdbtConfig},
    merge::merge_databases,
    reader::OcdbtReader,
    reference::{DataReference, NodeReference, NodeStatistics},
    version_tree::VersionReference,
    writer::{OcdbtWriter, OcdbtWriterOptions},
};

pub mod format {
    //! The structures of the OCDBT format and one decoder per structure.
    //!
    //! Each decoder takes untrusted bytes and checks every length, count and
    //! offset against the bytes present. On failure it returns an
    //! [`OcdbtError`] naming the field. No decoder panics, and none allocates
    //! more than its input justifies. Fuzz targets and inspection tools call them
    //! directly, and [`OcdbtReader`](super::OcdbtReader) uses the same code.

    pub use super::{
        btree::{
            decode_btree_node, decode_btree_node_body, BtreeEntries, BtreeNode, InteriorEntry,
            LeafEntry, LeafValue, MAX_KEY_LEN, MAX_NODE_ENTRIES,
        },
        data_file_table::{decode_data_file_table, MAX_PATH_LEN},
        envelope::{
            decode_envelope, BTREE_NODE_MAGIC, MANIFEST_MAGIC, MAX_DECODED_BYTES_LIMIT,
            VERSION_TREE_NODE_MAGIC,
        },
        manifest::{
            decode_manifest, decode_manifest_body, Manifest, ManifestKind, MAX_INLINE_VALUE_BYTES,
        },
        version_tree::{
            decode_version_interior_entries, decode_version_leaf_entries, decode_version_tree_node,
            VersionNodeReference, VersionTreeEntries, VersionTreeNode, MAX_VERSION_TREE_ARITY_LOG2,
        },
        DataFileId, DataReference, NodeReference, NodeStatistics, OcdbtError, VersionReference,
    };

    /// Decodes one unsigned LEB128 varint at the start of `input` and
    /// returns it with the number of bytes it took.
    ///
    /// Rejects encodings longer than necessary and values above `u64::MAX`.
    pub fn decode_varint(input: &[u8]) -> Result<(u64, usize), OcdbtError> {
        super::cursor::decode_varint(input, "varint")
    }
}

#[cfg(test)]
mod tests;
