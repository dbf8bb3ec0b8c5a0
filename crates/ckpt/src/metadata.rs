use ckpt_core::{num_bytes, DType, IndexBox};
use ckpt_pytree::{param_name, KeyPath, PyTree};
use ckpt_storage::{open_committed, Store};
use sha2::{Digest, Sha256};

use crate::{
    checkpointer::{open_array_reader, read_shardings, read_tree_metadata},
    legacy::read_legacy,
    handlers::{
        string::{lookup, read_strings},
        ARRAY_VALUE_TYPE, HOST_ARRAY_VALUE_TYPE, SCALAR_VALUE_TYPE, STRING_VALUE_TYPE,
    },
    CkptError, Leaf, Result,
};

/// What a checkpoint holds, read without its array data.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMetadata {
    /// Per-leaf metadata in the checkpoint's tree structure. Tuples come back
    /// as lists, as in Orbax, because the format does not tell them apart.
    pub tree: PyTree<LeafMetadata>,
    /// Whether arrays are stored in OCDBT databases.
    pub use_ocdbt: Option<bool>,
    /// Whether arrays are stored as zarr v3.
    pub use_zarr3: bool,
    /// The custom metadata given at save time.
    pub custom_metadata: Option<serde_json::Value>,
}

/// Metadata of one leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafMetadata {
    /// The Orbax `value_type`: `jax.Array`, `np.ndarray`, `scalar`, `string`, or a custom one.
    pub value_type: String,
    /// Element type, for arrays and scalars.
    pub dtype: Option<DType>,
    /// Global shape, for arrays and scalars (`[]` for scalars).
    pub shape: Option<Vec<u64>>,
    /// Chunk shape in storage, for arrays and scalars.
    pub chunk_shape: Option<Vec<u64>>,
    /// Bytes of the leaf's elements in memory, for arrays and scalars.
    pub size_bytes: Option<u64>,
    /// The saved sharding in Orbax's JSON form, for sharded arrays.
    pub sharding: Option<String>,
}

fn is_array_like(value_type: &str) -> bool {
    [ARRAY_VALUE_TYPE, HOST_ARRAY_VALUE_TYPE, SCALAR_VALUE_TYPE].contains(&value_type)
}

/// Reads the tree structure, dtypes, shapes and shardings of the
/// checkpoint `name` under `parent`, without reading array data.
pub fn metadata(parent: &Store, name: &str) -> Result<CheckpointMetadata> {
    let item = open_committed(parent, name)?;
    item_metadata(&item)
}

/// Reads the metadata of an opened checkpoint item.
pub fn item_metadata(item: &Store) -> Result<CheckpointMetadata> {
    if let Some(tree) = read_legacy(item)? {
        return Ok(legacy_metadata(&tree));
    }
    let tree_metadata = read_tree_metadata(item)?;
    let reader = open_array_reader(item, &tree_metadata)?;
    let shardings = read_shardings(item)?;
    let tree = tree_metadata.tree.as_ref().try_map_with_path(|path, value| {
        let name = param_name(path);
        let mut leaf = LeafMetadata {
            value_type: value.value_type.as_str().to_owned(),
            dtype: None,
            shape: None,
            chunk_shape: None,
            size_bytes: None,
            sharding: shardings.get(&name).cloned(),
        };
        if is_array_like(value.value_type.as_str()) {
            let stored = reader.array(&name)?;
            leaf.size_bytes = Some(num_bytes(&stored.shape, stored.dtype)?);
            leaf.dtype = Some(stored.dtype);
            leaf.shape = Some(stored.shape);
            leaf.chunk_shape = Some(stored.chunk_shape);
        }
        Ok::<_, CkptError>(leaf)
    })?;
    Ok(CheckpointMetadata {
        tree,
        use_ocdbt: tree_metadata.use_ocdbt,
        use_zarr3: tree_metadata.use_zarr3,
        custom_metadata: Some(tree_metadata.custom_metadata.clone()).filter(|v| !v.is_null()),
    })
}

/// The content hash of one leaf, comparable with Orbax-side tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafDigest {
    /// The leaf's key path.
    pub key_path: KeyPath,
    /// Its parameter name.
    pub param_name: String,
    /// The Orbax `value_type`.
    pub value_type: String,
    /// Element type, for arrays and scalars.
    pub dtype: Option<DType>,
    /// Shape, for arrays and scalars.
    pub shape: Option<Vec<u64>>,
    /// Lowercase hex SHA-256 of the leaf's C-order little-endian element
    /// bytes (bool one byte 0/1, bfloat16 and float8 raw bits, complex as
    /// (real, imaginary) pairs), or of a string's UTF-8 bytes.
    pub sha256: String,
}

/// Reads every leaf of an opened checkpoint item and hashes its values.
///
/// Arrays are read whole into memory one at a time; empty containers and
/// `None` have no digest and are left out.
pub fn leaf_digests(item: &Store) -> Result<Vec<LeafDigest>> {
    if let Some(tree) = read_legacy(item)? {
        return Ok(legacy_digests(&tree));
    }
    let tree_metadata = read_tree_metadata(item)?;
    let reader = open_array_reader(item, &tree_metadata)?;
    let tree = &tree_metadata.tree;
    let mut strings = None;
    let mut digests = Vec::new();
    for (path, value) in tree.flatten() {
        let name = param_name(&path);
        let mut digest = LeafDigest {
            key_path: path.clone(),
            param_name: name.clone(),
            value_type: value.value_type.as_str().to_owned(),
            dtype: None,
            shape: None,
            sha256: String::new(),
        };
        if value.value_type.as_str() == STRING_VALUE_TYPE {
            if strings.is_none() {
                strings = Some(read_strings(item)?);
            }
            let text = strings
                .as_ref()
                .and_then(|s| lookup(s, &name))
                .ok_or_else(|| CkptError::InvalidMetadata {
                    path: format!("{}/_strings.json", item.url()),
                    reason: format!("no string for {name}"),
                })?;
            digest.sha256 = hex(&Sha256::digest(text.as_bytes()));
        } else if is_array_like(value.value_type.as_str()) {
            let stored = reader.array(&name)?;
            let len = ckpt_core::num_bytes_usize(&stored.shape, stored.dtype)?;
            let mut bytes = vec![0u8; len];
            reader.read_region(&name, &stored, &IndexBox::full(&stored.shape), &mut bytes)?;
            digest.sha256 = hex(&Sha256::digest(&bytes));
            digest.dtype = Some(stored.dtype);
            digest.shape = Some(stored.shape);
        } else {
            continue;
        }
        digests.push(digest);
    }
    Ok(digests)
}

/// Value type, dtype, shape and bytes of a leaf held in memory.
fn leaf_parts(leaf: &Leaf) -> (&'static str, Option<DType>, Option<Vec<u64>>, Vec<u8>) {
    match leaf {
        Leaf::HostArray(array) => (
            HOST_ARRAY_VALUE_TYPE,
            Some(array.dtype()),
            Some(array.shape().to_vec()),
            array.bytes().to_vec(),
        ),
        Leaf::Scalar(scalar) => (SCALAR_VALUE_TYPE, Some(scalar.dtype()), Some(vec![]), scalar.to_bytes()),
        Leaf::String(text) => (STRING_VALUE_TYPE, None, None, text.as_bytes().to_vec()),
        Leaf::Array(array) => (
            ARRAY_VALUE_TYPE,
            Some(array.spec().dtype),
            Some(array.spec().shape.clone()),
            Vec::new(),
        ),
    }
}

fn legacy_metadata(tree: &PyTree<Leaf>) -> CheckpointMetadata {
    let tree = tree.as_ref().map(|leaf| {
        let (value_type, dtype, shape, bytes) = leaf_parts(leaf);
        LeafMetadata {
            value_type: value_type.to_owned(),
            dtype,
            chunk_shape: None,
            size_bytes: dtype.map(|_| bytes.len() as u64),
            shape,
            sharding: None,
        }
    });
    CheckpointMetadata {
        tree,
        use_ocdbt: None,
        use_zarr3: false,
        custom_metadata: None,
    }
}

fn legacy_digests(tree: &PyTree<Leaf>) -> Vec<LeafDigest> {
    tree.flatten()
        .into_iter()
        .map(|(path, leaf)| {
            let (value_type, dtype, shape, bytes) = leaf_parts(leaf);
            LeafDigest {
                param_name: param_name(&path),
                key_path: path,
                value_type: value_type.to_owned(),
                dtype,
                shape,
                sha256: hex(&Sha256::digest(&bytes)),
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
