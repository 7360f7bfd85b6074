//! The web panel in headless Chromium: a real control plane, a real sidecar with Envoy, and
//! `tests/browser/panel.mjs` (playwright-core driving Debian's chromium) clicking through the
//! panel. The log level is changed in the browser (refused without the control plane's token,
//! accepted with it) and checked on Envoy's own `/logging`.
//!
//! Needs `scripts/install-test-deps.sh` (chromium + `tests/browser/node_modules`). Without them
//! the test skips loudly, except under CI (`CI` set), where it fails.
//! Screenshots: `target/artifacts/panel-*.png`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::{Mesh, caller, free_port, upstream};
use tokio_util::sync::CancellationToken;

/// The control plane's token: the panel must be refused without it and accepted with it.
const TOKEN: &str = "panel-test-token";
/// Where the panel links dashboards (never fetched: the test checks the links).
const GRAFANA: &str = "https://grafana.example.test";

/// Chromium start, a dozen steps and the charts' samples (2 s apart) fit well within this.
const BROWSER_DEADLINE: Duration = Duration::from_secs(200);

struct BrowserTools {
    node: PathBuf,
    chromium: PathBuf,
    script: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The browser tooling, or `None` (after saying so loudly) when it is missing outside CI.
fn browser_tools() -> Option<BrowserTools> {
    let root = workspace_root();
    let chromium = std::env::var_os("MESHPLANE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    let node = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("node"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file());
    let playwright = root.join("tests/browser/node_modules/playwright-core/package.json");
    let mut missing = Vec::new();
    if !chromium.is_file() {
        missing.push(format!("chromium ({})", chromium.display()));
    }
    if node.is_none() {
        missing.push("node on PATH".to_owned());
    }
    if !playwright.is_file() {
        missing.push(format!("playwright-core ({})", playwright.display()));
    }
    if missing.is_empty() {
        return Some(BrowserTools {
            node: node.expect("checked"),
            chromium,
            script: root.join("tests/browser/panel.mjs"),
        });
    }
    let message = format!(
        "the web panel browser test needs {}: run scripts/install-test-deps.sh (as root for chromium)",
        missing.join(", ")
    );
    if in_ci() {
        panic!("{message}. CI is set, so this fails instead of skipping.");
    }
    // Straight to stderr, not eprintln!: the test harness would swallow that for a passing test.
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!!! SKIPPED: {message}\n{bar}\n"
    );
    None
}

/// Envoy's `/logging`: logger → level. Envoy lists its loggers on a POST without parameters
/// (a GET is refused as a mutation) and changes nothing then.
async fn envoy_log_levels(http: &reqwest::Client, admin_port: u16) -> Vec<(String, String)> {
    let text = http
        .post(format!("http://127.0.0.1:{admin_port}/logging"))
        .send()
        .await
        .expect("Envoy admin reachable")
        .text()
        .await
        .expect("body");
    text.lines()
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Steady traffic while the browser samples: ingress requests to the app, egress requests to
/// `orders`, and every fifth egress request to an undeclared host (a 503) so the 5xx chart has
/// something to draw.
fn generate_traffic(http: reqwest::Client, ingress: u16, egress: u16, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for n in 0u64.. {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let _ = http
                .get(format!("http://127.0.0.1:{ingress}/"))
                .send()
                .await;
            let host = if n % 5 == 0 { "undeclared" } else { "orders" };
            let _ = http
                .get(format!("http://127.0.0.1:{egress}/"))
                .header("host", host)
                .send()
                .await;
        }
    });
}

/// dc2's export (`GET /api/datacenters/local-state`) with one instance, on 127.0.0.1; served
/// until the test's runtime ends.
async fn remote_datacenter() -> std::net::SocketAddr {
    let (store, mut writer) = meshplane_registry::store();
    let ledger: meshplane_model::ServiceName = "ledger".parse().expect("name");
    let instance = meshplane_model::Instance {
        id: meshplane_model::InstanceId::new("ledger-1").expect("id"),
        service: ledger.clone(),
        node: "node-1".into(),
        address: "10.2.0.5".into(),
        port: 31001,
        tags: Vec::new(),
        meta: Default::default(),
        weight: 1,
        health: meshplane_model::Health::Passing,
        locality: meshplane_model::Locality {
            datacenter: "dc2".into(),
            zone: None,
        },
    };
    writer.apply(meshplane_registry::RegistryEvent::Replace {
        source: meshplane_registry::SourceId::new("embedded"),
        services: [(ledger, vec![instance])].into(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = meshplane_remote::router(
        meshplane_remote::LocalState::new("dc2", store),
        meshplane_remote::Followed::default(),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A grpcio client with its own xDS client (`meshplane bootstrap --grpc`) that has asked for
/// `xds:///payments` (whatever the call's outcome: payments' app speaks HTTP/1.1): its ADS
/// stream stays open until the process is killed, on drop.
fn proxyless_client(mesh: &Mesh, id: &str) -> KilledOnDrop {
    let dir = mesh.dir.path();
    let descriptor = dir.join(format!("{id}.yaml"));
    std::fs::write(
        &descriptor,
        "service: checkout\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n",
    )
    .expect("descriptor");
    let bootstrap = dir.join(format!("{id}-bootstrap.json"));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args(["bootstrap", "--grpc", "--descriptor"])
        .arg(&descriptor)
        .args(["--control-plane", &mesh.cp.xds_addr.to_string()])
        .args(["--instance-id", id, "--output"])
        .arg(&bootstrap)
        .status()
        .expect("meshplane bootstrap");
    assert!(status.success(), "meshplane bootstrap --grpc");
    let mut child = std::process::Command::new(support::grpc::python())
        .args([
            &format!("{}/tests/grpc/echo.py", support::grpc::ROOT),
            "client-xds",
        ])
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the gRPC client starts");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(
        stdin,
        r#"{{"target": "xds:///payments", "payload": "x", "timeout": 5}}"#
    )
    .expect("command");
    KilledOnDrop {
        child,
        _stdin: stdin,
    }
}

/// The client, and its stdin kept open (it stops when its stdin closes).
struct KilledOnDrop {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn panel_works_in_headless_chromium() {
    let Some(tools) = browser_tools() else {
        return;
    };
    // A second datacenter's control plane, as far as this one sees it: its local-state export
    // holding one instance. The panel's datacenters page must show it followed and fresh.
    let dc2 = remote_datacenter().await;
    let mut mesh = Mesh::start(|c, _| {
        c.token = Some(TOKEN.to_owned());
        c.remote_datacenters = Some(format!("dc2=http://{dc2}"));
        c.grafana_url = Some(format!("{GRAFANA}/"));
    })
    .await;
    let orders = upstream("orders-app").await;
    mesh.register("orders-1", "orders", orders, &[], 1).await;
    let app = upstream("payments-app").await;
    let (ingress, egress) = (free_port(), free_port());
    let descriptor = caller("payments", app, ingress, egress, "  - service: orders\n");
    // Reports its calls often, for the Migration page.
    mesh.sidecar_with(
        "payments-1",
        &descriptor,
        2,
        &["--traffic-report-interval", "200ms"],
    )
    .await;
    let envoy_admin = mesh.sidecar_admin("payments-1");
    // A proxyless gRPC client (grpcio) of `checkout`, calling payments: listed like a sidecar.
    let _checkout = proxyless_client(&mesh, "checkout-1");

    let before = envoy_log_levels(&mesh.http, envoy_admin).await;
    assert!(
        before.iter().any(|(_, level)| level != "debug"),
        "Envoy must not start at debug, or the check below proves nothing: {before:?}"
    );

    let stop_traffic = CancellationToken::new();
    generate_traffic(mesh.http.clone(), ingress, egress, stop_traffic.clone());

    let artifacts = workspace_root().join("target/artifacts");
    let admin_url = format!("http://{}", mesh.cp.admin_addr);
    let browser = tokio::process::Command::new(&tools.node)
        .arg(&tools.script)
        .arg(&admin_url)
        .arg(&artifacts)
        .args(["--service", "payments", "--hidden", "orders"])
        .args(["--proxy", "payments-1", "--listener", "ingress"])
        .args(["--proxyless", "checkout-1"])
        .args(["--level", "debug", "--token", TOKEN, "--expect-traffic"])
        .args(["--remote", "dc2"])
        .args(["--grafana", GRAFANA])
        .arg("--chromium")
        .arg(&tools.chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out run is killed when the future is dropped.
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let output = tokio::time::timeout(BROWSER_DEADLINE, browser.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("panel.mjs did not finish within {BROWSER_DEADLINE:?}"))
        .expect("node ran");
    stop_traffic.cancel();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("--- panel.mjs ---\n{log}");
    assert!(
        output.status.success(),
        "the browser test failed ({}); screenshots in {}\n{log}",
        output.status,
        artifacts.display()
    );
    assert!(
        artifacts.join("panel-proxy.png").is_file(),
        "screenshot saved"
    );

    // The flags saved in the browser are the control plane's, audited under the names given,
    // and the panel's stale save did not overwrite the concurrent change.
    let rollout = mesh.admin_json("/api/rollout").await;
    let orders = &rollout["flags"]["services"]["payments"]["dependencies"]["orders"];
    assert_eq!(orders["proxy"], true, "{rollout}");
    assert_eq!(
        orders["rollout"], 50.0,
        "the concurrent change stands: {rollout}"
    );
    let audit = mesh.admin_json("/api/rollout/audit").await;
    let actors: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["actor"]["name"].as_str())
        .collect();
    assert_eq!(actors, ["panel-test", "someone-else"], "{audit}");

    // The click in the browser reached Envoy itself, through the control plane and the relay.
    let after = envoy_log_levels(&mesh.http, envoy_admin).await;
    assert!(after.len() > 10, "Envoy lists its loggers: {after:?}");
    let not_debug: Vec<_> = after.iter().filter(|(_, l)| l != "debug").collect();
    assert!(
        not_debug.is_empty(),
        "every Envoy logger is at debug after the panel changed it; not: {not_debug:?}"
    );
}
