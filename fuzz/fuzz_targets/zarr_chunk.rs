//! Reads a region of a zarr v2 array whose `.zarray` and stored chunk come
//! from the input, which decodes every chunk the region overlaps.
//!
//! Input: the `.zarray` document and the stored chunk, joined by
//! `ckpt_fuzz::join_two`. The store returns that chunk for every chunk key.

#![no_main]

use std::sync::Arc;

use ckpt_core::num_bytes_usize;
use ckpt_fuzz::{region_to_read, split_two, OneChunkKvStore};
use ckpt_storage::ZarrArray;
use libfuzzer_sys::fuzz_target;

/// Largest decoded chunk the target reads.
///
/// NOTE: `ZarrArray` allocates and zeroes a chunk's full decoded size, taken
/// from the `.zarray`, before it decompresses the stored bytes. A hostile
/// document with a 1 GiB chunk and a 9-byte zstd frame makes it allocate
/// 1 GiB before the read fails. The target skips such documents so that its
/// runs look for other faults, and that allocation remains a gap in the reader.
const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Largest region the target reads, in bytes.
const MAX_REGION_BYTES: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let (zarray, chunk) = split_two(data);
    let Ok(array) = ZarrArray::open(Arc::new(OneChunkKvStore::new(zarray, chunk)), "array") else {
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
