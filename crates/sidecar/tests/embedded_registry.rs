//! Against Meshplane's real embedded registry: the instance appears with the Envoy ingress
//! port and a passing check (the registry really calls the health path through Envoy), and
//! disappears when the sidecar stops.
#![allow(clippy::unwrap_used)]

mod support;

use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use meshplane_sidecar::Outcome;
use meshplane_test_support::eventually;
use serde_json::Value;
use support::xds::Xds;
use support::{CONVERGE, RunningSidecar, free_port};
use tokio_util::sync::CancellationToken;

async fn health(url: &str) -> Result<Vec<Value>, String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    r.json::<Vec<Value>>().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_a_passing_check_and_deregisters() {
    let dir = tempfile::tempdir().unwrap();
    let registry = EmbeddedRegistry::bind(EmbeddedConfig {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("registry"),
        token: Some("t0k".into()),
        ..EmbeddedConfig::default()
    })
    .await
    .unwrap();
    let registry_addr = registry.local_addr();
    let registry_shutdown = CancellationToken::new();
    tokio::spawn(registry.serve(registry_shutdown.clone()));
    let _stop_registry = registry_shutdown.drop_guard();

    let (app, _) = support::start_app().await;
    let ingress_port = free_port();
    let xds = Xds::start().await;
    xds.publish_ingress("inventory", ingress_port, app.port());
    let descriptor = support::write_descriptor(dir.path(), "inventory", app.port(), ingress_port);
    let mut config = support::test_config(dir.path(), descriptor, xds.addr, registry_addr);
    config.instance_id = Some(format!("inventory-test-{ingress_port}"));
    config.token = Some("t0k".into());
    let sidecar = RunningSidecar::start(config);

    let url = format!("http://{registry_addr}/v1/health/service/inventory?passing");
    let entry = eventually("a passing instance in the registry", CONVERGE, || {
        let url = url.clone();
        async move {
            let entries = health(&url).await?;
            entries
                .into_iter()
                .next()
                .ok_or_else(|| "no passing instance yet".to_owned())
        }
    })
    .await;
    assert_eq!(entry["Service"]["Port"], ingress_port, "{entry}");
    assert_eq!(entry["Service"]["Weights"]["Passing"], 40, "{entry}");
    let check = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Type"] == "http")
        .unwrap();
    assert_eq!(check["Status"], "passing", "{check}");

    assert_eq!(sidecar.stop().await, Outcome::Stopped);
    let all = format!("http://{registry_addr}/v1/health/service/inventory");
    assert_eq!(
        health(&all).await.unwrap(),
        Vec::<Value>::new(),
        "deregistered"
    );
}
