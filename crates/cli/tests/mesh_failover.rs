//! Locality: the local datacenter first; another datacenter only when the local one has no
//! healthy instance. Uses the file registry, which carries datacenter and health per instance.

mod support;

use meshplane_runtime::RegistryKind;
use support::{Mesh, orders_to_payments, poll, upstream, via_egress};

fn services(local_health: &str, local: u16, remote: u16) -> String {
    format!(
        "services:\n  - name: payments\n    instances:\n      - {{ id: p-dc1, address: 127.0.0.1, port: {local}, datacenter: dc1, health: {local_health} }}\n      - {{ id: p-dc2, address: 127.0.0.1, port: {remote}, datacenter: dc2 }}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn fails_over_to_another_datacenter_and_back() {
    let (local, remote) = (upstream("dc1").await, upstream("dc2").await);
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), services("passing", local, remote)).expect("write");
    let path = file.path().to_owned();
    let mut mesh = Mesh::start(move |config, _| {
        config.registry = RegistryKind::File;
        config.services_file = Some(path);
    })
    .await;
    let (d, egress) = orders_to_payments();
    mesh.sidecar("orders-1", &d, 2).await;

    assert!(
        poll(|| async {
            via_egress(&mesh.http, egress, "payments", None).await == (200, "dc1".into())
        })
        .await
    );
    for _ in 0..50 {
        assert_eq!(
            via_egress(&mesh.http, egress, "payments", None).await.1,
            "dc1",
            "local first"
        );
    }
    std::fs::write(file.path(), services("critical", local, remote)).expect("write");
    assert!(
        poll(|| async {
            via_egress(&mesh.http, egress, "payments", None).await == (200, "dc2".into())
        })
        .await
    );
    for _ in 0..50 {
        assert_eq!(
            via_egress(&mesh.http, egress, "payments", None).await.1,
            "dc2",
            "failed over"
        );
    }
    std::fs::write(file.path(), services("passing", local, remote)).expect("write");
    assert!(
        poll(|| async { via_egress(&mesh.http, egress, "payments", None).await.1 == "dc1" }).await,
        "back home"
    );
}
