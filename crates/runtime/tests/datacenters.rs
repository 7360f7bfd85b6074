//! Two control planes in two datacenters on 127.0.0.1: dc1 follows dc2 (`--remote-datacenters`)
//! through dc2's admin API, and never re-exports what it learned.

use std::time::Duration;

use meshplane_runtime::ControlPlaneConfig;
use meshplane_test_support::eventually;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A registration in dc2 is in dc1's registry within this (measured: milliseconds; the
/// cross-datacenter target is 1 s to reachable, translation and push included).
const REMOTE_REGISTRATION_WITHIN: Duration = Duration::from_secs(1);

fn config(datacenter: &str, data: &tempfile::TempDir) -> ControlPlaneConfig {
    let any = "127.0.0.1:0".parse().expect("address");
    ControlPlaneConfig {
        xds_addr: any,
        admin_addr: any,
        registry_addr: any,
        data_dir: data.path().to_owned(),
        datacenter: datacenter.into(),
        ..ControlPlaneConfig::default()
    }
}

async fn register(http: &reqwest::Client, registry: std::net::SocketAddr, id: &str, address: &str) {
    let response = http
        .put(format!("http://{registry}/v1/agent/service/register"))
        .json(&json!({"Name": "payments", "ID": id, "Address": address, "Port": 31001}))
        .send()
        .await
        .expect("register");
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_learns_another_datacenters_instances_and_keeps_them_its_own() {
    let shutdown = CancellationToken::new();
    let (data1, data2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let dc2 = meshplane_runtime::control_plane::start(config("dc2", &data2), shutdown.clone())
        .await
        .expect("dc2");
    let dc1 = meshplane_runtime::control_plane::start(
        ControlPlaneConfig {
            remote_datacenters: Some(format!("dc2=http://{}", dc2.admin_addr)),
            ..config("dc1", &data1)
        },
        shutdown.clone(),
    )
    .await
    .expect("dc1");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let (store1, store2) = (dc1.store.clone(), dc2.store.clone());
    let (registry1, registry2) = (
        dc1.registry_addr.expect("dc1 registry"),
        dc2.registry_addr.expect("dc2 registry"),
    );
    let admin1 = dc1.admin_addr;
    let s = shutdown.clone();
    let serving = tokio::spawn(async move {
        let (a, b) = tokio::join!(dc1.wait(s.clone()), dc2.wait(s));
        a.and(b)
    });

    register(&http, registry1, "payments-1", "10.0.1.1").await;
    let started = tokio::time::Instant::now();
    register(&http, registry2, "payments-2", "10.0.2.1").await;
    let datacenters = |store: &meshplane_registry::Store| {
        store
            .snapshot()
            .service("payments")
            .map(|e| {
                e.instances
                    .iter()
                    .map(|i| (i.id.to_string(), i.locality.datacenter.clone()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    eventually(
        "dc2's instance in dc1's registry",
        REMOTE_REGISTRATION_WITHIN,
        || async {
            datacenters(&store1)
                == [
                    ("payments-1".to_owned(), "dc1".to_owned()),
                    ("payments-2".to_owned(), "dc2".to_owned()),
                ]
        },
    )
    .await;
    eprintln!("dc2 registration → dc1 registry: {:?}", started.elapsed());
    // dc2 does not follow dc1: it has only its own.
    assert_eq!(
        datacenters(&store2),
        [("payments-2".to_owned(), "dc2".to_owned())]
    );
    // dc1 exports its own instance only, never what it learned from dc2.
    let export: serde_json::Value = http
        .get(format!("http://{admin1}/api/datacenters/local-state"))
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("json");
    assert_eq!(export["datacenter"], "dc1");
    let services = export["services"].as_object().expect("services");
    let ids: Vec<&str> = services
        .values()
        .flat_map(|instances| instances.as_array().into_iter().flatten())
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["payments-1"], "{export}");
    let followed: serde_json::Value = http
        .get(format!("http://{admin1}/api/datacenters"))
        .send()
        .await
        .expect("datacenters")
        .json()
        .await
        .expect("json");
    assert_eq!(followed["datacenter"], "dc1");
    let dc2_view = &followed["remote"][0];
    assert_eq!(dc2_view["datacenter"], "dc2", "{followed}");
    assert_eq!(dc2_view["state"], "fresh", "{followed}");
    assert_eq!(dc2_view["instances"], 1, "{followed}");
    assert!(dc2_view["last_answer_seconds"].is_number(), "{followed}");
    let metrics = http
        .get(format!("http://{admin1}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("meshplane_registry_source_up{source=\"datacenter/dc2\"} 1"),
        "{metrics}"
    );
    let ready = http
        .get(format!("http://{admin1}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert!(ready.status().is_success());
    shutdown.cancel();
    serving.await.expect("join").expect("control planes");
}
