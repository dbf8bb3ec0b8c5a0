//! Building a B+tree bottom-up from sorted entries: leaves first, then each
//! level of interior nodes until one root remains.

use std::collections::HashSet;

use super::{
    btree::{
        encode_btree_node, BtreeEntries, BtreeNode, InteriorEntry, LeafEntry, LeafValue,
        MAX_NODE_ENTRIES,
    },
    data_file_table::common_prefix_len,
    DataFileId, DataReference, NodeReference, NodeStatistics, OcdbtCompression,
};

/// Bytes every node body may spend outside its entries: height, table and
/// entry counts.
const NODE_OVERHEAD_BYTES: u64 = 32;

/// Upper bound of the encoded bytes of one entry's length, kind, data file
/// and offset columns (two 3-byte key lengths and three 10-byte varints).
const LEAF_ENTRY_OVERHEAD_BYTES: u64 = 40;

/// Upper bound of the encoded bytes of an interior entry's columns besides
/// its key: three key lengths and six varints.
const INTERIOR_ENTRY_OVERHEAD_BYTES: u64 = 9 + 60;

/// Node sizes and encoding.
pub(super) struct TreeLimits {
    /// Nodes hold entries up to about this many decoded bytes.
    pub(super) target_node_bytes: u64,
    /// No node body may exceed this many bytes.
    pub(super) max_decoded_node_bytes: u64,
    pub(super) compression: OcdbtCompression,
}

/// Failure to build a tree.
#[derive(Debug)]
pub(super) enum BuildError {
    /// One entry, or two children, need more than `max_decoded_node_bytes`.
    NodeTooLarge {
        key: Vec<u8>,
        estimate: u64,
        limit: u64,
    },
    Compress(std::io::Error),
}

/// The root of a built tree.
pub(super) struct BuiltTree {
    pub(super) root: NodeReference,
    pub(super) height: u8,
}

/// A node already written, as its parent needs it.
struct BuiltNode {
    first_key: Vec<u8>,
    last_key: Vec<u8>,
    /// Bytes of the full keys that the node's stored keys leave out.
    prefix_len: usize,
    reference: NodeReference,
}

/// Appends the nodes of a B+tree over `entries` to `out`, which the caller
/// stores as `node_file`. `out` may already contain values at its start.
///
/// `entries` must be sorted by key and unique. Returns `None` for no entries.
/// Every node but the root stores its keys relative to the common prefix of
/// its first and last key. The root's prefix is empty, because no parent
/// records it.
pub(super) fn build_tree(
    entries: Vec<(Vec<u8>, LeafValue)>,
    node_file: &DataFileId,
    out: &mut Vec<u8>,
    limits: &TreeLimits,
) -> Result<Option<BuiltTree>, BuildError> {
    if entries.is_empty() {
        return Ok(None);
    }
    let target = limits.target_node_bytes.min(limits.max_decoded_node_bytes);

    let groups = group_leaf_entries(&entries, target, limits.max_decoded_node_bytes)?;
    let only_node = groups.len() == 1;
    let mut level = Vec::with_capacity(groups.len());
    let mut rest = entries.into_iter();
    for len in groups {
        let group: Vec<(Vec<u8>, LeafValue)> = rest.by_ref().take(len).collect();
        level.push(write_leaf(group, only_node, node_file, out, limits)?);
    }

    let mut height = 0u8;
    while level.len() > 1 {
        height += 1;
        let groups = group_children(&level, target, limits.max_decoded_node_bytes)?;
        let only_node = groups.len() == 1;
        let mut next = Vec::with_capacity(groups.len());
        let mut rest = level.into_iter();
        for len in groups {
            let children: Vec<BuiltNode> = rest.by_ref().take(len).collect();
            next.push(write_interior(
                children, height, only_node, node_file, out, limits,
            )?);
        }
        level = next;
    }

    let root = level.pop().map(|node| node.reference);
    Ok(root.map(|root| BuiltTree { root, height }))
}

/// Splits leaf entries into runs whose estimated body size stays within
/// `target`, and returns the length of each run.
fn group_leaf_entries(
    entries: &[(Vec<u8>, LeafValue)],
    target: u64,
    limit: u64,
) -> Result<Vec<usize>, BuildError> {
    let mut groups = Vec::new();
    let mut len = 0usize;
    let mut estimate = NODE_OVERHEAD_BYTES;
    let mut files: HashSet<&DataFileId> = HashSet::new();
    for (key, value) in entries {
        let mut cost = key.len() as u64 + LEAF_ENTRY_OVERHEAD_BYTES;
        let new_file = match value {
            LeafValue::Inline(bytes) => {
                cost += bytes.len() as u64;
                None
            }
            LeafValue::OutOfLine(reference) => Some(&reference.file),
        };
        let file_cost = |files: &HashSet<&DataFileId>| match new_file {
            Some(file) if !files.contains(file) => {
                (file.base_path.len() + file.relative_path.len()) as u64 + 9
            }
            _ => 0,
        };
        let full = len as u64 >= MAX_NODE_ENTRIES;
        let over_target = estimate + cost + file_cost(&files) > target;
        if len > 0 && (full || over_target) {
            groups.push(len);
            len = 0;
            estimate = NODE_OVERHEAD_BYTES;
            files.clear();
        }
        estimate += cost + file_cost(&files);
        files.extend(new_file);
        len += 1;
        if estimate > limit {
            return Err(BuildError::NodeTooLarge {
                key: key.clone(),
                estimate,
                limit,
            });
        }
    }
    groups.push(len);
    Ok(groups)
}

/// Splits the nodes of one level into runs for their parents, at least two
/// children per parent so that every level shrinks.
fn group_children(
    children: &[BuiltNode],
    target: u64,
    limit: u64,
) -> Result<Vec<usize>, BuildError> {
    let mut groups = Vec::new();
    let mut len = 0usize;
    let mut estimate = NODE_OVERHEAD_BYTES;
    for (index, child) in children.iter().enumerate() {
        let cost = child.first_key.len() as u64 + INTERIOR_ENTRY_OVERHEAD_BYTES;
        let full = len as u64 >= MAX_NODE_ENTRIES;
        let over_target = estimate + cost > target;
        // Rather than leave the last child alone in a parent, its group runs over the target.
        let last_would_be_alone = index + 1 == children.len();
        if full || (len >= 2 && over_target && !last_would_be_alone) {
            groups.push(len);
            len = 0;
            estimate = NODE_OVERHEAD_BYTES;
        }
        estimate += cost;
        len += 1;
        if estimate > limit {
            return Err(BuildError::NodeTooLarge {
                key: child.first_key.clone(),
                estimate,
                limit,
            });
        }
    }
    groups.push(len);
    Ok(groups)
}

/// Encodes a node, appends it to `out` and returns its location.
fn append_node(
    node: &BtreeNode,
    node_file: &DataFileId,
    out: &mut Vec<u8>,
    limits: &TreeLimits,
) -> Result<DataReference, BuildError> {
    let (encoded, body_len) =
        encode_btree_node(node, limits.compression).map_err(BuildError::Compress)?;
    // The grouping estimates bound the body size from above, so this is a safety net.
    if body_len as u64 > limits.max_decoded_node_bytes {
        return Err(BuildError::NodeTooLarge {
            key: first_key(node).to_vec(),
            estimate: body_len as u64,
            limit: limits.max_decoded_node_bytes,
        });
    }
    let reference = DataReference {
        file: node_file.clone(),
        offset: out.len() as u64,
        length: encoded.len() as u64,
    };
    out.extend_from_slice(&encoded);
    Ok(reference)
}

fn first_key(node: &BtreeNode) -> &[u8] {
    match &node.entries {
        BtreeEntries::Leaf(entries) => entries.first().map_or(&[], |entry| entry.key.as_slice()),
        BtreeEntries::Interior(entries) => {
            entries.first().map_or(&[], |entry| entry.key.as_slice())
        }
    }
}

fn write_leaf(
    group: Vec<(Vec<u8>, LeafValue)>,
    is_root: bool,
    node_file: &DataFileId,
    out: &mut Vec<u8>,
    limits: &TreeLimits,
) -> Result<BuiltNode, BuildError> {
    let first_key = group
        .first()
        .map(|(key, _)| key.clone())
        .unwrap_or_default();
    let last_key = group.last().map(|(key, _)| key.clone()).unwrap_or_default();
    let prefix_len = if is_root {
        0
    } else {
        common_prefix_len(&first_key, &last_key)
    };

    let mut statistics = NodeStatistics {
        num_keys: group.len() as u64,
        ..NodeStatistics::default()
    };
    let entries = group
        .into_iter()
        .map(|(key, value)| {
            if let LeafValue::OutOfLine(reference) = &value {
                statistics.num_indirect_value_bytes += reference.length;
            }
            LeafEntry {
                key: key[prefix_len..].to_vec(),
                value,
            }
        })
        .collect();
    let node = BtreeNode {
        height: 0,
        entries: BtreeEntries::Leaf(entries),
    };
    let location = append_node(&node, node_file, out, limits)?;
    statistics.num_tree_bytes = location.length;
    Ok(BuiltNode {
        first_key,
        last_key,
        prefix_len,
        reference: NodeReference {
            location,
            statistics,
        },
    })
}

fn write_interior(
    children: Vec<BuiltNode>,
    height: u8,
    is_root: bool,
    node_file: &DataFileId,
    out: &mut Vec<u8>,
    limits: &TreeLimits,
) -> Result<BuiltNode, BuildError> {
    let first_key = children
        .first()
        .map(|child| child.first_key.clone())
        .unwrap_or_default();
    let last_key = children
        .last()
        .map(|child| child.last_key.clone())
        .unwrap_or_default();
    // Keys between the first and the last share their common prefix, so every
    // child's own prefix starts with it.
    let prefix_len = if is_root {
        0
    } else {
        common_prefix_len(&first_key, &last_key)
    };

    let mut statistics = NodeStatistics::default();
    let entries = children
        .into_iter()
        .map(|child| {
            statistics.add(&child.reference.statistics);
            InteriorEntry {
                key: child.first_key[prefix_len..].to_vec(),
                subtree_common_prefix_len: (child.prefix_len - prefix_len) as u64,
                child: child.reference,
            }
        })
        .collect();
    let node = BtreeNode {
        height,
        entries: BtreeEntries::Interior(entries),
    };
    let location = append_node(&node, node_file, out, limits)?;
    statistics.num_tree_bytes = statistics.num_tree_bytes.saturating_add(location.length);
    Ok(BuiltNode {
        first_key,
        last_key,
        prefix_len,
        reference: NodeReference {
            location,
            statistics,
        },
    })
}
