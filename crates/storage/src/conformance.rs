//! Checks of the [`Backend`] contract that every backend's tests run.
//!
//! A backend's test module calls [`backend_tests!`] with a function that
//! returns a guard (such as a temporary directory) and a fresh, empty backend.

use bytes::Bytes;

use crate::{Backend, StorageError};

fn put(backend: &dyn Backend, key: &str, value: &'static [u8]) {
    backend.put(key, Bytes::from_static(value)).unwrap();
}

pub(crate) fn get_missing_is_none(backend: &dyn Backend) {
    assert_eq!(backend.get("nothing").unwrap(), None);
    assert_eq!(backend.get("no/such/key").unwrap(), None);
}

pub(crate) fn put_then_get(backend: &dyn Backend) {
    put(backend, "a/b/c", b"value");
    assert_eq!(
        backend.get("a/b/c").unwrap(),
        Some(Bytes::from_static(b"value"))
    );
}

pub(crate) fn put_replaces_value(backend: &dyn Backend) {
    put(backend, "k", b"old value");
    put(backend, "k", b"new");
    assert_eq!(backend.get("k").unwrap(), Some(Bytes::from_static(b"new")));
}

pub(crate) fn put_empty_value(backend: &dyn Backend) {
    put(backend, "empty", b"");
    assert_eq!(backend.get("empty").unwrap(), Some(Bytes::new()));
    assert_eq!(backend.size("empty").unwrap(), Some(0));
}

pub(crate) fn get_range_reads_slice(backend: &dyn Backend) {
    put(backend, "r", b"0123456789");
    assert_eq!(
        backend.get_range("r", 2..5).unwrap(),
        Some(Bytes::from_static(b"234"))
    );
    assert_eq!(
        backend.get_range("r", 0..10).unwrap(),
        Some(Bytes::from_static(b"0123456789"))
    );
}

pub(crate) fn get_range_empty(backend: &dyn Backend) {
    put(backend, "r", b"0123");
    assert_eq!(backend.get_range("r", 4..4).unwrap(), Some(Bytes::new()));
    assert_eq!(backend.get_range("r", 1..1).unwrap(), Some(Bytes::new()));
}

pub(crate) fn get_range_past_end_is_invalid(backend: &dyn Backend) {
    put(backend, "r", b"0123");
    let err = backend.get_range("r", 2..6).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::InvalidRange {
                start: 2,
                end: 6,
                size: 4,
                ..
            }
        ),
        "{err}"
    );
    let err = backend.get_range("r", 5..5).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidRange { size: 4, .. }),
        "{err}"
    );
}

pub(crate) fn get_range_reversed_is_invalid(backend: &dyn Backend) {
    put(backend, "r", b"0123");
    #[allow(clippy::reversed_empty_ranges)]
    let err = backend.get_range("r", 3..1).unwrap_err();
    assert!(matches!(err, StorageError::InvalidRange { .. }), "{err}");
}

pub(crate) fn get_range_missing_is_none(backend: &dyn Backend) {
    assert_eq!(backend.get_range("nothing", 0..1).unwrap(), None);
}

pub(crate) fn put_if_absent_writes_new_key(backend: &dyn Backend) {
    backend
        .put_if_absent("m/new", Bytes::from_static(b"1"))
        .unwrap();
    assert_eq!(
        backend.get("m/new").unwrap(),
        Some(Bytes::from_static(b"1"))
    );
}

pub(crate) fn put_if_absent_rejects_existing(backend: &dyn Backend) {
    put(backend, "m", b"first");
    let err = backend
        .put_if_absent("m", Bytes::from_static(b"second"))
        .unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyExists { ref key, .. } if key == "m"),
        "{err}"
    );
    assert_eq!(
        backend.get("m").unwrap(),
        Some(Bytes::from_static(b"first"))
    );
}

pub(crate) fn size_of_object(backend: &dyn Backend) {
    put(backend, "s/x", b"12345");
    assert_eq!(backend.size("s/x").unwrap(), Some(5));
    assert_eq!(backend.size("s/y").unwrap(), None);
}

pub(crate) fn list_is_recursive_and_sorted(backend: &dyn Backend) {
    for key in ["b/2", "a/z/1", "a/y", "c", "a/x/0"] {
        put(backend, key, b"");
    }
    assert_eq!(
        backend.list("").unwrap(),
        ["a/x/0", "a/y", "a/z/1", "b/2", "c"]
    );
    assert_eq!(backend.list("a/").unwrap(), ["a/x/0", "a/y", "a/z/1"]);
}

pub(crate) fn list_prefix_is_a_directory(backend: &dyn Backend) {
    put(backend, "ab/x", b"");
    put(backend, "a/y", b"");
    assert_eq!(backend.list("a/").unwrap(), ["a/y"]);
    assert_eq!(backend.list("a").unwrap(), ["a/y"]);
}

pub(crate) fn list_missing_prefix_is_empty(backend: &dyn Backend) {
    assert!(backend.list("nothing/").unwrap().is_empty());
    assert!(backend.list("").unwrap().is_empty());
}

pub(crate) fn list_dirs_returns_children(backend: &dyn Backend) {
    for key in ["p/b/x", "p/a/deep/y", "p/file", "q/z"] {
        put(backend, key, b"");
    }
    assert_eq!(backend.list_dirs("p/").unwrap(), ["p/a", "p/b"]);
    assert_eq!(backend.list_dirs("").unwrap(), ["p", "q"]);
    assert!(backend.list_dirs("none/").unwrap().is_empty());
}

pub(crate) fn delete_prefix_removes_tree(backend: &dyn Backend) {
    for key in ["d/x", "d/e/y", "dd/z", "other"] {
        put(backend, key, b"");
    }
    backend.delete_prefix("d/").unwrap();
    assert_eq!(backend.list("").unwrap(), ["dd/z", "other"]);
}

pub(crate) fn delete_missing_prefix_is_ok(backend: &dyn Backend) {
    backend.delete_prefix("nothing/").unwrap();
    assert!(backend.list("").unwrap().is_empty());
}

pub(crate) fn delete_root_removes_everything(backend: &dyn Backend) {
    put(backend, "a/x", b"");
    put(backend, "y", b"");
    backend.delete_prefix("").unwrap();
    assert!(backend.list("").unwrap().is_empty());
}

pub(crate) fn escaping_keys_are_rejected(backend: &dyn Backend) {
    let is_invalid_key =
        |result: crate::Result<()>| matches!(result, Err(StorageError::InvalidKey { .. }));
    assert!(is_invalid_key(backend.get("../x").map(drop)));
    assert!(is_invalid_key(
        backend.get_range("a/../../x", 0..1).map(drop)
    ));
    assert!(is_invalid_key(backend.put("../x", Bytes::new())));
    assert!(is_invalid_key(
        backend.put_if_absent("/etc/x", Bytes::new())
    ));
    assert!(is_invalid_key(backend.size("..").map(drop)));
    assert!(is_invalid_key(backend.list("../").map(drop)));
    assert!(is_invalid_key(backend.list_dirs("a/../..").map(drop)));
    assert!(is_invalid_key(backend.delete_prefix("../")));
}

/// Generates one test per contract check for the backend that `$make` returns.
macro_rules! backend_tests {
    ($make:ident) => {
        $crate::conformance::backend_tests!(
            $make,
            get_missing_is_none,
            put_then_get,
            put_replaces_value,
            put_empty_value,
            get_range_reads_slice,
            get_range_empty,
            get_range_past_end_is_invalid,
            get_range_reversed_is_invalid,
            get_range_missing_is_none,
            put_if_absent_writes_new_key,
            put_if_absent_rejects_existing,
            size_of_object,
            list_is_recursive_and_sorted,
            list_prefix_is_a_directory,
            list_missing_prefix_is_empty,
            list_dirs_returns_children,
            delete_prefix_removes_tree,
            delete_missing_prefix_is_ok,
            delete_root_removes_everything,
            escaping_keys_are_rejected
        );
    };
    ($make:ident, $($check:ident),+) => {
        mod conformance {
            $(
                #[test]
                fn $check() {
                    let (_guard, backend) = super::$make();
                    $crate::conformance::$check(&backend);
                }
            )+
        }
    };
}

pub(crate) use backend_tests;
