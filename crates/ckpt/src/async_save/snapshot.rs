//! Snapshots of the items of a save: sharded arrays copied into host memory
//! on their hosts, so the caller may change the live arrays while the save
//! writes the copies.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    sync::Arc,
};

use ckpt_colocated::{ArrayId, Controller, ShardedArray};
use ckpt_core::num_bytes;
use tracing::warn;

use crate::{item_io::StagedItem, Leaf, Result};

/// Host-memory copies of the sharded arrays of one save. Dropping it drops
/// the copies from their hosts.
#[derive(Debug)]
pub(crate) struct Snapshot {
    controller: Arc<Controller>,
    copies: Vec<ShardedArray>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.copies.is_empty() {
            return;
        }
        let copies: Vec<&ShardedArray> = self.copies.iter().collect();
        if let Err(err) = self.controller.drop_arrays(&copies) {
            warn!(arrays = copies.len(), error = %err, "could not drop the snapshot copies of a save from their hosts");
        }
    }
}

/// Returns the bytes that a save of `items` keeps in memory until it
/// finishes: one copy of each distinct sharded array, and the host arrays
/// and strings.
pub(crate) fn staging_bytes<'a>(items: impl IntoIterator<Item = &'a StagedItem>) -> Result<u64> {
    let mut seen: HashSet<ArrayId> = HashSet::new();
    let mut total = 0u64;
    for item in items {
        let StagedItem::PyTree { args, .. } = item else {
            continue;
        };
        for leaf in args.item.leaves() {
            let bytes = match leaf {
                Leaf::Array(array) => {
                    if !seen.insert(array.id()) {
                        continue;
                    }
                    num_bytes(&array.spec().shape, array.spec().dtype)?
                }
                Leaf::HostArray(array) => array.bytes().len() as u64,
                Leaf::String(text) => text.len() as u64,
                _ => 0,
            };
            total = total.saturating_add(bytes);
        }
    }
    Ok(total)
}

/// Replaces every sharded array of `items` by a copy of its replica-0
/// shards in host memory, made by each host for its own devices.
///
/// Host arrays, scalars and strings are owned by the items already, so the
/// caller cannot change them. An array that appears several times is copied
/// once.
pub(crate) fn snapshot_items(
    controller: &Arc<Controller>,
    items: Vec<(String, StagedItem)>,
) -> Result<(Vec<(String, StagedItem)>, Snapshot)> {
    let mut sources: Vec<ShardedArray> = Vec::new();
    let mut index: HashMap<ArrayId, usize> = HashMap::new();
    for (_, item) in &items {
        let StagedItem::PyTree { args, .. } = item else {
            continue;
        };
        for leaf in args.item.leaves() {
            if let Leaf::Array(array) = leaf {
                if let Entry::Vacant(slot) = index.entry(array.id()) {
                    slot.insert(sources.len());
                    sources.push(array.clone());
                }
            }
        }
    }
    let copies = if sources.is_empty() {
        Vec::new()
    } else {
        controller.snapshot_arrays(&sources.iter().collect::<Vec<_>>())?
    };
    let snapshot = Snapshot {
        controller: Arc::clone(controller),
        copies,
    };

    let items = items
        .into_iter()
        .map(|(name, item)| {
            let item = match item {
                StagedItem::PyTree { mut args, handler } => {
                    args.item = args.item.map(|leaf| match leaf {
                        Leaf::Array(array) => match index.get(&array.id()) {
                            Some(&position) => Leaf::Array(snapshot.copies[position].clone()),
                            None => Leaf::Array(array),
                        },
                        other => other,
                    });
                    StagedItem::PyTree { args, handler }
                }
                json @ StagedItem::Json { .. } => json,
            };
            (name, item)
        })
        .collect();
    Ok((items, snapshot))
}
