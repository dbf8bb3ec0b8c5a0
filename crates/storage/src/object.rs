use std::{future::Future, io, ops::Range, sync::Arc, sync::OnceLock, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{
    memory::InMemory, path::Path as ObjectPath, ObjectStore, PutMode, PutOptions, PutPayload,
};
use tokio::runtime::{Handle, Runtime};

use crate::{
    fault::is_injected_transient,
    multipart::{put_multipart, UploadError},
    validate_key, Backend, Capabilities, MultipartConfig, RangeReadConfig, Result, StorageError,
};

/// A backend over any [`object_store::ObjectStore`], with blocking methods.
///
/// Each method blocks the calling thread until the async call finishes on a
/// tokio runtime: by default one small multi-thread runtime that all these
/// backends share, or a runtime given to [`ObjectStoreBackend::with_runtime`].
/// A thread that is inside a tokio runtime context (an async task, or a
/// `tokio::task::spawn_blocking` closure) cannot block on another runtime,
/// so there each call runs on a short-lived helper thread and the calling
/// thread waits for it. From async code, call the methods through
/// `spawn_blocking`, because waiting on an async worker thread stalls the
/// other tasks of that worker. Different threads may call the methods at
/// the same time.
///
/// Object stores have no atomic rename, so checkpoints on them are written
/// under their final name and committed by a marker file.
///
/// Writes of [`MultipartConfig::threshold`] bytes or more are multipart
/// uploads, aborted when any part fails. With
/// [`with_request_timeout`](Self::with_request_timeout), every request
/// (and every part of an upload) fails with [`StorageError::TimedOut`]
/// once the deadline passes.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    url: String,
    runtime: Handle,
    multipart: MultipartConfig,
    range_reads: RangeReadConfig,
    request_timeout: Option<Duration>,
}

impl ObjectStoreBackend {
    /// Wraps `store`, driving it on the shared runtime. `url` names the store in messages.
    pub fn new(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> Result<ObjectStoreBackend> {
        let url = url.into();
        let runtime = shared_runtime().map_err(|source| StorageError::Io {
            operation: "start runtime",
            store: url.clone(),
            key: String::new(),
            source: Box::new(source),
        })?;
        Ok(ObjectStoreBackend::with_runtime(store, url, runtime))
    }

    /// Wraps `store`, driving it on the tokio runtime of `runtime`.
    pub fn with_runtime(
        store: Arc<dyn ObjectStore>,
        url: impl Into<String>,
        runtime: Handle,
    ) -> ObjectStoreBackend {
        ObjectStoreBackend {
            store,
            url: url.into(),
            runtime,
            multipart: MultipartConfig::default(),
            range_reads: RangeReadConfig::default(),
            request_timeout: None,
        }
    }

    /// Sets when and how large writes are split into a multipart upload.
    pub fn with_multipart(mut self, multipart: MultipartConfig) -> ObjectStoreBackend {
        self.multipart = multipart;
        self
    }

    /// Sets how reads longer than one part are split into concurrent range requests.
    pub fn with_range_reads(mut self, range_reads: RangeReadConfig) -> ObjectStoreBackend {
        self.range_reads = range_reads;
        self
    }

    /// Fetches `range` of `path` as parts of [`RangeReadConfig::part_size`]
    /// bytes, at most [`RangeReadConfig::max_concurrency`] at a time, and
    /// joins them in order. A single part is one plain range request.
    async fn get_range_in_parts(
        &self,
        path: &ObjectPath,
        range: Range<u64>,
    ) -> object_store::Result<Bytes> {
        let part = self.range_reads.part_size() as u64;
        if range.end - range.start <= part {
            return self.store.get_range(path, range).await;
        }
        let mut starts = Vec::new();
        let mut start = range.start;
        while start < range.end {
            starts.push(start..range.end.min(start.saturating_add(part)));
            start = start.saturating_add(part);
        }
        let mut parts = futures::stream::iter(starts)
            .map(|part| self.store.get_range(path, part))
            .buffered(self.range_reads.max_concurrency());
        let mut joined = Vec::with_capacity((range.end - range.start) as usize);
        while let Some(part) = parts.next().await {
            joined.extend_from_slice(&part?);
        }
        Ok(Bytes::from(joined))
    }

    /// Sets the deadline of every request; `None`, the default, sets none.
    ///
    /// object_store's HTTP clients have deadlines of their own. This one
    /// also bounds stores without them, and the whole of a request
    /// including the retries the client makes.
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> ObjectStoreBackend {
        self.request_timeout = timeout;
        self
    }

    /// Creates a backend over a new, empty in-memory store at `memory://`.
    ///
    /// Every call makes a separate store. To share one between several
    /// [`crate::Store`]s, wrap one backend in an `Arc` and clone that:
    /// `Store::new(Arc::new(ObjectStoreBackend::memory()?))`.
    pub fn memory() -> Result<ObjectStoreBackend> {
        ObjectStoreBackend::new(Arc::new(InMemory::new()), "memory://")
    }

    /// Returns the wrapped object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Runs `future` to completion on the runtime, unless the request
    /// deadline passes first.
    fn block_on<F>(&self, operation: &'static str, key: &str, future: F) -> Result<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let Some(timeout) = self.request_timeout else {
            return Ok(self.run(future));
        };
        self.run(async { tokio::time::timeout(timeout, future).await })
            .map_err(|_| self.timed_out(operation, key, timeout))
    }

    /// Blocks on `future` in the backend's runtime. A thread inside a
    /// runtime context cannot do that itself (tokio panics), so it hands
    /// the wait to a scoped thread.
    fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if Handle::try_current().is_err() {
            return self.runtime.block_on(future);
        }
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| self.runtime.block_on(future));
            match waiter.join() {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn timed_out(&self, operation: &'static str, key: &str, timeout: Duration) -> StorageError {
        StorageError::TimedOut {
            operation,
            store: self.url.clone(),
            key: key.to_owned(),
            timeout,
        }
    }

    /// Writes `value` as a multipart upload, with the deadline on each request.
    fn put_in_parts(&self, key: &str, path: &ObjectPath, value: Bytes) -> Result<()> {
        let upload = put_multipart(
            self.store.as_ref(),
            path,
            value,
            &self.multipart,
            self.request_timeout,
        );
        match self.run(upload) {
            Ok(()) => Ok(()),
            Err(UploadError::Store(error)) => Err(self.error("write", key, error)),
            Err(UploadError::TimedOut(timeout)) => Err(self.timed_out("write", key, timeout)),
        }
    }

    fn path_of(&self, key: &str) -> Result<ObjectPath> {
        validate_key(key)?;
        ObjectPath::parse(key).map_err(|_| StorageError::InvalidKey {
            key: key.to_owned(),
        })
    }

    /// Returns the path of a listing prefix, or `None` to list the whole store.
    fn prefix_path(&self, prefix: &str) -> Result<Option<ObjectPath>> {
        if prefix.is_empty() {
            Ok(None)
        } else {
            self.path_of(prefix).map(Some)
        }
    }

    fn error(
        &self,
        operation: &'static str,
        key: &str,
        error: object_store::Error,
    ) -> StorageError {
        match error {
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists {
                store: self.url.clone(),
                key: key.to_owned(),
            },
            object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented => {
                StorageError::Unsupported {
                    store: self.url.clone(),
                    operation,
                }
            }
            error if is_injected_transient(&error) => StorageError::Transient {
                operation,
                store: self.url.clone(),
                key: key.to_owned(),
                source: Box::new(error),
            },
            error => StorageError::Io {
                operation,
                store: self.url.clone(),
                key: key.to_owned(),
                source: Box::new(error),
            },
        }
    }

    fn invalid_range(&self, key: &str, range: &Range<u64>, size: u64) -> StorageError {
        StorageError::InvalidRange {
            store: self.url.clone(),
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size,
        }
    }
}

/// Returns the handle of the runtime that backends without a runtime of their own share.
fn shared_runtime() -> io::Result<Handle> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        // NOTE: two workers is a guess, not a measured choice: callers block
        // their own threads on each request, and the workers only drive the
        // tasks that clients spawn, such as HTTP connections. A caller with
        // other needs passes its own runtime to `with_runtime`.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ckpt-storage-io")
            .enable_all()
            .build()
            .map_err(|error| error.to_string())
    });
    match runtime {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(message) => Err(io::Error::other(format!(
            "failed to start the tokio runtime for object stores: {message}"
        ))),
    }
}

fn is_not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}

impl Backend for ObjectStoreBackend {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        // `put_if_absent` relies on `PutMode::Create`; a store without it
        // returns `StorageError::Unsupported` from that call.
        Capabilities {
            atomic_rename: false,
            create_only_put: true,
        }
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path_of(key)?;
        let fetched = self.block_on("read", key, async {
            self.store.get(&path).await?.bytes().await
        })?;
        match fetched {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(self.error("read", key, error)),
        }
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        let path = self.path_of(key)?;

        // object_store rejects empty ranges, so only their bounds are checked.
        if range.start >= range.end {
            let Some(size) = self.size(key)? else {
                return Ok(None);
            };
            if range.start > range.end || range.end > size {
                return Err(self.invalid_range(key, &range, size));
            }
            return Ok(Some(Bytes::new()));
        }

        let fetched = self.block_on("read", key, self.get_range_in_parts(&path, range.clone()))?;
        let requested = range.end - range.start;
        match fetched {
            Ok(bytes) if bytes.len() as u64 == requested => Ok(Some(bytes)),
            // object_store clips a range that ends past the object to its end.
            Ok(bytes) => Err(self.invalid_range(key, &range, range.start + bytes.len() as u64)),
            Err(error) if is_not_found(&error) => Ok(None),
            // A range that starts past the end fails with an error that
            // differs between stores, so the object's size identifies that case.
            Err(error) => match self.size(key)? {
                None => Ok(None),
                Some(size) if range.end > size => Err(self.invalid_range(key, &range, size)),
                Some(_) => Err(self.error("read", key, error)),
            },
        }
    }

    fn put(&self, key: &str, value: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        if value.len() >= self.multipart.threshold() {
            return self.put_in_parts(key, &path, value);
        }
        self.block_on("write", key, self.store.put(&path, PutPayload::from(value)))?
            .map(drop)
            .map_err(|error| self.error("write", key, error))
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let options = PutOptions::from(PutMode::Create);
        self.block_on(
            "create-only write",
            key,
            self.store.put_opts(&path, PutPayload::from(value), options),
        )?
        .map(drop)
        .map_err(|error| self.error("create-only write", key, error))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path_of(key)?;
        match self.block_on("stat", key, self.store.head(&path))? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(self.error("stat", key, error)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.prefix_path(prefix)?;
        let listed = self.block_on("list", prefix, async {
            self.store
                .list(path.as_ref())
                .map_ok(|meta| meta.location.to_string())
                .try_collect::<Vec<String>>()
                .await
        })?;
        let mut keys = listed.map_err(|error| self.error("list", prefix, error))?;
        keys.sort();
        Ok(keys)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.prefix_path(prefix)?;
        let listed = self.block_on(
            "list",
            prefix,
            self.store.list_with_delimiter(path.as_ref()),
        )?;
        let listed = listed.map_err(|error| self.error("list", prefix, error))?;
        let mut dirs: Vec<String> = listed
            .common_prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let path = self.prefix_path(prefix)?;
        let deleted = self.block_on("delete", prefix, async {
            let locations = self
                .store
                .list(path.as_ref())
                .map_ok(|meta| meta.location)
                .boxed();
            let mut results = self.store.delete_stream(locations);
            while let Some(result) = results.next().await {
                match result {
                    // Another writer deleted the object first: the goal is met.
                    Err(error) if is_not_found(&error) => {}
                    Err(error) => return Err(error),
                    Ok(_) => {}
                }
            }
            Ok(())
        })?;
        deleted.map_err(|error| self.error("delete", prefix, error))
    }

    fn rename_dir(&self, _from: &str, _to: &str) -> Result<()> {
        Err(StorageError::Unsupported {
            store: self.url.clone(),
            operation: "atomic directory rename",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> ((), ObjectStoreBackend) {
        ((), ObjectStoreBackend::memory().unwrap())
    }

    crate::conformance::backend_tests!(backend);

    /// A memory backend that reads in parts of 3 bytes, 2 at a time.
    fn parted_backend() -> ObjectStoreBackend {
        let config = RangeReadConfig::new(3, 2).unwrap();
        ObjectStoreBackend::memory().unwrap().with_range_reads(config)
    }

    #[test]
    fn range_read_in_parts_joins_in_order() {
        let backend = parted_backend();
        let value: Vec<u8> = (0..20).collect();
        backend.put("a", Bytes::from(value.clone())).unwrap();
        let read = backend.get_range("a", 1..18).unwrap().unwrap();
        assert_eq!(&read[..], &value[1..18]);
    }

    #[test]
    fn range_read_in_parts_past_end_is_invalid() {
        let backend = parted_backend();
        backend.put("a", Bytes::from(vec![1u8; 10])).unwrap();
        let err = backend.get_range("a", 2..12).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRange { .. }), "{err}");
    }

    #[test]
    fn capabilities_have_no_rename() {
        let (_, backend) = backend();
        let capabilities = backend.capabilities();
        assert!(!capabilities.atomic_rename);
        assert!(capabilities.create_only_put);
    }

    #[test]
    fn rename_dir_is_unsupported() {
        let (_, backend) = backend();
        backend.put("a/x", Bytes::new()).unwrap();
        let err = backend.rename_dir("a", "b").unwrap_err();
        assert!(matches!(err, StorageError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn memory_stores_are_separate() {
        let (_, first) = backend();
        let (_, second) = backend();
        first.put("k", Bytes::from_static(b"1")).unwrap();
        assert_eq!(second.get("k").unwrap(), None);
        assert_eq!(first.url(), "memory://");
    }

    #[test]
    fn call_inside_runtime_works() {
        let (_, backend) = backend();
        backend.put("k", Bytes::from_static(b"v")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inside_task = runtime.block_on(async { backend.get("k") }).unwrap();
        assert_eq!(inside_task.as_deref(), Some(&b"v"[..]));
        let blocking = runtime.block_on(async {
            let backend = Arc::new(backend);
            tokio::task::spawn_blocking(move || backend.get("k")).await
        });
        assert_eq!(blocking.unwrap().unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn own_runtime_is_used() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let backend = ObjectStoreBackend::with_runtime(
            Arc::new(InMemory::new()),
            "memory://own",
            runtime.handle().clone(),
        );
        backend.put("k", Bytes::from_static(b"v")).unwrap();
        assert_eq!(backend.get("k").unwrap(), Some(Bytes::from_static(b"v")));
    }

    #[test]
    fn threads_share_one_backend() {
        let (_, backend) = backend();
        std::thread::scope(|scope| {
            for thread in 0..4u8 {
                let backend = &backend;
                scope.spawn(move || {
                    for i in 0..20u8 {
                        let key = format!("t{thread}/{i}");
                        backend.put(&key, Bytes::from(vec![thread, i])).unwrap();
                        assert_eq!(
                            backend.get(&key).unwrap(),
                            Some(Bytes::from(vec![thread, i]))
                        );
                    }
                });
            }
        });
        assert_eq!(backend.list("").unwrap().len(), 80);
    }
}
