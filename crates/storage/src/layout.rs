//! How a checkpoint item stores its arrays: zarr arrays in plain
//! directories or in OCDBT databases, as Orbax's `use_ocdbt` and
//! `use_zarr3` options choose.
//!
//! Every process that writes array data opens its own [`ArrayWriter`]; with
//! OCDBT each writes its own database `ocdbt.process_<name>/` and
//! [`finalize_item`] merges them into the item's root database at commit,
//! so that readers find every key through the root.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ckpt_core::{DType, IndexBox};

use crate::{
    merge_databases,
    zarr::{ZarrArray, ZarrCompressor, ZarrV2Metadata},
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
}

impl ArrayWriter {
    /// Opens a writer named `writer_name` (a process index, or `controller`)
    /// for the item directory `item`.
    ///
    /// With OCDBT the writer creates its own database
    /// `ocdbt.process_<writer_name>/` in the item, so writers never share a
    /// file; without it, chunks go straight into the item's directories.
    pub fn open(item: &Store, format: &ArrayFormat, writer_name: &str) -> Result<ArrayWriter> {
        if format.use_zarr3 {
            return Err(StorageError::Unsupported {
                store: item.url(),
                operation: "writing zarr v3 (not yet implemented)",
            });
        }
        if !format.use_ocdbt {
            return Ok(ArrayWriter {
                kv: Arc::new(item.clone()),
                ocdbt: None,
                format: format.clone(),
            });
        }
        let database = item.child(&format!("{OCDBT_PROCESS_PREFIX}{writer_name}"))?;
        let writer = Arc::new(OcdbtWriter::create(database, OcdbtWriterOptions::default())?);
        Ok(ArrayWriter {
            kv: Arc::clone(&writer) as Arc<dyn KvStore>,
            ocdbt: Some(writer),
            format: format.clone(),
        })
    }

    /// Writes the zarr metadata of an array. One writer does this per array.
    pub fn create_array(&self, param_name: &str, array: &StoredArray) -> Result<()> {
        ZarrArray::create(Arc::clone(&self.kv), param_name, zarr_v2_metadata(array, &self.format)?)?;
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
        let metadata = zarr_v2_metadata(array, &self.format)?;
        let chunks = metadata.chunk_grid().chunks_overlapping(region).len() as u64;
        let zarr = ZarrArray::with_metadata(Arc::clone(&self.kv), param_name, metadata)?;
        zarr.write_region(region, data)?;
        Ok(chunks)
    }

    /// Finishes the writer: commits its database where there is one.
    pub fn finish(self) -> Result<()> {
        if let Some(writer) = &self.ocdbt {
            writer.commit()?;
        }
        Ok(())
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
    arrays: Mutex<HashMap<String, Arc<ZarrArray>>>,
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
            arrays: Mutex::new(HashMap::new()),
        })
    }

    fn zarr(&self, param_name: &str) -> Result<Arc<ZarrArray>> {
        let mut arrays = self.arrays.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(array) = arrays.get(param_name) {
            return Ok(Arc::clone(array));
        }
        let array = Arc::new(ZarrArray::open(Arc::clone(&self.kv), param_name)?);
        arrays.insert(param_name.to_owned(), Arc::clone(&array));
        Ok(array)
    }

    /// Reads the shape, dtype and chunk shape of an array.
    pub fn array(&self, param_name: &str) -> Result<StoredArray> {
        let zarr = self.zarr(param_name)?;
        let metadata = zarr.metadata();
        Ok(StoredArray {
            shape: metadata.shape().to_vec(),
            dtype: metadata.dtype(),
            chunk_shape: metadata.chunks().to_vec(),
        })
    }

    /// Reads `region` of an array into `dst`, laid out in C order for `region`.
    pub fn read_region(
        &self,
        param_name: &str,
        array: &StoredArray,
        region: &IndexBox,
        dst: &mut [u8],
    ) -> Result<()> {
        let _ = array;
        self.zarr(param_name)?.read_region(region, dst)
    }
}
