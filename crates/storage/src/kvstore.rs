use std::fmt::Debug;

use bytes::Bytes;

use crate::{Result, Store};

/// The key-value interface that array drivers write chunks through.
///
/// A plain directory ([`Store`]) and an OCDBT database both implement it, as
/// in TensorStore, where the zarr driver sits on top of any kvstore. Keys are
/// relative to the array's root inside the kvstore.
pub trait KvStore: Send + Sync + Debug {
    /// The location, as a URL, for error messages.
    fn url(&self) -> String;

    /// Reads a value; `Ok(None)` when the key is absent.
    fn read(&self, key: &str) -> Result<Option<Bytes>>;

    /// Writes a value. A database kvstore may buffer it until its own commit.
    fn write(&self, key: &str, value: Bytes) -> Result<()>;
}

impl KvStore for Store {
    fn url(&self) -> String {
        Store::url(self)
    }

    fn read(&self, key: &str) -> Result<Option<Bytes>> {
        self.get(key)
    }

    fn write(&self, key: &str, value: Bytes) -> Result<()> {
        self.put(key, value)
    }
}
