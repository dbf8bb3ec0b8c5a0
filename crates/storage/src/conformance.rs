//! Checks of the [`Backend`] contract that every backend's tests run.
//!
//! Backends in this crate call [`backend_tests!`] in their test module with
//! a function that returns a guard (such as a temporary directory) and a
//! fresh, empty backend. Other crates and integration tests call
//! [`check_backend`], which runs every check of [`CONFORMANCE_CHECKS`].

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, Barrier},
};

use bytes::Bytes;

use crate::{Backend, StorageError};

/// One check of the [`Backend`] contract, which panics when the backend fails it.
#[derive(Clone, Copy, Debug)]
pub struct ConformanceCheck {
    /// Name of the check, such as `put_then_get`.
    pub name: &'static str,
    /// Runs the check on a fresh, empty backend.
    pub run: fn(&dyn Backend),
}

/// Runs every check of [`CONFORMANCE_CHECKS`], each on a fresh, empty
/// backend from `make`, and panics with the names and messages of the
/// checks that failed.
///
/// It is meant for tests, where a panic is a failure: a framework author
/// calls it from a test of their backend. The backend must start empty and
/// be used by nothing else while the checks run. The checks write objects
/// of up to 12 MiB.
pub fn check_backend(mut make: impl FnMut() -> Arc<dyn Backend>) {
    let mut failures = Vec::new();
    for check in CONFORMANCE_CHECKS {
        let backend = make();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (check.run)(backend.as_ref()))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", check.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} backend conformance checks failed:\n{}",
        failures.len(),
        CONFORMANCE_CHECKS.len(),
        failures.join("\n")
    );
}

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

pub(crate) fn put_if_absent_has_one_winner(backend: &dyn Backend) {
    const WRITERS: usize = 8;
    let barrier = Barrier::new(WRITERS);
    let results: Vec<crate::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    backend.put_if_absent("race/marker", Bytes::from(vec![writer as u8]))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a writer thread panicked"))
            .collect()
    });

    let winners: Vec<usize> = (0..WRITERS).filter(|&w| results[w].is_ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "create-only writers that succeeded: {winners:?}"
    );
    for result in &results {
        if let Err(err) = result {
            assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
        }
    }
    assert_eq!(
        backend.get("race/marker").unwrap(),
        Some(Bytes::from(vec![winners[0] as u8]))
    );
}

/// Returns 12 MiB and 3 bytes of a pattern that differs in every 5 MiB part.
fn large_value() -> Bytes {
    let length = 12 * 1024 * 1024 + 3;
    Bytes::from(
        (0..length)
            .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
            .collect::<Vec<u8>>(),
    )
}

pub(crate) fn large_object_round_trip(backend: &dyn Backend) {
    let value = large_value();
    backend.put("big/object", value.clone()).unwrap();
    assert_eq!(
        backend.size("big/object").unwrap(),
        Some(value.len() as u64)
    );
    let read = backend.get("big/object").unwrap().unwrap();
    assert!(
        read == value,
        "the object read back differs from the one written"
    );
}

pub(crate) fn large_object_range_reads(backend: &dyn Backend) {
    let value = large_value();
    backend.put("big/object", value.clone()).unwrap();
    let mib = 1024 * 1024u64;
    // Ranges inside the first part, across the 5 MiB and 10 MiB part
    // boundaries, and up to the last byte.
    for range in [
        0..10,
        5 * mib - 7..5 * mib + 9,
        3 * mib..11 * mib,
        12 * mib..12 * mib + 3,
    ] {
        let read = backend
            .get_range("big/object", range.clone())
            .unwrap()
            .unwrap();
        let expected = value.slice(range.start as usize..range.end as usize);
        assert!(read == expected, "range {range:?} differs");
    }
}

pub(crate) fn dotted_keys_round_trip(backend: &dyn Backend) {
    let keys = [
        "params.dense.kernel/0.1",
        "ocdbt.process_0/d/5b4a1c",
        "step_1/_CHECKPOINT_METADATA",
        "a-b_c=d/e~f",
    ];
    for key in keys {
        backend
            .put(key, Bytes::from(key.as_bytes().to_vec()))
            .unwrap();
    }
    for key in keys {
        assert_eq!(
            backend.get(key).unwrap(),
            Some(Bytes::from(key.as_bytes().to_vec())),
            "{key}"
        );
    }
    let mut sorted = keys.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!(backend.list("").unwrap(), sorted);
}

/// Calls the macro `$callback` of this module with `$args` followed by the
/// name of every check, so that one list feeds both [`CONFORMANCE_CHECKS`]
/// and [`backend_tests!`].
macro_rules! with_check_list {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::conformance::$callback!(
            $($args)*
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
            put_if_absent_has_one_winner,
            size_of_object,
            list_is_recursive_and_sorted,
            list_prefix_is_a_directory,
            list_missing_prefix_is_empty,
            list_dirs_returns_children,
            delete_prefix_removes_tree,
            delete_missing_prefix_is_ok,
            delete_root_removes_everything,
            escaping_keys_are_rejected,
            large_object_round_trip,
            large_object_range_reads,
            dotted_keys_round_trip
        );
    };
}

macro_rules! declare_checks {
    ($($check:ident),+) => {
        /// Every check of the [`Backend`] contract, in the order [`check_backend`] runs them.
        pub const CONFORMANCE_CHECKS: &[ConformanceCheck] = &[
            $(ConformanceCheck { name: stringify!($check), run: $check }),+
        ];
    };
}

crate::conformance::with_check_list!(declare_checks!());

/// Generates one test per contract check for the backend that `$make` returns.
#[cfg(test)]
macro_rules! backend_tests {
    ($make:ident) => {
        $crate::conformance::with_check_list!(backend_tests!($make,));
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

#[cfg(test)]
pub(crate) use backend_tests;
pub(crate) use declare_checks;
pub(crate) use with_check_list;
