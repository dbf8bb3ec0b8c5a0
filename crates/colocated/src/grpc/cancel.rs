//! Cancellation of a worker's blocking work when its caller goes away.
//!
//! A worker runs each request on a blocking thread, and dropping the
//! request's future (its deadline passed or the controller disconnected)
//! cannot stop that thread. Instead the request's storage goes through
//! [`CancellableBackend`], whose every operation fails once the request's
//! [`CancelToken`] is set, so the work stops at its next read or write.
//!
//! NOTE: an operation that is already running when the token is set
//! finishes, so one object can still land after the controller has aborted
//! the save. The next save of the same name removes it with the rest of
//! the unfinished directory.

use std::{
    ops::Range,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ckpt_storage::{Backend, Capabilities, StorageError, Store};

/// A flag that a request's handler sets when the request is abandoned.
#[derive(Clone, Debug, Default)]
pub(crate) struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Sleeps for `duration` in short steps, returning early with `false`
    /// when the token is set.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        while !self.is_cancelled() {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
        false
    }
}

/// A backend that delegates to another one until its token is set, and
/// then fails every operation with an I/O error of kind `Interrupted`.
#[derive(Debug)]
pub(crate) struct CancellableBackend {
    inner: Arc<dyn Backend>,
    token: CancelToken,
}

/// Returns `store` with its backend wrapped in a [`CancellableBackend`].
pub(crate) fn cancellable_store(store: &Store, token: &CancelToken) -> Result<Store, StorageError> {
    let backend = CancellableBackend {
        inner: Arc::clone(store.backend()),
        token: token.clone(),
    };
    let root = Store::new(Arc::new(backend));
    let prefix = store.prefix().trim_end_matches('/');
    if prefix.is_empty() {
        Ok(root)
    } else {
        root.child(prefix)
    }
}

impl CancellableBackend {
    fn check(&self, operation: &'static str, key: &str) -> Result<(), StorageError> {
        if !self.token.is_cancelled() {
            return Ok(());
        }
        Err(StorageError::Io {
            operation,
            store: self.inner.url(),
            key: key.to_owned(),
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the request was cancelled because its deadline passed or the controller disconnected",
            )),
        })
    }
}

impl Backend for CancellableBackend {
    fn url(&self) -> String {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        self.check("read", key)?;
        self.inner.get(key)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, StorageError> {
        self.check("read", key)?;
        self.inner.get_range(key, range)
    }

    fn put(&self, key: &str, value: Bytes) -> Result<(), StorageError> {
        self.check("write", key)?;
        self.inner.put(key, value)
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<(), StorageError> {
        self.check("write", key)?;
        self.inner.put_if_absent(key, value)
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.check("read", key)?;
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.check("list", prefix)?;
        self.inner.list(prefix)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.check("list", prefix)?;
        self.inner.list_dirs(prefix)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        self.check("delete", prefix)?;
        self.inner.delete_prefix(prefix)
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.check("rename", from)?;
        self.inner.rename_dir(from, to)
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_works_until_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let store = ckpt_storage::open_store(dir.path().to_str().unwrap()).unwrap();
        let token = CancelToken::default();
        let wrapped = cancellable_store(&store.child("a/b").unwrap(), &token).unwrap();

        wrapped.put("k", Bytes::from_static(b"v")).unwrap();
        assert_eq!(store.get("a/b/k").unwrap(), Some(Bytes::from_static(b"v")));
        assert_eq!(wrapped.url(), store.child("a/b").unwrap().url());

        token.cancel();
        let err = wrapped.put("k2", Bytes::from_static(b"v")).unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(cause.unwrap_or_default().contains("cancelled"), "{err}");
        assert!(wrapped.get("k").is_err());
        assert_eq!(store.get("a/b/k2").unwrap(), None);
    }

    #[test]
    fn sleep_stops_when_cancelled() {
        let token = CancelToken::default();
        assert!(token.sleep(Duration::from_millis(1)));
        token.cancel();
        let started = Instant::now();
        assert!(!token.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
