use thiserror::Error;

/// Errors of the core model: invalid dtypes, shapes, boxes and buffers.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// A dtype name that neither zarr v2, zarr v3 nor NumPy uses for a supported type.
    #[error("unknown dtype {name:?}: expected a zarr or NumPy name such as \"<f4\", \"float32\" or \"bfloat16\"")]
    UnknownDType {
        /// The name as found.
        name: String,
    },
    /// A shape whose element count or byte size does not fit in 64 bits.
    #[error("shape {shape:?} is too large: its element count or byte size overflows 64 bits")]
    ShapeOverflow {
        /// The offending shape.
        shape: Vec<u64>,
    },
    /// Two shapes, boxes or indices that must have the same rank do not.
    #[error("rank mismatch: expected {expected} dimensions, found {found}")]
    RankMismatch {
        /// The rank required by the other operand.
        expected: usize,
        /// The rank found.
        found: usize,
    },
    /// A box whose start lies after its stop in some dimension.
    #[error("invalid index box: start {start:?} lies after stop {stop:?}")]
    InvalidBox {
        /// Inclusive lower corner.
        start: Vec<u64>,
        /// Exclusive upper corner.
        stop: Vec<u64>,
    },
    /// A region that is not contained in the box of a buffer it is copied from or to.
    #[error("region {region} is not inside the buffer's box {buffer_box}")]
    RegionOutOfBounds {
        /// The region being copied.
        region: String,
        /// The box of the buffer.
        buffer_box: String,
    },
    /// A buffer whose length does not match its box and dtype.
    #[error("buffer holds {found} bytes but its box and dtype need {expected}")]
    BufferSize {
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// A buffer for an array that the allocator could not provide.
    #[error("cannot allocate {bytes} bytes for an array of shape {shape:?}: not enough memory; check the shape, or restore the array onto a sharding over more devices")]
    AllocationFailed {
        /// The array's shape.
        shape: Vec<u64>,
        /// The bytes requested.
        bytes: u64,
    },
    /// A chunk shape with a zero extent, or with a rank other than the array's.
    #[error("invalid chunk shape {chunk_shape:?} for array shape {shape:?}: every extent must be at least 1")]
    InvalidChunkShape {
        /// The array shape.
        shape: Vec<u64>,
        /// The chunk shape.
        chunk_shape: Vec<u64>,
    },
}
