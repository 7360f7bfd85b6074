//! The reliability suite (README, "Reliability"): production failures emulated on 127.0.0.1
//! with real `meshplane sidecar` processes and real Envoys, traffic flowing through them, each
//! fault held for a window ([`fault_window`], `MESHPLANE_FAULT_WINDOW`, minutes for a soak)
//! while [`hold`] re-checks what users rely on, then repaired and recovery checked against a
//! named bound.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use meshplane_runtime::RegistryKind;
use meshplane_sidecar::bootstrap::XDS_HANG_DETECTED_WITHIN;
use meshplane_test_support::fault::{Fault, FaultProxy};
use meshplane_test_support::http_front::{Answer, HttpFront};
use meshplane_test_support::process::pause;
use meshplane_test_support::{eventually, fault_window, hold};
use support::{
    Mesh, MeshplaneProcess, caller, descriptor_node, envoy_hosts, envoy_stat, free_port, upstream,
    via_egress,
};
use tokio::time::Instant;

/// Scenario 1: after a hung control plane answers again, a service registered meanwhile is
/// reachable through a sidecar within this (Envoy retries xDS within 0.5 s, then one push).
const REACHABLE_AFTER_REPAIR: Duration = Duration::from_secs(1);

/// Scenario 1: slack over [`XDS_HANG_DETECTED_WITHIN`] for reading Envoy's gauge.
const DETECTION_SLACK: Duration = Duration::from_secs(1);

/// Envoy's gauge of its xDS stream: 1 while connected to the control plane.
const CONNECTED: &str = "control_plane.connected_state";

/// Scenario 1: the only control plane black-holed (connections stay open, nothing answers),
/// between the sidecar's Envoy and the control plane. Known services keep working for the
/// whole window, a service registered during it is not reachable, Envoy notices the hang
/// within [`XDS_HANG_DETECTED_WITHIN`], and after repair the new service is reachable within
/// [`REACHABLE_AFTER_REPAIR`].
#[tokio::test(flavor = "multi_thread")]
async fn black_holed_control_plane_keeps_known_services_and_resumes_within_a_second() {
    // Long enough for Envoy's PINGs to notice the hang, whatever the configured window.
    let window = fault_window().max(XDS_HANG_DETECTED_WITHIN + DETECTION_SLACK);
    let (payments, refunds) = (upstream("payments").await, upstream("refunds").await);
    let mut mesh = Mesh::start(|_, _| {}).await;
    let xds = FaultProxy::start(mesh.cp.xds_addr)
        .await
        .expect("fault proxy");
    mesh.xds_via = Some(xds.addr());
    mesh.register("payments-1", "payments", payments, &[], 1)
        .await;
    let egress = free_port();
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n  - service: refunds\n",
    );
    let admin = mesh.sidecar("orders-1", &d, 2).await.admin_port;
    let http = mesh.http.clone();
    eventually("payments through the sidecar", support::DEADLINE, || {
        reachable(&http, egress, "payments")
    })
    .await;

    xds.set(Fault::BlackHole);
    let faulted = Instant::now();
    let connections_at_fault = xds.accepted();
    mesh.register("refunds-1", "refunds", refunds, &[], 1).await;
    // Envoy's own gauge is back to 1 as soon as its next attempt starts (within 0.1 s), too
    // briefly to poll: a new connection through the proxy is what shows the hang noticed.
    let detected = async {
        eventually(
            "Envoy notices the hung control plane and reconnects",
            XDS_HANG_DETECTED_WITHIN + DETECTION_SLACK,
            || async {
                let connections = xds.accepted();
                if connections > connections_at_fault {
                    Ok(faulted.elapsed())
                } else {
                    Err(format!(
                        "{connections} connections to the control plane, as before"
                    ))
                }
            },
        )
        .await
    };
    let held = hold(
        window,
        "payments answers and refunds (registered during the fault) does not",
        || async {
            let known = via_egress(&http, egress, "payments", None).await;
            let new = via_egress(&http, egress, "refunds", None).await;
            if known == (200, "payments".to_owned()) && new.0 != 200 {
                Ok(())
            } else {
                Err(format!("payments: {known:?}, refunds: {new:?}"))
            }
        },
    );
    let (detected_after, _) = tokio::join!(detected, held);
    eprintln!("Envoy noticed the hang after {detected_after:?}");

    xds.set(Fault::Pass);
    let repaired = Instant::now();
    eventually(
        "refunds reachable after repair",
        REACHABLE_AFTER_REPAIR,
        || reachable(&http, egress, "refunds"),
    )
    .await;
    eprintln!("refunds reachable {:?} after repair", repaired.elapsed());
    assert_eq!(envoy_stat(&http, admin, CONNECTED).await, Some(1));
}

/// Scenario 2: a registry that hangs is reported stale within this: the Consul source's
/// liveness probe runs every 2 s and gives up after 5 s (`ConsulConfig::probe_*`), plus
/// slack for reading the admin API.
const REGISTRY_STALE_WITHIN: Duration = Duration::from_secs(9);

/// Scenario 2: once the registry answers again, the control plane is fresh (not stale) and a
/// registration made after the repair reaches Envoy within this (the next probe, 2 s, and
/// one push).
const REGISTRY_RECOVERED_WITHIN: Duration = Duration::from_secs(4);

/// How scenario 2 takes the registry away.
#[derive(Debug, Clone, Copy)]
enum RegistryFault {
    /// SIGSTOP of the registry's process: the kernel still accepts connections.
    Paused,
    /// A fault proxy between the control plane and the registry accepts and never answers.
    BlackHoled,
}

/// Scenario 2, SIGSTOP.
#[tokio::test(flavor = "multi_thread")]
async fn paused_registry_keeps_config_reports_stale_and_recovers() {
    registry_outage(RegistryFault::Paused).await;
}

/// Scenario 2, black hole.
#[tokio::test(flavor = "multi_thread")]
async fn black_holed_registry_keeps_config_reports_stale_and_recovers() {
    registry_outage(RegistryFault::BlackHoled).await;
}

/// Scenario 2: the control plane follows a registry (`--registry consul`; the registry is a
/// `meshplane control-plane` process, whose embedded registry speaks Consul's API) and the
/// registry hangs. For the whole window: traffic to a known service flows, no instance is
/// withdrawn from the control plane's view, and once [`REGISTRY_STALE_WITHIN`] has passed,
/// `/readyz` (still 200), `/api/state` and `/metrics` say stale. After repair: fresh again,
/// a registration acknowledged just before the fault is there, and a new one reaches Envoy,
/// within [`REGISTRY_RECOVERED_WITHIN`].
async fn registry_outage(fault: RegistryFault) {
    let window = fault_window().max(REGISTRY_STALE_WITHIN + Duration::from_secs(1));
    let registry = RegistryProcess::start();
    let front = FaultProxy::start(registry.addr).await.expect("fault proxy");
    let (payments, refunds) = (upstream("payments").await, upstream("refunds").await);
    let mut mesh = Mesh::start(|config, _| {
        config.registry = RegistryKind::Consul;
        config.consul_addr = Some(format!("http://{}", front.addr()));
    })
    .await;
    let http = mesh.http.clone();
    registry
        .register(&http, "payments-1", "payments", payments)
        .await;
    let egress = free_port();
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n  - service: refunds\n",
    );
    mesh.sidecar("orders-1", &d, 2).await;
    eventually("payments through the sidecar", support::DEADLINE, || {
        reachable(&http, egress, "payments")
    })
    .await;
    let admin = mesh.cp.admin_addr;
    // The source may have probed before the registry listened: fresh first.
    eventually("the control plane is fresh", support::DEADLINE, || {
        fresh(&http, admin)
    })
    .await;
    // Acknowledged by the registry just before it hangs: must never be lost.
    registry
        .register(&http, "payments-2", "payments", payments)
        .await;

    let paused = match fault {
        RegistryFault::Paused => Some(pause(registry.pid()).expect("SIGSTOP the registry")),
        RegistryFault::BlackHoled => {
            front.set(Fault::BlackHole);
            None
        }
    };
    let faulted = Instant::now();
    let instances_at_fault = instances(&http, admin, "payments").await.unwrap_or(0);
    assert!(instances_at_fault >= 1, "payments-1 known before the fault");
    let kept = || async {
        let traffic = via_egress(&http, egress, "payments", None).await;
        let known = instances(&http, admin, "payments").await;
        match (&traffic, &known) {
            ((200, body), Ok(n)) if body == "payments" && *n >= instances_at_fault => Ok(()),
            _ => Err(format!(
                "traffic {traffic:?}, instances {known:?} (were {instances_at_fault})"
            )),
        }
    };
    let stale = async {
        eventually(
            "the control plane says stale",
            REGISTRY_STALE_WITHIN,
            || says_stale(&http, admin),
        )
        .await;
        let noticed = faulted.elapsed();
        hold(
            window.saturating_sub(noticed),
            "the control plane keeps saying stale",
            || async {
                says_stale(&http, admin).await?;
                kept().await
            },
        )
        .await;
        noticed
    };
    let held = hold(window, "payments answers and keeps its instances", kept);
    let (noticed, _) = tokio::join!(stale, held);
    eprintln!("{fault:?}: stale after {noticed:?}");

    match paused {
        Some(paused) => paused.resume().expect("SIGCONT"),
        None => front.set(Fault::Pass),
    }
    let repaired = Instant::now();
    registry
        .register(&http, "refunds-1", "refunds", refunds)
        .await;
    eventually(
        "fresh, payments-2 kept, refunds reachable",
        REGISTRY_RECOVERED_WITHIN,
        || async {
            fresh(&http, admin).await?;
            match instances(&http, admin, "payments").await {
                Ok(2) => {}
                other => return Err(format!("payments instances {other:?}")),
            }
            reachable(&http, egress, "refunds").await
        },
    )
    .await;
    eprintln!("{fault:?}: recovered {:?} after repair", repaired.elapsed());
}

/// Scenario 3: how long each registry answer is held.
const SLOW_ANSWER: Duration = Duration::from_secs(2);

/// Scenario 3: a registration reaches Envoy within this while every answer takes
/// [`SLOW_ANSWER`] (one delayed answer, and slack for the push and a loaded machine).
const SLOW_CHANGE_WITHIN: Duration = Duration::from_secs(5);

/// Scenario 3: a registration reaches Envoy within this while every other request is refused
/// with 429 (a refusal costs a retry after 125–250 ms, the source's first backoff step).
const LIMITED_CHANGE_WITHIN: Duration = Duration::from_secs(3);

/// Scenario 3: while rate limited, the source sends at most this many requests per second
/// per watch (the catalog and each followed service) plus its liveness probe: requests of
/// one watch are at least 50 ms apart and each refusal backs off at least 125 ms, so a watch
/// woken by every change alternates at worst 50 ms and 175 ms gaps (~9 per second).
const LIMITED_REQUESTS_PER_WATCH_PER_SECOND: f64 = 10.0;

/// How often scenario 3 changes the registry while it is rate limited, so that blocking
/// queries keep returning and the source keeps asking.
const CHURN_EVERY: Duration = Duration::from_millis(100);

/// Scenario 3: the registry the control plane follows answers every request 2 s late, then
/// refuses every other request with 429 while an instance churns. A known service answers
/// every request throughout, and while slow the source is not stale (a slow registry is
/// still a working registry); changes arrive within [`SLOW_CHANGE_WITHIN`] and [`LIMITED_CHANGE_WITHIN`]; the
/// requests counted at the registry stay under [`LIMITED_REQUESTS_PER_WATCH_PER_SECOND`].
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_rate_limiting_registry_still_delivers_changes_within_a_request_budget() {
    let window = fault_window();
    let registry = RegistryProcess::start();
    let front = HttpFront::start(registry.addr).await.expect("http front");
    let (payments, refunds, ledger) = (
        upstream("payments").await,
        upstream("refunds").await,
        upstream("ledger").await,
    );
    let mut mesh = Mesh::start(|config, _| {
        config.registry = RegistryKind::Consul;
        config.consul_addr = Some(format!("http://{}", front.addr()));
    })
    .await;
    let http = mesh.http.clone();
    registry
        .register(&http, "payments-1", "payments", payments)
        .await;
    let egress = free_port();
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n  - service: refunds\n  - service: ledger\n",
    );
    mesh.sidecar("orders-1", &d, 2).await;
    eventually("payments through the sidecar", support::DEADLINE, || {
        reachable(&http, egress, "payments")
    })
    .await;
    let admin = mesh.cp.admin_addr;
    eventually("the control plane is fresh", support::DEADLINE, || {
        fresh(&http, admin)
    })
    .await;
    let working = || async {
        reachable(&http, egress, "payments").await?;
        fresh(&http, admin).await
    };

    front.set(Answer::Delay(SLOW_ANSWER));
    registry
        .register(&http, "refunds-1", "refunds", refunds)
        .await;
    let arrived = eventually(
        "refunds arrives from a slow registry",
        SLOW_CHANGE_WITHIN,
        || reachable(&http, egress, "refunds"),
    );
    let held = hold(
        window,
        "payments answers and nothing is stale (slow)",
        working,
    );
    tokio::join!(arrived, held);

    front.set(Answer::RateLimit { every: 2 });
    let (requests_before, refused_before, limited) =
        (front.requests(), front.refused(), Instant::now());
    registry.register(&http, "ledger-1", "ledger", ledger).await;
    let churn = async {
        let mut registered = false;
        let started = Instant::now();
        while started.elapsed() < window {
            if registered {
                registry.deregister(&http, "ledger-2").await;
            } else {
                registry.register(&http, "ledger-2", "ledger", ledger).await;
            }
            registered = !registered;
            tokio::time::sleep(CHURN_EVERY).await;
        }
    };
    let arrived = eventually(
        "ledger arrives from a rate-limiting registry",
        LIMITED_CHANGE_WITHIN,
        || reachable(&http, egress, "ledger"),
    );
    // A refused request marks its watch failing (stale) until its next answer: only traffic
    // is held here.
    let held = hold(window, "payments answers (429)", || {
        reachable(&http, egress, "payments")
    });
    tokio::join!(churn, arrived, held);
    let elapsed = limited.elapsed().as_secs_f64();
    let (requests, refused) = (
        front.requests() - requests_before,
        front.refused() - refused_before,
    );
    front.set(Answer::Pass);
    // The catalog and payments, refunds, ledger; the probe asks every 2 s.
    let watches = 4.0;
    let bound = elapsed * (watches * LIMITED_REQUESTS_PER_WATCH_PER_SECOND + 0.5);
    eprintln!(
        "rate limited: {requests} requests ({refused} refused) in {elapsed:.1} s, bound {bound:.0}"
    );
    assert!(
        refused > 0,
        "the front refused nothing: the source was not tested"
    );
    assert!(
        requests as f64 <= bound,
        "{requests} requests in {elapsed:.1} s while rate limited: over the bound of {bound:.0}"
    );
}

/// Scenario 8: after garbage, good answers bring the control plane back to the registry's
/// state within this: the source's longest retry backoff (30 s, reached only after minutes
/// of errors; seconds after a short window), and one push.
const GARBAGE_RECOVERED_WITHIN: Duration = Duration::from_secs(35);

/// Scenario 8: while every answer's index goes backwards (the source then reads afresh,
/// without blocking), requests of one watch stay at least 50 ms apart: at most this many per
/// second per watch (the catalog and each followed service), plus the probe.
const BACKWARDS_REQUESTS_PER_WATCH_PER_SECOND: f64 = 20.0;

/// Scenario 8: the registry the control plane follows answers garbage — truncated JSON,
/// valid JSON of the wrong shape, a 8 MiB body — while it holds a new instance of a known
/// service. For the whole window: traffic flows and the control plane keeps the previous
/// state (the new instance is not taken in, nothing is withdrawn); `/readyz` names the error
/// (the text the source's log line carries) and `meshplane_registry_errors_total{kind="body"}`
/// counts it. Good answers bring the new state within [`GARBAGE_RECOVERED_WITHIN`]. Then an
/// index going backwards on every answer: changes still arrive and requests stay under
/// [`BACKWARDS_REQUESTS_PER_WATCH_PER_SECOND`].
#[tokio::test(flavor = "multi_thread")]
async fn registry_answering_garbage_keeps_the_previous_state_and_counts_errors() {
    let window = fault_window();
    let registry = RegistryProcess::start();
    let front = HttpFront::start(registry.addr).await.expect("http front");
    let (payments, refunds) = (upstream("payments").await, upstream("refunds").await);
    let mut mesh = Mesh::start(|config, _| {
        config.registry = RegistryKind::Consul;
        config.consul_addr = Some(format!("http://{}", front.addr()));
    })
    .await;
    let http = mesh.http.clone();
    registry
        .register(&http, "payments-1", "payments", payments)
        .await;
    let egress = free_port();
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n  - service: refunds\n",
    );
    mesh.sidecar("orders-1", &d, 2).await;
    eventually("payments through the sidecar", support::DEADLINE, || {
        reachable(&http, egress, "payments")
    })
    .await;
    let admin = mesh.cp.admin_addr;
    eventually("the control plane is fresh", support::DEADLINE, || {
        fresh(&http, admin)
    })
    .await;

    let garbage = [Answer::Truncated, Answer::WrongShape, Answer::Huge(8 << 20)];
    for (n, answer) in garbage.into_iter().enumerate() {
        let known = instances(&http, admin, "payments").await.expect("payments");
        let errors_before = body_errors(&http, admin).await;
        front.set(answer);
        // A change, so that blocking queries return (with garbage).
        registry
            .register(&http, &format!("payments-{}", n + 2), "payments", payments)
            .await;
        hold(
            window,
            &format!("{answer:?}: traffic flows, state kept"),
            || async {
                reachable(&http, egress, "payments").await?;
                match instances(&http, admin, "payments").await {
                    Ok(now) if now == known => Ok(()),
                    seen => Err(format!("payments instances {seen:?}, were {known}")),
                }
            },
        )
        .await;
        let errors = body_errors(&http, admin).await;
        assert!(
            errors > errors_before,
            "{answer:?}: no body error counted ({errors})"
        );
        let ready = readyz(&http, admin).await;
        assert!(
            ready.0 == 200 && ready.1.contains("unexpected response body"),
            "{answer:?}: /readyz {ready:?}"
        );
        front.set(Answer::Pass);
        let repaired = Instant::now();
        eventually(
            &format!("{answer:?}: the new instance after good answers"),
            GARBAGE_RECOVERED_WITHIN,
            || async {
                fresh(&http, admin).await?;
                match instances(&http, admin, "payments").await {
                    Ok(now) if now == known + 1 => Ok(()),
                    seen => Err(format!("payments instances {seen:?}, want {}", known + 1)),
                }
            },
        )
        .await;
        eprintln!(
            "{answer:?}: {errors} body errors counted, recovered {:?} after",
            repaired.elapsed()
        );
    }

    front.set(Answer::IndexBackwards);
    let (requests_before, started) = (front.requests(), Instant::now());
    registry
        .register(&http, "refunds-1", "refunds", refunds)
        .await;
    let arrived = eventually(
        "refunds arrives while the index goes backwards",
        support::DEADLINE,
        || reachable(&http, egress, "refunds"),
    );
    let held = hold(window, "payments answers (index backwards)", || {
        reachable(&http, egress, "payments")
    });
    tokio::join!(arrived, held);
    let elapsed = started.elapsed().as_secs_f64();
    let requests = front.requests() - requests_before;
    front.set(Answer::Pass);
    // The catalog, payments and refunds; the probe asks every 2 s.
    let bound = elapsed * (3.0 * BACKWARDS_REQUESTS_PER_WATCH_PER_SECOND + 0.5);
    eprintln!("index backwards: {requests} requests in {elapsed:.1} s, bound {bound:.0}");
    assert!(
        requests as f64 <= bound,
        "{requests} requests in {elapsed:.1} s with the index going backwards: over {bound:.0}"
    );
}

/// `meshplane_registry_errors_total{source="consul",kind="body"}` (0 before the first).
async fn body_errors(http: &reqwest::Client, admin: SocketAddr) -> u64 {
    let text = match http.get(format!("http://{admin}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| l.starts_with("meshplane_registry_errors_total{"))
        .filter(|l| l.contains("source=\"consul\"") && l.contains("kind=\"body\""))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// `/readyz` (status, body).
async fn readyz(http: &reqwest::Client, admin: SocketAddr) -> (u16, String) {
    match http.get(format!("http://{admin}/readyz")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// `Ok` when `/readyz` says ready and nothing stale.
async fn fresh(http: &reqwest::Client, admin: SocketAddr) -> Result<(), String> {
    match readyz(http, admin).await {
        (200, body) if body == "ready\n" => Ok(()),
        seen => Err(format!("/readyz {seen:?}")),
    }
}

/// `Ok` when `/readyz` (still 200), `/api/state` and `/metrics` all say the registry is stale.
async fn says_stale(http: &reqwest::Client, admin: SocketAddr) -> Result<(), String> {
    let ready = readyz(http, admin).await;
    if ready.0 != 200 || !ready.1.contains("stale: consul: ") {
        return Err(format!("/readyz {ready:?}"));
    }
    let state: serde_json::Value = get_json(http, &format!("http://{admin}/api/state")).await?;
    if state["stale"] != true {
        return Err(format!("/api/state stale = {}", state["stale"]));
    }
    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if !metrics.lines().any(|l| l == "meshplane_registry_stale 1") {
        return Err("/metrics: meshplane_registry_stale is not 1".to_owned());
    }
    Ok(())
}

/// How many instances of `service` the control plane knows (`/api/services/{name}`).
async fn instances(
    http: &reqwest::Client,
    admin: SocketAddr,
    service: &str,
) -> Result<usize, String> {
    let detail = get_json(http, &format!("http://{admin}/api/services/{service}")).await?;
    detail["instances"]
        .as_array()
        .map(Vec::len)
        .ok_or_else(|| format!("no instances in {detail}"))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let r = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()));
    }
    r.json().await.map_err(|e| e.to_string())
}

/// A `meshplane control-plane` process used as a registry: its embedded registry speaks
/// Consul's API. Killed and reaped on drop.
struct RegistryProcess {
    addr: SocketAddr,
    process: MeshplaneProcess,
    _dir: tempfile::TempDir,
}

impl RegistryProcess {
    fn start() -> RegistryProcess {
        let dir = tempfile::tempdir().expect("tmp");
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
            &dir.path().join("data").display().to_string(),
        ]
        .map(str::to_owned);
        let process = MeshplaneProcess::spawn(&args, &dir.path().join("registry.log"));
        RegistryProcess {
            addr,
            process,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    async fn deregister(&self, http: &reqwest::Client, id: &str) {
        let url = format!("http://{}/v1/agent/service/deregister/{id}", self.addr);
        let r = http.put(&url).send().await.expect("registry reachable");
        assert!(r.status().is_success(), "deregister {id}: {}", r.status());
    }

    /// Registers a passing instance; returns once the registry acknowledged it (200), waiting
    /// for the process to listen first.
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
                    Ok(r) => Err(format!("{}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
    }
}

/// `Ok` when `host` answers 200 with its own name through the egress port.
async fn reachable(http: &reqwest::Client, egress: u16, host: &str) -> Result<(), String> {
    match via_egress(http, egress, host, None).await {
        (200, body) if body == host => Ok(()),
        seen => Err(format!("{host}: {seen:?}")),
    }
}

/// Scenario 5: one instance's health flips every this long.
const FLAP_EVERY: Duration = Duration::from_millis(100);

/// Scenario 5: pushes to a proxy are coalesced to at most one per translation pass
/// (`meshplane_runtime::mesh::MIN_PASS_INTERVAL`, 50 ms): at most 20 per second, plus one.
const MAX_PUSHES_PER_SECOND: f64 = 20.0;

/// Scenario 5: an instance flapping (its TTL check passing and failing every
/// [`FLAP_EVERY`]) while two callers send traffic: the caller of the flapping service never
/// sees a failed request (the other instance is healthy, the flapping one's app is up) and
/// gets at most [`MAX_PUSHES_PER_SECOND`] endpoint updates; the caller of an unaffected
/// service gets no update at all (Envoy's own counters of applied xDS updates).
#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_instance_is_coalesced_and_leaves_other_proxies_alone() {
    let window = fault_window();
    let mut mesh = Mesh::start(|_, _| {}).await;
    let (stable, flapping, orders) = (
        upstream("payments").await,
        upstream("payments").await,
        upstream("orders").await,
    );
    let registry = mesh.registry();
    let register = |id: &'static str, service: &'static str, port: u16| {
        let http = mesh.http.clone();
        async move {
            let r = http
                .put(format!("http://{registry}/v1/agent/service/register"))
                .json(&serde_json::json!({
                    "ID": id, "Name": service, "Address": "127.0.0.1", "Port": port,
                    "Check": {"TTL": "1h", "Status": "passing"},
                }))
                .send()
                .await
                .expect("registry");
            assert!(r.status().is_success(), "register {id}: {}", r.status());
        }
    };
    register("payments-stable", "payments", stable).await;
    register("payments-flapping", "payments", flapping).await;
    register("orders-1", "orders", orders).await;
    let (affected, unaffected) = (free_port(), free_port());
    mesh.sidecar(
        "web-flap",
        &caller(
            "web",
            free_port(),
            free_port(),
            affected,
            "  - service: payments\n",
        ),
        2,
    )
    .await;
    mesh.sidecar(
        "batch-flap",
        &caller(
            "batch",
            free_port(),
            free_port(),
            unaffected,
            "  - service: orders\n",
        ),
        2,
    )
    .await;
    let (web_admin, batch_admin) = (
        mesh.sidecar_admin("web-flap"),
        mesh.sidecar_admin("batch-flap"),
    );
    for (egress, host) in [(affected, "payments"), (unaffected, "orders")] {
        eventually(
            &format!("{host} reachable"),
            Duration::from_secs(10),
            || reachable(&mesh.http, egress, host),
        )
        .await;
    }
    // Envoy's counters of xDS updates it applied: per cluster (EDS) and per type.
    let updates = |admin: u16, cluster: &'static str| {
        let http = mesh.http.clone();
        async move {
            let mut total = 0;
            for stat in [
                format!("cluster.{cluster}.update_success"),
                "cluster_manager.cds.update_success".to_owned(),
                "listener_manager.lds.update_success".to_owned(),
            ] {
                total += envoy_stat(&http, admin, &stat).await.unwrap_or(0);
            }
            total
        }
    };
    let (web_before, batch_before) = (
        updates(web_admin, "payments").await,
        updates(batch_admin, "orders").await,
    );

    assert!(
        batch_before > 0 && web_before > 0,
        "Envoy's update counters are read (the initial configuration counts)"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let flapper = tokio::spawn({
        let (http, stop) = (mesh.http.clone(), stop.clone());
        async move {
            let mut flips = 0u64;
            let mut tick = tokio::time::interval(FLAP_EVERY);
            while !stop.is_cancelled() {
                tick.tick().await;
                let state = if flips.is_multiple_of(2) {
                    "fail"
                } else {
                    "pass"
                };
                let _ = http
                    .put(format!(
                        "http://{registry}/v1/agent/check/{state}/service:payments-flapping"
                    ))
                    .send()
                    .await;
                flips += 1;
            }
            flips
        }
    });
    let started = Instant::now();
    hold(
        window,
        "callers never see a failed request while payments-flapping flaps",
        || async {
            reachable(&mesh.http, affected, "payments").await?;
            reachable(&mesh.http, unaffected, "orders").await?;
            let batch = updates(batch_admin, "orders").await;
            if batch != batch_before {
                return Err(format!(
                    "the unaffected proxy applied {} xDS updates",
                    batch - batch_before
                ));
            }
            Ok(())
        },
    )
    .await;
    stop.cancel();
    let flips = flapper.await.expect("flapper");
    let elapsed = started.elapsed().as_secs_f64();
    let web = updates(web_admin, "payments").await - web_before;
    eprintln!(
        "flapping: {flips} flips in {elapsed:.1} s, the affected proxy applied {web} updates"
    );
    assert!(
        flips as f64 >= elapsed / FLAP_EVERY.as_secs_f64() * 0.5,
        "the instance barely flapped: {flips}"
    );
    assert!(web > 0, "the affected proxy never saw the flapping");
    assert!(
        web as f64 <= MAX_PUSHES_PER_SECOND * elapsed + 1.0,
        "{web} updates in {elapsed:.1} s: more than {MAX_PUSHES_PER_SECOND}/s"
    );
}

/// Scenario 7: with bad proxies connected, a change reaches a well-behaved proxy's Envoy
/// (registration → requests answered by the new instance) within this.
const CHANGE_DESPITE_BAD_PROXIES: Duration = Duration::from_secs(1);

/// Scenario 7: ADS streams the flooding client opens (10 connections × 100), none of which
/// ever reads a response.
const FLOOD_STREAMS: usize = 1000;

type Ads = envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient<tonic::transport::Channel>;
type Request = envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// Opens an ADS stream on `client` and asks for clusters as `node`.
async fn open_stream(
    client: &mut Ads,
    node: envoy_types::pb::envoy::config::core::v3::Node,
) -> Result<
    (
        tokio::sync::mpsc::Sender<Request>,
        tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Request {
        node: Some(node),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .expect("queued");
    let stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, stream))
}

/// Scenario 7: a proxy whose metadata is garbage, one that rejects (NACKs) everything it is
/// sent, and a client holding [`FLOOD_STREAMS`] ADS streams it never reads, all connected while
/// a well-behaved sidecar's service changes: each change reaches that sidecar's Envoy within
/// [`CHANGE_DESPITE_BAD_PROXIES`]; the garbage is refused to that proxy alone with an error
/// naming the field; the NACKing proxy shows in the admin API (what the panel reads) as
/// `NACKED` with its error.
#[tokio::test(flavor = "multi_thread")]
async fn bad_proxies_do_not_hold_back_the_others_and_show_in_the_panel() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let xds = format!("http://{}", mesh.cp.xds_addr);
    let first = upstream("round-0").await;
    mesh.register("payments-0", "payments", first, &[], 1).await;
    let egress = free_port();
    mesh.sidecar(
        "good-1",
        &caller(
            "good",
            free_port(),
            free_port(),
            egress,
            "  - service: payments\n",
        ),
        2,
    )
    .await;
    eventually(
        "the good sidecar reaches payments",
        Duration::from_secs(10),
        || async {
            via_egress(&mesh.http, egress, "payments", None).await == (200, "round-0".into())
        },
    )
    .await;

    // Garbage metadata: refused to that stream, naming what is wrong.
    let mut client = Ads::connect(xds.clone()).await.expect("xds");
    let garbage = descriptor_node("garbage-1", "service: garbage\ndependencies: 7\n");
    let refused = match open_stream(&mut client, garbage).await {
        Err(status) => status,
        Ok((_tx, mut stream)) => stream
            .message()
            .await
            .expect_err("garbage metadata refused"),
    };
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("dependencies"), "{refused:?}");

    // A proxy that NACKs everything, forever.
    let bad = |service: &str| {
        caller(
            service,
            free_port(),
            free_port(),
            free_port(),
            "  - service: payments\n",
        )
    };
    let nacker = descriptor_node("nacker-1", &bad("nacker"));
    let (tx, mut stream) = open_stream(&mut client, nacker).await.expect("nacker");
    let nacking = tokio::spawn(async move {
        while let Ok(Some(response)) = stream.message().await {
            let nack = Request {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail: Some(envoy_types::pb::google::rpc::Status {
                    code: 3,
                    message: "rejected by a bad proxy".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if tx.send(nack).await.is_err() {
                break;
            }
        }
    });

    // A flood of streams nobody reads.
    let mut flood = Vec::new();
    let flood_descriptor = bad("flood");
    for c in 0..FLOOD_STREAMS / 100 {
        let mut client = Ads::connect(xds.clone()).await.expect("xds");
        for s in 0..100 {
            let node = descriptor_node(&format!("flood-{c}-{s}"), &flood_descriptor);
            if let Ok(Ok(open)) =
                tokio::time::timeout(Duration::from_secs(2), open_stream(&mut client, node)).await
            {
                flood.push(open);
            }
        }
    }
    let admin = format!("http://{}/api/proxies", mesh.cp.admin_addr);
    let flooding = eventually("the flood connected", Duration::from_secs(10), || async {
        let proxies = get_json(&mesh.http, &admin).await.ok()?;
        let n = proxies
            .as_array()?
            .iter()
            .filter(|p| p["service"] == "flood")
            .count();
        (n >= FLOOD_STREAMS / 2).then_some(n)
    })
    .await;
    eprintln!(
        "bad proxies: {} flooding streams open, {flooding} listed by the control plane",
        flood.len()
    );

    // The good sidecar's service changes, round after round, during the whole window.
    let rounds = (fault_window().as_secs_f64() / 1.0).ceil().max(3.0) as usize;
    for round in 1..=rounds {
        let name: &'static str = Box::leak(format!("round-{round}").into_boxed_str());
        let port = upstream(name).await;
        let started = Instant::now();
        mesh.register(&format!("payments-{round}"), "payments", port, &[], 1)
            .await;
        mesh.deregister(&format!("payments-{}", round - 1)).await;
        eventually(
            &format!("change {round} at the good sidecar despite the bad proxies"),
            CHANGE_DESPITE_BAD_PROXIES,
            || async {
                via_egress(&mesh.http, egress, "payments", None).await == (200, name.into())
            },
        )
        .await;
        eprintln!(
            "bad proxies: change {round} applied in {:?}",
            started.elapsed()
        );
    }

    // The bad one is visible: NACKED, with its error.
    let proxies = get_json(
        &mesh.http,
        &format!("http://{}/api/proxies", mesh.cp.admin_addr),
    )
    .await
    .expect("proxies");
    let nacked = proxies
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == "nacker-1")
        .unwrap_or_else(|| panic!("the NACKing proxy is listed: {proxies}"));
    assert_eq!(nacked["sync"], "NACKED", "{nacked}");
    assert!(
        nacked.to_string().contains("rejected by a bad proxy"),
        "{nacked}"
    );
    nacking.abort();
    drop(flood);
}

/// Scenario 10: the sidecar's registry check runs this often, with this timeout, and the
/// registry drops an instance critical for this long (short, so the test is too).
const CHECK_INTERVAL: &str = "500ms";
const CHECK_TIMEOUT: &str = "500ms";
const DEREGISTER_CRITICAL_AFTER: &str = "2s";

/// Scenario 10: a SIGKILLed Envoy is running again and serving within this (the supervisor's
/// first restart is immediate; Envoy starts and takes its configuration).
const ENVOY_BACK_WITHIN: Duration = Duration::from_secs(10);

/// Scenario 10: after an app goes down, callers stop sending to its instance within this:
/// the check's interval and timeout (1 s), the registry's tick, one translation and push.
const CALLERS_STOP_WITHIN: Duration = Duration::from_secs(3);

/// Scenario 10: a SIGKILLed sidecar's instance leaves the registry within this: its Envoy
/// dies with it, its check goes critical within the interval and timeout, and the registry
/// reaps it [`DEREGISTER_CRITICAL_AFTER`] later (plus its 100 ms tick).
const REAPED_WITHIN: Duration = Duration::from_secs(5);

/// An app that answers its name until `stop` is cancelled, then refuses connections.
async fn stoppable_app(name: &'static str, stop: tokio_util::sync::CancellationToken) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = axum::Router::new().fallback(axum::routing::get(move || async move { name }));
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    port
}

/// A meshed `payments` instance (app + sidecar with short checks) and an `orders` caller.
async fn payments_and_caller(
    mesh: &mut Mesh,
    instances: &[(&str, u16)],
    deregister_critical_after: &str,
) -> u16 {
    for (id, app) in instances {
        let d = format!(
            "service: payments\nport: {app}\ningress: {{ port: {} }}\n",
            free_port()
        );
        mesh.sidecar_with(
            id,
            &d,
            1,
            &[
                "--check-interval",
                CHECK_INTERVAL,
                "--check-timeout",
                CHECK_TIMEOUT,
                "--deregister-critical-after",
                deregister_critical_after,
            ],
        )
        .await;
    }
    let egress = free_port();
    mesh.sidecar(
        "orders-r10",
        &caller(
            "orders",
            free_port(),
            free_port(),
            egress,
            "  - service: payments\n",
        ),
        2,
    )
    .await;
    egress
}

/// The registry's view of a payments instance: `Some(status of its check)`, `None` if gone.
async fn registered(mesh: &Mesh, id: &str) -> Option<String> {
    let entries = get_json(
        &mesh.http,
        &format!("http://{}/v1/health/service/payments", mesh.registry()),
    )
    .await
    .ok()?;
    entries.as_array()?.iter().find_map(|e| {
        (e["Service"]["ID"] == id).then(|| {
            e["Checks"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["ServiceID"] == id))
                .and_then(|c| c["Status"].as_str())
                .unwrap_or("none")
                .to_owned()
        })
    })
}

/// Scenario 10a: Envoy killed with SIGKILL under traffic: the sidecar starts a new one, the
/// service answers again within [`ENVOY_BACK_WITHIN`], and the instance is still registered
/// once, passing.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_envoy_is_restarted_and_its_registration_stays_correct() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let app = upstream("payments").await;
    let egress = payments_and_caller(
        &mut mesh,
        &[("payments-r10a", app)],
        DEREGISTER_CRITICAL_AFTER,
    )
    .await;
    eventually("payments reachable", Duration::from_secs(10), || {
        reachable(&mesh.http, egress, "payments")
    })
    .await;
    let killed = mesh.envoy_pid("payments-r10a").expect("Envoy runs");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(killed as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("SIGKILL");
    let started = Instant::now();
    eventually(
        "a new Envoy serving payments again",
        ENVOY_BACK_WITHIN,
        || async {
            mesh.envoy_pid("payments-r10a").is_some_and(|p| p != killed)
                && reachable(&mesh.http, egress, "payments").await.is_ok()
        },
    )
    .await;
    eprintln!(
        "sidecar side: Envoy back {:?} after SIGKILL",
        started.elapsed()
    );
    eventually(
        "still registered once, passing",
        Duration::from_secs(5),
        || async { registered(&mesh, "payments-r10a").await.as_deref() == Some("passing") },
    )
    .await;
    let entries = get_json(
        &mesh.http,
        &format!("http://{}/v1/health/service/payments", mesh.registry()),
    )
    .await
    .expect("registry");
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{entries}");
}

/// Scenario 10b: one of two instances' app goes down: within [`CALLERS_STOP_WITHIN`] its
/// check is critical and the caller's Envoy sends it nothing more (its per-host request and
/// connection counters stop), while every request keeps succeeding on the other instance.
#[tokio::test(flavor = "multi_thread")]
async fn callers_stop_sending_to_an_instance_whose_app_is_down() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let down = tokio_util::sync::CancellationToken::new();
    let (a, b) = (
        stoppable_app("payments", down.clone()).await,
        upstream("payments").await,
    );
    // Not reaped during the test: the critical instance stays registered, and the caller's
    // Envoy keeps it as a host it must not use.
    let egress = payments_and_caller(
        &mut mesh,
        &[("payments-r10b-a", a), ("payments-r10b-b", b)],
        "10m",
    )
    .await;
    eventually(
        "both instances passing",
        Duration::from_secs(10),
        || async {
            registered(&mesh, "payments-r10b-a").await.as_deref() == Some("passing")
                && registered(&mesh, "payments-r10b-b").await.as_deref() == Some("passing")
        },
    )
    .await;
    let orders_admin = mesh.sidecar_admin("orders-r10");
    // What the caller's Envoy sent to instance a: requests and connection attempts to its
    // ingress, from Envoy's /clusters.
    let a_ingress = {
        let d = std::fs::read_to_string(mesh.dir.path().join("payments-r10b-a.yaml"))
            .expect("descriptor");
        meshplane_model::Descriptor::from_yaml(&d)
            .expect("descriptor")
            .ingress
            .port
    };
    let sent_to_a = || {
        let http = mesh.http.clone();
        async move {
            let text = http
                .get(format!("http://127.0.0.1:{orders_admin}/clusters"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let host = format!("payments::127.0.0.1:{a_ingress}::");
            let sum: u64 = text
                .lines()
                .filter_map(|l| l.strip_prefix(&host))
                .filter_map(|l| l.split_once("::"))
                .filter(|(stat, _)| matches!(*stat, "rq_total" | "cx_connect_fail"))
                .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
                .sum();
            Some(sum)
        }
    };
    let traffic = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let (http, traffic) = (mesh.http.clone(), traffic.clone());
        async move {
            while !traffic.is_cancelled() {
                let _ = via_egress(&http, egress, "payments", None).await;
            }
        }
    });
    eventually(
        "instance a gets traffic",
        Duration::from_secs(5),
        || async { sent_to_a().await.is_some_and(|n| n > 0) },
    )
    .await;

    down.cancel();
    let stopped = Instant::now();
    eventually(
        "instance a critical in the registry",
        CALLERS_STOP_WITHIN,
        || async { registered(&mesh, "payments-r10b-a").await.as_deref() == Some("critical") },
    )
    .await;
    // Once the caller has its new endpoints, nothing more goes to a.
    let settled = eventually(
        "the caller stops sending to instance a",
        CALLERS_STOP_WITHIN.saturating_sub(stopped.elapsed()) + Duration::from_millis(500),
        || async {
            let before = sent_to_a().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (sent_to_a().await? == before).then_some(before)
        },
    )
    .await;
    eprintln!(
        "sidecar side: callers stopped sending to a down app {:?} after it stopped",
        stopped.elapsed()
    );
    hold(
        fault_window(),
        "nothing sent to a, every request answered by b",
        || async {
            reachable(&mesh.http, egress, "payments").await?;
            match sent_to_a().await {
                Some(n) if n == settled => Ok(()),
                seen => Err(format!("sent to a: {seen:?}, was {settled}")),
            }
        },
    )
    .await;
    traffic.cancel();
}

/// Scenario 10c: the sidecar killed with SIGKILL: its Envoy dies with it, its check goes
/// critical, and the registry reaps the instance within [`REAPED_WITHIN`].
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_sidecar_is_reaped_by_the_registry() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let app = upstream("payments").await;
    payments_and_caller(
        &mut mesh,
        &[("payments-r10c", app)],
        DEREGISTER_CRITICAL_AFTER,
    )
    .await;
    eventually("registered, passing", Duration::from_secs(10), || async {
        registered(&mesh, "payments-r10c").await.as_deref() == Some("passing")
    })
    .await;
    let pid = mesh.sidecar_pid("payments-r10c");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("SIGKILL");
    let killed = Instant::now();
    eventually("the instance reaped", REAPED_WITHIN, || async {
        registered(&mesh, "payments-r10c").await.is_none()
    })
    .await;
    eprintln!(
        "sidecar side: a SIGKILLed sidecar reaped {:?} after",
        killed.elapsed()
    );
}

/// Scenario 4: services churning at once, each adding and removing instances.
const CHURNING_SERVICES: usize = 100;

/// Scenario 4: after the churn stops, every sidecar's Envoy holds exactly the registry's
/// instances of every service within this.
const CONVERGED_WITHIN: Duration = Duration::from_secs(5);

/// Scenario 4: once the caller's Envoy no longer lists a removed instance (its removal
/// pushed and applied), no request may arrive there later than this (Envoy's workers take
/// the update from its main thread).
const REMOVED_MEANS_UNUSED_AFTER: Duration = Duration::from_millis(100);

/// An upstream that records when each request arrived.
async fn recording_upstream(arrivals: std::sync::Arc<parking_lot::Mutex<Vec<Instant>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = axum::Router::new().fallback(axum::routing::get(move || {
        let arrivals = arrivals.clone();
        async move {
            arrivals.lock().push(Instant::now());
            "svc-000"
        }
    }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    port
}

/// The registry's instances (`address:port`) of `service`.
async fn registry_hosts(mesh: &Mesh, service: &str) -> Option<std::collections::BTreeSet<String>> {
    let entries = get_json(
        &mesh.http,
        &format!("http://{}/v1/health/service/{service}", mesh.registry()),
    )
    .await
    .ok()?;
    Some(
        entries
            .as_array()?
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["Service"]["Address"].as_str().unwrap_or(""),
                    e["Service"]["Port"]
                )
            })
            .collect(),
    )
}

/// Scenario 4: [`CHURNING_SERVICES`] services each register a new instance and deregister
/// their previous one over and over, all at once, for the window, while a caller sends traffic
/// to one of them. Every request succeeds; no request reaches an instance later than
/// [`REMOVED_MEANS_UNUSED_AFTER`] after the caller's Envoy stopped listing it; after the churn
/// each sidecar's Envoy lists exactly the registry's instances of every service within
/// [`CONVERGED_WITHIN`].
#[tokio::test(flavor = "multi_thread")]
async fn churn_converges_to_the_registry_and_never_uses_a_removed_instance() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let names: Vec<String> = (0..CHURNING_SERVICES)
        .map(|s| format!("svc-{s:03}"))
        .collect();
    let dependencies: String = names
        .iter()
        .map(|n| format!("  - service: {n}\n"))
        .collect();
    // Instances of svc-000 are real upstreams recording their requests; the others are
    // addresses nothing serves (only their presence in Envoy is checked).
    type Arrivals = std::sync::Arc<parking_lot::Mutex<Vec<Instant>>>;
    let first: Arrivals = Default::default();
    let first_port = recording_upstream(first.clone()).await;
    let (api, registry) = (mesh.http.clone(), mesh.registry());
    let register = move |service: String, id: String, port: u16| {
        let http = api.clone();
        async move {
            http.put(format!("http://{registry}/v1/agent/service/register"))
                .json(&serde_json::json!({"ID": id, "Name": service, "Address": "127.0.0.1", "Port": port}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    for (s, name) in names.iter().enumerate() {
        let port = if s == 0 { first_port } else { free_port() };
        assert!(register(name.clone(), format!("{name}-0"), port).await);
    }
    let egress = free_port();
    let d = caller("web", free_port(), free_port(), egress, &dependencies);
    mesh.sidecar("web-churn", &d, 2).await;
    let admin = mesh.sidecar_admin("web-churn");
    eventually("svc-000 reachable", Duration::from_secs(10), || {
        reachable(&mesh.http, egress, "svc-000")
    })
    .await;

    let stop = tokio_util::sync::CancellationToken::new();
    // svc-000's instances: (port, arrivals), to check that removed ones get nothing.
    let upstreams: std::sync::Arc<parking_lot::Mutex<Vec<(String, Arrivals)>>> =
        std::sync::Arc::new(parking_lot::Mutex::new(vec![(
            format!("127.0.0.1:{first_port}"),
            first,
        )]));
    let mut churners = Vec::new();
    for (s, name) in names.iter().cloned().enumerate() {
        let (stop, register, upstreams) = (stop.clone(), register.clone(), upstreams.clone());
        let (http, registry) = (mesh.http.clone(), mesh.registry());
        churners.push(tokio::spawn(async move {
            let mut n = 0usize;
            // Different services change at different paces (50–150 ms).
            let pace = Duration::from_millis(50 + (s as u64 * 37) % 100);
            while !stop.is_cancelled() {
                n += 1;
                let port = if s == 0 {
                    let arrivals: Arrivals = Default::default();
                    let port = recording_upstream(arrivals.clone()).await;
                    upstreams
                        .lock()
                        .push((format!("127.0.0.1:{port}"), arrivals));
                    port
                } else {
                    free_port()
                };
                register(name.clone(), format!("{name}-{n}"), port).await;
                let _ = http
                    .put(format!(
                        "http://{registry}/v1/agent/service/deregister/{name}-{}",
                        n - 1
                    ))
                    .send()
                    .await;
                tokio::time::sleep(pace).await;
            }
            n
        }));
    }
    // When the caller's Envoy stopped listing each svc-000 instance.
    let gone: std::sync::Arc<parking_lot::Mutex<std::collections::BTreeMap<String, Instant>>> =
        Default::default();
    let watcher = tokio::spawn({
        let (http, stop, gone) = (mesh.http.clone(), stop.clone(), gone.clone());
        async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.is_cancelled() {
                if let Some(hosts) = envoy_hosts(&http, admin).await {
                    let now = hosts.get("svc-000").cloned().unwrap_or_default();
                    for h in &now {
                        seen.insert(h.clone());
                    }
                    let mut gone = gone.lock();
                    for h in seen.iter().filter(|h| !now.contains(*h)) {
                        gone.entry(h.clone()).or_insert_with(Instant::now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    hold(
        fault_window(),
        "every request to a churning service succeeds",
        || reachable(&mesh.http, egress, "svc-000"),
    )
    .await;
    stop.cancel();
    let mut changes = 0;
    for c in churners {
        changes += c.await.expect("churner");
    }
    let _ = watcher.await;
    eprintln!(
        "churn: {changes} registrations and as many deregistrations over {CHURNING_SERVICES} services"
    );

    // Nothing reached an instance after its removal was applied.
    let (removed, served) = (
        gone.lock().len(),
        upstreams
            .lock()
            .iter()
            .filter(|(_, a)| !a.lock().is_empty())
            .count(),
    );
    eprintln!("churn: svc-000 had {removed} instances removed in Envoy, {served} served requests");
    assert!(
        removed >= 3 && served >= 3,
        "the check below needs instances that served and were removed: {removed} removed, {served} served"
    );
    for (host, arrivals) in upstreams.lock().iter() {
        if let Some(at) = gone.lock().get(host) {
            let late: Vec<_> = arrivals
                .lock()
                .iter()
                .filter(|a| **a > *at + REMOVED_MEANS_UNUSED_AFTER)
                .map(|a| a.duration_since(*at))
                .collect();
            assert!(
                late.is_empty(),
                "{host} got requests {late:?} after Envoy dropped it"
            );
        }
    }
    // Converged: Envoy lists exactly the registry's instances of every service.
    let started = Instant::now();
    eventually(
        "the caller's Envoy equals the registry",
        CONVERGED_WITHIN,
        || async {
            let envoy = envoy_hosts(&mesh.http, admin).await.ok_or("no /clusters")?;
            for name in &names {
                let registry = registry_hosts(&mesh, name).await.ok_or("no registry")?;
                let held = envoy.get(name).cloned().unwrap_or_default();
                if held != registry {
                    return Err(format!("{name}: Envoy {held:?}, registry {registry:?}"));
                }
            }
            Ok::<_, String>(())
        },
    )
    .await;
    eprintln!("churn: converged {:?} after it stopped", started.elapsed());
}

/// Scenario 9: the embedded registry's data directory is a filesystem of this size, filled
/// up during the fault.
const DATA_FS: &str = "size=48m";

/// Scenario 9: once space returns, a registration succeeds within this.
const WRITES_BACK_WITHIN: Duration = Duration::from_secs(5);

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().expect("tmp");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", DATA_FS, "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "scenario 9 mounts a small tmpfs for the data directory: run the suite as root (CI does)"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        // Large writes, then page-sized ones: nothing is left.
        for size in [64 << 10, 4 << 10] {
            let chunk = vec![0u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Scenario 9: the embedded registry's disk full. Registrations are refused with a 5xx that
/// says why, traffic keeps flowing and nothing known is withdrawn for the whole window; once
/// space returns, writes succeed again within [`WRITES_BACK_WITHIN`]; every registration
/// acknowledged before, during or after the fault is there after a restart from the same data
/// directory.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing() {
    let disk = SmallDisk::mount();
    let data = disk.path().join("data");
    let config_data = data.clone();
    let mut mesh = Mesh::start(move |c, _| c.data_dir = config_data).await;
    let app = upstream("payments").await;
    mesh.register("payments-1", "payments", app, &[], 1).await;
    let egress = free_port();
    mesh.sidecar(
        "web-disk",
        &caller(
            "web",
            free_port(),
            free_port(),
            egress,
            "  - service: payments\n",
        ),
        2,
    )
    .await;
    eventually("payments reachable", Duration::from_secs(10), || {
        reachable(&mesh.http, egress, "payments")
    })
    .await;
    let register = |id: String| {
        let (http, registry) = (mesh.http.clone(), mesh.registry());
        async move {
            let r = http
                .put(format!("http://{registry}/v1/agent/service/register"))
                .json(&serde_json::json!({"ID": id, "Name": "ledger", "Address": "127.0.0.1", "Port": 31001}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            Ok::<_, String>((status, body))
        }
    };
    let mut acknowledged = vec!["payments-1".to_owned()];
    assert_eq!(register("ledger-before".into()).await.map(|r| r.0), Ok(200));
    acknowledged.push("ledger-before".into());

    let filler = disk.fill();
    let mut n = 0;
    // A write may still fit in space the database file already holds: acknowledged, it must
    // survive like any other; the others must be refused, saying why.
    let during: std::sync::Arc<parking_lot::Mutex<(Vec<String>, usize)>> = Default::default();
    hold(
        fault_window(),
        "writes refused clearly, traffic flowing, nothing withdrawn",
        || {
            n += 1;
            let id = format!("ledger-full-{n}");
            let attempt = register(id.clone());
            let (http, registry, during) = (mesh.http.clone(), mesh.registry(), during.clone());
            async move {
                reachable(&http, egress, "payments").await?;
                match attempt.await? {
                    (200, _) => during.lock().0.push(id),
                    (status, body)
                        if (500..600).contains(&status)
                            && body.to_lowercase().contains("space") =>
                    {
                        during.lock().1 += 1
                    }
                    (status, body) => {
                        return Err(format!("a full disk answered {status} {body:?}"));
                    }
                }
                let known = get_json(
                    &http,
                    &format!("http://{registry}/v1/health/service/payments"),
                )
                .await?;
                (known.as_array().map(Vec::len) == Some(1))
                    .then_some(())
                    .ok_or(format!("payments withdrawn: {known}"))
            }
        },
    )
    .await;
    let (fitted, refused) = during.lock().clone();
    eprintln!(
        "full disk: {refused} writes refused, {} acknowledged",
        fitted.len()
    );
    assert!(refused > 0, "the full disk refused no write");
    acknowledged.extend(fitted);

    std::fs::remove_file(&filler).expect("space returns");
    eventually("writes accepted again", WRITES_BACK_WITHIN, || async {
        matches!(register("ledger-after".into()).await, Ok((200, _)))
    })
    .await;
    acknowledged.push("ledger-after".into());
    reachable(&mesh.http, egress, "payments")
        .await
        .expect("traffic");

    // Restart from the same data directory: every acknowledged registration is there.
    drop(mesh);
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let config = meshplane_runtime::ControlPlaneConfig {
        xds_addr: any,
        admin_addr: any,
        registry_addr: any,
        data_dir: data,
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let restarted = eventually(
        "the registry reopens its data directory",
        Duration::from_secs(10),
        || {
            let (config, shutdown) = (config.clone(), shutdown.clone());
            async move {
                meshplane_runtime::control_plane::start(config, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    let registry = restarted.registry_addr.expect("embedded registry");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for id in &acknowledged {
        let service = id.split('-').next().unwrap_or_default();
        let entries = get_json(
            &http,
            &format!("http://{registry}/v1/health/service/{service}"),
        )
        .await
        .expect("registry");
        assert!(
            entries
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["Service"]["ID"] == id.as_str())),
            "{id} was acknowledged and is lost after the restart: {entries}"
        );
    }
    shutdown.cancel();
}
