use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;

use crate::key::{Key, KeyPath};

/// A nested structure of dicts, lists, tuples and `None` with values of type
/// `T` at its leaves, as in JAX.
///
/// Dict keys are strings kept in a [`BTreeMap`], so children iterate in byte
/// order of their keys. For UTF-8 strings byte order equals code point order,
/// which is how Python sorts `str` keys, so every traversal here visits leaves
/// in the order of `jax.tree_util.tree_flatten`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PyTree<T> {
    /// A dict node with string keys.
    Dict(BTreeMap<String, PyTree<T>>),
    /// A list node.
    List(Vec<PyTree<T>>),
    /// A tuple node. Orbax stores non-empty tuples exactly like lists.
    Tuple(Vec<PyTree<T>>),
    /// Python `None`, a node without children (not a leaf, as in JAX).
    None,
    /// A leaf value.
    Leaf(T),
}

/// The kind of a [`PyTree`] node, for error messages and dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// [`PyTree::Dict`].
    Dict,
    /// [`PyTree::List`].
    List,
    /// [`PyTree::Tuple`].
    Tuple,
    /// [`PyTree::None`].
    None,
    /// [`PyTree::Leaf`].
    Leaf,
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Dict => "dict",
            NodeKind::List => "list",
            NodeKind::Tuple => "tuple",
            NodeKind::None => "None",
            NodeKind::Leaf => "leaf",
        })
    }
}

impl<T> PyTree<T> {
    /// Creates a dict node. A key given twice keeps its last value, as in a
    /// Python dict literal.
    pub fn dict<K: Into<String>>(entries: impl IntoIterator<Item = (K, PyTree<T>)>) -> Self {
        PyTree::Dict(
            entries
                .into_iter()
                .map(|(key, value)| (key.into(), value))
                .collect(),
        )
    }

    /// Creates a list node.
    pub fn list(items: impl IntoIterator<Item = PyTree<T>>) -> Self {
        PyTree::List(items.into_iter().collect())
    }

    /// Creates a tuple node.
    pub fn tuple(items: impl IntoIterator<Item = PyTree<T>>) -> Self {
        PyTree::Tuple(items.into_iter().collect())
    }

    /// Creates a leaf.
    pub fn leaf(value: T) -> Self {
        PyTree::Leaf(value)
    }

    /// Returns the kind of this node.
    pub fn kind(&self) -> NodeKind {
        match self {
            PyTree::Dict(_) => NodeKind::Dict,
            PyTree::List(_) => NodeKind::List,
            PyTree::Tuple(_) => NodeKind::Tuple,
            PyTree::None => NodeKind::None,
            PyTree::Leaf(_) => NodeKind::Leaf,
        }
    }

    /// Returns whether this node is a leaf.
    pub fn is_leaf(&self) -> bool {
        matches!(self, PyTree::Leaf(_))
    }

    /// Returns the node at `path`, or `None` if the path leaves the tree.
    ///
    /// A [`Key::Dict`] only descends into dicts and a [`Key::Index`] only into
    /// lists and tuples.
    pub fn get(&self, path: &KeyPath) -> Option<&PyTree<T>> {
        let mut node = self;
        for key in path {
            node = match (node, key) {
                (PyTree::Dict(children), Key::Dict(name)) => children.get(name)?,
                (PyTree::List(items) | PyTree::Tuple(items), Key::Index(index)) => {
                    items.get(*index)?
                }
                _ => return None,
            };
        }
        Some(node)
    }

    /// Returns the node at `path` for modification, or `None` if the path
    /// leaves the tree.
    pub fn get_mut(&mut self, path: &KeyPath) -> Option<&mut PyTree<T>> {
        let mut node = self;
        for key in path {
            node = match (node, key) {
                (PyTree::Dict(children), Key::Dict(name)) => children.get_mut(name)?,
                (PyTree::List(items) | PyTree::Tuple(items), Key::Index(index)) => {
                    items.get_mut(*index)?
                }
                _ => return None,
            };
        }
        Some(node)
    }

    /// Returns a tree of the same structure whose leaves borrow this tree's values.
    pub fn as_ref(&self) -> PyTree<&T> {
        match self {
            PyTree::Dict(children) => PyTree::Dict(
                children
                    .iter()
                    .map(|(key, child)| (key.clone(), child.as_ref()))
                    .collect(),
            ),
            PyTree::List(items) => PyTree::List(items.iter().map(PyTree::as_ref).collect()),
            PyTree::Tuple(items) => PyTree::Tuple(items.iter().map(PyTree::as_ref).collect()),
            PyTree::None => PyTree::None,
            PyTree::Leaf(value) => PyTree::Leaf(value),
        }
    }

    /// Applies `f` to every leaf value, in flatten order, keeping the structure.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> PyTree<U> {
        match self.try_map(|value| Ok::<U, Infallible>(f(value))) {
            Ok(tree) => tree,
            Err(never) => match never {},
        }
    }

    /// Applies the fallible `f` to every leaf value in flatten order and stops
    /// at the first error.
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<PyTree<U>, E> {
        self.try_map_inner(&mut f)
    }

    fn try_map_inner<U, E>(self, f: &mut impl FnMut(T) -> Result<U, E>) -> Result<PyTree<U>, E> {
        Ok(match self {
            PyTree::Dict(children) => {
                let mut mapped = BTreeMap::new();
                for (key, child) in children {
                    mapped.insert(key, child.try_map_inner(f)?);
                }
                PyTree::Dict(mapped)
            }
            PyTree::List(items) => PyTree::List(map_items(items, f)?),
            PyTree::Tuple(items) => PyTree::Tuple(map_items(items, f)?),
            PyTree::None => PyTree::None,
            PyTree::Leaf(value) => PyTree::Leaf(f(value)?),
        })
    }

    /// Applies `f` to the key path and value of every leaf, in flatten order,
    /// keeping the structure.
    pub fn map_with_path<U>(self, mut f: impl FnMut(&KeyPath, T) -> U) -> PyTree<U> {
        match self.try_map_with_path(|path, value| Ok::<U, Infallible>(f(path, value))) {
            Ok(tree) => tree,
            Err(never) => match never {},
        }
    }

    /// Applies the fallible `f` to the key path and value of every leaf in
    /// flatten order and stops at the first error.
    pub fn try_map_with_path<U, E>(
        self,
        mut f: impl FnMut(&KeyPath, T) -> Result<U, E>,
    ) -> Result<PyTree<U>, E> {
        let mut path = KeyPath::root();
        self.try_map_with_path_inner(&mut path, &mut f)
    }

    fn try_map_with_path_inner<U, E>(
        self,
        path: &mut KeyPath,
        f: &mut impl FnMut(&KeyPath, T) -> Result<U, E>,
    ) -> Result<PyTree<U>, E> {
        Ok(match self {
            PyTree::Dict(children) => {
                let mut mapped = BTreeMap::new();
                for (key, child) in children {
                    path.push(key.as_str());
                    let result = child.try_map_with_path_inner(path, f);
                    path.pop();
                    mapped.insert(key, result?);
                }
                PyTree::Dict(mapped)
            }
            PyTree::List(items) => PyTree::List(map_items_with_path(items, path, f)?),
            PyTree::Tuple(items) => PyTree::Tuple(map_items_with_path(items, path, f)?),
            PyTree::None => PyTree::None,
            PyTree::Leaf(value) => PyTree::Leaf(f(path, value)?),
        })
    }
}

fn map_items<T, U, E>(
    items: Vec<PyTree<T>>,
    f: &mut impl FnMut(T) -> Result<U, E>,
) -> Result<Vec<PyTree<U>>, E> {
    items
        .into_iter()
        .map(|item| item.try_map_inner(f))
        .collect()
}

fn map_items_with_path<T, U, E>(
    items: Vec<PyTree<T>>,
    path: &mut KeyPath,
    f: &mut impl FnMut(&KeyPath, T) -> Result<U, E>,
) -> Result<Vec<PyTree<U>>, E> {
    let mut mapped = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        path.push(index);
        let result = item.try_map_with_path_inner(path, f);
        path.pop();
        mapped.push(result?);
    }
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PyTree<i32> {
        PyTree::dict([
            ("b", PyTree::leaf(2)),
            (
                "a",
                PyTree::list([
                    PyTree::leaf(0),
                    PyTree::tuple([PyTree::leaf(1), PyTree::None]),
                ]),
            ),
        ])
    }

    fn path(keys: impl IntoIterator<Item = Key>) -> KeyPath {
        keys.into_iter().collect()
    }

    #[test]
    fn dict_sorts_keys() {
        let PyTree::Dict(children) = sample() else {
            panic!("sample is a dict");
        };
        let keys: Vec<&String> = children.keys().collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn dict_last_duplicate_wins() {
        let tree = PyTree::dict([("k", PyTree::leaf(1)), ("k", PyTree::leaf(2))]);
        assert_eq!(tree, PyTree::dict([("k", PyTree::leaf(2))]));
    }

    #[test]
    fn get_leaf() {
        let tree = sample();
        let found = tree.get(&path([Key::from("a"), Key::Index(1), Key::Index(0)]));
        assert_eq!(found, Some(&PyTree::leaf(1)));
    }

    #[test]
    fn get_root() {
        let tree = sample();
        assert_eq!(tree.get(&KeyPath::root()), Some(&tree));
    }

    #[test]
    fn get_missing() {
        let tree = sample();
        assert_eq!(tree.get(&path([Key::from("c")])), None);
        assert_eq!(tree.get(&path([Key::from("a"), Key::Index(2)])), None);
    }

    #[test]
    fn get_wrong_key_kind() {
        let tree = sample();
        assert_eq!(tree.get(&path([Key::Index(0)])), None);
        assert_eq!(tree.get(&path([Key::from("a"), Key::from("0")])), None);
    }

    #[test]
    fn get_below_leaf() {
        let tree = sample();
        assert_eq!(tree.get(&path([Key::from("b"), Key::Index(0)])), None);
    }

    #[test]
    fn get_mut_replaces() {
        let mut tree = sample();
        if let Some(node) = tree.get_mut(&path([Key::from("b")])) {
            *node = PyTree::leaf(20);
        }
        assert_eq!(tree.get(&path([Key::from("b")])), Some(&PyTree::leaf(20)));
    }

    #[test]
    fn kind_of_each_node() {
        assert_eq!(PyTree::<i32>::dict::<String>([]).kind(), NodeKind::Dict);
        assert_eq!(PyTree::<i32>::list([]).kind(), NodeKind::List);
        assert_eq!(PyTree::<i32>::tuple([]).kind(), NodeKind::Tuple);
        assert_eq!(PyTree::<i32>::None.kind(), NodeKind::None);
        assert_eq!(PyTree::leaf(1).kind(), NodeKind::Leaf);
    }

    #[test]
    fn map_keeps_structure() {
        let doubled = sample().map(|value| value * 2);
        let expected = PyTree::dict([
            ("b", PyTree::leaf(4)),
            (
                "a",
                PyTree::list([
                    PyTree::leaf(0),
                    PyTree::tuple([PyTree::leaf(2), PyTree::None]),
                ]),
            ),
        ]);
        assert_eq!(doubled, expected);
    }

    #[test]
    fn map_visits_in_flatten_order() {
        let mut seen = Vec::new();
        sample().map(|value| seen.push(value));
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn try_map_stops_at_error() {
        let mut calls = 0;
        let result = sample().try_map(|value| {
            calls += 1;
            if value == 1 {
                Err(format!("leaf {value}"))
            } else {
                Ok(value)
            }
        });
        assert_eq!(result, Err("leaf 1".to_owned()));
        assert_eq!(calls, 2);
    }

    #[test]
    fn map_with_path_sees_paths() {
        let named = sample().map_with_path(|path, value| format!("{path}={value}"));
        let mut leaves = Vec::new();
        named.map(|text| leaves.push(text));
        assert_eq!(leaves, ["['a'][0]=0", "['a'][1][0]=1", "['b']=2"]);
    }

    #[test]
    fn try_map_with_path_reports_path() {
        let result = sample().try_map_with_path(|path, value| {
            if value == 2 {
                Err(path.clone())
            } else {
                Ok(value)
            }
        });
        assert_eq!(result, Err(path([Key::from("b")])));
    }

    #[test]
    fn as_ref_borrows() {
        let tree = sample();
        let borrowed = tree.as_ref().map(|value| *value + 1);
        assert_eq!(borrowed, tree.clone().map(|value| value + 1));
    }

    #[test]
    fn node_kind_display() {
        assert_eq!(NodeKind::None.to_string(), "None");
        assert_eq!(NodeKind::Tuple.to_string(), "tuple");
    }
}
