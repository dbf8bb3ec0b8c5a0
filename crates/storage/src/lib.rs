//! Storage for ckpt: stores opened by URL, the zarr array drivers, OCDBT and
//! the commit protocol.
//!
//! A [`Backend`] is a flat key-value store of objects (local files, memory,
//! S3 through `object_store`, or a backend of your own). A [`Store`] is a
//! directory inside a backend. Array drivers read and write index boxes of
//! arrays as zarr chunks in a store; this crate knows nothing of devices or
//! meshes.
//!
//! - [`open_store`] opens a local directory ([`LocalBackend`]), an
//!   in-memory store, or S3, GCS, Azure and HTTP stores through
//!   object_store ([`ObjectStoreBackend`]) from a path or URL, with
//!   [`StoreOptions`] for endpoints, credentials, retries and multipart
//!   uploads. [`register_backend`] adds a backend of your own under a URL
//!   scheme; its documentation shows a complete one, and
//!   [`check_backend`] tests it against the [`Backend`] contract.
//! - [`RetryBackend`] retries transient errors and puts a deadline on every
//!   request of any backend. [`FaultyBackend`] and [`FaultyObjectStore`]
//!   inject the errors, delays, hangs and short writes of a [`FaultPlan`]
//!   for reliability tests.
//! - [`ZarrArray`] reads and writes index boxes of a zarr v2 array in any
//!   [`KvStore`], with the `.zarray` documents and zstd chunks Orbax writes.
//! - [`ZarrV3Array`] does the same for zarr v3, with `zarr.json` and the
//!   one-chunk shards that Orbax writes when `use_zarr3` is set.
//! - [`PendingCheckpoint`] writes a checkpoint directory and commits it.
//!   Where the backend renames directories atomically, it writes into
//!   `<name>.orbax-checkpoint-tmp` and renames it; elsewhere it writes
//!   `commit_success.txt` last. [`open_committed`] and [`list_committed`]
//!   return committed checkpoints only.
//!
//! Backend methods block. Chunk encoding and region copies then run on the
//! caller's threads, one per host or device, with no async runtime in that
//! path; backends over async clients drive them on a runtime of their own.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use ckpt_core::{DType, IndexBox};
//! use ckpt_storage::{open_store, PendingCheckpoint, ZarrArray, ZarrCompressor, ZarrV2Metadata};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let root = open_store(dir.path().to_str().ok_or("temporary path is not UTF-8")?)?;
//!
//! // Save a 4x6 float32 array in 2x3 chunks into a checkpoint named "ckpt".
//! let pending = PendingCheckpoint::begin(&root, "ckpt")?;
//! let zstd = Some(ZarrCompressor::Zstd { level: 1 });
//! let metadata = ZarrV2Metadata::new(vec![4, 6], vec![2, 3], DType::Float32, zstd)?;
//! let array = ZarrArray::create(Arc::new(pending.store().clone()), "params.w", metadata)?;
//! let values: Vec<u8> = (0..24u8).flat_map(|i| f32::from(i).to_le_bytes()).collect();
//! array.write_region(&IndexBox::full(&[4, 6]), &values)?;
//! let checkpoint = pending.commit()?;
//!
//! // Read rows 1..3 and columns 2..5, which span four chunks.
//! let array = ZarrArray::open(Arc::new(checkpoint), "params.w")?;
//! let region = IndexBox::new(vec![1, 2], vec![3, 5])?;
//! let mut bytes = vec![0u8; 2 * 3 * 4];
//! array.read_region(&region, &mut bytes)?;
//! let read: Vec<f32> = bytes
//!     .chunks_exact(4)
//!     .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
//!     .collect();
//! assert_eq!(read, [8.0, 9.0, 10.0, 14.0, 15.0, 16.0]);
//! # Ok(())
//! # }
//! ```

mod backend;
mod commit;
mod conformance;
mod error;
mod fault;
mod key;
mod kvstore;
mod layout;
mod local;
mod multipart;
mod object;
mod ocdbt;
mod open;
mod options;
mod registry;
mod retry;
mod store;
mod zarr;
mod zarr3;

pub use crate::{
    backend::{Backend, Capabilities},
    commit::{
        list_committed, open_committed, CheckpointMetadata, CommitOptions, ItemHandlers,
        PendingCheckpoint, CHECKPOINT_METADATA_FILE, COMMIT_SUCCESS_FILE,
        MAX_CHECKPOINT_METADATA_BYTES, TMP_SUFFIX,
    },
    conformance::{check_backend, ConformanceCheck, CONFORMANCE_CHECKS},
    error::{Result, StorageError},
    fault::{
        Fault, FaultPlan, FaultRule, FaultyBackend, FaultyObjectStore, InjectedFault, Operation,
    },
    key::validate_key,
    kvstore::KvStore,
    layout::{
        choose_chunk_shape, finalize_item, ArrayFormat, ArrayReader, ArrayWriter, Compression,
        RegionRead, StoredArray, DEFAULT_MAX_CHUNK_BYTES, OCDBT_PROCESS_PREFIX,
    },
    local::LocalBackend,
    object::ObjectStoreBackend,
    ocdbt::{
        format as ocdbt_format, merge_databases, OcdbtCompression, OcdbtConfig, OcdbtError,
        OcdbtReader, OcdbtWriter, OcdbtWriterOptions,
    },
    open::{open_object_store, open_store, open_store_with},
    options::{MultipartConfig, RangeReadConfig, RetryConfig, StoreOptions, MIN_PART_SIZE},
    registry::{register_backend, register_object_store, BackendFactory},
    retry::RetryBackend,
    store::Store,
    zarr::{MissingChunks, ZarrArray, ZarrCompressor, ZarrV2Metadata, MAX_ZARRAY_BYTES},
    zarr3::{ZarrV3Array, ZarrV3Compressor, ZarrV3Metadata, MAX_ZARR_JSON_BYTES},
};
