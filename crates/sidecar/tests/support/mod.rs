//! Shared test scaffolding: an in-process xDS server, a fake Consul agent, a tiny app, and a
//! sidecar run in-process whose Envoys are reaped whatever happens.
#![allow(dead_code, clippy::unwrap_used)]

pub mod registry;
pub mod xds;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshplane_sidecar::{
    ControlPlaneAddr, Outcome, Sidecar, SidecarConfig, SidecarError, SidecarStatus,
};
use meshplane_test_support::envoy::envoy_binary;
use meshplane_test_support::eventually;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long anything involving a real Envoy may take to converge.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// A port free on 127.0.0.1 right now, never handed out twice in this test process, below
/// the kernel's ephemeral range.
pub fn free_port() -> u16 {
    meshplane_sidecar::envoy::free_loopback_port().unwrap()
}

/// Whether process `pid` exists (not yet reaped).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A process's command line.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A tiny app: `/status/health` answers `ok`, `/slow` answers after 300ms (to be in flight
/// during a hot restart), everything else `hello from the app`.
pub async fn start_app() -> (SocketAddr, JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/status/health", axum::routing::get(|| async { "ok" }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow hello"
            }),
        )
        .fallback(|| async { "hello from the app" });
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// Writes a descriptor for `service` and returns its path (inside `dir`).
pub fn write_descriptor(dir: &Path, service: &str, app_port: u16, ingress_port: u16) -> PathBuf {
    let path = dir.join("meshplane.yaml");
    let text = format!(
        "service: {service}\nport: {app_port}\ningress: {{ port: {ingress_port} }}\n\
         tags: [canary]\nweight: 40\nmtls: disabled\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A CA and a certificate for the descriptor's service, written under `dir` (what a
/// deployment puts on the host).
pub fn host_certs(dir: &Path, descriptor: &Path) -> meshplane_sidecar::config::XdsClientTls {
    let text = std::fs::read_to_string(descriptor).unwrap();
    let service = meshplane_model::Descriptor::from_yaml(&text)
        .unwrap()
        .service;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        meshplane_model::identity::spiffe_id("meshplane.local", &service)
            .try_into()
            .unwrap(),
    )];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let files = meshplane_sidecar::config::XdsClientTls {
        cert_file: dir.join("host.crt"),
        key_file: dir.join("host.key"),
        ca_file: dir.join("ca.crt"),
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    std::fs::write(&files.ca_file, ca.pem()).unwrap();
    files
}

/// A config for tests: quiet single-threaded Envoy, short drains, files under `dir`.
pub fn test_config(
    dir: &Path,
    descriptor: PathBuf,
    xds: SocketAddr,
    registry: SocketAddr,
) -> SidecarConfig {
    let mut c = SidecarConfig::new(
        descriptor,
        vec![ControlPlaneAddr {
            host: xds.ip().to_string(),
            port: xds.port(),
        }],
    );
    c.registry = vec![format!("http://{registry}")];
    c.host_certs = Some(host_certs(dir, &c.descriptor));
    c.envoy = Some(envoy_binary());
    c.work_dir = Some(dir.to_owned());
    c.envoy_log_level = "warning".to_owned();
    c.envoy_concurrency = Some(1);
    c.drain.drain_time = Duration::from_secs(1);
    c.drain.parent_shutdown_time = Duration::from_secs(2);
    c.drain.stop_timeout = Duration::from_secs(5);
    c.crash.backoff_initial = Duration::from_millis(50);
    c.check.interval = Duration::from_secs(1);
    c
}

/// A sidecar running in-process. Dropping it kills every Envoy it knows of.
pub struct RunningSidecar {
    pub status: watch::Receiver<SidecarStatus>,
    shutdown: CancellationToken,
    hot_restart_tx: mpsc::Sender<()>,
    task: Option<JoinHandle<Result<Outcome, SidecarError>>>,
}

impl RunningSidecar {
    pub fn start(config: SidecarConfig) -> Self {
        let sidecar = Sidecar::new(config);
        let status = sidecar.status();
        let shutdown = CancellationToken::new();
        let (hot_restart_tx, hot_restart_rx) = mpsc::channel(1);
        let task = tokio::spawn(sidecar.run(shutdown.clone(), hot_restart_rx));
        RunningSidecar {
            status,
            shutdown,
            hot_restart_tx,
            task: Some(task),
        }
    }

    /// Waits until `check` holds for the status.
    pub async fn wait_for<T>(&self, what: &str, check: impl Fn(&SidecarStatus) -> Option<T>) -> T {
        eventually(what, CONVERGE, || {
            let status = self.status.borrow().clone();
            let found = check(&status);
            async move { found.ok_or_else(|| format!("status: {status:?}")) }
        })
        .await
    }

    /// The current Envoy's pid, once there is one.
    pub async fn current_pid(&self) -> u32 {
        self.wait_for("a running Envoy", |s| s.current.map(|p| p.pid))
            .await
    }

    pub async fn hot_restart(&self) {
        self.hot_restart_tx.send(()).await.unwrap();
    }

    /// Like SIGTERM: stops and returns how the sidecar ended.
    pub async fn stop(mut self) -> Outcome {
        self.shutdown.cancel();
        self.join().await
    }

    /// Waits for the sidecar to end by itself.
    pub async fn join(&mut self) -> Outcome {
        let task = self.task.take().unwrap();
        tokio::time::timeout(CONVERGE, task)
            .await
            .expect("sidecar ends")
            .unwrap()
            .unwrap()
    }
}

impl Drop for RunningSidecar {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let s = self.status.borrow();
        for p in s.current.iter().chain(s.draining.iter()) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &p.pid.to_string()])
                .status();
        }
    }
}
