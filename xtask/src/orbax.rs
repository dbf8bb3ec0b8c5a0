//! Runs the Python Orbax scripts in `python/` and returns their results.
//!
//! Every function takes the venv interpreter from
//! [`ensure_venv`](crate::venv::ensure_venv) and runs it through
//! [`python_command`](crate::venv::python_command). The JSON documents have
//! the per-leaf schema of `testdata/orbax/*/expected_values.json`, described
//! in `python/leaf_records.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::venv::python_command;

/// Number of trailing stderr lines kept in an error, because JAX and absl log
/// many warnings before the Python traceback that matters.
const STDERR_TAIL_LINES: usize = 40;

/// Restores the checkpoint item at `ckpt` with Python Orbax and returns one
/// record per leaf.
///
/// Without `mesh` Orbax restores with no target tree, so jax.Array leaves
/// land on the device ids recorded in the checkpoint's `_sharding` file. With
/// a mesh such as `"4x2"`, `"8"` or `"1"`, every non-scalar array leaf is
/// restored as a jax.Array on that mesh of the simulated CPU devices.
///
/// # Errors
///
/// Fails when the script exits non-zero (the error includes its stderr) or
/// prints something other than one JSON document.
pub(crate) fn orbax_read(
    python: &Path,
    ckpt: &Path,
    mesh: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let mut command = script_command(python, "orbax_read.py");
    command.arg(ckpt).args(mesh_args(mesh));
    run_json(&mut command)
}

/// Has Python Orbax find the newest step under the CheckpointManager root
/// `root` and restore its item `item`; returns the step in `"step"` and
/// one record per leaf.
///
/// # Errors
///
/// As [`orbax_read`].
pub(crate) fn orbax_read_manager(python: &Path, root: &Path, item: &str) -> anyhow::Result<serde_json::Value> {
    let mut command = script_command(python, "orbax_read.py");
    command.arg(root).arg("--manager-item").arg(item);
    run_json(&mut command)
}

/// Lists every key of the TensorStore OCDBT database at `dir` with the
/// length and sha256 of its latest value, read by TensorStore.
///
/// # Errors
///
/// As [`orbax_read`].
pub(crate) fn ocdbt_read(python: &Path, dir: &Path) -> anyhow::Result<serde_json::Value> {
    let mut command = script_command(python, "orbax_read.py");
    command.arg(dir).arg("--raw-ocdbt");
    run_json(&mut command)
}

/// Generates the fixtures that `testdata/orbax` lacks into `out` with
/// `make_fixtures.py`, replacing fixture directories of the same name.
///
/// The script prints its progress to the inherited stdout and stderr, and
/// verifies each fixture with `orbax_read.py` before it returns.
///
/// # Errors
///
/// Fails when the script exits non-zero; its output is above the error.
pub(crate) fn make_fixtures(python: &Path, out: &Path) -> anyhow::Result<()> {
    let mut command = script_command(python, "make_fixtures.py");
    command.arg(out).arg("--force");
    let status = command
        .status()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !status.success() {
        bail!("make_fixtures.py failed with {status} (see its output above)");
    }
    Ok(())
}

/// Returns the workspace's `python/` directory, which contains the scripts.
fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."))
        .join("python")
}

fn script_command(python: &Path, script: &str) -> Command {
    let mut command = python_command(python);
    command.arg(scripts_dir().join(script));
    command
}

fn mesh_args(mesh: Option<&str>) -> Vec<String> {
    match mesh {
        Some(mesh) => vec!["--mesh".to_owned(), mesh.to_owned()],
        None => Vec::new(),
    }
}

/// Runs a script that prints one JSON document and parses it.
fn run_json(command: &mut Command) -> anyhow::Result<serde_json::Value> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}:\n{}",
            output.status,
            stderr_tail(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "invalid JSON output from {command:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_dir_has_orbax_read() {
        assert!(scripts_dir().join("orbax_read.py").is_file());
    }

    #[test]
    fn mesh_args_without_mesh() {
        assert!(mesh_args(None).is_empty());
    }

    #[test]
    fn mesh_args_with_mesh() {
        assert_eq!(mesh_args(Some("4x2")), ["--mesh", "4x2"]);
    }

    #[test]
    fn stderr_tail_keeps_last_lines() {
        let stderr: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(stderr.as_bytes());
        assert_eq!(tail.lines().count(), STDERR_TAIL_LINES);
        assert!(tail.ends_with("line 99"), "{tail}");
    }

    #[test]
    fn run_json_parses_output() {
        let mut command = Command::new("sh");
        command.args(["-c", r#"echo '{"leaves": []}'"#]);
        let value = run_json(&mut command).expect("valid JSON");
        assert_eq!(value, serde_json::json!({"leaves": []}));
    }

    #[test]
    fn run_json_rejects_text() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo not-json"]);
        let message = format!("{:#}", run_json(&mut command).expect_err("invalid JSON"));
        assert!(message.contains("invalid JSON output"), "{message}");
    }

    #[test]
    fn run_json_reports_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'KeyError: kernel' >&2; exit 1"]);
        let message = format!("{:#}", run_json(&mut command).expect_err("exit status 1"));
        assert!(message.contains("KeyError: kernel"), "{message}");
    }

    }
