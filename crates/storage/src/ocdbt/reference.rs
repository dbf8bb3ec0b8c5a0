//! References to byte ranges of data files, and the column-major arrays
//! that store them.

use super::{cursor::write_varint, Cursor, DataFileId, OcdbtError};

/// The offset and length that mark an absent root node in an empty version.
const MISSING: u64 = u64::MAX;

/// A byte range of a data file: an encoded node or an out-of-line value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DataReference {
    /// The file, resolved against the table it was read from.
    pub file: DataFileId,
    /// Offset of the first byte in the file.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl DataReference {
    /// Returns the offset one past the last byte. Decoding checked that it does not overflow.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// Totals over the subtree below a B+tree node reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStatistics {
    /// Number of keys in the leaves.
    pub num_keys: u64,
    /// Encoded bytes of every node, the referenced one included.
    pub num_tree_bytes: u64,
    /// Bytes of the values stored out-of-line.
    pub num_indirect_value_bytes: u64,
}

impl NodeStatistics {
    /// Adds `other` to these totals, saturating as TensorStore does.
    pub(super) fn add(&mut self, other: &NodeStatistics) {
        self.num_keys = self.num_keys.saturating_add(other.num_keys);
        self.num_tree_bytes = self.num_tree_bytes.saturating_add(other.num_tree_bytes);
        self.num_indirect_value_bytes = self
            .num_indirect_value_bytes
            .saturating_add(other.num_indirect_value_bytes);
    }
}

/// A reference to an encoded B+tree node and the totals of its subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReference {
    /// Location of the encoded node.
    pub location: DataReference,
    /// Totals over the node's subtree.
    pub statistics: NodeStatistics,
}

/// Reads `count` data file indices, then offsets, then lengths.
///
/// An entry whose offset and length are both `u64::MAX` is an absent node.
/// It is returned as `None` when `allow_missing` is set, and rejected
/// otherwise. Every other entry must not overflow `offset + length`.
pub(super) fn read_references(
    cursor: &mut Cursor<'_>,
    table: &[DataFileId],
    count: usize,
    allow_missing: bool,
) -> Result<Vec<Option<DataReference>>, OcdbtError> {
    let file_ids = read_file_ids(cursor, table, count)?;
    let offsets = cursor.varint_column("data_file_offset", count, u64::MAX)?;
    let lengths = cursor.varint_column("data_file_length", count, u64::MAX)?;
    let mut references = Vec::with_capacity(count);
    for (index, ((file, offset), length)) in
        file_ids.into_iter().zip(offsets).zip(lengths).enumerate()
    {
        if offset == MISSING && length == MISSING && allow_missing {
            references.push(None);
            continue;
        }
        check_range(index, offset, length)?;
        references.push(Some(DataReference {
            file,
            offset,
            length,
        }));
    }
    Ok(references)
}

/// Reads `count` data file indices and resolves them in `table`.
pub(super) fn read_file_ids(
    cursor: &mut Cursor<'_>,
    table: &[DataFileId],
    count: usize,
) -> Result<Vec<DataFileId>, OcdbtError> {
    (0..count)
        .map(|index| {
            let value = cursor.varint("data_file_id")?;
            let file = usize::try_from(value)
                .ok()
                .and_then(|value| table.get(value));
            file.cloned().ok_or(OcdbtError::IndexOutOfRange {
                field: "data_file_id",
                index: index as u64,
                value,
                len: table.len() as u64,
            })
        })
        .collect()
}

/// Checks that a byte range of a data file does not overflow 64 bits.
pub(super) fn check_range(index: usize, offset: u64, length: u64) -> Result<(), OcdbtError> {
    if offset.checked_add(length).is_none() {
        return Err(OcdbtError::InvalidField {
            field: "data file reference",
            reason: format!(
                "entry {index} has offset {offset} plus length {length} beyond 64 bits"
            ),
        });
    }
    Ok(())
}

/// Reads `count` statistics: all key counts, then tree bytes, then indirect bytes.
pub(super) fn read_statistics(
    cursor: &mut Cursor<'_>,
    count: usize,
) -> Result<Vec<NodeStatistics>, OcdbtError> {
    let num_keys = cursor.varint_column("num_keys", count, u64::MAX)?;
    let num_tree_bytes = cursor.varint_column("num_tree_bytes", count, u64::MAX)?;
    let num_indirect = cursor.varint_column("num_indirect_value_bytes", count, u64::MAX)?;
    Ok(num_keys
        .into_iter()
        .zip(num_tree_bytes)
        .zip(num_indirect)
        .map(
            |((num_keys, num_tree_bytes), num_indirect_value_bytes)| NodeStatistics {
                num_keys,
                num_tree_bytes,
                num_indirect_value_bytes,
            },
        )
        .collect())
}

/// Returns the index of `file` in the sorted `table`.
pub(super) fn file_index(table: &[DataFileId], file: &DataFileId) -> u64 {
    // Writers build the table from the same references, so the file is present.
    let index = table.binary_search(file);
    debug_assert!(
        index.is_ok(),
        "data file missing from the table being written"
    );
    index.unwrap_or_default() as u64
}

/// Writes references as data file indices, offsets and lengths, with `None` for an absent node.
pub(super) fn write_references<'a>(
    out: &mut Vec<u8>,
    table: &[DataFileId],
    references: impl Iterator<Item = Option<&'a DataReference>> + Clone,
) {
    let empty = DataFileId::default();
    for reference in references.clone() {
        let file = reference.map_or(&empty, |reference| &reference.file);
        write_varint(out, file_index(table, file));
    }
    for reference in references.clone() {
        write_varint(out, reference.map_or(MISSING, |reference| reference.offset));
    }
    for reference in references {
        write_varint(out, reference.map_or(MISSING, |reference| reference.length));
    }
}

/// Writes statistics columns in the order [`read_statistics`] reads them.
pub(super) fn write_statistics<'a>(
    out: &mut Vec<u8>,
    statistics: impl Iterator<Item = &'a NodeStatistics> + Clone,
) {
    for item in statistics.clone() {
        write_varint(out, item.num_keys);
    }
    for item in statistics.clone() {
        write_varint(out, item.num_tree_bytes);
    }
    for item in statistics {
        write_varint(out, item.num_indirect_value_bytes);
    }
}
