//! [`GrpcRuntime`]: the controller's side of the worker service.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use ckpt_core::IndexBox;
use ckpt_device::Topology;
use futures::future::join_all;
use tokio::time::Instant;
use tonic::{
    transport::{Channel, Endpoint},
    Code, Request, Status,
};
use tracing::{debug, info, warn};

use crate::{
    grpc::{
        error::GrpcError,
        pieces::{split_shard, ShardAssembler, MAX_PIECE_BYTES, MIN_PIECE_BYTES},
        server::{CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES},
        service::{
            call_client_streaming, call_server_streaming, call_unary, is_transport_failure,
            worker_paths as paths,
        },
        wire::{
            format_to_wire, restore_item_to_wire, save_item_to_wire, save_report_from_wire,
            spec_to_wire, store_location, verify_report_from_wire, ArrayPair, CallReply,
            CallRequest, DropArrays, Empty, FaultsRequest, FetchRequest, HealthReply, OpenSessionRequest,
            PutGenerated, PutHeader, PutKind, PutMessage, RestoreShards, SaveShards,
            SessionRequest, SnapshotArrays, Verify, WireCall, WireReply,
        },
    },
    protocol::{ArrayId, HostCall, HostReply, PutSource, ShardBytes},
    ColocatedError, Result, Runtime,
};

/// Timeouts and transfer sizes of a [`GrpcRuntime`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GrpcRuntimeOptions {
    /// Time allowed to open a connection to a worker and its session.
    pub connect_timeout: Duration,
    /// Deadline of each request to a host: a save, a restore, or a whole
    /// fetch or put stream. The worker gets it too and cancels the work
    /// when it passes.
    pub call_timeout: Duration,
    /// Maximum bytes of shard data per streamed message, clamped to 4 KiB..=2 MiB.
    pub piece_bytes: usize,
}

impl Default for GrpcRuntimeOptions {
    /// 10 s to connect, 10 min per request, and 1 MiB pieces.
    fn default() -> GrpcRuntimeOptions {
        GrpcRuntimeOptions {
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(600),
            piece_bytes: 1 << 20,
        }
    }
}

impl GrpcRuntimeOptions {
    /// Sets the time allowed to connect to each worker.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> GrpcRuntimeOptions {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the deadline of each request.
    pub fn with_call_timeout(mut self, timeout: Duration) -> GrpcRuntimeOptions {
        self.call_timeout = timeout;
        self
    }

    /// Sets the maximum bytes per streamed piece.
    pub fn with_piece_bytes(mut self, bytes: usize) -> GrpcRuntimeOptions {
        self.piece_bytes = bytes.clamp(MIN_PIECE_BYTES, MAX_PIECE_BYTES);
        self
    }
}

/// A worker's state, as its `Health` request reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerHealth {
    /// The worker's host index.
    pub host: usize,
    /// The worker's process id.
    pub pid: u32,
    /// The address the worker listens on.
    pub address: String,
    /// Controller sessions open on the worker.
    pub sessions: u64,
    /// Requests being served.
    pub calls_in_flight: u64,
    /// Requests being served that read shards for a save: save shards, or
    /// fetch shards for a save through the controller.
    pub saves_in_flight: u64,
    /// Requests finished, with success or an error.
    pub calls_completed: u64,
    /// Requests whose deadline passed or whose caller went away first.
    pub calls_cancelled: u64,
}

/// A runtime whose hosts are worker processes reached over gRPC.
///
/// Each worker (see [`crate::WorkerServer`] and the `ckpt-worker` binary)
/// owns one host's devices. The runtime opens a session on every worker,
/// and the arrays it creates live in that session. Several controllers can
/// so share workers without mixing up array ids. Requests carry storage
/// locations as paths or URLs, which the workers open themselves, so
/// in-memory stores are rejected. Array bytes travel only in puts from
/// the controller's bytes and in fetches (the gather path), streamed in
/// pieces of at most [`GrpcRuntimeOptions::piece_bytes`].
///
/// Calls block the calling thread on the runtime's own tokio runtime, so
/// they must not be made from inside another tokio runtime.
#[derive(Debug)]
pub struct GrpcRuntime {
    topology: Topology,
    links: Vec<WorkerLink>,
    session: u64,
    options: GrpcRuntimeOptions,
    runtime: tokio::runtime::Runtime,
}

/// The connection to one worker.
#[derive(Clone, Debug)]
struct WorkerLink {
    host: usize,
    address: String,
    channel: Channel,
}

impl GrpcRuntime {
    /// Connects to one worker per host of `topology`, `addresses[h]` being
    /// host `h`'s `ip:port`, and opens a session on each.
    pub fn connect(
        topology: Topology,
        addresses: &[String],
        options: GrpcRuntimeOptions,
    ) -> std::result::Result<GrpcRuntime, GrpcError> {
        if addresses.len() != topology.num_hosts() {
            return Err(GrpcError::AddressCount {
                expected: topology.num_hosts(),
                found: addresses.len(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ckpt-grpc-client")
            .enable_all()
            .build()
            .map_err(|source| GrpcError::Io {
                operation: "start the controller's async runtime".into(),
                source,
            })?;
        let links = {
            let _entered = runtime.enter();
            addresses
                .iter()
                .enumerate()
                .map(|(host, address)| connect_lazily(host, address, &options))
                .collect::<std::result::Result<Vec<_>, _>>()?
        };
        // The upper half of a random UUID: collisions between controllers
        // sharing a worker are negligible.
        let session = (uuid::Uuid::new_v4().as_u128() >> 64) as u64;
        let grpc = GrpcRuntime {
            topology,
            links,
            session,
            options,
            runtime,
        };
        let opened = grpc.runtime.block_on(join_all(
            grpc.links.iter().map(|link| grpc.open_session(link)),
        ));
        for result in opened {
            result?;
        }
        info!(
            hosts = grpc.links.len(),
            session = format!("{session:016x}"),
            "connected to the workers"
        );
        Ok(grpc)
    }

    /// Returns the workers' addresses, by host.
    pub fn addresses(&self) -> Vec<String> {
        self.links.iter().map(|link| link.address.clone()).collect()
    }

    /// Returns the options in use.
    pub fn options(&self) -> &GrpcRuntimeOptions {
        &self.options
    }

    /// Asks a worker for its state.
    pub fn health(&self, host: usize) -> Result<WorkerHealth> {
        let link = self.link(host)?;
        let request = Request::new(Empty {});
        let reply: HealthReply = self.block_on_deadline(
            link,
            "report health",
            self.options.connect_timeout,
            call_unary(link.channel.clone(), paths::HEALTH, request),
        )?;
        Ok(WorkerHealth {
            host: reply.host as usize,
            pid: reply.pid,
            address: reply.address,
            sessions: reply.sessions,
            calls_in_flight: reply.calls_in_flight,
            saves_in_flight: reply.saves_in_flight,
            calls_completed: reply.calls_completed,
            calls_cancelled: reply.calls_cancelled,
        })
    }

    /// Makes every later save shards or fetch shards request on `host` wait
    /// `delay` before it starts, for fault-injection tests. The worker must
    /// run with fault injection on.
    pub fn inject_save_delay(&self, host: usize, delay: Duration) -> Result<()> {
        let link = self.link(host)?;
        let request = Request::new(FaultsRequest {
            save_delay_ms: delay.as_millis().try_into().unwrap_or(u64::MAX),
        });
        let _: Empty = self.block_on_deadline(
            link,
            "inject faults",
            self.options.connect_timeout,
            call_unary(link.channel.clone(), paths::INJECT_FAULTS, request),
        )?;
        Ok(())
    }

    /// Asks every worker to shut down gracefully, and returns each host's outcome.
    pub fn shutdown_workers(&self) -> Vec<Result<()>> {
        self.links
            .iter()
            .map(|link| {
                let request = Request::new(Empty {});
                let _: Empty = self.block_on_deadline(
                    link,
                    "shut down",
                    self.options.connect_timeout,
                    call_unary(link.channel.clone(), paths::SHUTDOWN, request),
                )?;
                Ok(())
            })
            .collect()
    }

    fn link(&self, host: usize) -> Result<&WorkerLink> {
        self.links.get(host).ok_or(ColocatedError::UnknownHost {
            host,
            num_hosts: self.links.len(),
        })
    }

    /// Runs one request to `link` with a deadline, mapping failures to errors naming the host.
    fn block_on_deadline<T>(
        &self,
        link: &WorkerLink,
        operation: &'static str,
        deadline: Duration,
        request: impl std::future::Future<Output = std::result::Result<T, Status>>,
    ) -> Result<T> {
        self.runtime.block_on(async {
            match tokio::time::timeout(deadline, request).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(status)) => Err(host_error(link, operation, deadline, &status)),
                Err(_) => Err(deadline_error(link, operation, deadline)),
            }
        })
    }

    async fn open_session(&self, link: &WorkerLink) -> std::result::Result<(), GrpcError> {
        let topology_json = serde_json::to_string(&self.topology).map_err(|err| {
            GrpcError::Colocated(ColocatedError::HostFailed {
                host: link.host,
                operation: "open a session",
                message: format!("could not encode the topology as JSON: {err}"),
            })
        })?;
        let mut request = Request::new(OpenSessionRequest {
            session: self.session,
            topology_json,
        });
        let deadline = self.options.connect_timeout;
        request.set_timeout(deadline);
        let call = call_unary::<_, Empty>(link.channel.clone(), paths::OPEN_SESSION, request);
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(host_error(link, "open a session", deadline, &status).into()),
            Err(_) => Err(deadline_error(link, "open a session", deadline).into()),
        }
    }

    /// Sends one call with the request deadline; when the worker has lost
    /// the session because it restarted, opens it again and retries once.
    async fn call_host(&self, host: usize, call: HostCall) -> Result<HostReply> {
        let link = self.link(host)?;
        let operation = call.operation();
        let request = encode_call(&call).map_err(|message| ColocatedError::HostFailed {
            host,
            operation,
            message,
        })?;
        let deadline = self.options.call_timeout;
        let started = Instant::now();

        let mut reopened = false;
        loop {
            let remaining = deadline.saturating_sub(started.elapsed());
            let attempt = tokio::time::timeout(remaining, self.send(link, &request, remaining)).await;
            let status = match attempt {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(status)) => status,
                Err(_) => return Err(deadline_error(link, operation, deadline)),
            };
            if status.code() != Code::FailedPrecondition || reopened {
                return Err(host_error(link, operation, deadline, &status));
            }
            warn!(host, address = %link.address, error = status.message(), "reopening the session on a worker");
            self.open_session(link).await.map_err(|err| match err {
                GrpcError::Colocated(err) => err,
                other => ColocatedError::HostUnavailable {
                    host,
                    reason: other.to_string(),
                },
            })?;
            reopened = true;
        }
    }

    async fn send(
        &self,
        link: &WorkerLink,
        request: &EncodedCall,
        deadline: Duration,
    ) -> std::result::Result<HostReply, Status> {
        match request {
            EncodedCall::Unary(call) => {
                let mut request = Request::new(CallRequest {
                    session: self.session,
                    call: Some(call.clone()),
                });
                request.set_timeout(deadline);
                let reply: CallReply = call_unary(link.channel.clone(), paths::CALL, request).await?;
                decode_reply(reply)
            }
            EncodedCall::Put { id, spec, shards } => {
                let messages = self.put_messages(*id, spec, shards);
                let mut request = Request::new(futures::stream::iter(messages));
                request.set_timeout(deadline);
                let _: Empty =
                    call_client_streaming(link.channel.clone(), paths::PUT_SHARDS, request).await?;
                Ok(HostReply::Done)
            }
            EncodedCall::Fetch(ids) => self.fetch(link, ids, deadline).await,
        }
    }

    fn put_messages(
        &self,
        id: ArrayId,
        spec: &crate::grpc::wire::WireArraySpec,
        shards: &[(IndexBox, Bytes)],
    ) -> Vec<PutMessage> {
        let header = PutMessage {
            kind: Some(PutKind::Header(PutHeader {
                session: self.session,
                array_id: id.0,
                spec: Some(spec.clone()),
            })),
        };
        let pieces = shards.iter().flat_map(|(index, bytes)| {
            split_shard(id.0, index, bytes, self.options.piece_bytes)
                .into_iter()
                .map(|piece| PutMessage {
                    kind: Some(PutKind::Piece(piece)),
                })
        });
        std::iter::once(header).chain(pieces).collect()
    }

    async fn fetch(
        &self,
        link: &WorkerLink,
        ids: &[ArrayId],
        deadline: Duration,
    ) -> std::result::Result<HostReply, Status> {
        let mut request = Request::new(FetchRequest {
            session: self.session,
            ids: ids.iter().map(|id| id.0).collect(),
            piece_bytes: self.options.piece_bytes as u64,
        });
        request.set_timeout(deadline);
        let mut stream = call_server_streaming(link.channel.clone(), paths::FETCH_SHARDS, request).await?;
        let mut assembler = ShardAssembler::default();
        while let Some(piece) = stream.message().await? {
            assembler.push(piece).map_err(Status::data_loss)?;
        }
        let shards = assembler.finish().map_err(Status::data_loss)?;
        debug!(host = link.host, shards = shards.len(), "fetched shards");
        Ok(HostReply::Shards(
            shards
                .into_iter()
                .map(|shard| ShardBytes {
                    id: ArrayId(shard.array_id),
                    index: shard.index,
                    bytes: shard.bytes,
                })
                .collect(),
        ))
    }
}

impl Runtime for GrpcRuntime {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn call_hosts(&self, calls: Vec<(usize, HostCall)>) -> Vec<Result<HostReply>> {
        let pending = calls
            .into_iter()
            .map(|(host, call)| self.call_host(host, call));
        self.runtime.block_on(join_all(pending))
    }
}

impl Drop for GrpcRuntime {
    /// Ends the session on every worker that still replies, so the workers
    /// free its arrays. A worker that does not reply within a second keeps
    /// them until it stops.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here would panic inside another runtime.
            return;
        }
        let session = self.session;
        let ends = self.links.iter().map(|link| {
            let request = Request::new(SessionRequest { session });
            let call = call_unary::<_, Empty>(link.channel.clone(), paths::END_SESSION, request);
            async move {
                if let Ok(Err(status)) = tokio::time::timeout(Duration::from_secs(1), call).await {
                    debug!(host = link.host, error = status.message(), "could not end the session");
                }
            }
        });
        self.runtime.block_on(join_all(ends));
    }
}

fn connect_lazily(
    host: usize,
    address: &str,
    options: &GrpcRuntimeOptions,
) -> std::result::Result<WorkerLink, GrpcError> {
    let invalid = || GrpcError::InvalidAddress {
        address: address.to_owned(),
    };
    let socket: SocketAddr = address.parse().map_err(|_| invalid())?;
    let endpoint = Endpoint::from_shared(format!("http://{socket}"))
        .map_err(|_| invalid())?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok(WorkerLink {
        host,
        address: socket.to_string(),
        channel: endpoint.connect_lazy(),
    })
}

/// A host call in the form it is sent.
#[derive(Debug)]
enum EncodedCall {
    /// A request without array bytes.
    Unary(WireCall),
    /// A put from the controller's bytes, streamed.
    Put {
        id: ArrayId,
        spec: crate::grpc::wire::WireArraySpec,
        shards: Vec<(IndexBox, Bytes)>,
    },
    /// A fetch of the arrays' replica-0 shards, streamed back.
    Fetch(Vec<ArrayId>),
}

fn encode_call(call: &HostCall) -> std::result::Result<EncodedCall, String> {
    Ok(match call {
        HostCall::PutArray {
            id,
            spec,
            source: PutSource::Generate(generator),
        } => EncodedCall::Unary(WireCall::PutGenerated(PutGenerated {
            id: id.0,
            spec: Some(spec_to_wire(spec)?),
            seed: generator.seed,
        })),
        HostCall::PutArray {
            id,
            spec,
            source: PutSource::Shards(shards),
        } => EncodedCall::Put {
            id: *id,
            spec: spec_to_wire(spec)?,
            shards: shards.clone(),
        },
        HostCall::SaveShards {
            item,
            format,
            items,
        } => EncodedCall::Unary(WireCall::SaveShards(SaveShards {
            location: store_location(item)?,
            format: Some(format_to_wire(format)?),
            items: items.iter().map(save_item_to_wire).collect(),
        })),
        HostCall::FetchShards { ids } => EncodedCall::Fetch(ids.clone()),
        HostCall::RestoreShards {
            item,
            use_ocdbt,
            use_zarr3,
            items,
        } => EncodedCall::Unary(WireCall::RestoreShards(RestoreShards {
            location: store_location(item)?,
            use_ocdbt: *use_ocdbt,
            use_zarr3: *use_zarr3,
            items: items
                .iter()
                .map(restore_item_to_wire)
                .collect::<std::result::Result<_, _>>()?,
        })),
        HostCall::Verify { id, generator } => EncodedCall::Unary(WireCall::Verify(Verify {
            id: id.0,
            seed: generator.seed,
        })),
        HostCall::DropArrays { ids } => EncodedCall::Unary(WireCall::DropArrays(DropArrays {
            ids: ids.iter().map(|id| id.0).collect(),
        })),
        HostCall::SnapshotArrays { arrays } => {
            EncodedCall::Unary(WireCall::SnapshotArrays(SnapshotArrays {
                arrays: arrays
                    .iter()
                    .map(|(source, copy)| ArrayPair {
                        source: source.0,
                        copy: copy.0,
                    })
                    .collect(),
            }))
        }
    })
}

fn decode_reply(reply: CallReply) -> std::result::Result<HostReply, Status> {
    match reply.reply {
        Some(WireReply::Done(_)) => Ok(HostReply::Done),
        Some(WireReply::Saved(report)) => Ok(HostReply::Saved(save_report_from_wire(report))),
        Some(WireReply::RestoredBytes(bytes)) => Ok(HostReply::Restored { bytes }),
        Some(WireReply::Verified(report)) => Ok(HostReply::Verified(verify_report_from_wire(report))),
        None => Err(Status::data_loss("the worker's reply names no result")),
    }
}

fn deadline_error(link: &WorkerLink, operation: &'static str, deadline: Duration) -> ColocatedError {
    ColocatedError::HostFailed {
        host: link.host,
        operation,
        message: format!(
            "the worker at {} did not reply within the deadline of {:.1} s; it is slow, hung or overloaded, and the request was cancelled",
            link.address,
            deadline.as_secs_f64()
        ),
    }
}

/// Maps a failed request's status to an error that names the host and its address.
fn host_error(
    link: &WorkerLink,
    operation: &'static str,
    deadline: Duration,
    status: &Status,
) -> ColocatedError {
    // tonic enforces the request's timeout on both sides and reports it
    // as CANCELLED, with the local timer as the source on this side.
    if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) {
        return deadline_error(link, operation, deadline);
    }
    if is_transport_failure(status) {
        return ColocatedError::HostUnavailable {
            host: link.host,
            reason: format!(
                "the worker at {} could not be reached or dropped the connection during {operation} ({}); it may have exited",
                link.address,
                status.message()
            ),
        };
    }
    ColocatedError::HostFailed {
        host: link.host,
        operation,
        message: format!("{} (worker at {})", status.message(), link.address),
    }
}
