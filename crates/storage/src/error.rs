use thiserror::Error;

/// Errors of storage: opening stores, reading and writing keys, decoding
/// zarr and OCDBT data, and the commit protocol.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A URL or path that names no supported store.
    #[error("invalid store location {location:?}: {reason}")]
    InvalidLocation {
        /// The URL or path as given.
        location: String,
        /// What is wrong with it and what is accepted.
        reason: String,
    },
    /// A key that is absent from the store.
    #[error("{key} not found in {store}")]
    NotFound {
        /// The store, as its URL.
        store: String,
        /// The missing key.
        key: String,
    },
    /// A key that would leave the store's directory (`..`, absolute, empty segment).
    #[error(
        "invalid key {key:?}: keys are relative paths without \"..\", \".\" or empty segments"
    )]
    InvalidKey {
        /// The key as given.
        key: String,
    },
    /// A create-only write to a key that already exists.
    #[error("{key} already exists in {store}")]
    AlreadyExists {
        /// The store, as its URL.
        store: String,
        /// The existing key.
        key: String,
    },
    /// An I/O failure of the backend.
    #[error("{operation} {key} in {store} failed")]
    Io {
        /// The operation: read, write, list, delete or rename.
        operation: &'static str,
        /// The store, as its URL.
        store: String,
        /// The key or prefix involved.
        key: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stored data that does not decode: corrupt, truncated or of an unknown format.
    #[error("corrupt data in {key}: {reason}")]
    Corrupt {
        /// The key or file holding the data.
        key: String,
        /// What is wrong, with the values expected and found.
        reason: String,
    },
    /// A checkpoint directory that exists but was never committed.
    #[error("checkpoint {path} is not committed: {reason}; it may be a save in progress or one that failed, so restore another checkpoint or save again")]
    NotCommitted {
        /// The checkpoint directory.
        path: String,
        /// Why it does not count as committed.
        reason: String,
    },
    /// An operation that the store's backend does not support.
    #[error("{store} does not support {operation}")]
    Unsupported {
        /// The store, as its URL.
        store: String,
        /// The operation.
        operation: &'static str,
    },
    /// A byte range whose start lies after its end or that reaches past the end of an object.
    #[error("invalid byte range {start}..{end} of {key} in {store}: the object has {size} bytes")]
    InvalidRange {
        /// The store, as its URL.
        store: String,
        /// The key read.
        key: String,
        /// First byte requested.
        start: u64,
        /// One past the last byte requested.
        end: u64,
        /// Size of the object in bytes.
        size: u64,
    },
    /// A metadata document that is malformed, or valid but names a feature ckpt does not support.
    #[error("invalid metadata in {key}: {reason}")]
    InvalidMetadata {
        /// The key or file holding the document.
        key: String,
        /// The problem, with the value found and the values accepted.
        reason: String,
    },
    /// A region of an array that an operation cannot use as given.
    #[error("invalid region {region} for array {array}: {reason}")]
    InvalidRegion {
        /// The array, as its key prefix.
        array: String,
        /// The region, in slice notation.
        region: String,
        /// The problem with the region.
        reason: String,
    },
    /// A chunk index outside an array's grid of chunks, or of the wrong rank.
    #[error("chunk index {index:?} is outside the chunk grid {grid:?} of array {array}")]
    InvalidChunkIndex {
        /// The array, as its key prefix.
        array: String,
        /// The chunk index given.
        index: Vec<u64>,
        /// The number of chunks along each dimension.
        grid: Vec<u64>,
    },
    /// A checkpoint name that a save cannot use.
    #[error("invalid checkpoint name {name:?}: {reason}")]
    InvalidCheckpointName {
        /// The name as given.
        name: String,
        /// The problem with the name.
        reason: String,
    },
    /// A committed checkpoint that a save would replace.
    #[error("checkpoint {path} already exists: save under another name, delete it first, or allow overwriting it (with_overwrite(true) on a checkpointer, CommitOptions::overwrite in ckpt-storage)")]
    CheckpointExists {
        /// The checkpoint directory.
        path: String,
    },
    /// An OCDBT write that the database options or the format's limits cannot hold.
    #[error("invalid OCDBT write to {store}: {reason}")]
    InvalidOcdbtWrite {
        /// The database directory, as its URL.
        store: String,
        /// The option or limit, the value found, and what to change.
        reason: String,
    },
    /// A request that failed in a way that repeating it may fix, such as an
    /// HTTP 503 or 429 response. [`crate::RetryBackend`] retries these.
    #[error("{operation} {key} in {store} failed with a transient error")]
    Transient {
        /// The operation, such as read or write.
        operation: &'static str,
        /// The store, as its URL.
        store: String,
        /// The key or prefix involved.
        key: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request that did not finish within its deadline.
    #[error("{operation} {key} in {store} timed out after {timeout:?}: raise the request timeout if the store is slow, or check that it is reachable")]
    TimedOut {
        /// The operation, such as read or write.
        operation: &'static str,
        /// The store, as its URL.
        store: String,
        /// The key or prefix involved.
        key: String,
        /// The deadline that passed.
        timeout: std::time::Duration,
    },
    /// A store option with an invalid name or value.
    #[error("invalid store option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: String,
        /// The value found and the values accepted.
        reason: String,
    },
    /// A URL scheme that cannot be registered for a user-defined backend.
    #[error("cannot register a backend for scheme {scheme:?}: {reason}")]
    InvalidScheme {
        /// The scheme as given.
        scheme: String,
        /// The reason the scheme cannot be registered.
        reason: String,
    },
    /// An error of the core model, such as an invalid dtype or shape in metadata.
    #[error(transparent)]
    Core(#[from] ckpt_core::CoreError),
}

/// A `Result` with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
