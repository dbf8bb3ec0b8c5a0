//! User-defined backends, registered under URL schemes that
//! [`crate::open_store`] then opens.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, RwLock},
};

use object_store::ObjectStore;
use url::Url;

use crate::{Backend, ObjectStoreBackend, Result, StorageError, StoreOptions};

/// Schemes that ckpt opens itself and that no registration may replace.
pub(crate) const BUILT_IN_SCHEMES: [&str; 12] = [
    "file", "memory", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https",
];

/// A constructor of backends for one URL scheme, registered with [`register_backend`].
///
/// Any `Fn(&Url, &StoreOptions) -> Result<Arc<dyn Backend>>` closure that
/// is `Send + Sync` implements it.
pub trait BackendFactory: Send + Sync {
    /// Opens the backend for `url`, whose scheme is the registered one.
    ///
    /// The path of `url` becomes the store's directory inside the returned
    /// backend, so the backend's root is the URL's scheme and host. The URL
    /// has its query removed; the query's key-value pairs come first in
    /// `options.config`.
    fn open(&self, url: &Url, options: &StoreOptions) -> Result<Arc<dyn Backend>>;
}

impl<F> BackendFactory for F
where
    F: Fn(&Url, &StoreOptions) -> Result<Arc<dyn Backend>> + Send + Sync,
{
    fn open(&self, url: &Url, options: &StoreOptions) -> Result<Arc<dyn Backend>> {
        self(url, options)
    }
}

type Registry = RwLock<HashMap<String, Arc<dyn BackendFactory>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Registers `factory` to open the stores of URLs with scheme `scheme`.
///
/// After this call, [`crate::open_store`] opens `scheme://host/dir` by
/// asking the factory for the backend of `scheme://host` and taking `dir`
/// as the store's directory. The backend is wrapped in a
/// [`crate::RetryBackend`] with [`StoreOptions::retry`], so it gets retries
/// and deadlines by returning [`StorageError::Transient`] for errors that
/// may pass. [`crate::check_backend`] tests that a backend meets the
/// [`Backend`] contract.
///
/// Schemes are case-insensitive and have the URL syntax: a letter, then
/// letters, digits, `+`, `-` or `.`. Fails with
/// [`StorageError::InvalidScheme`] for a scheme of another form, a scheme
/// ckpt opens itself (`file`, `memory`, `s3`, `gs`, `az`, `http`, …), or one
/// already registered.
///
/// # Example
///
/// A backend that keeps objects in a map, registered under `mapfs://`:
///
/// ```
/// use std::{collections::BTreeMap, ops::Range, sync::{Arc, Mutex}};
///
/// use bytes::Bytes;
/// use ckpt_storage::{
///     open_store, register_backend, Backend, Capabilities, Result, StorageError, StoreOptions,
/// };
///
/// #[derive(Debug, Default)]
/// struct MapBackend {
///     objects: Mutex<BTreeMap<String, Bytes>>,
/// }
///
/// impl MapBackend {
///     fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
///         self.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
///     }
/// }
///
/// impl Backend for MapBackend {
///     fn url(&self) -> String {
///         "mapfs://".to_owned()
///     }
///     fn capabilities(&self) -> Capabilities {
///         let mut capabilities = Capabilities::default();
///         capabilities.create_only_put = true;
///         capabilities
///     }
///     fn get(&self, key: &str) -> Result<Option<Bytes>> {
///         ckpt_storage::validate_key(key)?;
///         Ok(self.objects().get(key).cloned())
///     }
///     fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
///         let Some(value) = self.get(key)? else { return Ok(None) };
///         let size = value.len() as u64;
///         if range.start > range.end || range.end > size {
///             return Err(StorageError::InvalidRange {
///                 store: self.url(), key: key.to_owned(),
///                 start: range.start, end: range.end, size,
///             });
///         }
///         Ok(Some(value.slice(range.start as usize..range.end as usize)))
///     }
///     fn put(&self, key: &str, value: Bytes) -> Result<()> {
///         ckpt_storage::validate_key(key)?;
///         self.objects().insert(key.to_owned(), value);
///         Ok(())
///     }
///     fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
///         ckpt_storage::validate_key(key)?;
///         let mut objects = self.objects();
///         if objects.contains_key(key) {
///             return Err(StorageError::AlreadyExists { store: self.url(), key: key.to_owned() });
///         }
///         objects.insert(key.to_owned(), value);
///         Ok(())
///     }
///     fn size(&self, key: &str) -> Result<Option<u64>> {
///         Ok(self.get(key)?.map(|value| value.len() as u64))
///     }
///     fn list(&self, prefix: &str) -> Result<Vec<String>> {
///         let prefix = directory(prefix)?;
///         Ok(self.objects().keys().filter(|key| key.starts_with(&prefix)).cloned().collect())
///     }
///     fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
///         let prefix = directory(prefix)?;
///         let mut dirs: Vec<String> = self.list(&prefix)?.iter()
///             .filter_map(|key| {
///                 let (child, _) = key[prefix.len()..].split_once('/')?;
///                 Some(format!("{prefix}{child}"))
///             })
///             .collect();
///         dirs.dedup();
///         Ok(dirs)
///     }
///     fn delete_prefix(&self, prefix: &str) -> Result<()> {
///         let prefix = directory(prefix)?;
///         self.objects().retain(|key, _| !key.starts_with(&prefix));
///         Ok(())
///     }
///     fn rename_dir(&self, _from: &str, _to: &str) -> Result<()> {
///         Err(StorageError::Unsupported { store: self.url(), operation: "rename" })
///     }
/// }
///
/// /// Returns `prefix` as a directory ending in `/`, or `""` for the root.
/// fn directory(prefix: &str) -> Result<String> {
///     if prefix.is_empty() {
///         return Ok(String::new());
///     }
///     ckpt_storage::validate_key(prefix)?;
///     Ok(format!("{}/", prefix.trim_end_matches('/')))
/// }
///
/// # fn main() -> Result<()> {
/// register_backend("mapfs", |_url: &url::Url, _options: &StoreOptions| {
///     Ok(Arc::new(MapBackend::default()) as Arc<dyn Backend>)
/// })?;
/// let store = open_store("mapfs://example/checkpoints")?;
/// store.put("step_1/commit_success.txt", Bytes::from_static(b"done"))?;
/// assert_eq!(store.list_dirs()?, ["step_1"]);
/// # Ok(())
/// # }
/// ```
pub fn register_backend(scheme: &str, factory: impl BackendFactory + 'static) -> Result<()> {
    let scheme = check_scheme(scheme)?;
    let mut registry = registry().write().unwrap_or_else(|e| e.into_inner());
    if registry.contains_key(&scheme) {
        return Err(StorageError::InvalidScheme {
            scheme,
            reason: "a backend is already registered for it".to_owned(),
        });
    }
    registry.insert(scheme, Arc::new(factory));
    Ok(())
}

/// Registers `factory` to open the stores of scheme `scheme` as object_store stores.
///
/// The same as [`register_backend`] for a factory that returns an
/// [`ObjectStore`], which is then driven by an [`ObjectStoreBackend`] with
/// the multipart settings and request timeout of the options.
pub fn register_object_store<F>(scheme: &str, factory: F) -> Result<()>
where
    F: Fn(&Url, &StoreOptions) -> Result<Arc<dyn ObjectStore>> + Send + Sync + 'static,
{
    register_backend(scheme, move |url: &Url, options: &StoreOptions| {
        let store = factory(url, options)?;
        let root = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        let backend = ObjectStoreBackend::new(store, root)?
            .with_multipart(options.multipart)
            .with_range_reads(options.range_reads)
            .with_request_timeout(options.retry.request_timeout);
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    })
}

/// Returns the factory registered for `scheme`, which must be lowercase.
pub(crate) fn registered(scheme: &str) -> Option<Arc<dyn BackendFactory>> {
    let registry = registry().read().unwrap_or_else(|e| e.into_inner());
    registry.get(scheme).cloned()
}

/// Returns the registered schemes, sorted, for error messages.
pub(crate) fn registered_schemes() -> Vec<String> {
    let registry = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut schemes: Vec<String> = registry.keys().cloned().collect();
    schemes.sort();
    schemes
}

fn check_scheme(scheme: &str) -> Result<String> {
    let invalid = |reason: &str| StorageError::InvalidScheme {
        scheme: scheme.to_owned(),
        reason: reason.to_owned(),
    };
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return Err(invalid(
            "a scheme is a letter followed by letters, digits, \"+\", \"-\" or \".\"",
        ));
    }
    let scheme = scheme.to_ascii_lowercase();
    if BUILT_IN_SCHEMES.contains(&scheme.as_str()) {
        return Err(invalid("ckpt opens this scheme itself"));
    }
    Ok(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_factory(_url: &Url, _options: &StoreOptions) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(ObjectStoreBackend::memory()?))
    }

    #[test]
    fn built_in_scheme_rejected() {
        let err = register_backend("S3", memory_factory).unwrap_err();
        assert!(matches!(err, StorageError::InvalidScheme { .. }), "{err}");
    }

    #[test]
    fn malformed_scheme_rejected() {
        for scheme in ["", "1abc", "a b", "a:b"] {
            let err = register_backend(scheme, memory_factory).unwrap_err();
            assert!(
                matches!(err, StorageError::InvalidScheme { .. }),
                "{scheme:?}: {err}"
            );
        }
    }

    #[test]
    fn duplicate_scheme_rejected() {
        register_backend("registry-dup", memory_factory).unwrap();
        let err = register_backend("Registry-Dup", memory_factory).unwrap_err();
        assert!(matches!(err, StorageError::InvalidScheme { .. }), "{err}");
    }

    #[test]
    fn scheme_is_case_insensitive() {
        register_backend("Registry-Case", memory_factory).unwrap();
        assert!(registered("registry-case").is_some());
        assert!(registered_schemes().contains(&"registry-case".to_owned()));
    }
}
