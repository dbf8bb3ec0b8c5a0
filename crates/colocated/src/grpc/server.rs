//! The worker: a gRPC server that owns one host's devices and carries out
//! the controller's requests with [`HostState`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::Duration,
};

use ckpt_device::{DeviceMemory, HostMemory, Topology};
use ckpt_storage::open_store;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{
    codec::Streaming,
    codegen::{http, Body as HttpBody, Service, StdError},
    server::{Grpc, NamedService},
    transport::{server::TcpIncoming, Server},
    Request, Response, Status,
};
use tracing::{debug, info, warn};

use crate::{
    grpc::{
        cancel::{cancellable_store, CancelToken},
        error::GrpcError,
        pieces::{clamp_piece_bytes, split_shard, ShardAssembler},
        service::{codec, unknown_method, worker_paths as paths, Method, RouteFuture, WORKER_SERVICE},
        wire::{
            format_from_wire, restore_item_from_wire, save_item_from_wire, spec_from_wire,
            CallReply, CallRequest, Empty, FaultsRequest, FetchRequest, HealthReply,
            OpenSessionRequest, PutKind, PutMessage, SessionRequest, ShardPiece, WireCall,
            WireReply, WireSaveReport, WireVerifyReport,
        },
    },
    protocol::{ArrayId, HostCall, HostReply, PutSource},
    ColocatedError, Generator, HostState,
};

/// Pieces a fetch stream buffers ahead of the network.
const PIECES_IN_FLIGHT: usize = 4;
/// HTTP/2 flow-control windows: the defaults of 64 KiB stall bulk transfers
/// even on loopback.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Options of a worker server.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The worker's host index in every topology it serves.
    pub host: usize,
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Whether the `InjectFaults` request, which slows down saves, is accepted.
    pub allow_fault_injection: bool,
    /// Whether SIGINT and SIGTERM stop the server as a shutdown request does.
    pub stop_on_signals: bool,
    /// How long a shutdown waits for requests in flight before it drops them.
    pub shutdown_grace: Duration,
}

impl WorkerOptions {
    /// Options for `host` listening on `listen`, with fault injection and
    /// signal handling off and 10 s of shutdown grace.
    pub fn new(host: usize, listen: SocketAddr) -> WorkerOptions {
        WorkerOptions {
            host,
            listen,
            allow_fault_injection: false,
            stop_on_signals: false,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Asks a running server to shut down gracefully. Cloning shares the request.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub(crate) fn new() -> ShutdownHandle {
        ShutdownHandle(Arc::new(watch::channel(false).0))
    }

    /// Requests the shutdown; calling it again does nothing.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once a shutdown is requested.
    pub(crate) async fn requested(&self) {
        let mut receiver = self.0.subscribe();
        // An error means the sender was dropped, which cannot happen while `self` owns it.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

/// A bound worker server, ready to [`serve`](WorkerServer::serve).
///
/// Binding and serving are separate so the caller can report the address,
/// which matters with port 0, before it blocks.
#[derive(Debug)]
pub struct WorkerServer {
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    worker: Arc<Worker>,
    options: WorkerOptions,
}

impl WorkerServer {
    /// Binds the listening socket and starts the server's async runtime.
    pub fn bind(options: WorkerOptions) -> Result<WorkerServer, GrpcError> {
        let listener =
            std::net::TcpListener::bind(options.listen).map_err(|source| GrpcError::Bind {
                address: options.listen.to_string(),
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| GrpcError::Io {
                operation: "make the listening socket non-blocking".into(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| GrpcError::Io {
            operation: "read the listening socket's address".into(),
            source,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("ckpt-worker-{}", options.host))
            .enable_all()
            .build()
            .map_err(|source| GrpcError::Io {
                operation: "start the worker's async runtime".into(),
                source,
            })?;
        let worker = Arc::new(Worker {
            host: options.host,
            address,
            memory: Arc::new(HostMemory),
            sessions: Mutex::new(HashMap::new()),
            stats: Arc::new(Stats::default()),
            save_delay_ms: AtomicU64::new(0),
            allow_fault_injection: options.allow_fault_injection,
            shutdown: ShutdownHandle::new(),
        });
        Ok(WorkerServer {
            runtime,
            listener,
            worker,
            options,
        })
    }

    /// Returns the address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.worker.address
    }

    /// Returns a handle that shuts the server down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.worker.shutdown.clone()
    }

    /// Serves requests until a shutdown is requested (by a handle, the
    /// `Shutdown` request, or a signal when enabled), then waits up to the
    /// shutdown grace for requests in flight.
    pub fn serve(self) -> Result<(), GrpcError> {
        let WorkerServer {
            runtime,
            listener,
            worker,
            options,
        } = self;
        let address = worker.address;
        let shutdown = worker.shutdown.clone();
        info!(host = worker.host, %address, "worker listening");

        let result = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| {
                GrpcError::Io {
                    operation: "register the listening socket".into(),
                    source,
                }
            })?;
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            if options.stop_on_signals {
                tokio::spawn(stop_on_signals(shutdown.clone()));
            }
            let service = WorkerService { worker };
            let server = Server::builder()
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .serve_with_incoming_shutdown(service, incoming, shutdown.requested());
            let grace_expired = async {
                shutdown.requested().await;
                tokio::time::sleep(options.shutdown_grace).await;
            };
            tokio::select! {
                served = server => served.map_err(|err| GrpcError::Serve {
                    address: address.to_string(),
                    reason: err.to_string(),
                }),
                () = grace_expired => {
                    warn!(%address, grace_seconds = options.shutdown_grace.as_secs_f64(), "requests still running after the shutdown grace; dropping them");
                    Ok(())
                }
            }
        });
        // Blocking work that ignored its cancellation is abandoned here.
        runtime.shutdown_timeout(Duration::from_secs(1));
        info!(%address, "worker stopped");
        result
    }
}

#[cfg(unix)]
async fn stop_on_signals(shutdown: ShutdownHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        warn!("could not install the SIGINT and SIGTERM handlers; stop the worker with a shutdown request");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => info!("SIGINT received, shutting down"),
        _ = terminate.recv() => info!("SIGTERM received, shutting down"),
    }
    shutdown.shutdown();
}

#[cfg(not(unix))]
async fn stop_on_signals(shutdown: ShutdownHandle) {
    if tokio::signal::ctrl_c().await.is_ok() {
        info!("Ctrl-C received, shutting down");
        shutdown.shutdown();
    }
}

/// Request counters, reported by the `Health` request.
#[derive(Debug, Default)]
struct Stats {
    in_flight: AtomicU64,
    saves_in_flight: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
}

/// Tracks one request: counts it while it runs, and when it is dropped
/// before [`finish`](CallGuard::finish), which happens when its caller goes
/// away or its deadline passes, cancels its token and counts it as cancelled.
struct CallGuard {
    stats: Arc<Stats>,
    token: CancelToken,
    is_save: bool,
    finished: bool,
    host: usize,
    operation: &'static str,
}

impl CallGuard {
    fn start(worker: &Worker, token: CancelToken, operation: &'static str, is_save: bool) -> CallGuard {
        worker.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        if is_save {
            worker.stats.saves_in_flight.fetch_add(1, Ordering::Relaxed);
        }
        CallGuard {
            stats: Arc::clone(&worker.stats),
            token,
            is_save,
            finished: false,
            host: worker.host,
            operation,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.is_save {
            self.stats.saves_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if self.finished {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.token.cancel();
        self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        warn!(host = self.host, operation = self.operation, "request cancelled: the deadline passed or the controller went away");
    }
}

type SharedHost = Arc<Mutex<HostState>>;

/// The state a worker's requests share.
#[derive(Debug)]
struct Worker {
    host: usize,
    address: SocketAddr,
    memory: Arc<dyn DeviceMemory>,
    /// Each controller session's arrays, by session id.
    sessions: Mutex<HashMap<u64, SharedHost>>,
    stats: Arc<Stats>,
    save_delay_ms: AtomicU64,
    allow_fault_injection: bool,
    shutdown: ShutdownHandle,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Worker {
    fn session(&self, session: u64) -> Result<SharedHost, Status> {
        lock(&self.sessions).get(&session).cloned().ok_or_else(|| {
            Status::failed_precondition(format!(
                "session {session:016x} is not open on host {}; the worker may have restarted since the controller connected",
                self.host
            ))
        })
    }

    fn health(&self) -> HealthReply {
        HealthReply {
            host: self.host as u64,
            pid: std::process::id(),
            address: self.address.to_string(),
            sessions: lock(&self.sessions).len() as u64,
            calls_in_flight: self.stats.in_flight.load(Ordering::Relaxed),
            saves_in_flight: self.stats.saves_in_flight.load(Ordering::Relaxed),
            calls_completed: self.stats.completed.load(Ordering::Relaxed),
            calls_cancelled: self.stats.cancelled.load(Ordering::Relaxed),
        }
    }

    fn open_session(&self, request: OpenSessionRequest) -> Result<Empty, Status> {
        let topology: Topology = serde_json::from_str(&request.topology_json)
            .map_err(|err| Status::invalid_argument(format!("invalid topology JSON: {err}")))?;
        if self.host >= topology.num_hosts() {
            return Err(Status::invalid_argument(format!(
                "this worker is host {} but the topology has {} hosts",
                self.host,
                topology.num_hosts()
            )));
        }
        let mut sessions = lock(&self.sessions);
        if sessions.contains_key(&request.session) {
            return Ok(Empty {});
        }
        let state = HostState::new(self.host, topology, Arc::clone(&self.memory));
        sessions.insert(request.session, Arc::new(Mutex::new(state)));
        info!(host = self.host, session = format!("{:016x}", request.session), "session opened");
        Ok(Empty {})
    }

    fn end_session(&self, request: SessionRequest) -> Empty {
        if lock(&self.sessions).remove(&request.session).is_some() {
            info!(host = self.host, session = format!("{:016x}", request.session), "session ended");
        }
        Empty {}
    }

    fn inject_faults(&self, request: FaultsRequest) -> Result<Empty, Status> {
        if !self.allow_fault_injection {
            return Err(Status::permission_denied(
                "fault injection is disabled on this worker; start it with --fault-injection",
            ));
        }
        self.save_delay_ms.store(request.save_delay_ms, Ordering::Relaxed);
        warn!(host = self.host, save_delay_ms = request.save_delay_ms, "fault injection: saves are delayed");
        Ok(Empty {})
    }

    async fn call(self: Arc<Self>, request: CallRequest) -> Result<CallReply, Status> {
        let state = self.session(request.session)?;
        let call = request
            .call
            .ok_or_else(|| Status::invalid_argument("the request names no operation"))?;
        let is_save = matches!(call, WireCall::SaveShards(_));
        let operation = wire_operation(&call);
        let token = CancelToken::default();
        let guard = CallGuard::start(&self, token.clone(), operation, is_save);
        let delay = if is_save {
            Duration::from_millis(self.save_delay_ms.load(Ordering::Relaxed))
        } else {
            Duration::ZERO
        };
        let host = self.host;

        let work = tokio::task::spawn_blocking(move || {
            if !delay.is_zero() && !token.sleep(delay) {
                return Err(Status::cancelled("cancelled during the injected save delay"));
            }
            let call = decode_call(call, &token)?;
            let result = lock(&state).handle(call);
            result.map_err(|err| status_from_error(&err, &token))
        });
        let result = match work.await {
            Ok(result) => result,
            Err(err) => Err(Status::internal(format!("the request's thread failed: {err}"))),
        };
        guard.finish();
        match &result {
            Ok(_) => debug!(host, operation, "request done"),
            Err(status) => warn!(host, operation, error = status.message(), "request failed"),
        }
        result.map(encode_reply)
    }

    async fn put_shards(self: Arc<Self>, mut stream: Streaming<PutMessage>) -> Result<Empty, Status> {
        let Some(PutMessage {
            kind: Some(PutKind::Header(header)),
        }) = stream.message().await?
        else {
            return Err(Status::invalid_argument(
                "the first message of a put must be its header",
            ));
        };
        let state = self.session(header.session)?;
        let spec = spec_from_wire(header.spec)?;
        let guard = CallGuard::start(&self, CancelToken::default(), "put an array", false);
        let result = receive_and_put(state, ArrayId(header.array_id), spec, stream).await;
        guard.finish();
        if let Err(status) = &result {
            warn!(host = self.host, operation = "put an array", error = status.message(), "request failed");
        }
        result
    }

    fn fetch_shards(self: Arc<Self>, request: FetchRequest) -> Result<PieceStream, Status> {
        let state = self.session(request.session)?;
        let piece_bytes = clamp_piece_bytes(request.piece_bytes);
        let (sender, receiver) = mpsc::channel(PIECES_IN_FLIGHT);
        let guard = CallGuard::start(&self, CancelToken::default(), "fetch shards", true);
        let delay = Duration::from_millis(self.save_delay_ms.load(Ordering::Relaxed));
        let host = self.host;

        // The blocking thread sends one array's shards at a time, so the
        // worker holds at most one array's copy beside its devices' data.
        // A closed channel means the caller went away: the guard then
        // counts the request as cancelled.
        tokio::task::spawn_blocking(move || {
            let delayed = std::time::Instant::now();
            while delayed.elapsed() < delay {
                if sender.is_closed() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            for id in request.ids {
                let call = HostCall::FetchShards {
                    ids: vec![ArrayId(id)],
                };
                let shards = match lock(&state).handle(call) {
                    Ok(HostReply::Shards(shards)) => shards,
                    Ok(_) => {
                        let status = Status::internal("the host returned a reply of the wrong kind to fetch shards");
                        let _ = sender.blocking_send(Err(status));
                        return guard.finish();
                    }
                    Err(err) => {
                        let status = status_from_error(&err, &CancelToken::default());
                        warn!(host = host, operation = "fetch shards", error = status.message(), "request failed");
                        let _ = sender.blocking_send(Err(status));
                        return guard.finish();
                    }
                };
                for shard in shards {
                    for piece in split_shard(shard.id.0, &shard.index, &shard.bytes, piece_bytes) {
                        if sender.blocking_send(Ok(piece)).is_err() {
                            return;
                        }
                    }
                }
            }
            guard.finish();
        });
        Ok(PieceStream(receiver))
    }
}

/// The stream of pieces a fetch returns, fed by its blocking thread.
pub(crate) struct PieceStream(mpsc::Receiver<Result<ShardPiece, Status>>);

impl Stream for PieceStream {
    type Item = Result<ShardPiece, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Joins the pieces of a put stream and hands the shards to the host.
async fn receive_and_put(
    state: SharedHost,
    id: ArrayId,
    spec: crate::ArraySpec,
    mut stream: Streaming<PutMessage>,
) -> Result<Empty, Status> {
    let mut assembler = ShardAssembler::with_dtype(spec.dtype);
    while let Some(message) = stream.message().await? {
        let Some(PutKind::Piece(piece)) = message.kind else {
            return Err(Status::invalid_argument(
                "only the first message of a put may be a header",
            ));
        };
        assembler.push(piece).map_err(Status::invalid_argument)?;
    }
    let shards = assembler
        .finish()
        .map_err(Status::invalid_argument)?
        .into_iter()
        .map(|shard| (shard.index, shard.bytes))
        .collect();

    let call = HostCall::PutArray {
        id,
        spec,
        source: PutSource::Shards(shards),
    };
    let work = tokio::task::spawn_blocking(move || lock(&state).handle(call));
    let result = work
        .await
        .map_err(|err| Status::internal(format!("the request's thread failed: {err}")))?;
    result
        .map(|_| Empty {})
        .map_err(|err| status_from_error(&err, &CancelToken::default()))
}

fn wire_operation(call: &WireCall) -> &'static str {
    match call {
        WireCall::PutGenerated(_) => "put an array",
        WireCall::SaveShards(_) => "save shards",
        WireCall::RestoreShards(_) => "restore shards",
        WireCall::Verify(_) => "verify an array",
        WireCall::DropArrays(_) => "drop arrays",
        WireCall::SnapshotArrays(_) => "snapshot arrays",
    }
}

/// Turns a wire request into a [`HostCall`], opening its storage through a
/// backend that fails once `token` is cancelled. Runs on a blocking thread
/// because opening a local store creates its directory.
fn decode_call(call: WireCall, token: &CancelToken) -> Result<HostCall, Status> {
    let open = |location: &str| {
        let store = open_store(location)
            .map_err(|err| Status::invalid_argument(error_chain(&err)))?;
        cancellable_store(&store, token).map_err(|err| Status::invalid_argument(error_chain(&err)))
    };
    Ok(match call {
        WireCall::PutGenerated(put) => HostCall::PutArray {
            id: ArrayId(put.id),
            spec: spec_from_wire(put.spec)?,
            source: PutSource::Generate(Generator::new(put.seed)),
        },
        WireCall::SaveShards(save) => HostCall::SaveShards {
            item: open(&save.location)?,
            format: format_from_wire(save.format)?,
            items: save
                .items
                .into_iter()
                .map(save_item_from_wire)
                .collect::<Result<_, _>>()?,
        },
        WireCall::RestoreShards(restore) => HostCall::RestoreShards {
            item: open(&restore.location)?,
            use_ocdbt: restore.use_ocdbt,
            use_zarr3: restore.use_zarr3,
            items: restore
                .items
                .into_iter()
                .map(restore_item_from_wire)
                .collect::<Result<_, _>>()?,
        },
        WireCall::Verify(verify) => HostCall::Verify {
            id: ArrayId(verify.id),
            generator: Generator::new(verify.seed),
        },
        WireCall::DropArrays(drop) => HostCall::DropArrays {
            ids: drop.ids.into_iter().map(ArrayId).collect(),
        },
        WireCall::SnapshotArrays(snapshot) => HostCall::SnapshotArrays {
            arrays: snapshot
                .arrays
                .into_iter()
                .map(|pair| (ArrayId(pair.source), ArrayId(pair.copy)))
                .collect(),
        },
    })
}

fn encode_reply(reply: HostReply) -> CallReply {
    let reply = match reply {
        HostReply::Done | HostReply::Shards(_) => WireReply::Done(Empty {}),
        HostReply::Saved(report) => WireReply::Saved(WireSaveReport {
            bytes: report.bytes,
            chunks: report.chunks,
        }),
        HostReply::Restored { bytes } => WireReply::RestoredBytes(bytes),
        HostReply::Verified(report) => WireReply::Verified(WireVerifyReport {
            elements: report.elements,
            mismatches: report.mismatches,
        }),
    };
    CallReply { reply: Some(reply) }
}

/// Returns an error's message followed by the messages of its sources.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn status_from_error(err: &ColocatedError, token: &CancelToken) -> Status {
    let message = error_chain(err);
    if token.is_cancelled() {
        return Status::cancelled(message);
    }
    match err {
        ColocatedError::UnknownArray { .. } => Status::not_found(message),
        ColocatedError::InvalidShardData { .. }
        | ColocatedError::Device(_)
        | ColocatedError::Core(_) => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

/// The worker service: routes each method path to [`Worker`].
#[derive(Clone, Debug)]
struct WorkerService {
    worker: Arc<Worker>,
}

impl NamedService for WorkerService {
    const NAME: &'static str = WORKER_SERVICE;
}

impl<B> Service<http::Request<B>> for WorkerService
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> RouteFuture {
        let worker = Arc::clone(&self.worker);
        let path = request.uri().path().to_owned();
        match path.as_str() {
            paths::HEALTH => Box::pin(async move {
                let method = Method(move |_: Request<Empty>| {
                    let reply = worker.health();
                    async move { Ok(Response::new(reply)) }
                });
                Ok(Grpc::new(codec()).unary(method, request).await)
            }),
            paths::OPEN_SESSION => Box::pin(async move {
                let method = Method(move |r: Request<OpenSessionRequest>| {
                    let reply = worker.open_session(r.into_inner()).map(Response::new);
                    async move { reply }
                });
                Ok(Grpc::new(codec()).unary(method, request).await)
            }),
            paths::END_SESSION => Box::pin(async move {
                let method = Method(move |r: Request<SessionRequest>| {
                    let reply = worker.end_session(r.into_inner());
                    async move { Ok(Response::new(reply)) }
                });
                Ok(Grpc::new(codec()).unary(method, request).await)
            }),
            paths::CALL => Box::pin(async move {
                let method = Method(move |r: Request<CallRequest>| {
                    let worker = Arc::clone(&worker);
                    async move { worker.call(r.into_inner()).await.map(Response::new) }
                });
                Ok(Grpc::new(codec()).unary(method, request).await)
            }),
            paths::PUT_SHARDS => Box::pin(async move {
                let method = Method(move |r: Request<Streaming<PutMessage>>| {
                    let worker = Arc::clone(&worker);
                    async move { worker.put_shards(r.into_inner()).await.map(Response::new) }
                });
                Ok(Grpc::new(codec()).client_streaming(method, request).await)
            }),
            paths::FETCH_SHARDS => Box::pin(async move {
                let method = Method(move |r: Request<FetchRequest>| {
                    let stream = Arc::clone(&worker).fetch_shards(r.into_inner());
                    async move { stream.map(Response::new) }
                });
                Ok(Grpc::new(codec()).server_streaming(method, request).await)
            }),
            paths::INJECT_FAULTS => Box::pin(async move {
                let method = Method(move |r: Request<FaultsRequest>| {
                    let reply = worker.inject_faults(r.into_inner()).map(Response::new);
                    async move { reply }
                });
                Ok(Grpc::new(codec()).unary(method, request).await)
            }),
            paths::SHUTDOWN => Box::pin(async move {
                let method = Method(move |_: Request<Empty>| {
                    info!(host = worker.host, "shutdown requested by a client");
                    worker.shutdown.shutdown();
                    async move { Ok(Response::new(Empty {})) }
                });
                Ok(Grpc::new(codec()).unary(method, request).await)
            }),
            _ => unknown_method(&path),
        }
    }
}
