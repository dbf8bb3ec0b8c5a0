//! The zarr v2 driver against checkpoints written by Python Orbax 0.12.8.

use std::{path::PathBuf, sync::Arc};

use ckpt_core::{num_bytes_usize, BoxIndices, IndexBox};
use ckpt_storage::{KvStore, LocalBackend, Store, ZarrArray, ZarrV2Metadata};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/orbax")
        .join(name)
}

fn open_checkpoint(name: &str) -> Arc<dyn KvStore> {
    let backend = LocalBackend::new(fixture(name).join("ckpt")).unwrap();
    Arc::new(Store::new(Arc::new(backend)))
}

fn expected_values(name: &str) -> Value {
    let path = fixture(name).join("expected_values.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Returns the `.zarray` documents of fixture b, one plain file per array.
fn zarray_files() -> Vec<(String, Vec<u8>)> {
    let root = fixture("b_pytree_zarr2_no_ocdbt/ckpt");
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path().join(".zarray");
        if path.is_file() {
            documents.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    documents.sort();
    documents
}

/// Returns the `.zarray` documents of fixture j, which are values inside its root OCDBT database.
///
/// The database has a single B+tree leaf node that stores every value
/// inline. Its file is an OCDBT envelope: a 4-byte magic, an 8-byte length,
/// one byte each for the format version and the compression, the zstd-compressed
/// body and a 4-byte CRC-32C. Each document is found in the decompressed body
/// by its first and last field.
fn zarray_values_in_ocdbt() -> Vec<String> {
    let dir = fixture("j_uncompressed_single_replica/ckpt/d");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "expected one data file in {}",
        dir.display()
    );
    let node = std::fs::read(files.remove(0)).unwrap();
    assert_eq!(node[..4], [0x0c, 0xdb, 0x20, 0xde], "not a B+tree node");
    assert_eq!(node[13], 1, "body is not zstd-compressed");
    let body = zstd::decode_all(&node[14..node.len() - 4]).unwrap();
    let body = String::from_utf8_lossy(&body);

    let (first, last) = ("{\"chunks\":", "\"zarr_format\":2}");
    let mut documents = Vec::new();
    let mut rest = &body[..];
    while let Some(start) = rest.find(first) {
        let end = start + rest[start..].find(last).unwrap() + last.len();
        documents.push(rest[start..end].to_owned());
        rest = &rest[end..];
    }
    documents
}

#[test]
fn plain_zarrays_round_trip() {
    let documents = zarray_files();
    assert_eq!(documents.len(), 7);
    for (path, document) in documents {
        let metadata = ZarrV2Metadata::parse(&document, &path).unwrap();
        assert_eq!(
            metadata.to_json(),
            document,
            "{path} re-encodes differently"
        );
    }
}

#[test]
fn ocdbt_zarrays_round_trip() {
    let documents = zarray_values_in_ocdbt();
    assert_eq!(documents.len(), 7);
    for document in documents {
        let metadata = ZarrV2Metadata::parse(document.as_bytes(), "j").unwrap();
        assert_eq!(metadata.compressor(), None);
        assert_eq!(String::from_utf8(metadata.to_json()).unwrap(), document);
    }
}

#[test]
fn arrays_match_expected_checksums() {
    let kv = open_checkpoint("b_pytree_zarr2_no_ocdbt");
    let expected = expected_values("b_pytree_zarr2_no_ocdbt");

    let mut checked = 0;
    for leaf in expected["leaves"].as_array().unwrap() {
        if !matches!(leaf["kind"].as_str(), Some("array" | "array0d")) {
            continue;
        }
        let name = leaf["param_name"].as_str().unwrap();
        let array = ZarrArray::open(Arc::clone(&kv), name).unwrap();
        let metadata = array.metadata();
        assert_eq!(metadata.dtype().name(), leaf["dtype"], "dtype of {name}");
        let shape: Vec<u64> = serde_json::from_value(leaf["shape"].clone()).unwrap();
        assert_eq!(metadata.shape(), shape, "shape of {name}");

        let mut data = vec![0u8; num_bytes_usize(&shape, metadata.dtype()).unwrap()];
        array
            .read_region(&IndexBox::full(&shape), &mut data)
            .unwrap();
        let digest: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest, leaf["sha256"].as_str().unwrap(), "sha256 of {name}");
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn kernel_block_matches_values() {
    let expected_values = expected_values("b_pytree_zarr2_no_ocdbt");
    let kernel = expected_values["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|leaf| leaf["param_name"] == "params.dense.kernel")
        .unwrap();
    // All 128 values of the 16x8 kernel, in C order.
    let all: Vec<f32> = serde_json::from_value(kernel["values"].clone()).unwrap();
    assert_eq!(all.len(), 128);

    let array = ZarrArray::open(
        open_checkpoint("b_pytree_zarr2_no_ocdbt"),
        "params.dense.kernel",
    )
    .unwrap();
    let region = IndexBox::new(vec![3, 2], vec![6, 7]).unwrap();
    let mut data = vec![0u8; 3 * 5 * 4];
    array.read_region(&region, &mut data).unwrap();
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let expected: Vec<f32> = (3..6)
        .flat_map(|row| (2..7).map(move |col| row * 8 + col))
        .map(|index| all[index])
        .collect();
    assert_eq!(values, expected);
}

#[test]
fn chunk_encoding_matches_tensorstore() {
    // Level-1 zstd frames from this crate are byte-identical to those TensorStore wrote.
    let kv = open_checkpoint("b_pytree_zarr2_no_ocdbt");
    let mut compared = 0;
    for (path, _) in zarray_files() {
        let name = PathBuf::from(path);
        let name = name
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let array = ZarrArray::open(Arc::clone(&kv), name).unwrap();
        let grid = array.metadata().chunk_grid().grid_shape();
        for index in BoxIndices::new(&IndexBox::full(&grid)) {
            let chunk = array.read_chunk(&index).unwrap();
            let stored = kv.read(&array.chunk_key(&index).unwrap()).unwrap().unwrap();
            assert_eq!(
                zstd::bulk::compress(&chunk, 1).unwrap(),
                stored,
                "chunk {index:?} of {name}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 1 + 1 + 1 + 1 + 8 + 8 + 1);
}
