use thiserror::Error;

use crate::StorageError;

/// Errors of decoding OCDBT structures: each variant is one failed check.
///
/// The reader converts these into [`StorageError::Corrupt`] with the file name
/// and the structure that failed. The decoders in [`crate::ocdbt_format`]
/// return them unchanged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OcdbtError {
    /// The data ends before a field is complete.
    #[error("unexpected end of data in {field}: {needed} bytes needed, {available} available")]
    UnexpectedEnd {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// A varint that is longer than its shortest encoding or does not fit in 64 bits.
    #[error("invalid varint in {field}: {reason}")]
    InvalidVarint {
        /// The field being read.
        field: &'static str,
        /// Whether it is overlong or overflows.
        reason: &'static str,
    },
    /// A structure that starts with the wrong magic number.
    #[error("bad magic number {found:#010x} for {structure}, expected {expected:#010x}")]
    BadMagic {
        /// The structure expected at this place.
        structure: &'static str,
        /// The magic number of that structure.
        expected: u32,
        /// The first four bytes, big-endian.
        found: u32,
    },
    /// An envelope whose length header disagrees with the number of bytes present.
    #[error("length header says {header} bytes but {actual} bytes are present")]
    LengthMismatch {
        /// The length stored in the header.
        header: u64,
        /// The bytes present.
        actual: u64,
    },
    /// An envelope whose CRC-32C does not match its bytes.
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum stored in the last four bytes.
        stored: u32,
        /// The checksum of the bytes before it.
        computed: u32,
    },
    /// An envelope of a format version this reader does not know.
    #[error("unsupported format version {version}, expected 0")]
    UnsupportedVersion {
        /// The version found.
        version: u64,
    },
    /// A compression method other than none (0) or zstd (1).
    #[error("unknown compression method {method}, expected 0 (none) or 1 (zstd)")]
    UnknownCompression {
        /// The method found.
        method: u64,
    },
    /// A zstd body that does not decompress.
    #[error("zstd decompression failed: {source}")]
    Decompress {
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// A size, count or length above the limit the format or the configuration sets.
    #[error("{field} is {value}, above the limit of {limit}")]
    LimitExceeded {
        /// The quantity measured.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The maximum allowed.
        limit: u64,
    },
    /// Bytes left over after a structure that must use its input exactly.
    #[error("{count} unexpected bytes after the end of {structure}")]
    TrailingBytes {
        /// The structure that ended early.
        structure: &'static str,
        /// The bytes left over.
        count: u64,
    },
    /// A prefix-compressed key or path whose shared prefix is longer than the previous one.
    #[error(
        "{field}[{index}] is {prefix_len}, longer than the previous entry's {previous_len} bytes"
    )]
    PrefixTooLong {
        /// The prefix length column.
        field: &'static str,
        /// The entry index.
        index: u64,
        /// The prefix length found.
        prefix_len: u64,
        /// The length of the previous key or path.
        previous_len: u64,
    },
    /// B+tree node keys that are not strictly increasing.
    #[error("key {index} of the B+tree node is not greater than the key before it")]
    KeysNotSorted {
        /// The index of the first key out of order.
        index: u64,
    },
    /// An index into a table, such as a data file id, outside the table.
    #[error("{field}[{index}] is {value}, outside the table of {len} entries")]
    IndexOutOfRange {
        /// The index column.
        field: &'static str,
        /// The entry index.
        index: u64,
        /// The index found.
        value: u64,
        /// The table size.
        len: u64,
    },
    /// A B+tree leaf entry whose value kind is neither inline (0) nor out-of-line (1).
    #[error("value_kind[{index}] is {kind}, expected 0 (inline) or 1 (out-of-line)")]
    InvalidValueKind {
        /// The entry index.
        index: u64,
        /// The kind found.
        kind: u8,
    },
    /// A data file path that is not UTF-8 or would leave the database directory.
    #[error("invalid data file path {path:?}: {reason}")]
    InvalidPath {
        /// The path, with invalid UTF-8 replaced.
        path: String,
        /// The reason it is rejected.
        reason: &'static str,
    },
    /// A B+tree node whose height differs from the one its parent implies.
    #[error("B+tree node has height {found}, expected {expected}")]
    HeightMismatch {
        /// The height the parent or the version implies.
        expected: u8,
        /// The height stored in the node.
        found: u8,
    },
    /// Any other field that breaks a rule of the format.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// The rule it breaks, with the values found.
        reason: String,
    },
}

impl OcdbtError {
    /// Converts a decoding error into [`StorageError::Corrupt`] naming the
    /// file (as a URL) and the structure inside it.
    pub(crate) fn in_file(self, file_url: String, structure: &str) -> StorageError {
        StorageError::Corrupt {
            key: file_url,
            reason: format!("{structure}: {self}"),
        }
    }
}
