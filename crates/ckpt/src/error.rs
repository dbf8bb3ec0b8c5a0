use thiserror::Error;

/// Errors of saving, restoring and inspecting checkpoints.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CkptError {
    /// A type handler registered twice for one leaf type without `override`.
    #[error("a type handler for {leaf_type} is already registered: pass override = true to replace it")]
    HandlerExists {
        /// The leaf type.
        leaf_type: String,
    },
    /// A leaf whose type has no registered handler.
    #[error("no type handler is registered for {leaf_type} (leaf {key_path}): register one with register_type_handler")]
    NoHandler {
        /// The leaf type or the `value_type` found in `_METADATA`.
        leaf_type: String,
        /// The leaf's key path.
        key_path: String,
    },
    /// A leaf that cannot be saved as given.
    #[error("cannot save leaf {key_path}: {reason}")]
    InvalidLeaf {
        /// The leaf's key path.
        key_path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A leaf whose restore arguments do not fit the checkpoint.
    #[error("cannot restore leaf {key_path}: {reason}")]
    InvalidRestore {
        /// The leaf's key path.
        key_path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Checkpoint metadata that is missing, malformed or inconsistent.
    #[error("invalid checkpoint metadata in {path}: {reason}")]
    InvalidMetadata {
        /// The file or directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint whose arrays are stored in a format ckpt does not read.
    #[error("cannot read {path}: its _METADATA says arrays are stored as {format}, which ckpt does not read yet, so restore it with Orbax and save it again in Orbax's default format (OCDBT with zarr v2)")]
    UnsupportedFormat {
        /// The checkpoint item directory.
        path: String,
        /// The storage format, such as `zarr v3`.
        format: String,
    },
    /// An error of the pytree model: a key that collides or escapes, or a
    /// structure mismatch.
    #[error(transparent)]
    PyTree(#[from] ckpt_pytree::TreeError),
    /// An error of the device model.
    #[error(transparent)]
    Device(#[from] ckpt_device::DeviceError),
    /// An error of storage.
    #[error(transparent)]
    Storage(#[from] ckpt_storage::StorageError),
    /// An error of the runtime or of a host.
    #[error(transparent)]
    Colocated(#[from] ckpt_colocated::ColocatedError),
    /// An error of the core model.
    #[error(transparent)]
    Core(#[from] ckpt_core::CoreError),
}

/// A `Result` with [`CkptError`].
pub type Result<T, E = CkptError> = std::result::Result<T, E>;
