//! `cargo xtask lint`: checks that crates depend on each other only as the
//! architecture allows, and that nothing reads files outside the repository.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// The ckpt crates each crate may depend on (normal and dev dependencies).
///
/// Lower layers never import higher ones: `pytree` knows nothing of arrays,
/// `storage` nothing of devices, and `device` does no I/O. Keep this table
/// and the one in ARCHITECTURE.md the same.
const ALLOWED_EDGES: &[(&str, &[&str])] = &[
    ("ckpt-core", &[]),
    ("ckpt-pytree", &["ckpt-core"]),
    ("ckpt-device", &["ckpt-core"]),
    ("ckpt-storage", &["ckpt-core"]),
    (
        "ckpt-colocated",
        &["ckpt-core", "ckpt-device", "ckpt-pytree", "ckpt-storage"],
    ),
    (
        "ckpt",
        &[
            "ckpt-core",
            "ckpt-device",
            "ckpt-pytree",
            "ckpt-storage",
            "ckpt-colocated",
        ],
    ),
    ("ckpt-cli", &["ckpt"]),
    ("xtask", &["ckpt"]),
];

pub(crate) fn run(root: &Path) -> Result<()> {
    let mut problems = check_dependency_edges(root)?;
    problems.extend(check_no_outside_paths(root)?);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("lint: {problem}");
        }
        bail!("{} lint problem(s)", problems.len());
    }
    println!("lint: crate dependency edges and paths are clean");
    Ok(())
}

/// Returns one message per dependency edge that `ALLOWED_EDGES` does not list.
fn check_dependency_edges(root: &Path) -> Result<Vec<String>> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED_EDGES.iter().copied().collect();
    let mut problems = Vec::new();
    for manifest in workspace_manifests(root)? {
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let doc: toml::Table = text
            .parse()
            .with_context(|| format!("parsing {}", manifest.display()))?;
        let Some(name) = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            continue;
        };
        let Some(permitted) = allowed.get(name) else {
            problems.push(format!(
                "{}: crate {name} is missing from the dependency table in xtask/src/lint.rs",
                manifest.display()
            ));
            continue;
        };
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = doc.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for dep in deps.keys() {
                let is_ckpt = dep == "ckpt" || dep.starts_with("ckpt-");
                if is_ckpt && !permitted.contains(&dep.as_str()) {
                    problems.push(format!(
                        "{name} depends on {dep} in [{section}], which the architecture does not allow (allowed: {permitted:?})"
                    ));
                }
            }
        }
    }
    Ok(problems)
}

fn workspace_manifests(root: &Path) -> Result<Vec<PathBuf>> {
    let mut manifests = vec![root.join("xtask/Cargo.toml")];
    for entry in fs::read_dir(root.join("crates")).context("listing crates/")? {
        let manifest = entry?.path().join("Cargo.toml");
        if manifest.exists() {
            manifests.push(manifest);
        }
    }
    manifests.sort();
    Ok(manifests)
}

/// Returns one message per tracked source file that names the design
/// documents' directory outside the repository: clones do not have it.
fn check_no_outside_paths(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let forbidden = ["../shared", "/work/shared"];
    for dir in ["crates", "xtask", "python", "fuzz", ".ci"] {
        let dir = root.join(dir);
        if dir.exists() {
            scan_dir(&dir, &forbidden, &mut problems)?;
        }
    }
    Ok(problems)
}

fn scan_dir(dir: &Path, forbidden: &[&str], problems: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            scan_dir(&path, forbidden, problems)?;
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        for needle in forbidden {
            // This file names the paths in order to look for them.
            if text.contains(needle) && !path.ends_with("xtask/src/lint.rs") {
                problems.push(format!(
                    "{} refers to {needle}, which is not part of the repository",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}
