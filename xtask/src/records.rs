//! Per-leaf records of a checkpoint, from ckpt's reader or from a JSON
//! document in the schema of `testdata/orbax/*/expected_values.json`, and
//! their comparison.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use ckpt::{
    pytree::{FlatNode, Key, KeyPath},
    storage::Store,
};
use serde_json::Value;

/// What a checkpoint says about one leaf or empty node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Keys with their types, such as `params(dict)/0(sequence)`.
    pub(crate) id: String,
    pub(crate) param_name: Option<String>,
    /// Empty containers and `None` have no data.
    pub(crate) empty: bool,
    pub(crate) dtype: Option<String>,
    pub(crate) shape: Option<Vec<u64>>,
    pub(crate) sha256: Option<String>,
}

fn key_path_id(path: &KeyPath) -> String {
    path.keys()
        .iter()
        .map(|key| match key {
            Key::Dict(name) => format!("{name}(dict)"),
            Key::Index(index) => format!("{index}(sequence)"),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads every leaf of a committed item with ckpt and hashes its values.
pub(crate) fn ckpt_records(item: &Store) -> Result<Vec<Record>> {
    let mut records: Vec<Record> = ckpt::leaf_digests(item)?
        .into_iter()
        .map(|digest| Record {
            id: key_path_id(&digest.key_path),
            param_name: Some(digest.param_name),
            empty: false,
            dtype: digest.dtype.map(|d| d.name().to_owned()),
            shape: digest.shape,
            sha256: Some(digest.sha256),
        })
        .collect();
    let metadata = ckpt::item_metadata(item)?;
    for (path, node) in metadata.tree.flatten_with_empty() {
        if let FlatNode::Empty(_) = node {
            records.push(Record {
                id: key_path_id(&path),
                param_name: None,
                empty: true,
                dtype: None,
                shape: None,
                sha256: None,
            });
        }
    }
    Ok(records)
}

/// Parses the `leaves` of an expected-values document, optionally only
/// those of one CheckpointManager step and item.
pub(crate) fn json_records(document: &Value, step_item: Option<(u64, &str)>) -> Result<Vec<Record>> {
    let leaves = document
        .get("leaves")
        .and_then(Value::as_array)
        .context("the document has no \"leaves\" list")?;
    let mut records = Vec::new();
    for leaf in leaves {
        if let Some((step, item)) = step_item {
            if leaf.get("step").and_then(Value::as_u64) != Some(step)
                || leaf.get("item").and_then(Value::as_str) != Some(item)
            {
                continue;
            }
        }
        let keypath = leaf
            .get("keypath")
            .and_then(Value::as_array)
            .context("a leaf has no keypath")?;
        let id = keypath
            .iter()
            .map(|key| {
                let name = match &key["key"] {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                format!("{name}({})", key["key_type"].as_str().unwrap_or("?"))
            })
            .collect::<Vec<_>>()
            .join("/");
        let kind = leaf.get("kind").and_then(Value::as_str).unwrap_or("");
        records.push(Record {
            id,
            param_name: leaf.get("param_name").and_then(Value::as_str).map(str::to_owned),
            empty: kind == "empty",
            dtype: leaf.get("dtype").and_then(Value::as_str).map(str::to_owned),
            shape: leaf
                .get("shape")
                .and_then(Value::as_array)
                .map(|dims| dims.iter().filter_map(Value::as_u64).collect()),
            sha256: leaf.get("sha256").and_then(Value::as_str).map(str::to_owned),
        });
    }
    Ok(records)
}

/// Compares two record sets leaf by leaf and fails with every difference.
///
/// Fields that `expected` leaves out are not compared, and empty nodes are
/// compared by key path only.
pub(crate) fn compare(actual: &[Record], expected: &[Record], what: &str) -> Result<usize> {
    let actual: BTreeMap<&str, &Record> = actual.iter().map(|r| (r.id.as_str(), r)).collect();
    let expected: BTreeMap<&str, &Record> = expected.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut problems = Vec::new();
    for id in expected.keys().filter(|id| !actual.contains_key(*id)) {
        problems.push(format!("missing leaf {id}"));
    }
    for id in actual.keys().filter(|id| !expected.contains_key(*id)) {
        problems.push(format!("unexpected leaf {id}"));
    }
    for (id, want) in &expected {
        let Some(got) = actual.get(id) else {
            continue;
        };
        if want.empty || got.empty {
            if want.empty != got.empty {
                problems.push(format!("leaf {id}: empty node on one side only"));
            }
            continue;
        }
        let mut check = |field: &str, got: String, want: String| {
            if got != want {
                problems.push(format!("leaf {id}: {field} is {got}, expected {want}"));
            }
        };
        if let Some(name) = &want.param_name {
            check("param_name", format!("{:?}", got.param_name), format!("{:?}", Some(name)));
        }
        if want.dtype.is_some() {
            check("dtype", format!("{:?}", got.dtype), format!("{:?}", want.dtype));
        }
        if want.shape.is_some() {
            check("shape", format!("{:?}", got.shape), format!("{:?}", want.shape));
        }
        if want.sha256.is_some() {
            check("sha256", format!("{:?}", got.sha256), format!("{:?}", want.sha256));
        }
    }
    if !problems.is_empty() {
        bail!("{what}: {} mismatches:\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(expected.len())
}
