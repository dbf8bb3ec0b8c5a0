//! Storage for ckpt: stores opened by URL, the zarr array drivers, OCDBT and
//! the commit protocol.
//!
//! A [`Backend`] is a flat key-value store of objects (local files, memory,
//! S3 through `object_store`, or a backend of your own). A [`Store`] is a
//! directory inside a backend. Array drivers read and write index boxes of
//! arrays as zarr chunks in a store; this crate knows nothing of devices or
//! meshes.

mod backend;
#[cfg(test)]
mod conformance;
mod error;
mod key;
mod kvstore;
mod local;
mod object;
mod open;
mod store;
mod zarr;

pub use crate::{
    backend::{Backend, Capabilities},
    error::{Result, StorageError},
    key::validate_key,
    kvstore::KvStore,
    local::LocalBackend,
    object::ObjectStoreBackend,
    open::open_store,
    store::Store,
    zarr::{MissingChunks, ZarrArray, ZarrCompressor, ZarrV2Metadata, MAX_ZARRAY_BYTES},
};
