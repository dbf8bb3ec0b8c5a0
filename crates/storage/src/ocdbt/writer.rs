//! Writing a new database: buffered writes, then one data file and one
//! manifest at commit.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;

use super::{
    btree::{LeafValue, MAX_KEY_LEN},
    build::{build_tree, BuildError, TreeLimits},
    manifest::{encode_manifest, Manifest, ManifestKind, MAX_INLINE_VALUE_BYTES},
    reader::MANIFEST_KEY,
    version_tree::MAX_VERSION_TREE_ARITY_LOG2,
    DataFileId, DataReference, OcdbtCompression, OcdbtConfig, VersionReference,
};
use crate::{KvStore, Result, StorageError, Store};

/// Settings of a database that [`OcdbtWriter`] creates.
///
/// The defaults are the settings Orbax 0.12.8 requests from TensorStore, so
/// Orbax reads the result with the settings it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OcdbtWriterOptions {
    /// Values up to this many bytes are stored inside the B+tree leaves and
    /// larger ones in the data file. Default 1024, at most 1 MiB.
    pub max_inline_value_bytes: u32,
    /// Maximum decoded size of a node in bytes, which readers enforce.
    /// Default 100000000.
    pub max_decoded_node_bytes: u32,
    /// Base-2 logarithm of the version tree arity, 1 to 16. Default 4.
    pub version_tree_arity_log2: u8,
    /// Compression of nodes and the manifest. Default zstd at level 0,
    /// which selects zstd's default level.
    pub compression: OcdbtCompression,
    /// Size in bytes that the writer fills each node up to before it starts
    /// another, so databases larger than this get interior nodes. Default
    /// 1 MiB, so a lookup decodes about 1 MiB per tree level. Values above
    /// `max_decoded_node_bytes` act as that limit.
    pub target_node_bytes: u32,
}

impl OcdbtWriterOptions {
    /// Sets the size B+tree nodes are split at, in encoded bytes; small
    /// values give deep trees, which tests use.
    pub fn with_target_node_bytes(mut self, bytes: u32) -> OcdbtWriterOptions {
        self.target_node_bytes = bytes;
        self
    }

    /// Sets the compression of B+tree nodes and the manifest.
    pub fn with_compression(mut self, compression: OcdbtCompression) -> OcdbtWriterOptions {
        self.compression = compression;
        self
    }
}

impl Default for OcdbtWriterOptions {
    fn default() -> OcdbtWriterOptions {
        OcdbtWriterOptions {
            max_inline_value_bytes: 1024,
            max_decoded_node_bytes: 100_000_000,
            version_tree_arity_log2: 4,
            compression: OcdbtCompression::Zstd { level: 0 },
            target_node_bytes: 1 << 20,
        }
    }
}

/// Writes a new OCDBT database with one version.
///
/// Writes go to memory. [`OcdbtWriter::commit`] stores every value larger
/// than `max_inline_value_bytes` back to back in one data file
/// `d/<32 random hex digits>`, followed by the B+tree nodes, in one
/// sequential write, and then writes `manifest.ocdbt`. Keys are unique: the
/// last write of a key wins. The writer only creates databases and cannot
/// add a version to an existing one.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
///
/// use bytes::Bytes;
/// use ckpt_storage::{KvStore, ObjectStoreBackend, OcdbtReader, OcdbtWriter, OcdbtWriterOptions, Store};
///
/// # fn main() -> ckpt_storage::Result<()> {
/// let store = Store::new(Arc::new(ObjectStoreBackend::memory()?));
/// let writer = OcdbtWriter::create(store.clone(), OcdbtWriterOptions::default())?;
/// writer.write("w/.zarray", Bytes::from_static(b"{}"))?;
/// // Above 1024 bytes, so stored out-of-line in the data file.
/// writer.write("w/0.0", Bytes::from(vec![7u8; 4096]))?;
/// writer.commit()?;
///
/// let reader = OcdbtReader::open(store)?;
/// assert_eq!(reader.list("w/")?, ["w/.zarray", "w/0.0"]);
/// assert_eq!(reader.read("w/0.0")?.map(|value| value.len()), Some(4096));
/// # Ok(())
/// # }
/// ```
pub struct OcdbtWriter {
    store: Store,
    options: OcdbtWriterOptions,
    /// The buffered writes sorted by key, or `None` once committed.
    pending: Mutex<Option<BTreeMap<Vec<u8>, Bytes>>>,
}

impl OcdbtWriter {
    /// Starts a database in `store`, which must not hold a `manifest.ocdbt` yet.
    ///
    /// Fails with [`StorageError::AlreadyExists`] when it does, and with
    /// [`StorageError::InvalidOcdbtWrite`] for options out of range.
    pub fn create(store: Store, options: OcdbtWriterOptions) -> Result<OcdbtWriter> {
        validate_options(&store, &options)?;
        if store.exists(MANIFEST_KEY)? {
            return Err(StorageError::AlreadyExists {
                store: store.url(),
                key: MANIFEST_KEY.to_owned(),
            });
        }
        Ok(OcdbtWriter {
            store,
            options,
            pending: Mutex::new(Some(BTreeMap::new())),
        })
    }

    /// Writes the buffered values, the B+tree and the manifest, and returns
    /// the version written (generation 1).
    ///
    /// A second commit, and writes after a commit, fail with
    /// [`StorageError::Unsupported`].
    pub fn commit(&self) -> Result<VersionReference> {
        let Some(pending) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Err(
                self.committed_error("a second commit (create a new writer in another directory)")
            );
        };
        let data_file = new_data_file_name();
        let file_id = DataFileId {
            base_path: Vec::new(),
            relative_path: data_file.as_bytes().to_vec(),
        };

        let max_inline = u64::from(self.options.max_inline_value_bytes);
        let out_of_line_bytes: usize = pending
            .values()
            .filter(|value| value.len() as u64 > max_inline)
            .map(Bytes::len)
            .sum();
        // NOTE: every value stays in memory until here, and the data file is
        // built as one buffer, so a commit holds the out-of-line bytes twice
        // while the caller still references its own `Bytes`.
        let mut data = Vec::with_capacity(out_of_line_bytes);
        let mut entries = Vec::with_capacity(pending.len());
        for (key, value) in pending {
            let value = if value.len() as u64 > max_inline {
                let reference = DataReference {
                    file: file_id.clone(),
                    offset: data.len() as u64,
                    length: value.len() as u64,
                };
                data.extend_from_slice(&value);
                LeafValue::OutOfLine(reference)
            } else {
                LeafValue::Inline(value)
            };
            entries.push((key, value));
        }

        let version = write_database(&self.store, &self.options, &data_file, data, entries)?;
        tracing::debug!(
            store = %self.store.url(),
            num_keys = version.statistics().num_keys,
            bytes = version.statistics().num_indirect_value_bytes,
            "committed OCDBT database"
        );
        Ok(version)
    }

    /// Returns the error for using the writer after its commit. `operation`
    /// names what was attempted and what to do instead.
    fn committed_error(&self, operation: &'static str) -> StorageError {
        StorageError::Unsupported {
            store: KvStore::url(self),
            operation,
        }
    }
}

impl KvStore for OcdbtWriter {
    /// Returns the database location in TensorStore's URL syntax, such as `file:///ckpt/|ocdbt:`.
    fn url(&self) -> String {
        format!("{}/|ocdbt:", self.store.url())
    }

    /// Returns a value written before, or `None`. The writer never reads the store.
    fn read(&self, key: &str) -> Result<Option<Bytes>> {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pending) = pending.as_ref() else {
            return Err(self.committed_error("reads after commit (open an OcdbtReader instead)"));
        };
        Ok(pending.get(key.as_bytes()).cloned())
    }

    fn write(&self, key: &str, value: Bytes) -> Result<()> {
        if key.len() as u64 > MAX_KEY_LEN {
            return Err(StorageError::InvalidOcdbtWrite {
                store: self.store.url(),
                reason: format!(
                    "key of {} bytes is longer than the OCDBT maximum of {MAX_KEY_LEN}",
                    key.len()
                ),
            });
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pending) = pending.as_mut() else {
            return Err(self.committed_error(
                "writes after commit (create a new writer in another directory)",
            ));
        };
        pending.insert(key.as_bytes().to_vec(), value);
        Ok(())
    }
}

impl fmt::Debug for OcdbtWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OcdbtWriter")
            .field("url", &self.store.url())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn validate_options(store: &Store, options: &OcdbtWriterOptions) -> Result<()> {
    let invalid = |reason: String| StorageError::InvalidOcdbtWrite {
        store: store.url(),
        reason,
    };
    if !(1..=MAX_VERSION_TREE_ARITY_LOG2).contains(&options.version_tree_arity_log2) {
        return Err(invalid(format!(
            "version_tree_arity_log2 {} is outside 1..={MAX_VERSION_TREE_ARITY_LOG2}",
            options.version_tree_arity_log2
        )));
    }
    if options.max_inline_value_bytes > MAX_INLINE_VALUE_BYTES {
        return Err(invalid(format!(
            "max_inline_value_bytes {} is above the format's limit of {MAX_INLINE_VALUE_BYTES}",
            options.max_inline_value_bytes
        )));
    }
    if options.target_node_bytes == 0 || options.max_decoded_node_bytes == 0 {
        return Err(invalid(
            "target_node_bytes and max_decoded_node_bytes must be at least 1".to_owned(),
        ));
    }
    if let OcdbtCompression::Zstd { level } = options.compression {
        let levels = zstd::compression_level_range();
        if !levels.contains(&level) {
            return Err(invalid(format!("zstd level {level} is outside {levels:?}")));
        }
    }
    Ok(())
}

/// Returns a new data file name, `d/` and 32 random lowercase hex digits, as TensorStore names them.
pub(super) fn new_data_file_name() -> String {
    format!("d/{}", uuid::Uuid::new_v4().simple())
}

/// Builds the tree over `entries`, writes `data` (values already placed at
/// its start) with the nodes appended as `data_file`, then writes
/// `manifest.ocdbt` with one version.
///
/// The manifest goes last and only if absent, so a database is never
/// visible before all its data is stored.
pub(super) fn write_database(
    store: &Store,
    options: &OcdbtWriterOptions,
    data_file: &str,
    mut data: Vec<u8>,
    entries: Vec<(Vec<u8>, LeafValue)>,
) -> Result<VersionReference> {
    let node_file = DataFileId {
        base_path: Vec::new(),
        relative_path: data_file.as_bytes().to_vec(),
    };
    let limits = TreeLimits {
        target_node_bytes: u64::from(options.target_node_bytes),
        max_decoded_node_bytes: u64::from(options.max_decoded_node_bytes),
        compression: options.compression,
    };
    let tree = build_tree(entries, &node_file, &mut data, &limits)
        .map_err(|err| build_error(store, data_file, err))?;
    if !data.is_empty() {
        store.put(data_file, Bytes::from(data))?;
    }

    let version = VersionReference {
        generation: 1,
        root_height: tree.as_ref().map_or(0, |tree| tree.height),
        root: tree.map(|tree| tree.root),
        commit_time_ns: now_ns(),
    };
    let manifest = Manifest {
        config: OcdbtConfig {
            uuid: *uuid::Uuid::new_v4().as_bytes(),
            manifest_kind: ManifestKind::Single,
            max_inline_value_bytes: options.max_inline_value_bytes,
            max_decoded_node_bytes: options.max_decoded_node_bytes,
            version_tree_arity_log2: options.version_tree_arity_log2,
            compression: options.compression,
        },
        versions: vec![version.clone()],
        version_nodes: Vec::new(),
    };
    let encoded = encode_manifest(&manifest, ManifestKind::Single)
        .map_err(|source| compress_error(store, MANIFEST_KEY, source))?;
    store.put_if_absent(MANIFEST_KEY, Bytes::from(encoded))?;
    Ok(version)
}

fn build_error(store: &Store, data_file: &str, err: BuildError) -> StorageError {
    match err {
        BuildError::NodeTooLarge { key, estimate, limit } => StorageError::InvalidOcdbtWrite {
            store: store.url(),
            reason: format!(
                "a node holding key {:?} needs up to {estimate} bytes, above max_decoded_node_bytes {limit}; \
                 raise max_decoded_node_bytes or lower max_inline_value_bytes",
                String::from_utf8_lossy(&key)
            ),
        },
        BuildError::Compress(source) => compress_error(store, data_file, source),
    }
}

fn compress_error(store: &Store, key: &str, source: std::io::Error) -> StorageError {
    StorageError::Io {
        operation: "write",
        store: store.url(),
        key: key.to_owned(),
        source: Box::new(source),
    }
}

fn now_ns() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}
