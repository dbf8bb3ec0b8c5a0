//! Merging per-process databases into one root database, as Orbax's primary
//! process does when it finalizes a multi-process save.

use std::collections::{btree_map::Entry, BTreeMap};

use super::{
    btree::LeafValue,
    reader::MANIFEST_KEY,
    writer::{new_data_file_name, write_database},
    DataFileId, DataReference, OcdbtReader, OcdbtWriterOptions,
};
use crate::{Result, StorageError, Store};

/// Writes a database at `root` that contains every key of the databases in
/// the child directories `children` (such as `ocdbt.process_0`).
///
/// Inline values are copied into the new leaves. Out-of-line values stay in
/// the children's data files: the new leaves refer to them with the child
/// directory as base path (`ocdbt.process_0/` + `d/<hex>`), so no value bytes
/// are copied and the children must be kept. The new database has the
/// options of [`OcdbtWriterOptions::default`] and one version.
///
/// Fails with [`StorageError::Corrupt`] when two children contain the same
/// key, and with [`StorageError::AlreadyExists`] when `root` already contains
/// a `manifest.ocdbt`.
pub fn merge_databases(root: Store, children: &[&str]) -> Result<()> {
    if root.exists(MANIFEST_KEY)? {
        return Err(StorageError::AlreadyExists {
            store: root.url(),
            key: MANIFEST_KEY.to_owned(),
        });
    }

    // Each key with the index of the child it came from.
    let mut merged: BTreeMap<Vec<u8>, (usize, LeafValue)> = BTreeMap::new();
    for (index, name) in children.iter().enumerate() {
        let name = name.trim_end_matches('/');
        let child = OcdbtReader::open(root.child(name)?)?;
        let base_path = format!("{name}/").into_bytes();
        child.for_each_entry(b"", |key, value| {
            let value = match value {
                LeafValue::Inline(bytes) => LeafValue::Inline(bytes.clone()),
                LeafValue::OutOfLine(reference) => {
                    child.check_out_of_line(reference)?;
                    LeafValue::OutOfLine(rebase(reference, &base_path))
                }
            };
            match merged.entry(key.to_vec()) {
                Entry::Vacant(slot) => {
                    slot.insert((index, value));
                    Ok(())
                }
                Entry::Occupied(existing) => Err(StorageError::Corrupt {
                    key: root.url(),
                    reason: format!(
                        "key {:?} is in both {} and {name}; each key must come from one process",
                        String::from_utf8_lossy(key),
                        children[existing.get().0].trim_end_matches('/'),
                    ),
                }),
            }
        })?;
    }

    let entries = merged
        .into_iter()
        .map(|(key, (_, value))| (key, value))
        .collect();
    let options = OcdbtWriterOptions::default();
    let version = write_database(&root, &options, &new_data_file_name(), Vec::new(), entries)?;
    tracing::debug!(
        store = %root.url(),
        children = children.len(),
        num_keys = version.statistics().num_keys,
        "merged OCDBT databases"
    );
    Ok(())
}

/// Makes a reference relative to a child database relative to its parent.
fn rebase(reference: &DataReference, base_path: &[u8]) -> DataReference {
    DataReference {
        file: DataFileId {
            base_path: [base_path, &reference.file.base_path].concat(),
            relative_path: reference.file.relative_path.clone(),
        },
        offset: reference.offset,
        length: reference.length,
    }
}
