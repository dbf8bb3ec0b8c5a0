//! The zarr v2 array driver: `.zarray` metadata, chunk keys, the chunk codec
//! and reads and writes of index boxes over a [`crate::KvStore`].

mod array;
mod codec;
mod metadata;

pub use self::{
    array::{MissingChunks, ZarrArray},
    metadata::{ZarrCompressor, ZarrV2Metadata, MAX_ZARRAY_BYTES},
};
