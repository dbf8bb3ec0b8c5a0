//! The core model of ckpt: element types, shapes, index boxes and the region copy.
//!
//! Every other ckpt crate describes arrays with these types. [`DType`] names
//! each element type Orbax writes, with its zarr v2 and v3 spellings.
//! [`IndexBox`] is a hyper-rectangle of indices in a global array: a shard,
//! a chunk or a restore target. [`copy_region`] moves the elements of one box
//! between two buffers laid out for different boxes, which is how resharding
//! works: a restore reads the chunks that overlap a device's box and copies
//! the overlap of each into the device's buffer.
//!
//! # Example
//!
//! ```
//! use ckpt_core::{copy_region, DType, IndexBox};
//!
//! # fn main() -> Result<(), ckpt_core::CoreError> {
//! // A 2x4 array of u8 holding 0..8; take its right half.
//! let whole = IndexBox::full(&[2, 4]);
//! let right = IndexBox::new(vec![0, 2], vec![2, 4])?;
//! let src: Vec<u8> = (0..8).collect();
//! let mut dst = vec![0u8; 4];
//! copy_region(&src, &whole, &mut dst, &right, &right, DType::UInt8.item_size())?;
//! assert_eq!(dst, [2, 3, 6, 7]);
//! # Ok(())
//! # }
//! ```

mod cast;
mod dtype;
mod element;
mod error;
mod index_box;
mod region;
mod shape;

pub use crate::{
    cast::{cast_elements, CastKind},
    dtype::DType,
    element::Element,
    error::CoreError,
    index_box::{BoxIndices, ChunkGrid, IndexBox},
    region::{copy_region, copy_region_cast},
    shape::{c_strides, num_bytes, num_bytes_usize, num_elements, zeroed_bytes},
};
