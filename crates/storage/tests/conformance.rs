//! The public backend conformance suite on memory, local files and
//! user-defined backends opened through their registered schemes.

use std::{
    collections::BTreeMap,
    ops::Range,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use ckpt_storage::{
    check_backend, open_store, register_backend, register_object_store, validate_key, Backend,
    Capabilities, LocalBackend, ObjectStoreBackend, Result, StorageError, StoreOptions,
};
use url::Url;

#[test]
fn conformance_on_memory() {
    check_backend(|| Arc::new(ObjectStoreBackend::memory().unwrap()));
}

#[test]
fn conformance_on_local() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0;
    check_backend(|| {
        next += 1;
        Arc::new(LocalBackend::new(dir.path().join(next.to_string())).unwrap())
    });
}

/// A user-defined backend: objects in a sorted map behind a mutex.
#[derive(Debug, Default)]
struct MapBackend {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MapBackend {
    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns `prefix` as a directory ending in `/`, or `""` for the root.
fn directory(prefix: &str) -> Result<String> {
    if prefix.is_empty() {
        return Ok(String::new());
    }
    validate_key(prefix)?;
    Ok(format!("{}/", prefix.trim_end_matches('/')))
}

impl Backend for MapBackend {
    fn url(&self) -> String {
        "usermap://".to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::default();
        capabilities.create_only_put = true;
        capabilities
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        validate_key(key)?;
        Ok(self.objects().get(key).cloned())
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        let Some(value) = self.get(key)? else {
            return Ok(None);
        };
        let size = value.len() as u64;
        if range.start > range.end || range.end > size {
            return Err(StorageError::InvalidRange {
                store: self.url(),
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        Ok(Some(value.slice(range.start as usize..range.end as usize)))
    }

    fn put(&self, key: &str, value: Bytes) -> Result<()> {
        validate_key(key)?;
        self.objects().insert(key.to_owned(), value);
        Ok(())
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
        validate_key(key)?;
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Err(StorageError::AlreadyExists {
                store: self.url(),
                key: key.to_owned(),
            });
        }
        objects.insert(key.to_owned(), value);
        Ok(())
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.get(key)?.map(|value| value.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = directory(prefix)?;
        let objects = self.objects();
        Ok(objects
            .keys()
            .filter(|key| key.starts_with(&prefix))
            .cloned()
            .collect())
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = directory(prefix)?;
        let mut dirs: Vec<String> = self
            .list(&prefix)?
            .iter()
            .filter_map(|key| {
                let (child, _) = key[prefix.len()..].split_once('/')?;
                Some(format!("{prefix}{child}"))
            })
            .collect();
        dirs.dedup();
        Ok(dirs)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let prefix = directory(prefix)?;
        self.objects().retain(|key, _| !key.starts_with(&prefix));
        Ok(())
    }

    fn rename_dir(&self, _from: &str, _to: &str) -> Result<()> {
        Err(StorageError::Unsupported {
            store: self.url(),
            operation: "atomic directory rename",
        })
    }
}

#[test]
fn conformance_on_user_backend() {
    register_backend("usermap", |_url: &Url, _options: &StoreOptions| {
        Ok(Arc::new(MapBackend::default()) as Arc<dyn Backend>)
    })
    .unwrap();
    check_backend(|| Arc::clone(open_store("usermap://conformance").unwrap().backend()));
}

#[test]
fn conformance_on_user_object_store() {
    register_object_store("usermem", |_url: &Url, _options: &StoreOptions| {
        Ok(Arc::new(object_store::memory::InMemory::new()) as Arc<dyn object_store::ObjectStore>)
    })
    .unwrap();
    check_backend(|| Arc::clone(open_store("usermem://conformance").unwrap().backend()));
}

#[test]
fn user_scheme_directory() {
    register_backend("userdir", |_url: &Url, _options: &StoreOptions| {
        Ok(Arc::new(MapBackend::default()) as Arc<dyn Backend>)
    })
    .unwrap();
    let store = open_store("userdir://host/a/b").unwrap();
    store.put("k", Bytes::from_static(b"v")).unwrap();
    assert_eq!(store.prefix(), "a/b/");
    assert_eq!(store.backend().list("").unwrap(), ["a/b/k"]);
}
