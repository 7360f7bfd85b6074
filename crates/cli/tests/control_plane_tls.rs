//! HTTPS on the control plane's admin API (where sidecars enrol with the built-in CA) and on
//! the embedded registry's Consul-compatible API: a real sidecar enrols and registers over
//! it, a real Consul client (py-consul) registers with certificate verification, and a
//! sidecar given the wrong CA bundle is refused with a clear error.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {} is missing: run scripts/install-test-deps.sh first",
        python.display()
    );
    eprintln!(
        "\n!!! SKIPPING the py-consul part: {} not found. Run scripts/install-test-deps.sh. !!!\n",
        python.display()
    );
    None
}

/// py-consul over HTTPS, verifying the registry's certificate against `ca`: registers
/// `payments-1` on `port`, then prints the instances of `orders` it sees.
async fn py_consul(
    python: &PathBuf,
    registry: std::net::SocketAddr,
    ca: &str,
    port: u16,
) -> String {
    let script = format!(
        r#"
import consul
c = consul.Consul(host="127.0.0.1", port={registry_port}, scheme="https", verify={ca:?})
c.agent.service.register("payments", service_id="payments-1", address="127.0.0.1", port={port})
_, nodes = c.health.service("orders")
print("orders:", ",".join(n["Service"]["ID"] for n in nodes))
"#,
        registry_port = registry.port(),
    );
    let out = tokio::process::Command::new(python)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("py-consul finished within 60s")
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "py-consul over HTTPS failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_and_a_consul_client_use_the_admin_api_and_the_registry_over_https() {
    let pki = tempfile::tempdir().expect("tmp");
    let server_pki = support::TestCa::new(pki.path(), "control-plane");
    let (cert, key) = server_pki.issue_server("api");
    let ca = server_pki.ca_file().to_owned();
    let mut mesh = support::Mesh::start(move |c, _| {
        c.admin_tls_cert = Some(cert.clone().into());
        c.admin_tls_key = Some(key.clone().into());
        c.registry_tls_cert = Some(cert.into());
        c.registry_tls_key = Some(key.into());
    })
    .await;
    mesh.scheme = "https";

    // Plain HTTP is not served on either port.
    let plain = mesh
        .http
        .get(format!("http://{}/healthz", mesh.cp.admin_addr))
        .send()
        .await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "the admin API must not answer plain HTTP"
    );

    // The sidecar enrols with the CA and registers over HTTPS; its Envoy gets its config.
    let (d, egress) = support::orders_to_payments();
    mesh.sidecar_with("orders-1", &d, 2, &["--control-plane-ca-file", &ca])
        .await;
    let log = mesh.sidecar_log("orders-1");
    assert!(
        log.contains("serving the service identity over SDS"),
        "{log}"
    );

    let Some(python) = python() else { return };
    let upstream = support::upstream("payments-1").await;
    let registered = support::poll(|| async {
        py_consul(&python, mesh.registry(), &ca, upstream)
            .await
            .contains("orders: orders-1")
    })
    .await;
    assert!(registered, "py-consul sees the sidecar's registration");
    // And Envoy serves traffic to the instance py-consul registered.
    let reached = support::poll(|| async {
        support::via_egress(&mesh.http, egress, "payments", None).await
            == (200, "payments-1".to_owned())
    })
    .await;
    assert!(reached, "{}", mesh.sidecar_log("orders-1"));

    // Egress rollout flags: stored in the registry's KV over HTTPS, followed by the sidecar
    // over HTTPS, the caller's address in the audit log.
    let roots =
        reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca).expect("ca")).expect("ca bundle");
    let https = reqwest::Client::builder()
        .tls_certs_only(roots)
        .no_proxy()
        .build()
        .expect("client");
    let r = https
        .put(format!("https://{}/api/rollout", mesh.cp.admin_addr))
        .body(r#"{"services": {"orders": {"dependencies": {"payments": {"proxy": true}}}}}"#)
        .send()
        .await
        .expect("admin API");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let audit: serde_json::Value = https
        .get(format!("https://{}/api/rollout/audit", mesh.cp.admin_addr))
        .send()
        .await
        .expect("admin API")
        .json()
        .await
        .expect("json");
    assert_eq!(audit[0]["actor"]["name"], "anonymous", "{audit}");
    assert!(
        audit[0]["actor"]["remote_address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{audit}"
    );
    let followed = support::poll(|| async {
        let Ok(r) = mesh
            .http
            .get(format!("http://127.0.0.1:{egress}/.meshplane/egress"))
            .send()
            .await
        else {
            return false;
        };
        r.text()
            .await
            .unwrap_or_default()
            .contains(r#""payments":{"proxy":true"#)
    })
    .await;
    assert!(followed, "{}", mesh.sidecar_log("orders-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_with_the_wrong_ca_bundle_is_refused_clearly() {
    let pki = tempfile::tempdir().expect("tmp");
    let server_pki = support::TestCa::new(pki.path(), "control-plane");
    let rogue = support::TestCa::new(pki.path(), "rogue");
    let (cert, key) = server_pki.issue_server("api");
    let mesh = support::Mesh::start(move |c, _| {
        c.admin_tls_cert = Some(cert.into());
        c.admin_tls_key = Some(key.into());
    })
    .await;
    let descriptor = mesh.dir.path().join("orders.yaml");
    std::fs::write(
        &descriptor,
        support::caller(
            "orders",
            support::free_port(),
            support::free_port(),
            support::free_port(),
            "  - service: payments\n",
        ),
    )
    .expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .arg("sidecar")
        .arg("--descriptor")
        .arg(&descriptor)
        .args(["--control-plane", &mesh.cp.xds_addr.to_string()])
        .args(["--ca-url", &format!("https://{}", mesh.cp.admin_addr)])
        .args(["--control-plane-ca-file", rogue.ca_file()])
        .arg("--work-dir")
        .arg(mesh.dir.path().join("orders-1"))
        .args(["--instance-id", "orders-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("meshplane sidecar starts");
    let started = Instant::now();
    let out = tokio::time::timeout(support::DEADLINE, async {
        let status = child.wait().await.expect("exit status");
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut stderr).await;
        }
        (status, stderr)
    })
    .await;
    let Ok((status, stderr)) = out else {
        let _ = child.kill().await;
        panic!(
            "the sidecar kept running for {:?} with an untrusted CA",
            started.elapsed()
        );
    };
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("not trusted"), "{stderr}");
    assert!(stderr.contains("--control-plane-ca-file"), "{stderr}");
    assert_eq!(mesh.cp.status.proxies().len(), 0, "no Envoy connected");
}
