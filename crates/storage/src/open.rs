use std::{path::Path, sync::Arc};

use object_store::{memory::InMemory, path::Path as ObjectPath, ObjectStore, ObjectStoreScheme};
use url::Url;

use crate::{
    registry::{registered, registered_schemes},
    Backend, LocalBackend, ObjectStoreBackend, Result, RetryBackend, StorageError, Store,
    StoreOptions,
};

/// The locations [`open_store`] accepts, for error messages.
const SUPPORTED: &str = "expected a local path, a file:///absolute/path URL, memory://[name], \
    s3://bucket/dir, gs://bucket/dir, az://container/dir, http(s)://host/dir \
    or a URL of a scheme registered with register_backend";

/// Opens the store at `location` with default options.
///
/// Accepted locations:
/// - a local path, relative or absolute, or a `file:///absolute/path` URL:
///   a [`LocalBackend`] on that directory, which is created when missing;
/// - `memory://`, `memory://name` or `memory://name/dir`: a new, empty
///   in-memory store on every call. To open one memory store several times,
///   share its backend instead: `Store::new(Arc::new(ObjectStoreBackend::memory()?))`
///   and clones of that store;
/// - `s3://bucket/dir` (also `s3a://`), `gs://bucket/dir`, `az://`,
///   `abfs(s)://`, `adl://`, `azure://` and `http(s)://host/dir` URLs,
///   opened through object_store as [`open_store_with`] describes;
/// - URLs of a scheme registered with [`crate::register_backend`].
///
/// Any other URL scheme is [`StorageError::InvalidLocation`].
pub fn open_store(location: &str) -> Result<Store> {
    open_store_with(location, &StoreOptions::default())
}

/// Opens the store at `location` with `options`.
///
/// Cloud URLs are opened by object_store's builders, which read
/// credentials and settings from the environment (`AWS_*`, `GOOGLE_*`,
/// `AZURE_*`). Query parameters of the URL override those, and
/// `options.config` overrides both:
/// `s3://bucket/dir?endpoint=http://127.0.0.1:9000&allow_http=true` reaches
/// an S3-compatible server. S3 requests use path-style addressing unless
/// `virtual_hosted_style_request` is `true`, so bucket names with dots work.
/// A config key that the store's builder does not accept fails the call
/// with [`StorageError::InvalidOption`].
///
/// The retry settings go to object_store's HTTP client, except that a
/// `request_timeout` of `None` keeps the client's default of 30 s. Writes
/// of at least `options.multipart.threshold()` bytes are multipart uploads.
pub fn open_store_with(location: &str, options: &StoreOptions) -> Result<Store> {
    let invalid = |reason: String| StorageError::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    if location.is_empty() {
        return Err(invalid(format!("the location is empty: {SUPPORTED}")));
    }

    let Some(scheme) = url_scheme(location) else {
        return open_local(Path::new(location));
    };
    match scheme.as_str() {
        "file" => {
            let url =
                Url::parse(location).map_err(|error| invalid(format!("{error}: {SUPPORTED}")))?;
            let path = url.to_file_path().map_err(|()| {
                invalid(format!(
                    "a file URL needs an absolute path and no host other than localhost: {SUPPORTED}"
                ))
            })?;
            open_local(&path)
        }
        "memory" => open_memory(&location["memory://".len()..]),
        "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" | "http" | "https" => {
            open_cloud(location, options)
        }
        scheme => match registered(scheme) {
            Some(factory) => open_registered(location, factory.as_ref(), options),
            None => Err(invalid(format!(
                "unsupported scheme {scheme:?}: {SUPPORTED} (registered: {:?})",
                registered_schemes()
            ))),
        },
    }
}

/// Opens the object_store store of a cloud URL, with the settings [`open_store_with`] describes.
///
/// Returns the store and the path of the URL's directory inside it. This
/// is for callers that wrap the store before handing it to an
/// [`ObjectStoreBackend`], or that use object_store directly.
pub fn open_object_store(
    location: &str,
    options: &StoreOptions,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let invalid = |reason: String| StorageError::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    let (url, config) = split_query(location, options)?;
    let (scheme, path) =
        ObjectStoreScheme::parse(&url).map_err(|error| invalid(format!("{error}: {SUPPORTED}")))?;
    let retry = options.retry.to_object_store();

    let mut client_config = Vec::new();
    if let Some(timeout) = options.retry.request_timeout {
        client_config.push(("timeout".to_owned(), format!("{}ms", timeout.as_millis())));
    }
    if let Some(timeout) = options.retry.connect_timeout {
        client_config.push((
            "connect_timeout".to_owned(),
            format!("{}ms", timeout.as_millis()),
        ));
    }
    let config = client_config.into_iter().chain(config);

    let built = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
            for (key, value) in config {
                builder = builder.with_config(parse_key(&key)?, value);
            }
            builder
                .with_retry(retry)
                .build()
                .map(|store| Arc::new(store) as Arc<dyn ObjectStore>)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut builder =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (key, value) in config {
                builder = builder.with_config(parse_key(&key)?, value);
            }
            builder
                .with_retry(retry)
                .build()
                .map(|store| Arc::new(store) as Arc<dyn ObjectStore>)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder =
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (key, value) in config {
                builder = builder.with_config(parse_key(&key)?, value);
            }
            builder
                .with_retry(retry)
                .build()
                .map(|store| Arc::new(store) as Arc<dyn ObjectStore>)
        }
        ObjectStoreScheme::Http => {
            // The HTTP store's root is the server; the URL's path is the directory.
            let root = &url[..url::Position::BeforePath];
            let mut builder = object_store::http::HttpBuilder::new().with_url(root);
            for (key, value) in config {
                builder = builder.with_config(parse_key(&key)?, value);
            }
            builder
                .with_retry(retry)
                .build()
                .map(|store| Arc::new(store) as Arc<dyn ObjectStore>)
        }
        other => {
            return Err(invalid(format!(
                "{other:?} is not a cloud store: {SUPPORTED}"
            )))
        }
    };
    let store = built.map_err(|error| invalid(format!("object_store rejected it: {error}")))?;
    Ok((store, path))
}

/// Parses an object_store configuration key of the builder that `K` belongs to.
fn parse_key<K: std::str::FromStr>(key: &str) -> Result<K> {
    key.parse().map_err(|_| StorageError::InvalidOption {
        option: key.to_owned(),
        reason: "the store does not know this key: see object_store's config keys of that store"
            .to_owned(),
    })
}

/// Removes the query from `location` and returns the URL with the
/// configuration: the query's pairs, then `options.config`.
fn split_query(location: &str, options: &StoreOptions) -> Result<(Url, Vec<(String, String)>)> {
    let mut url = Url::parse(location).map_err(|error| StorageError::InvalidLocation {
        location: location.to_owned(),
        reason: format!("{error}: {SUPPORTED}"),
    })?;
    let mut config: Vec<(String, String)> = url
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url.set_query(None);
    config.extend(options.config.iter().cloned());
    Ok((url, config))
}

fn open_cloud(location: &str, options: &StoreOptions) -> Result<Store> {
    let (store, path) = open_object_store(location, options)?;
    let root = root_url(location, path.as_ref());
    let backend = ObjectStoreBackend::new(store, root)?
        .with_multipart(options.multipart)
        .with_range_reads(options.range_reads);
    Store::new(Arc::new(backend)).child_or_root(path.as_ref())
}

fn open_registered(
    location: &str,
    factory: &dyn crate::registry::BackendFactory,
    options: &StoreOptions,
) -> Result<Store> {
    let (url, config) = split_query(location, options)?;
    let options = StoreOptions {
        config,
        ..options.clone()
    };
    let backend = factory.open(&url, &options)?;
    let retrying: Arc<dyn Backend> = Arc::new(RetryBackend::new(backend, options.retry.clone()));
    let dir = url.path().trim_matches('/').to_owned();
    Store::new(retrying).child_or_root(&dir)
}

/// Returns `location` without its query and without the directory `path` at its end.
fn root_url(location: &str, path: &str) -> String {
    let without_query = location.split('?').next().unwrap_or(location);
    let trimmed = without_query.trim_end_matches('/');
    trimmed
        .strip_suffix(path)
        .map(|root| root.trim_end_matches('/'))
        .unwrap_or(trimmed)
        .to_owned()
}

fn open_local(path: &Path) -> Result<Store> {
    Ok(Store::new(Arc::new(LocalBackend::new(path)?)))
}

/// Opens a new in-memory store; `rest` is the URL after `memory://`: a name and a directory.
fn open_memory(rest: &str) -> Result<Store> {
    let (name, dir) = rest.split_once('/').unwrap_or((rest, ""));
    let backend = ObjectStoreBackend::new(Arc::new(InMemory::new()), format!("memory://{name}"))?;
    Store::new(Arc::new(backend)).child_or_root(dir)
}

impl Store {
    /// Returns the store for `dir` below this one, or this store when `dir` is empty.
    fn child_or_root(self, dir: &str) -> Result<Store> {
        let dir = dir.trim_matches('/');
        if dir.is_empty() {
            Ok(self)
        } else {
            self.child(dir)
        }
    }
}

/// Returns the lowercase scheme of a `scheme://…` URL, or `None` for a path.
fn url_scheme(location: &str) -> Option<String> {
    let (scheme, _) = location.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn absolute_path_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new/ckpt");
        let store = open_store(root.to_str().unwrap()).unwrap();
        assert!(root.is_dir());
        assert!(store.capabilities().atomic_rename);
        assert_eq!(
            store.local_path(),
            Some(std::fs::canonicalize(&root).unwrap())
        );
    }

    #[test]
    fn relative_path_is_local() {
        let dir = tempfile::tempdir().unwrap();
        // A relative path from the working directory to the temporary directory.
        let cwd = std::env::current_dir().unwrap();
        let mut relative = std::path::PathBuf::new();
        for _ in cwd.components().skip(1) {
            relative.push("..");
        }
        let absolute = std::fs::canonicalize(dir.path()).unwrap();
        relative.push(absolute.strip_prefix("/").unwrap());
        relative.push("rel");

        let store = open_store(relative.to_str().unwrap()).unwrap();
        assert_eq!(store.local_path(), Some(absolute.join("rel")));
    }

    #[test]
    fn file_url_is_local() {
        let dir = tempfile::tempdir().unwrap();
        let absolute = std::fs::canonicalize(dir.path()).unwrap();
        let store = open_store(&format!("file://{}/x%20y", absolute.display())).unwrap();
        assert_eq!(store.local_path(), Some(absolute.join("x y")));
    }

    #[test]
    fn file_url_with_host_is_rejected() {
        let err = open_store("file://server/share").unwrap_err();
        assert!(matches!(err, StorageError::InvalidLocation { .. }), "{err}");
    }

    #[test]
    fn memory_is_fresh_per_open() {
        let first = open_store("memory://").unwrap();
        first.put("k", Bytes::from_static(b"1")).unwrap();
        let second = open_store("memory://").unwrap();
        assert_eq!(second.get("k").unwrap(), None);
        assert!(!first.capabilities().atomic_rename);
    }

    #[test]
    fn memory_name_and_directory() {
        let store = open_store("memory://bucket/a/b/").unwrap();
        assert_eq!(store.url(), "memory://bucket/a/b");
        assert_eq!(store.prefix(), "a/b/");
    }

    #[test]
    fn memory_directory_cannot_escape() {
        let err = open_store("memory://bucket/../x").unwrap_err();
        assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
    }

    #[test]
    fn unknown_scheme_is_rejected() {
        let err = open_store("nosuchfs://bucket/ckpt").unwrap_err();
        assert!(matches!(err, StorageError::InvalidLocation { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("\"nosuchfs\""), "{message}");
        assert!(message.contains("file://"), "{message}");
        assert!(message.contains("memory://"), "{message}");
    }

    #[test]
    fn s3_url_root_and_directory() {
        // Building the store sends no request, so the endpoint is never contacted.
        let options = StoreOptions::default()
            .with("endpoint", "http://127.0.0.1:9")
            .with("region", "us-east-1")
            .with("access_key_id", "key")
            .with("secret_access_key", "secret");
        let store = open_store_with("s3://my.bucket/a/b?allow_http=true", &options).unwrap();
        assert_eq!(store.url(), "s3://my.bucket/a/b");
        assert_eq!(store.prefix(), "a/b/");
        assert!(!store.capabilities().atomic_rename);
    }

    #[test]
    fn cloud_option_unknown_key() {
        let options = StoreOptions::default().with("no_such_key", "1");
        let err = open_store_with("s3://bucket", &options).unwrap_err();
        assert!(matches!(err, StorageError::InvalidOption { .. }), "{err}");
    }

    #[test]
    fn root_url_drops_directory_and_query() {
        assert_eq!(root_url("s3://b/x/y?k=v", "x/y"), "s3://b");
        assert_eq!(root_url("s3://b/", ""), "s3://b");
    }

    #[test]
    fn empty_location_is_rejected() {
        let err = open_store("").unwrap_err();
        assert!(matches!(err, StorageError::InvalidLocation { .. }), "{err}");
    }

    #[test]
    fn scheme_detection() {
        assert_eq!(url_scheme("File://x").as_deref(), Some("file"));
        assert_eq!(url_scheme("/a/b"), None);
        assert_eq!(url_scheme("dir/with://inside"), None);
    }
}
