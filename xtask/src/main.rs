//! Project tasks for ckpt, run as `cargo xtask <task>`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod bench_async;
mod bench_phase;
mod bench_sections;
mod cluster;
mod demo;
mod fuzz;
mod interop;
mod lint;
mod manager_interop;
mod orbax;
mod s3;
mod records;
mod restore_interop;
mod test;
mod venv;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks for ckpt")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Time ckpt against Python Orbax and the machine in release mode and write docs/BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Run a scenario on worker processes over gRPC on loopback and print its metrics as JSON.
    Cluster(cluster::ClusterArgs),
    /// Save and restore a model-like tree on a simulated 4-host cluster, colocated and gathered.
    Demo(demo::DemoArgs),
    /// Regenerate testdata/orbax-generated with real Python Orbax (installs a venv under target/).
    OrbaxFixtures,
    /// Run every fuzz target for a bounded time (installs cargo-fuzz if missing).
    Fuzz {
        /// Seconds to run each target.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Measure 20 background saves of 256 MiB: time `save` blocks and peak RSS per save.
    BenchAsync,
    /// Measure save and restore into S3 on a loopback moto server against plain object_store.
    BenchS3 {
        /// Bytes of array data; accepts a plain number of bytes.
        #[arg(long, default_value_t = 256 << 20)]
        size: u64,
    },
    /// Check ckpt against real Python Orbax in both directions (installs a venv under target/).
    Interop,
    /// Run every test: installs the Python dependencies, runs cargo test, then the interop checks.
    Test,
    /// Check the crate dependency edges and that no file reads outside the repository.
    Lint,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Bench(args) => bench::run(&root, &args),
        Task::Cluster(args) => cluster::run(&root, &args),
        Task::Demo(args) => demo::run(&root, &args),
        Task::Fuzz { seconds } => fuzz::run(&root, seconds),
        Task::BenchAsync => bench_async::run(&root),
        Task::BenchS3 { size } => {
            println!("{}", s3::bench_s3(&root, size)?.to_markdown(&bench::today()));
            Ok(())
        }
        Task::Interop => interop::run(&root),
        Task::Lint => lint::run(&root),
        Task::OrbaxFixtures => interop::regenerate_fixtures(&root),
        Task::Test => test::run(&root),
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
