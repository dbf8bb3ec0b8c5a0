use std::{fmt, ops::Range, path::PathBuf, sync::Arc};

use bytes::Bytes;

use crate::{validate_key, Backend, Capabilities, Result, StorageError};

/// A directory inside a backend: every key is relative to its prefix.
///
/// Cloning is cheap and shares the backend. A checkpoint, an item inside it,
/// and a zarr array inside the item are each a `Store` one level deeper,
/// made with [`Store::child`].
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// Empty, or a validated key ending in `/`.
    prefix: String,
}

impl Store {
    /// Creates a store at the root of `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        Store {
            backend,
            prefix: String::new(),
        }
    }

    /// The backend behind this store.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The directory of this store inside its backend: empty or ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What the backend supports.
    pub fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// The store's location as a URL, for messages.
    pub fn url(&self) -> String {
        join_url(&self.backend.url(), &self.prefix)
    }

    /// The local directory of this store, when the backend is a local filesystem.
    pub fn local_path(&self) -> Option<PathBuf> {
        let root = self.backend.local_root()?;
        Some(root.join(self.prefix.trim_end_matches('/')))
    }

    /// Returns the store for the directory `name` below this one.
    pub fn child(&self, name: &str) -> Result<Store> {
        validate_key(name)?;
        Ok(Store {
            backend: Arc::clone(&self.backend),
            prefix: format!("{}{}/", self.prefix, name.trim_end_matches('/')),
        })
    }

    /// The full backend key of `key`, after checking that it stays inside this store.
    pub fn full_key(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// Reads a whole object; `Ok(None)` when absent.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.backend.get(&self.full_key(key)?)
    }

    /// Reads a whole object, failing with [`StorageError::NotFound`] when absent.
    pub fn get_required(&self, key: &str) -> Result<Bytes> {
        self.get(key)?.ok_or_else(|| StorageError::NotFound {
            store: self.url(),
            key: key.to_owned(),
        })
    }

    /// Reads a byte range of an object; `Ok(None)` when absent.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        self.backend.get_range(&self.full_key(key)?, range)
    }

    /// Writes an object, replacing any previous value.
    pub fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.backend.put(&self.full_key(key)?, value)
    }

    /// Writes an object only if it is absent.
    pub fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
        self.backend.put_if_absent(&self.full_key(key)?, value)
    }

    /// The size of an object; `Ok(None)` when absent.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        self.backend.size(&self.full_key(key)?)
    }

    /// Whether an object exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// Lists every key below this store, relative to it, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let keys = self.backend.list(&self.prefix)?;
        Ok(keys
            .into_iter()
            .filter_map(|key| key.strip_prefix(&self.prefix).map(str::to_owned))
            .collect())
    }

    /// Lists the immediate child directories of this store, sorted.
    pub fn list_dirs(&self) -> Result<Vec<String>> {
        let dirs = self.backend.list_dirs(&self.prefix)?;
        Ok(dirs
            .into_iter()
            .map(|dir| {
                dir.strip_prefix(&self.prefix)
                    .unwrap_or(&dir)
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect())
    }

    /// Deletes everything below this store.
    pub fn delete_all(&self) -> Result<()> {
        self.backend.delete_prefix(&self.prefix)
    }

    /// Renames the child directory `from` to `to`, atomically where the backend can.
    pub fn rename_child(&self, from: &str, to: &str) -> Result<()> {
        let from = self.full_key(from)?;
        let to = self.full_key(to)?;
        self.backend.rename_dir(&from, &to)
    }
}

/// Joins a store URL and a key with one `/`, keeping the `//` of a bare
/// `scheme://` root such as `memory://`.
pub(crate) fn join_url(root: &str, key: &str) -> String {
    let root = if root.ends_with("://") {
        root
    } else {
        root.trim_end_matches('/')
    };
    let key = key.trim_matches('/');
    if key.is_empty() {
        root.to_owned()
    } else {
        format!("{root}/{key}")
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("url", &self.url()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_joins_prefix() {
        assert_eq!(join_url("file:///data/", "a/b/"), "file:///data/a/b");
        assert_eq!(join_url("file:///data", ""), "file:///data");
    }

    #[test]
    fn url_keeps_bare_scheme_root() {
        assert_eq!(join_url("memory://", ""), "memory://");
        assert_eq!(join_url("memory://", "a/"), "memory:///a");
    }
}
