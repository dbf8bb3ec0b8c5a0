//! Reads a region of a zarr v2 array whose `.zarray` and stored chunk come
//! from the input, which decodes every chunk the region overlaps.
//!
//! Input: the `.zarray` document and the stored chunk, joined by
//! `ckpt_fuzz::join_two`. The store returns that chunk for every chunk key.

#![no_main]

use std::sync::Arc;

use ckpt_core::{num_bytes_usize, IndexBox};
use ckpt_fuzz::{split_two, OneChunkKvStore};
use ckpt_storage::{ZarrArray, ZarrV2Metadata};
use libfuzzer_sys::fuzz_target;

/// Largest decoded chunk the target reads.
///
/// NOTE: `ZarrArray` allocates and zeroes a chunk's full decoded size, taken
/// from the `.zarray`, before it decompresses the stored bytes. A hostile
/// document with a 1 GiB chunk and a 9-byte zstd frame makes it allocate
/// 1 GiB before the read fails. The target skips such documents so that its
/// runs look for other faults, and that allocation remains a gap in the reader.
const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Chunks read along the first dimensions: 4 along the first, 2 along the
/// second and 1 along each other, so one run decodes at most 8 chunks.
const CHUNKS_PER_DIM: [u64; 2] = [4, 2];

fuzz_target!(|data: &[u8]| {
    let (zarray, chunk) = split_two(data);
    let Ok(array) = ZarrArray::open(Arc::new(OneChunkKvStore::new(zarray, chunk)), "array") else {
        return;
    };
    let metadata = array.metadata();
    if metadata.chunk_num_bytes() > MAX_CHUNK_BYTES {
        return;
    }
    let Some(region) = leading_region(metadata) else {
        return;
    };
    let Ok(len) = num_bytes_usize(&region.shape(), metadata.dtype()) else {
        return;
    };
    let mut destination = vec![0u8; len];
    let _ = array.read_region(&region, &mut destination);
});

/// Returns the region at the array's origin that spans the chunks in [`CHUNKS_PER_DIM`].
fn leading_region(metadata: &ZarrV2Metadata) -> Option<IndexBox> {
    let stop: Vec<u64> = metadata
        .shape()
        .iter()
        .zip(metadata.chunks())
        .enumerate()
        .map(|(dim, (&extent, &chunk))| {
            let chunks = CHUNKS_PER_DIM.get(dim).copied().unwrap_or(1);
            extent.min(chunk.saturating_mul(chunks))
        })
        .collect();
    IndexBox::new(vec![0; stop.len()], stop).ok()
}
