//! Python virtual environment with real Orbax, for the interop checks and
//! fixture generation.
//!
//! The venv lives in `target/orbax-venv` and contains exactly the packages
//! pinned in `python/requirements.txt`. It keeps a copy of the requirements it was
//! installed from, and any difference from the current file rebuilds it from
//! scratch, so removed or downgraded packages cannot linger.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

/// Venv directory, relative to the workspace root.
const VENV_DIR: &str = "target/orbax-venv";

/// Pinned Python requirements, relative to the workspace root.
const REQUIREMENTS_FILE: &str = "python/requirements.txt";

/// Copy of the requirements the venv was installed from, inside the venv.
/// It is written only after pip succeeds.
const INSTALLED_REQUIREMENTS_FILE: &str = "requirements.installed.txt";

/// Number of CPU devices that XLA simulates in each Python process, so that
/// the scripts can build the 4x2 and 8-device meshes of the fixtures.
pub(crate) const SIMULATED_DEVICE_COUNT: usize = 8;

/// Creates or updates `target/orbax-venv` and returns its Python interpreter.
///
/// The venv is created with `python3 -m venv` and filled with
/// `pip install -r python/requirements.txt` when it is missing or was
/// installed from a different requirements file. An install downloads from
/// the package registry. Later calls only compare the requirements file.
///
/// # Errors
///
/// Fails when the requirements file cannot be read, when `python3 -m venv`
/// fails, or when pip fails; the error contains the command's full output.
pub(crate) fn ensure_venv(workspace_root: &Path) -> anyhow::Result<PathBuf> {
    let requirements_path = workspace_root.join(REQUIREMENTS_FILE);
    let requirements = fs::read(&requirements_path)
        .with_context(|| format!("failed to read {}", requirements_path.display()))?;
    let venv = workspace_root.join(VENV_DIR);
    let python = venv_python(&venv);
    if is_current(&venv, &requirements) {
        return Ok(python);
    }

    if venv.exists() {
        fs::remove_dir_all(&venv)
            .with_context(|| format!("failed to remove the outdated venv {}", venv.display()))?;
    }
    eprintln!(
        "creating {} from {} (needs the package registry)",
        venv.display(),
        requirements_path.display()
    );
    let started = Instant::now();

    let mut create = Command::new("python3");
    create.arg("-m").arg("venv").arg(&venv);
    run_install_step(&mut create, "python3 -m venv")?;

    let mut install = Command::new(&python);
    install
        .args(["-m", "pip", "install", "--no-input", "--disable-pip-version-check"])
        .arg("-r")
        .arg(&requirements_path);
    run_install_step(&mut install, "pip install")?;

    let installed = venv.join(INSTALLED_REQUIREMENTS_FILE);
    fs::write(&installed, &requirements)
        .with_context(|| format!("failed to write {}", installed.display()))?;
    eprintln!(
        "installed the Orbax venv in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(python)
}

/// Builds a command that runs `python` with the environment the scripts in
/// `python/` expect.
///
/// It sets `XLA_FLAGS` to simulate [`SIMULATED_DEVICE_COUNT`] CPU devices and
/// `JAX_PLATFORMS=cpu`, so JAX initializes only its CPU backend. It clears
/// `PYTHONPATH`, `PYTHONHOME` and the user site directory so only the venv's
/// packages load, and turns off `.pyc` files so the source tree stays clean.
/// No variable can forbid network access; the scripts open sockets only on
/// 127.0.0.1 (the JAX coordinator and gloo of the multi-process fixture).
pub(crate) fn python_command(python: &Path) -> Command {
    let mut command = Command::new(python);
    command
        .env(
            "XLA_FLAGS",
            format!("--xla_force_host_platform_device_count={SIMULATED_DEVICE_COUNT}"),
        )
        .env("JAX_PLATFORMS", "cpu")
        .env("PYTHONNOUSERSITE", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUTF8", "1")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME");
    command
}

/// Returns the interpreter path inside a venv directory.
fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// Tells whether the venv has an interpreter and was installed from exactly
/// these requirements.
fn is_current(venv: &Path, requirements: &[u8]) -> bool {
    if !venv_python(venv).is_file() {
        return false;
    }
    match fs::read(venv.join(INSTALLED_REQUIREMENTS_FILE)) {
        Ok(installed) => installed == requirements,
        Err(_) => false,
    }
}

/// Runs one install command and fails with its whole output unless it succeeds.
fn run_install_step(command: &mut Command, name: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("failed to start {name} ({command:?})"))?;
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{name} failed with {}\ncommand: {command:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// Creates an empty directory under the system temp dir for one test.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-venv-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn fake_venv(name: &str, installed: Option<&[u8]>) -> PathBuf {
        let venv = scratch_dir(name);
        let python = venv_python(&venv);
        fs::create_dir_all(python.parent().expect("bin dir")).expect("create bin dir");
        fs::write(&python, b"").expect("write fake interpreter");
        if let Some(installed) = installed {
            fs::write(venv.join(INSTALLED_REQUIREMENTS_FILE), installed).expect("write copy");
        }
        venv
    }

    #[test]
    fn current_when_copy_matches() {
        let venv = fake_venv("matches", Some(b"jax==0.10.2\n"));
        assert!(is_current(&venv, b"jax==0.10.2\n"));
    }

    #[test]
    fn outdated_when_copy_differs() {
        let venv = fake_venv("differs", Some(b"jax==0.10.1\n"));
        assert!(!is_current(&venv, b"jax==0.10.2\n"));
    }

    #[test]
    fn outdated_without_copy() {
        let venv = fake_venv("no-copy", None);
        assert!(!is_current(&venv, b"jax==0.10.2\n"));
    }

    #[test]
    fn outdated_without_interpreter() {
        let venv = scratch_dir("no-python");
        fs::write(venv.join(INSTALLED_REQUIREMENTS_FILE), b"jax==0.10.2\n").expect("write copy");
        assert!(!is_current(&venv, b"jax==0.10.2\n"));
    }

    #[test]
    fn python_command_sets_jax_environment() {
        let command = python_command(Path::new("/venv/bin/python"));
        let envs: Vec<_> = command.get_envs().collect();
        let flags = format!("--xla_force_host_platform_device_count={SIMULATED_DEVICE_COUNT}");
        assert!(envs.contains(&(OsStr::new("XLA_FLAGS"), Some(OsStr::new(&flags)))));
        assert!(envs.contains(&(OsStr::new("JAX_PLATFORMS"), Some(OsStr::new("cpu")))));
        assert!(envs.contains(&(OsStr::new("PYTHONPATH"), None)));
    }

    #[test]
    fn failed_step_reports_output() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo resolver-said-no >&2; exit 3"]);
        let error = run_install_step(&mut command, "pip install").expect_err("step must fail");
        let message = format!("{error:#}");
        assert!(message.contains("pip install failed"), "{message}");
        assert!(message.contains("resolver-said-no"), "{message}");
    }
}
