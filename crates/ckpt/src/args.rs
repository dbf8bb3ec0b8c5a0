//! Arguments of save and restore, named as in Orbax's `ocp.args`.

use ckpt_colocated::ArraySpec;
use ckpt_pytree::PyTree;

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
    /// `_sharding`, host arrays, scalars and strings as they were.
    #[default]
    Saved,
    /// A sharded array with this shape, dtype and sharding.
    Array(ArraySpec),
    /// An array in the controller's memory, whatever it was saved as.
    Host,
}

/// How one leaf (or, as a prefix tree, a whole subtree) is restored.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RestoreArgs {
    /// What the leaf becomes.
    pub target: RestoreTarget,
    /// Restore sharded arrays colocated: each host reads the boxes of its
    /// own devices from storage.
    pub colocated: bool,
    /// Allow a target dtype that changes some stored values, such as
    /// float32 to bfloat16 or float to int; values then convert as NumPy's
    /// `astype` does (see [`ckpt_core::cast_elements`]). Casts that keep
    /// every value are always allowed.
    pub allow_lossy_cast: bool,
}

impl RestoreArgs {
    /// Restores a sharded array onto `spec`.
    pub fn array(spec: ArraySpec) -> RestoreArgs {
        RestoreArgs {
            target: RestoreTarget::Array(spec),
            colocated: false,
            allow_lossy_cast: false,
        }
    }

    /// Restores into the controller's memory.
    pub fn host() -> RestoreArgs {
        RestoreArgs {
            target: RestoreTarget::Host,
            colocated: false,
            allow_lossy_cast: false,
        }
    }

    /// Sets whether sharded arrays are restored colocated.
    pub fn with_colocated(mut self, colocated: bool) -> RestoreArgs {
        self.colocated = colocated;
        self
    }

    /// Sets whether a cast to a target dtype that changes values is allowed.
    pub fn with_lossy_cast(mut self, allow: bool) -> RestoreArgs {
        self.allow_lossy_cast = allow;
        self
    }
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
#[derive(Clone, Debug, Default)]
pub struct PyTreeRestore {
    /// Restore arguments: a tree with the checkpoint's structure, or a
    /// prefix of it. `None` restores every leaf as it was saved.
    pub restore_args: Option<PyTree<RestoreArgs>>,
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
}

/// Arguments of [`crate::StandardCheckpointer::restore`].
pub type StandardRestore = PyTreeRestore;
