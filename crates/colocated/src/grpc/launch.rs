//! Starting `ckpt-worker` processes on loopback and making sure they stop.
//!
//! Every child gets a pipe as its standard input and runs with
//! `--exit-on-stdin-eof`, so it shuts down when its parent exits, however
//! the parent dies (even by SIGKILL, because the kernel closes the pipe).
//! [`ChildProcess`] also kills its process when dropped, so a test or task
//! that fails or panics leaves nothing running.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use tracing::{info, warn};

use crate::grpc::{error::GrpcError, spmd::SpmdConfig};

/// The first line a worker prints on standard output, followed by its address.
pub const LISTENING_PREFIX: &str = "listening on ";
/// The line SPMD process 0 prints when its coordinator listens, followed by the address.
pub const COORDINATOR_PREFIX: &str = "coordinator listening on ";
/// The line an SPMD process prints when it starts writing its shards.
pub const WRITING_LINE: &str = "writing shards";
/// The line the SPMD primary prints when it pauses before commit.
pub const PAUSED_LINE: &str = "paused before commit";
/// The line an SPMD process prints at the end of a successful run, followed by its report as JSON.
pub const REPORT_PREFIX: &str = "report ";
/// The line an SPMD process prints when it fails, followed by the error.
pub const FAILED_PREFIX: &str = "failed ";

/// A child process whose standard output is read line by line, killed when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl ChildProcess {
    /// Starts `command` with piped standard input and output. `name` (such
    /// as `worker 2`) appears in errors.
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> Result<ChildProcess, GrpcError> {
        let name = name.into();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|err| GrpcError::Process {
                process: name.clone(),
                reason: format!("could not start {:?}: {err}", command.get_program()),
            })?;
        let stdin = child.stdin.take();
        let (sender, lines) = unbounded();
        if let Some(stdout) = child.stdout.take() {
            let reader = thread::Builder::new()
                .name(format!("ckpt-stdout-{}", child.id()))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if sender.send(line).is_err() {
                            break;
                        }
                    }
                });
            if let Err(err) = reader {
                let _ = child.kill();
                let _ = child.wait();
                return Err(GrpcError::Io {
                    operation: format!("start the thread that reads the output of {name}"),
                    source: err,
                });
            }
        }
        Ok(ChildProcess {
            name,
            child,
            stdin,
            lines,
        })
    }

    /// Returns the name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the operating system's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for an output line that starts with `prefix` and returns the
    /// rest of it. Earlier lines are skipped, except that a line starting
    /// with [`FAILED_PREFIX`] fails the wait with its message.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, GrpcError> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                    if let Some(message) = line.strip_prefix(FAILED_PREFIX) {
                        return Err(self.error(format!("failed: {message}")));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.error(format!(
                        "printed no line starting with {prefix:?} within {:.1} s",
                        timeout.as_secs_f64()
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(Duration::from_secs(5)).ok();
                    return Err(self.error(format!(
                        "closed its output ({}) before printing a line starting with {prefix:?}",
                        describe(status)
                    )));
                }
            }
        }
    }

    /// Closes the child's standard input, which makes a worker started with
    /// `--exit-on-stdin-eof` shut down gracefully.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) -> Result<(), GrpcError> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        self.child
            .kill()
            .and_then(|()| self.child.wait().map(|_| ()))
            .map_err(|err| self.error(format!("could not be killed: {err}")))
    }

    /// Returns whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit and returns its status;
    /// kills it if it is still running then, and returns an error.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, GrpcError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    self.kill()?;
                    return Err(self.error(format!(
                        "did not exit within {:.1} s and was killed",
                        timeout.as_secs_f64()
                    )));
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(err) => return Err(self.error(format!("could not be waited for: {err}"))),
            }
        }
    }

    fn error(&self, reason: String) -> GrpcError {
        GrpcError::Process {
            process: self.name.clone(),
            reason,
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!("it exited with {status}"),
        None => "it is still running".into(),
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Err(err) = self.kill() {
            warn!(error = %err, "could not stop a child process");
        }
    }
}

/// Options of [`WorkerCluster`] and [`spawn_spmd`]: the binary, its logs and its start timeout.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LaunchOptions {
    /// The `ckpt-worker` binary.
    pub binary: PathBuf,
    /// Directory for one log file per process; `None` lets the children
    /// write to this process's standard error.
    pub log_dir: Option<PathBuf>,
    /// The children's `RUST_LOG` filter; `None` passes this process's on.
    pub log_filter: Option<String>,
    /// Whether workers accept fault injection.
    pub fault_injection: bool,
    /// How long a process may take to report that it listens.
    pub ready_timeout: Duration,
    /// Environment variables set in every child on top of this process's,
    /// such as a cloud store's endpoint and credentials (`AWS_ENDPOINT`,
    /// `AWS_ACCESS_KEY_ID`), which object_store reads when a worker opens
    /// a store URL.
    pub env: Vec<(String, String)>,
}

impl LaunchOptions {
    /// Options for `binary`, logging to standard error, without fault
    /// injection, and 30 s to start.
    pub fn new(binary: impl Into<PathBuf>) -> LaunchOptions {
        LaunchOptions {
            binary: binary.into(),
            log_dir: None,
            log_filter: None,
            fault_injection: false,
            ready_timeout: Duration::from_secs(30),
            env: Vec::new(),
        }
    }

    /// Sets the environment variable `key` to `value` in every child.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> LaunchOptions {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes each process's log to a file in `dir`.
    pub fn with_log_dir(mut self, dir: impl Into<PathBuf>) -> LaunchOptions {
        self.log_dir = Some(dir.into());
        self
    }

    /// Sets the children's `RUST_LOG` filter.
    pub fn with_log_filter(mut self, filter: impl Into<String>) -> LaunchOptions {
        self.log_filter = Some(filter.into());
        self
    }

    /// Sets whether workers accept fault injection.
    pub fn with_fault_injection(mut self, enabled: bool) -> LaunchOptions {
        self.fault_injection = enabled;
        self
    }

    fn command(&self, log_name: &str) -> Result<Command, GrpcError> {
        let mut command = Command::new(&self.binary);
        command.arg("--exit-on-stdin-eof");
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        if let Some(filter) = &self.log_filter {
            command.env("RUST_LOG", filter);
        }
        if let Some(dir) = &self.log_dir {
            let path = dir.join(format!("{log_name}.log"));
            let file = std::fs::create_dir_all(dir)
                .and_then(|()| File::create(&path))
                .map_err(|source| GrpcError::Io {
                    operation: format!("create the log file {}", path.display()),
                    source,
                })?;
            command.stderr(file);
        }
        Ok(command)
    }
}

/// Returns the loopback address of host `host`: 127.0.0.1 for host 0, 127.0.0.2
/// for host 1, and so on, with port 0 so the worker picks a free port.
pub fn loopback_address(host: usize) -> Result<String, GrpcError> {
    let last = u8::try_from(host + 1)
        .ok()
        .filter(|&last| last < 255)
        .ok_or_else(|| GrpcError::Process {
            process: format!("worker {host}"),
            reason: "has no loopback address: hosts 0..254 use 127.0.0.1..127.0.0.254".into(),
        })?;
    Ok(format!("127.0.0.{last}:0"))
}

/// One `ckpt-worker` process per host, each on its own loopback address.
///
/// Dropping the cluster kills every worker still running.
#[derive(Debug)]
pub struct WorkerCluster {
    options: LaunchOptions,
    workers: Vec<Option<ChildProcess>>,
    addresses: Vec<String>,
}

impl WorkerCluster {
    /// Starts `hosts` workers and waits until each listens.
    pub fn start(hosts: usize, options: &LaunchOptions) -> Result<WorkerCluster, GrpcError> {
        let mut cluster = WorkerCluster {
            options: options.clone(),
            workers: Vec::with_capacity(hosts),
            addresses: Vec::with_capacity(hosts),
        };
        for host in 0..hosts {
            let (worker, address) = cluster.spawn(host, &loopback_address(host)?)?;
            cluster.workers.push(Some(worker));
            cluster.addresses.push(address);
        }
        info!(hosts, "workers started");
        Ok(cluster)
    }

    fn spawn(&self, host: usize, listen: &str) -> Result<(ChildProcess, String), GrpcError> {
        let mut command = self.options.command(&format!("worker-{host}"))?;
        command.args(["--listen", listen, "--host", &host.to_string()]);
        if self.options.fault_injection {
            command.arg("--fault-injection");
        }
        let mut worker = ChildProcess::spawn(format!("worker {host}"), &mut command)?;
        let address = worker.wait_for_line(LISTENING_PREFIX, self.options.ready_timeout)?;
        Ok((worker, address))
    }

    /// Returns the workers' `ip:port` addresses, by host.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Returns whether the cluster has no workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Returns the process id of a running worker.
    pub fn pid(&self, host: usize) -> Option<u32> {
        self.workers.get(host)?.as_ref().map(ChildProcess::id)
    }

    /// Kills worker `host` with SIGKILL, as a crashed machine would stop.
    pub fn kill(&mut self, host: usize) -> Result<(), GrpcError> {
        if let Some(mut worker) = self.workers.get_mut(host).and_then(Option::take) {
            worker.kill()?;
            info!(host, "worker killed");
        }
        Ok(())
    }

    /// Starts worker `host` again on its old address, after [`kill`](Self::kill).
    pub fn restart(&mut self, host: usize) -> Result<(), GrpcError> {
        self.kill(host)?;
        let Some(address) = self.addresses.get(host).cloned() else {
            return Err(GrpcError::Process {
                process: format!("worker {host}"),
                reason: format!("does not exist: the cluster has {} workers", self.len()),
            });
        };
        let (worker, _) = self.spawn(host, &address)?;
        self.workers[host] = Some(worker);
        info!(host, %address, "worker restarted");
        Ok(())
    }

    /// Number of worker processes still running.
    pub fn running(&mut self) -> usize {
        let mut running = 0;
        for worker in self.workers.iter_mut().flatten() {
            if worker.is_running() {
                running += 1;
            }
        }
        running
    }

    /// Stops every worker gracefully by closing its standard input, waits
    /// up to `timeout` for each, and kills those still running.
    pub fn stop(mut self, timeout: Duration) -> Result<(), GrpcError> {
        for worker in self.workers.iter_mut().flatten() {
            worker.close_stdin();
        }
        let mut first_error = None;
        for worker in self.workers.iter_mut().flatten() {
            if let Err(err) = worker.wait(timeout) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts one `ckpt-worker spmd` process per config, process 0 first so
/// the others get its coordinator's address, and returns them by index.
///
/// `configs[i]` must be process `i`'s. Process 0 listens on its
/// `coordinator` address, and the others' are replaced by the address it reports.
pub fn spawn_spmd(
    mut configs: Vec<SpmdConfig>,
    options: &LaunchOptions,
) -> Result<Vec<ChildProcess>, GrpcError> {
    let mut processes = Vec::with_capacity(configs.len());
    let mut coordinator = None;
    for (index, config) in configs.iter_mut().enumerate() {
        if config.process_index != index {
            return Err(GrpcError::InvalidConfig {
                reason: format!("config {index} is for process {}", config.process_index),
            });
        }
        if let Some(address) = &coordinator {
            config.coordinator = String::clone(address);
        }
        let json = serde_json::to_string(config).map_err(|err| GrpcError::InvalidConfig {
            reason: format!("could not encode config {index} as JSON: {err}"),
        })?;
        let mut command = options.command(&format!("spmd-{index}"))?;
        command.args(["spmd", "--config", &json]);
        let mut process = ChildProcess::spawn(format!("spmd process {index}"), &mut command)?;
        if index == 0 {
            coordinator = Some(process.wait_for_line(COORDINATOR_PREFIX, options.ready_timeout)?);
        }
        processes.push(process);
    }
    Ok(processes)
}

/// Waits for an SPMD process to finish and returns its report, or its error message.
pub fn wait_spmd_report(
    process: &mut ChildProcess,
    timeout: Duration,
) -> Result<Result<crate::SpmdReport, String>, GrpcError> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = match process.lines.recv_timeout(remaining) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(process.error(format!(
                    "did not finish within {:.1} s",
                    timeout.as_secs_f64()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = process.wait(Duration::from_secs(5)).ok();
                return Ok(Err(format!("exited without a report ({})", describe(status))));
            }
        };
        if let Some(json) = line.strip_prefix(REPORT_PREFIX) {
            return serde_json::from_str(json).map(Ok).map_err(|err| {
                process.error(format!("printed a report that is not valid JSON: {err}"))
            });
        }
        if let Some(message) = line.strip_prefix(FAILED_PREFIX) {
            return Ok(Err(message.to_owned()));
        }
    }
}
