//! The zarr v3 driver against checkpoints written by Python Orbax 0.12.8
//! (TensorStore 0.1.86), and round trips and damaged shards of its own.

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use ckpt_core::{copy_region, num_bytes_usize, BoxIndices, DType, IndexBox};
use ckpt_storage::{
    KvStore, LocalBackend, MissingChunks, ObjectStoreBackend, OcdbtReader, StorageError, Store,
    ZarrV3Array, ZarrV3Compressor, ZarrV3Metadata,
};
use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Plain files: `<param>/zarr.json` and `<param>/c/...`.
const PLAIN: &str = "orbax/c2_pytree_zarr3_no_ocdbt";
/// Every dtype, inside the checkpoint's root OCDBT database.
const DTYPES: &str = "orbax-generated/f_dtypes_zarr3";

/// The compressor Orbax writes.
const ORBAX_ZSTD: Option<ZarrV3Compressor> = Some(ZarrV3Compressor::Zstd {
    level: 3,
    checksum: false,
});

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn checkpoint_store(name: &str) -> Store {
    let backend = LocalBackend::new(fixture(name).join("ckpt")).unwrap();
    Store::new(Arc::new(backend))
}

/// Opens the kvstore that contains a fixture's arrays: the directory itself,
/// or its OCDBT database when it has one.
fn open_checkpoint(name: &str) -> Arc<dyn KvStore> {
    let store = checkpoint_store(name);
    if store.exists("manifest.ocdbt").unwrap() {
        Arc::new(OcdbtReader::open(store).unwrap())
    } else {
        Arc::new(store)
    }
}

fn expected_values(name: &str) -> Value {
    let path = fixture(name).join("expected_values.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Returns the param names of the array leaves of a fixture.
fn array_params(name: &str) -> Vec<String> {
    expected_values(name)["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|leaf| matches!(leaf["kind"].as_str(), Some("array" | "array0d")))
        .map(|leaf| leaf["param_name"].as_str().unwrap().to_owned())
        .collect()
}

fn memory_store() -> Store {
    Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn zarr_json_round_trips(name: &str) -> usize {
    let kv = open_checkpoint(name);
    let mut checked = 0;
    for param in array_params(name) {
        let key = format!("{param}/zarr.json");
        let document = kv.read(&key).unwrap().unwrap();
        let metadata = ZarrV3Metadata::parse(&document, &key).unwrap();
        assert_eq!(
            String::from_utf8(metadata.to_json()).unwrap(),
            String::from_utf8(document.to_vec()).unwrap(),
            "{key} re-encodes differently"
        );
        checked += 1;
    }
    checked
}

#[test]
fn plain_zarr_json_round_trips() {
    assert_eq!(zarr_json_round_trips(PLAIN), 7);
}

#[test]
fn ocdbt_zarr_json_round_trips() {
    assert_eq!(zarr_json_round_trips(DTYPES), 32);
}

fn arrays_match_checksums(name: &str) -> usize {
    let kv = open_checkpoint(name);
    let expected = expected_values(name);
    let mut checked = 0;
    for leaf in expected["leaves"].as_array().unwrap() {
        if !matches!(leaf["kind"].as_str(), Some("array" | "array0d")) {
            continue;
        }
        let param = leaf["param_name"].as_str().unwrap();
        let array = ZarrV3Array::open(Arc::clone(&kv), param).unwrap();
        let metadata = array.metadata();
        assert_eq!(metadata.dtype().name(), leaf["dtype"], "dtype of {param}");
        let shape: Vec<u64> = serde_json::from_value(leaf["shape"].clone()).unwrap();
        assert_eq!(metadata.shape(), shape, "shape of {param}");

        let mut data = vec![0u8; num_bytes_usize(&shape, metadata.dtype()).unwrap()];
        array
            .read_region(&IndexBox::full(&shape), &mut data)
            .unwrap();
        assert_eq!(
            sha256_hex(&data),
            leaf["sha256"].as_str().unwrap(),
            "sha256 of {param}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn plain_arrays_match_checksums() {
    assert_eq!(arrays_match_checksums(PLAIN), 7);
}

#[test]
fn ocdbt_arrays_match_checksums() {
    assert_eq!(arrays_match_checksums(DTYPES), 32);
}

#[test]
fn kernel_block_matches_values() {
    let expected = expected_values(PLAIN);
    let kernel = expected["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|leaf| leaf["param_name"] == "params.dense.kernel")
        .unwrap();
    // All 128 values of the 16x8 kernel, in C order.
    let all: Vec<f32> = serde_json::from_value(kernel["values"].clone()).unwrap();
    assert_eq!(all.len(), 128);

    let array = ZarrV3Array::open(open_checkpoint(PLAIN), "params.dense.kernel").unwrap();
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

/// Re-encodes every chunk of a fixture and compares it with the stored
/// shard. Returns the number of chunks compared and the keys of those that differ.
fn reencode_chunks(name: &str) -> (usize, Vec<String>) {
    let kv = open_checkpoint(name);
    let mut compared = 0;
    let mut different = Vec::new();
    for param in array_params(name) {
        let array = ZarrV3Array::open(Arc::clone(&kv), &param).unwrap();
        let copy_store = memory_store();
        let copy = ZarrV3Array::create(
            Arc::new(copy_store.clone()),
            &param,
            array.metadata().clone(),
        )
        .unwrap();
        let grid = array.metadata().chunk_grid().grid_shape();
        for index in BoxIndices::new(&IndexBox::full(&grid)) {
            let key = array.chunk_key(&index).unwrap();
            copy.write_chunk(&index, &array.read_chunk(&index).unwrap())
                .unwrap();
            let stored = kv.read(&key).unwrap().unwrap();
            if copy_store.get_required(&key).unwrap() != stored {
                different.push(key);
            }
            compared += 1;
        }
    }
    (compared, different)
}

#[test]
fn plain_shards_match_tensorstore() {
    // zstd level 3 without a checksum, as the zarr.json files specify, gives
    // the bytes TensorStore wrote, index and CRC included.
    let (compared, different) = reencode_chunks(PLAIN);
    // Five arrays of one chunk, and the kernel and the bias of eight each.
    assert_eq!(compared, 5 + 8 + 8);
    assert_eq!(different, Vec::<String>::new());
}

#[test]
fn ocdbt_shards_match_tensorstore() {
    let (compared, different) = reencode_chunks(DTYPES);
    // 18 numpy arrays of one chunk and 14 jax arrays of 8 chunks each.
    assert_eq!(compared, 18 + 14 * 8);
    assert_eq!(different, Vec::<String>::new());
}

#[test]
fn scalar_shard_is_key_c() {
    let kv = open_checkpoint(PLAIN);
    let array = ZarrV3Array::open(Arc::clone(&kv), "lr").unwrap();
    assert_eq!(array.chunk_key(&[]).unwrap(), "lr/c");
    let mut value = [0u8; 8];
    array.read_region(&IndexBox::full(&[]), &mut value).unwrap();
    assert_eq!(f64::from_le_bytes(value), 0.125);
}

// ---------------------------------------------------------------------------
// Round trips.

/// Distinct, non-zero bytes, so misplaced or missing copies show.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8 + 1).collect()
}

/// Returns the bytes of `region`, cut out of a whole array of `shape`.
fn cut(whole: &[u8], shape: &[u64], region: &IndexBox, item_size: usize) -> Vec<u8> {
    let mut out = vec![0u8; region.num_elements().unwrap() as usize * item_size];
    copy_region(
        whole,
        &IndexBox::full(shape),
        &mut out,
        region,
        region,
        item_size,
    )
    .unwrap();
    out
}

/// Creates the array `a` in a fresh memory store.
fn new_array(
    shape: &[u64],
    chunks: &[u64],
    dtype: DType,
    compressor: Option<ZarrV3Compressor>,
) -> (Store, ZarrV3Array) {
    let store = memory_store();
    let metadata = ZarrV3Metadata::new(shape.to_vec(), chunks.to_vec(), dtype, compressor).unwrap();
    let array = ZarrV3Array::create(Arc::new(store.clone()), "a", metadata).unwrap();
    (store, array)
}

/// Writes the whole array from [`pattern`] and returns the bytes written.
fn write_whole(array: &ZarrV3Array) -> Vec<u8> {
    let shape = array.metadata().shape().to_vec();
    let data = pattern(num_bytes_usize(&shape, array.metadata().dtype()).unwrap());
    array.write_region(&IndexBox::full(&shape), &data).unwrap();
    data
}

/// Generates an array shape, a chunk shape and a region inside the array, of rank 0 to 3.
fn layout() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, IndexBox)> {
    prop::collection::vec((0u64..8, 1u64..5, 0u64..8, 0u64..8), 0..4).prop_map(|dims| {
        let mut shape = Vec::new();
        let mut chunks = Vec::new();
        let (mut start, mut stop) = (Vec::new(), Vec::new());
        for (extent, chunk, a, b) in dims {
            shape.push(extent);
            chunks.push(chunk);
            let (a, b) = (a.min(extent), b.min(extent));
            start.push(a.min(b));
            stop.push(a.max(b));
        }
        let region = IndexBox::new(start, stop).unwrap();
        (shape, chunks, region)
    })
}

fn dtypes() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![
        DType::Bool,
        DType::Int4,
        DType::UInt8,
        DType::BFloat16,
        DType::Float8E5M2,
        DType::Int32,
        DType::Float64,
        DType::Complex128,
    ])
}

fn compressors() -> impl Strategy<Value = Option<ZarrV3Compressor>> {
    prop_oneof![
        Just(None),
        Just(ORBAX_ZSTD),
        Just(Some(ZarrV3Compressor::Zstd {
            level: 1,
            checksum: true
        })),
    ]
}

proptest! {
    #[test]
    fn round_trip((shape, chunks, region) in layout(), dtype in dtypes(), compressor in compressors()) {
        let (store, array) = new_array(&shape, &chunks, dtype, compressor);
        let data = write_whole(&array);
        let item_size = dtype.item_size();

        let reopened = ZarrV3Array::open(Arc::new(store), "a").unwrap();
        prop_assert_eq!(reopened.metadata(), array.metadata());

        let mut whole = vec![0u8; data.len()];
        reopened.read_region(&IndexBox::full(&shape), &mut whole).unwrap();
        prop_assert_eq!(&whole, &data);

        let mut part = vec![0u8; region.num_elements().unwrap() as usize * item_size];
        reopened.read_region(&region, &mut part).unwrap();
        prop_assert_eq!(part, cut(&data, &shape, &region, item_size));
    }
}

#[test]
fn uneven_edges_round_trip() {
    let (store, array) = new_array(&[5, 7], &[2, 3], DType::Float32, ORBAX_ZSTD);
    let data = write_whole(&array);
    let mut read = vec![0u8; data.len()];
    array
        .read_region(&IndexBox::full(&[5, 7]), &mut read)
        .unwrap();
    assert_eq!(read, data);
    assert_eq!(store.list().unwrap().len(), 1 + 3 * 3);
    assert!(store.exists("a/c/2/2").unwrap());
}

// ---------------------------------------------------------------------------
// Damaged shards and invalid metadata.

/// Writes a 4-element uint32 array `a` of one chunk and returns the store and the stored shard.
fn one_chunk_array(compressor: Option<ZarrV3Compressor>) -> (Store, ZarrV3Array, Vec<u8>) {
    let (store, array) = new_array(&[4], &[4], DType::UInt32, compressor);
    write_whole(&array);
    let shard = store.get_required("a/c/0").unwrap().to_vec();
    (store, array, shard)
}

/// Returns the reason of a [`StorageError::Corrupt`] for the shard `a/c/0` of a memory store.
fn corrupt_reason(result: Result<Vec<u8>, StorageError>) -> String {
    match result {
        Err(StorageError::Corrupt { key, reason }) => {
            assert_eq!(key, "memory:///a/c/0");
            reason
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Replaces the index at the end of `shard` with `offset` and `length` and a valid CRC-32C.
fn set_index(shard: &mut [u8], offset: u64, length: u64) {
    let index_start = shard.len() - 20;
    let index = &mut shard[index_start..];
    index[..8].copy_from_slice(&offset.to_le_bytes());
    index[8..16].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c(&index[..16]);
    index[16..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn flipped_crc_is_corrupt() {
    let (store, array, mut shard) = one_chunk_array(ORBAX_ZSTD);
    let length_byte = shard.len() - 12;
    shard[length_byte] ^= 0x40;
    store.put("a/c/0", Bytes::from(shard)).unwrap();
    let reason = corrupt_reason(array.read_chunk(&[0]));
    assert!(reason.contains("CRC-32C"), "{reason}");
}

#[test]
fn truncated_shard_is_corrupt() {
    let (store, array, shard) = one_chunk_array(ORBAX_ZSTD);
    store
        .put("a/c/0", Bytes::copy_from_slice(&shard[..shard.len() - 3]))
        .unwrap();
    // The last 20 bytes now end inside the index, so the CRC no longer matches.
    let reason = corrupt_reason(array.read_chunk(&[0]));
    assert!(reason.contains("CRC-32C"), "{reason}");

    store
        .put("a/c/0", Bytes::copy_from_slice(&shard[..12]))
        .unwrap();
    let reason = corrupt_reason(array.read_chunk(&[0]));
    assert!(reason.contains("fewer than the 20 bytes"), "{reason}");
}

#[test]
fn index_past_end_is_corrupt() {
    let (store, array, mut shard) = one_chunk_array(None);
    set_index(&mut shard, 4, 16);
    store.put("a/c/0", Bytes::from(shard)).unwrap();
    let reason = corrupt_reason(array.read_chunk(&[0]));
    assert!(reason.contains("past the 16 bytes"), "{reason}");
}

#[test]
fn wrong_raw_length_is_corrupt() {
    let (store, array, mut shard) = one_chunk_array(None);
    set_index(&mut shard, 0, 12);
    store.put("a/c/0", Bytes::from(shard)).unwrap();
    let reason = corrupt_reason(array.read_chunk(&[0]));
    assert!(reason.contains("has 12 bytes, expected 16"), "{reason}");
}

#[test]
fn missing_inner_chunk_is_not_found() {
    let (store, array, mut shard) = one_chunk_array(ORBAX_ZSTD);
    set_index(&mut shard, u64::MAX, u64::MAX);
    store.put("a/c/0", Bytes::from(shard)).unwrap();

    let err = array.read_chunk(&[0]).unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound { ref key, .. } if key == "a/c/0"),
        "{err}"
    );
    let mut dst = [0u8; 16];
    let err = array
        .read_region(&IndexBox::full(&[4]), &mut dst)
        .unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
}

#[test]
fn missing_inner_chunk_fills_zeros() {
    let (store, array, mut shard) = one_chunk_array(ORBAX_ZSTD);
    set_index(&mut shard, u64::MAX, u64::MAX);
    store.put("a/c/0", Bytes::from(shard)).unwrap();

    let array = array.with_missing_chunks(MissingChunks::Fill);
    assert_eq!(array.read_chunk(&[0]).unwrap(), [0u8; 16]);
    let mut dst = [9u8; 16];
    array.read_region(&IndexBox::full(&[4]), &mut dst).unwrap();
    assert_eq!(dst, [0u8; 16]);
}

#[test]
fn absent_shard_follows_policy() {
    let (_store, array) = new_array(&[4], &[2], DType::UInt8, ORBAX_ZSTD);
    array.write_chunk(&[0], &[1, 2]).unwrap();
    let err = array.read_chunk(&[1]).unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound { ref key, .. } if key == "a/c/1"),
        "{err}"
    );

    let array = array.with_missing_chunks(MissingChunks::Fill);
    let mut dst = [9u8; 4];
    array.read_region(&IndexBox::full(&[4]), &mut dst).unwrap();
    assert_eq!(dst, [1, 2, 0, 0]);
}

/// Stores the Orbax document of a float32 [4] array with one field replaced,
/// opens it, and returns the reason of the error.
fn open_rejection(pointer: &str, value: &str) -> String {
    let metadata = ZarrV3Metadata::new(vec![4], vec![4], DType::Float32, ORBAX_ZSTD).unwrap();
    let mut document: Value = serde_json::from_slice(&metadata.to_json()).unwrap();
    *document.pointer_mut(pointer).unwrap() = serde_json::from_str(value).unwrap();
    let store = memory_store();
    store
        .put(
            "a/zarr.json",
            Bytes::from(serde_json::to_vec(&document).unwrap()),
        )
        .unwrap();
    match ZarrV3Array::open(Arc::new(store), "a") {
        Err(StorageError::InvalidMetadata { key, reason }) => {
            assert_eq!(key, "memory:///a/zarr.json");
            reason
        }
        other => panic!("expected InvalidMetadata, got {other:?}"),
    }
}

#[test]
fn bad_codec_list_is_rejected() {
    let reason = open_rejection("/codecs", r#"[{"name":"bytes"}]"#);
    assert!(
        reason.contains("single \"sharding_indexed\" codec"),
        "{reason}"
    );
}

#[test]
fn wrong_data_type_is_rejected() {
    let reason = open_rejection("/data_type", r#""float128""#);
    assert!(
        reason.contains("unsupported data_type \"float128\""),
        "{reason}"
    );
}

#[test]
fn bad_fill_value_is_rejected() {
    let reason = open_rejection("/fill_value", "true");
    assert!(reason.contains("not a valid float32 value"), "{reason}");
}

#[test]
fn open_missing_is_not_found() {
    let err = ZarrV3Array::open(Arc::new(memory_store()), "a").unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound { ref key, .. } if key == "a/zarr.json"),
        "{err}"
    );
}
