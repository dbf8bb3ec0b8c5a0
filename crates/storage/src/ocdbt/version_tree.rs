//! Version tree entries: the references to each version's B+tree root, kept
//! inline in the manifest for the newest versions and in version tree nodes
//! for older ones.

use super::{
    cursor::write_varint,
    data_file_table::read_data_file_table,
    envelope::{decode_envelope, VERSION_TREE_NODE_MAGIC},
    reference::{read_references, read_statistics, write_references, write_statistics},
    Cursor, DataFileId, DataReference, NodeReference, NodeStatistics, OcdbtError,
};

/// Maximum `version_tree_arity_log2`.
pub const MAX_VERSION_TREE_ARITY_LOG2: u8 = 16;

/// One version of the database: its generation and B+tree root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionReference {
    /// Generation number, counting commits from 1.
    pub generation: u64,
    /// Height of the root node, 0 when the root is a leaf.
    pub root_height: u8,
    /// The root node, or `None` for an empty database.
    pub root: Option<NodeReference>,
    /// Commit time in nanoseconds since the Unix epoch.
    pub commit_time_ns: u64,
}

impl VersionReference {
    /// Returns the totals over the whole tree, zero for an empty database.
    pub fn statistics(&self) -> NodeStatistics {
        self.root
            .as_ref()
            .map(|root| root.statistics)
            .unwrap_or_default()
    }
}

/// A reference to a version tree node, which covers older versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionNodeReference {
    /// Location of the encoded version tree node.
    pub location: DataReference,
    /// The newest generation in the node's subtree.
    pub generation: u64,
    /// Height of the referenced node.
    pub height: u8,
    /// Number of versions in the subtree.
    pub num_generations: u64,
    /// Commit time of the oldest version in the subtree, in nanoseconds
    /// since the Unix epoch. TensorStore's index.rst specifies milliseconds,
    /// but TensorStore 0.1.86 writes nanoseconds here.
    pub commit_time_ns: u64,
}

/// A decoded version tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionTreeNode {
    /// Base-2 logarithm of the version tree arity.
    pub arity_log2: u8,
    /// Height of the node, 0 for a leaf.
    pub height: u8,
    /// Versions (leaf) or child nodes (interior).
    pub entries: VersionTreeEntries,
}

/// The entries of a version tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionTreeEntries {
    /// Versions, in increasing generation order.
    Leaf(Vec<VersionReference>),
    /// Child nodes, in increasing generation order.
    Interior(Vec<VersionNodeReference>),
}

/// Checks `version_tree_arity_log2` and returns the maximum node height it allows.
pub(super) fn max_version_tree_height(arity_log2: u8) -> Result<u8, OcdbtError> {
    if !(1..=MAX_VERSION_TREE_ARITY_LOG2).contains(&arity_log2) {
        return Err(OcdbtError::InvalidField {
            field: "version_tree_arity_log2",
            reason: format!("{arity_log2} is outside 1..={MAX_VERSION_TREE_ARITY_LOG2}"),
        });
    }
    Ok(63 / arity_log2 - 1)
}

/// Decodes version tree leaf entries that fill `input` exactly, resolving
/// data file ids in `table`.
pub fn decode_version_leaf_entries(
    input: &[u8],
    table: &[DataFileId],
    arity_log2: u8,
) -> Result<Vec<VersionReference>, OcdbtError> {
    let mut cursor = Cursor::new(input);
    let versions = read_version_leaf_entries(&mut cursor, table, arity_log2)?;
    cursor.finish("version tree leaf entries")?;
    Ok(versions)
}

/// Decodes version tree interior entries that fill `input` exactly: at most
/// `max_count` of them, followed by their heights when `with_heights` is set
/// (as in a manifest).
pub fn decode_version_interior_entries(
    input: &[u8],
    table: &[DataFileId],
    max_count: u64,
    with_heights: bool,
) -> Result<Vec<VersionNodeReference>, OcdbtError> {
    let mut cursor = Cursor::new(input);
    let nodes = read_version_interior_entries(&mut cursor, table, max_count, with_heights)?;
    cursor.finish("version tree interior entries")?;
    Ok(nodes)
}

/// Reads the versions of a version tree leaf or of a manifest's inline versions.
pub(super) fn read_version_leaf_entries(
    cursor: &mut Cursor<'_>,
    table: &[DataFileId],
    arity_log2: u8,
) -> Result<Vec<VersionReference>, OcdbtError> {
    max_version_tree_height(arity_log2)?;
    let max_count = 1u64 << arity_log2;
    // Each version has 7 varints, a height byte and an 8-byte time.
    let count = cursor.count("version count", max_count, 16)?;
    let generations = cursor.varint_column("generation_number", count, u64::MAX)?;
    let heights = cursor.take(count as u64, "root_height")?.to_vec();
    let references = read_references(cursor, table, count, true)?;
    let statistics = read_statistics(cursor, count)?;
    let commit_times = (0..count)
        .map(|_| cursor.u64_le("commit_time"))
        .collect::<Result<Vec<_>, _>>()?;

    let mut versions = Vec::with_capacity(count);
    for (index, reference) in references.into_iter().enumerate() {
        let root = match reference {
            Some(location) => Some(NodeReference {
                location,
                statistics: statistics[index],
            }),
            None if heights[index] != 0 || statistics[index] != NodeStatistics::default() => {
                return Err(OcdbtError::InvalidField {
                    field: "version",
                    reason: format!(
                        "empty version {index} has a non-zero root height or statistics"
                    ),
                });
            }
            None => None,
        };
        versions.push(VersionReference {
            generation: generations[index],
            root_height: heights[index],
            root,
            commit_time_ns: commit_times[index],
        });
    }
    check_generations(versions.iter().map(|version| version.generation))?;
    check_leaf_generation_range(&versions, arity_log2)?;
    Ok(versions)
}

/// Checks that generations are non-zero and strictly increasing.
fn check_generations(generations: impl Iterator<Item = u64>) -> Result<(), OcdbtError> {
    let mut previous = 0;
    for (index, generation) in generations.enumerate() {
        if generation <= previous {
            return Err(OcdbtError::InvalidField {
                field: "generation_number",
                reason: format!("entry {index} is {generation}, not above the previous {previous}"),
            });
        }
        previous = generation;
    }
    Ok(())
}

/// Checks that a leaf's versions all fall in the one leaf-sized block of
/// generations that ends with its newest version.
fn check_leaf_generation_range(
    versions: &[VersionReference],
    arity_log2: u8,
) -> Result<(), OcdbtError> {
    let (Some(first), Some(last)) = (versions.first(), versions.last()) else {
        return Err(OcdbtError::InvalidField {
            field: "version count",
            reason: "a version tree leaf needs at least one version".to_owned(),
        });
    };
    let min_generation = last.generation - (last.generation - 1) % (1u64 << arity_log2);
    if first.generation < min_generation {
        return Err(OcdbtError::InvalidField {
            field: "generation_number",
            reason: format!(
                "versions {}..={} span more than one leaf of {} versions",
                first.generation,
                last.generation,
                1u64 << arity_log2
            ),
        });
    }
    Ok(())
}

/// Reads the child references of a version tree interior node, or with
/// `with_heights` the version nodes listed in a manifest.
pub(super) fn read_version_interior_entries(
    cursor: &mut Cursor<'_>,
    table: &[DataFileId],
    max_count: u64,
    with_heights: bool,
) -> Result<Vec<VersionNodeReference>, OcdbtError> {
    // Each entry has 5 varints and an 8-byte time.
    let count = cursor.count("version node count", max_count, 13)?;
    let generations = cursor.varint_column("generation_number", count, u64::MAX)?;
    let references = read_references(cursor, table, count, false)?;
    let num_generations = cursor.varint_column("num_generations", count, u64::MAX)?;
    let commit_times = (0..count)
        .map(|_| cursor.u64_le("commit_time"))
        .collect::<Result<Vec<_>, _>>()?;
    let heights = match with_heights {
        true => cursor.take(count as u64, "entry_height")?.to_vec(),
        false => vec![0; count],
    };

    let mut nodes = Vec::with_capacity(count);
    // Without `allow_missing` every reference is present.
    for (index, location) in references.into_iter().flatten().enumerate() {
        nodes.push(VersionNodeReference {
            location,
            generation: generations[index],
            height: heights[index],
            num_generations: num_generations[index],
            commit_time_ns: commit_times[index],
        });
    }
    check_generations(nodes.iter().map(|node| node.generation))?;
    Ok(nodes)
}

/// Checks the heights of a manifest's version nodes: each in `1..=max_height`
/// and strictly decreasing.
pub(super) fn check_manifest_node_heights(
    nodes: &[VersionNodeReference],
    max_height: u8,
) -> Result<(), OcdbtError> {
    let mut previous = u8::MAX;
    for (index, node) in nodes.iter().enumerate() {
        if node.height == 0 || node.height > max_height || (index > 0 && node.height >= previous) {
            return Err(OcdbtError::InvalidField {
                field: "entry_height",
                reason: format!(
                    "entry {index} has height {}; heights must decrease and lie in 1..={max_height}",
                    node.height
                ),
            });
        }
        previous = node.height;
    }
    Ok(())
}

/// Decodes a version tree node read from a file whose base path is `transitive_path`.
pub fn decode_version_tree_node(
    encoded: &[u8],
    transitive_path: &[u8],
    max_decoded_bytes: u64,
) -> Result<VersionTreeNode, OcdbtError> {
    let body = decode_envelope(encoded, VERSION_TREE_NODE_MAGIC, max_decoded_bytes)?;
    let mut cursor = Cursor::new(&body);
    let arity_log2 = cursor.u8("version_tree_arity_log2")?;
    let max_height = max_version_tree_height(arity_log2)?;
    let height = cursor.u8("height")?;
    if height > max_height {
        return Err(OcdbtError::LimitExceeded {
            field: "version tree node height",
            value: u64::from(height),
            limit: u64::from(max_height),
        });
    }
    let table = read_data_file_table(&mut cursor, transitive_path)?;
    let entries = match height {
        0 => VersionTreeEntries::Leaf(read_version_leaf_entries(&mut cursor, &table, arity_log2)?),
        _ => {
            let mut nodes =
                read_version_interior_entries(&mut cursor, &table, 1u64 << arity_log2, false)?;
            for node in &mut nodes {
                node.height = height - 1;
            }
            VersionTreeEntries::Interior(nodes)
        }
    };
    cursor.finish("version tree node")?;
    Ok(VersionTreeNode {
        arity_log2,
        height,
        entries,
    })
}

/// Writes versions as [`read_version_leaf_entries`] reads them.
pub(super) fn write_version_leaf_entries(
    out: &mut Vec<u8>,
    table: &[DataFileId],
    versions: &[VersionReference],
) {
    write_varint(out, versions.len() as u64);
    for version in versions {
        write_varint(out, version.generation);
    }
    out.extend(versions.iter().map(|version| version.root_height));
    write_references(
        out,
        table,
        versions
            .iter()
            .map(|version| version.root.as_ref().map(|root| &root.location)),
    );
    let statistics: Vec<NodeStatistics> =
        versions.iter().map(VersionReference::statistics).collect();
    write_statistics(out, statistics.iter());
    for version in versions {
        out.extend_from_slice(&version.commit_time_ns.to_le_bytes());
    }
}

/// Writes version node references as [`read_version_interior_entries`] reads them.
pub(super) fn write_version_interior_entries(
    out: &mut Vec<u8>,
    table: &[DataFileId],
    nodes: &[VersionNodeReference],
    with_heights: bool,
) {
    write_varint(out, nodes.len() as u64);
    for node in nodes {
        write_varint(out, node.generation);
    }
    write_references(out, table, nodes.iter().map(|node| Some(&node.location)));
    for node in nodes {
        write_varint(out, node.num_generations);
    }
    for node in nodes {
        out.extend_from_slice(&node.commit_time_ns.to_le_bytes());
    }
    if with_heights {
        out.extend(nodes.iter().map(|node| node.height));
    }
}

/// Encodes a version tree node body without its envelope, for tests.
#[cfg(test)]
pub(super) fn write_version_tree_node_body(node: &VersionTreeNode) -> Vec<u8> {
    let mut files: Vec<DataFileId> = match &node.entries {
        VersionTreeEntries::Leaf(versions) => versions
            .iter()
            .map(|version| {
                version
                    .root
                    .as_ref()
                    .map(|root| root.location.file.clone())
                    .unwrap_or_default()
            })
            .collect(),
        VersionTreeEntries::Interior(nodes) => nodes
            .iter()
            .map(|node| node.location.file.clone())
            .collect(),
    };
    files.sort();
    files.dedup();
    let mut out = vec![node.arity_log2, node.height];
    super::data_file_table::write_data_file_table(&mut out, &files);
    match &node.entries {
        VersionTreeEntries::Leaf(versions) => {
            write_version_leaf_entries(&mut out, &files, versions)
        }
        VersionTreeEntries::Interior(nodes) => {
            write_version_interior_entries(&mut out, &files, nodes, false)
        }
    }
    out
}
