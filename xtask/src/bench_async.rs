//! The background-save benchmark of `cargo xtask bench`: consecutive
//! background saves of one large sharded array through a
//! `CheckpointManager`, with the peak resident memory of each save and the
//! time `save` blocks against a plain memory copy of the same bytes.
//!
//! Memory comes from `/proc/self/status` (Linux only): `VmHWM` is the peak
//! resident set size, reset before each save by writing `5` to
//! `/proc/self/clear_refs`, and `VmRSS` the resident size after it.

use std::{
    fmt::Write as _,
    fs,
    hint::black_box,
    num::NonZeroUsize,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use ckpt::{
    colocated::{ArraySpec, Controller, Generator, InProcessRuntime},
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::PyTree,
    storage::open_store,
    CheckpointManager, CheckpointManagerOptions, Composite, DType, Leaf, StandardSave,
};

/// Columns of the saved float32 array; its rows follow from the size.
const COLUMNS: u64 = 1024;

/// Sizes of one benchmark run.
#[derive(Clone, Debug)]
pub(crate) struct AsyncBenchOptions {
    /// Consecutive saves.
    pub(crate) saves: usize,
    /// Bytes of the saved float32 array, a multiple of 4 KiB.
    pub(crate) bytes: u64,
    /// Largest allowed spread of the peak resident size of saves 3 and on
    /// around that of save 2, as a fraction of it.
    pub(crate) max_peak_spread: f64,
}

impl Default for AsyncBenchOptions {
    fn default() -> AsyncBenchOptions {
        AsyncBenchOptions {
            saves: 20,
            bytes: 256 << 20,
            max_peak_spread: 0.10,
        }
    }
}

/// Measurements of one save.
#[derive(Clone, Debug)]
pub(crate) struct SaveSample {
    /// Time `save` took to return: the snapshot into host memory.
    pub(crate) blocked: Duration,
    /// Time from the call to the end of the commit and of old-step deletion.
    pub(crate) total: Duration,
    /// Peak resident set size during the save, in bytes (`VmHWM`).
    pub(crate) peak_rss: u64,
    /// Resident set size after the save, in bytes (`VmRSS`).
    pub(crate) rss_after: u64,
}

/// The result of [`bench_async_saves`].
#[derive(Clone, Debug)]
pub(crate) struct AsyncBenchReport {
    pub(crate) options: AsyncBenchOptions,
    pub(crate) samples: Vec<SaveSample>,
    /// Median time of a single-threaded copy of the array's bytes into a new buffer.
    pub(crate) memcpy: Duration,
    /// Resident set size before the first save, with the live array in memory.
    pub(crate) rss_before: u64,
}

impl AsyncBenchReport {
    /// Largest relative distance of the peak RSS of saves 3 and on from that of save 2.
    pub(crate) fn peak_spread(&self) -> f64 {
        let Some(second) = self.samples.get(1).map(|sample| sample.peak_rss as f64) else {
            return 0.0;
        };
        self.samples
            .iter()
            .skip(2)
            .map(|sample| (sample.peak_rss as f64 - second).abs() / second)
            .fold(0.0, f64::max)
    }

    /// Median time `save` blocked.
    pub(crate) fn median_blocked(&self) -> Duration {
        median(self.samples.iter().map(|sample| sample.blocked).collect())
    }

    /// Fails when the peak RSS is not flat within the allowed spread.
    pub(crate) fn check_flat(&self) -> Result<()> {
        let spread = self.peak_spread();
        if spread > self.options.max_peak_spread {
            bail!(
                "peak RSS of saves 3..{} differs from save 2 by up to {:.1}%, more than the allowed {:.1}%",
                self.samples.len(),
                spread * 100.0,
                self.options.max_peak_spread * 100.0
            );
        }
        Ok(())
    }

    /// Formats the results as a Markdown section: the setup, a summary and one row per save.
    pub(crate) fn to_markdown(&self) -> String {
        let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} consecutive background saves of a {:.0} MiB float32 array sharded over 4 simulated devices on 2 hosts, \
             colocated, zstd level 1, through a CheckpointManager keeping 2 steps on local disk.\n",
            self.samples.len(),
            mib(self.options.bytes)
        );
        let _ = writeln!(out, "- RSS before the first save (live array resident): {:.0} MiB", mib(self.rss_before));
        let _ = writeln!(
            out,
            "- `save` blocked for a median {:.1} ms; a single-threaded copy of the same bytes into a new buffer took a median {:.1} ms",
            ms(self.median_blocked()),
            ms(self.memcpy)
        );
        let _ = writeln!(
            out,
            "- peak RSS of saves 3..{} is within {:.1}% of save 2 (limit {:.0}%)\n",
            self.samples.len(),
            self.peak_spread() * 100.0,
            self.options.max_peak_spread * 100.0
        );
        let _ = writeln!(out, "| save | save blocked (ms) | save to commit (ms) | peak RSS (MiB) | RSS after (MiB) |");
        let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: |");
        for (index, sample) in self.samples.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.0} | {:.0} | {:.0} |",
                index + 1,
                ms(sample.blocked),
                ms(sample.total),
                mib(sample.peak_rss),
                mib(sample.rss_after)
            );
        }
        out
    }
}

/// Runs the benchmark with the default sizes in `root/target/bench-async`
/// and prints its section of `docs/BENCHMARKS.md`, targets included.
pub(crate) fn run(root: &Path) -> Result<()> {
    let options = AsyncBenchOptions::default();
    let report = bench_async_saves(&root.join("target/bench-async"), &options)?;
    let profile = if cfg!(debug_assertions) { "the dev profile (optimized, with debug assertions)" } else { "the release profile" };
    println!("## Background (async) saves\n");
    println!(
        "Written by `cargo xtask bench` (section `async`, also `cargo xtask bench-async`) on {}, built with {profile}. \
         Both numbers of each comparison come from this one run.\n",
        crate::bench::today()
    );
    println!("{}", report.to_markdown());
    let blocked = report.median_blocked().as_secs_f64() * 1000.0;
    let copy = report.memcpy.as_secs_f64() * 1000.0;
    let ratio = blocked / copy;
    let met = |ok: bool| if ok { "met" } else { "not met" };
    println!("| target | result | met |");
    println!("|---|---|---|");
    println!(
        "| time until `save` returns: at most 1.5x a plain memory copy | {blocked:.1} / {copy:.1} ms = {ratio:.2}x | {} |",
        met(ratio <= 1.5)
    );
    println!(
        "| {} consecutive async saves: peak RSS flat within {:.0}% after the second | within {:.1}% | {} |",
        report.samples.len(),
        options.max_peak_spread * 100.0,
        report.peak_spread() * 100.0,
        met(report.check_flat().is_ok())
    );
    Ok(())
}

/// Saves one array `options.saves` times in the background under `work`,
/// measuring each save, and measures a plain memory copy of its bytes.
pub(crate) fn bench_async_saves(work: &Path, options: &AsyncBenchOptions) -> Result<AsyncBenchReport> {
    let rows = options.bytes / 4 / COLUMNS;
    if rows == 0 || rows * 4 * COLUMNS != options.bytes {
        bail!("the array size {} is not a positive multiple of {} bytes", options.bytes, 4 * COLUMNS);
    }
    if work.exists() {
        fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(work)?;

    let memcpy = time_memcpy(options.bytes)?;

    let topology = Topology::uniform(2, 2)?;
    let controller = Arc::new(Controller::new(Arc::new(InProcessRuntime::new(topology.clone())?)));
    let mesh = Mesh::new(vec![4], vec!["x"], topology.device_ids())?;
    let spec = ArraySpec {
        shape: vec![rows, COLUMNS],
        dtype: DType::Float32,
        sharding: Sharding::named(mesh, PartitionSpec::new([Some("x"), None]))?,
    };
    let array = controller.put_generated(spec, Generator::new(1))?;

    let root = open_store(&work.display().to_string())?;
    let manager_options = CheckpointManagerOptions::default().with_max_to_keep(NonZeroUsize::new(2));
    let manager = CheckpointManager::new(root, Arc::clone(&controller), manager_options)?;
    let rss_before = read_status_kib("VmRSS")? * 1024;

    let mut samples = Vec::with_capacity(options.saves);
    for step in 1..=options.saves as u64 {
        let tree = PyTree::dict([("params", PyTree::leaf(Leaf::Array(array.clone())))]);
        let items = Composite::new().with_item("state", StandardSave::new(tree).with_colocated(true));
        reset_peak_rss()?;
        let start = Instant::now();
        if !manager.save(step, items)? {
            bail!("the manager skipped step {step}");
        }
        let blocked = start.elapsed();
        manager.wait_until_finished()?;
        let total = start.elapsed();
        samples.push(SaveSample {
            blocked,
            total,
            peak_rss: read_status_kib("VmHWM")? * 1024,
            rss_after: read_status_kib("VmRSS")? * 1024,
        });
    }
    manager.close()?;

    Ok(AsyncBenchReport {
        options: options.clone(),
        samples,
        memcpy,
        rss_before,
    })
}

/// Returns the median of five single-threaded copies of `bytes` bytes into
/// a newly allocated buffer, which pays the same page faults a snapshot does.
fn time_memcpy(bytes: u64) -> Result<Duration> {
    let len = usize::try_from(bytes).context("the array size does not fit in memory")?;
    let source: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut copy = Vec::with_capacity(len);
        copy.extend_from_slice(&source);
        black_box(&copy);
        times.push(start.elapsed());
    }
    Ok(median(times))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Resets `VmHWM` to the current resident size.
fn reset_peak_rss() -> Result<()> {
    fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS through /proc/self/clear_refs (Linux 4.0 or later)")
}

/// Reads a `kB` field of `/proc/self/status`, such as `VmHWM`.
fn read_status_kib(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_status_kib(&status, field).with_context(|| format!("no {field} line in /proc/self/status"))
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_parsed() {
        let status = "Name:\txtask\nVmHWM:\t  123456 kB\nVmRSS:\t   42 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(42));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn spread_measured_from_second_save() {
        let sample = |peak_rss| SaveSample {
            blocked: Duration::ZERO,
            total: Duration::ZERO,
            peak_rss,
            rss_after: 0,
        };
        let report = AsyncBenchReport {
            options: AsyncBenchOptions::default(),
            samples: vec![sample(50), sample(100), sample(105), sample(92)],
            memcpy: Duration::ZERO,
            rss_before: 0,
        };
        assert!((report.peak_spread() - 0.08).abs() < 1e-9);
        assert!(report.check_flat().is_ok());
    }
}
