use std::{
    collections::BTreeMap,
    fmt::Debug,
    sync::{Arc, OnceLock, RwLock},
};

use ckpt_colocated::Controller;
use ckpt_pytree::KeyPath;
use ckpt_storage::{ArrayFormat, ArrayReader, ArrayWriter, Store};

use crate::{
    handlers::{ArrayHandler, HostArrayHandler, ScalarHandler, StringHandler},
    CkptError, Leaf, LeafType, RestoreArgs, Result, SaveArgs,
};

/// What a save handler works with: the item being written and the runtime.
#[derive(Debug)]
pub struct SaveContext<'a> {
    /// The checkpoint item directory being written (a temporary name until commit).
    pub item: &'a Store,
    /// How arrays are stored.
    pub format: &'a ArrayFormat,
    /// The controller, through which handlers reach the hosts.
    pub controller: &'a Controller,
    /// The controller's own writer, for data the controller writes itself.
    pub writer: &'a ArrayWriter,
    /// Whether the replicas of a shard share writing it (Orbax's
    /// replica-parallel saving); otherwise replica 0 writes whole shards.
    pub replica_parallel: bool,
}

/// One leaf to save.
#[derive(Debug)]
pub struct SaveEntry<'a> {
    /// The leaf's key path.
    pub key_path: &'a KeyPath,
    /// The leaf's parameter name: its storage path in the item.
    pub param_name: &'a str,
    /// The leaf.
    pub leaf: &'a Leaf,
    /// Its save arguments.
    pub args: &'a SaveArgs,
}

/// What a handler reports for each saved leaf, for the checkpoint's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedLeaf {
    /// The `value_type` in `_METADATA`, such as `jax.Array`.
    pub value_type: String,
    /// The shape each writer wrote (the chunk shape), for sharded arrays.
    pub write_shape: Option<Vec<u64>>,
    /// The sharding in Orbax's `_sharding` JSON form, for sharded arrays.
    pub sharding: Option<String>,
}

/// What a restore handler works with: the committed item and the runtime.
#[derive(Debug)]
pub struct RestoreContext<'a> {
    /// The committed checkpoint item directory.
    pub item: &'a Store,
    /// Whether arrays are in OCDBT, as `_METADATA` records it.
    pub use_ocdbt: Option<bool>,
    /// Whether arrays are zarr v3, as `_METADATA` records it.
    pub use_zarr3: bool,
    /// The controller, through which handlers reach the hosts.
    pub controller: &'a Controller,
    /// The controller's reader of the item's arrays.
    pub reader: &'a ArrayReader,
    /// `_sharding` entries by parameter name, in Orbax's JSON form.
    pub shardings: &'a BTreeMap<String, String>,
}

/// One leaf to restore.
#[derive(Debug)]
pub struct RestoreEntry<'a> {
    /// The leaf's key path.
    pub key_path: &'a KeyPath,
    /// The leaf's parameter name.
    pub param_name: &'a str,
    /// The `value_type` recorded in `_METADATA`.
    pub value_type: &'a str,
    /// Its restore arguments.
    pub args: &'a RestoreArgs,
}

/// Saves and restores the leaves of one type, in batches.
///
/// A checkpointer hands each handler all the leaves it handles at once, so
/// a handler can send one request per host for the whole tree.
pub trait TypeHandler: Send + Sync + Debug {
    /// The `value_type` this handler records in `_METADATA`.
    fn value_type(&self) -> &str;

    /// Saves the leaves, returning one [`SavedLeaf`] per entry, in order.
    fn save(&self, context: &SaveContext<'_>, entries: &[SaveEntry<'_>]) -> Result<Vec<SavedLeaf>>;

    /// Restores the leaves, returning one [`Leaf`] per entry, in order.
    fn restore(&self, context: &RestoreContext<'_>, entries: &[RestoreEntry<'_>])
        -> Result<Vec<Leaf>>;
}

/// The type handlers by leaf type.
#[derive(Clone, Debug)]
pub struct TypeHandlerRegistry {
    handlers: BTreeMap<LeafType, Arc<dyn TypeHandler>>,
}

impl TypeHandlerRegistry {
    /// A registry with no handlers.
    pub fn empty() -> TypeHandlerRegistry {
        TypeHandlerRegistry {
            handlers: BTreeMap::new(),
        }
    }

    /// A registry with the default handlers: [`ArrayHandler`] (the gather
    /// path), [`HostArrayHandler`], [`ScalarHandler`] and [`StringHandler`].
    pub fn with_defaults() -> TypeHandlerRegistry {
        let mut registry = TypeHandlerRegistry::empty();
        registry
            .handlers
            .insert(LeafType::Array, Arc::new(ArrayHandler));
        registry
            .handlers
            .insert(LeafType::HostArray, Arc::new(HostArrayHandler));
        registry
            .handlers
            .insert(LeafType::Scalar, Arc::new(ScalarHandler));
        registry
            .handlers
            .insert(LeafType::String, Arc::new(StringHandler));
        registry
    }

    /// Registers `handler` for `leaf_type`; replacing an existing handler
    /// needs `override_existing`.
    pub fn register(
        &mut self,
        leaf_type: LeafType,
        handler: Arc<dyn TypeHandler>,
        override_existing: bool,
    ) -> Result<()> {
        if self.handlers.contains_key(&leaf_type) && !override_existing {
            return Err(CkptError::HandlerExists {
                leaf_type: leaf_type.to_string(),
            });
        }
        self.handlers.insert(leaf_type, handler);
        Ok(())
    }

    /// The handler for `leaf_type`.
    pub fn get(&self, leaf_type: LeafType) -> Option<&Arc<dyn TypeHandler>> {
        self.handlers.get(&leaf_type)
    }

    /// The handler that restores leaves saved with `value_type`.
    pub fn for_value_type(&self, value_type: &str) -> Option<&Arc<dyn TypeHandler>> {
        self.handlers
            .values()
            .find(|handler| handler.value_type() == value_type)
    }
}

impl Default for TypeHandlerRegistry {
    fn default() -> TypeHandlerRegistry {
        TypeHandlerRegistry::with_defaults()
    }
}

fn global() -> &'static RwLock<TypeHandlerRegistry> {
    static GLOBAL: OnceLock<RwLock<TypeHandlerRegistry>> = OnceLock::new();
    GLOBAL.get_or_init(|| RwLock::new(TypeHandlerRegistry::with_defaults()))
}

/// Registers `handler` for `leaf_type` in the process-wide registry that new
/// checkpointers copy, as Orbax's `register_type_handler` does.
///
/// Registering a type that already has a handler fails unless
/// `override_existing` is set.
pub fn register_type_handler(
    leaf_type: LeafType,
    handler: Arc<dyn TypeHandler>,
    override_existing: bool,
) -> Result<()> {
    let mut registry = global().write().unwrap_or_else(|poisoned| poisoned.into_inner());
    registry.register(leaf_type, handler, override_existing)
}

/// A copy of the process-wide registry.
pub fn global_registry() -> TypeHandlerRegistry {
    global()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}
