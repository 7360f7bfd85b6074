//! High availability (README, "High availability"): two `meshplane control-plane` processes
//! follow the same registry (`--registry consul`, the registry being a third `meshplane
//! control-plane` whose embedded registry speaks Consul's API) and share one CA
//! (`--ca-cert/--ca-key`); real sidecars are given both (`--control-plane A,B`). The one the
//! proxies are connected to is killed (SIGKILL) or hung (SIGSTOP) during continuous traffic,
//! then brought back.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use meshplane_sidecar::bootstrap::XDS_HANG_DETECTED_WITHIN;
use meshplane_test_support::process::{Paused, pause};
use meshplane_test_support::{eventually, hold};
use serde_json::Value;
use support::{MeshplaneProcess, TestCa, caller, envoy_stat, free_port, upstream, via_egress};
use tokio::time::Instant;

/// After the control plane the proxies use dies, every proxy's xDS stream is on the other
/// instance within this (Envoy ejects the dead address on its first refused connect and
/// retries within 0.5 s; measured 0.1–0.3 s). A hung one is left once Envoy's PING goes
/// unanswered: [`XDS_HANG_DETECTED_WITHIN`] more.
const MOVED_WITHIN: Duration = Duration::from_secs(5);

/// A registration made while one instance is down reaches every proxy within this.
const REGISTRATION_REACHES_PROXIES_WITHIN: Duration = Duration::from_secs(5);

/// How long the restarted instance is watched for proxies coming back or config re-sent.
const AFTER_RESTART_WINDOW: Duration = Duration::from_secs(3);

/// A resumed instance drops the streams the proxies closed while it was stopped within this.
const STALE_STREAMS_DROPPED_WITHIN: Duration = Duration::from_secs(2);

/// Envoy's counters of configuration updates it accepted.
const UPDATES: [&str; 2] = [
    "cluster_manager.cds.update_success",
    "listener_manager.lds.update_success",
];

/// The sidecars [`Ha::start`] starts (instance ids).
const PROXIES: [&str; 2] = ["orders-1", "payments-1"];

/// How the control plane in use is taken away, and brought back.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGKILL (the kernel resets its connections), then a new process on the same ports.
    Killed,
    /// SIGSTOP (connections stay open, nothing answers: a frozen VM), then SIGCONT.
    Hung,
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_leave_a_killed_control_plane_without_a_failed_request() {
    failover(Outage::Killed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_leave_a_hung_control_plane_without_a_failed_request() {
    failover(Outage::Hung).await;
}

/// Two control planes, two sidecars given both, traffic between them; the control plane the
/// proxies use goes away: no request fails, every proxy moves to the other within
/// [`MOVED_WITHIN`] and receives nothing it holds again, a registration made meanwhile
/// reaches every proxy; it comes back: the proxies stay where they are and receive nothing.
async fn failover(outage: Outage) {
    let mut ha = Ha::start().await;
    let traffic = Traffic::start(&ha.http, ha.orders_egress, "payments");

    let paused = match outage {
        Outage::Killed => {
            ha.a.kill();
            None
        }
        Outage::Hung => Some(ha.a.pause()),
    };
    let faulted = Instant::now();
    let moved_within = match outage {
        Outage::Killed => MOVED_WITHIN,
        Outage::Hung => MOVED_WITHIN + XDS_HANG_DETECTED_WITHIN,
    };
    eventually("every proxy's xDS stream on B", moved_within, || {
        connected(&ha.http, ha.b.admin, &PROXIES)
    })
    .await;
    eprintln!(
        "{outage:?}: proxies on B {:?} after the fault",
        faulted.elapsed()
    );
    ha.nothing_held_was_sent_again().await;
    ha.a_registration_reaches_every_proxy().await;
    if let Outage::Killed = outage {
        // A hung instance would hold a new sidecar's certificate request until its timeout.
        ha.a_sidecar_started_meanwhile_enrols_at_b_and_is_trusted()
            .await;
    }

    let responses_before = responses(&ha.http, ha.b.admin, &PROXIES)
        .await
        .expect("B's proxies");
    let updates_before = envoy_updates(&ha.http, &ha.sidecars).await;
    match paused {
        Some(paused) => paused.resume().expect("SIGCONT"),
        None => ha.a.start(),
    }
    eventually("A is back and ready", support::DEADLINE, || {
        ready(&ha.http, ha.a.admin)
    })
    .await;
    if let Outage::Hung = outage {
        // The proxies closed their streams to A while it was stopped; A learns it from the
        // closed connections only once it runs again, in no set order with answering its
        // readiness probe, so it may list them for a moment.
        eventually(
            "A, running again, drops the streams the proxies closed",
            STALE_STREAMS_DROPPED_WITHIN,
            || async {
                let on_a = proxies(&ha.http, ha.a.admin).await?;
                match on_a.is_empty() {
                    true => Ok(()),
                    false => Err(format!("proxies on the resumed A: {on_a:?}")),
                }
            },
        )
        .await;
    }
    hold(
        AFTER_RESTART_WINDOW,
        "the proxies stay on B, which sends nothing new, and A has none",
        || async {
            let on_a = proxies(&ha.http, ha.a.admin).await?;
            if !on_a.is_empty() {
                return Err(format!("proxies on the restarted A: {on_a:?}"));
            }
            let now = responses(&ha.http, ha.b.admin, &PROXIES).await?;
            if now != responses_before {
                return Err(format!("B sent more: {responses_before:?} -> {now:?}"));
            }
            Ok(())
        },
    )
    .await;
    assert_eq!(
        envoy_updates(&ha.http, &ha.sidecars).await,
        updates_before,
        "no proxy accepted a configuration update after A came back"
    );

    let (sent, failed) = traffic.finish().await;
    eprintln!("{outage:?}: {sent} requests during the failover, {failed} failed");
    assert!(sent > 100, "traffic kept flowing: {sent} requests");
    assert_eq!(failed, 0, "no request failed during the failover");
    ha.sidecars.stop();
}

/// The mesh: a registry, control planes A and B following it with one CA, and two sidecars
/// given both: `orders` (enrolled at A) calling `payments` (enrolled at B, strict mTLS), each
/// with an egress port.
struct Ha {
    http: reqwest::Client,
    registry: Process,
    a: ControlPlaneProcess,
    b: ControlPlaneProcess,
    sidecars: Sidecars,
    orders_egress: u16,
    payments_egress: u16,
    // Last: the processes above write into it until they are dropped.
    _dir: tempfile::TempDir,
}

impl Ha {
    /// Everything started, traffic flowing, both proxies on A (the first address).
    async fn start() -> Ha {
        let dir = tempfile::tempdir().expect("tmp");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("client");
        let registry = Process::registry(dir.path());
        let ca = TestCa::new(dir.path(), "mesh");
        let mut a = ControlPlaneProcess::new(dir.path(), "a", registry.addr, &ca);
        let mut b = ControlPlaneProcess::new(dir.path(), "b", registry.addr, &ca);
        a.start();
        b.start();
        for cp in [&a, &b] {
            eventually("the control plane is ready", support::DEADLINE, || {
                ready(&http, cp.admin)
            })
            .await;
        }
        let mut sidecars = Sidecars {
            dir: dir.path().to_owned(),
            control_planes: format!("{},{}", a.xds, b.xds),
            registry: registry.addr,
            running: Vec::new(),
        };
        let (orders_egress, payments_egress) = (free_port(), free_port());
        let orders = caller(
            "orders",
            free_port(),
            free_port(),
            orders_egress,
            "  - service: payments\n  - service: refunds\n  - service: ledger\n",
        );
        sidecars
            .start(&http, "orders-1", &orders, &format!("http://{}", a.admin))
            .await;
        // Strict mTLS: orders (enrolled at A) must present a certificate payments (enrolled
        // at B) trusts, which only the shared CA makes possible.
        let payments = callee("payments", upstream("payments").await, payments_egress);
        sidecars
            .start(
                &http,
                "payments-1",
                &payments,
                &format!("http://{}", b.admin),
            )
            .await;
        eventually(
            "payments through both sidecars, over mTLS",
            support::DEADLINE,
            || answers(&http, orders_egress, "payments"),
        )
        .await;
        eventually(
            "both proxies on A, the first address",
            support::DEADLINE,
            || connected(&http, a.admin, &PROXIES),
        )
        .await;
        Ha {
            http,
            registry,
            a,
            b,
            sidecars,
            orders_egress,
            payments_egress,
            _dir: dir,
        }
    }

    /// The proxies report the versions they hold, which B's agree with, so B sends no
    /// cluster, listener or route again (endpoints are sent once by design: a SotW version
    /// names the last EDS response, not what the proxy kept of it).
    async fn nothing_held_was_sent_again(&self) {
        let on_move = responses(&self.http, self.b.admin, &PROXIES)
            .await
            .expect("B's proxies");
        let resent: Vec<_> = on_move
            .iter()
            .filter(|(_, kind, n)| kind != "EDS" && *n > 0)
            .collect();
        assert!(
            resent.is_empty(),
            "B re-sent what the proxies hold: {on_move:?}"
        );
    }

    async fn a_registration_reaches_every_proxy(&self) {
        let refunds = upstream("refunds").await;
        self.registry
            .register(&self.http, "refunds-1", "refunds", refunds)
            .await;
        let registered = Instant::now();
        eventually(
            "refunds (registered while A is down) through both proxies",
            REGISTRATION_REACHES_PROXIES_WITHIN,
            || async {
                answers(&self.http, self.orders_egress, "refunds").await?;
                answers(&self.http, self.payments_egress, "refunds").await
            },
        )
        .await;
        eprintln!(
            "refunds reachable {:?} after its registration",
            registered.elapsed()
        );
    }

    /// A sidecar started while A is down, given A first everywhere (CA, xDS) and a dead
    /// registry address first: it enrols at B, gets its configuration from B, registers at
    /// the live registry address, and orders (enrolled at A) reaches it over strict mTLS.
    async fn a_sidecar_started_meanwhile_enrols_at_b_and_is_trusted(&mut self) {
        let ledger = callee("ledger", upstream("ledger").await, free_port());
        let dead_registry = format!("http://127.0.0.1:{}", free_port());
        let live_registry = format!("http://{}", self.sidecars.registry);
        let ca_urls = format!("http://{},http://{}", self.a.admin, self.b.admin);
        self.sidecars
            .start_with(
                &self.http,
                "ledger-1",
                &ledger,
                &ca_urls,
                &format!("{dead_registry},{live_registry}"),
            )
            .await;
        eventually(
            "ledger through orders, over mTLS",
            support::DEADLINE,
            || answers(&self.http, self.orders_egress, "ledger"),
        )
        .await;
        connected(&self.http, self.b.admin, &["ledger-1"])
            .await
            .expect("ledger's proxy on B");
    }
}

/// A strict-mTLS service with an egress port (depending on `refunds`) whose app answers
/// with its name.
fn callee(service: &str, app: u16, egress: u16) -> String {
    format!(
        "{}mtls: strict\n",
        caller(service, app, free_port(), egress, "  - service: refunds\n")
    )
}

/// Requests through an egress port every 10 ms, counting failures, until finished.
struct Traffic {
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(http: &reqwest::Client, egress: u16, host: &'static str) -> Traffic {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (http, sent, failed, stop) =
                (http.clone(), sent.clone(), failed.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let seen = via_egress(&http, egress, host, None).await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    if seen != (200, host.to_owned()) {
                        failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!("failed request: {seen:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Traffic {
            sent,
            failed,
            stop,
            task,
        }
    }

    /// Stops; (requests sent, requests failed).
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("traffic task");
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

// === control planes and the registry ===

/// A control plane's fixed addresses, so a restart listens where the proxies dial.
struct ControlPlaneProcess {
    xds: SocketAddr,
    admin: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Process>,
}

impl ControlPlaneProcess {
    fn new(dir: &Path, name: &'static str, registry: SocketAddr, ca: &TestCa) -> Self {
        let xds: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let args = [
            "control-plane",
            "--registry",
            "consul",
            "--consul-addr",
            &format!("http://{registry}"),
            "--xds-addr",
            &xds.to_string(),
            "--admin-addr",
            &admin.to_string(),
            "--data-dir",
            &dir.join(format!("{name}-data")).display().to_string(),
            "--ca-cert",
            ca.ca_file(),
            "--ca-key",
            ca.key_file(),
        ]
        .map(str::to_owned)
        .to_vec();
        ControlPlaneProcess {
            xds,
            admin,
            args,
            log: dir.join(format!("{name}.log")),
            process: None,
        }
    }

    fn start(&mut self) {
        self.process = Some(Process::spawn(&self.args, &self.log));
    }

    /// SIGSTOP until the guard is resumed or dropped.
    fn pause(&self) -> Paused {
        let pid = self.process.as_ref().expect("running").process.pid();
        pause(pid).expect("SIGSTOP")
    }

    /// SIGKILL: no goodbye to the proxies, their connections reset by the kernel.
    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

struct Process {
    addr: SocketAddr,
    process: MeshplaneProcess,
}

impl Process {
    fn spawn(args: &[String], log: &Path) -> Process {
        Process {
            addr: ([127, 0, 0, 1], 0).into(),
            process: MeshplaneProcess::spawn(args, log),
        }
    }

    /// The registry both control planes follow: a `meshplane control-plane` serving its
    /// embedded registry.
    fn registry(dir: &Path) -> Process {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let args = [
            "control-plane",
            "--registry-addr",
            &addr.to_string(),
            "--xds-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            &dir.join("registry-data").display().to_string(),
        ]
        .map(str::to_owned);
        let mut p = Process::spawn(&args, &dir.join("registry.log"));
        p.addr = addr;
        p
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        self.process.kill();
    }

    /// Registers a passing instance once the registry acknowledges it.
    async fn register(&self, http: &reqwest::Client, id: &str, service: &str, port: u16) {
        let body = serde_json::json!({
            "ID": id, "Name": service, "Address": "127.0.0.1", "Port": port,
        });
        let url = format!("http://{}/v1/agent/service/register", self.addr);
        eventually(
            &format!("the registry acknowledges {id}"),
            support::DEADLINE,
            || async {
                match http.put(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
    }
}

// === sidecars ===

/// `meshplane sidecar` processes given every control plane.
struct Sidecars {
    dir: PathBuf,
    control_planes: String,
    registry: SocketAddr,
    running: Vec<(u16, Child)>,
}

impl Sidecars {
    /// Starts a sidecar enrolled at `ca_url`, registering at the registry.
    async fn start(&mut self, http: &reqwest::Client, id: &str, descriptor: &str, ca_url: &str) {
        let registry = format!("http://{}", self.registry);
        self.start_with(http, id, descriptor, ca_url, &registry)
            .await;
    }

    /// Starts `meshplane sidecar` with these `--ca-url` and `--registry` values and waits
    /// until its Envoy has its listeners.
    async fn start_with(
        &mut self,
        http: &reqwest::Client,
        id: &str,
        descriptor: &str,
        ca_urls: &str,
        registries: &str,
    ) {
        let file = self.dir.join(format!("{id}.yaml"));
        std::fs::write(&file, descriptor).expect("write descriptor");
        let log = self.dir.join(format!("{id}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .arg("sidecar")
            .args(["--descriptor", &file.display().to_string()])
            .args(["--control-plane", &self.control_planes])
            .args(["--registry", registries])
            .args(["--ca-url", ca_urls])
            .args(["--instance-id", id])
            .args(["--admin-port", &admin.to_string()])
            .args(["--base-id", &admin.to_string()])
            .args(["--check-interval", "1s"])
            .args(["--work-dir", &self.dir.join(id).display().to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("meshplane sidecar starts");
        self.running.push((admin, child));
        // Ingress, egress and the scrape listener.
        let live = support::poll(|| async {
            envoy_stat(http, admin, "listener_manager.total_listeners_active")
                .await
                .unwrap_or(0)
                >= 3
        })
        .await;
        assert!(
            live,
            "sidecar {id}: no listeners\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop(&mut self) {
        for (_, child) in &mut self.running {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        for (_, child) in &mut self.running {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.running.clear();
    }
}

impl Drop for Sidecars {
    fn drop(&mut self) {
        self.stop();
    }
}

// === observations ===

async fn ready(http: &reqwest::Client, admin: SocketAddr) -> Result<(), String> {
    match http.get(format!("http://{admin}/readyz")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(r.status().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn answers(http: &reqwest::Client, egress: u16, host: &str) -> Result<(), String> {
    match via_egress(http, egress, host, None).await {
        (200, body) if body == host => Ok(()),
        seen => Err(format!("{host} via {egress}: {seen:?}")),
    }
}

/// `/api/proxies` of the control plane at `admin`.
async fn proxies(http: &reqwest::Client, admin: SocketAddr) -> Result<Vec<Value>, String> {
    let r = http
        .get(format!("http://{admin}/api/proxies"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    r.json::<Vec<Value>>().await.map_err(|e| e.to_string())
}

/// `Ok` when every one of `ids` has its xDS stream on the control plane at `admin`.
async fn connected(http: &reqwest::Client, admin: SocketAddr, ids: &[&str]) -> Result<(), String> {
    let listed = proxies(http, admin).await?;
    let missing: Vec<&&str> = ids
        .iter()
        .filter(|id| !listed.iter().any(|p| p["node_id"] == **id))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not connected to {admin}: {missing:?}"))
    }
}

/// The responses the control plane at `admin` sent each of `ids`, per type.
async fn responses(
    http: &reqwest::Client,
    admin: SocketAddr,
    ids: &[&str],
) -> Result<Vec<(String, String, u64)>, String> {
    let listed = proxies(http, admin).await?;
    let mut out = Vec::new();
    for id in ids {
        let proxy = listed
            .iter()
            .find(|p| p["node_id"] == *id)
            .ok_or_else(|| format!("{id} not on {admin}"))?;
        let types = proxy["types"].as_object().cloned().unwrap_or_default();
        for (kind, view) in types {
            out.push((
                id.to_string(),
                kind,
                view["responses"].as_u64().unwrap_or(0),
            ));
        }
    }
    Ok(out)
}

/// Each proxy's count of accepted cluster and listener updates.
async fn envoy_updates(http: &reqwest::Client, sidecars: &Sidecars) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for (admin, _) in &sidecars.running {
        for stat in UPDATES {
            out.push(envoy_stat(http, *admin, stat).await);
        }
    }
    out
}
