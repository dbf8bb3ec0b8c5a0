//! `ckpt-worker`: one host of a multi-host cluster, as a process.
//!
//! ```text
//! ckpt-worker --listen 127.0.0.2:0 --host 1 [--fault-injection] [--exit-on-stdin-eof]
//! ckpt-worker spmd --config JSON [--exit-on-stdin-eof]
//! ```
//!
//! The first form serves a controller over gRPC (`GrpcRuntime`) and prints
//! `listening on ADDRESS` once it accepts connections. The second runs one
//! process of an SPMD job (`SpmdConfig` as JSON) and prints progress lines
//! and, at the end, `report JSON` or `failed MESSAGE`. Logs go to standard
//! error, filtered by `RUST_LOG` (default `warn`).

use std::{
    io::{Read, Write},
    net::SocketAddr,
    process::ExitCode,
};

use ckpt_colocated::{
    run_spmd_process, SpmdConfig, SpmdEvent, WorkerOptions, WorkerServer, COORDINATOR_PREFIX,
    FAILED_PREFIX, LISTENING_PREFIX, PAUSED_LINE, REPORT_PREFIX, WRITING_LINE,
};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage:
  ckpt-worker --listen IP:PORT --host INDEX [--fault-injection] [--exit-on-stdin-eof]
  ckpt-worker spmd --config JSON [--exit-on-stdin-eof]

  --listen IP:PORT      address to serve on; port 0 picks a free port
  --host INDEX          this worker's host index in the controller's topology
  --fault-injection     accept requests that slow down saves (for tests)
  --exit-on-stdin-eof   shut down when standard input closes, such as when the parent exits
  --config JSON         the SPMD process's configuration (SpmdConfig as JSON)";

/// The mode the command line selects, with its settings.
enum Mode {
    Help,
    Serve {
        options: WorkerOptions,
        exit_on_stdin_eof: bool,
    },
    Spmd {
        config: Box<SpmdConfig>,
        exit_on_stdin_eof: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Ok(Mode::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Mode::Serve {
            options,
            exit_on_stdin_eof,
        }) => serve(options, exit_on_stdin_eof),
        Ok(Mode::Spmd {
            config,
            exit_on_stdin_eof,
        }) => spmd(&config, exit_on_stdin_eof),
        Err(message) => {
            eprintln!("ckpt-worker: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ckpt-worker: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Mode, String> {
    let mut listen = None;
    let mut host = None;
    let mut config = None;
    let mut spmd = false;
    let mut fault_injection = false;
    let mut exit_on_stdin_eof = false;

    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Mode::Help),
            "spmd" => spmd = true,
            "--listen" => listen = Some(value("--listen")?),
            "--host" => host = Some(value("--host")?),
            "--config" => config = Some(value("--config")?),
            "--fault-injection" => fault_injection = true,
            "--exit-on-stdin-eof" => exit_on_stdin_eof = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }

    if spmd {
        let config = config.ok_or("spmd needs --config JSON")?;
        let config: SpmdConfig = serde_json::from_str(&config)
            .map_err(|err| format!("invalid --config: {err}"))?;
        return Ok(Mode::Spmd {
            config: Box::new(config),
            exit_on_stdin_eof,
        });
    }
    let listen = listen.ok_or("--listen IP:PORT is required")?;
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| format!("invalid --listen {listen:?}: expected IP:PORT, such as 127.0.0.2:0"))?;
    let host = host.ok_or("--host INDEX is required")?;
    let host: usize = host
        .parse()
        .map_err(|_| format!("invalid --host {host:?}: expected a host index such as 0"))?;
    let mut options = WorkerOptions::new(host, listen);
    options.allow_fault_injection = fault_injection;
    options.stop_on_signals = true;
    Ok(Mode::Serve {
        options,
        exit_on_stdin_eof,
    })
}

fn serve(options: WorkerOptions, exit_on_stdin_eof: bool) -> Result<(), String> {
    let server = WorkerServer::bind(options).map_err(|err| error_chain(&err))?;
    print_line(&format!("{LISTENING_PREFIX}{}", server.local_addr()));
    if exit_on_stdin_eof {
        let shutdown = server.shutdown_handle();
        on_stdin_eof(move || {
            tracing::info!("standard input closed, shutting down");
            shutdown.shutdown();
        });
    }
    server.serve().map_err(|err| error_chain(&err))
}

fn spmd(config: &SpmdConfig, exit_on_stdin_eof: bool) -> Result<(), String> {
    if exit_on_stdin_eof {
        on_stdin_eof(|| {
            tracing::warn!("standard input closed, so the parent has exited; stopping");
            std::process::exit(1);
        });
    }
    let result = run_spmd_process(config, |event| match event {
        SpmdEvent::CoordinatorListening(address) => {
            print_line(&format!("{COORDINATOR_PREFIX}{address}"))
        }
        SpmdEvent::WritingShards => print_line(WRITING_LINE),
        SpmdEvent::PausedBeforeCommit => print_line(PAUSED_LINE),
        _ => {}
    });
    match result {
        Ok(report) => {
            let json = serde_json::to_string(&report).map_err(|err| err.to_string())?;
            print_line(&format!("{REPORT_PREFIX}{json}"));
            Ok(())
        }
        Err(err) => {
            let message = error_chain(&err);
            print_line(&format!("{FAILED_PREFIX}{message}"));
            Err(message)
        }
    }
}

/// Prints one line on standard output and flushes it, because the parent
/// process waits for it.
fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Runs `action` on a thread once standard input reaches its end.
fn on_stdin_eof(action: impl FnOnce() + Send + 'static) {
    let watcher = std::thread::Builder::new()
        .name("ckpt-stdin-watch".into())
        .spawn(move || {
            let mut buffer = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
            action();
        });
    if let Err(err) = watcher {
        tracing::warn!(error = %err, "could not watch standard input; the process will not stop when its parent exits");
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
