//! The sidecar with a real Envoy: registration once Envoy is live (retrying while the
//! registry is down), deregistration and a reaped Envoy on stop, restart after a crash, and
//! giving up with Envoy's exit code when it keeps crashing.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use meshplane_sidecar::Outcome;
use meshplane_sidecar::envoy::EnvoyExit;
use meshplane_test_support::eventually;
use serde_json::json;
use support::registry::{Call, FakeRegistry};
use support::xds::Xds;
use support::{CONVERGE, RunningSidecar, free_port, process_exists};

struct Mesh {
    _dir: tempfile::TempDir,
    xds: Xds,
    registry: FakeRegistry,
    registry_port: u16,
    ingress_port: u16,
    config: meshplane_sidecar::SidecarConfig,
}

async fn mk_mesh(service: &str) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = support::start_app().await;
    let ingress_port = free_port();
    let xds = Xds::start().await;
    xds.publish_ingress(service, ingress_port, app.port());
    let registry_port = free_port();
    let descriptor = support::write_descriptor(dir.path(), service, app.port(), ingress_port);
    let registry_addr = ([127, 0, 0, 1], registry_port).into();
    let mut config = support::test_config(dir.path(), descriptor, xds.addr, registry_addr);
    config.instance_id = Some(format!("{service}-test-{ingress_port}"));
    Mesh {
        _dir: dir,
        xds,
        registry: FakeRegistry::default(),
        registry_port,
        ingress_port,
        config,
    }
}

async fn get(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("status {}", r.status()));
    }
    r.text().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_ingress_port_once_live_and_deregisters_on_stop() {
    let mut mesh = mk_mesh("orders").await;
    mesh.config.token = Some("s3cret".into());
    let id = mesh.config.instance_id.clone().unwrap();
    // The registry is down at first: the sidecar must keep trying, not crash.
    let sidecar = RunningSidecar::start(mesh.config.clone());
    let pid = sidecar.current_pid().await;
    eventually("Envoy to be live", CONVERGE, || {
        let url = format!("http://127.0.0.1:{}/", mesh.ingress_port);
        async move { get(&url).await }
    })
    .await;
    mesh.registry.serve_on(mesh.registry_port).await;
    let registry = mesh.registry.clone();
    let body = eventually("a registration", CONVERGE, || {
        let found = registry.registrations().first().cloned();
        async move { found.ok_or_else(|| "none yet".to_owned()) }
    })
    .await;
    assert_eq!(body["ID"], json!(id));
    assert_eq!(body["Name"], "orders");
    assert_eq!(
        body["Port"],
        json!(mesh.ingress_port),
        "the Envoy ingress port, not the app's"
    );
    assert_eq!(body["Weights"], json!({ "Passing": 40, "Warning": 1 }));
    assert_eq!(body["Tags"], json!(["canary", "meshplane-metrics"]));
    assert_eq!(body["Meta"]["mtls"], "disabled");
    let metrics_port = body["Meta"]["metrics_port"].as_str().unwrap_or_default();
    assert!(
        metrics_port.parse::<u16>().is_ok_and(|p| p != 0),
        "the scrape port the sidecar picked: {body}"
    );
    let check_url = body["Check"]["HTTP"].as_str().unwrap().to_owned();
    assert_eq!(
        check_url,
        format!("http://127.0.0.1:{}/status/health", mesh.ingress_port)
    );
    assert_eq!(
        get(&check_url).await.unwrap(),
        "ok",
        "the check reaches the app through Envoy"
    );
    assert!(
        matches!(&mesh.registry.calls()[0], Call::Register { token: Some(t), .. } if t == "s3cret")
    );
    sidecar
        .wait_for("registered", |s| s.registered.then_some(()))
        .await;

    assert_eq!(sidecar.stop().await, Outcome::Stopped);
    assert_eq!(mesh.registry.deregistrations(), vec![id]);
    assert!(!process_exists(pid), "Envoy {pid} is stopped and reaped");
    assert!(
        get(&check_url).await.is_err(),
        "nothing listens on the ingress port any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_envoy_after_a_crash() {
    let mesh = mk_mesh("payments").await;
    mesh.registry.serve_on(mesh.registry_port).await;
    let sidecar = RunningSidecar::start(mesh.config.clone());
    let first = sidecar.current_pid().await;
    sidecar
        .wait_for("registered", |s| s.registered.then_some(()))
        .await;
    let url = format!("http://127.0.0.1:{}/", mesh.ingress_port);
    assert_eq!(get(&url).await.unwrap(), "hello from the app");

    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    let second = sidecar
        .wait_for("a new Envoy", |s| {
            s.current.map(|p| p.pid).filter(|p| *p != first)
        })
        .await;
    assert_eq!(sidecar.status.borrow().crash_restarts, 1);
    eventually("traffic through the restarted Envoy", CONVERGE, || {
        let url = url.clone();
        async move { get(&url).await }
    })
    .await;
    let registry = mesh.registry.clone();
    eventually("a re-registration", CONVERGE, || {
        let n = registry.registrations().len();
        async move {
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} registrations"))
            }
        }
    })
    .await;
    assert!(!process_exists(first));
    assert_eq!(sidecar.stop().await, Outcome::Stopped);
    assert!(!process_exists(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_with_envoys_exit_code_when_it_keeps_crashing() {
    let mut mesh = mk_mesh("flaky").await;
    mesh.registry.serve_on(mesh.registry_port).await;
    mesh.config.crash.max_crashes = 1;
    mesh.config.crash.window = Duration::from_secs(600);
    let id = mesh.config.instance_id.clone().unwrap();
    let mut sidecar = RunningSidecar::start(mesh.config.clone());
    let first = sidecar.current_pid().await;
    sidecar
        .wait_for("registered", |s| s.registered.then_some(()))
        .await;
    std::process::Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    let second = sidecar
        .wait_for("a new Envoy", |s| {
            s.current.map(|p| p.pid).filter(|p| *p != first)
        })
        .await;
    std::process::Command::new("kill")
        .args(["-9", &second.to_string()])
        .status()
        .unwrap();
    let outcome = sidecar.join().await;
    assert_eq!(outcome, Outcome::EnvoyFailed(EnvoyExit::Signal(9)));
    assert_eq!(outcome.exit_code(), 137);
    assert_eq!(
        mesh.registry.deregistrations(),
        vec![id],
        "deregistered before giving up"
    );
    drop(mesh.xds);
}
