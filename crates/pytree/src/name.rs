use std::collections::BTreeMap;

use crate::error::TreeError;
use crate::key::KeyPath;
use crate::tree::PyTree;

/// Returns the parameter name of a leaf: its keys joined with `.`, as Orbax's
/// `param_name_from_keypath` does (`params.dense.kernel`, `opt.1.0`).
///
/// Orbax uses this name as the array's path inside the checkpoint: the zarr
/// array key in OCDBT, the directory without OCDBT, the member of
/// `_strings.json`. Different paths can give the same name, see
/// [`check_param_names`].
pub fn param_name(path: &KeyPath) -> String {
    let mut name = String::new();
    for (position, key) in path.iter().enumerate() {
        if position > 0 {
            name.push('.');
        }
        name.push_str(&key.name());
    }
    name
}

/// Checks that the parameter names of `paths` can serve as distinct storage
/// paths inside a checkpoint.
///
/// A `/` inside a key is allowed because Orbax allows it: it nests the array
/// one directory deeper. Fails with:
/// - [`TreeError::InvalidParamName`] for a name with an empty, `.` or `..`
///   segment between slashes, a backslash or a NUL byte. The empty name and
///   a leading or trailing `/` count as empty segments. Any of these could
///   address a file outside the checkpoint, or another file on some platforms;
/// - [`TreeError::ParamNameCollision`] for two paths with the same name, such
///   as `['a.b']` and `['a']['b']`;
/// - [`TreeError::NestedParamName`] when one name is a directory above
///   another (`a` and `a/b`), because a zarr array cannot contain another
///   array and its chunk keys could clash with the inner array's directory.
///
/// Errors name the key paths involved. Invalid names and collisions are
/// reported in the order of `paths`, nesting after all names are known.
pub fn check_param_names<'a>(
    paths: impl IntoIterator<Item = &'a KeyPath>,
) -> Result<(), TreeError> {
    let mut names: BTreeMap<String, &KeyPath> = BTreeMap::new();
    for path in paths {
        let name = param_name(path);
        if let Some(reason) = invalid_name_reason(&name) {
            return Err(TreeError::InvalidParamName {
                path: path.clone(),
                name,
                reason,
            });
        }
        if let Some(first) = names.get(&name) {
            return Err(TreeError::ParamNameCollision {
                name,
                first: (*first).clone(),
                second: path.clone(),
            });
        }
        names.insert(name, path);
    }

    check_nesting(&names)
}

/// Returns why `name` cannot be used as a relative storage path, or `None`.
fn invalid_name_reason(name: &str) -> Option<&'static str> {
    if name.contains('\0') {
        return Some("it contains a NUL byte");
    }
    if name.contains('\\') {
        return Some("it contains a backslash, which is a path separator on Windows");
    }
    if name.starts_with('/') {
        return Some("it starts with '/', which makes it an absolute path");
    }
    for segment in name.split('/') {
        match segment {
            "" => return Some("it has an empty segment between '/' separators"),
            "." | ".." => return Some("it has a '.' or '..' segment, which leaves its directory"),
            _ => {}
        }
    }
    None
}

/// Rejects a name that is a directory above another name.
fn check_nesting(names: &BTreeMap<String, &KeyPath>) -> Result<(), TreeError> {
    for (inner_name, inner) in names {
        // Each '/' ends one candidate outer name, from the shortest up.
        for (position, _) in inner_name.match_indices('/') {
            let outer_name = &inner_name[..position];
            if let Some(outer) = names.get(outer_name) {
                return Err(TreeError::NestedParamName {
                    outer_name: outer_name.to_owned(),
                    outer: (*outer).clone(),
                    inner_name: inner_name.clone(),
                    inner: (*inner).clone(),
                });
            }
        }
    }
    Ok(())
}

impl<T> PyTree<T> {
    /// Checks the parameter names of the leaves with [`check_param_names`].
    ///
    /// Empty containers and `None` are skipped because Orbax stores no data
    /// under their names.
    pub fn check_param_names(&self) -> Result<(), TreeError> {
        let flat = self.flatten();
        check_param_names(flat.iter().map(|(path, _)| path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    fn path(keys: impl IntoIterator<Item = Key>) -> KeyPath {
        keys.into_iter().collect()
    }

    fn dict_path(keys: &[&str]) -> KeyPath {
        keys.iter().map(|key| Key::from(*key)).collect()
    }

    #[test]
    fn param_name_joins_with_dots() {
        let kernel = dict_path(&["params", "dense", "kernel"]);
        assert_eq!(param_name(&kernel), "params.dense.kernel");
    }

    #[test]
    fn param_name_indices() {
        let opt = path([Key::from("opt"), Key::Index(1), Key::Index(0)]);
        assert_eq!(param_name(&opt), "opt.1.0");
    }

    #[test]
    fn param_name_root() {
        assert_eq!(param_name(&KeyPath::root()), "");
    }

    #[test]
    fn check_accepts_distinct() {
        let paths = [
            dict_path(&["params", "dense", "kernel"]),
            dict_path(&["params", "dense", "bias"]),
            path([Key::from("opt"), Key::Index(0)]),
        ];
        assert_eq!(check_param_names(&paths), Ok(()));
    }

    #[test]
    fn check_accepts_slash_in_key() {
        let paths = [
            dict_path(&["arr/x"]),
            dict_path(&["arr/y"]),
            dict_path(&["a/b.c/d"]),
        ];
        assert_eq!(check_param_names(&paths), Ok(()));
    }

    #[test]
    fn check_accepts_dots_within_segment() {
        let paths = [dict_path(&["a", "."]), dict_path(&["..b"])];
        assert_eq!(check_param_names(&paths), Ok(()));
    }

    #[test]
    fn check_rejects_collision() {
        let dotted = dict_path(&["a.b"]);
        let nested = dict_path(&["a", "b"]);
        let result = check_param_names([&dotted, &nested]);
        assert_eq!(
            result,
            Err(TreeError::ParamNameCollision {
                name: "a.b".to_owned(),
                first: dotted.clone(),
                second: nested.clone(),
            })
        );
    }

    #[test]
    fn collision_message_names_paths() {
        let tree = PyTree::dict([
            ("a.b", PyTree::leaf(1)),
            ("a", PyTree::dict([("b", PyTree::leaf(2))])),
        ]);
        let Err(error) = tree.check_param_names() else {
            panic!("colliding names must be rejected");
        };
        let message = error.to_string();
        assert!(message.contains("['a']['b']"), "{message}");
        assert!(message.contains("['a.b']"), "{message}");
    }

    #[test]
    fn check_rejects_nested() {
        let outer = dict_path(&["a"]);
        let inner = dict_path(&["a/b"]);
        let result = check_param_names([&inner, &outer]);
        assert_eq!(
            result,
            Err(TreeError::NestedParamName {
                outer_name: "a".to_owned(),
                outer: outer.clone(),
                inner_name: "a/b".to_owned(),
                inner: inner.clone(),
            })
        );
    }

    #[test]
    fn check_rejects_escaping_names() {
        let cases: &[&[&str]] = &[
            &[".."],
            &["."],
            &["x", "/"],
            &["a/../b"],
            &["a/./b"],
            &["a//b"],
            &["/etc"],
            &["x/"],
            &["a\\b"],
            &["nul\0"],
            &[""],
        ];
        for keys in cases {
            let path = dict_path(keys);
            let result = check_param_names([&path]);
            assert!(
                matches!(result, Err(TreeError::InvalidParamName { .. })),
                "{keys:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn check_rejects_root_leaf() {
        let tree = PyTree::leaf(1);
        assert!(matches!(
            tree.check_param_names(),
            Err(TreeError::InvalidParamName { .. })
        ));
    }

    #[test]
    fn tree_check_skips_empty_nodes() {
        let tree = PyTree::dict([
            ("a.b", PyTree::<i32>::None),
            ("a", PyTree::dict([("b", PyTree::leaf(2))])),
            ("..", PyTree::list([])),
        ]);
        assert_eq!(tree.check_param_names(), Ok(()));
    }
}
