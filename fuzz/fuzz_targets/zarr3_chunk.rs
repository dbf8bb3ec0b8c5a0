//! Reads a region of a zarr v3 array whose `zarr.json` and stored shard come
//! from the input, which decodes every chunk the region overlaps.
//!
//! Input: the `zarr.json` document and the stored shard, joined by
//! `ckpt_fuzz::join_two`. The store returns that shard for every chunk key.

#![no_main]

use std::sync::Arc;

use ckpt_core::num_bytes_usize;
use ckpt_fuzz::{region_to_read, split_two, OneChunkKvStore};
use ckpt_storage::ZarrV3Array;
use libfuzzer_sys::fuzz_target;

/// Largest declared chunk the target reads.
///
/// `ZarrV3Array` allocates at most 16 MiB before decompressed data arrives,
/// so larger chunks test that growth. The cap keeps a frame that really
/// decompresses to a large chunk, the expected cost of a large array, from
/// counting as a huge allocation.
const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Largest region the target reads, in bytes.
const MAX_REGION_BYTES: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let (zarr_json, shard) = split_two(data);
    let Ok(array) = ZarrV3Array::open(Arc::new(OneChunkKvStore::new(zarr_json, shard)), "array")
    else {
        return;
    };
    let metadata = array.metadata();
    if metadata.chunk_num_bytes() > MAX_CHUNK_BYTES {
        return;
    }
    let dtype = metadata.dtype();
    let Some(region) = region_to_read(metadata.shape(), metadata.chunks(), dtype, MAX_REGION_BYTES)
    else {
        return;
    };
    let Ok(len) = num_bytes_usize(&region.shape(), dtype) else {
        return;
    };
    let mut destination = vec![0u8; len];
    let _ = array.read_region(&region, &mut destination);
});
