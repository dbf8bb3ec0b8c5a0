//! The plumbing that `tonic-build` would generate, written by hand: method
//! paths, a client call per kind of RPC, and the adapter that turns an
//! async function into a tonic service for one method.
//!
//! Each server ([`crate::grpc::server`], [`crate::grpc::coordinator`])
//! routes by path to its own async methods with these helpers.

use std::{
    convert::Infallible,
    future::Future,
    task::{Context, Poll},
};

use futures::Stream;
use tonic::{
    body::Body,
    client::Grpc as GrpcClient,
    codec::{ProstCodec, Streaming},
    codegen::{http, BoxFuture, Service},
    transport::Channel,
    Request, Response, Status,
};

/// The worker service's name, the first segment of its method paths.
pub(crate) const WORKER_SERVICE: &str = "ckpt.worker.v1.Worker";
/// The coordination service's name.
pub(crate) const COORDINATOR_SERVICE: &str = "ckpt.worker.v1.Coordinator";

/// Method paths of the worker service.
pub(crate) mod worker_paths {
    pub(crate) const HEALTH: &str = "/ckpt.worker.v1.Worker/Health";
    pub(crate) const OPEN_SESSION: &str = "/ckpt.worker.v1.Worker/OpenSession";
    pub(crate) const END_SESSION: &str = "/ckpt.worker.v1.Worker/EndSession";
    pub(crate) const CALL: &str = "/ckpt.worker.v1.Worker/Call";
    pub(crate) const PUT_SHARDS: &str = "/ckpt.worker.v1.Worker/PutShards";
    pub(crate) const FETCH_SHARDS: &str = "/ckpt.worker.v1.Worker/FetchShards";
    pub(crate) const INJECT_FAULTS: &str = "/ckpt.worker.v1.Worker/InjectFaults";
    pub(crate) const SHUTDOWN: &str = "/ckpt.worker.v1.Worker/Shutdown";
}

/// Method paths of the coordination service.
pub(crate) mod coordinator_paths {
    pub(crate) const JOIN: &str = "/ckpt.worker.v1.Coordinator/Join";
    pub(crate) const BARRIER: &str = "/ckpt.worker.v1.Coordinator/Barrier";
}

/// A tonic service for one method, made from an async function.
///
/// tonic's server helpers accept any `tower::Service` from a request to a
/// response; this is the smallest such service.
pub(crate) struct Method<F>(pub(crate) F);

impl<F, Fut, Req, Resp> Service<Request<Req>> for Method<F>
where
    F: FnMut(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Req>) -> Fut {
        (self.0)(request)
    }
}

/// The response future of a routed server.
pub(crate) type RouteFuture = BoxFuture<http::Response<Body>, Infallible>;

/// The response to a path that the service does not have.
pub(crate) fn unknown_method(path: &str) -> RouteFuture {
    let status = Status::unimplemented(format!("unknown method {path}"));
    Box::pin(async move { Ok(status.into_http()) })
}

/// Returns a fresh codec for the given request and reply messages.
pub(crate) fn codec<Req, Resp>() -> ProstCodec<Req, Resp> {
    ProstCodec::default()
}

/// Sends a unary request.
pub(crate) async fn call_unary<Req, Resp>(
    channel: Channel,
    path: &'static str,
    request: Request<Req>,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = GrpcClient::new(channel);
    grpc.ready().await.map_err(|err| Status::unavailable(err.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    let response = grpc.unary(request, path, codec::<Req, Resp>()).await?;
    Ok(response.into_inner())
}

/// Sends a stream of requests and returns the single reply.
pub(crate) async fn call_client_streaming<S, Req, Resp>(
    channel: Channel,
    path: &'static str,
    request: Request<S>,
) -> Result<Resp, Status>
where
    S: Stream<Item = Req> + Send + 'static,
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = GrpcClient::new(channel);
    grpc.ready().await.map_err(|err| Status::unavailable(err.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    let response = grpc
        .client_streaming(request, path, codec::<Req, Resp>())
        .await?;
    Ok(response.into_inner())
}

/// Sends one request and returns the stream of replies.
pub(crate) async fn call_server_streaming<Req, Resp>(
    channel: Channel,
    path: &'static str,
    request: Request<Req>,
) -> Result<Streaming<Resp>, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = GrpcClient::new(channel);
    grpc.ready().await.map_err(|err| Status::unavailable(err.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    let response = grpc
        .server_streaming(request, path, codec::<Req, Resp>())
        .await?;
    Ok(response.into_inner())
}

/// Whether a status describes a failure to reach the server (refused,
/// reset or closed connection) rather than an error the server sent.
///
/// Statuses that the server sends arrive without a source error; tonic
/// attaches the transport's error as the source of the ones it makes
/// locally.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable || std::error::Error::source(status).is_some()
}
