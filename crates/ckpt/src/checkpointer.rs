use std::{collections::BTreeMap, sync::Arc};

use base64::{engine::general_purpose::URL_SAFE, Engine as _};
use bytes::Bytes;
use ckpt_colocated::Controller;
use ckpt_pytree::{check_param_names, param_name, KeyPath, PyTree, TreeMetadata, ValueMetadata};
use ckpt_storage::{
    finalize_item, open_committed, ArrayFormat, ArrayReader, ArrayWriter, CommitOptions,
    ItemHandlers, PendingCheckpoint, Store,
};
use tracing::{info, warn};

use crate::{
    handlers::{ColocatedArrayHandler, ARRAY_VALUE_TYPE},
    partial::{select, Selected},
    CkptError, Leaf, LeafType, PyTreeRestore, PyTreeSave, RestoreArgs, RestoreContext,
    RestoreEntry, RestoreTarget, Result, SaveArgs, SaveContext, SaveEntry, SavedLeaf,
    StandardRestore, StandardSave, TypeHandler, TypeHandlerRegistry,
};

/// The pytree metadata file of a checkpoint item.
pub(crate) const METADATA_FILE: &str = "_METADATA";
/// The file of sharded arrays' shardings, keyed by base64url parameter names.
pub(crate) const SHARDING_FILE: &str = "_sharding";

/// Handler class names recorded in `_CHECKPOINT_METADATA`, as Orbax writes them.
pub(crate) const PYTREE_HANDLER_NAME: &str =
    "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler";
pub(crate) const STANDARD_HANDLER_NAME: &str =
    "orbax.checkpoint._src.handlers.standard_checkpoint_handler.StandardCheckpointHandler";

/// Leaf positions grouped by the type handler that saves or restores them.
type HandlerGroups = Vec<(Arc<dyn TypeHandler>, Vec<usize>)>;

/// Summary of a finished save.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveSummary {
    /// Leaves saved, empty containers and `None` not counted.
    pub leaves: usize,
    /// Array bytes that passed through the controller during the save.
    pub controller_array_bytes: u64,
}

/// Saves and restores pytrees in the Orbax format (Orbax's
/// `PyTreeCheckpointer`): sharded arrays, host arrays, scalars and strings.
///
/// A checkpoint is written under a temporary name and committed at the end
/// (see [`ckpt_storage::PendingCheckpoint`]). A failed save leaves no
/// committed checkpoint and does not touch an earlier one.
#[derive(Debug)]
pub struct PyTreeCheckpointer {
    controller: Arc<Controller>,
    registry: TypeHandlerRegistry,
    format: ArrayFormat,
    replica_parallel: bool,
    overwrite: bool,
}

impl PyTreeCheckpointer {
    /// Creates a checkpointer over `controller`'s runtime with a copy of the
    /// process-wide type handler registry and the default format.
    pub fn new(controller: Arc<Controller>) -> PyTreeCheckpointer {
        PyTreeCheckpointer {
            controller,
            registry: crate::global_registry(),
            format: ArrayFormat::default(),
            replica_parallel: true,
            overwrite: false,
        }
    }

    /// Sets whether a save replaces a committed checkpoint of the same name
    /// (Orbax's `force=True`). Off by default, so such a save fails with
    /// [`ckpt_storage::StorageError::CheckpointExists`].
    ///
    /// On a store that renames, the old checkpoint stays until the new one
    /// is written. On an object store the new one is written in its place,
    /// so the old one is deleted when the save begins.
    pub fn with_overwrite(mut self, overwrite: bool) -> PyTreeCheckpointer {
        self.overwrite = overwrite;
        self
    }

    /// Returns the commit options of this checkpointer's saves.
    pub(crate) fn commit_options(&self) -> CommitOptions {
        CommitOptions::default().overwrite(self.overwrite)
    }

    /// Sets whether the replicas of a replicated shard share writing it, each
    /// writing one slice (on by default, as in Orbax on CPU and TPU), or
    /// replica 0 writes the whole shard.
    pub fn with_replica_parallel(mut self, replica_parallel: bool) -> PyTreeCheckpointer {
        self.replica_parallel = replica_parallel;
        self
    }

    /// Uses `registry` in place of the process-wide one.
    pub fn with_registry(mut self, registry: TypeHandlerRegistry) -> PyTreeCheckpointer {
        self.registry = registry;
        self
    }

    /// Sets how arrays are stored.
    pub fn with_format(mut self, format: ArrayFormat) -> PyTreeCheckpointer {
        self.format = format;
        self
    }

    /// The controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Saves `args.item` as the checkpoint `name` under `parent`.
    pub fn save(&self, parent: &Store, name: &str, args: PyTreeSave) -> Result<SaveSummary> {
        self.save_item(parent, name, args, PYTREE_HANDLER_NAME)
    }

    /// Restores the checkpoint `name` under `parent`.
    pub fn restore(&self, parent: &Store, name: &str, args: PyTreeRestore) -> Result<PyTree<Leaf>> {
        let item = open_committed(parent, name)?;
        self.restore_item(&item, args)
    }

    /// Reads the tree structure and per-leaf metadata without array data.
    pub fn metadata(&self, parent: &Store, name: &str) -> Result<crate::CheckpointMetadata> {
        crate::metadata(parent, name)
    }

    fn save_item(
        &self,
        parent: &Store,
        name: &str,
        args: PyTreeSave,
        handler_name: &str,
    ) -> Result<SaveSummary> {
        let flat = args.item.flatten();
        check_param_names(flat.iter().map(|(path, _)| path))?;
        let save_args = broadcast_args(&args.item, args.save_args.as_ref())?;

        let before = self.controller.array_bytes();
        let mut pending = PendingCheckpoint::begin_with(parent, name, self.commit_options())?;
        pending.metadata_mut().item_handlers = Some(ItemHandlers::Single(handler_name.to_owned()));
        let result = self.write_item(pending.store(), &args, &flat, &save_args);
        if let Err(err) = result {
            if let Err(abort_err) = pending.abort() {
                warn!(checkpoint = name, error = %abort_err, "could not remove a failed save");
            }
            return Err(err);
        }
        pending.commit()?;
        let summary = SaveSummary {
            leaves: flat.len(),
            controller_array_bytes: self.controller.array_bytes() - before,
        };
        info!(checkpoint = name, leaves = summary.leaves, "saved checkpoint");
        Ok(summary)
    }

    /// Writes the files of `args.item` into the directory `item` without
    /// committing it, and returns the number of leaves written.
    pub(crate) fn write_item_files(&self, item: &Store, args: &PyTreeSave) -> Result<usize> {
        let flat = args.item.flatten();
        check_param_names(flat.iter().map(|(path, _)| path))?;
        let save_args = broadcast_args(&args.item, args.save_args.as_ref())?;
        self.write_item(item, args, &flat, &save_args)?;
        Ok(flat.len())
    }

    fn write_item(
        &self,
        item: &Store,
        args: &PyTreeSave,
        flat: &[(KeyPath, &Leaf)],
        save_args: &[SaveArgs],
    ) -> Result<()> {
        // The controller's array metadata file takes the process index after
        // the hosts', so that it never collides with a host's.
        let num_hosts = self.controller.runtime().topology().num_hosts();
        let writer =
            ArrayWriter::open(item, &self.format, "controller")?.with_process_index(num_hosts);
        let context = SaveContext {
            item,
            format: &self.format,
            controller: &self.controller,
            writer: &writer,
            replica_parallel: self.replica_parallel,
        };
        let names: Vec<String> = flat.iter().map(|(path, _)| param_name(path)).collect();
        let mut saved: Vec<Option<SavedLeaf>> = vec![None; flat.len()];

        for (handler, indices) in self.group_for_save(flat, save_args)? {
            let entries: Vec<SaveEntry<'_>> = indices
                .iter()
                .map(|&i| SaveEntry {
                    key_path: &flat[i].0,
                    param_name: &names[i],
                    leaf: flat[i].1,
                    args: &save_args[i],
                })
                .collect();
            let results = handler.save(&context, &entries)?;
            for (&i, result) in indices.iter().zip(results) {
                saved[i] = Some(result);
            }
        }
        writer.finish()?;
        finalize_item(item, &self.format)?;

        let saved: Vec<SavedLeaf> = saved
            .into_iter()
            .zip(flat)
            .map(|(leaf, (path, _))| {
                leaf.ok_or_else(|| CkptError::InvalidLeaf {
                    key_path: path.to_string(),
                    reason: "its handler returned no result".into(),
                })
            })
            .collect::<Result<_>>()?;
        write_shardings(item, &names, &saved)?;
        write_tree_metadata(item, &args.item, &saved, &self.format, args.custom_metadata.clone())
    }

    /// Groups leaf indices by the handler that saves them, keeping tree order.
    fn group_for_save(
        &self,
        flat: &[(KeyPath, &Leaf)],
        save_args: &[SaveArgs],
    ) -> Result<HandlerGroups> {
        let colocated: Arc<dyn TypeHandler> = Arc::new(ColocatedArrayHandler);
        let mut groups: Vec<(Arc<dyn TypeHandler>, Vec<usize>)> = Vec::new();
        for (i, (path, leaf)) in flat.iter().enumerate() {
            let leaf_type = leaf.leaf_type();
            let handler = if leaf_type == LeafType::Array && save_args[i].colocated {
                Arc::clone(&colocated)
            } else {
                let Some(handler) = self.registry.get(leaf_type) else {
                    return Err(CkptError::NoHandler {
                        leaf_type: leaf_type.to_string(),
                        key_path: path.to_string(),
                    });
                };
                Arc::clone(handler)
            };
            match groups.iter_mut().find(|(h, _)| Arc::ptr_eq(h, &handler)) {
                Some((_, indices)) => indices.push(i),
                None => groups.push((handler, vec![i])),
            }
        }
        Ok(groups)
    }

    pub(crate) fn restore_item(&self, item: &Store, args: PyTreeRestore) -> Result<PyTree<Leaf>> {
        if let Some(tree) = crate::legacy::read_legacy(item)? {
            return self.restore_legacy(tree, &args);
        }
        let metadata = read_tree_metadata(item)?;
        let tree = &metadata.tree;
        let selection = select(tree, &args)?;
        let flat = tree.flatten();
        let selected = selection.leaves();
        let names: Vec<String> = selected
            .iter()
            .map(|leaf| param_name(&flat[leaf.index].0))
            .collect();

        let reader = open_array_reader(item, &metadata)?;
        let shardings = read_shardings(item)?;
        let context = RestoreContext {
            item,
            use_ocdbt: metadata.use_ocdbt,
            use_zarr3: metadata.use_zarr3,
            controller: &self.controller,
            reader: &reader,
            shardings: &shardings,
        };

        let mut leaves: Vec<Option<Leaf>> = vec![None; selected.len()];
        for (handler, positions) in self.group_for_restore(&flat, &selected)? {
            let entries: Vec<RestoreEntry<'_>> = positions
                .iter()
                .map(|&position| {
                    let (key_path, value) = &flat[selected[position].index];
                    RestoreEntry {
                        key_path,
                        param_name: &names[position],
                        value_type: value.value_type.as_str(),
                        args: &selected[position].args,
                    }
                })
                .collect();
            let restored = handler.restore(&context, &entries)?;
            for (&position, leaf) in positions.iter().zip(restored) {
                leaves[position] = Some(leaf);
            }
        }
        let leaves = leaves
            .into_iter()
            .zip(&selected)
            .map(|(leaf, chosen)| {
                let key_path = &flat[chosen.index].0;
                let leaf = leaf.ok_or_else(|| CkptError::InvalidRestore {
                    key_path: key_path.to_string(),
                    reason: "its handler returned no leaf".into(),
                })?;
                self.place_on_target(key_path, leaf, &chosen.args)
            })
            .collect::<Result<Vec<Leaf>>>()?;
        Ok(selection.unflatten(leaves)?)
    }

    /// Restores the selected leaves of a legacy msgpack checkpoint, which
    /// contains host arrays, scalars and strings. A leaf whose target is a
    /// sharded array is placed onto it, and other targets keep the leaf as
    /// stored.
    fn restore_legacy(&self, tree: PyTree<Leaf>, args: &PyTreeRestore) -> Result<PyTree<Leaf>> {
        let selection = select(&tree, args)?;
        let flat = tree.flatten();
        let leaves = selection
            .leaves()
            .into_iter()
            .map(|chosen| {
                let (key_path, leaf) = &flat[chosen.index];
                self.place_on_target(key_path, (*leaf).clone(), &chosen.args)
            })
            .collect::<Result<Vec<Leaf>>>()?;
        Ok(selection.unflatten(leaves)?)
    }

    /// Places a restored host array onto the sharded target of `args`; the
    /// array handlers have done so for sharded arrays already.
    fn place_on_target(&self, key_path: &KeyPath, leaf: Leaf, args: &RestoreArgs) -> Result<Leaf> {
        let RestoreTarget::Array(spec) = &args.target else {
            return Ok(leaf);
        };
        let invalid = |reason: String| CkptError::InvalidRestore {
            key_path: key_path.to_string(),
            reason,
        };
        match leaf {
            Leaf::Array(_) => Ok(leaf),
            Leaf::HostArray(array) => {
                if array.shape() != spec.shape.as_slice() || array.dtype() != spec.dtype {
                    return Err(invalid(format!(
                        "the target is {} {:?} but the checkpoint holds {} {:?}; restore with the saved shape and dtype",
                        spec.dtype,
                        spec.shape,
                        array.dtype(),
                        array.shape()
                    )));
                }
                Ok(Leaf::Array(self.controller.put_global(spec.clone(), array.bytes())?))
            }
            other => Err(invalid(format!(
                "it was saved as one of the {} and cannot become a sharded array; restore it with RestoreArgs::default()",
                other.leaf_type()
            ))),
        }
    }

    /// Groups positions in `selected` by the handler that restores them,
    /// keeping tree order.
    fn group_for_restore(
        &self,
        flat: &[(KeyPath, &ValueMetadata)],
        selected: &[&Selected],
    ) -> Result<HandlerGroups> {
        let colocated: Arc<dyn TypeHandler> = Arc::new(ColocatedArrayHandler);
        let mut groups: Vec<(Arc<dyn TypeHandler>, Vec<usize>)> = Vec::new();
        for (position, chosen) in selected.iter().enumerate() {
            let (path, value) = &flat[chosen.index];
            let value_type = value.value_type.as_str();
            let handler = if value_type == ARRAY_VALUE_TYPE && chosen.args.colocated {
                Arc::clone(&colocated)
            } else {
                let Some(handler) = self.registry.for_value_type(value_type) else {
                    return Err(CkptError::NoHandler {
                        leaf_type: value_type.to_owned(),
                        key_path: path.to_string(),
                    });
                };
                Arc::clone(handler)
            };
            match groups.iter_mut().find(|(h, _)| Arc::ptr_eq(h, &handler)) {
                Some((_, positions)) => positions.push(position),
                None => groups.push((handler, vec![position])),
            }
        }
        Ok(groups)
    }
}

/// Gives every leaf of `tree` its arguments from a full or prefix tree of them.
fn broadcast_args<T, A: Clone + Default>(tree: &PyTree<T>, args: Option<&PyTree<A>>) -> Result<Vec<A>> {
    let Some(args) = args else {
        return Ok(vec![A::default(); tree.num_leaves()]);
    };
    let broadcast = ckpt_pytree::broadcast_prefix(args, tree)?;
    Ok(broadcast.into_leaves().into_iter().cloned().collect())
}

fn write_shardings(item: &Store, names: &[String], saved: &[SavedLeaf]) -> Result<()> {
    let mut members = serde_json::Map::new();
    for (name, leaf) in names.iter().zip(saved) {
        if let Some(sharding) = &leaf.sharding {
            members.insert(URL_SAFE.encode(name), sharding.clone().into());
        }
    }
    if members.is_empty() {
        return Ok(());
    }
    let text = serde_json::Value::Object(members).to_string();
    item.put(SHARDING_FILE, Bytes::from(text))?;
    Ok(())
}

/// Reads `_sharding`: parameter name to the sharding's JSON text.
pub(crate) fn read_shardings(item: &Store) -> Result<BTreeMap<String, String>> {
    let path = format!("{}/{SHARDING_FILE}", item.url());
    let Some(bytes) = item.get(SHARDING_FILE)? else {
        return Ok(BTreeMap::new());
    };
    let members: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|err| CkptError::InvalidMetadata {
            path: path.clone(),
            reason: format!("expected a JSON object of strings: {err}"),
        })?;
    let mut shardings = BTreeMap::new();
    for (key, value) in members {
        let name = URL_SAFE
            .decode(key.as_bytes())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| CkptError::InvalidMetadata {
                path: path.clone(),
                reason: format!("member {key:?} is not a base64url parameter name"),
            })?;
        shardings.insert(name, value);
    }
    Ok(shardings)
}

fn write_tree_metadata(
    item: &Store,
    tree: &PyTree<Leaf>,
    saved: &[SavedLeaf],
    format: &ArrayFormat,
    custom_metadata: Option<serde_json::Value>,
) -> Result<()> {
    let mut saved = saved.iter();
    let values = tree.as_ref().map(|_| {
        let leaf = saved.next().cloned().unwrap_or_default();
        let mut value = ValueMetadata::new(leaf.value_type);
        value.write_shape = leaf.write_shape;
        value
    });
    let mut metadata = TreeMetadata::new(values);
    metadata.use_ocdbt = Some(format.use_ocdbt);
    metadata.use_zarr3 = format.use_zarr3;
    metadata.store_array_data_equal_to_fill_value = true;
    metadata.custom_metadata = custom_metadata.unwrap_or(serde_json::Value::Null);
    item.put(METADATA_FILE, Bytes::from(metadata.to_json()))?;
    Ok(())
}

/// Reads and decodes `_METADATA` of an item.
pub(crate) fn read_tree_metadata(item: &Store) -> Result<TreeMetadata> {
    let bytes = item.get_required(METADATA_FILE)?;
    TreeMetadata::from_json(&bytes).map_err(|err| CkptError::InvalidMetadata {
        path: format!("{}/{METADATA_FILE}", item.url()),
        reason: err.to_string(),
    })
}

/// Opens the reader of an item's arrays in the format its `_METADATA` records.
pub(crate) fn open_array_reader(item: &Store, metadata: &TreeMetadata) -> Result<ArrayReader> {
    Ok(ArrayReader::open(item, metadata.use_ocdbt)?.with_zarr3(metadata.use_zarr3))
}

/// Saves and restores trees of arrays and scalars (Orbax's
/// `StandardCheckpointer`), rejecting string leaves as Orbax does.
#[derive(Debug)]
pub struct StandardCheckpointer {
    inner: PyTreeCheckpointer,
}

impl StandardCheckpointer {
    /// Creates a checkpointer over `controller`'s runtime, with a copy of
    /// the process-wide type handler registry.
    pub fn new(controller: Arc<Controller>) -> StandardCheckpointer {
        StandardCheckpointer {
            inner: PyTreeCheckpointer::new(controller),
        }
    }

    /// Uses `registry` in place of the process-wide one.
    pub fn with_registry(self, registry: TypeHandlerRegistry) -> StandardCheckpointer {
        StandardCheckpointer {
            inner: self.inner.with_registry(registry),
        }
    }

    /// Sets how arrays are stored.
    pub fn with_format(self, format: ArrayFormat) -> StandardCheckpointer {
        StandardCheckpointer {
            inner: self.inner.with_format(format),
        }
    }

    /// Sets replica-parallel saving, as [`PyTreeCheckpointer::with_replica_parallel`].
    pub fn with_replica_parallel(self, replica_parallel: bool) -> StandardCheckpointer {
        StandardCheckpointer {
            inner: self.inner.with_replica_parallel(replica_parallel),
        }
    }

    /// Sets whether a save replaces a committed checkpoint of the same
    /// name, as [`PyTreeCheckpointer::with_overwrite`].
    pub fn with_overwrite(self, overwrite: bool) -> StandardCheckpointer {
        StandardCheckpointer {
            inner: self.inner.with_overwrite(overwrite),
        }
    }

    /// Saves `args.item` as the checkpoint `name` under `parent`.
    pub fn save(&self, parent: &Store, name: &str, args: StandardSave) -> Result<SaveSummary> {
        let pytree_args = standard_to_pytree(args)?;
        self.inner
            .save_item(parent, name, pytree_args, STANDARD_HANDLER_NAME)
    }

    /// Restores the checkpoint `name` under `parent`.
    pub fn restore(&self, parent: &Store, name: &str, args: StandardRestore) -> Result<PyTree<Leaf>> {
        self.inner.restore(parent, name, args)
    }

    /// Reads the tree structure and per-leaf metadata without array data.
    pub fn metadata(&self, parent: &Store, name: &str) -> Result<crate::CheckpointMetadata> {
        crate::metadata(parent, name)
    }
}

/// Turns the arguments of a standard save into those of a pytree save,
/// rejecting string leaves as Orbax's `StandardCheckpointer` does.
pub(crate) fn standard_to_pytree(args: StandardSave) -> Result<PyTreeSave> {
    if let Some((path, _)) = args
        .item
        .flatten()
        .into_iter()
        .find(|(_, leaf)| matches!(leaf, Leaf::String(_)))
    {
        return Err(CkptError::InvalidLeaf {
            key_path: path.to_string(),
            reason: "StandardCheckpointer does not save strings; use PyTreeCheckpointer".into(),
        });
    }
    let mut save_args = args.save_args;
    if args.colocated {
        let with_colocated = match save_args {
            Some(tree) => tree.map(|leaf_args| leaf_args.with_colocated(true)),
            None => PyTree::leaf(SaveArgs::colocated()),
        };
        save_args = Some(with_colocated);
    }
    Ok(PyTreeSave {
        item: args.item,
        save_args,
        custom_metadata: None,
    })
}
