//! Helpers of the background-save and manager tests: a storage backend
//! that fails or delays chosen writes, device memory whose buffers a test can
//! overwrite after a save, and small trees of arrays.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    ops::Range,
    sync::{Arc, Condvar, Mutex, PoisonError},
};

use bytes::Bytes;
use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime, ShardedArray},
    device::{
        DeviceBuffer, DeviceError, DeviceId, DeviceMemory, HostBuffer, Mesh, PartitionSpec,
        Sharding, Topology,
    },
    pytree::{param_name, PyTree},
    storage::{Backend, Capabilities, LocalBackend, ObjectStoreBackend, StorageError, Store},
    DType, HostArray, Leaf, Scalar,
};

#[derive(Default)]
struct Rules {
    /// Writes to keys containing this fail.
    fail: Option<String>,
    /// Writes to keys containing this wait until released.
    hold: Option<String>,
    /// Writes waiting now.
    waiting_writes: usize,
}

/// A backend that forwards to another, failing or holding the writes
/// (put, create-only put, rename) whose key contains a chosen text.
///
/// It reports no local directory, so every write of the array writer
/// passes through it.
#[derive(Debug)]
pub(crate) struct TestBackend {
    inner: Arc<dyn Backend>,
    rules: Mutex<Rules>,
    changed: Condvar,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("fail", &self.fail).field("hold", &self.hold).finish()
    }
}

impl TestBackend {
    /// Wraps a local directory, a store with atomic rename.
    pub(crate) fn local(dir: &std::path::Path) -> Arc<TestBackend> {
        TestBackend::wrap(Arc::new(LocalBackend::new(dir).expect("open a local backend")))
    }

    /// Wraps an in-memory object store, where `commit_success.txt` is the commit point.
    pub(crate) fn memory() -> Arc<TestBackend> {
        TestBackend::wrap(Arc::new(ObjectStoreBackend::memory().expect("open a memory backend")))
    }

    fn wrap(inner: Arc<dyn Backend>) -> Arc<TestBackend> {
        Arc::new(TestBackend {
            inner,
            rules: Mutex::new(Rules::default()),
            changed: Condvar::new(),
        })
    }

    /// Returns a store at the backend's root.
    pub(crate) fn store(self: &Arc<Self>) -> Store {
        Store::new(Arc::clone(self) as Arc<dyn Backend>)
    }

    /// Makes writes to keys containing `pattern` fail; `None` stops it.
    pub(crate) fn fail_writes_containing(&self, pattern: Option<&str>) {
        self.lock().fail = pattern.map(str::to_owned);
    }

    /// Makes writes to keys containing `pattern` wait until [`release`](Self::release).
    pub(crate) fn hold_writes_containing(&self, pattern: &str) {
        self.lock().hold = Some(pattern.to_owned());
    }

    /// Lets held writes go on and stops holding.
    pub(crate) fn release(&self) {
        self.lock().hold = None;
        self.changed.notify_all();
    }

    /// Waits until a write is being held.
    pub(crate) fn wait_until_held(&self) {
        let mut rules = self.lock();
        while rules.waiting_writes == 0 {
            rules = self.changed.wait(rules).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn before_write(&self, operation: &'static str, key: &str) -> Result<(), StorageError> {
        let mut rules = self.lock();
        if rules.fail.as_deref().is_some_and(|pattern| key.contains(pattern)) {
            return Err(StorageError::Io {
                operation,
                store: self.inner.url(),
                key: key.to_owned(),
                source: "injected write failure".into(),
            });
        }
        if rules.hold.as_deref().is_some_and(|pattern| key.contains(pattern)) {
            rules.waiting_writes += 1;
            self.changed.notify_all();
            while rules.hold.as_deref().is_some_and(|pattern| key.contains(pattern)) {
                rules = self.changed.wait(rules).unwrap_or_else(PoisonError::into_inner);
            }
            rules.waiting_writes -= 1;
        }
        Ok(())
    }
}

impl Backend for TestBackend {
    fn url(&self) -> String {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        self.inner.get(key)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, StorageError> {
        self.inner.get_range(key, range)
    }

    fn put(&self, key: &str, value: Bytes) -> Result<(), StorageError> {
        self.before_write("write", key)?;
        self.inner.put(key, value)
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<(), StorageError> {
        self.before_write("write", key)?;
        self.inner.put_if_absent(key, value)
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list(prefix)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list_dirs(prefix)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        self.inner.delete_prefix(prefix)
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.before_write("rename", to)?;
        self.inner.rename_dir(from, to)
    }
}

/// Device memory whose buffers the test can overwrite, as training
/// overwrites device arrays after a save. The bytes are not reachable
/// through `host_bytes`, as on a GPU.
#[derive(Debug, Default)]
pub(crate) struct MutableMemory {
    buffers: Mutex<HashMap<DeviceId, Vec<Arc<MutableBuffer>>>>,
}

impl MutableMemory {
    /// Overwrites every byte of every buffer on every device with `byte`.
    pub(crate) fn overwrite_all(&self, byte: u8) {
        let buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        for buffer in buffers.values().flatten() {
            buffer.bytes.lock().unwrap_or_else(PoisonError::into_inner).fill(byte);
        }
    }
}

#[derive(Debug)]
struct MutableBuffer {
    device: DeviceId,
    bytes: Mutex<Vec<u8>>,
}

impl DeviceBuffer for MutableBuffer {
    fn device(&self) -> DeviceId {
        self.device
    }

    fn len(&self) -> usize {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn copy_to_host(&self, dst: &mut [u8]) -> Result<(), DeviceError> {
        let bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        if dst.len() != bytes.len() {
            return Err(DeviceError::BufferLength {
                expected: bytes.len() as u64,
                found: dst.len() as u64,
            });
        }
        dst.copy_from_slice(&bytes);
        Ok(())
    }
}

impl DeviceMemory for MutableMemory {
    fn upload(&self, device: DeviceId, data: HostBuffer) -> Result<Arc<dyn DeviceBuffer>, DeviceError> {
        let buffer = Arc::new(MutableBuffer {
            device,
            bytes: Mutex::new(data.as_bytes().to_vec()),
        });
        let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        buffers.entry(device).or_default().push(Arc::clone(&buffer));
        Ok(buffer)
    }
}

/// Starts a controller over two simulated hosts with two devices each.
pub(crate) fn controller() -> Arc<Controller> {
    let topology = Topology::uniform(2, 2).expect("a 2x2 topology");
    let runtime = InProcessRuntime::new(topology).expect("start the hosts");
    Arc::new(Controller::new(Arc::new(runtime)))
}

/// Starts a controller over two hosts with two devices each, on `memory`.
pub(crate) fn controller_on(memory: Arc<MutableMemory>) -> Arc<Controller> {
    let topology = Topology::uniform(2, 2).expect("a 2x2 topology");
    let runtime = InProcessRuntime::with_memory(topology, memory).expect("start the hosts");
    Arc::new(Controller::new(Arc::new(runtime)))
}

/// Returns the values `base + i` for i in `0..len`.
pub(crate) fn values(len: usize, base: f32) -> Vec<f32> {
    (0..len).map(|i| base + i as f32).collect()
}

/// Puts an 8x4 float32 array of `values` on the hosts, rows sharded along
/// `x` of a 2x2 mesh and replicated along `y`, so two devices share each box.
pub(crate) fn sharded_array(controller: &Controller, values: &[f32]) -> ShardedArray {
    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![2, 2], vec!["x", "y"], devices).expect("a 2x2 mesh");
    let sharding = Sharding::named(mesh, PartitionSpec::new([Some("x"), None])).expect("a sharding");
    let spec = ArraySpec {
        shape: vec![8, 4],
        dtype: DType::Float32,
        sharding,
    };
    controller
        .put_global(spec, bytemuck::cast_slice(values))
        .expect("put the array")
}

/// Builds a tree of one sharded array `w`, a host array `h` and a scalar `count`.
pub(crate) fn tree(array: &ShardedArray, count: i64) -> PyTree<Leaf> {
    let host = HostArray::from_vec(vec![3], vec![count, count + 1, count + 2]).expect("a host array");
    PyTree::dict([
        ("w", PyTree::leaf(Leaf::Array(array.clone()))),
        ("h", PyTree::leaf(Leaf::HostArray(host))),
        ("count", PyTree::leaf(Leaf::Scalar(Scalar::Int(count)))),
    ])
}

/// Reads the float32 values of the sharded leaf `w` of a restored tree.
pub(crate) fn restored_w(controller: &Controller, tree: &PyTree<Leaf>) -> Vec<f32> {
    let leaf = tree
        .flatten()
        .into_iter()
        .find(|(path, _)| param_name(path) == "w")
        .map(|(_, leaf)| leaf.clone())
        .expect("the tree has a leaf w");
    let Leaf::Array(array) = leaf else {
        panic!("w was restored as {leaf:?}");
    };
    bytemuck::pod_collect_to_vec(&controller.to_global_bytes(&array).expect("read w"))
}

/// Reads the scalar leaf `count` of a restored tree.
pub(crate) fn restored_count(tree: &PyTree<Leaf>) -> Option<i64> {
    tree.flatten().into_iter().find_map(|(path, leaf)| match leaf {
        Leaf::Scalar(Scalar::Int(value)) if param_name(&path) == "count" => Some(*value),
        _ => None,
    })
}
