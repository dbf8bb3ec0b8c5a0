//! Arguments of save and restore, named as in Orbax's `ocp.args`.

use ckpt_colocated::{ArraySpec, ShardedArray};
use ckpt_device::DeviceId;
use ckpt_pytree::{KeyPath, KeyPathParseError, PyTree};

use crate::Leaf;

/// How one leaf (or, as a prefix tree, a whole subtree) is saved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveArgs {
    /// Save sharded arrays colocated: each host writes the shards on its own
    /// devices, so no array bytes pass through the controller.
    pub colocated: bool,
    /// Split each writer's data into chunks of at most this many bytes
    /// (Orbax's `chunk_byte_size`). `None` stores one chunk per write, or
    /// chunks of at most 2 GiB for larger writes, as Orbax does.
    pub chunk_byte_size: Option<u64>,
}

impl SaveArgs {
    /// Save arguments for a colocated save.
    pub fn colocated() -> SaveArgs {
        SaveArgs {
            colocated: true,
            chunk_byte_size: None,
        }
    }

    /// Sets the largest chunk size in bytes.
    pub fn with_chunk_byte_size(mut self, bytes: Option<u64>) -> SaveArgs {
        self.chunk_byte_size = bytes;
        self
    }

    /// Sets whether sharded arrays are saved colocated.
    pub fn with_colocated(mut self, colocated: bool) -> SaveArgs {
        self.colocated = colocated;
        self
    }
}

/// What a restored leaf becomes.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum RestoreTarget {
    /// What was saved: sharded arrays on the sharding recorded in
    /// `_sharding` (see [`MissingSharding`] for when that sharding cannot
    /// be used here), host arrays, scalars and strings as they were.
    #[default]
    Saved,
    /// A sharded array with this shape, dtype and sharding. A leaf saved as
    /// a host array (`np.ndarray`) is placed onto the sharding as well. A
    /// scalar or string cannot take this target.
    Array(ArraySpec),
    /// Host memory of the controller: a sharded array is read whole and
    /// returned as a [`HostArray`](crate::HostArray) with its saved shape
    /// and dtype. Host arrays, scalars and strings already live there and
    /// restore as they were saved.
    Host,
}

/// The policy for an array leaf whose target is [`RestoreTarget::Saved`]
/// when its saved sharding cannot be used here. That happens when the
/// `_sharding` entry names device ids that this runtime lacks, or when the
/// checkpoint has no `_sharding` entry for the leaf (Orbax may omit it).
///
/// The default is [`MissingSharding::Error`]: the restore fails with an
/// error that names the leaf and the missing device ids. Every other
/// choice is an explicit opt-in, so that a checkpoint saved on another
/// topology never lands on a layout the caller did not ask for. The
/// policy does nothing when the saved sharding is usable or the target is
/// [`RestoreTarget::Array`] or [`RestoreTarget::Host`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingSharding {
    /// Fail with [`CkptError::SavedDevicesMissing`](crate::CkptError::SavedDevicesMissing)
    /// or [`CkptError::NoSavedSharding`](crate::CkptError::NoSavedSharding).
    #[default]
    Error,
    /// Place a full copy of the array on every device of this runtime.
    Replicated,
    /// Place the whole array on this device.
    SingleDevice(DeviceId),
    /// Read the array into the controller's memory, as [`RestoreTarget::Host`] does.
    Host,
}

/// How one leaf (or, as a prefix tree, a whole subtree) is restored.
///
/// A tree of restore arguments can be built from a tree of targets with
/// [`PyTreeRestore::with_target`]: an [`ArraySpec`] (an abstract array of
/// shape, dtype and sharding), a [`ShardedArray`] or [`Leaf`] whose spec
/// is copied, or restore arguments themselves.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RestoreArgs {
    /// What the leaf becomes.
    pub target: RestoreTarget,
    /// Restore sharded arrays colocated: each host reads the boxes of its
    /// own devices from storage.
    pub colocated: bool,
    /// The policy for a target of [`RestoreTarget::Saved`] when this
    /// runtime cannot use the saved sharding.
    pub missing_sharding: MissingSharding,
    /// Whether a target dtype may change some stored values, as float32 to
    /// bfloat16 or float to int do. Values then convert as NumPy's `astype`
    /// does (see [`ckpt_core::cast_elements`]). Casts that keep every value
    /// are always allowed.
    pub allow_lossy_cast: bool,
}

impl RestoreArgs {
    /// Restores a sharded array onto `spec`.
    pub fn array(spec: ArraySpec) -> RestoreArgs {
        RestoreArgs {
            target: RestoreTarget::Array(spec),
            ..RestoreArgs::default()
        }
    }

    /// Restores into the controller's memory.
    pub fn host() -> RestoreArgs {
        RestoreArgs {
            target: RestoreTarget::Host,
            ..RestoreArgs::default()
        }
    }

    /// Restores onto the layout of `leaf`: the spec of a sharded array,
    /// host memory for a host array, and the saved form for scalars and
    /// strings.
    pub fn like(leaf: &Leaf) -> RestoreArgs {
        match leaf {
            Leaf::Array(array) => RestoreArgs::array(array.spec().clone()),
            Leaf::HostArray(_) => RestoreArgs::host(),
            Leaf::Scalar(_) | Leaf::String(_) => RestoreArgs::default(),
        }
    }

    /// Sets whether sharded arrays are restored colocated.
    pub fn with_colocated(mut self, colocated: bool) -> RestoreArgs {
        self.colocated = colocated;
        self
    }

    /// Sets what happens when the saved sharding cannot be used here.
    pub fn with_missing_sharding(mut self, policy: MissingSharding) -> RestoreArgs {
        self.missing_sharding = policy;
        self
    }

    /// Sets whether a cast to a target dtype that changes values is allowed.
    pub fn with_lossy_cast(mut self, allow: bool) -> RestoreArgs {
        self.allow_lossy_cast = allow;
        self
    }
}

impl From<ArraySpec> for RestoreArgs {
    fn from(spec: ArraySpec) -> RestoreArgs {
        RestoreArgs::array(spec)
    }
}

impl From<&ShardedArray> for RestoreArgs {
    fn from(array: &ShardedArray) -> RestoreArgs {
        RestoreArgs::array(array.spec().clone())
    }
}

impl From<&Leaf> for RestoreArgs {
    fn from(leaf: &Leaf) -> RestoreArgs {
        RestoreArgs::like(leaf)
    }
}

/// The rule for matching the keys of a restore target with the checkpoint's keys.
///
/// The target is the tree of [`PyTreeRestore::restore_args`]. A key of
/// the target is missing when the checkpoint has no node at its path,
/// and a checkpoint leaf is extra when no leaf of the target covers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyMatch {
    /// Missing and extra keys are an error that lists all of them, as in
    /// Orbax without `partial_restore`.
    #[default]
    Strict,
    /// The target may be a subset of the checkpoint, as with Orbax's
    /// `partial_restore=True`: extra checkpoint leaves are not read and
    /// are left out of the result. Missing keys are an error.
    Partial,
    /// As [`KeyMatch::Partial`], and missing keys are left out of the
    /// result with a warning in place of an error.
    Lenient,
}

/// Arguments of [`crate::PyTreeCheckpointer::save`].
#[derive(Clone, Debug)]
pub struct PyTreeSave {
    /// The tree to save.
    pub item: PyTree<Leaf>,
    /// Save arguments: a tree with the item's structure, or a prefix of it
    /// whose leaves apply to whole subtrees. `None` saves every leaf with
    /// the defaults.
    pub save_args: Option<PyTree<SaveArgs>>,
    /// JSON stored as `custom_metadata` in `_METADATA`.
    pub custom_metadata: Option<serde_json::Value>,
}

impl PyTreeSave {
    /// Saves `item` with default arguments.
    pub fn new(item: PyTree<Leaf>) -> PyTreeSave {
        PyTreeSave {
            item,
            save_args: None,
            custom_metadata: None,
        }
    }

    /// Sets the save arguments (a full or prefix tree).
    pub fn with_save_args(mut self, save_args: PyTree<SaveArgs>) -> PyTreeSave {
        self.save_args = Some(save_args);
        self
    }

    /// Sets the custom metadata.
    pub fn with_custom_metadata(mut self, metadata: serde_json::Value) -> PyTreeSave {
        self.custom_metadata = Some(metadata);
        self
    }
}

/// Arguments of [`crate::StandardCheckpointer::save`]: a tree of arrays and
/// scalars, without strings (as in Orbax's `StandardSave`).
#[derive(Clone, Debug)]
pub struct StandardSave {
    /// The tree to save.
    pub item: PyTree<Leaf>,
    /// Save arguments, as in [`PyTreeSave::save_args`].
    pub save_args: Option<PyTree<SaveArgs>>,
    /// Save every sharded array colocated, whatever `save_args` says.
    pub colocated: bool,
}

impl StandardSave {
    /// Saves `item` with default arguments.
    pub fn new(item: PyTree<Leaf>) -> StandardSave {
        StandardSave {
            item,
            save_args: None,
            colocated: false,
        }
    }

    /// Sets the save arguments (a full or prefix tree).
    pub fn with_save_args(mut self, save_args: PyTree<SaveArgs>) -> StandardSave {
        self.save_args = Some(save_args);
        self
    }

    /// Saves every sharded array colocated.
    pub fn with_colocated(mut self, colocated: bool) -> StandardSave {
        self.colocated = colocated;
        self
    }
}

/// Arguments of [`crate::PyTreeCheckpointer::restore`].
///
/// Without restore arguments or key paths every leaf is restored as it was
/// saved. Restore arguments give a target per leaf or per subtree, and
/// [`KeyMatch`] says whether that target may be a subset of the checkpoint.
/// Key paths select leaves or subtrees on top of that, whatever the key
/// match. Leaves that are not selected are never read from storage, and the
/// result keeps the checkpoint's structure restricted to the selection.
#[derive(Clone, Debug, Default)]
pub struct PyTreeRestore {
    /// Restore arguments: a tree with the checkpoint's structure, or a
    /// prefix of it. Under [`KeyMatch::Partial`] or [`KeyMatch::Lenient`]
    /// it may leave out dict keys and trailing list items, and a
    /// [`PyTree::None`] in it skips the checkpoint subtree at its place.
    /// `None` restores every leaf as it was saved.
    pub restore_args: Option<PyTree<RestoreArgs>>,
    /// Key paths of the leaves or subtrees to restore. `None` selects every
    /// leaf that the restore arguments cover.
    pub key_paths: Option<Vec<KeyPath>>,
    /// The rule for matching the restore arguments' keys with the
    /// checkpoint's keys, which also decides whether a key path the
    /// checkpoint lacks is an error.
    pub key_match: KeyMatch,
}

impl PyTreeRestore {
    /// Restores every leaf as it was saved.
    pub fn new() -> PyTreeRestore {
        PyTreeRestore::default()
    }

    /// Sets the restore arguments (a full or prefix tree).
    pub fn with_restore_args(mut self, restore_args: PyTree<RestoreArgs>) -> PyTreeRestore {
        self.restore_args = Some(restore_args);
        self
    }

    /// Sets the restore arguments from a tree of targets: abstract arrays
    /// ([`ArraySpec`]), concrete arrays or leaves (`&ShardedArray`,
    /// `&Leaf`, whose layout is copied) or [`RestoreArgs`].
    ///
    /// Use `tree.as_ref()` to pass a tree of leaves without moving it.
    pub fn with_target<T: Into<RestoreArgs>>(self, target: PyTree<T>) -> PyTreeRestore {
        self.with_restore_args(target.map(Into::into))
    }

    /// Restores only the leaves and subtrees at `key_paths`.
    ///
    /// With restore arguments as well, each key path must lie inside them:
    /// a path that they leave out is an error unless the key match is
    /// [`KeyMatch::Lenient`].
    pub fn with_key_paths(mut self, key_paths: impl IntoIterator<Item = KeyPath>) -> PyTreeRestore {
        self.key_paths = Some(key_paths.into_iter().collect());
        self
    }

    /// Restores only the leaves and subtrees at key paths written in
    /// `jax.tree_util.keystr` form, such as `['params']['dense'][0]`.
    pub fn with_keystr_paths<S: AsRef<str>>(
        self,
        key_paths: impl IntoIterator<Item = S>,
    ) -> Result<PyTreeRestore, KeyPathParseError> {
        let parsed = key_paths
            .into_iter()
            .map(|text| text.as_ref().parse())
            .collect::<Result<Vec<KeyPath>, _>>()?;
        Ok(self.with_key_paths(parsed))
    }

    /// Sets how the restore arguments' keys must match the checkpoint's.
    pub fn with_key_match(mut self, key_match: KeyMatch) -> PyTreeRestore {
        self.key_match = key_match;
        self
    }

    /// Allows the restore arguments to be a subset of the checkpoint, as
    /// Orbax's `partial_restore` does: [`KeyMatch::Partial`] when set,
    /// [`KeyMatch::Strict`] otherwise.
    pub fn with_partial_restore(self, partial: bool) -> PyTreeRestore {
        self.with_key_match(if partial { KeyMatch::Partial } else { KeyMatch::Strict })
    }
}

/// Arguments of [`crate::StandardCheckpointer::restore`].
pub type StandardRestore = PyTreeRestore;
