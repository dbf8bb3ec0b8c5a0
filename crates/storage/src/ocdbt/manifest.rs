//! The manifest: the database configuration and the references to versions.

use super::{
    cursor::write_varint,
    data_file_table::{read_data_file_table, write_data_file_table},
    envelope::{decode_envelope, encode_envelope, MANIFEST_MAGIC, MAX_DECODED_BYTES_LIMIT},
    version_tree::{
        check_manifest_node_heights, max_version_tree_height, read_version_interior_entries,
        read_version_leaf_entries, write_version_interior_entries, write_version_leaf_entries,
        VersionNodeReference, VersionReference,
    },
    Cursor, DataFileId, OcdbtError,
};

/// Largest value the format allows for `max_inline_value_bytes`, and the
/// largest inline value a leaf may hold: 1 MiB.
pub const MAX_INLINE_VALUE_BYTES: u32 = 1 << 20;

/// Storage layout of the version tree, chosen by the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestKind {
    /// `manifest.ocdbt` contains the configuration and the version tree
    /// (kind 0). Orbax 0.12.8 always writes this kind.
    Single,
    /// `manifest.ocdbt` contains only the configuration, and each commit writes a
    /// `manifest.<16 hex digits of the generation>` file with the versions (kind 1).
    Numbered,
}

/// Compression of the manifest and of the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcdbtCompression {
    /// Bodies stored as they are.
    None,
    /// Bodies compressed as one zstd frame.
    Zstd {
        /// The zstd level, where 0 selects zstd's default level.
        level: i32,
    },
}

/// The database configuration stored at the start of every manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcdbtConfig {
    /// Random identifier of the database, chosen when it is created.
    pub uuid: [u8; 16],
    /// Storage layout of the versions.
    pub manifest_kind: ManifestKind,
    /// Values up to this many bytes are stored inside B+tree leaves.
    pub max_inline_value_bytes: u32,
    /// Maximum decoded size of a B+tree node, in bytes.
    pub max_decoded_node_bytes: u32,
    /// Base-2 logarithm of the version tree arity.
    pub version_tree_arity_log2: u8,
    /// Compression of manifests and nodes.
    pub compression: OcdbtCompression,
}

/// A decoded manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The database configuration.
    pub config: OcdbtConfig,
    /// The newest versions, oldest first. Empty in the configuration-only
    /// `manifest.ocdbt` of the numbered kind.
    pub versions: Vec<VersionReference>,
    /// Version tree nodes that cover the older versions, tallest first.
    pub version_nodes: Vec<VersionNodeReference>,
}

impl Manifest {
    /// The newest version, if this manifest lists versions.
    pub fn latest(&self) -> Option<&VersionReference> {
        self.versions.last()
    }
}

fn read_config(cursor: &mut Cursor<'_>) -> Result<OcdbtConfig, OcdbtError> {
    let uuid = cursor.array::<16>("uuid")?;
    let manifest_kind = match cursor.u8("manifest_kind")? {
        0 => ManifestKind::Single,
        1 => ManifestKind::Numbered,
        kind => {
            return Err(OcdbtError::InvalidField {
                field: "manifest_kind",
                reason: format!("{kind} is neither 0 (single) nor 1 (numbered)"),
            })
        }
    };
    let max_inline_value_bytes =
        cursor.varint_max("max_inline_value_bytes", u64::from(MAX_INLINE_VALUE_BYTES))? as u32;
    let max_decoded_node_bytes =
        cursor.varint_max("max_decoded_node_bytes", u64::from(u32::MAX))? as u32;
    let version_tree_arity_log2 = cursor.u8("version_tree_arity_log2")?;
    max_version_tree_height(version_tree_arity_log2)?;
    let compression = match cursor.varint("compression_method")? {
        0 => OcdbtCompression::None,
        1 => OcdbtCompression::Zstd {
            level: cursor.i32_le("zstd level")?,
        },
        method => return Err(OcdbtError::UnknownCompression { method }),
    };
    Ok(OcdbtConfig {
        uuid,
        manifest_kind,
        max_inline_value_bytes,
        max_decoded_node_bytes,
        version_tree_arity_log2,
        compression,
    })
}

fn write_config(out: &mut Vec<u8>, config: &OcdbtConfig, manifest_kind: ManifestKind) {
    out.extend_from_slice(&config.uuid);
    out.push(match manifest_kind {
        ManifestKind::Single => 0,
        ManifestKind::Numbered => 1,
    });
    write_varint(out, u64::from(config.max_inline_value_bytes));
    write_varint(out, u64::from(config.max_decoded_node_bytes));
    out.push(config.version_tree_arity_log2);
    match config.compression {
        OcdbtCompression::None => write_varint(out, 0),
        OcdbtCompression::Zstd { level } => {
            write_varint(out, 1);
            out.extend_from_slice(&level.to_le_bytes());
        }
    }
}

/// Decodes a manifest file: the envelope, then the body.
pub fn decode_manifest(encoded: &[u8]) -> Result<Manifest, OcdbtError> {
    let body = decode_envelope(encoded, MANIFEST_MAGIC, MAX_DECODED_BYTES_LIMIT)?;
    decode_manifest_body(&body)
}

/// Decodes a manifest body (the bytes inside the envelope).
///
/// A body whose kind is numbered holds only the configuration. Otherwise at
/// least one version follows, so [`Manifest::latest`] is `Some`.
pub fn decode_manifest_body(body: &[u8]) -> Result<Manifest, OcdbtError> {
    let mut cursor = Cursor::new(body);
    let config = read_config(&mut cursor)?;
    if config.manifest_kind == ManifestKind::Numbered {
        cursor.finish("manifest configuration")?;
        return Ok(Manifest {
            config,
            versions: Vec::new(),
            version_nodes: Vec::new(),
        });
    }

    let table = read_data_file_table(&mut cursor, b"")?;
    let versions = read_version_leaf_entries(&mut cursor, &table, config.version_tree_arity_log2)?;
    let max_height = max_version_tree_height(config.version_tree_arity_log2)?;
    let version_nodes =
        read_version_interior_entries(&mut cursor, &table, u64::from(max_height), true)?;
    check_manifest_node_heights(&version_nodes, max_height)?;
    cursor.finish("manifest")?;
    Ok(Manifest {
        config,
        versions,
        version_nodes,
    })
}

/// Encodes a manifest with its configuration's compression.
///
/// With `manifest_kind` [`ManifestKind::Numbered`] only the configuration is
/// written, as in the `manifest.ocdbt` of that kind.
pub(super) fn encode_manifest(
    manifest: &Manifest,
    manifest_kind: ManifestKind,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    write_config(&mut body, &manifest.config, manifest_kind);
    if manifest_kind == ManifestKind::Single {
        let mut files: Vec<DataFileId> = manifest
            .versions
            .iter()
            .map(|version| {
                version
                    .root
                    .as_ref()
                    .map(|root| root.location.file.clone())
                    .unwrap_or_default()
            })
            .chain(
                manifest
                    .version_nodes
                    .iter()
                    .map(|node| node.location.file.clone()),
            )
            .collect();
        files.sort();
        files.dedup();
        write_data_file_table(&mut body, &files);
        write_version_leaf_entries(&mut body, &files, &manifest.versions);
        write_version_interior_entries(&mut body, &files, &manifest.version_nodes, true);
    }
    encode_envelope(MANIFEST_MAGIC, &body, manifest.config.compression)
}
