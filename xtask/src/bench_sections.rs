//! The sections of `docs/BENCHMARKS.md` and the benchmarks beyond the
//! Orbax comparison: background saves, S3 on loopback, and colocated
//! against gather on worker processes.
//!
//! Each section sits between `<!-- section: NAME -->` markers, so that
//! `cargo xtask bench --only NAME` can rewrite one section and keep the
//! others as the last full run wrote them. Each section states its own
//! command and date for that reason.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A section of `docs/BENCHMARKS.md`, in the order of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Section {
    /// ckpt against Python Orbax and the machine, and peak memory.
    Orbax,
    /// Background saves through a CheckpointManager.
    Async,
    /// Save and restore into S3 on a loopback moto server.
    S3,
    /// Colocated against gather on worker processes over gRPC.
    Cluster,
}

impl Section {
    pub(crate) const ALL: [Section; 4] = [Section::Orbax, Section::Async, Section::S3, Section::Cluster];

    fn name(self) -> &'static str {
        match self {
            Section::Orbax => "orbax",
            Section::Async => "async",
            Section::S3 => "s3",
            Section::Cluster => "cluster",
        }
    }

    fn marker(self) -> String {
        format!("<!-- section: {} -->", self.name())
    }
}

/// Builds the whole file from the header and the sections: `updated`
/// replaces a section, and the others keep their text from `existing`.
pub(crate) fn merge(header: &str, existing: &str, updated: &[(Section, String)]) -> String {
    let mut out = String::new();
    out.push_str(header.trim_end());
    out.push_str("\n\n");
    for section in Section::ALL {
        let body = match updated.iter().find(|(s, _)| *s == section) {
            Some((_, body)) => Some(body.trim().to_owned()),
            None => existing_section(existing, section),
        };
        if let Some(body) = body {
            let _ = write!(out, "{}\n\n{}\n\n", section.marker(), body);
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// Returns the text of `section` in a file written by [`merge`], if it has one.
fn existing_section(existing: &str, section: Section) -> Option<String> {
    let start = existing.find(&section.marker())? + section.marker().len();
    let rest = &existing[start..];
    let end = rest.find("<!-- section: ").unwrap_or(rest.len());
    let body = rest[..end].trim();
    (!body.is_empty()).then(|| body.to_owned())
}

/// Runs `binary` with `args` and returns its standard output: a Markdown
/// section, or JSON metrics on the last line.
pub(crate) fn child_stdout(binary: &Path, args: &[&str]) -> Result<String> {
    eprintln!("bench: {} {}", binary.display(), args.join(" "));
    let output = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start {}", binary.display()))?;
    if !output.status.success() {
        bail!("`{} {}` failed with {} (its stderr is above)", binary.display(), args.join(" "), output.status);
    }
    String::from_utf8(output.stdout).context("the section is not UTF-8")
}

/// The metrics of `xtask cluster` that the cluster section uses.
#[derive(Debug, Deserialize)]
struct ClusterRun {
    total_array_bytes: u64,
    save_controller_array_bytes: u64,
    restore_controller_array_bytes: u64,
    save_seconds: f64,
    restore_seconds: f64,
    host_bytes_written: Vec<u64>,
    controller_bytes_written: u64,
    passed: bool,
    error: Option<String>,
}

/// Hosts and devices of the cluster benchmark.
const CLUSTER_HOSTS: usize = 4;
const CLUSTER_DEVICES_PER_HOST: usize = 2;

/// Runs save-restore on worker processes in colocated and gather mode, one
/// warm-up and `runs` timed runs each, alternating the modes so that noise
/// on the shared machine hits both alike, and returns the Markdown section.
pub(crate) fn cluster_section(binary: &Path, dir: &Path, size: u64, runs: usize, date: &str) -> Result<String> {
    let mut colocated = Vec::new();
    let mut gather = Vec::new();
    for run in 0..=runs {
        for (mode, results) in [("colocated", &mut colocated), ("gather", &mut gather)] {
            let result = cluster_run(binary, dir, mode, size)?;
            if run > 0 {
                results.push(result);
            }
        }
    }
    render_cluster(&colocated, &gather, size, runs, date)
}

fn cluster_run(binary: &Path, dir: &Path, mode: &str, size: u64) -> Result<ClusterRun> {
    let hosts = CLUSTER_HOSTS.to_string();
    let devices = CLUSTER_DEVICES_PER_HOST.to_string();
    let size = size.to_string();
    let dir = dir.join("cluster").display().to_string();
    let args = [
        "cluster", "--hosts", &hosts, "--devices-per-host", &devices, "--mode", mode, "--size", &size, "--dir", &dir,
    ];
    let stdout = child_stdout(binary, &args)?;
    let line = stdout.lines().last().unwrap_or("");
    let run: ClusterRun = serde_json::from_str(line)
        .with_context(|| format!("invalid JSON metrics from `xtask {}`: {stdout}", args.join(" ")))?;
    if !run.passed {
        bail!("the {mode} save-restore run failed: {}", run.error.unwrap_or_default());
    }
    Ok(run)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn render_cluster(colocated: &[ClusterRun], gather: &[ClusterRun], size: u64, runs: usize, date: &str) -> Result<String> {
    let (Some(first_colocated), Some(first_gather)) = (colocated.first(), gather.first()) else {
        bail!("no timed cluster runs");
    };
    let mut out = String::new();
    writeln!(out, "## Colocated against gather on worker processes\n")?;
    writeln!(
        out,
        "Written by `cargo xtask bench` (section `cluster`, `--cluster-size {size}`) on {date}. Each run is \
         `xtask cluster --hosts {CLUSTER_HOSTS} --devices-per-host {CLUSTER_DEVICES_PER_HOST} --mode MODE \
         --size {size}` from the release build: {CLUSTER_HOSTS} `ckpt-worker` processes on 127.0.0.1 to \
         127.0.0.{CLUSTER_HOSTS} and a controller, saving a model-like tree of {:.1} MiB to local disk (OCDBT, \
         zstd) and restoring it onto the same mesh. One warm-up run per mode, then {runs} timed runs with the \
         modes alternating; medians below. Colocated: every worker writes and reads its own shards. Gather: \
         the controller fetches every shard over gRPC and writes it, and reads every box and sends it to its \
         worker.\n",
        first_colocated.total_array_bytes as f64 / f64::from(1u32 << 20)
    )?;
    writeln!(out, "| mode | save s | restore s | save GB/s | controller array bytes, save | controller array bytes, restore | bytes written by hosts | bytes written by the controller |")?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for (mode, results, first) in [("colocated", colocated, first_colocated), ("gather", gather, first_gather)] {
        let save = median(results.iter().map(|r| r.save_seconds).collect());
        let restore = median(results.iter().map(|r| r.restore_seconds).collect());
        let host_bytes: Vec<String> = first.host_bytes_written.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "| {mode} | {save:.3} | {restore:.3} | {:.2} | {} | {} | {} | {} |",
            first.total_array_bytes as f64 / save / 1e9,
            first.save_controller_array_bytes,
            first.restore_controller_array_bytes,
            host_bytes.join(" / "),
            first.controller_bytes_written,
        )?;
    }
    let save_ratio = median(gather.iter().map(|r| r.save_seconds).collect())
        / median(colocated.iter().map(|r| r.save_seconds).collect());
    let restore_ratio = median(gather.iter().map(|r| r.restore_seconds).collect())
        / median(colocated.iter().map(|r| r.restore_seconds).collect());
    writeln!(out, "\n| target | result | met |")?;
    writeln!(out, "|---|---|---|")?;
    writeln!(
        out,
        "| colocated save faster than gather on {CLUSTER_HOSTS} hosts | gather / colocated save time = {save_ratio:.2}x | {} |",
        if save_ratio > 1.0 { "met" } else { "not met" }
    )?;
    writeln!(
        out,
        "| colocated save and restore move 0 array bytes through the controller | {} and {} bytes | {} |",
        first_colocated.save_controller_array_bytes,
        first_colocated.restore_controller_array_bytes,
        if first_colocated.save_controller_array_bytes == 0 && first_colocated.restore_controller_array_bytes == 0 {
            "met"
        } else {
            "not met"
        }
    )?;
    writeln!(out, "\nRestore: gather / colocated time = {restore_ratio:.2}x.")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_other_sections() {
        let existing = merge("# B", "", &[(Section::Orbax, "old orbax".into()), (Section::S3, "old s3".into())]);
        let merged = merge("# B", &existing, &[(Section::S3, "new s3".into())]);
        assert!(merged.contains("old orbax"));
        assert!(merged.contains("new s3"));
        assert!(!merged.contains("old s3"));
    }

    #[test]
    fn merge_orders_sections() {
        let merged = merge("# B", "", &[(Section::Cluster, "c".into()), (Section::Orbax, "o".into())]);
        let orbax = merged.find("section: orbax").unwrap_or(usize::MAX);
        let cluster = merged.find("section: cluster").unwrap_or(0);
        assert!(orbax < cluster);
    }

    #[test]
    fn median_of_even_count() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
