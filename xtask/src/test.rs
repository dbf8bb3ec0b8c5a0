//! `cargo xtask test`: the project's whole test suite on a fresh machine.
//!
//! Installs what the tests need (the Python virtualenv with real Orbax,
//! TensorStore and the S3 server used by the storage tests), runs every
//! crate's tests, the examples, the interop checks against Python Orbax,
//! and a small run of the demo.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{demo, interop, venv};

pub(crate) fn run(root: &Path) -> Result<()> {
    let python = venv::ensure_venv(root).context("installing the Python test dependencies")?;
    println!("test: Python dependencies ready in {}", python.display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .status()
        .with_context(|| format!("running {cargo} test"))?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["test", "--workspace", "--doc"])
        .status()
        .with_context(|| format!("running {cargo} test --doc"))?;
    if !status.success() {
        bail!("cargo test --doc failed ({status})");
    }

    // The examples check their own results and fail when one differs.
    for example in ["colocated", "restore"] {
        let status = Command::new(&cargo)
            .current_dir(root)
            .args(["run", "--quiet", "-p", "ckpt", "--example", example])
            .status()
            .with_context(|| format!("running {cargo} run --example {example}"))?;
        if !status.success() {
            bail!("example {example} failed ({status})");
        }
    }

    interop::run(root)?;

    // The main job end to end, small enough for CI.
    let args = demo::DemoArgs::small(root.join("target/demo-test"));
    demo::run(root, &args)
}
