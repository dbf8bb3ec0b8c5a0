use std::collections::BTreeMap;

use crate::error::TreeError;
use crate::key::KeyPath;
use crate::tree::PyTree;

/// Expands a prefix tree to the structure of `full`.
///
/// `prefix` must match the top of `full`, and each of its leaves applies to
/// the whole subtree of `full` at the same path. The result has the structure
/// of `full`, empty nodes included, and every leaf borrows the value of the
/// prefix leaf above it. This is how one `SaveArgs` applies to a subtree.
///
/// Nodes of the prefix above its leaves must equal those of `full` in kind
/// (a list does not match a tuple, as in JAX), dict keys and length. The first
/// difference in flatten order is returned as an error naming its key path.
pub fn broadcast_prefix<'a, U, T>(
    prefix: &'a PyTree<U>,
    full: &PyTree<T>,
) -> Result<PyTree<&'a U>, TreeError> {
    broadcast_at(prefix, full, &mut KeyPath::root())
}

fn broadcast_at<'a, U, T>(
    prefix: &'a PyTree<U>,
    full: &PyTree<T>,
    path: &mut KeyPath,
) -> Result<PyTree<&'a U>, TreeError> {
    match (prefix, full) {
        (PyTree::Leaf(value), _) => Ok(full.as_ref().map(|_| value)),
        (PyTree::None, PyTree::None) => Ok(PyTree::None),
        (PyTree::Dict(prefix_children), PyTree::Dict(full_children)) => {
            broadcast_dict(prefix_children, full_children, path)
        }
        (PyTree::List(prefix_items), PyTree::List(full_items)) => Ok(PyTree::List(
            broadcast_items(prefix_items, full_items, prefix, path)?,
        )),
        (PyTree::Tuple(prefix_items), PyTree::Tuple(full_items)) => Ok(PyTree::Tuple(
            broadcast_items(prefix_items, full_items, prefix, path)?,
        )),
        _ => Err(TreeError::PrefixNodeMismatch {
            path: path.clone(),
            prefix: prefix.kind(),
            full: full.kind(),
        }),
    }
}

fn broadcast_dict<'a, U, T>(
    prefix_children: &'a BTreeMap<String, PyTree<U>>,
    full_children: &BTreeMap<String, PyTree<T>>,
    path: &mut KeyPath,
) -> Result<PyTree<&'a U>, TreeError> {
    let keys_match = prefix_children.len() == full_children.len()
        && prefix_children.keys().eq(full_children.keys());
    if !keys_match {
        let missing = full_children
            .keys()
            .filter(|key| !prefix_children.contains_key(*key))
            .cloned()
            .collect();
        let unexpected = prefix_children
            .keys()
            .filter(|key| !full_children.contains_key(*key))
            .cloned()
            .collect();
        return Err(TreeError::PrefixKeysMismatch {
            path: path.clone(),
            missing,
            unexpected,
        });
    }

    let mut children = BTreeMap::new();
    for ((key, prefix_child), full_child) in prefix_children.iter().zip(full_children.values()) {
        path.push(key.as_str());
        let result = broadcast_at(prefix_child, full_child, path);
        path.pop();
        children.insert(key.clone(), result?);
    }
    Ok(PyTree::Dict(children))
}

fn broadcast_items<'a, U, T>(
    prefix_items: &'a [PyTree<U>],
    full_items: &[PyTree<T>],
    prefix: &PyTree<U>,
    path: &mut KeyPath,
) -> Result<Vec<PyTree<&'a U>>, TreeError> {
    if prefix_items.len() != full_items.len() {
        return Err(TreeError::PrefixLengthMismatch {
            path: path.clone(),
            kind: prefix.kind(),
            prefix_len: prefix_items.len(),
            full_len: full_items.len(),
        });
    }

    let mut items = Vec::with_capacity(full_items.len());
    for (index, (prefix_item, full_item)) in prefix_items.iter().zip(full_items).enumerate() {
        path.push(index);
        let result = broadcast_at(prefix_item, full_item, path);
        path.pop();
        items.push(result?);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use crate::tree::NodeKind;

    fn full() -> PyTree<i32> {
        PyTree::dict([
            (
                "params",
                PyTree::dict([("bias", PyTree::leaf(1)), ("kernel", PyTree::leaf(2))]),
            ),
            (
                "opt",
                PyTree::tuple([PyTree::leaf(3), PyTree::None, PyTree::list([])]),
            ),
            ("step", PyTree::leaf(4)),
        ])
    }

    fn path(keys: impl IntoIterator<Item = Key>) -> KeyPath {
        keys.into_iter().collect()
    }

    #[test]
    fn broadcast_root_leaf() {
        let prefix = PyTree::leaf("all");
        let full = full();
        let result = broadcast_prefix(&prefix, &full);
        assert_eq!(result, Ok(full.as_ref().map(|_| &"all")));
    }

    #[test]
    fn broadcast_subtrees() {
        let prefix = PyTree::dict([
            ("params", PyTree::leaf("p")),
            ("opt", PyTree::leaf("o")),
            ("step", PyTree::leaf("s")),
        ]);
        let full = full();
        let Ok(result) = broadcast_prefix(&prefix, &full) else {
            panic!("prefix should match");
        };
        let leaves: Vec<&str> = result.into_leaves().into_iter().copied().collect();
        assert_eq!(leaves, ["o", "p", "p", "s"]);
    }

    #[test]
    fn broadcast_keeps_empty_nodes() {
        let prefix = PyTree::dict([
            ("params", PyTree::leaf(0)),
            ("opt", PyTree::leaf(1)),
            ("step", PyTree::leaf(2)),
        ]);
        let full = full();
        let result = broadcast_prefix(&prefix, &full);
        let opt = result
            .as_ref()
            .ok()
            .and_then(|tree| tree.get(&path([Key::from("opt")])));
        assert_eq!(
            opt,
            Some(&PyTree::tuple([
                PyTree::leaf(&1),
                PyTree::None,
                PyTree::list([])
            ]))
        );
    }

    #[test]
    fn broadcast_identical_structure() {
        let full = full();
        let result = broadcast_prefix(&full, &full);
        assert_eq!(result, Ok(full.as_ref()));
    }

    #[test]
    fn broadcast_missing_key() {
        let prefix = PyTree::dict([("params", PyTree::leaf(0)), ("step", PyTree::leaf(1))]);
        let result = broadcast_prefix(&prefix, &full());
        assert_eq!(
            result,
            Err(TreeError::PrefixKeysMismatch {
                path: KeyPath::root(),
                missing: vec!["opt".to_owned()],
                unexpected: vec![],
            })
        );
    }

    #[test]
    fn broadcast_unexpected_key() {
        let prefix = PyTree::dict([(
            "params",
            PyTree::dict([
                ("bias", PyTree::leaf(0)),
                ("kernel", PyTree::leaf(0)),
                ("scale", PyTree::leaf(0)),
            ]),
        )]);
        let full = PyTree::dict([(
            "params",
            PyTree::dict([("bias", PyTree::leaf(1)), ("kernel", PyTree::leaf(2))]),
        )]);
        let result = broadcast_prefix(&prefix, &full);
        assert_eq!(
            result,
            Err(TreeError::PrefixKeysMismatch {
                path: path([Key::from("params")]),
                missing: vec![],
                unexpected: vec!["scale".to_owned()],
            })
        );
    }

    #[test]
    fn broadcast_list_for_tuple() {
        let prefix = PyTree::dict([
            ("params", PyTree::leaf(0)),
            (
                "opt",
                PyTree::list([PyTree::leaf(0), PyTree::None, PyTree::leaf(0)]),
            ),
            ("step", PyTree::leaf(0)),
        ]);
        let result = broadcast_prefix(&prefix, &full());
        assert_eq!(
            result,
            Err(TreeError::PrefixNodeMismatch {
                path: path([Key::from("opt")]),
                prefix: NodeKind::List,
                full: NodeKind::Tuple,
            })
        );
    }

    #[test]
    fn broadcast_length_mismatch() {
        let prefix = PyTree::dict([
            ("params", PyTree::leaf(0)),
            ("opt", PyTree::tuple([PyTree::leaf(0), PyTree::None])),
            ("step", PyTree::leaf(0)),
        ]);
        let result = broadcast_prefix(&prefix, &full());
        assert_eq!(
            result,
            Err(TreeError::PrefixLengthMismatch {
                path: path([Key::from("opt")]),
                kind: NodeKind::Tuple,
                prefix_len: 2,
                full_len: 3,
            })
        );
    }

    #[test]
    fn broadcast_none_over_leaf() {
        let prefix = PyTree::dict([
            ("params", PyTree::leaf(0)),
            ("opt", PyTree::leaf(0)),
            ("step", PyTree::None),
        ]);
        let result = broadcast_prefix(&prefix, &full());
        assert_eq!(
            result,
            Err(TreeError::PrefixNodeMismatch {
                path: path([Key::from("step")]),
                prefix: NodeKind::None,
                full: NodeKind::Leaf,
            })
        );
    }

    #[test]
    fn broadcast_error_names_path() {
        let prefix = PyTree::dict([
            ("params", PyTree::leaf(0)),
            ("opt", PyTree::list([])),
            ("step", PyTree::leaf(0)),
        ]);
        let Err(error) = broadcast_prefix(&prefix, &full()) else {
            panic!("a list prefix must not match a tuple");
        };
        assert!(error.to_string().contains("['opt']"), "{error}");
    }
}
