//! `cargo xtask bench`: ckpt against Python Orbax and the machine's own
//! limits in one run, written to `docs/BENCHMARKS.md`.
//!
//! The `cargo xtask` alias builds the dev profile, so this task first runs
//! `cargo build --release -p xtask` and then runs every measured phase as
//! `target/release/xtask bench --phase NAME` in a fresh child process. Each
//! child reports its own peak RSS, so peaks do not carry over between
//! phases. Orbax runs from the venv in `target/orbax-venv` through
//! `python/bench_orbax.py`, also one process per phase.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

use crate::{
    bench_sections::{self, Section},
    bench_phase::{run_phase, MachineResult, PhaseResult},
    venv,
};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Approximate array bytes of the model-like tree.
    #[arg(long, default_value_t = 1 << 30)]
    size: u64,
    /// Timed runs per phase, after one warm-up run (default 5, or 3 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Use 3 timed runs per phase instead of 5.
    #[arg(long)]
    quick: bool,
    /// Directory for the checkpoints (default: target/bench).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run one phase in this process and print its JSON result (used by the
    /// release-built child processes).
    #[arg(long, hide = true)]
    phase: Option<String>,
    /// Run only these sections and keep the others of docs/BENCHMARKS.md as
    /// they are (repeatable; default: every section).
    #[arg(long, value_enum)]
    only: Vec<Section>,
    /// Approximate array bytes of the worker-process cluster runs; accepts K, M and G.
    #[arg(long, default_value = "512M", value_parser = crate::demo::parse_size)]
    cluster_size: u64,
    /// Array bytes of the S3 runs; accepts K, M and G.
    #[arg(long, default_value = "256M", value_parser = crate::demo::parse_size)]
    s3_size: u64,
}

/// Staging budget of a synchronous save that the save-memory target allows.
const SAVE_BUDGET: u64 = 256 << 20;

pub(crate) fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    let runs = args.runs.unwrap_or(if args.quick { 3 } else { 5 });
    if runs < 3 {
        bail!("--runs {runs} is too few: use at least 3 so min, median and max differ");
    }
    let dir = args.dir.clone().unwrap_or_else(|| root.join("target/bench"));
    if let Some(phase) = &args.phase {
        return run_phase(phase, &dir, args.size, runs);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let binary = build_release(root)?;
    let python = venv::ensure_venv(root)?;
    let child = Child {
        binary,
        python,
        root: root.to_path_buf(),
        dir: dir.clone(),
        size: args.size,
        runs,
    };

    let sections: Vec<Section> = if args.only.is_empty() { Section::ALL.to_vec() } else { args.only.clone() };
    let date = today();
    let mut updated = Vec::new();
    for section in sections {
        let body = match section {
            Section::Orbax => orbax_section(&child, args, runs)?,
            Section::Async => bench_sections::child_stdout(&child.binary, &["bench-async"])?,
            Section::S3 => {
                let size = args.s3_size.to_string();
                bench_sections::child_stdout(&child.binary, &["bench-s3", "--size", &size])?
            }
            Section::Cluster => bench_sections::cluster_section(&child.binary, &dir, args.cluster_size, runs, &date)?,
        };
        updated.push((section, body));
    }

    let path = root.join("docs/BENCHMARKS.md");
    let existing = fs::read_to_string(&path).unwrap_or_default();
    let header = format!(
        "# Benchmarks\n\nMachine: {}, {} CPUs (nproc), {} memory. Each section names the command and the date of its run; \
         `cargo xtask bench --only SECTION` reruns one section.",
        cpu_model(),
        cpu_count(),
        memory_total()
    );
    let report = bench_sections::merge(&header, &existing, &updated);
    fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("{report}");
    println!("bench: wrote {}", path.display());
    Ok(())
}

/// Runs the Orbax comparison phases and returns their section.
fn orbax_section(child: &Child, args: &BenchArgs, runs: usize) -> Result<String> {
    let orbax_save = child.orbax("save", false)?;
    let orbax_save_raw = child.orbax("save", true)?;
    let orbax_restore = child.orbax("restore", false)?;
    let orbax_restore_raw = child.orbax("restore", true)?;
    let results = Results {
        read_orbax: child.ckpt("read-orbax-default")?,
        read_orbax_raw: child.ckpt("read-orbax-raw")?,
        save: child.ckpt("save-default")?,
        save_raw: child.ckpt("save-raw")?,
        restore: child.ckpt("restore-default")?,
        restore_raw: child.ckpt("restore-raw")?,
        restore_8x1: child.ckpt("restore-8x1")?,
        machine: child.ckpt("machine")?,
        orbax_save,
        orbax_save_raw,
        orbax_restore,
        orbax_restore_raw,
    };
    render(&results, &command_line(args), runs, args.quick)
}

/// Builds the xtask binary with the release profile and returns its path.
fn build_release(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p xtask");
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--quiet", "--release", "-p", "xtask"])
        .status()
        .context("failed to start cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release -p xtask failed with {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("xtask"))
}

/// Paths and sizes shared by every child process.
struct Child {
    binary: PathBuf,
    python: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    size: u64,
    runs: usize,
}

impl Child {
    fn ckpt<T: DeserializeOwned>(&self, phase: &str) -> Result<T> {
        eprintln!("bench: ckpt {phase}");
        let mut command = Command::new(&self.binary);
        command
            .args(["bench", "--phase", phase, "--dir"])
            .arg(&self.dir)
            .args(["--size", &self.size.to_string(), "--runs", &self.runs.to_string()]);
        run_json(&mut command)
    }

    fn orbax(&self, mode: &str, raw: bool) -> Result<PhaseResult> {
        eprintln!("bench: orbax {mode}{}", if raw { " (use_compression=False)" } else { "" });
        let mut command = venv::python_command(&self.python);
        command
            .arg(self.root.join("python/bench_orbax.py"))
            .arg(mode)
            .arg(&self.dir)
            .args(["--size", &self.size.to_string(), "--runs", &self.runs.to_string()]);
        if raw {
            command.arg("--no-compression");
        }
        run_json(&mut command)
    }
}

/// Runs a child that prints its JSON result as the last line of stdout.
fn run_json<T: DeserializeOwned>(command: &mut Command) -> Result<T> {
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed with {} (its stderr is above)", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("invalid JSON result from {command:?}: {stdout}"))
}

struct Results {
    orbax_save: PhaseResult,
    orbax_save_raw: PhaseResult,
    orbax_restore: PhaseResult,
    orbax_restore_raw: PhaseResult,
    read_orbax: PhaseResult,
    read_orbax_raw: PhaseResult,
    save: PhaseResult,
    save_raw: PhaseResult,
    restore: PhaseResult,
    restore_raw: PhaseResult,
    restore_8x1: PhaseResult,
    machine: MachineResult,
}

/// Minimum, median and maximum of a set of durations in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    fn of(seconds: &[f64]) -> Stats {
        let mut sorted = seconds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Stats {
                min: f64::NAN,
                median: f64::NAN,
                max: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Stats {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        }
    }
}

/// Throughput in GB/s (10^9 bytes per second) at the median time.
fn rate(bytes: u64, stats: Stats) -> f64 {
    bytes as f64 / stats.median / 1e9
}

/// One row of a ratio table: a measurement, its reference and its target.
struct Row<'a> {
    name: &'a str,
    bytes: u64,
    seconds: &'a [f64],
    reference_name: &'a str,
    reference_bytes: u64,
    reference_seconds: &'a [f64],
    /// Minimum ratio of throughputs, and how TARGETS.md words it.
    target: Option<(f64, &'a str)>,
}

fn ratio_table(out: &mut String, rows: &[Row<'_>]) -> Result<()> {
    writeln!(out, "| operation | min s | median s | max s | GB/s | reference | reference GB/s | ratio | target | met |")?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
    for row in rows {
        let stats = Stats::of(row.seconds);
        let reference = Stats::of(row.reference_seconds);
        let measured = rate(row.bytes, stats);
        let reference_rate = rate(row.reference_bytes, reference);
        let ratio = measured / reference_rate;
        let (target, met) = match row.target {
            Some((minimum, text)) => (text.to_owned(), if ratio >= minimum { "met" } else { "not met" }),
            None => ("none".to_owned(), "-"),
        };
        // A row without a reference is itself a reference: no ratio to show.
        let (reference_text, ratio_text) = if row.reference_name == "-" {
            ("-".to_owned(), "-".to_owned())
        } else {
            (format!("{reference_rate:.2}"), format!("{ratio:.2}x"))
        };
        writeln!(
            out,
            "| {} | {:.3} | {:.3} | {:.3} | {measured:.2} | {} | {reference_text} | {ratio_text} | {target} | {met} |",
            row.name, stats.min, stats.median, stats.max, row.reference_name
        )?;
    }
    Ok(())
}

fn render(results: &Results, command: &str, runs: usize, quick: bool) -> Result<String> {
    let r = results;
    let m = &r.machine;
    let mut out = String::new();
    writeln!(out, "## ckpt against Python Orbax 0.12.8\n")?;
    writeln!(
        out,
        "Written by `{command}` (section `orbax`) on {}. Every number in this section comes from that one run.\n",
        today()
    )?;
    writeln!(
        out,
        "Method: every phase runs in a fresh process (ckpt phases built with `cargo build --release`), \
         does one warm-up run and then {runs} timed runs{}. Tables give min, median and max seconds, and \
         GB/s (10^9 bytes per second) at the median. Ratios compare median throughputs. The tree is \
         {:.1} MiB of arrays: an f32 embedding, layers of f32 and bf16 weights and replicated f32 norms, \
         an int step and a float learning rate. It lives on a 4x2 mesh of 8 devices, which are 4 \
         in-process hosts x 2 devices for ckpt and 8 simulated CPU devices for JAX. Values are normal with standard deviation \
         0.02, written by Orbax; ckpt saves exactly the values it restored from Orbax's checkpoint. \
         ckpt saves and restores colocated and fsyncs every file, as its local store does by default.\n",
        if quick { " (`--quick`: 3 timed runs instead of 5)" } else { "" },
        r.save.bytes as f64 / (1u64 << 20) as f64
    )?;

    ratio_table(
        &mut out,
        &[
            Row { name: "Orbax save, default format", bytes: r.orbax_save.bytes, seconds: &r.orbax_save.seconds, reference_name: "-", reference_bytes: r.orbax_save.bytes, reference_seconds: &r.orbax_save.seconds, target: None },
            Row { name: "Orbax save, use_compression=False", bytes: r.orbax_save_raw.bytes, seconds: &r.orbax_save_raw.seconds, reference_name: "-", reference_bytes: r.orbax_save_raw.bytes, reference_seconds: &r.orbax_save_raw.seconds, target: None },
            Row { name: "Orbax restore, default format", bytes: r.orbax_restore.bytes, seconds: &r.orbax_restore.seconds, reference_name: "-", reference_bytes: r.orbax_restore.bytes, reference_seconds: &r.orbax_restore.seconds, target: None },
            Row { name: "Orbax restore, compression off", bytes: r.orbax_restore_raw.bytes, seconds: &r.orbax_restore_raw.seconds, reference_name: "-", reference_bytes: r.orbax_restore_raw.bytes, reference_seconds: &r.orbax_restore_raw.seconds, target: None },
            Row { name: "ckpt save, default format", bytes: r.save.bytes, seconds: &r.save.seconds, reference_name: "Orbax save, default", reference_bytes: r.orbax_save.bytes, reference_seconds: &r.orbax_save.seconds, target: Some((4.0, ">= 4x Orbax")) },
            Row { name: "ckpt save, compression off", bytes: r.save_raw.bytes, seconds: &r.save_raw.seconds, reference_name: "Orbax save, compression off", reference_bytes: r.orbax_save_raw.bytes, reference_seconds: &r.orbax_save_raw.seconds, target: None },
            Row { name: "ckpt restore, default format", bytes: r.restore.bytes, seconds: &r.restore.seconds, reference_name: "Orbax restore, default", reference_bytes: r.orbax_restore.bytes, reference_seconds: &r.orbax_restore.seconds, target: Some((3.0, ">= 3x Orbax")) },
            Row { name: "ckpt restore of Orbax's default checkpoint", bytes: r.read_orbax.bytes, seconds: &r.read_orbax.seconds, reference_name: "Orbax restore, default", reference_bytes: r.orbax_restore.bytes, reference_seconds: &r.orbax_restore.seconds, target: Some((3.0, ">= 3x Orbax (restore target)")) },
            Row { name: "ckpt restore, compression off", bytes: r.restore_raw.bytes, seconds: &r.restore_raw.seconds, reference_name: "Orbax restore, compression off", reference_bytes: r.orbax_restore_raw.bytes, reference_seconds: &r.orbax_restore_raw.seconds, target: None },
            Row { name: "ckpt restore of Orbax's uncompressed checkpoint", bytes: r.read_orbax_raw.bytes, seconds: &r.read_orbax_raw.seconds, reference_name: "Orbax restore, compression off", reference_bytes: r.orbax_restore_raw.bytes, reference_seconds: &r.orbax_restore_raw.seconds, target: None },
        ],
    )?;

    writeln!(out, "\n## ckpt against the machine\n")?;
    writeln!(
        out,
        "The write reference is a Rust loop of 64 MiB `write` calls of non-zero bytes into a new file \
         (page cache, no fsync), not `dd`. The read references read that file whole into a newly \
         allocated buffer (`std::fs::read`) and into one buffer touched before; the copy is \
         `copy_from_slice` between two touched buffers. All use the `--size` bytes, {:.1} MiB.\n",
        m.bytes as f64 / (1u64 << 20) as f64
    )?;
    ratio_table(
        &mut out,
        &[
            Row { name: "write loop into the page cache", bytes: m.bytes, seconds: &m.write, reference_name: "-", reference_bytes: m.bytes, reference_seconds: &m.write, target: None },
            Row { name: "read into fresh buffers", bytes: m.bytes, seconds: &m.read_fresh, reference_name: "-", reference_bytes: m.bytes, reference_seconds: &m.read_fresh, target: None },
            Row { name: "read into reused buffers", bytes: m.bytes, seconds: &m.read_reused, reference_name: "-", reference_bytes: m.bytes, reference_seconds: &m.read_reused, target: None },
            Row { name: "memory copy", bytes: m.bytes, seconds: &m.memcpy, reference_name: "-", reference_bytes: m.bytes, reference_seconds: &m.memcpy, target: None },
            Row { name: "ckpt save, compression off", bytes: r.save_raw.bytes, seconds: &r.save_raw.seconds, reference_name: "write loop", reference_bytes: m.bytes, reference_seconds: &m.write, target: Some((0.7, ">= 0.7x page-cache write")) },
            Row { name: "ckpt restore, compression off", bytes: r.restore_raw.bytes, seconds: &r.restore_raw.seconds, reference_name: "read into fresh buffers", reference_bytes: m.bytes, reference_seconds: &m.read_fresh, target: Some((0.8, ">= 0.8x read into fresh buffers")) },
        ],
    )?;

    writeln!(out, "\n## Restore onto another mesh\n")?;
    writeln!(out, "ckpt's default-format checkpoint from the 4x2 mesh, restored onto an 8x1 mesh of the same 8 devices.\n")?;
    ratio_table(
        &mut out,
        &[Row { name: "ckpt restore onto 8x1", bytes: r.restore_8x1.bytes, seconds: &r.restore_8x1.seconds, reference_name: "ckpt restore onto 4x2", reference_bytes: r.restore.bytes, reference_seconds: &r.restore.seconds, target: Some((0.7, ">= 0.7x same-sharding restore")) }],
    )?;

    render_restore_summary(&mut out, r)?;
    render_memory(&mut out, r)?;

    Ok(out)
}

/// Writes restore throughput and peak memory side by side for the
/// same-sharding and the resharding restore of ckpt's default checkpoint.
fn render_restore_summary(out: &mut String, r: &Results) -> Result<()> {
    writeln!(out, "\n## Restore summary\n")?;
    writeln!(
        out,
        "Both restore ckpt's default-format checkpoint colocated, each in its own process. GB/s counts \
         array bytes; peak extra is as in the next section, and the last column divides it by the \
         bytes the restored shards hold on the devices.\n"
    )?;
    writeln!(out, "| restore | GB/s | device bytes, MiB | peak extra, MiB | peak extra / device bytes |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    for (name, phase) in [("same sharding (4x2 onto 4x2)", &r.restore), ("resharding (4x2 onto 8x1)", &r.restore_8x1)] {
        let extra = phase.peak_rss.saturating_sub(phase.rss_before);
        writeln!(
            out,
            "| {name} | {:.2} | {:.0} | {:.0} | {:.2}x |",
            rate(phase.bytes, Stats::of(&phase.seconds)),
            mib(phase.device_bytes),
            mib(extra),
            extra as f64 / phase.device_bytes.max(1) as f64
        )?;
    }
    Ok(())
}

fn render_memory(out: &mut String, r: &Results) -> Result<()> {
    writeln!(out, "\n## Peak memory\n")?;
    writeln!(
        out,
        "Peak RSS is `VmHWM` of the process doing the work, reset through `/proc/self/clear_refs` just \
         before its warm-up run, minus its RSS at that moment. For a save the tree is already live at \
         that moment, so the difference is memory beyond the live arrays; that RSS also contains what \
         the untimed restore of Orbax's checkpoint, which loads the values, left in the allocator. For a \
         restore it includes the restored arrays themselves. Device bytes are what the restored shards \
         hold on the 8 simulated devices: a shard replicated over 2 devices counts twice, as it would on \
         real accelerators. The restore limit is 1.1x the device bytes + 64 MiB.\n"
    )?;
    writeln!(
        out,
        "| phase | array bytes, MiB | device bytes, MiB | RSS before, MiB | peak RSS, MiB | peak extra, MiB | limit, MiB | met |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let restore_limit = |phase: &PhaseResult| phase.device_bytes as f64 * 1.1 + (64u64 << 20) as f64;
    let rows: [(&str, &PhaseResult, Option<f64>); 11] = [
        ("ckpt save, default format", &r.save, Some(SAVE_BUDGET as f64)),
        ("ckpt save, compression off", &r.save_raw, Some(SAVE_BUDGET as f64)),
        ("ckpt restore, default format", &r.restore, Some(restore_limit(&r.restore))),
        ("ckpt restore, compression off", &r.restore_raw, Some(restore_limit(&r.restore_raw))),
        ("ckpt restore onto 8x1", &r.restore_8x1, Some(restore_limit(&r.restore_8x1))),
        ("ckpt restore of Orbax's default checkpoint", &r.read_orbax, Some(restore_limit(&r.read_orbax))),
        ("ckpt restore of Orbax's uncompressed checkpoint", &r.read_orbax_raw, Some(restore_limit(&r.read_orbax_raw))),
        ("Orbax save, default format", &r.orbax_save, None),
        ("Orbax save, use_compression=False", &r.orbax_save_raw, None),
        ("Orbax restore, default format", &r.orbax_restore, None),
        ("Orbax restore, compression off", &r.orbax_restore_raw, None),
    ];
    for (name, phase, limit) in rows {
        let extra = phase.peak_rss.saturating_sub(phase.rss_before);
        let (limit_text, met) = match limit {
            Some(limit) => (
                format!("{:.0}", limit / (1u64 << 20) as f64),
                if (extra as f64) <= limit { "met" } else { "not met" },
            ),
            None => ("none".to_owned(), "-"),
        };
        let device_text = if phase.device_bytes == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", mib(phase.device_bytes))
        };
        writeln!(
            out,
            "| {name} | {:.1} | {device_text} | {:.0} | {:.0} | {:.0} | {limit_text} | {met} |",
            mib(phase.bytes),
            mib(phase.rss_before),
            mib(phase.peak_rss),
            mib(extra)
        )?;
    }
    Ok(())
}

fn command_line(args: &BenchArgs) -> String {
    let mut command = format!("cargo xtask bench --size {}", args.size);
    if let Some(runs) = args.runs {
        command.push_str(&format!(" --runs {runs}"));
    }
    if args.quick {
        command.push_str(" --quick");
    }
    command
}

/// Today's date in UTC as YYYY-MM-DD.
pub(crate) fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .filter(|date| !date.is_empty())
        .unwrap_or_else(|| "an unknown date".to_owned())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn memory_total() -> String {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            let kilobytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kilobytes / (1u64 << 20) as f64))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_odd_count() {
        let stats = Stats::of(&[3.0, 1.0, 2.0]);
        assert_eq!(stats, Stats { min: 1.0, median: 2.0, max: 3.0 });
    }

    #[test]
    fn stats_even_count() {
        let stats = Stats::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(stats.median, 2.5);
    }

    #[test]
    fn ratio_row_not_met() {
        let mut out = String::new();
        let row = Row {
            name: "x",
            bytes: 1_000_000_000,
            seconds: &[2.0],
            reference_name: "y",
            reference_bytes: 1_000_000_000,
            reference_seconds: &[1.0],
            target: Some((0.7, ">= 0.7x")),
        };
        ratio_table(&mut out, &[row]).expect("table");
        assert!(out.contains("| 0.50x | >= 0.7x | not met |"), "{out}");
    }
}
