//! Arguments of checkpoints with several named items and of JSON items,
//! named as in Orbax's `ocp.args` (`Composite`, `JsonSave`, `JsonRestore`).

use std::collections::{btree_map, BTreeMap};

use ckpt_pytree::PyTree;
use serde_json::Value;

use crate::{CkptError, Leaf, PyTreeRestore, PyTreeSave, Result, StandardSave};

/// A JSON document saved as a checkpoint item, as Orbax's
/// `JsonCheckpointHandler` writes it: one file named `metadata`.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonSave {
    /// The document.
    pub item: Value,
}

impl JsonSave {
    /// Saves `item`.
    pub fn new(item: Value) -> JsonSave {
        JsonSave { item }
    }
}

/// Restores a JSON item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonRestore;

/// Arguments of saving one item of a checkpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ItemSave {
    /// A pytree, recorded as saved by Orbax's `PyTreeCheckpointHandler`.
    PyTree(PyTreeSave),
    /// A pytree without strings, recorded as saved by Orbax's `StandardCheckpointHandler`.
    Standard(StandardSave),
    /// A JSON document.
    Json(JsonSave),
}

impl From<PyTreeSave> for ItemSave {
    fn from(args: PyTreeSave) -> ItemSave {
        ItemSave::PyTree(args)
    }
}

impl From<StandardSave> for ItemSave {
    fn from(args: StandardSave) -> ItemSave {
        ItemSave::Standard(args)
    }
}

impl From<JsonSave> for ItemSave {
    fn from(args: JsonSave) -> ItemSave {
        ItemSave::Json(args)
    }
}

/// Arguments of restoring one item of a checkpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ItemRestore {
    /// A pytree item, saved by either pytree handler.
    PyTree(PyTreeRestore),
    /// A JSON item.
    Json(JsonRestore),
}

impl From<PyTreeRestore> for ItemRestore {
    fn from(args: PyTreeRestore) -> ItemRestore {
        ItemRestore::PyTree(args)
    }
}

impl From<JsonRestore> for ItemRestore {
    fn from(args: JsonRestore) -> ItemRestore {
        ItemRestore::Json(args)
    }
}

/// The named items of one checkpoint, each saved into `<step>/<name>/`
/// (Orbax's `args.Composite`).
#[derive(Clone, Debug, Default)]
pub struct Composite {
    items: BTreeMap<String, ItemSave>,
}

impl Composite {
    /// Creates an empty set of items.
    pub fn new() -> Composite {
        Composite::default()
    }

    /// Adds the item `name`, replacing an item of the same name.
    pub fn with_item(mut self, name: impl Into<String>, args: impl Into<ItemSave>) -> Composite {
        self.items.insert(name.into(), args.into());
        self
    }

    /// Returns the items by name.
    pub fn items(&self) -> &BTreeMap<String, ItemSave> {
        &self.items
    }

    /// Returns whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn into_items(self) -> BTreeMap<String, ItemSave> {
        self.items
    }
}

/// The items to restore from one checkpoint, by name; items left out are
/// not read.
#[derive(Clone, Debug, Default)]
pub struct CompositeRestore {
    items: BTreeMap<String, ItemRestore>,
}

impl CompositeRestore {
    /// Creates an empty request.
    pub fn new() -> CompositeRestore {
        CompositeRestore::default()
    }

    /// Requests the item `name`.
    pub fn with_item(mut self, name: impl Into<String>, args: impl Into<ItemRestore>) -> CompositeRestore {
        self.items.insert(name.into(), args.into());
        self
    }

    /// Returns the requested items by name.
    pub fn items(&self) -> &BTreeMap<String, ItemRestore> {
        &self.items
    }

    pub(crate) fn into_items(self) -> BTreeMap<String, ItemRestore> {
        self.items
    }
}

/// One restored item.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RestoredItem {
    /// A pytree.
    PyTree(PyTree<Leaf>),
    /// A JSON document.
    Json(Value),
}

/// The items restored from one checkpoint, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestoredItems {
    items: BTreeMap<String, RestoredItem>,
}

impl RestoredItems {
    pub(crate) fn insert(&mut self, name: String, item: RestoredItem) {
        self.items.insert(name, item);
    }

    /// Returns the item `name`, if it was restored.
    pub fn get(&self, name: &str) -> Option<&RestoredItem> {
        self.items.get(name)
    }

    /// Returns the pytree item `name`, or `None` when it was not restored or is JSON.
    pub fn pytree(&self, name: &str) -> Option<&PyTree<Leaf>> {
        match self.items.get(name)? {
            RestoredItem::PyTree(tree) => Some(tree),
            RestoredItem::Json(_) => None,
        }
    }

    /// Returns the JSON item `name`, or `None` when it was not restored or is a pytree.
    pub fn json(&self, name: &str) -> Option<&Value> {
        match self.items.get(name)? {
            RestoredItem::Json(value) => Some(value),
            RestoredItem::PyTree(_) => None,
        }
    }

    /// Removes and returns the pytree item `name`.
    ///
    /// Fails with [`CkptError::InvalidItem`] when it was not restored or is JSON.
    pub fn take_pytree(&mut self, name: &str) -> Result<PyTree<Leaf>> {
        match self.items.remove(name) {
            Some(RestoredItem::PyTree(tree)) => Ok(tree),
            Some(other) => {
                self.items.insert(name.to_owned(), other);
                Err(CkptError::InvalidItem {
                    item: name.to_owned(),
                    reason: "it is a JSON item, not a pytree".into(),
                })
            }
            None => Err(CkptError::InvalidItem {
                item: name.to_owned(),
                reason: "it was not requested in the restore arguments".into(),
            }),
        }
    }

    /// Returns the number of restored items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Returns whether no item was restored.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Iterates over the items by name.
    pub fn iter(&self) -> btree_map::Iter<'_, String, RestoredItem> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn composite_replaces_same_name() {
        let items = Composite::new()
            .with_item("extra", JsonSave::new(json!(1)))
            .with_item("extra", JsonSave::new(json!(2)));
        assert_eq!(items.items().len(), 1);
        let Some(ItemSave::Json(saved)) = items.items().get("extra") else {
            panic!("expected a JSON item");
        };
        assert_eq!(saved.item, json!(2));
    }

    #[test]
    fn take_pytree_of_json_item_fails() {
        let mut restored = RestoredItems::default();
        restored.insert("extra".into(), RestoredItem::Json(json!({"a": 1})));
        let err = restored.take_pytree("extra").unwrap_err();
        assert!(matches!(err, CkptError::InvalidItem { ref item, .. } if item == "extra"), "{err}");
        assert!(restored.json("extra").is_some());
    }

    #[test]
    fn take_pytree_of_missing_item_fails() {
        let mut restored = RestoredItems::default();
        let err = restored.take_pytree("state").unwrap_err();
        assert!(err.to_string().contains("not requested"), "{err}");
    }
}
