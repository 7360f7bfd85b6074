//! Metrics for Prometheus, end to end: every sidecar's scrape port (Envoy's
//! `/stats/prometheus` and nothing else of its admin API), registered with the instance; a
//! real Prometheus (Debian's, installed by scripts/install-test-deps.sh) that finds every
//! sidecar and the control plane through the shipped `deploy/prometheus/http-sd.yml` and
//! scrapes them; and the shipped `deploy/prometheus/consul-sd.yml` run through Prometheus's own
//! Consul discovery and relabelling (`tests/prometheus-consul-sd`, built by the same script)
//! against the embedded registry.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshplane_test_support::poll::{eventually, hold};
use serde_json::Value;
use support::{DEADLINE, Mesh, caller, free_port, poll, upstream, via_egress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// orders (egress to payments) and payments, each with a sidecar; orders' scrape port is set
/// in its descriptor, payments' is picked by its sidecar. Returns orders' egress, scrape and
/// ingress ports.
async fn orders_and_payments(mesh: &mut Mesh) -> (u16, u16, u16) {
    let payments_app = upstream("payments-1").await;
    // payments names orders as a client: its side counts orders' requests apart.
    let payments = format!(
        "service: payments\nport: {payments_app}\ningress: {{ port: {} }}\nincoming:\n  endpoints:\n    - {{ path_prefix: /, clients: [orders] }}\n",
        free_port()
    );
    mesh.sidecar("payments-1", &payments, 1).await;
    let (egress, metrics, ingress) = (free_port(), free_port(), free_port());
    let orders = caller(
        "orders",
        upstream("orders-1").await,
        ingress,
        egress,
        "  - service: payments\n",
    ) + &format!("metrics: {{ port: {metrics} }}\n");
    mesh.sidecar("orders-1", &orders, 2).await;
    assert!(
        poll(|| async { via_egress(&mesh.http, egress, "payments", None).await.0 == 200 }).await,
        "orders never reached payments\n{}",
        mesh.sidecar_log("orders-1")
    );
    (egress, metrics, ingress)
}

/// The registry's `Meta` and tags of instance `id` of `service`, once it is registered
/// (its sidecar registers once its Envoy is live).
async fn registered(mesh: &Mesh, service: &str, id: &str) -> (Value, Vec<String>) {
    let url = format!("http://{}/v1/health/service/{service}", mesh.registry());
    let entry = eventually(&format!("{id} registered"), DEADLINE, || async {
        let entries: Value = mesh
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        entries
            .as_array()
            .and_then(|a| a.iter().find(|e| e["Service"]["ID"] == id))
            .cloned()
            .ok_or_else(|| entries.to_string())
    })
    .await;
    let tags = entry["Service"]["Tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (entry["Service"]["Meta"].clone(), tags)
}

/// One raw HTTP/1.1 request (reqwest would normalise the path first): its status, 0 when the
/// connection closed without one.
async fn raw_status(port: u16, method: &str, path: &str) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("scrape port accepts");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scrape_port_serves_prometheus_stats_only_and_is_registered() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let (egress, metrics, _) = orders_and_payments(&mut mesh).await;

    // Registered: the descriptor's port, and the one payments' sidecar picked.
    let (meta, tags) = registered(&mesh, "orders", "orders-1").await;
    assert_eq!(meta["metrics_port"], metrics.to_string());
    assert!(tags.contains(&"meshplane-metrics".to_owned()), "{tags:?}");
    let (meta, _) = registered(&mesh, "payments", "payments-1").await;
    let picked: u16 = meta["metrics_port"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("payments registered no scrape port: {meta}"));

    for port in [metrics, picked] {
        let response = mesh
            .http
            .get(format!("http://127.0.0.1:{port}/stats/prometheus"))
            .send()
            .await
            .expect("scrape port answers");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("text");
        assert!(
            text.contains("# TYPE envoy_server_live gauge")
                && text.contains("envoy_server_live{} 1"),
            "not Envoy's Prometheus statistics: {}",
            &text[..text.len().min(500)]
        );
    }
    assert!(
        mesh.http
            .get(format!("http://127.0.0.1:{metrics}/stats/prometheus"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
            .contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"payments\"} 1"),
        "orders' request to payments is counted"
    );

    // Nothing else of Envoy's admin API, however the path is spelled.
    let admin = mesh.sidecar_admin("orders-1");
    for (method, path) in [
        ("POST", "/quitquitquit"),
        ("GET", "/quitquitquit"),
        ("POST", "/stats/prometheus/../quitquitquit"),
        ("POST", "/stats/prometheus/%2e%2e/quitquitquit"),
        ("POST", "//quitquitquit"),
        ("POST", "/logging?level=trace"),
        ("POST", "/runtime_modify?upstream.use_http2=false"),
        ("POST", "/healthcheck/fail"),
        ("POST", "/stats/prometheus"),
        ("GET", "/config_dump"),
        ("GET", "/stats"),
        ("GET", "/certs"),
    ] {
        let status = raw_status(metrics, method, path).await;
        assert!(
            status == 404 || status == 400,
            "{method} {path} on the scrape port answered {status}"
        );
    }
    let escaped = raw_status(
        metrics,
        "POST",
        "/stats%2Fprometheus%2F..%2F..%2Fquitquitquit",
    )
    .await;
    assert!(
        escaped == 400 || escaped == 404,
        "escaped slashes: {escaped}"
    );
    // Envoy is untouched: live, healthy, not in trace logging.
    let info: Value = mesh
        .http
        .get(format!("http://127.0.0.1:{admin}/server_info"))
        .send()
        .await
        .expect("Envoy still answers")
        .json()
        .await
        .expect("json");
    assert_eq!(info["state"], "LIVE");
    let levels = mesh
        .http
        .get(format!("http://127.0.0.1:{admin}/logging"))
        .send()
        .await
        .expect("admin")
        .text()
        .await
        .expect("text");
    assert!(!levels.contains(": trace"), "{levels}");
    assert_eq!(
        support::envoy_stat(&mesh.http, admin, "server.live").await,
        Some(1)
    );

    // Scrapers never cost a request: 16 scrapers in a loop, and some that connect and then
    // hang (a stuck Prometheus), while every call orders → payments keeps answering.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut hung = Vec::new();
    for _ in 0..16 {
        hung.push(
            tokio::net::TcpStream::connect(("127.0.0.1", metrics))
                .await
                .expect("connect"),
        );
        let (http, stop) = (mesh.http.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = http
                    .get(format!("http://127.0.0.1:{metrics}/stats/prometheus"))
                    .send()
                    .await
                    .map(|r| r.bytes());
            }
        });
    }
    let calls = hold(
        meshplane_test_support::poll::fault_window(),
        "orders → payments while scraped hard",
        || async {
            match via_egress(&mesh.http, egress, "payments", None).await {
                (200, _) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    stop.cancel();
    drop(hung);
    assert!(calls > 10, "only {calls} calls checked");
}

/// A real Prometheus server, stopped (and reaped) on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &str) -> Prometheus {
        let binary = std::env::var("MESHPLANE_PROMETHEUS")
            .unwrap_or_else(|_| "/usr/bin/prometheus".to_owned());
        assert!(
            Path::new(&binary).exists(),
            "{binary} is missing: run scripts/install-test-deps.sh (installs Debian's prometheus)"
        );
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("write config");
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("log");
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, port, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, http: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let response = http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .query(query)
            .send()
            .await;
        match response {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// The value of an instant query returning one series, if it does.
    async fn scalar(&self, http: &reqwest::Client, query: &str) -> Option<f64> {
        let answer = self.get(http, "/api/v1/query", &[("query", query)]).await;
        let result = answer["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped configuration with its placeholder filled and intervals shortened for a test.
fn shipped(name: &str, replacements: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus").join(name))
        .expect("shipped configuration");
    for (from, to) in replacements {
        assert!(text.contains(from), "{name} has no `{from}` any more");
        text = text.replace(from, to);
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_discovers_and_scrapes_every_sidecar_and_the_control_plane() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let (egress, metrics, orders_ingress) = orders_and_payments(&mut mesh).await;
    let config = shipped(
        "http-sd.yml",
        &[
            ("MESHPLANE_ADMIN", &mesh.cp.admin_addr.to_string()),
            ("scrape_interval: 15s", "scrape_interval: 1s"),
            ("scrape_timeout: 10s", "scrape_timeout: 1s"),
            ("refresh_interval: 30s", "refresh_interval: 1s"),
        ],
    );
    let prometheus = Prometheus::start(mesh.dir.path(), &config);

    // Found and scraped: both sidecars and the control plane, with the mesh's labels.
    let expected: BTreeSet<(String, String, String)> = [
        ("sidecar", "orders", format!("127.0.0.1:{metrics}")),
        (
            "control-plane",
            "meshplane-control-plane",
            mesh.cp.admin_addr.to_string(),
        ),
    ]
    .into_iter()
    .map(|(c, s, a)| (c.to_owned(), s.to_owned(), a))
    .collect();
    let seen = eventually(
        "Prometheus scraping the mesh's targets",
        DEADLINE,
        || async {
            let targets = prometheus.get(&mesh.http, "/api/v1/targets", &[]).await;
            let seen: BTreeSet<(String, String, String)> = targets["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["health"] == "up")
                .map(|t| {
                    let l = &t["labels"];
                    (
                        l["meshplane_component"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        l["service"].as_str().unwrap_or_default().to_owned(),
                        l["instance"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            if expected.is_subset(&seen) && seen.iter().any(|(_, s, _)| s == "payments") {
                Ok(seen)
            } else {
                Err(format!(
                    "up: {seen:?}, expected {expected:?} and payments\n{}",
                    prometheus.log_text()
                ))
            }
        },
    )
    .await;
    assert_eq!(seen.len(), 3, "exactly the mesh's three targets: {seen:?}");

    // The service-pair counters for orders → payments, on orders' side and on payments',
    // and orders' per-datacenter-pair counter, grow by exactly what was sent.
    let counters = [
        "sum(envoy_vhost_vcluster_upstream_rq_total{direction=\"outbound\",source_service=\"orders\",destination_service=\"payments\",service=\"orders\"})",
        "sum(envoy_vhost_vcluster_upstream_rq_total{direction=\"inbound\",source_service=\"orders\",destination_service=\"payments\",service=\"payments\"})",
        "sum(envoy_vhost_vcluster_upstream_rq_xx{direction=\"outbound\",source_service=\"orders\",destination_service=\"payments\",envoy_response_code_class=\"2\"})",
        "sum(envoy_cluster_zone_upstream_rq_xx{service=\"orders\",envoy_cluster_name=\"payments\",source_datacenter=\"dc1\",destination_datacenter=\"dc1\",envoy_response_code_class=\"2\"})",
        "sum(envoy_cluster_upstream_rq_total{service=\"orders\",envoy_cluster_name=\"payments\"})",
    ];
    let scalar = |query: &'static str| {
        let (prometheus, http) = (&prometheus, &mesh.http);
        move || async move { prometheus.scalar(http, query).await }
    };
    let mut before = Vec::new();
    for counter in counters {
        before.push(eventually(counter, DEADLINE, scalar(counter)).await);
    }
    const SENT: u32 = 7;
    for _ in 0..SENT {
        assert_eq!(
            via_egress(&mesh.http, egress, "payments", None).await.0,
            200
        );
        // And a caller without a sidecar calls orders (its side counts it as `other`).
        let direct = mesh
            .http
            .get(format!("http://127.0.0.1:{orders_ingress}/"))
            .send()
            .await
            .expect("orders' ingress");
        assert_eq!(direct.status(), 200);
    }
    for (counter, before) in counters.into_iter().zip(before) {
        let after = before + f64::from(SENT);
        eventually(&format!("{counter} == {after}"), DEADLINE, || async {
            match prometheus.scalar(&mesh.http, counter).await {
                Some(v) if v == after => Ok(()),
                other => Err(format!("{other:?} (was {before})")),
            }
        })
        .await;
    }
    // Latency is a histogram per pair, on both sides.
    for direction in ["outbound", "inbound"] {
        let query: &'static str = if direction == "outbound" {
            "sum(envoy_vhost_vcluster_upstream_rq_time_count{direction=\"outbound\",source_service=\"orders\",destination_service=\"payments\"})"
        } else {
            "sum(envoy_vhost_vcluster_upstream_rq_time_count{direction=\"inbound\",source_service=\"orders\",destination_service=\"payments\"})"
        };
        // Envoy merges histograms into its output every stats flush (5 s).
        eventually(query, DEADLINE, || async {
            match prometheus.scalar(&mesh.http, query).await {
                Some(count) if count >= f64::from(SENT) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    // The control plane's own metrics arrive too, labelled as such.
    let streams = "sum(meshplane_xds_streams{meshplane_component=\"control-plane\"})";
    eventually(&format!("{streams} == 2"), DEADLINE, || async {
        match prometheus.scalar(&mesh.http, streams).await {
            Some(2.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Every panel of every shipped dashboard shows data: each query, with the dashboards'
    // variables set to this mesh's, returns at least one series.
    let dashboards = std::fs::read_dir(Path::new(ROOT).join("deploy/grafana"))
        .expect("deploy/grafana")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect::<Vec<_>>();
    assert_eq!(dashboards.len(), 4, "{dashboards:?}");
    let mut checked = 0;
    for file in &dashboards {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("JSON");
        let name = file.display();
        for variable in dashboard["templating"]["list"]
            .as_array()
            .expect("variables")
        {
            let Some(query) = variable["definition"].as_str() else {
                continue;
            };
            // label_values(<selector>, <label>): the values Grafana offers.
            let (selector, label) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(", "))
                .unwrap_or_else(|| panic!("{name}: unexpected variable query {query}"));
            let values = grafana_query(
                &prometheus,
                &mesh.http,
                &format!("count by ({label}) ({selector})"),
            )
            .await;
            let expected = if label == "instance_id" {
                "orders-1"
            } else {
                "orders"
            };
            assert!(
                values.iter().any(|v| v["metric"][label] == expected),
                "{name}: variable {query} does not offer {expected}: {values:?}"
            );
        }
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let query = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$service", "orders")
                    .replace("$instance", "orders-1");
                let title = panel["title"].as_str().unwrap_or_default();
                eventually(&format!("{name} / {title}: {query}"), DEADLINE, || async {
                    let result = grafana_query(&prometheus, &mesh.http, &query).await;
                    if result.is_empty() {
                        Err("no data".to_owned())
                    } else {
                        Ok(())
                    }
                })
                .await;
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} panel queries");
}

/// An instant query's result (`[]` when it failed or matched nothing).
async fn grafana_query(prometheus: &Prometheus, http: &reqwest::Client, query: &str) -> Vec<Value> {
    let answer = prometheus
        .get(http, "/api/v1/query", &[("query", query)])
        .await;
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What `tests/prometheus-consul-sd` found: (job, address, scheme, path, labels).
fn consul_sd(config: &Path, registry: &str, want: usize) -> Vec<Value> {
    let binary = std::env::var("MESHPLANE_PROMETHEUS_CONSUL_SD")
        .unwrap_or_else(|_| format!("{ROOT}/.tools/bin/prometheus-consul-sd"));
    assert!(
        Path::new(&binary).exists(),
        "{binary} is missing: run scripts/install-test-deps.sh (builds tests/prometheus-consul-sd with Go)"
    );
    let out = Command::new(&binary)
        .args(["-config", &config.display().to_string()])
        .args(["-server", registry])
        .args(["-want", &want.to_string()])
        .args(["-timeout", "30s"])
        .output()
        .expect("prometheus-consul-sd runs");
    assert!(
        out.status.success(),
        "Prometheus's Consul discovery did not find {want} targets: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON target per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_consul_discovery_on_the_embedded_registry_finds_the_same_targets() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let (_, metrics, _) = orders_and_payments(&mut mesh).await;
    // A service without a sidecar is not scraped; the control plane registers as documented.
    mesh.register("legacy-1", "legacy", upstream("legacy-1").await, &[], 1)
        .await;
    let admin = mesh.cp.admin_addr;
    let r = mesh
        .http
        .put(format!(
            "http://{}/v1/agent/service/register",
            mesh.registry()
        ))
        .json(&serde_json::json!({
            "ID": "cp-a", "Name": "meshplane-control-plane", "Address": "127.0.0.1",
            "Port": admin.port(), "Meta": { "admin_url": format!("http://{admin}") },
        }))
        .send()
        .await
        .expect("registry");
    assert!(r.status().is_success());

    // Registered, and their checks (through Envoy to the app) have passed.
    for service in ["orders", "payments"] {
        let url = format!(
            "http://{}/v1/health/service/{service}?passing",
            mesh.registry()
        );
        eventually(&format!("{service} passing"), DEADLINE, || async {
            let entries: Value = mesh
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match entries.as_array().map(Vec::len) {
                Some(1) => Ok(()),
                _ => Err(entries.to_string()),
            }
        })
        .await;
    }
    let config = mesh.dir.path().join("consul-sd.yml");
    std::fs::write(
        &config,
        shipped(
            "consul-sd.yml",
            &[
                ("CONSUL_ADDRESS", "127.0.0.1:1"),
                ("refresh_interval: 30s", "refresh_interval: 1s"),
            ],
        ),
    )
    .expect("write");
    let registry = mesh.registry().to_string();
    let found = tokio::task::spawn_blocking(move || consul_sd(&config, &registry, 3))
        .await
        .expect("join");
    let key = |t: &Value| {
        let l = &t["labels"];
        format!(
            "{} {}://{}{} service={} instance_id={} datacenter={} health={}",
            l["meshplane_component"].as_str().unwrap_or_default(),
            t["scheme"].as_str().unwrap_or_default(),
            t["address"].as_str().unwrap_or_default(),
            t["metrics_path"].as_str().unwrap_or_default(),
            l["service"].as_str().unwrap_or_default(),
            l["instance_id"].as_str().unwrap_or_default(),
            l["datacenter"].as_str().unwrap_or_default(),
            l["health"].as_str().unwrap_or("-"),
        )
    };
    let consul: BTreeSet<String> = found.iter().map(key).collect();
    assert!(
        consul.contains(&format!(
            "sidecar http://127.0.0.1:{metrics}/stats/prometheus service=orders instance_id=orders-1 datacenter=dc1 health=passing"
        )),
        "{consul:#?}"
    );
    assert!(
        consul.contains(&format!(
            "control-plane http://{admin}/metrics service=meshplane-control-plane instance_id=cp-a datacenter=dc1 health=-"
        )),
        "{consul:#?}"
    );
    assert_eq!(
        consul.len(),
        3,
        "orders, payments and the control plane: {consul:#?}"
    );

    // The control plane's HTTP discovery answers the same targets, labels and all.
    let groups = mesh.admin_json("/api/prometheus/targets").await;
    let http_sd: BTreeSet<String> = groups
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            let l = &g["labels"];
            key(&serde_json::json!({
                "address": g["targets"][0],
                "scheme": l["__scheme__"].as_str().unwrap_or("http"),
                "metrics_path": l["__metrics_path__"],
                "labels": l,
            }))
        })
        .collect();
    assert_eq!(http_sd, consul);

    // And every target found answers Prometheus's text format.
    for t in &found {
        let url = format!(
            "{}://{}{}",
            t["scheme"].as_str().unwrap_or_default(),
            t["address"].as_str().unwrap_or_default(),
            t["metrics_path"].as_str().unwrap_or_default()
        );
        let response = mesh.http.get(&url).send().await.expect("target answers");
        assert_eq!(response.status(), 200, "{url}");
        let text = response.text().await.expect("text");
        assert!(text.contains("# TYPE "), "{url} is not Prometheus text");
    }
}
