use std::sync::Arc;

use bytes::Bytes;
use ckpt_core::{copy_region, num_bytes, num_bytes_usize, CoreError, IndexBox};

use super::{
    shard::{allocate, decode_shard, encode_shard},
    ZarrV3Metadata,
};
use crate::{store::join_url, validate_key, KvStore, MissingChunks, Result, StorageError};

/// Name of the metadata document inside a zarr v3 array's directory.
const ZARR_JSON_KEY: &str = "zarr.json";

/// A zarr v3 array in a kvstore: its `zarr.json` and one shard object per chunk.
///
/// The array lives under a key prefix, the param name in an Orbax
/// checkpoint (`params.dense.kernel/zarr.json`, `params.dense.kernel/c/0/1`).
/// Each shard contains exactly one chunk, so this type reads and writes
/// chunks and leaves the shard index to the codec. Methods take `&self`, so
/// threads can read and write different chunks at the same time through
/// one shared array.
#[derive(Clone, Debug)]
pub struct ZarrV3Array {
    kv: Arc<dyn KvStore>,
    prefix: String,
    metadata: ZarrV3Metadata,
    missing_chunks: MissingChunks,
}

impl ZarrV3Array {
    /// Creates the array at `prefix` by writing its `zarr.json`, and returns it.
    ///
    /// An empty prefix puts the array at the root of the kvstore. Existing
    /// chunks under the prefix are neither checked nor removed.
    pub fn create(
        kv: Arc<dyn KvStore>,
        prefix: &str,
        metadata: ZarrV3Metadata,
    ) -> Result<ZarrV3Array> {
        let array = ZarrV3Array::new(kv, prefix, metadata)?;
        let key = array.key(ZARR_JSON_KEY);
        array
            .kv
            .write(&key, Bytes::from(array.metadata.to_json()))?;
        Ok(array)
    }

    /// Opens the array at `prefix` by reading and validating its `zarr.json`.
    pub fn open(kv: Arc<dyn KvStore>, prefix: &str) -> Result<ZarrV3Array> {
        check_prefix(prefix)?;
        let key = join_key(prefix, ZARR_JSON_KEY);
        // NOTE: `KvStore` has no size query, so the document is read whole
        // before `parse` checks its size against the cap.
        let document = kv.read(&key)?.ok_or_else(|| StorageError::NotFound {
            store: kv.url(),
            key: key.clone(),
        })?;
        let location = join_url(&kv.url(), &key);
        let metadata = ZarrV3Metadata::parse(&document, &location)?;
        ZarrV3Array::new(kv, prefix, metadata)
    }

    /// Returns the array at `prefix` with known metadata, without reading or
    /// writing `zarr.json`: for writers whose `zarr.json` another writer creates.
    pub fn with_metadata(
        kv: Arc<dyn KvStore>,
        prefix: &str,
        metadata: ZarrV3Metadata,
    ) -> Result<ZarrV3Array> {
        ZarrV3Array::new(kv, prefix, metadata)
    }

    fn new(kv: Arc<dyn KvStore>, prefix: &str, metadata: ZarrV3Metadata) -> Result<ZarrV3Array> {
        check_prefix(prefix)?;
        Ok(ZarrV3Array {
            kv,
            prefix: prefix.trim_end_matches('/').to_owned(),
            metadata,
            missing_chunks: MissingChunks::default(),
        })
    }

    /// Sets what reading a missing chunk does. The default is [`MissingChunks::Error`].
    ///
    /// A chunk is missing when its shard is absent from the kvstore or when
    /// the shard index marks it as missing. [`MissingChunks::Fill`] reads it
    /// as the fill value, which is always zero in the arrays this driver opens.
    pub fn with_missing_chunks(mut self, missing_chunks: MissingChunks) -> ZarrV3Array {
        self.missing_chunks = missing_chunks;
        self
    }

    /// Returns the array's metadata.
    pub fn metadata(&self) -> &ZarrV3Metadata {
        &self.metadata
    }

    /// Returns the key prefix of the array inside its kvstore, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns the kvstore key of the shard that contains the chunk at
    /// `chunk_index`, checking that the chunk exists in the grid.
    pub fn chunk_key(&self, chunk_index: &[u64]) -> Result<String> {
        self.check_chunk_index(chunk_index)?;
        Ok(self.key(&ZarrV3Metadata::chunk_key(chunk_index)))
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
        let shard = encode_shard(self.metadata.compressor(), chunk, &self.kv.url(), &key)?;
        self.kv.write(&key, shard)
    }

    /// Writes the chunks that make up `region`, given as the bytes of the region in C order.
    ///
    /// The region must be aligned to the chunk grid: each start a multiple
    /// of the chunk extent, each stop a multiple of it or the array's
    /// extent. Parts of edge chunks past the array's end are written as
    /// zeros, the fill value.
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
            let mut chunk = Vec::new();
            allocate(
                &mut chunk,
                self.metadata.chunk_num_bytes(),
                &self.kv.url(),
                &key,
            )?;
            if let Some(overlap) = chunk_box.intersect(region) {
                copy_region(data, region, &mut chunk, &chunk_box, &overlap, item_size)?;
            }
            self.write_chunk(&chunk_index, &chunk)?;
        }
        Ok(())
    }

    /// Reads and decodes one chunk: its full chunk shape in C order.
    ///
    /// A missing chunk (see [`ZarrV3Array::with_missing_chunks`]) is
    /// [`StorageError::NotFound`] naming the shard's key, or zeros with
    /// [`MissingChunks::Fill`]. A shard whose index fails its CRC-32C or
    /// points outside the shard, or whose chunk decodes to a size other than
    /// the chunk shape's, is [`StorageError::Corrupt`].
    pub fn read_chunk(&self, chunk_index: &[u64]) -> Result<Vec<u8>> {
        let key = self.chunk_key(chunk_index)?;
        if let Some(chunk) = self.read_stored_chunk(&key)? {
            return Ok(chunk);
        }
        self.check_fill_allowed(&key)?;
        let mut chunk = Vec::new();
        allocate(
            &mut chunk,
            self.metadata.chunk_num_bytes(),
            &self.kv.url(),
            &key,
        )?;
        Ok(chunk)
    }

    /// Reads `region` of the array into `dst`, as the bytes of the region in C order.
    ///
    /// Reads every chunk that overlaps the region, one after another, and
    /// copies the overlap of each. Missing chunks are handled as in
    /// [`ZarrV3Array::read_chunk`], except that filling writes zeros into
    /// the overlap without allocating a whole chunk.
    pub fn read_region(&self, region: &IndexBox, dst: &mut [u8]) -> Result<()> {
        self.check_region(region, dst.len())?;

        let grid = self.metadata.chunk_grid();
        let item_size = self.metadata.dtype().item_size();
        for chunk_index in grid.chunks_overlapping(region) {
            let chunk_box = grid.chunk_box(&chunk_index)?;
            let Some(overlap) = chunk_box.intersect(region) else {
                continue;
            };
            let key = self.chunk_key(&chunk_index)?;
            match self.read_stored_chunk(&key)? {
                Some(chunk) => copy_region(&chunk, &chunk_box, dst, region, &overlap, item_size)?,
                None => {
                    self.check_fill_allowed(&key)?;
                    // The overlap is no larger than `dst`, whose size the caller chose.
                    let zeros =
                        vec![0u8; num_bytes_usize(&overlap.shape(), self.metadata.dtype())?];
                    copy_region(&zeros, &overlap, dst, region, &overlap, item_size)?;
                }
            }
        }
        Ok(())
    }

    /// Reads and decodes the shard at `key`, or returns `None` when the chunk is missing.
    fn read_stored_chunk(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(shard) = self.kv.read(key)? else {
            return Ok(None);
        };
        decode_shard(
            self.metadata.compressor(),
            &shard,
            self.metadata.chunk_num_bytes(),
            &self.kv.url(),
            key,
        )
    }

    /// Returns [`StorageError::NotFound`] for the missing chunk at `key` unless the policy is to fill.
    fn check_fill_allowed(&self, key: &str) -> Result<()> {
        match self.missing_chunks {
            MissingChunks::Fill => Ok(()),
            MissingChunks::Error => Err(StorageError::NotFound {
                store: self.kv.url(),
                key: key.to_owned(),
            }),
        }
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

    /// Checks that `region` lies inside the array and that `len` is its size in bytes.
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

    use super::*;
    use crate::{LocalBackend, ObjectStoreBackend, Store, ZarrV3Compressor};

    const ZSTD: Option<ZarrV3Compressor> = Some(ZarrV3Compressor::Zstd {
        level: 3,
        checksum: false,
    });

    fn memory_store() -> Store {
        Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()))
    }

    fn metadata(
        shape: &[u64],
        chunks: &[u64],
        dtype: DType,
        compressor: Option<ZarrV3Compressor>,
    ) -> ZarrV3Metadata {
        ZarrV3Metadata::new(shape.to_vec(), chunks.to_vec(), dtype, compressor).unwrap()
    }

    /// Creates an array `a` in a fresh memory store.
    fn array(
        shape: &[u64],
        chunks: &[u64],
        dtype: DType,
        compressor: Option<ZarrV3Compressor>,
    ) -> (Store, ZarrV3Array) {
        let store = memory_store();
        let kv: Arc<dyn KvStore> = Arc::new(store.clone());
        let meta = metadata(shape, chunks, dtype, compressor);
        let array = ZarrV3Array::create(kv, "a", meta).unwrap();
        (store, array)
    }

    /// Distinct, non-zero bytes, so misplaced or missing copies show.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8 + 1).collect()
    }

    fn ibox(start: &[u64], stop: &[u64]) -> IndexBox {
        IndexBox::new(start.to_vec(), stop.to_vec()).unwrap()
    }

    fn write_whole(array: &ZarrV3Array) -> Vec<u8> {
        let shape = array.metadata().shape().to_vec();
        let len = num_bytes(&shape, array.metadata().dtype()).unwrap() as usize;
        let data = pattern(len);
        array.write_region(&IndexBox::full(&shape), &data).unwrap();
        data
    }

    #[test]
    fn create_writes_zarr_json() {
        let (store, array) = array(&[16, 8], &[4, 4], DType::Float32, ZSTD);
        let stored = store.get_required("a/zarr.json").unwrap();
        assert_eq!(stored, array.metadata().to_json());
    }

    #[test]
    fn open_reads_metadata() {
        let (store, created) = array(&[5], &[2], DType::BFloat16, None);
        let opened = ZarrV3Array::open(Arc::new(store), "a").unwrap();
        assert_eq!(opened.metadata(), created.metadata());
        assert_eq!(opened.prefix(), "a");
    }

    #[test]
    fn open_invalid_names_location() {
        let store = memory_store();
        store.put("a/zarr.json", Bytes::from_static(b"{}")).unwrap();
        let err = ZarrV3Array::open(Arc::new(store), "a").unwrap_err();
        let StorageError::InvalidMetadata { key, .. } = &err else {
            panic!("expected InvalidMetadata, got {err}");
        };
        assert_eq!(key, "memory:///a/zarr.json");
    }

    #[test]
    fn escaping_prefix_is_rejected() {
        let kv: Arc<dyn KvStore> = Arc::new(memory_store());
        let meta = metadata(&[2], &[2], DType::UInt8, None);
        let err = ZarrV3Array::create(Arc::clone(&kv), "../x", meta).unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
        let err = ZarrV3Array::open(kv, "a/../../x").unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
    }

    #[test]
    fn edge_chunk_is_zero_padded() {
        let (_store, array) = array(&[3], &[2], DType::UInt8, None);
        array
            .write_region(&IndexBox::full(&[3]), &[10, 11, 12])
            .unwrap();
        assert_eq!(array.read_chunk(&[1]).unwrap(), [12, 0]);
    }

    #[test]
    fn chunk_write_and_read() {
        let (store, array) = array(&[4, 4], &[2, 2], DType::UInt16, ZSTD);
        let chunk = pattern(8);
        array.write_chunk(&[1, 0], &chunk).unwrap();
        assert!(store.exists("a/c/1/0").unwrap());
        assert_eq!(array.read_chunk(&[1, 0]).unwrap(), chunk);
    }

    #[test]
    fn aligned_subregion_write() {
        let (store, array) = array(&[4, 6], &[2, 3], DType::UInt8, None);
        array
            .write_region(&ibox(&[2, 3], &[4, 6]), &pattern(6))
            .unwrap();
        assert_eq!(store.list().unwrap(), ["a/c/1/1", "a/zarr.json"]);
    }

    #[test]
    fn scalar_uses_key_c() {
        let (store, array) = array(&[], &[], DType::Float64, ZSTD);
        let value = 0.125f64.to_le_bytes();
        array.write_region(&IndexBox::full(&[]), &value).unwrap();
        assert!(store.exists("a/c").unwrap());
        let mut read = [0u8; 8];
        array.read_region(&IndexBox::full(&[]), &mut read).unwrap();
        assert_eq!(read, value);
        assert_eq!(array.chunk_key(&[]).unwrap(), "a/c");
    }

    #[test]
    fn zero_size_array_has_no_chunks() {
        let (store, array) = array(&[0, 3], &[2, 3], DType::Float32, ZSTD);
        array.write_region(&IndexBox::full(&[0, 3]), &[]).unwrap();
        array
            .read_region(&IndexBox::full(&[0, 3]), &mut [])
            .unwrap();
        assert_eq!(store.list().unwrap(), ["a/zarr.json"]);
    }

    #[test]
    fn array_at_kvstore_root() {
        let store = memory_store();
        let meta = metadata(&[2], &[2], DType::UInt8, None);
        let array = ZarrV3Array::create(Arc::new(store.clone()), "", meta).unwrap();
        array.write_chunk(&[0], &[1, 2]).unwrap();
        assert_eq!(store.list().unwrap(), ["c/0", "zarr.json"]);
    }

    #[test]
    fn fill_reads_only_the_overlap() {
        // A chunk of 2^40 bytes, none of it stored: filling a 4-byte region
        // must not allocate the whole chunk.
        let (_store, array) = array(&[1 << 40], &[1 << 40], DType::UInt8, None);
        let array = array.with_missing_chunks(MissingChunks::Fill);
        let mut dst = [9u8; 4];
        array.read_region(&ibox(&[8], &[12]), &mut dst).unwrap();
        assert_eq!(dst, [0; 4]);
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
        let array = ZarrV3Array::create(Arc::new(store), "p", meta).unwrap();
        let data = write_whole(&array);
        std::thread::scope(|scope| {
            for row in 0..4u64 {
                let (array, data) = (&array, &data);
                scope.spawn(move || {
                    let region = ibox(&[row * 2, 0], &[row * 2 + 2, 8]);
                    let mut read = vec![0u8; 2 * 8 * 4];
                    array.read_region(&region, &mut read).unwrap();
                    let start = (row * 2 * 8 * 4) as usize;
                    assert_eq!(read, data[start..start + read.len()]);
                });
            }
        });
    }
}
