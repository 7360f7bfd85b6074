//! `meshplane demo`: a control plane on the embedded registry, three services with real Envoy
//! sidecars calling each other through the mesh (one with a canary instance, one calling an
//! external-looking HTTPS domain served locally), live traffic and a summary table.
//!
//! This crate owns the demo only: its apps (`apps.rs`), its PKI for the partner domain
//! (`certs.rs`), the sidecar processes (`sidecars.rs`) and the traffic table (`traffic.rs`).
//! The control plane it runs is `meshplane-runtime`'s, started as any embedder would. Start
//! reading at [`run`]. Everything the demo writes lives in one temporary directory that is
//! removed when [`run`] returns, whether it succeeded, failed or was interrupted.

mod apps;
mod certs;
mod sidecars;
mod traffic;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use apps::PARTNER_HOST;
use meshplane_runtime::{ControlPlaneConfig, control_plane};
use sidecars::{Sidecar, free_port};
use traffic::{RouteStats, measure};

/// Options of `meshplane demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Run one round of traffic, print it and exit.
    pub once: bool,
    /// Requests per route per round.
    pub requests: usize,
    /// An OpenTelemetry collector (OTLP/gRPC, `HOST:PORT`): every request is traced there.
    pub tracing_collector: Option<String>,
}

fn progress(step: &str) {
    let mut err = std::io::stderr();
    let _ = write!(err, "\r\x1b[2K[meshplane demo] {step}…");
    let _ = err.flush();
}

fn done_progress() {
    let _ = write!(std::io::stderr(), "\r\x1b[2K");
}

struct Ports {
    app: u16,
    ingress: u16,
    egress: Option<u16>,
}

/// payments accepts only mTLS, and only `orders` may pay; its health path stays open.
const PAYMENTS_SECURITY: &str = "mtls: strict
incoming:
  unlisted_endpoints: block
  endpoints:
    - { path: /pay, methods: [GET], clients: [orders] }
    - { path: /status/health }
";

fn descriptor(
    service: &str,
    ports: &Ports,
    tags: &[&str],
    dependencies: &str,
    security: &str,
) -> String {
    let mut d = format!(
        "service: {service}\nport: {}\ningress: {{ port: {} }}\n{security}",
        ports.app, ports.ingress
    );
    if let Some(e) = ports.egress {
        d.push_str(&format!("egress: {{ port: {e} }}\n"));
    }
    if !tags.is_empty() {
        d.push_str(&format!("tags: [{}]\n", tags.join(", ")));
    }
    if !dependencies.is_empty() {
        d.push_str("dependencies:\n");
        d.push_str(dependencies);
    }
    d
}

/// Runs the demo until `shutdown` (or after one round with `--once`).
pub async fn run(options: DemoOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    // The CA, the registry's data, descriptors, logs and each sidecar's work directory
    // (bootstrap, SDS socket, its private key) all live here, so that one removal at the end
    // leaves nothing behind: the sidecars' default work directories outlive them on purpose
    // (a restarted sidecar reuses its cached certificate), which the demo must not.
    let dir = tempfile::Builder::new()
        .prefix("meshplane-demo-")
        .tempdir()?;
    let outcome = run_in(dir.path(), &options, &shutdown).await;
    let path = dir.path().to_owned();
    let removed = dir
        .close()
        .with_context(|| format!("cannot remove the demo's directory {}", path.display()));
    outcome.and(removed)
}

/// The demo with every file under `dir`; stops what it started on every path.
async fn run_in(
    dir: &std::path::Path,
    options: &DemoOptions,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    progress("generating the demo CA");
    let pki = certs::generate(dir, PARTNER_HOST)?;

    progress("starting the control plane (embedded registry + xDS)");
    let config = ControlPlaneConfig {
        xds_addr: (Ipv4Addr::LOCALHOST, 0).into(),
        admin_addr: (Ipv4Addr::LOCALHOST, 0).into(),
        registry_addr: (Ipv4Addr::LOCALHOST, 0).into(),
        data_dir: dir.join("data"),
        domain_ca_file: Some(pki.ca_file.display().to_string()),
        domain_addresses: [(PARTNER_HOST.to_owned(), IpAddr::V4(Ipv4Addr::LOCALHOST))]
            .into_iter()
            .collect(),
        tracing_collector: options.tracing_collector.clone(),
        tracing_sampling: "100".to_owned(),
        ..Default::default()
    };
    config.tracing().context("--tracing-collector")?;
    let cp_shutdown = shutdown.child_token();
    let cp = control_plane::start(config, cp_shutdown.clone()).await?;
    let apps_shutdown = shutdown.child_token();
    let mut sidecars = Vec::new();
    let outcome = run_mesh(
        dir,
        options,
        shutdown,
        &cp,
        &pki,
        &apps_shutdown,
        &mut sidecars,
    )
    .await;
    if let Err(e) = &outcome {
        done_progress();
        for s in &sidecars {
            eprintln!("--- {} log ({}):\n{}", s.id, s.log.display(), s.log_tail());
        }
        eprintln!("demo failed: {e:#}");
    }

    progress("stopping sidecars (they deregister first)");
    let mut stop_errors = Vec::new();
    for s in sidecars {
        if let Err(e) = s.stop().await {
            stop_errors.push(e.to_string());
        }
    }
    let remaining = cp.store.snapshot().instance_count();
    done_progress();
    println!(
        "sidecars stopped: {} errors; instances left in the registry: {remaining}",
        stop_errors.len()
    );
    apps_shutdown.cancel();
    cp_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), cp.wait(cp_shutdown)).await;
    outcome?;
    anyhow::ensure!(
        stop_errors.is_empty(),
        "sidecars did not stop cleanly: {}",
        stop_errors.join("; ")
    );
    Ok(())
}

/// Starts the apps and their sidecars (pushed to `sidecars` as they start, so the caller
/// stops them whatever happens here) and runs the traffic rounds.
async fn run_mesh(
    dir: &std::path::Path,
    options: &DemoOptions,
    shutdown: &CancellationToken,
    cp: &control_plane::ControlPlane,
    pki: &certs::DemoPki,
    apps_shutdown: &CancellationToken,
    sidecars: &mut Vec<Sidecar>,
) -> anyhow::Result<()> {
    let registry = cp
        .registry_addr
        .context("the demo runs on the embedded registry")?;

    progress("starting the demo apps");
    let partner = apps::partner(&pki.cert_pem, &pki.key_pem, apps_shutdown.clone()).await?;
    let pay1 = Ports {
        app: apps::payments("payments-1", apps_shutdown.clone())
            .await?
            .port(),
        ingress: free_port()?,
        egress: None,
    };
    let pay2 = Ports {
        app: apps::payments("payments-2", apps_shutdown.clone())
            .await?
            .port(),
        ingress: free_port()?,
        egress: None,
    };
    let orders_egress = free_port()?;
    let orders = Ports {
        app: apps::orders(orders_egress, apps_shutdown.clone())
            .await?
            .port(),
        ingress: free_port()?,
        egress: Some(orders_egress),
    };
    let web_egress = free_port()?;
    let web = Ports {
        app: apps::web(web_egress, apps_shutdown.clone()).await?.port(),
        ingress: free_port()?,
        egress: Some(web_egress),
    };

    let orders_deps = format!(
        "  - service: payments\n    timeout: 2s\n    retries: {{ attempts: 2, on: [connect-failure, reset, \"503\"] }}\n  - domain: https://{PARTNER_HOST}:{}\n",
        partner.port()
    );
    let plan = [
        (
            "payments-1",
            descriptor("payments", &pay1, &[], "", PAYMENTS_SECURITY),
        ),
        (
            "payments-2",
            descriptor("payments", &pay2, &["canary"], "", PAYMENTS_SECURITY),
        ),
        (
            "orders-1",
            descriptor("orders", &orders, &[], &orders_deps, ""),
        ),
        (
            "web-1",
            descriptor(
                "web",
                &web,
                &[],
                "  - service: orders\n  - service: payments\n",
                "",
            ),
        ),
    ];
    for (id, d) in &plan {
        progress(&format!("starting sidecar {id} (Envoy)"));
        sidecars.push(sidecars::spawn(
            dir,
            id,
            d,
            cp.xds_addr,
            registry,
            cp.admin_addr,
        )?);
    }

    wait_until_ready(registry, sidecars, shutdown).await?;
    done_progress();
    println!(
        "meshplane demo: web panel and admin API on http://{}/  (xDS {}, registry Consul API http://{registry})",
        cp.admin_addr, cp.xds_addr
    );
    println!(
        "  try: curl http://{}/api/proxies   |   curl http://127.0.0.1:{}/",
        cp.admin_addr, web.ingress
    );
    println!("  proxies connected: {}", cp.status.len());
    println!(
        "  Prometheus: http_sd_configs url http://{}/api/prometheus/targets (deploy/prometheus/http-sd.yml) finds every sidecar and the control plane",
        cp.admin_addr
    );
    println!(
        "  identities: certificates from the control plane's CA (spiffe://meshplane.local/service/<name>); sidecars call each other over mTLS"
    );
    if let Some(collector) = &options.tracing_collector {
        println!(
            "  tracing: every request traced by the sidecars' Envoys, spans sent to {collector} (OTLP/gRPC), one service.name per mesh service"
        );
    }
    loop {
        let routes = round(options, &orders, &web, &pay1, partner, &pki.ca_file).await?;
        println!("\n{}", traffic::table(&routes));
        if let Some(collector) = &options.tracing_collector {
            // Envoys export every 5 s: a single round waits for the first export.
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut sent = spans_sent(cp).await;
            while options.once && sent == 0 && Instant::now() < deadline {
                progress("waiting for the Envoys' first export of spans");
                tokio::time::sleep(Duration::from_millis(500)).await;
                sent = spans_sent(cp).await;
            }
            done_progress();
            println!(
                "traces: {sent} spans sent to {collector} so far (the Envoys' tracing.opentelemetry.spans_sent)"
            );
        }
        check(&routes)?;
        if options.once {
            return Ok(());
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Spans the sidecars' Envoys have sent to the collector: their `spans_sent` counters, read
/// on the scrape ports they registered (what Prometheus reads).
async fn spans_sent(cp: &control_plane::ControlPlane) -> u64 {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
    else {
        return 0;
    };
    let targets: Vec<String> = cp
        .store
        .snapshot()
        .services
        .values()
        .flat_map(|e| e.instances.iter())
        .filter_map(|i| {
            let port = i
                .meta
                .get(meshplane_model::registration::METRICS_PORT_META_KEY)?;
            Some(format!(
                "http://{}:{port}{}",
                i.address,
                meshplane_model::registration::METRICS_PATH
            ))
        })
        .collect();
    let mut sent = 0;
    for url in targets {
        let Ok(text) = async { http.get(&url).send().await?.text().await }.await else {
            continue;
        };
        sent += text
            .lines()
            .filter(|l| l.starts_with("envoy_tracing_opentelemetry_spans_sent"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    sent
}

async fn wait_until_ready(
    registry: SocketAddr,
    sidecars: &mut [Sidecar],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = [("payments", 2), ("orders", 1), ("web", 1)];
    loop {
        progress("waiting for sidecars to register and pass their health checks");
        for s in sidecars.iter_mut() {
            anyhow::ensure!(s.is_running(), "sidecar {} exited during start-up", s.id);
        }
        let mut ready = true;
        for (service, count) in expected {
            let url = format!("http://{registry}/v1/health/service/{service}?passing");
            let passing = match client.get(&url).send().await {
                Ok(r) => r
                    .json::<Vec<serde_json::Value>>()
                    .await
                    .map(|v| v.len())
                    .unwrap_or(0),
                Err(_) => 0,
            };
            ready &= passing >= count;
        }
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "sidecars were not all healthy within 120 s"
        );
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("interrupted before the sidecars were ready"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn round(
    options: &DemoOptions,
    orders: &Ports,
    web: &Ports,
    pay1: &Ports,
    partner: SocketAddr,
    ca_file: &std::path::Path,
) -> anyhow::Result<Vec<RouteStats>> {
    let n = options.requests;
    let via_orders = apps::egress_client(orders.egress.unwrap_or_default())?;
    let direct = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_file)?)?;
    let direct_tls = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve(PARTNER_HOST, partner)
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut routes = Vec::new();

    let (out, mesh) = measure(&via_orders, "http://payments/pay", None, n).await;
    let (_, direct_lat) = measure(
        &direct,
        &format!("http://127.0.0.1:{}/pay", pay1.app),
        None,
        n,
    )
    .await;
    let mut r = RouteStats::new(
        "orders → payments (egress proxy, by Host)",
        &out,
        mesh,
        direct_lat,
    );
    r.note = split_note(&out);
    routes.push(r);

    let (out, mesh) = measure(
        &via_orders,
        "http://payments/pay",
        Some(("x-canary", "1")),
        n,
    )
    .await;
    let mut r = RouteStats::new("orders → payments with x-canary: 1", &out, mesh, Vec::new());
    r.note = split_note(&out);
    routes.push(r);

    let (out, mesh) = measure(
        &via_orders,
        &format!("http://{PARTNER_HOST}/rates"),
        None,
        n,
    )
    .await;
    let (_, direct_lat) = measure(
        &direct_tls,
        &format!("https://{PARTNER_HOST}:{}/rates", partner.port()),
        None,
        n,
    )
    .await;
    let mut r = RouteStats::new(
        "orders → https://api.partner.example (TLS by Envoy)",
        &out,
        mesh,
        direct_lat,
    );
    r.note = "Envoy originates TLS, verifies the demo CA".to_owned();
    routes.push(r);

    let (out, mesh) = measure(
        &direct,
        &format!("http://127.0.0.1:{}/", web.ingress),
        None,
        n,
    )
    .await;
    let (_, direct_lat) =
        measure(&direct, &format!("http://127.0.0.1:{}/", web.app), None, n).await;
    let mut r = RouteStats::new(
        "client → web → orders → payments + partner",
        &out,
        mesh,
        direct_lat,
    );
    r.note = "direct skips web's ingress Envoy only".to_owned();
    routes.push(r);

    let (out, mesh) = measure(&via_orders, "http://billing/anything", None, n.min(20)).await;
    let mut r = RouteStats::new(
        "orders → billing (not a dependency)",
        &out,
        mesh,
        Vec::new(),
    );
    r.note = "503 by design".to_owned();
    routes.push(r);

    let via_web = apps::egress_client(web.egress.unwrap_or_default())?;
    let (out, mesh) = measure(&via_web, "http://payments/pay", None, n.min(20)).await;
    let mut r = RouteStats::new(
        "web → payments (not in payments' incoming)",
        &out,
        mesh,
        Vec::new(),
    );
    r.note = "403 by Envoy RBAC on web's certificate".to_owned();
    routes.push(r);
    Ok(routes)
}

fn split_note(outcomes: &[(u16, String)]) -> String {
    let one = outcomes
        .iter()
        .filter(|(_, b)| b.contains("payments-1"))
        .count();
    let two = outcomes
        .iter()
        .filter(|(_, b)| b.contains("payments-2"))
        .count();
    format!("payments-1: {one}, payments-2 (canary): {two}")
}

fn check(routes: &[RouteStats]) -> anyhow::Result<()> {
    for r in &routes[..4] {
        anyhow::ensure!(
            r.ok == r.requests,
            "route `{}`: {} of {} requests failed; sample: {}",
            r.name,
            r.requests - r.ok,
            r.requests,
            r.sample
        );
    }
    let canary = &routes[1];
    anyhow::ensure!(
        canary
            .note
            .ends_with(&format!("(canary): {}", canary.requests)),
        "x-canary did not prefer the canary: {}",
        canary.note
    );
    let mtls = &routes[0];
    anyhow::ensure!(
        mtls.sample
            .contains("for spiffe://meshplane.local/service/orders"),
        "payments did not see orders' certificate identity: {}",
        mtls.sample
    );
    let denied = &routes[5];
    anyhow::ensure!(
        denied.other == denied.requests && denied.sample.contains("RBAC: access denied"),
        "web was not refused by payments' permissions: {}",
        denied.sample
    );
    let undeclared = &routes[4];
    anyhow::ensure!(
        undeclared.server_errors == undeclared.requests && undeclared.sample.contains("billing"),
        "undeclared host did not get a 503 naming it: {}",
        undeclared.sample
    );
    Ok(())
}
