//! How a checkpoint item stores its arrays: zarr arrays in plain
//! directories or in OCDBT databases, as Orbax's `use_ocdbt` and
//! `use_zarr3` options choose.
//!
//! Every process that writes array data opens its own [`ArrayWriter`]; with
//! OCDBT each writes its own database `ocdbt.process_<name>/` and
//! [`finalize_item`] merges them into the item's root database at commit,
//! so that readers find every key through the root.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use ckpt_core::{copy_region, copy_region_cast, num_bytes, CoreError, DType, IndexBox};

use crate::{
    merge_databases,
    zarr::{ZarrArray, ZarrCompressor, ZarrV2Metadata},
    zarr3::{ZarrV3Array, ZarrV3Compressor, ZarrV3Metadata},
    KvStore, OcdbtReader, OcdbtWriter, OcdbtWriterOptions, Result, StorageError, Store,
};

/// Prefix of the per-writer OCDBT database directories inside an item.
pub const OCDBT_PROCESS_PREFIX: &str = "ocdbt.process_";
/// The manifest file of an OCDBT database.
const OCDBT_MANIFEST: &str = "manifest.ocdbt";

/// How array data is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Chunks are stored raw.
    None,
    /// Chunks are zstd frames at this level (Orbax writes level 1 for zarr v2).
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
}

/// The storage options of a checkpoint item, mirroring Orbax's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArrayFormat {
    /// Store arrays inside OCDBT databases (Orbax's default) instead of one
    /// directory per array.
    pub use_ocdbt: bool,
    /// Store arrays as zarr v3 instead of zarr v2 (Orbax's default is v2).
    pub use_zarr3: bool,
    /// Chunk compression.
    pub compression: Compression,
}

impl Default for ArrayFormat {
    /// Orbax 0.12's default: zarr v2 in OCDBT, zstd level 1.
    fn default() -> ArrayFormat {
        ArrayFormat {
            use_ocdbt: true,
            use_zarr3: false,
            compression: Compression::Zstd { level: 1 },
        }
    }
}

impl ArrayFormat {
    /// Sets whether arrays are stored in OCDBT databases.
    pub fn with_ocdbt(mut self, use_ocdbt: bool) -> ArrayFormat {
        self.use_ocdbt = use_ocdbt;
        self
    }

    /// Sets whether arrays are stored as zarr v3.
    pub fn with_zarr3(mut self, use_zarr3: bool) -> ArrayFormat {
        self.use_zarr3 = use_zarr3;
        self
    }

    /// Sets the chunk compression.
    pub fn with_compression(mut self, compression: Compression) -> ArrayFormat {
        self.compression = compression;
        self
    }
}

/// Shape, dtype and chunk shape of one stored array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredArray {
    /// Global shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Shape of each stored chunk; chunks at the upper edge are stored whole.
    pub chunk_shape: Vec<u64>,
}

/// Writes the array chunks of one writer (a host, or the controller) into a
/// checkpoint item.
#[derive(Debug)]
pub struct ArrayWriter {
    kv: Arc<dyn KvStore>,
    /// The writer's own database, committed by [`ArrayWriter::finish`].
    ocdbt: Option<Arc<OcdbtWriter>>,
    format: ArrayFormat,
    item: Store,
    /// Process index in the name of this writer's array metadata file,
    /// `array_metadatas/process_<index>`; Orbax accepts integers only.
    process_index: Option<usize>,
    /// Sharded arrays this writer wrote, for its array metadata file.
    noted: Mutex<Vec<NotedArray>>,
}

/// A sharded array's write and chunk shapes, as one writer wrote them.
#[derive(Clone, Debug)]
struct NotedArray {
    param_name: String,
    write_shape: Vec<u64>,
    chunk_shape: Vec<u64>,
}

/// Directory of the per-writer array metadata files Orbax reads at commit.
const ARRAY_METADATAS_DIR: &str = "array_metadatas";

impl ArrayWriter {
    /// Opens a writer named `writer_name` (a process index, or `controller`)
    /// for the item directory `item`.
    ///
    /// With OCDBT the writer creates its own database
    /// `ocdbt.process_<writer_name>/` in the item, so writers never share a
    /// file; without it, chunks go straight into the item's directories.
    pub fn open(item: &Store, format: &ArrayFormat, writer_name: &str) -> Result<ArrayWriter> {
        let (kv, ocdbt): (Arc<dyn KvStore>, _) = if format.use_ocdbt {
            let database = item.child(&format!("{OCDBT_PROCESS_PREFIX}{writer_name}"))?;
            let writer = Arc::new(OcdbtWriter::create(database, OcdbtWriterOptions::default())?);
            (Arc::clone(&writer) as Arc<dyn KvStore>, Some(writer))
        } else {
            (Arc::new(item.clone()), None)
        };
        Ok(ArrayWriter {
            kv,
            ocdbt,
            format: format.clone(),
            item: item.clone(),
            process_index: writer_name.parse().ok(),
            noted: Mutex::new(Vec::new()),
        })
    }

    /// Sets the process index that names this writer's array metadata file,
    /// for a writer whose name is not a number (such as `controller`).
    pub fn with_process_index(mut self, process_index: usize) -> ArrayWriter {
        self.process_index = Some(process_index);
        self
    }

    /// Records that this writer wrote a sharded array with these write and
    /// chunk shapes; [`ArrayWriter::finish`] lists them in
    /// `array_metadatas/process_<name>`, as each Orbax process does.
    pub fn note_sharded_array(&self, param_name: &str, write_shape: &[u64], chunk_shape: &[u64]) {
        let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
        noted.push(NotedArray {
            param_name: param_name.to_owned(),
            write_shape: write_shape.to_vec(),
            chunk_shape: chunk_shape.to_vec(),
        });
    }

    /// Writes the zarr metadata of an array. One writer does this per array.
    pub fn create_array(&self, param_name: &str, array: &StoredArray) -> Result<()> {
        let kv = Arc::clone(&self.kv);
        if self.format.use_zarr3 {
            ZarrV3Array::create(kv, param_name, zarr_v3_metadata(array, &self.format)?)?;
        } else {
            ZarrArray::create(kv, param_name, zarr_v2_metadata(array, &self.format)?)?;
        }
        Ok(())
    }

    /// Writes the chunks that `region` of the array covers, from `data` laid
    /// out in C order for `region`. Returns the number of chunks written.
    ///
    /// `region` must consist of whole chunks, clipped at the array's edge.
    pub fn write_region(
        &self,
        param_name: &str,
        array: &StoredArray,
        region: &IndexBox,
        data: &[u8],
    ) -> Result<u64> {
        let kv = Arc::clone(&self.kv);
        let zarr = if self.format.use_zarr3 {
            AnyZarr::V3(ZarrV3Array::with_metadata(kv, param_name, zarr_v3_metadata(array, &self.format)?)?)
        } else {
            AnyZarr::V2(ZarrArray::with_metadata(kv, param_name, zarr_v2_metadata(array, &self.format)?)?)
        };
        let chunks = zarr.chunk_grid().chunks_overlapping(region).len() as u64;
        zarr.write_region(region, data)?;
        Ok(chunks)
    }

    /// Finishes the writer: commits its database where there is one.
    pub fn finish(self) -> Result<()> {
        if let Some(writer) = &self.ocdbt {
            writer.commit()?;
        }
        let mut noted = self.noted.into_inner().unwrap_or_else(|p| p.into_inner());
        let Some(process_index) = self.process_index.filter(|_| !noted.is_empty()) else {
            return Ok(());
        };
        noted.sort_by(|a, b| a.param_name.cmp(&b.param_name));
        let entries: Vec<serde_json::Value> = noted
            .iter()
            .map(|array| {
                serde_json::json!({"array_metadata": {
                    "param_name": array.param_name,
                    "write_shape": array.write_shape,
                    "chunk_shape": array.chunk_shape,
                    "ext_metadata": null,
                }})
            })
            .collect();
        let document = serde_json::json!({ "array_metadatas": entries });
        let key = format!("{ARRAY_METADATAS_DIR}/process_{process_index}");
        self.item.put(&key, bytes::Bytes::from(document.to_string()))
    }
}

/// Merges the per-writer databases of an item into its root database, where
/// the format uses OCDBT; does nothing otherwise.
///
/// The root refers to the writers' data files in place, so the
/// `ocdbt.process_*` directories stay part of the checkpoint.
pub fn finalize_item(item: &Store, format: &ArrayFormat) -> Result<()> {
    if !format.use_ocdbt {
        return Ok(());
    }
    let mut children = Vec::new();
    for dir in item.list_dirs()? {
        if dir.starts_with(OCDBT_PROCESS_PREFIX) && item.exists(&format!("{dir}/{OCDBT_MANIFEST}"))? {
            children.push(dir);
        }
    }
    let names: Vec<&str> = children.iter().map(String::as_str).collect();
    merge_databases(item.clone(), &names)
}

/// Largest chunk Orbax lets a writer store by default: its OCDBT target
/// data file size on local disks (2 GiB), above which it splits write
/// shapes into chunks.
pub const DEFAULT_MAX_CHUNK_BYTES: u64 = 2 << 30;

/// Chooses the chunk shape for a write shape: the largest shape whose every
/// extent divides `write_shape` and whose byte size is at most
/// `target_bytes`, the way Orbax splits chunks (`chunk_byte_size`).
///
/// Greedy, as Orbax's: while the chunk is too large, shrink to its next
/// smaller divisor the largest dimension among those the sharding already
/// splits (where the write shape differs from the global shape), and all
/// dimensions once those are exhausted. With no target the write shape is
/// the chunk shape. A target below one element yields single elements.
pub fn choose_chunk_shape(
    global_shape: &[u64],
    write_shape: &[u64],
    item_size: usize,
    target_bytes: Option<u64>,
) -> Vec<u64> {
    let write_shape: Vec<u64> = write_shape.iter().map(|&d| d.max(1)).collect();
    let Some(target_bytes) = target_bytes else {
        return write_shape;
    };
    let target_elements = (target_bytes / item_size.max(1) as u64).max(1);
    let mut divisors: Vec<Vec<u64>> = write_shape.iter().map(|&d| divisors_of(d)).collect();
    let mut split: Vec<bool> = global_shape
        .iter()
        .zip(&write_shape)
        .map(|(global, write)| global != write)
        .collect();
    let current = |divisors: &[Vec<u64>]| -> Vec<u64> {
        divisors.iter().map(|d| d.last().copied().unwrap_or(1)).collect()
    };
    loop {
        let shape = current(&divisors);
        let elements = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).unwrap_or(u64::MAX);
        if elements <= target_elements {
            return shape;
        }
        let largest = (0..shape.len())
            .filter(|&dim| split[dim] && shape[dim] > 1)
            .max_by_key(|&dim| (shape[dim], std::cmp::Reverse(dim)));
        match largest {
            Some(dim) => {
                divisors[dim].pop();
                split[dim] = true;
            }
            None if split.iter().all(|&s| s) => return shape,
            None => split.iter_mut().for_each(|s| *s = true),
        }
    }
}

/// Divisors of `n` in increasing order.
fn divisors_of(n: u64) -> Vec<u64> {
    let mut small = Vec::new();
    let mut large = Vec::new();
    let mut i = 1u64;
    while i.saturating_mul(i) <= n {
        if n.is_multiple_of(i) {
            small.push(i);
            if i != n / i {
                large.push(n / i);
            }
        }
        i += 1;
    }
    small.extend(large.into_iter().rev());
    small
}

fn zarr_v3_metadata(array: &StoredArray, format: &ArrayFormat) -> Result<ZarrV3Metadata> {
    let compressor = match format.compression {
        Compression::None => None,
        Compression::Zstd { level } => Some(ZarrV3Compressor::Zstd {
            level,
            checksum: false,
        }),
    };
    ZarrV3Metadata::new(
        array.shape.clone(),
        array.chunk_shape.clone(),
        array.dtype,
        compressor,
    )
}

/// A zarr array of either version, so readers and writers handle both alike.
#[derive(Debug)]
enum AnyZarr {
    V2(ZarrArray),
    V3(ZarrV3Array),
}

impl AnyZarr {
    /// Opens the array at `param_name`: zarr v3 when `zarr3` says so, v2
    /// otherwise.
    fn open(kv: Arc<dyn KvStore>, param_name: &str, zarr3: bool) -> Result<AnyZarr> {
        if zarr3 {
            Ok(AnyZarr::V3(ZarrV3Array::open(kv, param_name)?))
        } else {
            Ok(AnyZarr::V2(ZarrArray::open(kv, param_name)?))
        }
    }

    fn stored(&self) -> StoredArray {
        let (shape, dtype, chunks) = match self {
            AnyZarr::V2(array) => {
                let m = array.metadata();
                (m.shape().to_vec(), m.dtype(), m.chunks().to_vec())
            }
            AnyZarr::V3(array) => {
                let m = array.metadata();
                (m.shape().to_vec(), m.dtype(), m.chunks().to_vec())
            }
        };
        StoredArray {
            shape,
            dtype,
            chunk_shape: chunks,
        }
    }

    fn chunk_grid(&self) -> ckpt_core::ChunkGrid {
        match self {
            AnyZarr::V2(array) => array.metadata().chunk_grid().clone(),
            AnyZarr::V3(array) => array.metadata().chunk_grid().clone(),
        }
    }

    fn write_region(&self, region: &IndexBox, data: &[u8]) -> Result<()> {
        match self {
            AnyZarr::V2(array) => array.write_region(region, data),
            AnyZarr::V3(array) => array.write_region(region, data),
        }
    }

    fn read_chunk(&self, chunk_index: &[u64]) -> Result<Vec<u8>> {
        match self {
            AnyZarr::V2(array) => array.read_chunk(chunk_index),
            AnyZarr::V3(array) => array.read_chunk(chunk_index),
        }
    }

    /// Decodes a chunk into `dst`: straight into it for zarr v2, through a
    /// chunk buffer for v3, whose shards need the whole shard first.
    fn read_chunk_into(&self, chunk_index: &[u64], dst: &mut [u8]) -> Result<()> {
        match self {
            AnyZarr::V2(array) => array.read_chunk_into(chunk_index, dst),
            AnyZarr::V3(array) => {
                let chunk = array.read_chunk(chunk_index)?;
                if chunk.len() != dst.len() {
                    return Err(CoreError::BufferSize {
                        expected: chunk.len() as u64,
                        found: dst.len() as u64,
                    }
                    .into());
                }
                dst.copy_from_slice(&chunk);
                Ok(())
            }
        }
    }
}

/// One region of an array to read, and the buffer it is read into: the
/// region's elements in C order, in the dtype the read requests.
#[derive(Debug)]
pub struct RegionRead<'a> {
    /// The region, in the array's global coordinates.
    pub region: IndexBox,
    /// The buffer, exactly the region's size in the requested dtype.
    pub dst: &'a mut [u8],
}

fn zarr_v2_metadata(array: &StoredArray, format: &ArrayFormat) -> Result<ZarrV2Metadata> {
    let compressor = match format.compression {
        Compression::None => None,
        Compression::Zstd { level } => Some(ZarrCompressor::Zstd { level }),
    };
    ZarrV2Metadata::new(
        array.shape.clone(),
        array.chunk_shape.clone(),
        array.dtype,
        compressor,
    )
}

/// Reads arrays from a committed checkpoint item.
///
/// Opened arrays are cached, so reading many regions of one array parses
/// its metadata once. Safe to share between threads.
#[derive(Debug)]
pub struct ArrayReader {
    kv: Arc<dyn KvStore>,
    zarr3: bool,
    arrays: Mutex<HashMap<String, Arc<AnyZarr>>>,
}

impl ArrayReader {
    /// Opens the arrays of `item`. `use_ocdbt` is what the item's metadata
    /// records; `None` detects OCDBT by the presence of `manifest.ocdbt`.
    pub fn open(item: &Store, use_ocdbt: Option<bool>) -> Result<ArrayReader> {
        let use_ocdbt = match use_ocdbt {
            Some(value) => value,
            None => item.exists("manifest.ocdbt")?,
        };
        let kv: Arc<dyn KvStore> = if use_ocdbt {
            Arc::new(OcdbtReader::open(item.clone())?)
        } else {
            Arc::new(item.clone())
        };
        Ok(ArrayReader {
            kv,
            zarr3: false,
            arrays: Mutex::new(HashMap::new()),
        })
    }

    /// Reads arrays as zarr v3 (`zarr.json`) instead of v2 (`.zarray`), as
    /// the item's `_METADATA` records in `use_zarr3`.
    pub fn with_zarr3(mut self, zarr3: bool) -> ArrayReader {
        self.zarr3 = zarr3;
        self
    }

    fn zarr(&self, param_name: &str) -> Result<Arc<AnyZarr>> {
        let mut arrays = self.arrays.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(array) = arrays.get(param_name) {
            return Ok(Arc::clone(array));
        }
        let array = Arc::new(AnyZarr::open(Arc::clone(&self.kv), param_name, self.zarr3)?);
        arrays.insert(param_name.to_owned(), Arc::clone(&array));
        Ok(array)
    }

    /// Reads the shape, dtype and chunk shape of an array.
    pub fn array(&self, param_name: &str) -> Result<StoredArray> {
        Ok(self.zarr(param_name)?.stored())
    }

    /// Reads `region` of an array into `dst`, laid out in C order for `region`.
    pub fn read_region(
        &self,
        param_name: &str,
        array: &StoredArray,
        region: &IndexBox,
        dst: &mut [u8],
    ) -> Result<()> {
        let mut reads = [RegionRead {
            region: region.clone(),
            dst,
        }];
        self.read_regions(param_name, array.dtype, &mut reads)
    }

    /// Reads several regions of an array, converting the elements to `dtype`.
    ///
    /// Each chunk that overlaps any region is read and decoded once, and
    /// its overlap with every region is copied, so replicated or adjacent
    /// regions cost one read per chunk. A zarr v2 chunk that is exactly one
    /// region, with no conversion, decodes straight into that region's
    /// buffer. Otherwise memory beyond the buffers is one decoded chunk and
    /// its stored bytes at a time.
    ///
    /// Every cast converts, lossy ones too (see [`ckpt_core::cast_elements`]);
    /// callers decide beforehand which casts to allow.
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidRegion`] for a region outside the array,
    /// [`CoreError::BufferSize`] for a buffer of the wrong size, and any
    /// error of reading and decoding a chunk.
    pub fn read_regions(
        &self,
        param_name: &str,
        dtype: DType,
        reads: &mut [RegionRead<'_>],
    ) -> Result<()> {
        let zarr = self.zarr(param_name)?;
        let stored = zarr.stored();
        for read in reads.iter() {
            check_region_read(param_name, &stored, dtype, read)?;
        }

        let grid = zarr.chunk_grid();
        let chunks: BTreeSet<Vec<u64>> = reads
            .iter()
            .flat_map(|read| grid.chunks_overlapping(&read.region))
            .collect();
        for chunk_index in chunks {
            let chunk_box = grid.chunk_box(&chunk_index)?;
            let users: Vec<usize> = (0..reads.len())
                .filter(|&i| chunk_box.intersect(&reads[i].region).is_some())
                .collect();
            if let [only] = users[..] {
                if reads[only].region == chunk_box && dtype == stored.dtype {
                    zarr.read_chunk_into(&chunk_index, reads[only].dst)?;
                    continue;
                }
            }
            let chunk = zarr.read_chunk(&chunk_index)?;
            for i in users {
                let read = &mut reads[i];
                let Some(overlap) = chunk_box.intersect(&read.region) else {
                    continue;
                };
                if dtype == stored.dtype {
                    copy_region(&chunk, &chunk_box, read.dst, &read.region, &overlap, dtype.item_size())?;
                } else {
                    copy_region_cast(&chunk, &chunk_box, stored.dtype, read.dst, &read.region, dtype, &overlap)?;
                }
            }
        }
        Ok(())
    }
}

/// Checks that a read's region lies inside the array and that its buffer
/// is exactly the size of the region in `dtype`.
fn check_region_read(
    param_name: &str,
    stored: &StoredArray,
    dtype: DType,
    read: &RegionRead<'_>,
) -> Result<()> {
    if read.region.rank() != stored.shape.len() {
        return Err(CoreError::RankMismatch {
            expected: stored.shape.len(),
            found: read.region.rank(),
        }
        .into());
    }
    if !IndexBox::full(&stored.shape).contains(&read.region) {
        return Err(StorageError::InvalidRegion {
            array: param_name.to_owned(),
            region: read.region.to_string(),
            reason: format!("it reaches outside the array of shape {:?}", stored.shape),
        });
    }
    let expected = num_bytes(&read.region.shape(), dtype)?;
    if expected != read.dst.len() as u64 {
        return Err(CoreError::BufferSize {
            expected,
            found: read.dst.len() as u64,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a 4x4 int16 array holding 0..16 in 2x2 chunks and opens a reader.
    fn int16_item(format: &ArrayFormat) -> (ArrayReader, StoredArray) {
        let store = Store::new(Arc::new(crate::ObjectStoreBackend::memory().unwrap()));
        let stored = StoredArray {
            shape: vec![4, 4],
            dtype: DType::Int16,
            chunk_shape: vec![2, 2],
        };
        let writer = ArrayWriter::open(&store, format, "0").unwrap();
        writer.create_array("a", &stored).unwrap();
        let data: Vec<u8> = (0..16i16).flat_map(|v| v.to_le_bytes()).collect();
        writer.write_region("a", &stored, &IndexBox::full(&[4, 4]), &data).unwrap();
        writer.finish().unwrap();
        finalize_item(&store, format).unwrap();
        let reader = ArrayReader::open(&store, Some(format.use_ocdbt)).unwrap();
        (reader, stored)
    }

    #[test]
    fn read_regions_casts_and_shares_chunks() {
        for format in [ArrayFormat::default(), ArrayFormat::default().with_ocdbt(false).with_zarr3(true)] {
            let (reader, _) = int16_item(&format);
            let reader = reader.with_zarr3(format.use_zarr3);
            let rows = IndexBox::new(vec![1, 0], vec![2, 4]).unwrap();
            let mut first = vec![0u8; 16];
            let mut second = vec![0u8; 16];
            let mut reads = [
                RegionRead { region: rows.clone(), dst: &mut first },
                RegionRead { region: rows, dst: &mut second },
            ];
            reader.read_regions("a", DType::Float32, &mut reads).unwrap();
            let values: Vec<f32> = first.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            assert_eq!(values, [4.0, 5.0, 6.0, 7.0]);
            assert_eq!(first, second);
        }
    }

    #[test]
    fn read_region_decodes_whole_chunk() {
        let (reader, stored) = int16_item(&ArrayFormat::default());
        let chunk = IndexBox::new(vec![2, 2], vec![4, 4]).unwrap();
        let mut dst = vec![0u8; 8];
        reader.read_region("a", &stored, &chunk, &mut dst).unwrap();
        let values: Vec<i16> = dst.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        assert_eq!(values, [10, 11, 14, 15]);
    }

    #[test]
    fn read_regions_rejects_outside_region() {
        let (reader, _) = int16_item(&ArrayFormat::default());
        let mut dst = vec![0u8; 10];
        let mut reads = [RegionRead {
            region: IndexBox::new(vec![0, 0], vec![5, 1]).unwrap(),
            dst: &mut dst,
        }];
        let err = reader.read_regions("a", DType::Int16, &mut reads).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRegion { .. }), "{err}");
    }

    #[test]
    fn chunk_shape_without_target_is_write_shape() {
        assert_eq!(choose_chunk_shape(&[64, 64], &[8, 64], 4, None), vec![8, 64]);
    }

    #[test]
    fn chunk_shape_splits_sharded_dimension_first() {
        // Orbax fixture i: f32 [64, 64] row-sharded, write [8, 64], 1024 bytes.
        assert_eq!(choose_chunk_shape(&[64, 64], &[8, 64], 4, Some(1024)), vec![4, 64]);
    }

    #[test]
    fn chunk_shape_splits_unsharded_dimensions_when_needed() {
        // Nothing is sharded, so every dimension is a candidate; ties go to
        // the first dimension, so the two shrink in turn.
        let shape = choose_chunk_shape(&[64, 64], &[64, 64], 4, Some(1024));
        assert_eq!(shape, vec![16, 16]);
    }

    #[test]
    fn chunk_shape_divides_write_shape() {
        let shape = choose_chunk_shape(&[100, 30], &[50, 30], 8, Some(1000));
        assert_eq!(50 % shape[0], 0);
        assert_eq!(30 % shape[1], 0);
        assert!(shape[0] * shape[1] * 8 <= 1000);
    }

    #[test]
    fn divisors_are_sorted() {
        assert_eq!(divisors_of(12), vec![1, 2, 3, 4, 6, 12]);
        assert_eq!(divisors_of(1), vec![1]);
    }
}
