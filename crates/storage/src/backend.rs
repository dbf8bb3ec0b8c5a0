use std::{fmt::Debug, ops::Range, path::Path};

use bytes::Bytes;

use crate::Result;

/// What a backend can do beyond plain reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether [`Backend::rename_dir`] moves a directory atomically, so a
    /// checkpoint can be written under a temporary name and renamed at commit.
    pub atomic_rename: bool,
    /// Whether [`Backend::put_if_absent`] is a real create-only write.
    pub create_only_put: bool,
}

/// A flat key-value store of objects, the contract every storage backend meets.
///
/// Keys are `/`-separated relative paths that were checked by
/// [`crate::validate_key`]. Methods are blocking; a backend over an async
/// client runs it on its own runtime. Framework authors implement this trait
/// to add a storage system of their own.
pub trait Backend: Send + Sync + Debug {
    /// The store's location as a URL, used in error messages.
    fn url(&self) -> String;

    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Reads a whole object; `Ok(None)` when the key is absent.
    fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Reads the byte range `range` of an object; `Ok(None)` when the key is absent.
    ///
    /// A range past the end of the object, or with its start after its end,
    /// is [`crate::StorageError::InvalidRange`], never a short read.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>>;

    /// Writes an object, replacing any previous value. Readers never see a
    /// partly written object.
    fn put(&self, key: &str, value: Bytes) -> Result<()>;

    /// Writes an object only if the key is absent, returning
    /// [`crate::StorageError::AlreadyExists`] otherwise.
    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()>;

    /// Returns the size of an object in bytes; `Ok(None)` when the key is absent.
    fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Lists every key under `prefix` (a directory ending in `/`, or `""`), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Lists the immediate child directories of `prefix` as full keys
    /// (`prefix` followed by the name), sorted, without the trailing `/`.
    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>>;

    /// Deletes every key under `prefix`; deleting nothing is not an error.
    fn delete_prefix(&self, prefix: &str) -> Result<()>;

    /// Renames the directory `from` to `to` atomically, failing if `to` exists.
    /// Only called when [`Capabilities::atomic_rename`] is set.
    fn rename_dir(&self, from: &str, to: &str) -> Result<()>;

    /// The local directory behind this store, for fast paths such as memory maps.
    fn local_root(&self) -> Option<&Path> {
        None
    }
}
