use std::{path::Path, sync::Arc};

use object_store::memory::InMemory;

use crate::{LocalBackend, ObjectStoreBackend, Result, StorageError, Store};

/// The locations [`open_store`] accepts, for error messages.
const SUPPORTED: &str = "expected a local path, a file:///absolute/path URL or memory://[name]";

/// Opens the store at `location`.
///
/// Accepted locations:
/// - a local path, relative or absolute, or a `file:///absolute/path` URL:
///   a [`LocalBackend`] on that directory, which is created when missing;
/// - `memory://`, `memory://name` or `memory://name/dir`: a new, empty
///   in-memory store on every call. To open one memory store several times,
///   share its backend instead: `Store::new(Arc::new(ObjectStoreBackend::memory()?))`
///   and clones of that store.
///
/// Any other URL scheme is [`StorageError::InvalidLocation`].
pub fn open_store(location: &str) -> Result<Store> {
    let invalid = |reason: String| StorageError::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    if location.is_empty() {
        return Err(invalid(format!("the location is empty: {SUPPORTED}")));
    }

    match url_scheme(location).as_deref() {
        None => open_local(Path::new(location)),
        Some("file") => {
            let url = url::Url::parse(location)
                .map_err(|error| invalid(format!("{error}: {SUPPORTED}")))?;
            let path = url.to_file_path().map_err(|()| {
                invalid(format!(
                    "a file URL needs an absolute path and no host other than localhost: {SUPPORTED}"
                ))
            })?;
            open_local(&path)
        }
        Some("memory") => open_memory(&location["memory://".len()..]),
        // TODO: open s3://, gs://, az:// and http(s):// through object_store's
        // cloud features, with credentials from the environment.
        Some(scheme) => Err(invalid(format!(
            "unsupported scheme {scheme:?}: {SUPPORTED}"
        ))),
    }
}

fn open_local(path: &Path) -> Result<Store> {
    Ok(Store::new(Arc::new(LocalBackend::new(path)?)))
}

/// Opens a new in-memory store; `rest` is the URL after `memory://`: a name and a directory.
fn open_memory(rest: &str) -> Result<Store> {
    let (name, dir) = rest.split_once('/').unwrap_or((rest, ""));
    let backend = ObjectStoreBackend::new(Arc::new(InMemory::new()), format!("memory://{name}"))?;
    let store = Store::new(Arc::new(backend));
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        Ok(store)
    } else {
        store.child(dir)
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
        let err = open_store("s3://bucket/ckpt").unwrap_err();
        assert!(matches!(err, StorageError::InvalidLocation { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("\"s3\""), "{message}");
        assert!(message.contains("file://"), "{message}");
        assert!(message.contains("memory://"), "{message}");
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
