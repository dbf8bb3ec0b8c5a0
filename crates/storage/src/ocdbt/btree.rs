//! B+tree nodes: prefix-compressed keys with inline values or references to
//! values and child nodes.

use bytes::Bytes;

use super::{
    cursor::write_varint,
    data_file_table::{common_prefix_len, read_data_file_table, write_data_file_table},
    envelope::{decode_envelope, encode_envelope, BTREE_NODE_MAGIC},
    manifest::MAX_INLINE_VALUE_BYTES,
    reference::{
        check_range, file_index, read_file_ids, read_references, read_statistics, write_references,
        write_statistics,
    },
    Cursor, DataFileId, DataReference, NodeReference, OcdbtCompression, OcdbtError,
};

/// Maximum key length in bytes.
pub const MAX_KEY_LEN: u64 = 65535;

/// Maximum number of entries in one B+tree node.
pub const MAX_NODE_ENTRIES: u64 = 1 << 20;

/// A decoded B+tree node.
///
/// Keys are relative: the full key of an entry is the prefix accumulated on
/// the path from the root (each interior entry adds the first
/// `subtree_common_prefix_len` bytes of its key) followed by the entry's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtreeNode {
    /// Height of the node, 0 for a leaf.
    pub height: u8,
    /// The entries, sorted by key, at least one.
    pub entries: BtreeEntries,
}

/// The entries of a B+tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BtreeEntries {
    /// Keys and values of a leaf.
    Leaf(Vec<LeafEntry>),
    /// Children of an interior node.
    Interior(Vec<InteriorEntry>),
}

/// A key and its value in a leaf node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafEntry {
    /// The key, relative to the node's accumulated prefix.
    pub key: Vec<u8>,
    /// The value.
    pub value: LeafValue,
}

/// A value stored in a leaf or out-of-line in a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafValue {
    /// The value's bytes, stored inside the leaf.
    Inline(Bytes),
    /// The byte range of a data file that contains the value.
    OutOfLine(DataReference),
}

impl LeafValue {
    /// Returns the value's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            LeafValue::Inline(bytes) => bytes.len() as u64,
            LeafValue::OutOfLine(reference) => reference.length,
        }
    }

    /// Returns whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A child of an interior node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InteriorEntry {
    /// The smallest key the child may hold, relative to the node's accumulated prefix.
    pub key: Vec<u8>,
    /// Number of leading bytes of `key` that every key in the child shares.
    /// The child stores its keys without them.
    pub subtree_common_prefix_len: u64,
    /// The child node.
    pub child: NodeReference,
}

/// Decodes a B+tree node read from a file whose base path is `transitive_path`.
pub fn decode_btree_node(
    encoded: &[u8],
    transitive_path: &[u8],
    max_decoded_bytes: u64,
) -> Result<BtreeNode, OcdbtError> {
    let body = decode_envelope(encoded, BTREE_NODE_MAGIC, max_decoded_bytes)?;
    decode_btree_node_body(&body, transitive_path)
}

/// Decodes a B+tree node body (the bytes inside the envelope).
///
/// Inline values are slices of `body`, so they share its allocation.
pub fn decode_btree_node_body(
    body: &Bytes,
    transitive_path: &[u8],
) -> Result<BtreeNode, OcdbtError> {
    let mut cursor = Cursor::new(body);
    let height = cursor.u8("height")?;
    let table = read_data_file_table(&mut cursor, transitive_path)?;
    // Every entry has at least a key suffix length varint.
    let count = cursor.count("entry count", MAX_NODE_ENTRIES, 1)?;
    if count == 0 {
        return Err(OcdbtError::InvalidField {
            field: "entry count",
            reason: "a B+tree node needs at least one entry".to_owned(),
        });
    }

    let entries = if height == 0 {
        let keys = read_keys(&mut cursor, count, None)?;
        BtreeEntries::Leaf(read_leaf_values(&mut cursor, body, &table, keys)?)
    } else {
        let mut common_prefix_lens = Vec::new();
        let keys = read_keys(&mut cursor, count, Some(&mut common_prefix_lens))?;
        BtreeEntries::Interior(read_children(
            &mut cursor,
            &table,
            keys,
            common_prefix_lens,
        )?)
    };
    cursor.finish("B+tree node")?;
    Ok(BtreeNode { height, entries })
}

/// Reads the key columns: prefix lengths, suffix lengths, (interior only)
/// subtree common prefix lengths, then the concatenated suffixes.
fn read_keys(
    cursor: &mut Cursor<'_>,
    count: usize,
    common_prefix_lens: Option<&mut Vec<u64>>,
) -> Result<Vec<Vec<u8>>, OcdbtError> {
    let mut prefix_lens = vec![0u64];
    prefix_lens.extend(cursor.varint_column("key_prefix_length", count - 1, MAX_KEY_LEN)?);
    let suffix_lens = cursor.varint_column("key_suffix_length", count, MAX_KEY_LEN)?;
    let mut subtree_lens = None;
    if let Some(lens) = common_prefix_lens {
        *lens = cursor.varint_column("subtree_common_prefix_length", count, MAX_KEY_LEN)?;
        subtree_lens = Some(lens);
    }

    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(count);
    for index in 0..count {
        let previous: &[u8] = keys.last().map_or(&[], Vec::as_slice);
        let prefix_len = prefix_lens[index];
        if prefix_len > previous.len() as u64 {
            return Err(OcdbtError::PrefixTooLong {
                field: "key_prefix_length",
                index: index as u64,
                prefix_len,
                previous_len: previous.len() as u64,
            });
        }
        let key_len = prefix_len + suffix_lens[index];
        if key_len > MAX_KEY_LEN {
            return Err(OcdbtError::LimitExceeded {
                field: "key length",
                value: key_len,
                limit: MAX_KEY_LEN,
            });
        }
        if let Some(lens) = &subtree_lens {
            if lens[index] > key_len {
                return Err(OcdbtError::InvalidField {
                    field: "subtree_common_prefix_length",
                    reason: format!(
                        "entry {index} has {} bytes but its key has {key_len}",
                        lens[index]
                    ),
                });
            }
        }
        let suffix = cursor.take(suffix_lens[index], "key_suffix")?;
        let mut key = Vec::with_capacity(key_len as usize);
        key.extend_from_slice(&previous[..prefix_len as usize]);
        key.extend_from_slice(suffix);
        if index > 0 && key.as_slice() <= previous {
            return Err(OcdbtError::KeysNotSorted {
                index: index as u64,
            });
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Reads the value columns of a leaf: lengths, kinds, data file ids and
/// offsets of out-of-line values, then the inline values.
fn read_leaf_values(
    cursor: &mut Cursor<'_>,
    body: &Bytes,
    table: &[DataFileId],
    keys: Vec<Vec<u8>>,
) -> Result<Vec<LeafEntry>, OcdbtError> {
    let count = keys.len();
    let lengths = cursor.varint_column("value_length", count, u64::MAX)?;
    let kinds = cursor.take(count as u64, "value_kind")?;
    for (index, (&kind, &length)) in kinds.iter().zip(&lengths).enumerate() {
        match kind {
            0 if length > u64::from(MAX_INLINE_VALUE_BYTES) => {
                return Err(OcdbtError::LimitExceeded {
                    field: "inline value length",
                    value: length,
                    limit: u64::from(MAX_INLINE_VALUE_BYTES),
                })
            }
            0 | 1 => {}
            kind => {
                return Err(OcdbtError::InvalidValueKind {
                    index: index as u64,
                    kind,
                })
            }
        }
    }

    let out_of_line = kinds.iter().filter(|&&kind| kind == 1).count();
    let files = read_file_ids(cursor, table, out_of_line)?;
    let offsets = cursor.varint_column("data_file_offset", out_of_line, u64::MAX)?;
    let mut files = files.into_iter().zip(offsets);

    let mut entries = Vec::with_capacity(count);
    for (index, ((key, &kind), &length)) in keys.into_iter().zip(kinds).zip(&lengths).enumerate() {
        let value = if kind == 0 {
            LeafValue::Inline(body.slice(cursor.take_range(length, "inline value")?))
        } else {
            // `files` has one item per out-of-line entry, so this branch is never taken.
            let Some((file, offset)) = files.next() else {
                return Err(OcdbtError::UnexpectedEnd {
                    field: "data_file_id",
                    needed: 1,
                    available: 0,
                });
            };
            check_range(index, offset, length)?;
            LeafValue::OutOfLine(DataReference {
                file,
                offset,
                length,
            })
        };
        entries.push(LeafEntry { key, value });
    }
    Ok(entries)
}

/// Reads the child references and statistics of an interior node.
fn read_children(
    cursor: &mut Cursor<'_>,
    table: &[DataFileId],
    keys: Vec<Vec<u8>>,
    common_prefix_lens: Vec<u64>,
) -> Result<Vec<InteriorEntry>, OcdbtError> {
    let references = read_references(cursor, table, keys.len(), false)?;
    let statistics = read_statistics(cursor, keys.len())?;
    Ok(keys
        .into_iter()
        .zip(common_prefix_lens)
        .zip(references.into_iter().flatten())
        .zip(statistics)
        .map(
            |(((key, subtree_common_prefix_len), location), statistics)| InteriorEntry {
                key,
                subtree_common_prefix_len,
                child: NodeReference {
                    location,
                    statistics,
                },
            },
        )
        .collect())
}

/// Encodes a node body and wraps it in an envelope.
///
/// Returns the encoded node and the body's length, which the caller checks
/// against `max_decoded_node_bytes`.
pub(super) fn encode_btree_node(
    node: &BtreeNode,
    compression: OcdbtCompression,
) -> std::io::Result<(Vec<u8>, usize)> {
    let body = encode_btree_node_body(node);
    let encoded = encode_envelope(BTREE_NODE_MAGIC, &body, compression)?;
    Ok((encoded, body.len()))
}

/// Encodes a node body in the layout [`decode_btree_node_body`] reads.
pub(super) fn encode_btree_node_body(node: &BtreeNode) -> Vec<u8> {
    let mut files: Vec<DataFileId> = match &node.entries {
        BtreeEntries::Leaf(entries) => entries
            .iter()
            .filter_map(|entry| match &entry.value {
                LeafValue::OutOfLine(reference) => Some(reference.file.clone()),
                LeafValue::Inline(_) => None,
            })
            .collect(),
        BtreeEntries::Interior(entries) => entries
            .iter()
            .map(|entry| entry.child.location.file.clone())
            .collect(),
    };
    files.sort();
    files.dedup();

    let mut out = vec![node.height];
    write_data_file_table(&mut out, &files);
    match &node.entries {
        BtreeEntries::Leaf(entries) => {
            write_varint(&mut out, entries.len() as u64);
            write_keys(
                &mut out,
                entries.iter().map(|entry| entry.key.as_slice()),
                None,
            );
            write_leaf_values(&mut out, &files, entries);
        }
        BtreeEntries::Interior(entries) => {
            write_varint(&mut out, entries.len() as u64);
            let common_prefix_lens: Vec<u64> = entries
                .iter()
                .map(|entry| entry.subtree_common_prefix_len)
                .collect();
            write_keys(
                &mut out,
                entries.iter().map(|entry| entry.key.as_slice()),
                Some(&common_prefix_lens),
            );
            write_references(
                &mut out,
                &files,
                entries.iter().map(|entry| Some(&entry.child.location)),
            );
            write_statistics(
                &mut out,
                entries.iter().map(|entry| &entry.child.statistics),
            );
        }
    }
    out
}

fn write_keys<'a>(
    out: &mut Vec<u8>,
    keys: impl Iterator<Item = &'a [u8]> + Clone,
    common_prefix_lens: Option<&[u64]>,
) {
    let mut prefix_lens = Vec::new();
    let mut previous: &[u8] = &[];
    for key in keys.clone() {
        prefix_lens.push(common_prefix_len(previous, key));
        previous = key;
    }
    for &prefix_len in prefix_lens.iter().skip(1) {
        write_varint(out, prefix_len as u64);
    }
    for (key, &prefix_len) in keys.clone().zip(&prefix_lens) {
        write_varint(out, (key.len() - prefix_len) as u64);
    }
    for &len in common_prefix_lens.unwrap_or_default() {
        write_varint(out, len);
    }
    for (key, &prefix_len) in keys.zip(&prefix_lens) {
        out.extend_from_slice(&key[prefix_len..]);
    }
}

fn write_leaf_values(out: &mut Vec<u8>, files: &[DataFileId], entries: &[LeafEntry]) {
    for entry in entries {
        write_varint(out, entry.value.len());
    }
    for entry in entries {
        out.push(match entry.value {
            LeafValue::Inline(_) => 0,
            LeafValue::OutOfLine(_) => 1,
        });
    }
    let references = entries.iter().filter_map(|entry| match &entry.value {
        LeafValue::OutOfLine(reference) => Some(reference),
        LeafValue::Inline(_) => None,
    });
    for reference in references.clone() {
        write_varint(out, file_index(files, &reference.file));
    }
    for reference in references {
        write_varint(out, reference.offset);
    }
    for entry in entries {
        if let LeafValue::Inline(bytes) = &entry.value {
            out.extend_from_slice(bytes);
        }
    }
}
