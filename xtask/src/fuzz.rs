//! `cargo xtask fuzz`: builds the fuzz targets in `fuzz/` with cargo-fuzz,
//! runs each for a bounded time, and fails with the path of every input
//! that crashed a target.
//!
//! cargo-fuzz builds with `-Z` flags (AddressSanitizer and libFuzzer's
//! coverage instrumentation) that rustc accepts only on nightly. The project
//! builds on one stable toolchain, so the build and run commands set
//! `RUSTC_BOOTSTRAP=1`, which makes stable rustc and cargo accept them.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::SystemTime,
};

use anyhow::{bail, ensure, Context, Result};

/// Every fuzz target in `fuzz/Cargo.toml`. [`run`] fails when the two lists differ.
pub(crate) const TARGETS: &[&str] = &[
    "zarr_metadata",
    "zarr_chunk",
    "zarr3_metadata",
    "zarr3_chunk",
    "tree_metadata",
    "sharding",
    "checkpoint_metadata",
    "ocdbt_varint",
    "ocdbt_envelope",
    "ocdbt_manifest",
    "ocdbt_data_file_table",
    "ocdbt_version_tree_node",
    "ocdbt_btree_node",
    "ocdbt_reader",
];

/// The cargo-fuzz release installed when `cargo fuzz` is missing, pinned so
/// that every machine runs the same tool.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// libFuzzer options for every run. An input that runs longer than
/// `-timeout` seconds counts as a hang. A single allocation over
/// `-malloc_limit_mb` or a process over `-rss_limit_mb` counts as a huge
/// allocation. The malloc limit sits above the 256 MiB that an OCDBT
/// envelope may decode to, because a `Vec` growing to that size reserves
/// up to twice as much.
const LIBFUZZER_LIMITS: &[&str] = &[
    "-timeout=10",
    "-malloc_limit_mb=1024",
    "-rss_limit_mb=2048",
    "-print_final_stats=1",
];

/// Lines of a failed run's log printed from the first error line on.
const ERROR_LINES: usize = 12;
/// Lines of a failed run's log printed from its end: the crash input and
/// libFuzzer's final statistics.
const TAIL_LINES: usize = 30;

/// Installs cargo-fuzz if missing, builds every target, then runs each one
/// for `seconds_per_target` seconds on its seeds and saved corpus.
///
/// Seeds are read from `fuzz/seeds/<target>/`. New inputs that reach new
/// code go to `fuzz/corpus/<target>/`, and inputs that crash, hang or
/// allocate too much go to `fuzz/artifacts/<target>/`. libFuzzer's output
/// goes to `fuzz/target/logs/<target>.log`, and one summary line per target
/// to stdout. Every target runs even after one crashes, and the error lists
/// each crash input.
pub(crate) fn run(root: &Path, seconds_per_target: u64) -> Result<()> {
    ensure!(
        seconds_per_target > 0,
        "the time per fuzz target is 0 seconds; pass --seconds 1 or more"
    );
    let fuzz_dir = root.join("fuzz");
    install_cargo_fuzz()?;
    check_target_list(&fuzz_dir)?;

    println!("fuzz: building {} targets", TARGETS.len());
    let status = cargo_fuzz(&fuzz_dir)
        .arg("build")
        .status()
        .context("failed to start `cargo fuzz build`")?;
    ensure!(status.success(), "`cargo fuzz build` failed with {status}");

    let mut crashes = Vec::new();
    for target in TARGETS {
        crashes.extend(run_target(&fuzz_dir, target, seconds_per_target)?);
    }
    if crashes.is_empty() {
        println!(
            "fuzz: {} targets ran for {seconds_per_target} s each without a crash",
            TARGETS.len()
        );
        return Ok(());
    }
    for (target, input) in &crashes {
        eprintln!(
            "fuzz: {target} crashed on {}; reproduce it from the repository root with `RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {}`",
            input.display(),
            input.display()
        );
    }
    bail!(
        "{} fuzz target run(s) crashed; see the inputs listed above",
        crashes.len()
    )
}

/// Runs `cargo install cargo-fuzz` unless `cargo fuzz` already works.
fn install_cargo_fuzz() -> Result<()> {
    let installed = Command::new(cargo())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if installed {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    let status = Command::new(cargo())
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .status()
        .context("failed to start `cargo install cargo-fuzz`")?;
    ensure!(
        status.success(),
        "`cargo install cargo-fuzz` failed with {status}"
    );
    Ok(())
}

/// Checks that [`TARGETS`] names exactly the targets in `fuzz/Cargo.toml`.
fn check_target_list(fuzz_dir: &Path) -> Result<()> {
    let output = cargo_fuzz(fuzz_dir)
        .arg("list")
        .output()
        .context("failed to start `cargo fuzz list`")?;
    ensure!(
        output.status.success(),
        "`cargo fuzz list` failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: BTreeSet<&str> = std::str::from_utf8(&output.stdout)
        .context("`cargo fuzz list` printed text that is not UTF-8")?
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let known: BTreeSet<&str> = TARGETS.iter().copied().collect();
    let unlisted: Vec<_> = listed.difference(&known).collect();
    let missing: Vec<_> = known.difference(&listed).collect();
    ensure!(
        unlisted.is_empty() && missing.is_empty(),
        "fuzz targets in fuzz/Cargo.toml and TARGETS in xtask/src/fuzz.rs differ: \
         {unlisted:?} are missing from TARGETS and {missing:?} from fuzz/Cargo.toml"
    );
    Ok(())
}

/// Runs one target and returns the inputs it saved as crashes, hangs or
/// huge allocations during this run.
fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<Vec<(String, PathBuf)>> {
    let seeds = fuzz_dir.join("seeds").join(target);
    ensure!(
        seeds.is_dir(),
        "seed directory {} is missing; every fuzz target needs seed inputs",
        seeds.display()
    );
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus)
        .with_context(|| format!("failed to create {}", corpus.display()))?;
    let logs = fuzz_dir.join("target").join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("failed to create {}", logs.display()))?;
    let log_path = logs.join(format!("{target}.log"));

    println!("fuzz: running {target} for {seconds} s");
    let started = SystemTime::now();
    let mut command = cargo_fuzz(fuzz_dir);
    command
        .args(["run", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_LIMITS);
    let status = run_logged(command, &log_path)?;
    let output = fs::read_to_string(&log_path)
        .with_context(|| format!("failed to read {}", log_path.display()))?;

    // libFuzzer names a saved input by its SHA-1, so an input found again
    // overwrites the old file. New inputs are found by modification time.
    let saved = files_modified_since(&fuzz_dir.join("artifacts").join(target), started)?;
    if saved.is_empty() && status.success() {
        println!("fuzz: {target}: {}", summarize(&output));
        return Ok(Vec::new());
    }

    eprintln!(
        "fuzz: {target} failed with {status}; excerpt of {}:",
        log_path.display()
    );
    for line in failure_excerpt(&output) {
        eprintln!("    {line}");
    }
    ensure!(
        !saved.is_empty(),
        "`cargo fuzz run {target}` failed with {status} and saved no input; see {}",
        log_path.display()
    );
    Ok(saved
        .into_iter()
        .map(|input| (target.to_owned(), input))
        .collect())
}

/// Runs `command` with its stdout and stderr written to the file at `log_path`.
fn run_logged(mut command: Command, log_path: &Path) -> Result<ExitStatus> {
    let log = File::create(log_path)
        .with_context(|| format!("failed to create {}", log_path.display()))?;
    let log_for_stderr = log
        .try_clone()
        .with_context(|| format!("failed to open {} twice", log_path.display()))?;
    command
        .stdout(log)
        .stderr(log_for_stderr)
        .status()
        .with_context(|| format!("failed to start {command:?}"))
}

/// Returns the lines of a failed run's output that explain it: those from
/// the first panic or sanitizer error on, and the last lines.
fn failure_excerpt(output: &str) -> Vec<&str> {
    let lines: Vec<&str> = output.lines().collect();
    let tail_start = lines.len().saturating_sub(TAIL_LINES);
    let first_error = lines
        .iter()
        .position(|line| line.contains("panicked at") || line.contains("ERROR:"));

    let mut excerpt = Vec::new();
    if let Some(error_start) = first_error.filter(|&start| start < tail_start) {
        let error_end = (error_start + ERROR_LINES).min(tail_start);
        excerpt.extend_from_slice(&lines[error_start..error_end]);
        if error_end < tail_start {
            excerpt.push("...");
        }
    }
    excerpt.extend_from_slice(&lines[tail_start..]);
    excerpt
}

/// Returns libFuzzer's last status line (runs, coverage, corpus size, memory)
/// and its closing count of runs, or a note that it printed neither.
fn summarize(output: &str) -> String {
    let status = output.lines().rev().find(|line| line.contains(" cov: "));
    let done = output.lines().rev().find(|line| line.starts_with("Done "));
    match (status, done) {
        (Some(status), Some(done)) => format!("{}; {done}", status.trim()),
        (Some(line), None) | (None, Some(line)) => line.trim().to_owned(),
        (None, None) => "libFuzzer printed no status line".to_owned(),
    }
}

/// Returns the files in `dir` modified at or after `since`, or none when `dir` is absent.
fn files_modified_since(dir: &Path, since: SystemTime) -> Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        let modified = entry.metadata().and_then(|metadata| metadata.modified());
        if modified.is_ok_and(|modified| modified >= since) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Returns a `cargo fuzz` command for the fuzz project in `fuzz_dir`.
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut command = Command::new(cargo());
    command
        .arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(fuzz_dir.parent().unwrap_or(fuzz_dir));
    command
}

/// Returns the path of the cargo that runs this task, so that cargo-fuzz uses the same toolchain.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarize_status_and_done() {
        let output =
            "#2 INITED cov: 5 corp: 1/1b\n#9 DONE cov: 7 corp: 2/3b\nDone 9 runs in 1 second(s)\n";
        assert_eq!(
            summarize(output),
            "#9 DONE cov: 7 corp: 2/3b; Done 9 runs in 1 second(s)"
        );
    }

    #[test]
    fn summarize_without_status() {
        assert_eq!(summarize("compiling\n"), "libFuzzer printed no status line");
    }

    #[test]
    fn excerpt_keeps_panic_and_tail() {
        let mut lines = vec!["noise"; 100];
        lines[10] = "thread '<unnamed>' panicked at src/lib.rs:1:1:";
        lines[99] = "Test unit written to crash-1";
        let output = lines.join("\n");
        let excerpt = failure_excerpt(&output);
        assert_eq!(excerpt[0], lines[10]);
        assert_eq!(excerpt[ERROR_LINES], "...");
        assert_eq!(excerpt.last(), Some(&"Test unit written to crash-1"));
        assert_eq!(excerpt.len(), ERROR_LINES + 1 + TAIL_LINES);
    }

    #[test]
    fn excerpt_error_inside_tail() {
        let mut lines = vec!["noise"; 40];
        lines[35] = "==1== ERROR: libFuzzer: out-of-memory";
        let output = lines.join("\n");
        let excerpt = failure_excerpt(&output);
        assert_eq!(excerpt.len(), TAIL_LINES);
        assert!(excerpt.contains(&lines[35]));
    }

    #[test]
    fn excerpt_short_output() {
        let excerpt = failure_excerpt("one\ntwo");
        assert_eq!(excerpt, ["one", "two"]);
    }
}
