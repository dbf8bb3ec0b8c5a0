//! A moto S3 server on 127.0.0.1 for the tests of this process.
//!
//! The first call of [`server`] starts `moto_server` from the venv that
//! `cargo xtask test` installs (`target/orbax-venv/bin/moto_server`), or
//! from `PATH`, on a free port. It runs under a small shell that kills it
//! when the standard input closes, which happens when the test process
//! exits, however it exits. Tests share the server and each uses buckets
//! of its own. The ckpt facade's S3 tests include this file too.

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use ckpt_storage::StoreOptions;

/// Maximum time for moto to start responding.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server.
pub(crate) struct MotoServer {
    port: u16,
    /// Kept open so that the wrapper shell keeps moto running.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// Returns the server of this test process, starting it on first use.
///
/// Panics when no `moto_server` executable is found or it does not start,
/// because the S3 tests must fail rather than skip.
pub(crate) fn server() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn find_moto() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = workspace.join("target/orbax-venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "moto_server not found in {} or on PATH: run `cargo xtask test`, which installs \
             python/requirements.txt into that venv, or `pip install 'moto[server]'`",
            venv.display()
        )
    })
}

fn start() -> MotoServer {
    let moto = find_moto();
    let mut last_error = String::new();
    // The port is free when checked but another process may take it before
    // moto binds it, so a failed start tries another port.
    for _ in 0..3 {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ckpt-moto-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("failed to create the moto log file");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" & server=$!; read _; kill "$server"; wait "$server""#)
            .arg("moto-wrapper")
            .arg(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(
                log_file
                    .try_clone()
                    .expect("failed to share the moto log file"),
            )
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {}: {error}", moto.display()));
        let stdin = child.stdin.take().expect("stdin is piped");
        let server = MotoServer {
            port,
            _stdin: Mutex::new(stdin),
            _child: Mutex::new(child),
        };
        match server.wait_ready() {
            Ok(()) => return server,
            Err(error) => {
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                last_error = format!("{error}; moto's output in {}:\n{output}", log.display());
            }
        }
    }
    panic!("moto_server did not start: {last_error}");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind a free port");
    listener
        .local_addr()
        .expect("bound socket has an address")
        .port()
}

impl MotoServer {
    fn wait_ready(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            match self.request("GET", "/", b"") {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => return Err(format!("GET / answered {status}: {body}")),
                Err(_) if started.elapsed() < START_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => {
                    return Err(format!("no answer within {START_TIMEOUT:?}: {error}"));
                }
            }
        }
    }

    /// Returns the server's URL, such as `http://127.0.0.1:40123`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Store options that reach this server with dummy credentials.
    ///
    /// Explicit credentials also keep object_store from asking an instance
    /// metadata service for them.
    pub(crate) fn options(&self) -> StoreOptions {
        StoreOptions::default()
            .with("endpoint", self.endpoint())
            .with("allow_http", "true")
            .with("region", "us-east-1")
            .with("access_key_id", "testing")
            .with("secret_access_key", "testing")
    }

    /// Creates a bucket whose name starts with `prefix` and is unique in this process.
    pub(crate) fn create_bucket(&self, prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bucket = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let (status, body) = self
            .request("PUT", &format!("/{bucket}"), b"")
            .unwrap_or_else(|error| panic!("failed to create bucket {bucket}: {error}"));
        assert_eq!(status, 200, "creating bucket {bucket} failed: {body}");
        bucket
    }

    /// Returns the number of multipart uploads in `bucket` that are neither
    /// completed nor aborted, from S3's ListMultipartUploads.
    pub(crate) fn open_uploads(&self, bucket: &str) -> usize {
        let (status, body) = self
            .request("GET", &format!("/{bucket}?uploads"), b"")
            .unwrap_or_else(|error| panic!("failed to list uploads of {bucket}: {error}"));
        assert_eq!(status, 200, "listing uploads of {bucket} failed: {body}");
        body.matches("<Upload>").count()
    }

    /// Sends one HTTP/1.1 request and returns the status and body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}
