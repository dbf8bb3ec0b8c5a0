//! Reading the newest version of a database: manifest, B+tree descent and
//! ranged reads of out-of-line values.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, PoisonError, RwLock},
};

use bytes::Bytes;

use super::{
    btree::{decode_btree_node, BtreeEntries, BtreeNode, InteriorEntry, LeafValue},
    envelope::MAX_DECODED_BYTES_LIMIT,
    manifest::{decode_manifest, Manifest, ManifestKind},
    DataFileId, DataReference, OcdbtConfig, OcdbtError, VersionReference,
};
use crate::{validate_key, KvStore, Result, StorageError, Store};

/// Name of the manifest file in the database directory.
pub(super) const MANIFEST_KEY: &str = "manifest.ocdbt";

/// Maximum encoded bytes of cached nodes. An insert that would pass it
/// empties the cache first.
const NODE_CACHE_BYTES: u64 = 256 << 20;

/// Reads the newest version of an OCDBT database, as TensorStore writes it.
///
/// [`OcdbtReader::open`] reads `manifest.ocdbt` and nothing else: nodes are
/// read, checked and cached when a lookup first needs them, and an
/// out-of-line value costs one ranged read of its data file (plus one size
/// request per data file, cached). Older versions are never read. All
/// methods take `&self` and may run from many threads at once.
pub struct OcdbtReader {
    store: Store,
    config: OcdbtConfig,
    version: VersionReference,
    nodes: RwLock<NodeCache>,
    file_sizes: RwLock<HashMap<String, u64>>,
}

#[derive(Default)]
struct NodeCache {
    nodes: HashMap<(String, u64, u64), Arc<BtreeNode>>,
    encoded_bytes: u64,
}

/// A node still to visit while listing.
struct PendingNode {
    location: DataReference,
    height: u8,
    /// The accumulated key prefix of the node.
    prefix: Vec<u8>,
    /// The smallest key the parent allows, relative to `prefix`.
    lower_bound: Vec<u8>,
    /// The full key the node's keys must stay below, if any.
    upper_bound: Option<Vec<u8>>,
}

impl OcdbtReader {
    /// Opens the database in `store` at its newest version.
    ///
    /// Fails with [`StorageError::NotFound`] when `manifest.ocdbt` is absent
    /// and [`StorageError::Corrupt`] when it does not decode.
    pub fn open(store: Store) -> Result<OcdbtReader> {
        let manifest = read_manifest(&store, MANIFEST_KEY)?;
        let (config, version) = match manifest.config.manifest_kind {
            ManifestKind::Single => latest_version(&store, MANIFEST_KEY, manifest)?,
            ManifestKind::Numbered => {
                let key = newest_numbered_manifest(&store)?;
                let numbered = read_manifest(&store, &key)?;
                if numbered.config.uuid != manifest.config.uuid {
                    return Err(StorageError::Corrupt {
                        key: file_url(&store, &key),
                        reason: "its uuid differs from the one in manifest.ocdbt".to_owned(),
                    });
                }
                let (_, version) = latest_version(&store, &key, numbered)?;
                (manifest.config, version)
            }
        };
        tracing::debug!(
            store = %store.url(),
            generation = version.generation,
            num_keys = version.statistics().num_keys,
            "opened OCDBT database"
        );
        Ok(OcdbtReader {
            store,
            config,
            version,
            nodes: RwLock::default(),
            file_sizes: RwLock::default(),
        })
    }

    /// Returns the database configuration.
    pub fn config(&self) -> &OcdbtConfig {
        &self.config
    }

    /// Returns the version this reader reads: the newest one when it was opened.
    pub fn version(&self) -> &VersionReference {
        &self.version
    }

    /// Returns the directory of the database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Lists the keys that start with `prefix`, sorted.
    ///
    /// Skips subtrees whose key range cannot contain such keys, so a narrow
    /// prefix reads few nodes. Keys that are not UTF-8 are an error.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        self.for_each_entry(prefix.as_bytes(), |key, _| {
            let key = String::from_utf8(key.to_vec()).map_err(|err| StorageError::Corrupt {
                key: self.store.url(),
                reason: format!(
                    "key {:?} is not valid UTF-8",
                    String::from_utf8_lossy(err.as_bytes())
                ),
            })?;
            keys.push(key);
            Ok(())
        })?;
        Ok(keys)
    }

    /// Looks up `key` and returns where its value is, without reading an
    /// out-of-line value.
    pub(super) fn find(&self, key: &[u8]) -> Result<Option<LeafValue>> {
        let Some(root) = &self.version.root else {
            return Ok(None);
        };
        let mut node = self.node(&root.location, self.version.root_height, &[])?;
        let mut rest = key;
        loop {
            let entries = match &node.entries {
                BtreeEntries::Leaf(entries) => {
                    let found = entries.binary_search_by(|entry| entry.key.as_slice().cmp(rest));
                    return Ok(found.ok().map(|index| entries[index].value.clone()));
                }
                BtreeEntries::Interior(entries) => entries,
            };
            // The child whose lower bound is the last one at or below `rest`.
            let index = entries.partition_point(|entry| entry.key.as_slice() <= rest);
            let Some(entry) = index.checked_sub(1).map(|index| &entries[index]) else {
                return Ok(None);
            };
            let (common, lower_bound) = split_entry_key(entry);
            let Some(child_rest) = rest.strip_prefix(common) else {
                return Ok(None);
            };
            let child = self.node(&entry.child.location, node.height - 1, lower_bound)?;
            rest = child_rest;
            node = child;
        }
    }

    /// Calls `visit` with the full key and value of every entry whose key
    /// starts with `prefix`, in key order.
    pub(super) fn for_each_entry(
        &self,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &LeafValue) -> Result<()>,
    ) -> Result<()> {
        let Some(root) = &self.version.root else {
            return Ok(());
        };
        let mut stack = vec![PendingNode {
            location: root.location.clone(),
            height: self.version.root_height,
            prefix: Vec::new(),
            lower_bound: Vec::new(),
            upper_bound: None,
        }];
        // A B+tree version never reaches one node twice; a hostile file that
        // points many entries at one subtree would otherwise be walked once
        // per path, exponentially in its height.
        let mut visited = std::collections::HashSet::new();
        while let Some(pending) = stack.pop() {
            let location = &pending.location;
            let path = self.data_file_key(&location.file)?;
            if !visited.insert((path.clone(), location.offset, location.length)) {
                return Err(StorageError::Corrupt {
                    key: self.store.url(),
                    reason: format!(
                        "the B+tree node at offset {} of {path} is referenced twice; a B+tree never shares a node",
                        location.offset
                    ),
                });
            }
            let node = self.node(&pending.location, pending.height, &pending.lower_bound)?;
            match &node.entries {
                BtreeEntries::Leaf(entries) => {
                    for entry in entries {
                        let key = [pending.prefix.as_slice(), &entry.key].concat();
                        if key.starts_with(prefix) {
                            visit(&key, &entry.value)?;
                        }
                    }
                }
                BtreeEntries::Interior(entries) => {
                    // Pushed last to first, so that children are visited in key order.
                    for (index, entry) in entries.iter().enumerate().rev() {
                        let upper_bound = match entries.get(index + 1) {
                            Some(next) => Some([pending.prefix.as_slice(), &next.key].concat()),
                            None => pending.upper_bound.clone(),
                        };
                        let lower = [pending.prefix.as_slice(), &entry.key].concat();
                        let (common, lower_bound) = split_entry_key(entry);
                        let child_prefix = [pending.prefix.as_slice(), common].concat();
                        let compatible =
                            child_prefix.starts_with(prefix) || prefix.starts_with(&child_prefix);
                        if !compatible
                            || !range_may_hold_prefix(&lower, upper_bound.as_deref(), prefix)
                        {
                            continue;
                        }
                        stack.push(PendingNode {
                            location: entry.child.location.clone(),
                            height: node.height - 1,
                            prefix: child_prefix,
                            lower_bound: lower_bound.to_vec(),
                            upper_bound,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Returns a value's bytes, reading an out-of-line value with one ranged read.
    pub(super) fn value_bytes(&self, value: &LeafValue) -> Result<Bytes> {
        match value {
            LeafValue::Inline(bytes) => Ok(bytes.clone()),
            LeafValue::OutOfLine(reference) => {
                let path = self.data_file_key(&reference.file)?;
                self.read_range(&path, reference, "value")
            }
        }
    }

    /// Checks that an out-of-line value's data file exists, is inside the
    /// database directory and contains the value's byte range, without reading it.
    pub(super) fn check_out_of_line(&self, reference: &DataReference) -> Result<()> {
        let path = self.data_file_key(&reference.file)?;
        self.check_in_file(&path, reference, "value")?;
        Ok(())
    }

    /// Reads, checks and caches the node at `location`.
    ///
    /// `lower_bound` is the smallest key the parent allows, relative to the
    /// node's prefix. A node whose first key is below it is corrupt.
    fn node(
        &self,
        location: &DataReference,
        height: u8,
        lower_bound: &[u8],
    ) -> Result<Arc<BtreeNode>> {
        let path = self.data_file_key(&location.file)?;
        let cache_key = (path, location.offset, location.length);
        let cached = self
            .nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .nodes
            .get(&cache_key)
            .cloned();
        let node = match cached {
            Some(node) => node,
            None => self.load_node(&cache_key.0, location)?,
        };

        let context = || format!("B+tree node at offset {}", location.offset);
        if node.height != height {
            let err = OcdbtError::HeightMismatch {
                expected: height,
                found: node.height,
            };
            return Err(err.in_file(file_url(&self.store, &cache_key.0), &context()));
        }
        if first_key(&node) < lower_bound {
            return Err(StorageError::Corrupt {
                key: file_url(&self.store, &cache_key.0),
                reason: format!(
                    "{}: its first key is below the lower bound in its parent",
                    context()
                ),
            });
        }
        Ok(node)
    }

    fn load_node(&self, path: &str, location: &DataReference) -> Result<Arc<BtreeNode>> {
        let context = format!("B+tree node at offset {}", location.offset);
        if location.length > MAX_DECODED_BYTES_LIMIT {
            let err = OcdbtError::LimitExceeded {
                field: "encoded node length",
                value: location.length,
                limit: MAX_DECODED_BYTES_LIMIT,
            };
            return Err(err.in_file(file_url(&self.store, path), &context));
        }
        let encoded = self.read_range(path, location, "B+tree node")?;
        let max_decoded = u64::from(self.config.max_decoded_node_bytes);
        let node = decode_btree_node(&encoded, &location.file.base_path, max_decoded)
            .map_err(|err| err.in_file(file_url(&self.store, path), &context))?;
        let node = Arc::new(node);

        let mut cache = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        if cache.encoded_bytes.saturating_add(location.length) > NODE_CACHE_BYTES {
            *cache = NodeCache::default();
        }
        cache.encoded_bytes += location.length;
        cache.nodes.insert(
            (path.to_owned(), location.offset, location.length),
            Arc::clone(&node),
        );
        Ok(node)
    }

    /// Turns a data file id into a key of the store, rejecting paths that
    /// are not UTF-8 or would leave the database directory.
    fn data_file_key(&self, file: &DataFileId) -> Result<String> {
        let path = file.full_path();
        let invalid = |reason| {
            let err = OcdbtError::InvalidPath {
                path: String::from_utf8_lossy(&path).into_owned(),
                reason,
            };
            err.in_file(self.store.url(), "data file reference")
        };
        let Ok(key) = String::from_utf8(path.clone()) else {
            return Err(invalid("it is not valid UTF-8"));
        };
        if validate_key(&key).is_err() || key.ends_with('/') {
            return Err(invalid(
                "it is empty, absolute, or has \"..\", \".\" or empty segments",
            ));
        }
        Ok(key)
    }

    /// Reads the byte range `reference` of the data file `path`, checking it
    /// against the file's size first.
    fn read_range(&self, path: &str, reference: &DataReference, what: &str) -> Result<Bytes> {
        let end = self.check_in_file(path, reference, what)?;
        if reference.length == 0 {
            return Ok(Bytes::new());
        }
        let bytes = self
            .store
            .get_range(path, reference.offset..end)?
            .ok_or_else(|| missing_data_file(&self.store, path))?;
        if bytes.len() as u64 != reference.length {
            return Err(StorageError::Corrupt {
                key: file_url(&self.store, path),
                reason: format!(
                    "read of {what} returned {} bytes, expected {}",
                    bytes.len(),
                    reference.length
                ),
            });
        }
        Ok(bytes)
    }

    /// Checks that `reference` lies inside the data file `path` and returns its end.
    fn check_in_file(&self, path: &str, reference: &DataReference, what: &str) -> Result<u64> {
        let size = self.file_size(path)?;
        let end = reference.end();
        if end > size {
            return Err(StorageError::Corrupt {
                key: file_url(&self.store, path),
                reason: format!(
                    "{what} at bytes {}..{end} is past the end of the file ({size} bytes)",
                    reference.offset
                ),
            });
        }
        Ok(end)
    }

    fn file_size(&self, path: &str) -> Result<u64> {
        if let Some(&size) = self
            .file_sizes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Ok(size);
        }
        let size = self
            .store
            .size(path)?
            .ok_or_else(|| missing_data_file(&self.store, path))?;
        self.file_sizes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), size);
        Ok(size)
    }
}

impl KvStore for OcdbtReader {
    /// Returns the database location in TensorStore's URL syntax, such as `file:///ckpt/|ocdbt:`.
    fn url(&self) -> String {
        format!("{}/|ocdbt:", self.store.url())
    }

    fn read(&self, key: &str) -> Result<Option<Bytes>> {
        match self.find(key.as_bytes())? {
            Some(value) => self.value_bytes(&value).map(Some),
            None => Ok(None),
        }
    }

    fn write(&self, _key: &str, _value: Bytes) -> Result<()> {
        Err(StorageError::Unsupported {
            store: KvStore::url(self),
            operation: "writes through an OcdbtReader (write a new database with OcdbtWriter)",
        })
    }
}

impl fmt::Debug for OcdbtReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OcdbtReader")
            .field("url", &self.store.url())
            .field("generation", &self.version.generation)
            .finish_non_exhaustive()
    }
}

/// Reads and decodes the manifest file `key`.
fn read_manifest(store: &Store, key: &str) -> Result<Manifest> {
    let encoded = store.get_required(key)?;
    decode_manifest(&encoded).map_err(|err| err.in_file(file_url(store, key), "manifest"))
}

/// Splits a manifest into its configuration and newest version.
fn latest_version(
    store: &Store,
    key: &str,
    manifest: Manifest,
) -> Result<(OcdbtConfig, VersionReference)> {
    let Some(version) = manifest.versions.last().cloned() else {
        return Err(StorageError::Corrupt {
            key: file_url(store, key),
            reason: "the manifest lists no versions".to_owned(),
        });
    };
    Ok((manifest.config, version))
}

/// Finds the `manifest.<16 hex digits>` file with the highest generation.
fn newest_numbered_manifest(store: &Store) -> Result<String> {
    let newest = store
        .list()?
        .into_iter()
        .filter_map(|key| {
            let digits = key.strip_prefix("manifest.")?;
            let lower_hex = digits.len() == 16
                && digits
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            let generation = u64::from_str_radix(digits, 16).ok().filter(|_| lower_hex)?;
            Some((generation, key))
        })
        .max();
    match newest {
        Some((_, key)) => Ok(key),
        None => Err(StorageError::Corrupt {
            key: file_url(store, MANIFEST_KEY),
            reason: "the manifest kind is numbered but no manifest.<generation> file exists"
                .to_owned(),
        }),
    }
}

/// Splits an interior entry's key into the part shared by the child's keys
/// and the rest, which is the child's lower bound relative to that part.
fn split_entry_key(entry: &InteriorEntry) -> (&[u8], &[u8]) {
    // Decoding checked that the common prefix length is within the key.
    entry.key.split_at(entry.subtree_common_prefix_len as usize)
}

fn first_key(node: &BtreeNode) -> &[u8] {
    match &node.entries {
        BtreeEntries::Leaf(entries) => entries.first().map_or(&[], |entry| entry.key.as_slice()),
        BtreeEntries::Interior(entries) => {
            entries.first().map_or(&[], |entry| entry.key.as_slice())
        }
    }
}

/// Returns whether a subtree whose keys lie in `[lower, upper)` may contain
/// keys starting with `prefix`.
fn range_may_hold_prefix(lower: &[u8], upper: Option<&[u8]>, prefix: &[u8]) -> bool {
    if upper.is_some_and(|upper| upper <= prefix) {
        return false;
    }
    // A lower bound above `prefix` that does not start with it is above
    // every key that does.
    lower <= prefix || lower.starts_with(prefix)
}

pub(super) fn file_url(store: &Store, path: &str) -> String {
    format!("{}/{path}", store.url())
}

fn missing_data_file(store: &Store, path: &str) -> StorageError {
    StorageError::Corrupt {
        key: file_url(store, path),
        reason: "the data file is missing, although the database refers to it".to_owned(),
    }
}
