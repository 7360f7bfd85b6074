//! Two control-plane instances compare what they compute: `/api/consistency` names the
//! services and groups that differ.

mod support;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshplane_runtime::RegistryKind;
use support::{Mesh, caller, descriptor_node, free_port, poll};

/// An in-process ADS client that connects with `descriptor` as node metadata and stays open.
async fn connect_proxy(
    xds: std::net::SocketAddr,
    id: &str,
    descriptor: &str,
) -> (
    tokio::sync::mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
) {
    let node = descriptor_node(id, descriptor);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .expect("xds");
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    })
    .await
    .expect("send");
    stream.message().await.expect("response").expect("clusters");
    (tx, stream)
}

fn services(port: u16, extra: &str) -> String {
    format!(
        "services:\n  - name: payments\n    instances:\n      - {{ id: p1, address: 127.0.0.1, port: {port} }}\n{extra}"
    )
}

async fn control_plane(file: &std::path::Path, admin: u16, peer_admin: u16) -> Mesh {
    let path = file.to_owned();
    Mesh::start(move |config, _| {
        config.registry = RegistryKind::File;
        config.services_file = Some(path);
        config.admin_addr = ([127, 0, 0, 1], admin).into();
        config.peers = vec![format!("http://127.0.0.1:{peer_admin}")];
    })
    .await
}

async fn report(mesh: &Mesh) -> serde_json::Value {
    let url = format!("http://{}/api/consistency", mesh.cp.admin_addr);
    mesh.http
        .get(url)
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_that_disagree_are_reported_with_the_differences() {
    let dir = tempfile::tempdir().expect("tmp");
    let (file_a, file_b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(&file_a, services(9001, "")).expect("write");
    std::fs::write(&file_b, services(9001, "")).expect("write");
    let (admin_a, admin_b) = (free_port(), free_port());
    let a = control_plane(&file_a, admin_a, admin_b).await;
    let b = control_plane(&file_b, admin_b, admin_a).await;
    // A proxy with the same descriptor on each instance: the same group on both.
    let d = caller("orders", 8080, 31001, 31000, "  - service: payments\n");
    let _proxy_a = connect_proxy(a.cp.xds_addr, "orders-a", &d).await;
    let _proxy_b = connect_proxy(b.cp.xds_addr, "orders-b", &d).await;

    assert!(
        poll(|| async { report(&a).await["consistent"] == true }).await,
        "{}",
        report(&a).await
    );
    let r = report(&a).await;
    assert_eq!(
        r["peers"][0]["differences"].as_array().map(Vec::len),
        Some(0),
        "{r}"
    );

    // B's registry diverges: another instance of payments, and a service A lacks.
    std::fs::write(&file_b, services(9002, "  - name: billing\n    instances:\n      - { id: b1, address: 127.0.0.1, port: 9003 }\n"))
        .expect("write");
    // B's store changes before B re-translates the group: wait for all three differences.
    let differences = |r: serde_json::Value| -> Vec<String> {
        r["peers"][0]["differences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let complete = |d: &[String]| {
        d.contains(&"service `payments`: instances differ".to_owned())
            && d.contains(&"service `billing`: only on the peer".to_owned())
            && d.iter().any(|d| {
                d.starts_with("group `orders-") && d.ends_with("translated configuration differs")
            })
    };
    assert!(
        poll(|| async {
            let r = report(&a).await;
            r["consistent"] == false && complete(&differences(r))
        })
        .await,
        "{:?}",
        differences(report(&a).await)
    );
    // And B sees the same disagreement from its side.
    assert_eq!(report(&b).await["consistent"], false);
}
