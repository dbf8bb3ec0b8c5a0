use std::sync::Arc;

use bytes::Bytes;
use ckpt_core::{copy_region, num_bytes, CoreError, IndexBox};

use super::codec::{allocate_chunk, decode_chunk, decode_chunk_into, encode_chunk};
use crate::{store::join_url, validate_key, KvStore, Result, StorageError, ZarrV2Metadata};

/// Name of the metadata document inside a zarr v2 array's directory.
const ZARRAY_KEY: &str = ".zarray";

/// The policy for reading a chunk that is absent from the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingChunks {
    /// Fail with [`StorageError::NotFound`] naming the chunk's key. Orbax
    /// writes every chunk, so a missing one means a damaged checkpoint.
    #[default]
    Error,
    /// Read the chunk as zeros, the meaning of the `null` fill value in zarr v2.
    Fill,
}

/// A zarr v2 array in a kvstore: its `.zarray` and one object per chunk.
///
/// The array lives under a key prefix, the param name in an Orbax
/// checkpoint (`params.dense.kernel/.zarray`, `params.dense.kernel/0.1`).
/// Methods take `&self`, so threads can read and write different chunks
/// at the same time through one shared array.
#[derive(Clone, Debug)]
pub struct ZarrArray {
    kv: Arc<dyn KvStore>,
    prefix: String,
    metadata: ZarrV2Metadata,
    missing_chunks: MissingChunks,
}

impl ZarrArray {
    /// Creates the array at `prefix` by writing its `.zarray`, and returns it.
    ///
    /// An empty prefix puts the array at the root of the kvstore. Existing
    /// chunks under the prefix are neither checked nor removed.
    pub fn create(
        kv: Arc<dyn KvStore>,
        prefix: &str,
        metadata: ZarrV2Metadata,
    ) -> Result<ZarrArray> {
        let array = ZarrArray::new(kv, prefix, metadata)?;
        let key = array.key(ZARRAY_KEY);
        array
            .kv
            .write(&key, Bytes::from(array.metadata.to_json()))?;
        Ok(array)
    }

    /// Opens the array at `prefix` by reading and validating its `.zarray`.
    pub fn open(kv: Arc<dyn KvStore>, prefix: &str) -> Result<ZarrArray> {
        check_prefix(prefix)?;
        let key = join_key(prefix, ZARRAY_KEY);
        // NOTE: `KvStore` has no size query, so the document is read whole
        // before `parse` checks its size against the cap.
        let document = kv.read(&key)?.ok_or_else(|| StorageError::NotFound {
            store: kv.url(),
            key: key.clone(),
        })?;
        let location = join_url(&kv.url(), &key);
        let metadata = ZarrV2Metadata::parse(&document, &location)?;
        ZarrArray::new(kv, prefix, metadata)
    }

    /// Returns the array at `prefix` with known metadata, without reading or
    /// writing `.zarray`: for writers whose `.zarray` another writer creates.
    pub fn with_metadata(
        kv: Arc<dyn KvStore>,
        prefix: &str,
        metadata: ZarrV2Metadata,
    ) -> Result<ZarrArray> {
        ZarrArray::new(kv, prefix, metadata)
    }

    fn new(kv: Arc<dyn KvStore>, prefix: &str, metadata: ZarrV2Metadata) -> Result<ZarrArray> {
        check_prefix(prefix)?;
        Ok(ZarrArray {
            kv,
            prefix: prefix.trim_end_matches('/').to_owned(),
            metadata,
            missing_chunks: MissingChunks::default(),
        })
    }

    /// Sets what reading an absent chunk does; the default is [`MissingChunks::Error`].
    pub fn with_missing_chunks(mut self, missing_chunks: MissingChunks) -> ZarrArray {
        self.missing_chunks = missing_chunks;
        self
    }

    /// Returns the array's metadata.
    pub fn metadata(&self) -> &ZarrV2Metadata {
        &self.metadata
    }

    /// Returns the key prefix of the array inside its kvstore, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns the kvstore key of the chunk at `chunk_index`, checking that the chunk exists in the grid.
    pub fn chunk_key(&self, chunk_index: &[u64]) -> Result<String> {
        self.check_chunk_index(chunk_index)?;
        Ok(self.key(&ZarrV2Metadata::chunk_key(chunk_index)))
    }

    /// Writes one chunk, given as the bytes of its full chunk shape in C order.
    ///
    /// Edge chunks too have the full chunk shape: the part past the array's
    /// end is stored but never read back.
    pub fn write_chunk(&self, chunk_index: &[u64], chunk: &[u8]) -> Result<()> {
        let key = self.chunk_key(chunk_index)?;
        let expected = self.metadata.chunk_num_bytes();
        if chunk.len() != expected {
            return Err(CoreError::BufferSize {
                expected: expected as u64,
                found: chunk.len() as u64,
            }
            .into());
        }
        let encoded = encode_chunk(self.metadata.compressor(), chunk, &self.kv.url(), &key)?;
        self.kv.write(&key, encoded)
    }

    /// Writes the chunks that make up `region`, given as the bytes of the region in C order.
    ///
    /// The region must be aligned to the chunk grid: each start a multiple
    /// of the chunk extent, each stop a multiple of it or the array's
    /// extent. Parts of edge chunks past the array's end are written as zeros.
    pub fn write_region(&self, region: &IndexBox, data: &[u8]) -> Result<()> {
        self.check_region(region, data.len())?;
        self.check_aligned(region)?;

        let grid = self.metadata.chunk_grid();
        let item_size = self.metadata.dtype().item_size();
        for chunk_index in grid.chunks_overlapping(region) {
            let chunk_box = grid.chunk_box(&chunk_index)?;
            if &chunk_box == region {
                self.write_chunk(&chunk_index, data)?;
                continue;
            }
            let key = self.chunk_key(&chunk_index)?;
            let mut chunk = allocate_chunk(self.metadata.chunk_num_bytes(), &self.kv.url(), &key)?;
            if let Some(overlap) = chunk_box.intersect(region) {
                copy_region(data, region, &mut chunk, &chunk_box, &overlap, item_size)?;
            }
            self.write_chunk(&chunk_index, &chunk)?;
        }
        Ok(())
    }

    /// Reads and decodes one chunk: its full chunk shape in C order.
    ///
    /// An absent chunk is [`StorageError::NotFound`], or zeros with
    /// [`MissingChunks::Fill`]. A chunk whose decoded size differs from the
    /// chunk shape's is [`StorageError::Corrupt`].
    pub fn read_chunk(&self, chunk_index: &[u64]) -> Result<Vec<u8>> {
        let key = self.chunk_key(chunk_index)?;
        let expected = self.metadata.chunk_num_bytes();
        match self.kv.read(&key)? {
            Some(stored) => decode_chunk(
                self.metadata.compressor(),
                stored,
                expected,
                &self.kv.url(),
                &key,
            ),
            None if self.missing_chunks == MissingChunks::Fill => {
                allocate_chunk(expected, &self.kv.url(), &key)
            }
            None => Err(StorageError::NotFound {
                store: self.kv.url(),
                key,
            }),
        }
    }

    /// Reads and decodes one chunk into `dst`, whose length is exactly one
    /// chunk, without allocating a chunk buffer of its own.
    ///
    /// Fails as [`ZarrArray::read_chunk`] does, and with
    /// [`CoreError::BufferSize`] when `dst` is not one chunk long.
    pub fn read_chunk_into(&self, chunk_index: &[u64], dst: &mut [u8]) -> Result<()> {
        let key = self.chunk_key(chunk_index)?;
        let expected = self.metadata.chunk_num_bytes();
        if dst.len() != expected {
            return Err(CoreError::BufferSize {
                expected: expected as u64,
                found: dst.len() as u64,
            }
            .into());
        }
        match self.kv.read(&key)? {
            Some(stored) => {
                decode_chunk_into(self.metadata.compressor(), stored, dst, &self.kv.url(), &key)
            }
            None if self.missing_chunks == MissingChunks::Fill => {
                dst.fill(0);
                Ok(())
            }
            None => Err(StorageError::NotFound {
                store: self.kv.url(),
                key,
            }),
        }
    }

    /// Reads `region` of the array into `dst`, as the bytes of the region in C order.
    ///
    /// Reads every chunk that overlaps the region, one after another, and
    /// copies the overlap of each.
    pub fn read_region(&self, region: &IndexBox, dst: &mut [u8]) -> Result<()> {
        self.check_region(region, dst.len())?;

        let grid = self.metadata.chunk_grid();
        let item_size = self.metadata.dtype().item_size();
        for chunk_index in grid.chunks_overlapping(region) {
            let chunk_box = grid.chunk_box(&chunk_index)?;
            let Some(overlap) = chunk_box.intersect(region) else {
                continue;
            };
            let chunk = self.read_chunk(&chunk_index)?;
            copy_region(&chunk, &chunk_box, dst, region, &overlap, item_size)?;
        }
        Ok(())
    }

    /// Returns the full kvstore key of `name` inside the array.
    fn key(&self, name: &str) -> String {
        join_key(&self.prefix, name)
    }

    fn check_chunk_index(&self, chunk_index: &[u64]) -> Result<()> {
        let grid = self.metadata.chunk_grid().grid_shape();
        let inside = chunk_index.len() == grid.len()
            && chunk_index
                .iter()
                .zip(&grid)
                .all(|(index, count)| index < count);
        if inside {
            Ok(())
        } else {
            Err(StorageError::InvalidChunkIndex {
                array: self.prefix.clone(),
                index: chunk_index.to_vec(),
                grid,
            })
        }
    }

    /// Checks that `region` lies inside the array and that a buffer of `len` bytes holds it.
    fn check_region(&self, region: &IndexBox, len: usize) -> Result<()> {
        let shape = self.metadata.shape();
        if region.rank() != shape.len() {
            return Err(CoreError::RankMismatch {
                expected: shape.len(),
                found: region.rank(),
            }
            .into());
        }
        if !IndexBox::full(shape).contains(region) {
            return Err(self.invalid_region(
                region,
                format!("it reaches outside the array of shape {shape:?}"),
            ));
        }
        let expected = num_bytes(&region.shape(), self.metadata.dtype())?;
        if expected != len as u64 {
            return Err(CoreError::BufferSize {
                expected,
                found: len as u64,
            }
            .into());
        }
        Ok(())
    }

    fn check_aligned(&self, region: &IndexBox) -> Result<()> {
        let shape = self.metadata.shape();
        let chunks = self.metadata.chunks();
        for dim in 0..region.rank() {
            let (start, stop) = (region.start()[dim], region.stop()[dim]);
            if start % chunks[dim] != 0 || (stop % chunks[dim] != 0 && stop != shape[dim]) {
                return Err(self.invalid_region(
                    region,
                    format!(
                        "a write must cover whole chunks of shape {chunks:?}: each start a multiple of the chunk extent, each stop a multiple of it or the array's extent"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn invalid_region(&self, region: &IndexBox, reason: String) -> StorageError {
        StorageError::InvalidRegion {
            array: self.prefix.clone(),
            region: region.to_string(),
            reason,
        }
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        Ok(())
    } else {
        validate_key(prefix)
    }
}

fn join_key(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use ckpt_core::DType;
    use proptest::prelude::*;

    use super::*;
    use crate::{LocalBackend, ObjectStoreBackend, Store, ZarrCompressor};

    const ZSTD: Option<ZarrCompressor> = Some(ZarrCompressor::Zstd { level: 1 });

    fn memory_store() -> Store {
        Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()))
    }

    fn metadata(
        shape: &[u64],
        chunks: &[u64],
        dtype: DType,
        compressor: Option<ZarrCompressor>,
    ) -> ZarrV2Metadata {
        ZarrV2Metadata::new(shape.to_vec(), chunks.to_vec(), dtype, compressor).unwrap()
    }

    /// Creates an array `a` in a fresh memory store.
    fn array(
        shape: &[u64],
        chunks: &[u64],
        dtype: DType,
        compressor: Option<ZarrCompressor>,
    ) -> (Store, ZarrArray) {
        let store = memory_store();
        let kv: Arc<dyn KvStore> = Arc::new(store.clone());
        let array = ZarrArray::create(kv, "a", metadata(shape, chunks, dtype, compressor)).unwrap();
        (store, array)
    }

    /// Distinct, non-zero bytes, so misplaced or missing copies show.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8 + 1).collect()
    }

    fn ibox(start: &[u64], stop: &[u64]) -> IndexBox {
        IndexBox::new(start.to_vec(), stop.to_vec()).unwrap()
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

    fn write_whole(array: &ZarrArray) -> Vec<u8> {
        let shape = array.metadata().shape().to_vec();
        let len = num_bytes(&shape, array.metadata().dtype()).unwrap() as usize;
        let data = pattern(len);
        array.write_region(&IndexBox::full(&shape), &data).unwrap();
        data
    }

    #[test]
    fn create_writes_zarray() {
        let (store, array) = array(&[16, 8], &[4, 4], DType::Float32, ZSTD);
        let stored = store.get_required("a/.zarray").unwrap();
        assert_eq!(stored, array.metadata().to_json());
    }

    #[test]
    fn open_reads_metadata() {
        let (store, created) = array(&[5], &[2], DType::BFloat16, None);
        let opened = ZarrArray::open(Arc::new(store), "a").unwrap();
        assert_eq!(opened.metadata(), created.metadata());
        assert_eq!(opened.prefix(), "a");
    }

    #[test]
    fn open_missing_is_not_found() {
        let err = ZarrArray::open(Arc::new(memory_store()), "a").unwrap_err();
        assert!(
            matches!(err, StorageError::NotFound { ref key, .. } if key == "a/.zarray"),
            "{err}"
        );
    }

    #[test]
    fn open_invalid_names_location() {
        let store = memory_store();
        store.put("a/.zarray", Bytes::from_static(b"{}")).unwrap();
        let err = ZarrArray::open(Arc::new(store), "a").unwrap_err();
        let StorageError::InvalidMetadata { key, .. } = &err else {
            panic!("expected InvalidMetadata, got {err}");
        };
        assert_eq!(key, "memory:///a/.zarray");
    }

    #[test]
    fn escaping_prefix_is_rejected() {
        let kv: Arc<dyn KvStore> = Arc::new(memory_store());
        let meta = metadata(&[2], &[2], DType::UInt8, None);
        let err = ZarrArray::create(Arc::clone(&kv), "../x", meta).unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
        let err = ZarrArray::open(kv, "a/../../x").unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
    }

    #[test]
    fn uneven_edges_round_trip() {
        let (store, array) = array(&[5, 7], &[2, 3], DType::Float32, ZSTD);
        let data = write_whole(&array);
        let mut read = vec![0u8; data.len()];
        array
            .read_region(&IndexBox::full(&[5, 7]), &mut read)
            .unwrap();
        assert_eq!(read, data);
        assert_eq!(store.list().unwrap().len(), 1 + 3 * 3);
    }

    #[test]
    fn edge_chunk_is_full_size_and_zero_padded() {
        let (_store, array) = array(&[3], &[2], DType::UInt8, None);
        array
            .write_region(&IndexBox::full(&[3]), &[10, 11, 12])
            .unwrap();
        assert_eq!(array.read_chunk(&[1]).unwrap(), [12, 0]);
    }

    #[test]
    fn partial_region_read() {
        let (_store, array) = array(&[6, 6], &[4, 4], DType::Int16, ZSTD);
        let data = write_whole(&array);
        let region = ibox(&[1, 3], &[5, 6]);
        let mut read = vec![0u8; 4 * 3 * 2];
        array.read_region(&region, &mut read).unwrap();
        assert_eq!(read, cut(&data, &[6, 6], &region, 2));
    }

    #[test]
    fn chunk_write_and_read() {
        let (store, array) = array(&[4, 4], &[2, 2], DType::UInt16, ZSTD);
        let chunk = pattern(8);
        array.write_chunk(&[1, 0], &chunk).unwrap();
        assert!(store.exists("a/1.0").unwrap());
        assert_eq!(array.read_chunk(&[1, 0]).unwrap(), chunk);
    }

    #[test]
    fn aligned_subregion_write() {
        let (store, array) = array(&[4, 6], &[2, 3], DType::UInt8, None);
        array
            .write_region(&ibox(&[2, 3], &[4, 6]), &pattern(6))
            .unwrap();
        assert_eq!(store.list().unwrap(), ["a/.zarray", "a/1.1"]);
    }

    #[test]
    fn scalar_uses_key_zero() {
        let (store, array) = array(&[], &[], DType::Float64, ZSTD);
        let value = 0.125f64.to_le_bytes();
        array.write_region(&IndexBox::full(&[]), &value).unwrap();
        assert!(store.exists("a/0").unwrap());
        let mut read = [0u8; 8];
        array.read_region(&IndexBox::full(&[]), &mut read).unwrap();
        assert_eq!(read, value);
        assert_eq!(array.chunk_key(&[]).unwrap(), "a/0");
    }

    #[test]
    fn zero_size_array_has_no_chunks() {
        let (store, array) = array(&[0, 3], &[2, 3], DType::Float32, ZSTD);
        array.write_region(&IndexBox::full(&[0, 3]), &[]).unwrap();
        array
            .read_region(&IndexBox::full(&[0, 3]), &mut [])
            .unwrap();
        assert_eq!(store.list().unwrap(), ["a/.zarray"]);
    }

    #[test]
    fn array_at_kvstore_root() {
        let store = memory_store();
        let meta = metadata(&[2], &[2], DType::UInt8, None);
        let array = ZarrArray::create(Arc::new(store.clone()), "", meta).unwrap();
        array.write_chunk(&[0], &[1, 2]).unwrap();
        assert_eq!(store.list().unwrap(), [".zarray", "0"]);
    }

    #[test]
    fn missing_chunk_is_not_found() {
        let (_store, array) = array(&[4], &[2], DType::UInt8, ZSTD);
        array.write_chunk(&[0], &[1, 2]).unwrap();
        let err = array.read_chunk(&[1]).unwrap_err();
        assert!(
            matches!(err, StorageError::NotFound { ref key, .. } if key == "a/1"),
            "{err}"
        );
        let mut dst = [0u8; 4];
        let err = array
            .read_region(&IndexBox::full(&[4]), &mut dst)
            .unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    }

    #[test]
    fn missing_chunk_fills_zeros_on_request() {
        let (_store, array) = array(&[4], &[2], DType::UInt8, ZSTD);
        let array = array.with_missing_chunks(MissingChunks::Fill);
        array.write_chunk(&[0], &[1, 2]).unwrap();
        let mut dst = [9u8; 4];
        array.read_region(&IndexBox::full(&[4]), &mut dst).unwrap();
        assert_eq!(dst, [1, 2, 0, 0]);
    }

    #[test]
    fn truncated_chunk_is_corrupt() {
        let (store, array) = array(&[64], &[64], DType::UInt32, ZSTD);
        write_whole(&array);
        let stored = store.get_required("a/0").unwrap();
        store.put("a/0", stored.slice(..stored.len() - 3)).unwrap();
        let err = array.read_chunk(&[0]).unwrap_err();
        let StorageError::Corrupt { key, .. } = &err else {
            panic!("expected Corrupt, got {err}");
        };
        assert_eq!(key, "memory:///a/0");
    }

    #[test]
    fn raw_chunk_with_extra_bytes_is_corrupt() {
        let (store, array) = array(&[4], &[4], DType::UInt8, None);
        store
            .put("a/0", Bytes::from_static(&[1, 2, 3, 4, 5]))
            .unwrap();
        let err = array.read_chunk(&[0]).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("a/0"), "{message}");
        assert!(message.contains("has 5 bytes, expected 4"), "{message}");
    }

    #[test]
    fn zstd_chunk_with_extra_bytes_is_corrupt() {
        let (store, array) = array(&[4], &[4], DType::UInt8, ZSTD);
        store
            .put(
                "a/0",
                Bytes::from(zstd::bulk::compress(&[1, 2, 3, 4, 5], 1).unwrap()),
            )
            .unwrap();
        let err = array.read_chunk(&[0]).unwrap_err();
        assert!(err.to_string().contains("more than 4 bytes"), "{err}");
    }

    #[test]
    fn unaligned_write_is_rejected() {
        let (_store, array) = array(&[6], &[4], DType::UInt8, None);
        let err = array.write_region(&ibox(&[1], &[4]), &[0; 3]).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRegion { .. }), "{err}");
        let err = array.write_region(&ibox(&[0], &[5]), &[0; 5]).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRegion { .. }), "{err}");
        array.write_region(&ibox(&[4], &[6]), &[0; 2]).unwrap();
    }

    #[test]
    fn region_outside_array_is_rejected() {
        let (_store, array) = array(&[6], &[2], DType::UInt8, None);
        let err = array.write_region(&ibox(&[4], &[8]), &[0; 4]).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRegion { .. }), "{err}");
        let err = array
            .read_region(&ibox(&[4], &[8]), &mut [0; 4])
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidRegion { .. }), "{err}");
    }

    #[test]
    fn region_rank_mismatch_is_rejected() {
        let (_store, array) = array(&[6], &[2], DType::UInt8, None);
        let err = array
            .read_region(&ibox(&[0, 0], &[1, 1]), &mut [0; 1])
            .unwrap_err();
        assert!(
            matches!(err, StorageError::Core(CoreError::RankMismatch { .. })),
            "{err}"
        );
    }

    #[test]
    fn wrong_buffer_size_is_rejected() {
        let (_store, array) = array(&[6], &[2], DType::UInt16, None);
        let err = array
            .read_region(&ibox(&[0], &[2]), &mut [0; 3])
            .unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Core(CoreError::BufferSize {
                    expected: 4,
                    found: 3
                })
            ),
            "{err}"
        );
        let err = array.write_chunk(&[0], &[0; 5]).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Core(CoreError::BufferSize {
                    expected: 4,
                    found: 5
                })
            ),
            "{err}"
        );
    }

    #[test]
    fn chunk_index_outside_grid_is_rejected() {
        let (_store, array) = array(&[5], &[2], DType::UInt8, None);
        let err = array.read_chunk(&[3]).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidChunkIndex { ref grid, .. } if grid == &[3]),
            "{err}"
        );
        let err = array.write_chunk(&[0, 0], &[0; 2]).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidChunkIndex { .. }),
            "{err}"
        );
    }

    #[test]
    fn threads_read_chunks_in_parallel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(
            LocalBackend::new(dir.path()).unwrap().with_fsync(false),
        ));
        let meta = metadata(&[8, 8], &[2, 8], DType::Float32, ZSTD);
        let array = ZarrArray::create(Arc::new(store), "p", meta).unwrap();
        let data = write_whole(&array);
        std::thread::scope(|scope| {
            for row in 0..4u64 {
                let (array, data) = (&array, &data);
                scope.spawn(move || {
                    let region = ibox(&[row * 2, 0], &[row * 2 + 2, 8]);
                    let mut read = vec![0u8; 2 * 8 * 4];
                    array.read_region(&region, &mut read).unwrap();
                    assert_eq!(read, cut(data, &[8, 8], &region, 4));
                });
            }
        });
    }

    /// Generates an array shape, a chunk shape and a region inside the array.
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
            DType::UInt8,
            DType::BFloat16,
            DType::Int32,
            DType::Float64,
            DType::Complex128,
        ])
    }

    fn compressors() -> impl Strategy<Value = Option<ZarrCompressor>> {
        prop_oneof![
            Just(None),
            Just(ZSTD),
            Just(Some(ZarrCompressor::Zstd { level: 3 }))
        ]
    }

    proptest! {
        #[test]
        fn round_trip((shape, chunks, region) in layout(), dtype in dtypes(), compressor in compressors()) {
            let (_store, array) = array(&shape, &chunks, dtype, compressor);
            let data = write_whole(&array);
            let item_size = dtype.item_size();

            let mut whole = vec![0u8; data.len()];
            array.read_region(&IndexBox::full(&shape), &mut whole).unwrap();
            prop_assert_eq!(&whole, &data);

            let mut part = vec![0u8; region.num_elements().unwrap() as usize * item_size];
            array.read_region(&region, &mut part).unwrap();
            prop_assert_eq!(part, cut(&data, &shape, &region, item_size));
        }
    }
}
