//! The gRPC services: one generic tower service per discovery service name, routing its
//! three methods (stream, delta, fetch) to the protocol drivers.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::codegen::{Body, BoxFuture, StdError};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use super::body::ResponseBody;
use super::delta::DeltaState;
use super::node::PeerInfo;
use super::sotw::SotwState;
use super::stream::{Protocol, drive, parse_type};
use crate::resource::ResourceType;
use crate::status::StreamKind;
use crate::wire::{PartedMessage, Prost, WireDecoder, XdsCodec};

/// Names and methods of one discovery service.
pub trait ServiceSpec: Send + Sync + 'static {
    /// Fully qualified gRPC service name.
    const NAME: &'static str;
    /// State-of-the-world streaming method.
    const STREAM: &'static str;
    /// Delta streaming method.
    const DELTA: &'static str;
    /// Unary fetch method, if the service has one.
    const FETCH: Option<&'static str>;
    /// The only type served, for per-type services; `None` for ADS.
    const ONLY: Option<ResourceType>;
}

macro_rules! spec {
    ($(#[$doc:meta])* $name:ident, $svc:literal, $stream:literal, $delta:literal, $fetch:expr, $only:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl ServiceSpec for $name {
            const NAME: &'static str = $svc;
            const STREAM: &'static str = $stream;
            const DELTA: &'static str = $delta;
            const FETCH: Option<&'static str> = $fetch;
            const ONLY: Option<ResourceType> = $only;
        }
    };
}

spec!(/// Aggregated discovery (ADS).
    AdsSpec, "envoy.service.discovery.v3.AggregatedDiscoveryService",
    "StreamAggregatedResources", "DeltaAggregatedResources", None, None);
spec!(/// Cluster discovery (CDS).
    CdsSpec, "envoy.service.cluster.v3.ClusterDiscoveryService",
    "StreamClusters", "DeltaClusters", Some("FetchClusters"), Some(ResourceType::Cluster));
spec!(/// Endpoint discovery (EDS).
    EdsSpec, "envoy.service.endpoint.v3.EndpointDiscoveryService",
    "StreamEndpoints", "DeltaEndpoints", Some("FetchEndpoints"), Some(ResourceType::Endpoint));
spec!(/// Listener discovery (LDS).
    LdsSpec, "envoy.service.listener.v3.ListenerDiscoveryService",
    "StreamListeners", "DeltaListeners", Some("FetchListeners"), Some(ResourceType::Listener));
spec!(/// Route discovery (RDS).
    RdsSpec, "envoy.service.route.v3.RouteDiscoveryService",
    "StreamRoutes", "DeltaRoutes", Some("FetchRoutes"), Some(ResourceType::Route));
spec!(/// Secret discovery (SDS).
    SdsSpec, "envoy.service.secret.v3.SecretDiscoveryService",
    "StreamSecrets", "DeltaSecrets", Some("FetchSecrets"), Some(ResourceType::Secret));

/// A discovery service as a tower service for tonic's router.
pub struct DiscoveryService<S> {
    shared: Arc<Shared>,
    spec: PhantomData<fn() -> S>,
}

impl<S> DiscoveryService<S> {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        DiscoveryService {
            shared,
            spec: PhantomData,
        }
    }
}

impl<S> Clone for DiscoveryService<S> {
    fn clone(&self) -> Self {
        DiscoveryService {
            shared: self.shared.clone(),
            spec: PhantomData,
        }
    }
}

impl<S: ServiceSpec> NamedService for DiscoveryService<S> {
    const NAME: &'static str = S::NAME;
}

fn peer_info<T>(req: &Request<T>) -> PeerInfo {
    super::node::peer_from_extensions(req.extensions())
}

/// Starts a stream: decodes requests with prost, spawns the protocol driver, and answers
/// with a [`ResponseBody`] that writes responses from the resources' shared bytes.
fn stream_response<P, B>(
    shared: Arc<Shared>,
    only: Option<ResourceType>,
    kind: StreamKind,
    state: P,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    P: Protocol,
    P::Response: PartedMessage + Unpin,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let _ = only;
    let (parts, body) = req.into_parts();
    let peer = super::node::peer_from_extensions(&parts.extensions);
    let requests = Streaming::new_request(
        WireDecoder::<P::Request>::default(),
        body,
        None,
        Some(shared.config.max_request_bytes),
    );
    let (tx, rx) = mpsc::channel(shared.config.stream_buffer);
    tokio::spawn(drive(shared, state, kind, peer, requests, tx));
    let mut response = http::Response::new(tonic::body::Body::new(ResponseBody::new(rx)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Answers `Fetch*` from the current snapshot.
struct FetchHandler {
    shared: Arc<Shared>,
    only: ResourceType,
}

impl tonic::codegen::Service<Request<DiscoveryRequest>> for FetchHandler {
    type Response = Response<Prost<DiscoveryResponse>>;
    type Error = Status;
    type Future = std::future::Ready<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<DiscoveryRequest>) -> Self::Future {
        std::future::ready(self.fetch(req))
    }
}

impl FetchHandler {
    fn fetch(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<Prost<DiscoveryResponse>>, Status> {
        let peer = peer_info(&req);
        let req = req.into_inner();
        let kind = parse_type(&req.type_url, Some(self.only))?;
        let node = req
            .node
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("a fetch request must carry `node`"))?;
        let group = self.shared.grouper.group(node, &peer)?;
        let snapshot = self.shared.cache.snapshot(&group).ok_or_else(|| {
            Status::unavailable("no configuration computed for this proxy yet; retry")
        })?;
        let (version, resources) = SotwState::fetch(kind, &req.resource_names, &snapshot);
        Ok(Response::new(Prost(DiscoveryResponse {
            version_info: version,
            resources: resources.iter().map(|r| r.to_any()).collect(),
            type_url: kind.type_url().to_owned(),
            ..Default::default()
        })))
    }
}

impl<S: ServiceSpec, B> tonic::codegen::Service<http::Request<B>> for DiscoveryService<S>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let shared = self.shared.clone();
        let (max_in, max_out) = (
            shared.config.max_request_bytes,
            shared.config.max_response_bytes,
        );
        Box::pin(async move {
            let response = if method == S::STREAM {
                stream_response(
                    shared,
                    S::ONLY,
                    StreamKind::Sotw,
                    SotwState::new(S::ONLY),
                    req,
                )
            } else if method == S::DELTA {
                stream_response(
                    shared,
                    S::ONLY,
                    StreamKind::Delta,
                    DeltaState::new(S::ONLY),
                    req,
                )
            } else if let (Some(fetch), Some(only)) = (S::FETCH, S::ONLY)
                && fetch == method
            {
                tonic::server::Grpc::new(
                    XdsCodec::<Prost<DiscoveryResponse>, DiscoveryRequest>::default(),
                )
                .apply_max_message_size_config(Some(max_in), Some(max_out))
                .unary(FetchHandler { shared, only }, req)
                .await
            } else {
                Status::unimplemented(format!("{}/{method} is not implemented", S::NAME))
                    .into_http()
            };
            Ok(response)
        })
    }
}
