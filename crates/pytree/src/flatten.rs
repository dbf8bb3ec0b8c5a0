use std::collections::BTreeMap;

use crate::error::TreeError;
use crate::key::KeyPath;
use crate::tree::{NodeKind, PyTree};

/// A node without children: an empty dict, list or tuple, or `None`.
///
/// JAX's flatten drops these, but Orbax keeps each one as an entry of
/// `_METADATA` so that a restore without a target tree can rebuild it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmptyNode {
    /// An empty dict.
    Dict,
    /// An empty list.
    List,
    /// An empty tuple.
    Tuple,
    /// `None`.
    None,
}

impl EmptyNode {
    /// Returns this empty node as a tree node.
    pub fn to_tree<T>(self) -> PyTree<T> {
        match self {
            EmptyNode::Dict => PyTree::Dict(BTreeMap::new()),
            EmptyNode::List => PyTree::List(Vec::new()),
            EmptyNode::Tuple => PyTree::Tuple(Vec::new()),
            EmptyNode::None => PyTree::None,
        }
    }

    /// Returns the node kind of this empty node.
    pub fn kind(self) -> NodeKind {
        match self {
            EmptyNode::Dict => NodeKind::Dict,
            EmptyNode::List => NodeKind::List,
            EmptyNode::Tuple => NodeKind::Tuple,
            EmptyNode::None => NodeKind::None,
        }
    }
}

/// An item of [`PyTree::flatten_with_empty`]: a leaf value or an empty node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlatNode<'a, T> {
    /// A leaf and its value.
    Leaf(&'a T),
    /// An empty container or `None`.
    Empty(EmptyNode),
}

impl<T> PyTree<T> {
    /// Lists the leaves with their key paths in JAX flatten order: dict
    /// children by sorted key, list and tuple items by index.
    ///
    /// Empty containers and `None` have no leaves, so they do not appear.
    pub fn flatten(&self) -> Vec<(KeyPath, &T)> {
        let mut flat = Vec::new();
        self.visit(&mut KeyPath::root(), &mut |path, node| {
            if let FlatNode::Leaf(value) = node {
                flat.push((path.clone(), value));
            }
        });
        flat
    }

    /// Lists the leaves and the empty nodes with their key paths in JAX
    /// flatten order, as Orbax does with `is_leaf=is_empty_or_leaf`.
    ///
    /// These are the entries of `_METADATA`.
    pub fn flatten_with_empty(&self) -> Vec<(KeyPath, FlatNode<'_, T>)> {
        let mut flat = Vec::new();
        self.visit(&mut KeyPath::root(), &mut |path, node| {
            flat.push((path.clone(), node));
        });
        flat
    }

    /// Calls `f` for each leaf and empty node in flatten order.
    fn visit<'a>(&'a self, path: &mut KeyPath, f: &mut impl FnMut(&KeyPath, FlatNode<'a, T>)) {
        match self {
            PyTree::Dict(children) if children.is_empty() => {
                f(path, FlatNode::Empty(EmptyNode::Dict))
            }
            PyTree::List(items) if items.is_empty() => f(path, FlatNode::Empty(EmptyNode::List)),
            PyTree::Tuple(items) if items.is_empty() => f(path, FlatNode::Empty(EmptyNode::Tuple)),
            PyTree::None => f(path, FlatNode::Empty(EmptyNode::None)),
            PyTree::Leaf(value) => f(path, FlatNode::Leaf(value)),
            PyTree::Dict(children) => {
                for (key, child) in children {
                    path.push(key.as_str());
                    child.visit(path, f);
                    path.pop();
                }
            }
            PyTree::List(items) | PyTree::Tuple(items) => {
                for (index, item) in items.iter().enumerate() {
                    path.push(index);
                    item.visit(path, f);
                    path.pop();
                }
            }
        }
    }

    /// Returns the leaf values in flatten order.
    pub fn leaves(&self) -> Vec<&T> {
        let mut leaves = Vec::new();
        self.as_ref().map(|value| leaves.push(value));
        leaves
    }

    /// Returns the leaf values in flatten order, consuming the tree.
    pub fn into_leaves(self) -> Vec<T> {
        let mut leaves = Vec::new();
        self.map(|value| leaves.push(value));
        leaves
    }

    /// Returns the number of leaves.
    pub fn num_leaves(&self) -> usize {
        match self {
            PyTree::Dict(children) => children.values().map(PyTree::num_leaves).sum(),
            PyTree::List(items) | PyTree::Tuple(items) => {
                items.iter().map(PyTree::num_leaves).sum()
            }
            PyTree::None => 0,
            PyTree::Leaf(_) => 1,
        }
    }

    /// Returns the structure of the tree with `()` at every leaf, like a JAX
    /// `PyTreeDef`.
    pub fn structure(&self) -> PyTree<()> {
        self.as_ref().map(|_| ())
    }

    /// Builds a tree with the structure of this tree whose leaves are
    /// `leaves`, taken in flatten order, like JAX's `PyTreeDef.unflatten`.
    ///
    /// The leaf values of `self` are ignored, so `self` may be a
    /// [`structure`](Self::structure) or any tree of the same shape. Fails
    /// with [`TreeError::LeafCountMismatch`] unless there is exactly one value
    /// per leaf.
    pub fn unflatten<U>(
        &self,
        leaves: impl IntoIterator<Item = U>,
    ) -> Result<PyTree<U>, TreeError> {
        let leaves: Vec<U> = leaves.into_iter().collect();
        let expected = self.num_leaves();
        if leaves.len() != expected {
            return Err(TreeError::LeafCountMismatch {
                expected,
                found: leaves.len(),
            });
        }

        let mut remaining = leaves.into_iter();
        self.as_ref().try_map(|_| {
            remaining
                .next()
                .ok_or(TreeError::LeafCountMismatch { expected, found: 0 })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    fn sample() -> PyTree<i32> {
        PyTree::dict([
            ("z", PyTree::leaf(3)),
            ("empty", PyTree::dict::<String>([])),
            (
                "a",
                PyTree::list([
                    PyTree::leaf(0),
                    PyTree::tuple([PyTree::leaf(1), PyTree::None, PyTree::leaf(2)]),
                    PyTree::list([]),
                    PyTree::tuple([]),
                ]),
            ),
        ])
    }

    fn path(keys: impl IntoIterator<Item = Key>) -> KeyPath {
        keys.into_iter().collect()
    }

    #[test]
    fn flatten_jax_order() {
        let tree = sample();
        let flat = tree.flatten();
        let expected = [
            (path([Key::from("a"), Key::Index(0)]), &0),
            (path([Key::from("a"), Key::Index(1), Key::Index(0)]), &1),
            (path([Key::from("a"), Key::Index(1), Key::Index(2)]), &2),
            (path([Key::from("z")]), &3),
        ];
        assert_eq!(flat, expected);
    }

    #[test]
    fn flatten_sorts_by_bytes() {
        let tree = PyTree::dict([
            ("é", PyTree::leaf(2)),
            ("Z", PyTree::leaf(0)),
            ("a", PyTree::leaf(1)),
        ]);
        assert_eq!(tree.leaves(), [&0, &1, &2]);
    }

    #[test]
    fn flatten_root_leaf() {
        let tree = PyTree::leaf(7);
        assert_eq!(tree.flatten(), [(KeyPath::root(), &7)]);
    }

    #[test]
    fn flatten_with_empty_lists_empty_nodes() {
        let tree = sample();
        let flat = tree.flatten_with_empty();
        let expected = [
            (path([Key::from("a"), Key::Index(0)]), FlatNode::Leaf(&0)),
            (
                path([Key::from("a"), Key::Index(1), Key::Index(0)]),
                FlatNode::Leaf(&1),
            ),
            (
                path([Key::from("a"), Key::Index(1), Key::Index(1)]),
                FlatNode::Empty(EmptyNode::None),
            ),
            (
                path([Key::from("a"), Key::Index(1), Key::Index(2)]),
                FlatNode::Leaf(&2),
            ),
            (
                path([Key::from("a"), Key::Index(2)]),
                FlatNode::Empty(EmptyNode::List),
            ),
            (
                path([Key::from("a"), Key::Index(3)]),
                FlatNode::Empty(EmptyNode::Tuple),
            ),
            (path([Key::from("empty")]), FlatNode::Empty(EmptyNode::Dict)),
            (path([Key::from("z")]), FlatNode::Leaf(&3)),
        ];
        assert_eq!(flat, expected);
    }

    #[test]
    fn flatten_with_empty_root_none() {
        let tree = PyTree::<i32>::None;
        assert_eq!(
            tree.flatten_with_empty(),
            [(KeyPath::root(), FlatNode::Empty(EmptyNode::None))]
        );
    }

    #[test]
    fn into_leaves_order() {
        assert_eq!(sample().into_leaves(), [0, 1, 2, 3]);
    }

    #[test]
    fn num_leaves_counts() {
        assert_eq!(sample().num_leaves(), 4);
        assert_eq!(PyTree::<i32>::None.num_leaves(), 0);
    }

    #[test]
    fn unflatten_round_trip() {
        let tree = sample();
        let rebuilt = tree.structure().unflatten(tree.clone().into_leaves());
        assert_eq!(rebuilt, Ok(tree));
    }

    #[test]
    fn unflatten_new_leaf_type() {
        let tree = sample();
        let rebuilt = tree.unflatten(["a", "b", "c", "d"]);
        assert_eq!(
            rebuilt.map(|tree| tree.into_leaves()),
            Ok(vec!["a", "b", "c", "d"])
        );
    }

    #[test]
    fn unflatten_too_few() {
        let result = sample().unflatten([1, 2, 3]);
        assert_eq!(
            result,
            Err(TreeError::LeafCountMismatch {
                expected: 4,
                found: 3
            })
        );
    }

    #[test]
    fn unflatten_too_many() {
        let result = sample().unflatten([1, 2, 3, 4, 5]);
        assert_eq!(
            result,
            Err(TreeError::LeafCountMismatch {
                expected: 4,
                found: 5
            })
        );
    }

    #[test]
    fn empty_node_to_tree() {
        assert_eq!(EmptyNode::Tuple.to_tree::<i32>(), PyTree::tuple([]));
        assert_eq!(EmptyNode::None.to_tree::<i32>(), PyTree::None);
        assert_eq!(EmptyNode::Dict.kind(), NodeKind::Dict);
    }
}
