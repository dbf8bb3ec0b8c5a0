//! The zarr v3 array driver: `zarr.json` metadata, chunk keys, the
//! sharding codec with one chunk per shard, and reads and writes of index
//! boxes over a [`crate::KvStore`].

mod array;
mod metadata;
mod parse;
mod shard;

pub use self::{
    array::ZarrV3Array,
    metadata::{ZarrV3Compressor, ZarrV3Metadata, MAX_ZARR_JSON_BYTES},
};
