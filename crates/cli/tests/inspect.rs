//! Runs the built `ckpt inspect` on checkpoints written by Python Orbax
//! and compares its output with the fixtures' `expected_values.json`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/orbax")
        .join(name)
}

/// Returns the records of `expected_values.json` of a fixture that have
/// data: empty containers and `None` are left out, as `inspect --json`
/// leaves them out.
fn expected_leaves(fixture: &str) -> Vec<Value> {
    let path = fixture_dir(fixture).join("expected_values.json");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let document: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("cannot parse {}: {error}", path.display()));
    let Some(Value::Array(leaves)) = document.get("leaves") else {
        panic!("{}: no leaves array", path.display());
    };
    leaves
        .iter()
        .filter(|leaf| leaf["kind"] != "empty")
        .cloned()
        .collect()
}

/// Runs `ckpt` with `args`, without a backtrace in error output.
fn run_ckpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("the ckpt binary runs")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ckpt failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// Returns a key path as `expected_values.json` writes it, without the
/// Orbax key type codes that `inspect --json` does not print.
fn key_path_of(keypath: &Value) -> Value {
    let keys = keypath.as_array().expect("a keypath is an array");
    keys.iter()
        .map(|key| serde_json::json!({"key": key["key"], "key_type": key["key_type"]}))
        .collect()
}

/// Runs `inspect --json` on a fixture's checkpoint and compares each line
/// with the fixture's records.
fn assert_json_matches(fixture: &str) {
    let path = fixture_dir(fixture).join("ckpt");
    let output = run_ckpt(&["inspect", "--json", path.to_str().expect("UTF-8 path")]);
    let stdout = stdout_of(&output);

    let mut lines: BTreeMap<String, Value> = BTreeMap::new();
    for line in stdout.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("{fixture}: line {line:?} is not JSON: {error}"));
        let name = value["param_name"]
            .as_str()
            .expect("param_name is a string")
            .to_owned();
        lines.insert(name, value);
    }

    let expected = expected_leaves(fixture);
    assert_eq!(lines.len(), expected.len(), "{fixture}: one line per leaf");
    for leaf in &expected {
        let name = leaf["param_name"].as_str().expect("param_name is a string");
        let context = format!("{fixture} {name}");
        let line = lines
            .get(name)
            .unwrap_or_else(|| panic!("{context}: no line in {stdout}"));
        assert_eq!(
            line["keypath"],
            key_path_of(&leaf["keypath"]),
            "{context}: keypath"
        );
        assert_eq!(
            line["dtype"],
            leaf.get("dtype").cloned().unwrap_or(Value::Null),
            "{context}: dtype"
        );
        assert_eq!(
            line["shape"],
            leaf.get("shape").cloned().unwrap_or(Value::Null),
            "{context}: shape"
        );
        assert_eq!(line["sha256"], leaf["sha256"], "{context}: sha256");
    }
}

#[test]
fn json_matches_expected_values() {
    assert_json_matches("b_pytree_zarr2_no_ocdbt");
}

/// The other single-item fixtures: OCDBT, zarr v3, every dtype, scalars
/// and empty nodes, no compression, and a checkpoint written without Orbax.
#[test]
fn json_matches_other_fixtures() {
    for fixture in [
        "a_pytree_ocdbt",
        "c_pytree_zarr3_ocdbt",
        "c2_pytree_zarr3_no_ocdbt",
        "f_dtypes_zarr2",
        "g_scalars_empty",
        "j_uncompressed_single_replica",
        "m_foreign_minimal",
    ] {
        assert_json_matches(fixture);
    }
}

/// Returns the label `inspect` prints for the last key of a path: the dict
/// key, or `[i]` for a sequence index.
fn label_of(key: &Value) -> String {
    let name = key["key"].as_str().expect("a key is a string");
    match key["key_type"].as_str() {
        Some("sequence") => format!("[{name}]"),
        _ => name.to_owned(),
    }
}

/// Checks that the text output has a line for `leaf` with its value
/// type, dtype and shape, indented two spaces per level.
fn assert_leaf_line(stdout: &str, leaf: &Value) {
    let keys = leaf["keypath"].as_array().expect("a keypath is an array");
    let depth = keys.len() - 1;
    let prefix = format!("{}{}: ", "  ".repeat(depth), label_of(&keys[depth]));
    let name = leaf["param_name"].as_str().expect("param_name is a string");
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} for {name} in\n{stdout}"));

    if leaf["kind"] == "string" {
        assert_eq!(line, format!("{prefix}string"), "{name}");
        return;
    }
    let dtype = leaf["dtype"].as_str().expect("an array has a dtype");
    let shape: Vec<u64> =
        serde_json::from_value(leaf["shape"].clone()).expect("an array has a shape");
    let dtype_and_shape = format!(" {dtype}{shape:?} ");
    assert!(
        line.contains(&dtype_and_shape),
        "{name}: expected {dtype_and_shape:?} in {line:?}"
    );
}

#[test]
fn text_names_every_leaf() {
    let path = fixture_dir("b_pytree_zarr2_no_ocdbt").join("ckpt");
    let location = path.to_str().expect("UTF-8 path");
    let stdout = stdout_of(&run_ckpt(&["inspect", location]));

    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("checkpoint {location}").as_str())
    );
    assert_eq!(lines.next(), Some("format: zarr v2"));
    assert_eq!(
        stdout.lines().last(),
        Some("total: 608 bytes of array data")
    );
    for leaf in expected_leaves("b_pytree_zarr2_no_ocdbt") {
        assert_leaf_line(&stdout, &leaf);
    }
}

#[test]
fn text_shows_empty_nodes() {
    let path = fixture_dir("g_scalars_empty").join("ckpt");
    let stdout = stdout_of(&run_ckpt(&["inspect", path.to_str().expect("UTF-8 path")]));

    assert!(
        stdout.lines().any(|line| line == "format: OCDBT + zarr v2"),
        "{stdout}"
    );
    for line in [
        "empty_dict: {}",
        "empty_list: []",
        "empty_tuple: ()",
        "none: None",
        "  inner_empty: {}",
    ] {
        assert!(
            stdout.lines().any(|found| found == line),
            "no line {line:?} in\n{stdout}"
        );
    }
    for leaf in expected_leaves("g_scalars_empty") {
        assert_leaf_line(&stdout, &leaf);
    }
}

#[test]
fn missing_path_fails() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let parent = dir.path().join("absent");
    let path = parent.join("ckpt");
    let location = path.to_str().expect("UTF-8 path");

    for args in [
        vec!["inspect", location],
        vec!["inspect", "--json", location],
    ] {
        let output = run_ckpt(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(location),
            "{args:?}: stderr does not name the path: {stderr}"
        );
        assert!(stderr.contains("not found"), "{args:?}: {stderr}");
        assert!(
            output.stdout.is_empty(),
            "{args:?}: printed {:?}",
            output.stdout
        );
    }
    assert!(!parent.exists(), "inspect created {}", parent.display());
}

#[test]
fn uncommitted_checkpoint_fails() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = fixture_dir("b_pytree_zarr2_no_ocdbt").join("ckpt");
    let tmp_dir = dir.path().join("x.orbax-checkpoint-tmp");
    copy_dir(&source, &tmp_dir);
    let tmp_location = tmp_dir.to_str().expect("UTF-8 path");

    let output = run_ckpt(&["inspect", tmp_location]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "inspect of a temporary directory succeeded"
    );
    assert!(
        stderr.contains(tmp_location),
        "stderr does not name the path: {stderr}"
    );
    assert!(stderr.contains("is not committed"), "{stderr}");

    // The name the save would have committed to does not exist yet.
    let final_path = dir.path().join("x");
    let final_location = final_path.to_str().expect("UTF-8 path");
    let output = run_ckpt(&["inspect", "--json", final_location]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "inspect of an uncommitted name succeeded"
    );
    assert!(
        stderr.contains(final_location),
        "stderr does not name the path: {stderr}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("list the fixture") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}
