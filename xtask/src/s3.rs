//! S3 throughput benchmark: a colocated ckpt save and restore into a moto
//! server on loopback, against plain object_store puts and gets of the
//! same bytes in the same run.

use std::{
    fmt,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime},
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::PyTree,
    storage::{open_object_store, open_store_with, ArrayFormat, Compression, Store, StoreOptions},
    ColocatedArrayHandler, DType, Leaf, LeafType, PyTreeRestore, SaveArgs, StandardCheckpointer,
    StandardSave, TypeHandlerRegistry,
};
use object_store::{path::Path as ObjectPath, ObjectStore, PutPayload};

use crate::venv;

/// Number of simulated hosts, each writing its share of the bytes.
const HOSTS: usize = 4;

/// Maximum time for moto to start responding.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Timed runs of each measurement, after one warm-up run.
const RUNS: usize = 3;

/// Median times of ckpt and of plain object_store on the same bytes, in one run of the task.
#[derive(Debug)]
pub(crate) struct S3BenchReport {
    /// Array bytes saved and restored, and put and got by the baseline.
    pub(crate) bytes: u64,
    /// A colocated ckpt save in the default format (OCDBT, zstd), commit included.
    pub(crate) ckpt_save: Duration,
    /// A ckpt restore of the whole array from the default format.
    pub(crate) ckpt_restore: Duration,
    /// A colocated ckpt save with compression off, commit included.
    pub(crate) raw_save: Duration,
    /// A ckpt restore of the whole array with compression off.
    pub(crate) raw_restore: Duration,
    /// One object_store put per host, all concurrent.
    pub(crate) plain_put: Duration,
    /// One object_store get per host, all concurrent.
    pub(crate) plain_get: Duration,
}

impl fmt::Display for S3BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        let rate = |time: Duration| mib / time.as_secs_f64();
        let rows = [
            ("ckpt save, default format", self.ckpt_save),
            ("ckpt restore, default format", self.ckpt_restore),
            ("ckpt save, compression off", self.raw_save),
            ("ckpt restore, compression off", self.raw_restore),
            ("object_store put", self.plain_put),
            ("object_store get", self.plain_get),
        ];
        writeln!(f, "S3 on loopback moto, {mib:.0} MiB over {HOSTS} hosts, medians of {RUNS} runs:")?;
        for (name, time) in rows {
            writeln!(
                f,
                "  {name:<30} {:>8.2} s {:>8.1} MiB/s",
                time.as_secs_f64(),
                rate(time)
            )?;
        }
        Ok(())
    }
}

impl S3BenchReport {
    /// Formats the results as the S3 section of `docs/BENCHMARKS.md`, with
    /// the targets: ckpt at least 0.8x plain object_store each way.
    pub(crate) fn to_markdown(&self, date: &str) -> String {
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        let rate = |time: Duration| mib / time.as_secs_f64();
        let met = |ratio: f64| if ratio >= 0.8 { "met" } else { "not met" };
        let profile = if cfg!(debug_assertions) { "the dev profile" } else { "the release profile" };
        let mut out = format!(
            "## S3 on loopback\n\n\
             Written by `cargo xtask bench` (section `s3`, also `cargo xtask bench-s3 --size {}`) on {date}, built \
             with {profile}: a moto server on 127.0.0.1 started by the task. Each measurement runs once to warm up \
             and {RUNS} times timed, and the table gives medians. ckpt saves colocated from {HOSTS} simulated \
             hosts; the reference puts and gets the same bytes as one object per host with object_store, \
             concurrently. ckpt uploads each host's data file in 16 MiB multipart parts and reads it back \
             in 8 MiB range requests, 8 at a time. moto copies the whole object for every GET, a range \
             included (`FakeKey.value` in `moto/s3/models.py`), so here each range costs a read of the \
             whole file, where S3 reads only the requested range.\n\n```\n{self}```\n\n\
             | target | result | met |\n|---|---|---|\n",
            self.bytes,
        );
        let rows = [
            ("S3 save, default format: at least 0.8x a plain object_store put", self.ckpt_save, self.plain_put),
            ("S3 restore, default format: at least 0.8x a plain object_store get", self.ckpt_restore, self.plain_get),
            ("S3 save, compression off: at least 0.8x a plain object_store put", self.raw_save, self.plain_put),
            ("S3 restore, compression off: at least 0.8x a plain object_store get", self.raw_restore, self.plain_get),
        ];
        for (name, ckpt, plain) in rows {
            let ratio = rate(ckpt) / rate(plain);
            out.push_str(&format!(
                "| {name} | {:.1} / {:.1} MiB/s = {ratio:.2}x | {} |\n",
                rate(ckpt),
                rate(plain),
                met(ratio)
            ));
        }
        out
    }
}

/// Measures S3 save and restore throughput on a moto server that it starts
/// on 127.0.0.1 and stops before returning.
///
/// Saves a float32 array of `total_bytes` bytes (rounded down to a
/// multiple of 4 per host), split by rows over [`HOSTS`] simulated hosts
/// that each write their shard, then restores it. The baseline puts the
/// same bytes as one object per host with object_store, all at once, and
/// gets them back. moto comes from the venv that `ensure_venv` installs.
pub(crate) fn bench_s3(root: &Path, total_bytes: u64) -> Result<S3BenchReport> {
    let python = venv::ensure_venv(root).context("installing moto")?;
    let moto = python.with_file_name("moto_server");
    let server = MotoServer::start(&moto)?;
    let options = server.options();

    let per_host = usize::try_from(total_bytes / HOSTS as u64 / 4 * 4)?;
    if per_host == 0 {
        bail!("{total_bytes} bytes is too small to split over {HOSTS} hosts");
    }
    let data: Vec<u8> = (0..per_host * HOSTS)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4])
        .collect();
    let bytes = data.len() as u64;

    server.create_bucket("ckpt-bench")?;
    let mut ckpt = CkptBench::new(&options, &data, per_host)?;
    server.create_bucket("plain-bench")?;
    let mut plain = PlainBench::new(&options, &data, per_host)?;

    let mut times: [Vec<Duration>; 6] = Default::default();
    for run in 0..=RUNS {
        let (save, restore) = ckpt.run(ArrayFormat::default(), &format!("default_{run}"))?;
        let raw_format = ArrayFormat::default().with_compression(Compression::None);
        let (raw_save, raw_restore) = ckpt.run(raw_format, &format!("raw_{run}"))?;
        let (put, get) = plain.run(run)?;
        if run > 0 {
            for (list, time) in times.iter_mut().zip([save, restore, raw_save, raw_restore, put, get]) {
                list.push(time);
            }
        }
    }
    let [ckpt_save, ckpt_restore, raw_save, raw_restore, plain_put, plain_get] = times.map(median);
    Ok(S3BenchReport {
        bytes,
        ckpt_save,
        ckpt_restore,
        raw_save,
        raw_restore,
        plain_put,
        plain_get,
    })
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// A `[HOSTS, per_host / 4]` float32 array on an in-process runtime, saved
/// and restored with ckpt.
struct CkptBench<'a> {
    controller: Arc<Controller>,
    registry: TypeHandlerRegistry,
    tree: PyTree<Leaf>,
    parent: Store,
    data: &'a [u8],
}

impl<'a> CkptBench<'a> {
    fn new(options: &StoreOptions, data: &'a [u8], per_host: usize) -> Result<CkptBench<'a>> {
        let topology = Topology::uniform(HOSTS, 1)?;
        let runtime = InProcessRuntime::new(topology.clone())?;
        let controller = Arc::new(Controller::new(Arc::new(runtime)));
        let mut registry = TypeHandlerRegistry::with_defaults();
        registry.register(LeafType::Array, Arc::new(ColocatedArrayHandler), true)?;

        let mesh = Mesh::new(vec![HOSTS], ["x"], topology.device_ids())?;
        let sharding = Sharding::named(mesh, PartitionSpec::new([Some("x"), None]))?;
        let spec = ArraySpec {
            shape: vec![HOSTS as u64, (per_host / 4) as u64],
            dtype: DType::Float32,
            sharding,
        };
        let array = controller.put_global(spec, data)?;
        let tree = PyTree::dict([("w", PyTree::leaf(Leaf::Array(array)))]);
        let parent = open_store_with("s3://ckpt-bench/checkpoints", options)?;
        Ok(CkptBench {
            controller,
            registry,
            tree,
            parent,
            data,
        })
    }

    /// Saves the array as `name` in `format`, restores it, checks the
    /// values and drops the restored array. Returns both times.
    fn run(&mut self, format: ArrayFormat, name: &str) -> Result<(Duration, Duration)> {
        let checkpointer = StandardCheckpointer::new(Arc::clone(&self.controller))
            .with_registry(self.registry.clone())
            .with_format(format);
        let args = StandardSave::new(self.tree.clone()).with_save_args(PyTree::leaf(SaveArgs::colocated()));
        let started = Instant::now();
        checkpointer.save(&self.parent, name, args)?;
        let save = started.elapsed();

        let started = Instant::now();
        let restored = checkpointer.restore(&self.parent, name, PyTreeRestore::new())?;
        let restore = started.elapsed();

        let leaves = restored.flatten();
        let Some((_, Leaf::Array(array))) = leaves.first() else {
            bail!("the restored tree has no array leaf: {leaves:?}");
        };
        if self.controller.to_global_bytes(array)? != self.data {
            bail!("the array restored from {name} differs from the saved one");
        }
        self.controller.drop_arrays(&[array])?;
        Ok((save, restore))
    }
}

/// The baseline: one object per host, put and got with object_store.
struct PlainBench<'a> {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    data: &'a [u8],
    per_host: usize,
}

impl<'a> PlainBench<'a> {
    fn new(options: &StoreOptions, data: &'a [u8], per_host: usize) -> Result<PlainBench<'a>> {
        let (store, _) = open_object_store("s3://plain-bench", options)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(PlainBench {
            store,
            runtime,
            data,
            per_host,
        })
    }

    /// Puts the data as one object per host, all at once, under a prefix
    /// of its own for `run`, and gets the objects back. Returns both times.
    fn run(&mut self, run: usize) -> Result<(Duration, Duration)> {
        let paths: Vec<ObjectPath> = (0..HOSTS)
            .map(|host| ObjectPath::from(format!("run_{run}/host_{host}")))
            .collect();
        let per_host = self.per_host;

        let started = Instant::now();
        self.runtime.block_on(async {
            let mut puts = tokio::task::JoinSet::new();
            for (host, path) in paths.iter().enumerate() {
                let store = Arc::clone(&self.store);
                let path = path.clone();
                let payload = PutPayload::from(self.data[host * per_host..(host + 1) * per_host].to_vec());
                puts.spawn(async move { store.put(&path, payload).await });
            }
            while let Some(result) = puts.join_next().await {
                result??;
            }
            anyhow::Ok(())
        })?;
        let put = started.elapsed();

        let started = Instant::now();
        let parts = self.runtime.block_on(async {
            let mut gets = tokio::task::JoinSet::new();
            for (host, path) in paths.iter().enumerate() {
                let store = Arc::clone(&self.store);
                let path = path.clone();
                gets.spawn(async move { (host, get_bytes(store.as_ref(), &path).await) });
            }
            let mut parts = vec![Vec::new(); HOSTS];
            while let Some(joined) = gets.join_next().await {
                let (host, bytes) = joined?;
                parts[host] = bytes?;
            }
            anyhow::Ok(parts)
        })?;
        let get = started.elapsed();

        if parts.concat() != self.data {
            bail!("the objects read back differ from the ones written");
        }
        Ok((put, get))
    }
}

async fn get_bytes(store: &dyn ObjectStore, path: &ObjectPath) -> Result<Vec<u8>> {
    Ok(store.get(path).await?.bytes().await?.to_vec())
}

/// A moto server on 127.0.0.1, stopped when dropped.
pub(crate) struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts moto from the venv under `root/target`, installing the venv
    /// when it is missing.
    pub(crate) fn start_from_venv(root: &Path) -> Result<MotoServer> {
        let python = venv::ensure_venv(root).context("installing moto")?;
        MotoServer::start(&python.with_file_name("moto_server"))
    }

    fn start(moto: &PathBuf) -> Result<MotoServer> {
        if !moto.is_file() {
            bail!(
                "{} is missing: the venv from python/requirements.txt should contain it",
                moto.display()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start {}", moto.display()))?;
        let server = MotoServer { child, port };

        let started = Instant::now();
        while server.request("GET", "/").is_err() {
            if started.elapsed() > START_TIMEOUT {
                bail!("moto on port {port} did not respond within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Returns options that reach this server with dummy credentials.
    fn options(&self) -> StoreOptions {
        StoreOptions::default()
            .with("endpoint", format!("http://127.0.0.1:{}", self.port))
            .with("allow_http", "true")
            .with("region", "us-east-1")
            .with("access_key_id", "bench")
            .with("secret_access_key", "bench")
    }

    /// The server's URL, for `AWS_ENDPOINT` or the `endpoint` option.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Returns the environment variables that make object_store's S3
    /// builder reach this server with dummy credentials.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "cluster".into()),
            ("AWS_SECRET_ACCESS_KEY", "cluster".into()),
        ]
    }

    /// Returns the number of multipart uploads in `bucket` that were neither
    /// completed nor aborted.
    pub(crate) fn open_uploads(&self, bucket: &str) -> Result<usize> {
        let response = self.request("GET", &format!("/{bucket}?uploads"))?;
        if !response.starts_with("HTTP/1.1 200") {
            bail!("listing the multipart uploads of {bucket} failed: {response}");
        }
        Ok(response.matches("<Upload>").count())
    }

    pub(crate) fn create_bucket(&self, bucket: &str) -> Result<()> {
        let response = self.request("PUT", &format!("/{bucket}"))?;
        if !response.starts_with("HTTP/1.1 200") {
            bail!("creating bucket {bucket} failed: {response}");
        }
        Ok(())
    }

    /// Sends one request without a body and returns the whole response.
    fn request(&self, method: &str, path: &str) -> Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // The server may have exited already, so errors are of no use here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
