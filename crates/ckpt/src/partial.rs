//! Selection of the leaves a restore reads: restore arguments and key
//! paths matched against the checkpoint's tree, in strict, partial or
//! lenient mode.

use std::collections::BTreeMap;

use ckpt_pytree::{Key, KeyPath, PyTree};
use tracing::{debug, warn};

use crate::{CkptError, KeyMatch, PyTreeRestore, RestoreArgs, Result};

/// One leaf chosen for restore.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Selected {
    /// Position of the leaf in the checkpoint's flatten order.
    pub(crate) index: usize,
    /// Its restore arguments.
    pub(crate) args: RestoreArgs,
}

/// Key paths found while matching a target against the checkpoint.
#[derive(Default)]
struct Mismatch {
    /// Target paths (leaves and empty nodes) that the checkpoint lacks.
    missing: Vec<KeyPath>,
    /// Checkpoint paths (leaves and empty nodes) that the target does not cover.
    unexpected: Vec<KeyPath>,
}

impl Mismatch {
    fn add_missing<T>(&mut self, target: &PyTree<T>, path: &KeyPath) {
        push_paths(&mut self.missing, target, path);
    }

    fn add_unexpected<T>(&mut self, checkpoint: &PyTree<T>, path: &KeyPath) {
        push_paths(&mut self.unexpected, checkpoint, path);
    }
}

/// Appends the paths of the leaves and empty nodes of `tree`, which sits at `path`.
fn push_paths<T>(out: &mut Vec<KeyPath>, tree: &PyTree<T>, path: &KeyPath) {
    for (relative, _) in tree.flatten_with_empty() {
        out.push(path.iter().chain(relative.iter()).cloned().collect());
    }
}

/// Returns the checkpoint's tree restricted to the leaves that `request`
/// selects, each with its position in `checkpoint`'s flatten order and its
/// restore arguments.
///
/// Lists and tuples keep their length so that indices keep their meaning:
/// an item that is not selected becomes `None`. Dicts drop unselected keys.
pub(crate) fn select<T>(checkpoint: &PyTree<T>, request: &PyTreeRestore) -> Result<PyTree<Selected>> {
    let mut next = 0usize;
    let indexed = checkpoint.as_ref().map(|_| {
        next += 1;
        next - 1
    });

    let mut selection = match &request.restore_args {
        None => indexed.as_ref().map(|&index| Selected {
            index,
            args: RestoreArgs::default(),
        }),
        Some(args) => {
            let mut mismatch = Mismatch::default();
            let matched = match_node(args, &indexed, &mut KeyPath::root(), &mut mismatch);
            check_mismatch(mismatch, request.key_match, "restore arguments")?;
            matched.unwrap_or_else(|| empty_like(checkpoint))
        }
    };

    if let Some(key_paths) = &request.key_paths {
        let (found, missing): (Vec<KeyPath>, Vec<KeyPath>) = key_paths
            .iter()
            .cloned()
            .partition(|path| checkpoint.get(path).is_some());
        let mismatch = Mismatch {
            missing,
            unexpected: Vec::new(),
        };
        check_mismatch(mismatch, request.key_match, "selected key paths")?;
        check_paths_covered(checkpoint, &selection, &found, request.key_match)?;
        selection = filter_paths(selection, &mut KeyPath::root(), &found)
            .unwrap_or_else(|| empty_like(checkpoint));
    }
    Ok(selection)
}

/// Fails when a selected key path exists in the checkpoint but the restore
/// arguments of a partial target leave it out, since the restore would then
/// skip a key the caller named. [`KeyMatch::Lenient`] logs a warning instead.
fn check_paths_covered<T>(
    checkpoint: &PyTree<T>,
    selection: &PyTree<Selected>,
    found: &[KeyPath],
    key_match: KeyMatch,
) -> Result<()> {
    let uncovered: Vec<String> = found
        .iter()
        .filter(|path| !covers(checkpoint, selection, path))
        .map(KeyPath::to_string)
        .collect();
    let Some(first) = uncovered.first() else {
        return Ok(());
    };
    if key_match == KeyMatch::Lenient {
        warn!(
            keys = %uncovered.join(", "),
            "selected key paths lie outside the restore arguments; restoring without them"
        );
        return Ok(());
    }
    Err(CkptError::InvalidRestore {
        key_path: first.clone(),
        reason: format!(
            "with_key_paths selects it but the restore arguments leave it out (selected paths outside them: {}); add it to the restore arguments or remove it from the key paths",
            uncovered.join(", ")
        ),
    })
}

/// Returns whether `selection` restores something at `path`, or the
/// checkpoint has nothing there to restore.
fn covers<T>(checkpoint: &PyTree<T>, selection: &PyTree<Selected>, path: &KeyPath) -> bool {
    let mut node = selection;
    for key in path {
        let child = match (node, key) {
            (PyTree::Leaf(_), _) => return true,
            (PyTree::Dict(children), Key::Dict(name)) => children.get(name),
            (PyTree::List(items) | PyTree::Tuple(items), Key::Index(index)) => items.get(*index),
            _ => None,
        };
        let Some(child) = child else {
            return false;
        };
        node = child;
    }
    !matches!(node, PyTree::None) || matches!(checkpoint.get(path), Some(PyTree::None))
}

/// Returns an empty node of the kind of `tree`'s root, the result of a
/// restore that selects nothing.
fn empty_like<T, U>(tree: &PyTree<T>) -> PyTree<U> {
    match tree {
        PyTree::Dict(_) => PyTree::Dict(BTreeMap::new()),
        PyTree::List(_) => PyTree::List(Vec::new()),
        PyTree::Tuple(_) => PyTree::Tuple(Vec::new()),
        PyTree::None | PyTree::Leaf(_) => PyTree::None,
    }
}

/// Fails or logs per `key_match` when `mismatch` lists any key path.
fn check_mismatch(mismatch: Mismatch, key_match: KeyMatch, what: &str) -> Result<()> {
    let mut missing = mismatch.missing;
    let mut unexpected = mismatch.unexpected;
    missing.sort();
    missing.dedup();
    unexpected.sort();
    unexpected.dedup();

    let strings = |paths: &[KeyPath]| paths.iter().map(KeyPath::to_string).collect::<Vec<_>>();
    let unexpected_is_error = key_match == KeyMatch::Strict && !unexpected.is_empty();
    let missing_is_error = key_match != KeyMatch::Lenient && !missing.is_empty();
    if unexpected_is_error || missing_is_error {
        let unexpected = if unexpected_is_error { strings(&unexpected) } else { Vec::new() };
        return Err(CkptError::KeyMismatch {
            missing: strings(&missing),
            unexpected,
        });
    }
    if !missing.is_empty() {
        warn!(
            keys = %strings(&missing).join(", "),
            "{what} name keys that the checkpoint lacks; restoring without them"
        );
    }
    if !unexpected.is_empty() {
        debug!(
            leaves = unexpected.len(),
            "partial restore skips checkpoint keys that the {what} leave out"
        );
    }
    Ok(())
}

/// Matches a node of the restore arguments against the checkpoint node at
/// the same path, recording missing and unexpected paths. Returns `None`
/// when the nodes do not match at all.
///
/// A leaf of the arguments covers the whole checkpoint subtree below it,
/// and `None` covers nothing, which lets a partial target skip list items.
/// Lists and tuples match each other, because the checkpoint does not tell
/// them apart; the result takes the checkpoint's kind.
fn match_node(
    args: &PyTree<RestoreArgs>,
    checkpoint: &PyTree<usize>,
    path: &mut KeyPath,
    mismatch: &mut Mismatch,
) -> Option<PyTree<Selected>> {
    match (args, checkpoint) {
        (PyTree::Leaf(leaf_args), _) => Some(checkpoint.as_ref().map(|&index| Selected {
            index,
            args: leaf_args.clone(),
        })),
        (PyTree::None, PyTree::None) => Some(PyTree::None),
        (PyTree::None, _) => {
            mismatch.add_unexpected(checkpoint, path);
            None
        }
        (PyTree::Dict(arg_children), PyTree::Dict(children)) => {
            let mut matched = BTreeMap::new();
            for (key, child) in children {
                path.push(key.as_str());
                match arg_children.get(key) {
                    Some(arg_child) => {
                        if let Some(node) = match_node(arg_child, child, path, mismatch) {
                            matched.insert(key.clone(), node);
                        }
                    }
                    None => mismatch.add_unexpected(child, path),
                }
                path.pop();
            }
            for (key, arg_child) in arg_children {
                if !children.contains_key(key) {
                    mismatch.add_missing(arg_child, &path.child(key.as_str()));
                }
            }
            Some(PyTree::Dict(matched))
        }
        (
            PyTree::List(arg_items) | PyTree::Tuple(arg_items),
            PyTree::List(items) | PyTree::Tuple(items),
        ) => {
            let mut matched = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                path.push(index);
                let node = match arg_items.get(index) {
                    Some(arg_item) => match_node(arg_item, item, path, mismatch),
                    None => {
                        mismatch.add_unexpected(item, path);
                        None
                    }
                };
                path.pop();
                matched.push(node.unwrap_or(PyTree::None));
            }
            for (index, arg_item) in arg_items.iter().enumerate().skip(items.len()) {
                mismatch.add_missing(arg_item, &path.child(index));
            }
            Some(match checkpoint {
                PyTree::Tuple(_) => PyTree::Tuple(matched),
                _ => PyTree::List(matched),
            })
        }
        _ => {
            mismatch.add_missing(args, path);
            mismatch.add_unexpected(checkpoint, path);
            None
        }
    }
}

/// Keeps the nodes of `node` (at `path`) that are at or below one of
/// `selected`, and the containers above them. Returns `None` when nothing
/// is kept.
fn filter_paths(
    node: PyTree<Selected>,
    path: &mut KeyPath,
    selected: &[KeyPath],
) -> Option<PyTree<Selected>> {
    if selected.iter().any(|chosen| path.keys().starts_with(chosen.keys())) {
        return Some(node);
    }
    if !selected.iter().any(|chosen| chosen.keys().starts_with(path.keys())) {
        return None;
    }
    match node {
        PyTree::Dict(children) => {
            let mut kept = BTreeMap::new();
            for (key, child) in children {
                path.push(key.as_str());
                if let Some(child) = filter_paths(child, path, selected) {
                    kept.insert(key, child);
                }
                path.pop();
            }
            (!kept.is_empty()).then_some(PyTree::Dict(kept))
        }
        PyTree::List(items) => filter_items(items, path, selected).map(PyTree::List),
        PyTree::Tuple(items) => filter_items(items, path, selected).map(PyTree::Tuple),
        PyTree::None | PyTree::Leaf(_) => None,
    }
}

/// Filters list or tuple items, keeping their positions with `None`.
fn filter_items(
    items: Vec<PyTree<Selected>>,
    path: &mut KeyPath,
    selected: &[KeyPath],
) -> Option<Vec<PyTree<Selected>>> {
    let mut any_kept = false;
    let mut kept = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        path.push(index);
        let item = filter_paths(item, path, selected);
        path.pop();
        any_kept |= item.is_some();
        kept.push(item.unwrap_or(PyTree::None));
    }
    any_kept.then_some(kept)
}

#[cfg(test)]
mod tests {
    use ckpt_pytree::Key;

    use super::*;

    /// `{"opt": [a, (b, c)], "params": {"b": d, "w": e}, "step": f}` with
    /// leaves numbered in flatten order.
    fn checkpoint() -> PyTree<()> {
        PyTree::dict([
            (
                "opt",
                PyTree::list([PyTree::leaf(()), PyTree::list([PyTree::leaf(()), PyTree::leaf(())])]),
            ),
            ("params", PyTree::dict([("b", PyTree::leaf(())), ("w", PyTree::leaf(()))])),
            ("step", PyTree::leaf(())),
            ("none", PyTree::None),
        ])
    }

    fn indices(tree: &PyTree<Selected>) -> Vec<usize> {
        tree.leaves().iter().map(|selected| selected.index).collect()
    }

    fn path(text: &str) -> KeyPath {
        text.parse().unwrap()
    }

    fn mismatch_of(result: Result<PyTree<Selected>>) -> (Vec<String>, Vec<String>) {
        match result {
            Err(CkptError::KeyMismatch {
                missing,
                unexpected,
            }) => (missing, unexpected),
            other => panic!("expected a key mismatch, found {other:?}"),
        }
    }

    #[test]
    fn no_arguments_selects_all() {
        let selected = select(&checkpoint(), &PyTreeRestore::new()).unwrap();
        assert_eq!(indices(&selected), [0, 1, 2, 3, 4, 5]);
        assert_eq!(selected.get(&path("['none']")), Some(&PyTree::None));
    }

    #[test]
    fn prefix_leaf_covers_subtree() {
        let request = PyTreeRestore::new().with_restore_args(PyTree::leaf(RestoreArgs::host()));
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(indices(&selected), [0, 1, 2, 3, 4, 5]);
        assert!(selected.leaves().iter().all(|s| s.args == RestoreArgs::host()));
    }

    #[test]
    fn strict_lists_every_key() {
        let args = PyTree::dict([
            ("params", PyTree::dict([("w", PyTree::leaf(RestoreArgs::default()))])),
            ("extra", PyTree::leaf(RestoreArgs::default())),
            ("zz", PyTree::list([PyTree::leaf(RestoreArgs::default())])),
        ]);
        let request = PyTreeRestore::new().with_restore_args(args);
        let (missing, unexpected) = mismatch_of(select(&checkpoint(), &request));
        assert_eq!(missing, ["['extra']", "['zz'][0]"]);
        assert_eq!(
            unexpected,
            ["['none']", "['opt'][0]", "['opt'][1][0]", "['opt'][1][1]", "['params']['b']", "['step']"]
        );
    }

    #[test]
    fn partial_skips_unlisted() {
        let args = PyTree::dict([
            ("params", PyTree::dict([("w", PyTree::leaf(RestoreArgs::host()))])),
            ("opt", PyTree::list([PyTree::leaf(RestoreArgs::default())])),
        ]);
        let request = PyTreeRestore::new()
            .with_restore_args(args)
            .with_key_match(KeyMatch::Partial);
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(indices(&selected), [0, 4]);
        assert_eq!(selected.get(&path("['opt'][1]")), Some(&PyTree::None));
        assert_eq!(selected.get(&path("['step']")), None);
    }

    #[test]
    fn partial_rejects_missing() {
        let args = PyTree::dict([("params", PyTree::dict([("v", PyTree::leaf(RestoreArgs::default()))]))]);
        let request = PyTreeRestore::new()
            .with_restore_args(args)
            .with_partial_restore(true);
        let (missing, unexpected) = mismatch_of(select(&checkpoint(), &request));
        assert_eq!(missing, ["['params']['v']"]);
        assert!(unexpected.is_empty());
    }

    #[test]
    fn lenient_drops_missing() {
        let args = PyTree::dict([(
            "params",
            PyTree::dict([("v", PyTree::leaf(RestoreArgs::default())), ("w", PyTree::leaf(RestoreArgs::default()))]),
        )]);
        let request = PyTreeRestore::new()
            .with_restore_args(args)
            .with_key_match(KeyMatch::Lenient);
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(indices(&selected), [4]);
    }

    #[test]
    fn key_paths_select_subtrees() {
        let request = PyTreeRestore::new()
            .with_keystr_paths(["['opt'][1]", "['step']"])
            .unwrap();
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(indices(&selected), [1, 2, 5]);
        assert_eq!(selected.get(&path("['opt'][0]")), Some(&PyTree::None));
        assert_eq!(selected.get(&path("['params']")), None);
    }

    #[test]
    fn key_paths_list_every_missing() {
        let request = PyTreeRestore::new()
            .with_keystr_paths(["['b']", "['params']['x']", "['a']", "['step']"])
            .unwrap();
        let (missing, _) = mismatch_of(select(&checkpoint(), &request));
        assert_eq!(missing, ["['a']", "['b']", "['params']['x']"]);
    }

    #[test]
    fn lenient_key_paths_skip_missing() {
        let request = PyTreeRestore::new()
            .with_key_paths([path("['nope']")])
            .with_key_match(KeyMatch::Lenient);
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(selected, PyTree::Dict(BTreeMap::new()));
    }

    #[test]
    fn key_paths_filter_arguments() {
        let args = PyTree::dict([
            ("opt", PyTree::leaf(RestoreArgs::host())),
            ("params", PyTree::leaf(RestoreArgs::default())),
            ("step", PyTree::leaf(RestoreArgs::default())),
            ("none", PyTree::None),
        ]);
        let request = PyTreeRestore::new()
            .with_restore_args(args)
            .with_key_paths([KeyPath::from(vec![Key::from("opt"), Key::Index(0)])]);
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(indices(&selected), [0]);
        assert_eq!(selected.leaves()[0].args, RestoreArgs::host());
    }

    #[test]
    fn none_skips_list_item() {
        let args = PyTree::dict([("opt", PyTree::list([PyTree::None, PyTree::leaf(RestoreArgs::host())]))]);
        let request = PyTreeRestore::new()
            .with_restore_args(args)
            .with_key_match(KeyMatch::Partial);
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(indices(&selected), [1, 2]);
        assert_eq!(selected.get(&path("['opt'][0]")), Some(&PyTree::None));
    }

    #[test]
    fn tuple_arguments_match_lists() {
        let args = PyTree::dict([
            ("opt", PyTree::tuple([PyTree::leaf(RestoreArgs::default()), PyTree::leaf(RestoreArgs::host())])),
            ("params", PyTree::leaf(RestoreArgs::default())),
            ("step", PyTree::leaf(RestoreArgs::default())),
            ("none", PyTree::None),
        ]);
        let request = PyTreeRestore::new().with_restore_args(args);
        let selected = select(&checkpoint(), &request).unwrap();
        assert_eq!(indices(&selected), [0, 1, 2, 3, 4, 5]);
        assert_eq!(selected.get(&path("['opt']")).map(PyTree::kind), Some(ckpt_pytree::NodeKind::List));
    }
}
