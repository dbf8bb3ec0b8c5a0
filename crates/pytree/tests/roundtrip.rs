//! Property tests: flatten and unflatten, prefix broadcasting and the
//! `_METADATA` encoding round-trip on random trees, empty containers and
//! `None` included.

use std::collections::BTreeSet;

use ckpt_pytree::{broadcast_prefix, FlatNode, PyTree, TreeMetadata, ValueMetadata, ValueType};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

/// Dict keys with the characters that stress Python quoting and JSON escaping.
fn dict_key() -> impl Strategy<Value = String> {
    "[a-z0-9._/'\"\\\\ é✓😀\u{7f}\u{a0}]{0,6}"
}

fn tree_of<T: std::fmt::Debug + Clone + 'static>(
    leaf: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = PyTree<T>> {
    let terminal = prop_oneof![
        4 => leaf.prop_map(PyTree::Leaf),
        1 => Just(PyTree::None),
    ];
    terminal.prop_recursive(5, 64, 5, |inner| {
        prop_oneof![
            btree_map(dict_key(), inner.clone(), 0..5).prop_map(PyTree::Dict),
            vec(inner.clone(), 0..5).prop_map(PyTree::List),
            vec(inner, 0..5).prop_map(PyTree::Tuple),
        ]
    })
}

/// Leaf metadata of data-bearing types; empty-node types would decode as nodes.
fn value_metadata() -> impl Strategy<Value = ValueMetadata> + Clone {
    prop_oneof![
        vec(1u64..64, 0..4).prop_map(ValueMetadata::jax_array),
        Just(ValueMetadata::new(ValueType::NumpyArray)),
        Just(ValueMetadata::new(ValueType::Scalar)),
        Just(ValueMetadata::new(ValueType::String)),
        "[a-z.]{1,12}".prop_map(|name| ValueMetadata::new(format!("custom.{name}"))),
    ]
}

fn custom_metadata() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |value| value.is_finite())
            .prop_map(serde_json::Value::from),
        dict_key().prop_map(|text| serde_json::json!({ "note": text, "list": [1, 2.5] })),
    ]
}

/// Replaces tuples that have items with lists, as a round trip through
/// `_METADATA` does. Empty tuples keep their type.
fn tuples_to_lists<T>(tree: PyTree<T>) -> PyTree<T> {
    match tree {
        PyTree::Dict(children) => PyTree::Dict(
            children
                .into_iter()
                .map(|(key, child)| (key, tuples_to_lists(child)))
                .collect(),
        ),
        PyTree::Tuple(items) if items.is_empty() => PyTree::Tuple(items),
        PyTree::List(items) | PyTree::Tuple(items) => {
            PyTree::List(items.into_iter().map(tuples_to_lists).collect())
        }
        other => other,
    }
}

proptest! {
    #[test]
    fn unflatten_inverts_flatten(tree in tree_of(any::<u32>())) {
        let rebuilt = tree.structure().unflatten(tree.clone().into_leaves());
        prop_assert_eq!(rebuilt, Ok(tree));
    }

    #[test]
    fn flatten_paths_lead_to_leaves(tree in tree_of(any::<u32>())) {
        for (path, value) in tree.flatten() {
            prop_assert_eq!(tree.get(&path), Some(&PyTree::Leaf(*value)));
        }
    }

    #[test]
    fn flatten_with_empty_paths_lead_to_nodes(tree in tree_of(any::<u32>())) {
        for (path, node) in tree.flatten_with_empty() {
            let expected = match node {
                FlatNode::Leaf(value) => PyTree::Leaf(*value),
                FlatNode::Empty(empty) => empty.to_tree(),
            };
            prop_assert_eq!(tree.get(&path), Some(&expected));
        }
    }

    #[test]
    fn map_with_path_matches_flatten(tree in tree_of(any::<u32>())) {
        let flat: Vec<_> = tree.flatten().into_iter().map(|(path, value)| (path, *value)).collect();
        let mapped = tree.clone().map_with_path(|path, value| (path.clone(), value)).into_leaves();
        prop_assert_eq!(mapped, flat);
    }

    #[test]
    fn broadcast_self_is_identity(tree in tree_of(any::<u32>())) {
        prop_assert_eq!(broadcast_prefix(&tree, &tree), Ok(tree.as_ref()));
    }

    #[test]
    fn broadcast_root_leaf_fills_all(tree in tree_of(any::<u32>())) {
        let prefix = PyTree::leaf(7u8);
        let broadcast = broadcast_prefix(&prefix, &tree);
        prop_assert_eq!(broadcast, Ok(tree.as_ref().map(|_| &7u8)));
    }

    #[test]
    fn metadata_round_trip(
        tree in tree_of(value_metadata()),
        use_ocdbt in proptest::option::of(any::<bool>()),
        use_zarr3 in any::<bool>(),
        store_all in any::<bool>(),
        custom in custom_metadata(),
    ) {
        let mut metadata = TreeMetadata::new(tree);
        metadata.use_ocdbt = use_ocdbt;
        metadata.use_zarr3 = use_zarr3;
        metadata.store_array_data_equal_to_fill_value = store_all;
        metadata.custom_metadata = custom;

        let encoded = metadata.to_json();
        let decoded = TreeMetadata::from_json(&encoded);
        prop_assert!(decoded.is_ok(), "{:?}", decoded);
        let Ok(decoded) = decoded else { unreachable!() };

        prop_assert_eq!(&decoded.tree, &tuples_to_lists(metadata.tree.clone()));
        prop_assert_eq!(decoded.use_ocdbt, use_ocdbt);
        prop_assert_eq!(decoded.use_zarr3, use_zarr3);
        prop_assert_eq!(decoded.store_array_data_equal_to_fill_value, store_all);
        prop_assert_eq!(&decoded.custom_metadata, &metadata.custom_metadata);
        prop_assert_eq!(decoded.to_json(), encoded);
    }

    #[test]
    fn metadata_entry_keys_unique(tree in tree_of(value_metadata())) {
        let entries = TreeMetadata::new(tree).entries();
        let keys: BTreeSet<String> = entries.iter().map(|entry| entry.entry_key()).collect();
        prop_assert_eq!(keys.len(), entries.len());
    }

    #[test]
    fn metadata_output_is_ascii(tree in tree_of(value_metadata())) {
        let encoded = TreeMetadata::new(tree).to_json();
        prop_assert!(encoded.is_ascii());
    }
}

/// A valid document to corrupt in the properties below, which check that
/// decoding returns instead of panicking.
fn sample_document() -> Vec<u8> {
    let tree = PyTree::dict([
        (
            "opt",
            PyTree::list([
                PyTree::leaf(ValueMetadata::new(ValueType::NumpyArray)),
                PyTree::None,
            ]),
        ),
        ("w", PyTree::leaf(ValueMetadata::jax_array(vec![2, 4]))),
        ("e", PyTree::tuple([])),
    ]);
    TreeMetadata::new(tree).to_json()
}

proptest! {
    #[test]
    fn decode_arbitrary_bytes_returns(bytes in vec(any::<u8>(), 0..512)) {
        // Most inputs are rejected; any accepted one must survive a round trip.
        if let Ok(metadata) = TreeMetadata::from_json(&bytes) {
            prop_assert_eq!(TreeMetadata::from_json(&metadata.to_json()).ok(), Some(metadata));
        }
    }

    #[test]
    fn decode_corrupted_document_returns(
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = sample_document();
        for (position, byte) in flips {
            let index = position.index(bytes.len());
            bytes[index] = byte;
        }
        let length = cut.index(bytes.len() + 1);
        bytes.truncate(length.max(bytes.len() / 2));
        if let Ok(metadata) = TreeMetadata::from_json(&bytes) {
            prop_assert_eq!(TreeMetadata::from_json(&metadata.to_json()).ok(), Some(metadata));
        }
    }
}
