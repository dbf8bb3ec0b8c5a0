//! Unit tests of the node, manifest and version tree codecs and of the tree
//! builder. Reader, writer and merge tests against stores live in
//! `tests/ocdbt.rs`.

use bytes::Bytes;

use super::{
    btree::{
        decode_btree_node, decode_btree_node_body, encode_btree_node, BtreeEntries, BtreeNode,
        InteriorEntry, LeafEntry, LeafValue,
    },
    build::{build_tree, TreeLimits},
    cursor::write_varint,
    envelope::MAX_DECODED_BYTES_LIMIT,
    manifest::{decode_manifest, encode_manifest, Manifest, ManifestKind},
    version_tree::{
        decode_version_leaf_entries, decode_version_tree_node, write_version_tree_node_body,
        VersionTreeEntries, VersionTreeNode,
    },
    DataFileId, DataReference, NodeReference, NodeStatistics, OcdbtCompression, OcdbtConfig,
    OcdbtError, VersionReference,
};

fn file(base: &str, relative: &str) -> DataFileId {
    DataFileId {
        base_path: base.as_bytes().to_vec(),
        relative_path: relative.as_bytes().to_vec(),
    }
}

fn reference(offset: u64, length: u64) -> DataReference {
    DataReference {
        file: file("", "d/0123"),
        offset,
        length,
    }
}

fn inline(key: &str, value: &str) -> LeafEntry {
    LeafEntry {
        key: key.as_bytes().to_vec(),
        value: LeafValue::Inline(Bytes::copy_from_slice(value.as_bytes())),
    }
}

/// Encodes a leaf body by hand: no data files, `keys` as (prefix length,
/// suffix) pairs, and a one-byte inline value per key.
fn leaf_body(keys: &[(u64, &str)]) -> Vec<u8> {
    let mut body = vec![0, 0];
    write_varint(&mut body, keys.len() as u64);
    for &(prefix_len, _) in &keys[1..] {
        write_varint(&mut body, prefix_len);
    }
    for (_, suffix) in keys {
        write_varint(&mut body, suffix.len() as u64);
    }
    for (_, suffix) in keys {
        body.extend_from_slice(suffix.as_bytes());
    }
    body.extend(keys.iter().map(|_| 1u8));
    body.extend(keys.iter().map(|_| 0u8));
    body.extend(keys.iter().map(|_| b'v'));
    body
}

fn decode_body(body: Vec<u8>) -> Result<BtreeNode, OcdbtError> {
    decode_btree_node_body(&Bytes::from(body), b"")
}

#[test]
fn leaf_round_trips() {
    let node = BtreeNode {
        height: 0,
        entries: BtreeEntries::Leaf(vec![
            inline("a/.zarray", "{}"),
            inline("a/0", "chunk"),
            LeafEntry {
                key: b"big/0".to_vec(),
                value: LeafValue::OutOfLine(reference(10, 4096)),
            },
        ]),
    };
    let (encoded, _) = encode_btree_node(&node, OcdbtCompression::Zstd { level: 0 }).unwrap();
    assert_eq!(decode_btree_node(&encoded, b"", 1 << 20).unwrap(), node);
}

#[test]
fn interior_round_trips() {
    let child = |offset, key: &str, common| InteriorEntry {
        key: key.as_bytes().to_vec(),
        subtree_common_prefix_len: common,
        child: NodeReference {
            location: reference(offset, 100),
            statistics: NodeStatistics {
                num_keys: 3,
                num_tree_bytes: 100,
                num_indirect_value_bytes: 7,
            },
        },
    };
    let node = BtreeNode {
        height: 2,
        entries: BtreeEntries::Interior(vec![
            child(0, "abc", 2),
            child(100, "abd", 0),
            child(200, "x", 1),
        ]),
    };
    let (encoded, _) = encode_btree_node(&node, OcdbtCompression::None).unwrap();
    assert_eq!(decode_btree_node(&encoded, b"", 1 << 20).unwrap(), node);
}

#[test]
fn transitive_path_applies_to_values() {
    let node = BtreeNode {
        height: 0,
        entries: BtreeEntries::Leaf(vec![LeafEntry {
            key: b"k".to_vec(),
            value: LeafValue::OutOfLine(reference(0, 2000)),
        }]),
    };
    let (encoded, _) = encode_btree_node(&node, OcdbtCompression::None).unwrap();
    let decoded = decode_btree_node(&encoded, b"ocdbt.process_0/", 1 << 20).unwrap();
    let BtreeEntries::Leaf(entries) = decoded.entries else {
        panic!("decoded a leaf as an interior node");
    };
    let LeafValue::OutOfLine(found) = &entries[0].value else {
        panic!("out-of-line value decoded as inline");
    };
    assert_eq!(found.file, file("ocdbt.process_0/", "d/0123"));
}

#[test]
fn hand_built_leaf_decodes() {
    let node = decode_body(leaf_body(&[(0, "ab"), (1, "c")])).unwrap();
    let BtreeEntries::Leaf(entries) = node.entries else {
        panic!("decoded a leaf as an interior node");
    };
    assert_eq!(entries[1].key, b"ac");
}

#[test]
fn prefix_longer_than_previous_key_rejected() {
    let err = decode_body(leaf_body(&[(0, "ab"), (3, "c")])).unwrap_err();
    assert!(
        matches!(err, OcdbtError::PrefixTooLong { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn unsorted_keys_rejected() {
    let err = decode_body(leaf_body(&[(0, "b"), (0, "a")])).unwrap_err();
    assert!(
        matches!(err, OcdbtError::KeysNotSorted { index: 1 }),
        "{err}"
    );
}

#[test]
fn duplicate_keys_rejected() {
    let err = decode_body(leaf_body(&[(0, "a"), (1, "")])).unwrap_err();
    assert!(
        matches!(err, OcdbtError::KeysNotSorted { index: 1 }),
        "{err}"
    );
}

#[test]
fn empty_node_rejected() {
    let err = decode_body(vec![0, 0, 0]).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::InvalidField {
                field: "entry count",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn entry_count_over_limit_rejected() {
    let mut body = vec![0, 0];
    write_varint(&mut body, (1 << 20) + 1);
    body.extend(vec![0u8; (1 << 20) + 10]);
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::LimitExceeded {
                field: "entry count",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn entry_count_beyond_input_rejected() {
    let mut body = vec![0, 0];
    write_varint(&mut body, 1000);
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::UnexpectedEnd {
                field: "entry count",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn value_kind_two_rejected() {
    let mut body = leaf_body(&[(0, "a")]);
    let kind = body.len() - 2;
    body[kind] = 2;
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(err, OcdbtError::InvalidValueKind { index: 0, kind: 2 }),
        "{err}"
    );
}

#[test]
fn data_file_id_out_of_range_rejected() {
    // One out-of-line value naming data file 3 of an empty table.
    let body = vec![0, 0, 1, 1, b'a', 5, 1, 3, 0];
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::IndexOutOfRange {
                value: 3,
                len: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn value_range_overflow_rejected() {
    let mut body = vec![0, 1, 1, 0, 0, 1, 1, b'a', 10, 1, 0];
    write_varint(&mut body, u64::MAX - 5);
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::InvalidField {
                field: "data file reference",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn inline_value_over_one_mib_rejected() {
    let mut body = vec![0, 0, 1, 1, b'a'];
    write_varint(&mut body, (1 << 20) + 1);
    body.push(0);
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::LimitExceeded {
                field: "inline value length",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn truncated_inline_value_rejected() {
    let mut body = leaf_body(&[(0, "a")]);
    body.pop();
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::UnexpectedEnd {
                field: "inline value",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn trailing_node_bytes_rejected() {
    let mut body = leaf_body(&[(0, "a")]);
    body.push(0);
    let err = decode_body(body).unwrap_err();
    assert!(matches!(err, OcdbtError::TrailingBytes { .. }), "{err}");
}

#[test]
fn subtree_prefix_past_key_rejected() {
    // Interior node, one child with key "a" and a common prefix of 2 bytes.
    let body = vec![1, 0, 1, 1, 2, b'a'];
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::InvalidField {
                field: "subtree_common_prefix_length",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn key_over_limit_rejected() {
    let mut body = vec![0, 0, 1];
    write_varint(&mut body, 65536);
    let err = decode_body(body).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::LimitExceeded {
                field: "key_suffix_length",
                ..
            }
        ),
        "{err}"
    );
}

fn config(kind: ManifestKind) -> OcdbtConfig {
    OcdbtConfig {
        uuid: [7; 16],
        manifest_kind: kind,
        max_inline_value_bytes: 1024,
        max_decoded_node_bytes: 100_000_000,
        version_tree_arity_log2: 4,
        compression: OcdbtCompression::Zstd { level: 0 },
    }
}

fn version(generation: u64) -> VersionReference {
    VersionReference {
        generation,
        root_height: 1,
        root: Some(NodeReference {
            location: reference(generation * 100, 100),
            statistics: NodeStatistics {
                num_keys: 5,
                num_tree_bytes: 300,
                num_indirect_value_bytes: 0,
            },
        }),
        commit_time_ns: 1_700_000_000_000_000_000 + generation,
    }
}

#[test]
fn manifest_round_trips() {
    let manifest = Manifest {
        config: config(ManifestKind::Single),
        versions: vec![version(1), version(2), version(3)],
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Single).unwrap();
    assert_eq!(decode_manifest(&encoded).unwrap(), manifest);
}

#[test]
fn empty_version_round_trips() {
    let empty = VersionReference {
        generation: 1,
        root_height: 0,
        root: None,
        commit_time_ns: 5,
    };
    let manifest = Manifest {
        config: config(ManifestKind::Single),
        versions: vec![empty],
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Single).unwrap();
    assert_eq!(decode_manifest(&encoded).unwrap(), manifest);
}

#[test]
fn numbered_manifest_holds_config_only() {
    let manifest = Manifest {
        config: config(ManifestKind::Numbered),
        versions: Vec::new(),
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Numbered).unwrap();
    assert_eq!(decode_manifest(&encoded).unwrap(), manifest);
}

#[test]
fn manifest_without_versions_rejected() {
    let manifest = Manifest {
        config: config(ManifestKind::Single),
        versions: Vec::new(),
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Single).unwrap();
    assert!(decode_manifest(&encoded).is_err());
}

#[test]
fn decreasing_generations_rejected() {
    let manifest = Manifest {
        config: config(ManifestKind::Single),
        versions: vec![version(3), version(2)],
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Single).unwrap();
    let err = decode_manifest(&encoded).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::InvalidField {
                field: "generation_number",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn versions_spanning_two_leaves_rejected() {
    // With arity 16, generations 16 and 17 belong to different leaves.
    let manifest = Manifest {
        config: config(ManifestKind::Single),
        versions: vec![version(16), version(17)],
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Single).unwrap();
    let err = decode_manifest(&encoded).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::InvalidField {
                field: "generation_number",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn arity_zero_rejected() {
    let mut bad = config(ManifestKind::Single);
    bad.version_tree_arity_log2 = 0;
    let manifest = Manifest {
        config: bad,
        versions: vec![version(1)],
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Single).unwrap();
    let err = decode_manifest(&encoded).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::InvalidField {
                field: "version_tree_arity_log2",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn too_many_versions_rejected() {
    let versions: Vec<VersionReference> = (1..=17).map(version).collect();
    let table = vec![file("", "d/0123")];
    let mut bytes = Vec::new();
    super::version_tree::write_version_leaf_entries(&mut bytes, &table, &versions);
    let err = decode_version_leaf_entries(&bytes, &table, 4).unwrap_err();
    assert!(
        matches!(
            err,
            OcdbtError::LimitExceeded {
                field: "version count",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn version_tree_node_round_trips() {
    let node = VersionTreeNode {
        arity_log2: 4,
        height: 0,
        entries: VersionTreeEntries::Leaf(vec![version(1), version(2)]),
    };
    let body = write_version_tree_node_body(&node);
    let encoded = super::envelope::encode_envelope(
        super::envelope::VERSION_TREE_NODE_MAGIC,
        &body,
        OcdbtCompression::None,
    )
    .unwrap();
    assert_eq!(
        decode_version_tree_node(&encoded, b"", MAX_DECODED_BYTES_LIMIT).unwrap(),
        node
    );
}

fn limits(target_node_bytes: u64) -> TreeLimits {
    TreeLimits {
        target_node_bytes,
        max_decoded_node_bytes: 1 << 20,
        compression: OcdbtCompression::None,
    }
}

fn sorted_entries(count: usize) -> Vec<(Vec<u8>, LeafValue)> {
    (0..count)
        .map(|index| {
            let key = format!("param.{}/{}.0", index % 7, index).into_bytes();
            (
                key,
                LeafValue::Inline(Bytes::from(vec![index as u8; index % 40])),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

#[test]
fn small_target_builds_several_levels() {
    let mut out = Vec::new();
    let tree = build_tree(
        sorted_entries(500),
        &file("", "d/x"),
        &mut out,
        &limits(300),
    )
    .unwrap()
    .unwrap();
    assert!(tree.height >= 2, "height {}", tree.height);
    assert_eq!(tree.root.statistics.num_keys, 500);
}

#[test]
fn tree_bytes_cover_every_node() {
    let mut out = Vec::new();
    let tree = build_tree(
        sorted_entries(500),
        &file("", "d/x"),
        &mut out,
        &limits(300),
    )
    .unwrap()
    .unwrap();
    assert_eq!(tree.root.statistics.num_tree_bytes, out.len() as u64);
}

#[test]
fn one_leaf_when_target_is_large() {
    let mut out = Vec::new();
    let tree = build_tree(
        sorted_entries(50),
        &file("", "d/x"),
        &mut out,
        &limits(1 << 20),
    )
    .unwrap()
    .unwrap();
    assert_eq!(tree.height, 0);
}

#[test]
fn no_entries_build_no_tree() {
    let mut out = Vec::new();
    let tree = build_tree(Vec::new(), &file("", "d/x"), &mut out, &limits(300)).unwrap();
    assert!(tree.is_none());
}

#[test]
fn entry_above_node_limit_rejected() {
    let entries = vec![(
        b"k".to_vec(),
        LeafValue::Inline(Bytes::from(vec![0u8; 5000])),
    )];
    let mut limits = limits(300);
    limits.max_decoded_node_bytes = 4096;
    let result = build_tree(entries, &file("", "d/x"), &mut Vec::new(), &limits);
    assert!(matches!(
        result,
        Err(super::build::BuildError::NodeTooLarge { .. })
    ));
}

// ---------------------------------------------------------------------------
// Hand-built databases that the writer would never produce.

use std::sync::Arc;

use super::OcdbtReader;
use crate::{KvStore, ObjectStoreBackend, StorageError, Store};

fn memory_store() -> Store {
    Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()))
}

fn leaf_with(key: &str, value: LeafValue) -> BtreeNode {
    BtreeNode {
        height: 0,
        entries: BtreeEntries::Leaf(vec![LeafEntry {
            key: key.as_bytes().to_vec(),
            value,
        }]),
    }
}

/// Appends `node` to the data file `d/nodes` and returns its location.
fn append_node(store: &Store, node: &BtreeNode) -> DataReference {
    let (encoded, _) = encode_btree_node(node, OcdbtCompression::None).unwrap();
    let mut file_bytes = store
        .get("d/nodes")
        .unwrap()
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default();
    let offset = file_bytes.len() as u64;
    file_bytes.extend_from_slice(&encoded);
    store.put("d/nodes", Bytes::from(file_bytes)).unwrap();
    DataReference {
        file: file("", "d/nodes"),
        offset,
        length: encoded.len() as u64,
    }
}

fn root_version(generation: u64, location: DataReference, root_height: u8) -> VersionReference {
    VersionReference {
        generation,
        root_height,
        root: Some(NodeReference {
            location,
            statistics: NodeStatistics::default(),
        }),
        commit_time_ns: generation,
    }
}

fn put_manifest(store: &Store, key: &str, manifest: &Manifest, kind: ManifestKind) {
    let encoded = encode_manifest(manifest, kind).unwrap();
    store.put(key, Bytes::from(encoded)).unwrap();
}

/// Stores `node` as the root of a one-version database.
fn craft_database(store: &Store, node: &BtreeNode, root_height: u8) {
    let location = append_node(store, node);
    let manifest = Manifest {
        config: config(ManifestKind::Single),
        versions: vec![root_version(1, location, root_height)],
        version_nodes: Vec::new(),
    };
    put_manifest(store, "manifest.ocdbt", &manifest, ManifestKind::Single);
}

fn read_error(store: &Store, key: &str) -> (String, String) {
    let reader = OcdbtReader::open(store.clone()).unwrap();
    match reader.read(key) {
        Err(StorageError::Corrupt { key, reason }) => (key, reason),
        other => panic!("expected a corrupt-data error, found {other:?}"),
    }
}

fn out_of_line(base: &str, relative: &str, length: u64) -> LeafValue {
    LeafValue::OutOfLine(DataReference {
        file: file(base, relative),
        offset: 0,
        length,
    })
}

#[test]
fn value_past_end_of_data_file_rejected() {
    let store = memory_store();
    store.put("d/values", Bytes::from(vec![0u8; 100])).unwrap();
    craft_database(
        &store,
        &leaf_with("k", out_of_line("", "d/values", 5000)),
        0,
    );
    let (file, reason) = read_error(&store, "k");
    assert!(file.ends_with("/d/values"), "{file}");
    assert!(
        reason.contains("value at bytes 0..5000 is past the end of the file (100 bytes)"),
        "{reason}"
    );
}

#[test]
fn out_of_line_value_read() {
    let store = memory_store();
    store
        .put("d/values", Bytes::from_static(b"0123456789"))
        .unwrap();
    craft_database(&store, &leaf_with("k", out_of_line("", "d/values", 4)), 0);
    let reader = OcdbtReader::open(store).unwrap();
    assert_eq!(reader.read("k").unwrap().as_deref(), Some(&b"0123"[..]));
}

#[test]
fn missing_value_file_rejected() {
    let store = memory_store();
    craft_database(&store, &leaf_with("k", out_of_line("", "d/values", 10)), 0);
    let (file, reason) = read_error(&store, "k");
    assert!(file.ends_with("/d/values"), "{file}");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn manifest_referencing_missing_file_rejected() {
    let store = memory_store();
    let manifest = Manifest {
        config: config(ManifestKind::Single),
        versions: vec![root_version(1, reference(0, 100), 0)],
        version_nodes: Vec::new(),
    };
    put_manifest(&store, "manifest.ocdbt", &manifest, ManifestKind::Single);
    let (file, reason) = read_error(&store, "k");
    assert!(file.ends_with("/d/0123"), "{file}");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn escaping_data_file_paths_rejected() {
    for (base, relative) in [
        ("", "../outside"),
        ("../", "d/x"),
        ("/abs/", "d/x"),
        ("d/", ""),
        ("", "d//x"),
    ] {
        let store = memory_store();
        craft_database(&store, &leaf_with("k", out_of_line(base, relative, 10)), 0);
        let (_, reason) = read_error(&store, "k");
        assert!(
            reason.contains("invalid data file path"),
            "{base}{relative}: {reason}"
        );
    }
}

#[test]
fn root_height_mismatch_rejected() {
    let store = memory_store();
    craft_database(&store, &leaf_with("k", LeafValue::Inline(Bytes::new())), 1);
    let (_, reason) = read_error(&store, "k");
    assert!(reason.contains("height 0, expected 1"), "{reason}");
}

#[test]
fn child_below_parent_bound_rejected() {
    let store = memory_store();
    let leaf = append_node(&store, &leaf_with("a", LeafValue::Inline(Bytes::new())));
    let parent = BtreeNode {
        height: 1,
        entries: BtreeEntries::Interior(vec![InteriorEntry {
            key: b"m".to_vec(),
            subtree_common_prefix_len: 0,
            child: NodeReference {
                location: leaf,
                statistics: NodeStatistics::default(),
            },
        }]),
    };
    craft_database(&store, &parent, 1);
    let (_, reason) = read_error(&store, "m");
    assert!(reason.contains("below the lower bound"), "{reason}");
}

#[test]
fn subtree_common_prefix_resolved() {
    // The child stores "0" and "1" under the common prefix "w/" declared by its parent.
    let store = memory_store();
    let child = BtreeNode {
        height: 0,
        entries: BtreeEntries::Leaf(vec![inline("0", "zero"), inline("1", "one")]),
    };
    let child = append_node(&store, &child);
    let parent = BtreeNode {
        height: 1,
        entries: BtreeEntries::Interior(vec![InteriorEntry {
            key: b"w/0".to_vec(),
            subtree_common_prefix_len: 2,
            child: NodeReference {
                location: child,
                statistics: NodeStatistics::default(),
            },
        }]),
    };
    craft_database(&store, &parent, 1);
    let reader = OcdbtReader::open(store).unwrap();
    assert_eq!(reader.list("").unwrap(), ["w/0", "w/1"]);
    assert_eq!(reader.read("w/1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(reader.read("x/1").unwrap(), None);
}

#[test]
fn numbered_manifest_reads_newest() {
    let store = memory_store();
    let old = append_node(&store, &leaf_with("old", LeafValue::Inline(Bytes::new())));
    let new = append_node(&store, &leaf_with("new", LeafValue::Inline(Bytes::new())));
    let config_only = Manifest {
        config: config(ManifestKind::Numbered),
        versions: Vec::new(),
        version_nodes: Vec::new(),
    };
    put_manifest(
        &store,
        "manifest.ocdbt",
        &config_only,
        ManifestKind::Numbered,
    );
    for (generation, location) in [(1, old), (2, new)] {
        let numbered = Manifest {
            config: config(ManifestKind::Single),
            versions: vec![root_version(generation, location, 0)],
            version_nodes: Vec::new(),
        };
        let key = format!("manifest.{generation:016x}");
        put_manifest(&store, &key, &numbered, ManifestKind::Single);
    }
    let reader = OcdbtReader::open(store).unwrap();
    assert_eq!(reader.version().generation, 2);
    assert_eq!(reader.list("").unwrap(), ["new"]);
}

#[test]
fn numbered_manifest_without_versions_rejected() {
    let store = memory_store();
    let config_only = Manifest {
        config: config(ManifestKind::Numbered),
        versions: Vec::new(),
        version_nodes: Vec::new(),
    };
    put_manifest(
        &store,
        "manifest.ocdbt",
        &config_only,
        ManifestKind::Numbered,
    );
    let err = OcdbtReader::open(store).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}
