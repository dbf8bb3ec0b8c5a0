//! The coordination service of SPMD processes: named barriers with
//! timeouts, run by process 0, and the client every process uses.
//!
//! Each process opens a `Join` stream when it starts and keeps it open. A
//! process that dies closes its connection, which ends the stream, so the
//! coordinator fails every barrier the process has not reached at once,
//! naming it, instead of waiting for the timeout. A process may also arrive
//! at a barrier with an error, which fails the barrier for everyone. That
//! is how a failed write on one process aborts the save on all of them.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use futures::{future::BoxFuture, FutureExt, Stream};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tonic::{
    codegen::{http, Body as HttpBody, Service, StdError},
    server::{Grpc, NamedService},
    transport::{server::TcpIncoming, Channel, Endpoint, Server},
    Request, Response, Status,
};
use tracing::{debug, info, warn};

use crate::grpc::{
    error::GrpcError,
    server::ShutdownHandle,
    service::{
        call_server_streaming, call_unary, codec, coordinator_paths as paths, is_transport_failure,
        unknown_method, Method, RouteFuture, COORDINATOR_SERVICE,
    },
    wire::{BarrierReply, BarrierRequest, Empty, JoinRequest},
};

/// Extra time a client waits for a barrier's reply beyond the barrier's
/// own timeout, which the coordinator enforces.
const REPLY_GRACE: Duration = Duration::from_secs(5);

/// One barrier's arrivals and, once decided, its outcome.
#[derive(Debug)]
struct Barrier {
    /// Each process's value (`Ok`) or reported error (`Err`), once it arrived.
    arrivals: Vec<Option<Result<String, String>>>,
    outcome: Option<BarrierReply>,
}

#[derive(Debug)]
struct State {
    /// Processes whose `Join` stream has closed.
    disconnected: Vec<bool>,
    barriers: HashMap<String, Barrier>,
}

/// The coordinator's shared state.
#[derive(Debug)]
struct Coordinator {
    num_processes: usize,
    state: Mutex<State>,
    /// Bumped on every change, to wake waiting barriers.
    changed: watch::Sender<u64>,
    shutdown: ShutdownHandle,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Coordinator {
    fn notify(&self) {
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
    }

    fn check_process(&self, process: u64) -> Result<usize, Status> {
        usize::try_from(process)
            .ok()
            .filter(|&process| process < self.num_processes)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "process index {process} is out of range: the job has {} processes",
                    self.num_processes
                ))
            })
    }

    fn join(self: Arc<Self>, request: JoinRequest) -> Result<JoinStream, Status> {
        let process = self.check_process(request.process_index)?;
        lock(&self.state).disconnected[process] = false;
        info!(process, "process joined");
        let shutdown = self.shutdown.clone();
        Ok(JoinStream {
            coordinator: self,
            process,
            stopped: async move { shutdown.requested().await }.boxed(),
        })
    }

    fn disconnect(&self, process: usize) {
        lock(&self.state).disconnected[process] = true;
        info!(process, "process disconnected");
        self.notify();
    }

    async fn barrier(self: Arc<Self>, request: BarrierRequest) -> Result<BarrierReply, Status> {
        let process = self.check_process(request.process_index)?;
        let id = request.barrier_id;
        let timeout = Duration::from_millis(request.timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        {
            let mut state = lock(&self.state);
            let n = self.num_processes;
            let barrier = state.barriers.entry(id.clone()).or_insert_with(|| Barrier {
                arrivals: vec![None; n],
                outcome: None,
            });
            if barrier.arrivals[process].is_none() {
                barrier.arrivals[process] = Some(match request.error {
                    Some(error) => Err(error),
                    None => Ok(request.value),
                });
            }
        }
        self.notify();
        debug!(process, barrier = %id, "arrived at barrier");

        loop {
            if let Some(outcome) = self.decide(&id) {
                return Ok(outcome);
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                return Ok(self.time_out(&id, timeout));
            }
        }
    }

    /// Decides the barrier if it can be: failed when a process reported an
    /// error or disconnected before arriving, passed when all arrived.
    fn decide(&self, id: &str) -> Option<BarrierReply> {
        let mut state = lock(&self.state);
        let State {
            disconnected,
            barriers,
        } = &mut *state;
        let barrier = barriers.get_mut(id)?;
        if let Some(outcome) = &barrier.outcome {
            return Some(outcome.clone());
        }
        let reported = barrier.arrivals.iter().enumerate().find_map(|(process, arrival)| {
            match arrival {
                Some(Err(error)) => Some((process, format!("reported an error: {error}"))),
                _ => None,
            }
        });
        let vanished = || {
            (0..self.num_processes)
                .find(|&process| barrier.arrivals[process].is_none() && disconnected[process])
                .map(|process| (process, "disconnected from the coordinator before arriving".to_owned()))
        };
        let outcome = if let Some((process, reason)) = reported.or_else(vanished) {
            warn!(barrier = id, process, reason, "barrier failed");
            BarrierReply {
                ok: false,
                values: Vec::new(),
                failed_process: Some(process as u64),
                reason,
                missing: Vec::new(),
            }
        } else if barrier.arrivals.iter().all(Option::is_some) {
            let values = barrier
                .arrivals
                .iter()
                .map(|arrival| match arrival {
                    Some(Ok(value)) => value.clone(),
                    _ => String::new(),
                })
                .collect();
            debug!(barrier = id, "barrier passed");
            BarrierReply {
                ok: true,
                values,
                failed_process: None,
                reason: String::new(),
                missing: Vec::new(),
            }
        } else {
            return None;
        };
        barrier.outcome = Some(outcome.clone());
        drop(state);
        self.notify();
        Some(outcome)
    }

    fn time_out(&self, id: &str, timeout: Duration) -> BarrierReply {
        let mut state = lock(&self.state);
        let Some(barrier) = state.barriers.get_mut(id) else {
            return BarrierReply {
                ok: false,
                reason: "the barrier vanished".into(),
                ..BarrierReply::default()
            };
        };
        if let Some(outcome) = &barrier.outcome {
            return outcome.clone();
        }
        let missing: Vec<u64> = (0..self.num_processes)
            .filter(|&process| barrier.arrivals[process].is_none())
            .map(|process| process as u64)
            .collect();
        warn!(barrier = id, ?missing, seconds = timeout.as_secs_f64(), "barrier timed out");
        let outcome = BarrierReply {
            ok: false,
            values: Vec::new(),
            failed_process: None,
            reason: format!("timed out after {:.1} s", timeout.as_secs_f64()),
            missing,
        };
        barrier.outcome = Some(outcome.clone());
        drop(state);
        self.notify();
        outcome
    }
}

/// The open `Join` stream of one process. It yields nothing and ends when
/// the coordinator shuts down; dropping it marks the process disconnected.
struct JoinStream {
    coordinator: Arc<Coordinator>,
    process: usize,
    stopped: BoxFuture<'static, ()>,
}

impl Stream for JoinStream {
    type Item = Result<Empty, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stopped.as_mut().poll(cx).map(|()| None)
    }
}

impl Drop for JoinStream {
    fn drop(&mut self) {
        self.coordinator.disconnect(self.process);
    }
}

/// The coordination service: routes each method path to [`Coordinator`].
#[derive(Clone, Debug)]
struct CoordinatorService {
    coordinator: Arc<Coordinator>,
}

impl NamedService for CoordinatorService {
    const NAME: &'static str = COORDINATOR_SERVICE;
}

impl<B> Service<http::Request<B>> for CoordinatorService
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
        let coordinator = Arc::clone(&self.coordinator);
        let path = request.uri().path().to_owned();
        match path.as_str() {
            paths::JOIN => Box::pin(async move {
                let method = Method(move |r: Request<JoinRequest>| {
                    let stream = Arc::clone(&coordinator).join(r.into_inner());
                    async move { stream.map(Response::new) }
                });
                Ok(Grpc::new(codec()).server_streaming(method, request).await)
            }),
            paths::BARRIER => Box::pin(async move {
                let method = Method(move |r: Request<BarrierRequest>| {
                    let coordinator = Arc::clone(&coordinator);
                    async move { coordinator.barrier(r.into_inner()).await.map(Response::new) }
                });
                Ok(Grpc::new(codec()).unary(method, request).await)
            }),
            _ => unknown_method(&path),
        }
    }
}

/// A running coordination service on the caller's tokio runtime.
#[derive(Debug)]
pub(crate) struct CoordinatorServer {
    address: SocketAddr,
    shutdown: ShutdownHandle,
    task: JoinHandle<Result<(), GrpcError>>,
}

impl CoordinatorServer {
    /// Binds `listen` and serves barriers for `num_processes` processes on
    /// the current tokio runtime.
    pub(crate) async fn start(
        listen: SocketAddr,
        num_processes: usize,
    ) -> Result<CoordinatorServer, GrpcError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| GrpcError::Bind {
                address: listen.to_string(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| GrpcError::Io {
            operation: "read the coordinator's address".into(),
            source,
        })?;
        let shutdown = ShutdownHandle::new();
        let coordinator = Arc::new(Coordinator {
            num_processes,
            state: Mutex::new(State {
                disconnected: vec![false; num_processes],
                barriers: HashMap::new(),
            }),
            changed: watch::channel(0).0,
            shutdown: shutdown.clone(),
        });
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            Server::builder()
                .serve_with_incoming_shutdown(
                    CoordinatorService { coordinator },
                    incoming,
                    async move { stop.requested().await },
                )
                .await
                .map_err(|err| GrpcError::Serve {
                    address: address.to_string(),
                    reason: err.to_string(),
                })
        });
        info!(%address, num_processes, "coordinator listening");
        Ok(CoordinatorServer {
            address,
            shutdown,
            task,
        })
    }

    /// Returns the address the service listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Stops the service once the replies in flight are sent, waiting at most `grace`.
    pub(crate) async fn stop(self, grace: Duration) {
        self.shutdown.shutdown();
        match tokio::time::timeout(grace, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => warn!(error = %err, "the coordinator failed"),
            Ok(Err(err)) => warn!(error = %err, "the coordinator's task failed"),
            Err(_) => warn!("the coordinator did not stop within its grace period"),
        }
    }
}

/// A process's connection to the coordinator.
#[derive(Debug)]
pub(crate) struct CoordinatorClient {
    address: String,
    process: usize,
    channel: Channel,
    join: JoinHandle<()>,
}

impl CoordinatorClient {
    /// Connects to the coordinator at `address` as `process` and joins the
    /// job, retrying the connection until `timeout` passes.
    pub(crate) async fn connect(
        address: &str,
        process: usize,
        timeout: Duration,
    ) -> Result<CoordinatorClient, GrpcError> {
        let unavailable = |reason: String| GrpcError::CoordinatorUnavailable {
            address: address.to_owned(),
            reason,
        };
        let socket: SocketAddr = address.parse().map_err(|_| GrpcError::InvalidAddress {
            address: address.to_owned(),
        })?;
        let endpoint = Endpoint::from_shared(format!("http://{socket}"))
            .map_err(|err| unavailable(err.to_string()))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let deadline = Instant::now() + timeout;
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(err) if Instant::now() >= deadline => {
                    return Err(unavailable(error_text(&err)))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };

        let request = Request::new(JoinRequest {
            process_index: process as u64,
        });
        let mut stream = call_server_streaming::<_, Empty>(channel.clone(), paths::JOIN, request)
            .await
            .map_err(|status| unavailable(status.message().to_owned()))?;
        // Holding the stream open is what tells the coordinator this
        // process is alive.
        let join = tokio::spawn(async move {
            while let Ok(Some(_)) = stream.message().await {}
        });
        Ok(CoordinatorClient {
            address: address.to_owned(),
            process,
            channel,
            join,
        })
    }

    /// Waits until every process reaches barrier `id` or it fails.
    ///
    /// `arrival` is this process's value to share, or its error, which
    /// fails the barrier for all. Returns every process's value by index.
    pub(crate) async fn barrier(
        &self,
        id: &str,
        timeout: Duration,
        arrival: Result<String, String>,
    ) -> Result<Vec<String>, GrpcError> {
        let (value, error) = match arrival {
            Ok(value) => (value, None),
            Err(error) => (String::new(), Some(error)),
        };
        let request = Request::new(BarrierRequest {
            barrier_id: id.to_owned(),
            process_index: self.process as u64,
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            error,
            value,
        });
        let call = call_unary::<_, BarrierReply>(self.channel.clone(), paths::BARRIER, request);
        let reply = match tokio::time::timeout(timeout + REPLY_GRACE, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(status)) if is_transport_failure(&status) => {
                return Err(GrpcError::CoordinatorUnavailable {
                    address: self.address.clone(),
                    reason: status.message().to_owned(),
                })
            }
            Ok(Err(status)) => {
                return Err(GrpcError::BarrierFailed {
                    barrier: id.to_owned(),
                    process: self.process,
                    reason: format!("got an error from the coordinator: {}", status.message()),
                })
            }
            Err(_) => {
                return Err(GrpcError::CoordinatorUnavailable {
                    address: self.address.clone(),
                    reason: format!(
                        "no reply to barrier {id:?} within {:.1} s",
                        (timeout + REPLY_GRACE).as_secs_f64()
                    ),
                })
            }
        };
        if reply.ok {
            return Ok(reply.values);
        }
        if !reply.missing.is_empty() {
            return Err(GrpcError::BarrierTimedOut {
                barrier: id.to_owned(),
                seconds: timeout.as_secs_f64(),
                missing: reply.missing.iter().map(|&p| p as usize).collect(),
            });
        }
        Err(GrpcError::BarrierFailed {
            barrier: id.to_owned(),
            process: reply.failed_process.map_or(usize::MAX, |p| p as usize),
            reason: reply.reason,
        })
    }
}

impl Drop for CoordinatorClient {
    fn drop(&mut self) {
        self.join.abort();
    }
}

fn error_text(err: &dyn std::error::Error) -> String {
    crate::grpc::server::error_chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    async fn start(processes: usize) -> (CoordinatorServer, Vec<CoordinatorClient>) {
        let server = CoordinatorServer::start("127.0.0.1:0".parse().unwrap(), processes)
            .await
            .unwrap();
        let address = server.local_addr().to_string();
        let mut clients = Vec::new();
        for process in 0..processes {
            clients.push(CoordinatorClient::connect(&address, process, SECOND).await.unwrap());
        }
        (server, clients)
    }

    #[tokio::test]
    async fn barrier_shares_values() {
        let (server, clients) = start(3).await;
        let arrivals = clients
            .iter()
            .enumerate()
            .map(|(i, client)| client.barrier("b", SECOND, Ok(format!("v{i}"))));
        for values in futures::future::join_all(arrivals).await {
            assert_eq!(values.unwrap(), ["v0", "v1", "v2"]);
        }
        server.stop(SECOND).await;
    }

    #[tokio::test]
    async fn reported_error_fails_everyone() {
        let (server, clients) = start(2).await;
        let (first, second) = tokio::join!(
            clients[0].barrier("b", 10 * SECOND, Ok(String::new())),
            clients[1].barrier("b", 10 * SECOND, Err("disk full".into())),
        );
        for result in [first, second] {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, GrpcError::BarrierFailed { process: 1, reason, .. } if reason.contains("disk full")),
                "{err}"
            );
        }
        server.stop(SECOND).await;
    }

    #[tokio::test]
    async fn missing_process_times_out() {
        let (server, clients) = start(3).await;
        let started = Instant::now();
        let err = clients[0]
            .barrier("b", Duration::from_millis(200), Ok(String::new()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, GrpcError::BarrierTimedOut { missing, .. } if missing == &[1, 2]),
            "{err}"
        );
        assert!(started.elapsed() < 2 * SECOND);
        server.stop(SECOND).await;
    }

    #[tokio::test]
    async fn disconnected_process_fails_barrier() {
        let (server, mut clients) = start(2).await;
        let gone = clients.pop().unwrap();
        drop(gone);
        let started = Instant::now();
        let err = clients[0]
            .barrier("b", 30 * SECOND, Ok(String::new()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, GrpcError::BarrierFailed { process: 1, reason, .. } if reason.contains("disconnected")),
            "{err}"
        );
        assert!(started.elapsed() < 10 * SECOND);
        server.stop(SECOND).await;
    }

    #[tokio::test]
    async fn stopped_coordinator_is_unavailable() {
        let (server, clients) = start(2).await;
        server.stop(SECOND).await;
        let err = clients[0]
            .barrier("b", SECOND, Ok(String::new()))
            .await
            .unwrap_err();
        assert!(matches!(err, GrpcError::CoordinatorUnavailable { .. }), "{err}");
    }

    #[tokio::test]
    async fn out_of_range_process_is_rejected() {
        let (server, _clients) = start(1).await;
        let address = server.local_addr().to_string();
        let err = CoordinatorClient::connect(&address, 5, SECOND).await.unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        server.stop(SECOND).await;
    }
}
