use ckpt_core::{num_bytes, num_bytes_usize, BoxIndices, DType, IndexBox};
use ckpt_device::Sharding;
use ckpt_pytree::{param_name, KeyPath, PyTree};
use ckpt_storage::{open_committed, ArrayReader, Store, StoredArray};
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::{
    checkpointer::{open_array_reader, read_shardings, read_tree_metadata},
    legacy::read_legacy,
    handlers::{
        string::{lookup, read_strings},
        ARRAY_VALUE_TYPE, HOST_ARRAY_VALUE_TYPE, SCALAR_VALUE_TYPE, STRING_VALUE_TYPE,
    },
    CkptError, Leaf, Result,
};

/// The contents of a checkpoint, read without its array data and without a
/// runtime, so reading it works whatever devices this process has.
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
    /// The saved sharding decoded: mesh shape, axis names, partition spec
    /// and device ids (see [`Sharding::devices`]). `None` when there is no
    /// `_sharding` entry or it cannot be decoded; the raw JSON above stays.
    /// The devices need not exist in this runtime.
    pub saved_sharding: Option<Sharding>,
}

impl CheckpointMetadata {
    /// Returns the bytes of all leaves' elements in memory, the sum of
    /// [`LeafMetadata::size_bytes`], or `None` if the sum overflows `u64`.
    pub fn size_bytes(&self) -> Option<u64> {
        self.tree
            .leaves()
            .iter()
            .try_fold(0u64, |total, leaf| total.checked_add(leaf.size_bytes.unwrap_or(0)))
    }
}

/// Decodes a `_sharding` entry for metadata. An entry that does not decode
/// is logged and left as raw JSON, so that inspecting a checkpoint does not
/// fail on a sharding kind this version cannot read.
fn decode_sharding(param_name: &str, json: &str) -> Option<Sharding> {
    match Sharding::from_orbax_json(json) {
        Ok(sharding) => Some(sharding),
        Err(error) => {
            warn!(param = param_name, %error, "cannot decode the saved sharding; keeping its JSON only");
            None
        }
    }
}

fn is_array_like(value_type: &str) -> bool {
    [ARRAY_VALUE_TYPE, HOST_ARRAY_VALUE_TYPE, SCALAR_VALUE_TYPE].contains(&value_type)
}

/// Reads the tree structure, dtypes, shapes, sizes, saved shardings and
/// custom metadata of the checkpoint `name` under `parent`, without reading
/// array data. It needs no runtime, so the devices the checkpoint was saved
/// on need not exist here.
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
        let sharding = shardings.get(&name).cloned();
        let mut leaf = LeafMetadata {
            value_type: value.value_type.as_str().to_owned(),
            dtype: None,
            shape: None,
            chunk_shape: None,
            size_bytes: None,
            saved_sharding: sharding.as_deref().and_then(|json| decode_sharding(&name, json)),
            sharding,
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
/// Arrays are read one at a time, in pieces of at most 64 MiB. Empty
/// containers and `None` have no digest and are left out.
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
            digest.sha256 = array_sha256(&reader, &name, &stored, DIGEST_READ_BYTES)?;
            digest.dtype = Some(stored.dtype);
            digest.shape = Some(stored.shape);
        } else {
            continue;
        }
        digests.push(digest);
    }
    Ok(digests)
}

/// Largest part of an array that [`leaf_digests`] reads at once, so that a
/// `.zarray` claiming a huge shape cannot make it allocate that size.
const DIGEST_READ_BYTES: u64 = 64 << 20;

/// Hashes the C-order bytes of a stored array, reading consecutive boxes of
/// at most `max_read_bytes` (or one element, if larger).
fn array_sha256(
    reader: &ArrayReader,
    name: &str,
    stored: &StoredArray,
    max_read_bytes: u64,
) -> Result<String> {
    let shape = &stored.shape;
    num_bytes(shape, stored.dtype)?;

    // Trailing dimensions whose product fits in one read are read whole,
    // and the dimension before them is cut into runs of `run` indices.
    let mut split = shape.len();
    let mut tail_bytes = stored.dtype.item_size() as u64;
    while split > 0 && tail_bytes.saturating_mul(shape[split - 1]) <= max_read_bytes {
        split -= 1;
        tail_bytes *= shape[split];
    }

    let mut hasher = Sha256::new();
    let mut read = |region: IndexBox| -> Result<()> {
        let mut bytes = vec![0u8; num_bytes_usize(&region.shape(), stored.dtype)?];
        reader.read_region(name, stored, &region, &mut bytes)?;
        hasher.update(&bytes);
        Ok(())
    };
    let Some(dim) = split.checked_sub(1) else {
        read(IndexBox::full(shape))?;
        return Ok(hex(&hasher.finalize()));
    };

    let run = (max_read_bytes / tail_bytes).max(1);
    for prefix in BoxIndices::new(&IndexBox::full(&shape[..dim])) {
        let mut start = 0;
        while start < shape[dim] {
            let stop = start.saturating_add(run).min(shape[dim]);
            let mut lower = prefix.clone();
            lower.push(start);
            lower.resize(shape.len(), 0);
            let mut upper: Vec<u64> = prefix.iter().map(|index| index + 1).collect();
            upper.push(stop);
            upper.extend_from_slice(&shape[split..]);
            read(IndexBox::new(lower, upper)?)?;
            start = stop;
        }
    }
    Ok(hex(&hasher.finalize()))
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
            saved_sharding: None,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ckpt_storage::{ArrayFormat, ArrayWriter, ObjectStoreBackend};

    use super::*;

    /// Writes a plain zarr v2 array of `shape` and returns a reader of it
    /// with its bytes.
    fn stored_array(shape: &[u64], chunks: &[u64]) -> (ArrayReader, StoredArray, Vec<u8>) {
        let item = Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()));
        let mut format = ArrayFormat::default();
        format.use_ocdbt = false;
        let stored = StoredArray {
            shape: shape.to_vec(),
            dtype: DType::Int16,
            chunk_shape: chunks.to_vec(),
        };
        let len = num_bytes_usize(shape, DType::Int16).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let writer = ArrayWriter::open(&item, &format, "0").unwrap();
        writer.create_array("a", &stored).unwrap();
        writer.write_region("a", &stored, &IndexBox::full(shape), &bytes).unwrap();
        writer.finish().unwrap();
        (ArrayReader::open(&item, Some(false)).unwrap(), stored, bytes)
    }

    #[test]
    fn pieces_hash_like_whole() {
        let cases: [(&[u64], &[u64]); 4] = [
            (&[5, 3, 4], &[2, 3, 3]),
            (&[7], &[3]),
            (&[], &[]),
            (&[1, 9], &[1, 4]),
        ];
        for (shape, chunks) in cases {
            let (reader, stored, bytes) = stored_array(shape, chunks);
            let whole = hex(&Sha256::digest(&bytes));
            for max_read_bytes in [1, 2, 7, 8, 24, 25, 1 << 20] {
                let pieces = array_sha256(&reader, "a", &stored, max_read_bytes).unwrap();
                assert_eq!(pieces, whole, "shape {shape:?}, {max_read_bytes} bytes per read");
            }
        }
    }
}
