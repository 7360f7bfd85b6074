//! An in-process ADS client against a real server on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshplane_test_support::grouper::ServiceGrouper;
use meshplane_xds::{ServerConfig, SnapshotCache, XdsObserver, XdsServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is observed for.
pub const QUIET: Duration = Duration::from_millis(300);

pub struct Harness {
    pub addr: SocketAddr,
    pub cache: SnapshotCache,
    pub server: XdsServer,
    pub shutdown: CancellationToken,
    pub served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_observed(None).await
    }

    /// A server that also reports every stream's events to `observer`.
    pub async fn start_observed(observer: Option<Arc<dyn XdsObserver>>) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cache = SnapshotCache::new();
        let shutdown = CancellationToken::new();
        let mut server = XdsServer::new(
            cache.clone(),
            Arc::new(ServiceGrouper::with_metadata_limits()),
            ServerConfig::default(),
            shutdown.clone(),
        );
        if let Some(observer) = observer {
            server = server.with_observer(observer);
        }
        let served = tokio::spawn(server.clone().serve(listener));
        Harness {
            addr,
            cache,
            server,
            shutdown,
            served,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn sotw(&self) -> SotwClient {
        SotwClient::open(self.channel().await).await
    }

    pub async fn delta(&self) -> DeltaClient {
        DeltaClient::open(self.channel().await).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.served.abort();
    }
}

pub fn mk_node(id: &str, service: &str) -> Node {
    Node {
        id: id.into(),
        cluster: service.into(),
        ..Default::default()
    }
}

pub struct SotwClient {
    pub tx: mpsc::Sender<DiscoveryRequest>,
    pub rx: Streaming<DiscoveryResponse>,
}

impl SotwClient {
    pub async fn open(channel: Channel) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        SotwClient { tx, rx }
    }

    pub async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    /// The next response, or the stream's error status.
    pub async fn next(&mut self) -> Result<DiscoveryResponse, Status> {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => Err(Status::cancelled("stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }

    pub async fn expect(&mut self) -> DiscoveryResponse {
        self.next().await.expect("a response")
    }

    /// Asserts nothing arrives for a while.
    pub async fn expect_silence(&mut self) {
        if let Ok(r) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {r:?}");
        }
    }

    pub async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            type_url: r.type_url.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }
}

pub struct DeltaClient {
    pub tx: mpsc::Sender<DeltaDiscoveryRequest>,
    pub rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    pub async fn open(channel: Channel) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        DeltaClient { tx, rx }
    }

    pub async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    pub async fn expect(&mut self) -> DeltaDiscoveryResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub async fn expect_silence(&mut self) {
        if let Ok(r) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {r:?}");
        }
    }

    pub async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

pub fn names_of(r: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    r.resources
        .iter()
        .map(|any| match any.type_url.as_str() {
            t if t.ends_with("Cluster") => {
                envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(any.value.as_slice())
                    .expect("cluster")
                    .name
            }
            t if t.ends_with("ClusterLoadAssignment") => {
                envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                    any.value.as_slice(),
                )
                .expect("cla")
                .cluster_name
            }
            t if t.ends_with("Listener") => {
                envoy_types::pb::envoy::config::listener::v3::Listener::decode(any.value.as_slice())
                    .expect("listener")
                    .name
            }
            t if t.ends_with("RouteConfiguration") => {
                envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
                    any.value.as_slice(),
                )
                .expect("route")
                .name
            }
            other => panic!("unexpected type {other}"),
        })
        .collect()
}
