//! Bad input gets a clear gRPC status on that stream only; other streams carry on.

mod support;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints};
use meshplane_xds::{GroupKey, ResourceType, Snapshot};
use support::{Harness, mk_node};
use tonic::Code;

async fn healthy_stream_still_served(h: &Harness) {
    let mut other = h.sotw().await;
    other
        .send(DiscoveryRequest {
            node: Some(mk_node("healthy-1", "orders")),
            type_url: ResourceType::Cluster.type_url().into(),
            ..Default::default()
        })
        .await;
    let r = other.expect().await;
    assert_eq!(support::names_of(&r), vec!["payments".to_string()]);
}

async fn publish(h: &Harness) {
    let snapshot = Snapshot::new([mk_eds_cluster("payments"), mk_endpoints("payments", &[])])
        .expect("consistent");
    h.cache
        .set_snapshot(&GroupKey::new("orders"), snapshot)
        .expect("published");
}

#[tokio::test]
async fn first_request_without_node_is_invalid_argument() {
    let h = Harness::start().await;
    publish(&h).await;
    let mut bad = h.sotw().await;
    bad.send(DiscoveryRequest {
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    let status = bad.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("must carry `node`"),
        "{}",
        status.message()
    );
    healthy_stream_still_served(&h).await;
}

#[tokio::test]
async fn unknown_type_url_is_invalid_argument() {
    let h = Harness::start().await;
    publish(&h).await;
    let mut bad = h.sotw().await;
    bad.send(DiscoveryRequest {
        node: Some(mk_node("bad-1", "orders")),
        type_url: "type.googleapis.com/envoy.config.core.v3.Nonsense".into(),
        ..Default::default()
    })
    .await;
    let status = bad.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("Nonsense"),
        "{}",
        status.message()
    );
    healthy_stream_still_served(&h).await;
    // The refused proxy does not linger in the status board.
    let proxies = h.server.status().proxies();
    assert!(
        proxies.iter().all(|p| p.stream.node_id != "bad-1"),
        "{proxies:?}"
    );
}

#[tokio::test]
async fn unknown_type_later_in_the_stream_ends_only_that_stream() {
    let h = Harness::start().await;
    publish(&h).await;
    let mut bad = h.sotw().await;
    bad.send(DiscoveryRequest {
        node: Some(mk_node("bad-1", "orders")),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    bad.expect().await;
    bad.send(DiscoveryRequest {
        type_url: "garbage".into(),
        ..Default::default()
    })
    .await;
    let status = bad.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("type.googleapis.com/"),
        "{}",
        status.message()
    );
    healthy_stream_still_served(&h).await;
}

#[tokio::test]
async fn garbage_metadata_is_invalid_argument() {
    // Deeper than the grouper allows, but decodable.
    garbage_metadata_case(30, "nested too deeply").await;
    // Deeper than protobuf decoding allows.
    garbage_metadata_case(64, "malformed xDS request").await;
}

async fn garbage_metadata_case(depth: usize, expected: &str) {
    let h = Harness::start().await;
    publish(&h).await;
    let mut deep = Value {
        kind: Some(Kind::StringValue("x".into())),
    };
    for _ in 0..depth {
        deep = Value {
            kind: Some(Kind::ListValue(ListValue { values: vec![deep] })),
        };
    }
    let mut node = mk_node("bad-1", "orders");
    node.metadata = Some(Struct {
        fields: [("service".to_string(), deep)].into_iter().collect(),
    });
    let mut bad = h.sotw().await;
    bad.send(DiscoveryRequest {
        node: Some(node),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    let status = bad.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains(expected), "{}", status.message());
    healthy_stream_still_served(&h).await;
}

#[tokio::test]
async fn node_without_id_is_invalid_argument() {
    let h = Harness::start().await;
    publish(&h).await;
    let mut bad = h.sotw().await;
    bad.send(DiscoveryRequest {
        node: Some(mk_node("", "orders")),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    let status = bad.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("node.id"), "{}", status.message());
    healthy_stream_still_served(&h).await;
}

#[tokio::test]
async fn wrong_type_on_a_per_type_service_is_invalid_argument() {
    use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    let h = Harness::start().await;
    publish(&h).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = ClusterDiscoveryServiceClient::new(h.channel().await);
    let mut stream = client
        .stream_clusters(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("opens")
        .into_inner();
    tx.send(DiscoveryRequest {
        node: Some(mk_node("cds-1", "orders")),
        type_url: ResourceType::Listener.type_url().into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let status = stream.message().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("CDS service"),
        "{}",
        status.message()
    );
    healthy_stream_still_served(&h).await;
}
