//! Decodes and re-encodes every `_METADATA` that Python Orbax wrote under
//! `testdata/orbax`, and checks the decoded trees against the leaf lists in
//! the fixtures' `expected_values.json`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ckpt_pytree::{param_name, EmptyNode, FlatNode, Key, KeyPath, TreeMetadata};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/orbax")
}

/// Finds every file named `_METADATA` below `dir`.
fn find_metadata_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    for entry in entries {
        let path = entry
            .map(|entry| entry.path())
            .unwrap_or_else(|error| panic!("{error}"));
        if path.is_dir() {
            find_metadata_files(&path, found);
        } else if path.file_name().is_some_and(|name| name == "_METADATA") {
            found.push(path);
        }
    }
}

fn metadata_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    find_metadata_files(&fixtures_dir(), &mut files);
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn decode(path: &Path, bytes: &[u8]) -> TreeMetadata {
    TreeMetadata::from_json(bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn entry_keys(path: &Path, bytes: &[u8]) -> BTreeSet<String> {
    let document: Value =
        serde_json::from_slice(bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    match document.get("tree_metadata") {
        Some(Value::Object(entries)) => entries.keys().cloned().collect(),
        other => panic!("{}: tree_metadata is {other:?}", path.display()),
    }
}

#[test]
fn fixtures_present() {
    let files = metadata_files();
    assert!(files.len() >= 10, "found only {files:?}");
}

#[test]
fn round_trip_same_tree() {
    for path in metadata_files() {
        let original = read(&path);
        let decoded = decode(&path, &original);
        let again = decode(&path, &decoded.to_json());
        assert_eq!(again, decoded, "{}", path.display());
    }
}

#[test]
fn round_trip_same_entry_keys() {
    for path in metadata_files() {
        let original = read(&path);
        let encoded = decode(&path, &original).to_json();
        assert_eq!(
            entry_keys(&path, &encoded),
            entry_keys(&path, &original),
            "{}",
            path.display()
        );
    }
}

#[test]
fn round_trip_same_bytes() {
    for path in metadata_files() {
        let original = read(&path);
        let encoded = decode(&path, &original).to_json();
        assert_eq!(
            String::from_utf8_lossy(&encoded),
            String::from_utf8_lossy(&original),
            "{}",
            path.display()
        );
    }
}

#[test]
fn fixture_options() {
    let path = fixtures_dir().join("c2_pytree_zarr3_no_ocdbt/ckpt/_METADATA");
    let metadata = decode(&path, &read(&path));
    assert_eq!(metadata.use_ocdbt, Some(false));
    assert!(metadata.use_zarr3);
    assert!(metadata.store_array_data_equal_to_fill_value);
    assert_eq!(metadata.custom_metadata, Value::Null);
}

/// A leaf of `expected_values.json` reduced to what this crate can check.
#[derive(Debug, PartialEq)]
struct ExpectedLeaf {
    keys: Vec<(String, u64)>,
    param_name: String,
    /// The Python type of an empty node, `None` for a leaf with data.
    empty_type: Option<String>,
}

fn expected_leaves(fixture: &Path, step: Option<u64>) -> Vec<ExpectedLeaf> {
    let path = fixture.join("expected_values.json");
    let document: Value = serde_json::from_slice(&read(&path))
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let Some(Value::Array(leaves)) = document.get("leaves") else {
        panic!("{}: no leaves array", path.display());
    };
    leaves
        .iter()
        .filter(|leaf| step.is_none() || leaf["step"].as_u64() == step && leaf["item"] == "state")
        .map(|leaf| ExpectedLeaf {
            keys: leaf["keypath"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|key| {
                    (
                        key["key"].as_str().unwrap_or_default().to_owned(),
                        key["orbax_key_type"].as_u64().unwrap_or_default(),
                    )
                })
                .collect(),
            param_name: leaf["param_name"].as_str().unwrap_or_default().to_owned(),
            empty_type: (leaf["kind"] == "empty")
                .then(|| leaf["python_type"].as_str().unwrap_or_default().to_owned()),
        })
        .collect()
}

fn decoded_leaves(metadata: &TreeMetadata) -> Vec<ExpectedLeaf> {
    metadata
        .tree
        .flatten_with_empty()
        .into_iter()
        .map(|(path, node)| ExpectedLeaf {
            keys: key_pairs(&path),
            param_name: param_name(&path),
            empty_type: match node {
                FlatNode::Leaf(_) => None,
                FlatNode::Empty(EmptyNode::Dict) => Some("dict".to_owned()),
                FlatNode::Empty(EmptyNode::List) => Some("list".to_owned()),
                FlatNode::Empty(EmptyNode::Tuple) => Some("tuple".to_owned()),
                FlatNode::Empty(EmptyNode::None) => Some("NoneType".to_owned()),
            },
        })
        .collect()
}

fn key_pairs(path: &KeyPath) -> Vec<(String, u64)> {
    path.iter()
        .map(|key: &Key| (key.name().into_owned(), u64::from(key.key_type().code())))
        .collect()
}

/// Returns the fixture directory of a `_METADATA` file and, for the
/// `d_manager` steps, the step number.
fn fixture_of(metadata_path: &Path) -> (PathBuf, Option<u64>) {
    let mut dir = metadata_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut step = None;
    while dir.file_name().is_some_and(|name| name != "ckpt") {
        if let Some(number) = dir
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse().ok())
        {
            step = Some(number);
        }
        dir.pop();
    }
    dir.pop();
    (dir, step)
}

#[test]
fn leaves_match_expected_values() {
    for path in metadata_files() {
        let (fixture, step) = fixture_of(&path);
        let expected = expected_leaves(&fixture, step);
        assert!(
            !expected.is_empty(),
            "{}: no expected leaves",
            path.display()
        );

        let metadata = decode(&path, &read(&path));
        assert_eq!(decoded_leaves(&metadata), expected, "{}", path.display());
    }
}

#[test]
fn fixture_param_names_valid() {
    for path in metadata_files() {
        let metadata = decode(&path, &read(&path));
        assert_eq!(
            metadata.tree.check_param_names(),
            Ok(()),
            "{}",
            path.display()
        );
    }
}
