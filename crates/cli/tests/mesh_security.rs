//! mTLS between real Envoy sidecars with certificates from the control plane's CA, and
//! `incoming` permissions enforced by Envoy's RBAC filter on the caller's certificate.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, Uri};
use support::{Mesh, TestCa, caller, envoy_stat, free_port, poll};

/// What the protected app received: method, path and the client-certificate header Envoy set.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    xfcc: String,
}

/// An app that records every request and answers 200 `app`.
async fn recording_app() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let router = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
        let log = log.clone();
        async move {
            let xfcc = headers
                .get("x-forwarded-client-cert")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            log.lock().expect("lock").push(Seen {
                method: method.to_string(),
                path: uri.path().to_owned(),
                xfcc,
            });
            "app"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (port, seen)
}

/// A request through a caller's egress port (`Host: host`).
async fn call(
    mesh: &Mesh,
    egress: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = mesh
        .http
        .request(method, format!("http://127.0.0.1:{egress}{path}"))
        .header("host", host);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    match r.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Polls until `egress` reaches `host` with status `want` for `path`.
async fn until_status(mesh: &Mesh, egress: u16, host: &str, path: &str, want: u16) -> bool {
    poll(|| async { call(mesh, egress, host, "GET", path, &[]).await.0 == want }).await
}

const ORDERS_INCOMING: &str = r#"
incoming:
  unlisted_endpoints: block
  endpoints:
    - { path_prefix: /api/, methods: [GET, POST], clients: [web, "role:backoffice"] }
    - { path: /status/health }
    - { path_prefix: /reports/, clients: [web], unlisted_clients: log }
  roles:
    - { name: backoffice, clients: [admin-ui] }
"#;

/// JSON access-log lines of RBAC decisions in a sidecar's output.
fn decisions(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["meshplane"] == "rbac")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn permissions_are_enforced_on_the_certificate_identity() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let (app, seen) = recording_app().await;
    let orders_ingress = free_port();
    let orders = format!(
        "service: orders\nport: {app}\ningress: {{ port: {orders_ingress} }}\n{ORDERS_INCOMING}"
    );
    mesh.sidecar("orders-1", &orders, 1).await;

    let deps = "  - service: orders\n";
    let mut egress = std::collections::BTreeMap::new();
    for svc in ["web", "admin-ui", "stranger"] {
        let port = free_port();
        let (caller_app, _) = recording_app().await;
        mesh.sidecar(
            &format!("{svc}-1"),
            &caller(svc, caller_app, free_port(), port, deps),
            2,
        )
        .await;
        egress.insert(svc, port);
    }

    // Allowed client: 200, and the app learns the verified caller from Envoy.
    assert!(
        until_status(&mesh, egress["web"], "orders", "/api/orders", 200).await,
        "web reaches orders /api/orders\n{}",
        mesh.sidecar_log("orders-1")
    );
    let last = seen.lock().expect("lock").last().cloned().expect("seen");
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/api/orders")
    );
    assert!(
        last.xfcc
            .contains("URI=spiffe://meshplane.local/service/web"),
        "the app sees the caller's certificate identity: {last:?}"
    );

    // Role expansion: admin-ui is in role backoffice.
    assert!(until_status(&mesh, egress["admin-ui"], "orders", "/api/orders", 200).await);

    // Unlisted client: 403 from Envoy, the app never sees it, one log line says why.
    let before = seen.lock().expect("lock").len();
    let (status, body) = call(
        &mesh,
        egress["stranger"],
        "orders",
        "POST",
        "/api/orders",
        &[("x-request-id", "req-stranger-1")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        seen.lock().expect("lock").len(),
        before,
        "the app was not called"
    );
    let denied = poll(|| async {
        decisions(&mesh.sidecar_log("orders-1"))
            .iter()
            .any(|d| d["request_id"] == "req-stranger-1")
    })
    .await;
    assert!(
        denied,
        "a log line for the denied request\n{}",
        mesh.sidecar_log("orders-1")
    );
    let line = decisions(&mesh.sidecar_log("orders-1"))
        .into_iter()
        .find(|d| d["request_id"] == "req-stranger-1")
        .expect("line");
    assert_eq!(line["decision"], "denied");
    assert_eq!(line["caller"], "spiffe://meshplane.local/service/stranger");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/api/orders");
    assert_eq!(line["service"], "orders");

    // A listed client with a method the endpoint does not list: an unlisted endpoint, blocked.
    let (status, _) = call(&mesh, egress["web"], "orders", "DELETE", "/api/orders", &[]).await;
    assert_eq!(status, 403);

    // An endpoint without clients is open, to mesh callers and plaintext callers alike.
    let (status, _) = call(
        &mesh,
        egress["stranger"],
        "orders",
        "GET",
        "/status/health",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let direct = format!("http://127.0.0.1:{orders_ingress}");
    let health = mesh
        .http
        .get(format!("{direct}/status/health"))
        .send()
        .await
        .expect("plaintext health");
    assert_eq!(health.status(), 200, "permissive accepts plaintext");

    // `log` mode for unlisted clients: let through, logged.
    let (status, _) = call(
        &mesh,
        egress["stranger"],
        "orders",
        "GET",
        "/reports/q3",
        &[("x-request-id", "req-stranger-2")],
    )
    .await;
    assert_eq!(status, 200, "log mode lets the request through");
    assert!(
        poll(|| async {
            decisions(&mesh.sidecar_log("orders-1"))
                .iter()
                .any(|d| d["request_id"] == "req-stranger-2" && d["decision"] == "logged")
        })
        .await,
        "a `logged` line for the let-through request\n{}",
        mesh.sidecar_log("orders-1")
    );
    // The allowed client on the same endpoint produces no line.
    let (status, _) = call(
        &mesh,
        egress["web"],
        "orders",
        "GET",
        "/reports/q3",
        &[("x-request-id", "req-web-reports")],
    )
    .await;
    assert_eq!(status, 200);

    // A plain header never grants access: plaintext with a forged client-cert header.
    let forged = mesh
        .http
        .get(format!("{direct}/api/orders"))
        .header(
            "x-forwarded-client-cert",
            "URI=spiffe://meshplane.local/service/web",
        )
        .send()
        .await
        .expect("plaintext call");
    assert_eq!(forged.status(), 403, "a forged header is not an identity");

    // One counter per decision, in the proxy's own stats.
    let admin = mesh.sidecar_admin("orders-1");
    let denied = envoy_stat(&mesh.http, admin, "http.ingress.rbac.enforce_.denied")
        .await
        .unwrap_or(0);
    assert!(denied >= 3, "denied counter: {denied}");
    let logged = envoy_stat(&mesh.http, admin, "http.ingress.rbac.audit_.shadow_denied")
        .await
        .unwrap_or(0);
    assert_eq!(
        logged, 1,
        "exactly the one let-through request is counted as logged"
    );
    assert!(
        !decisions(&mesh.sidecar_log("orders-1"))
            .iter()
            .any(|d| d["request_id"] == "req-web-reports"),
        "allowed requests are not logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_refuses_plaintext_and_untrusted_certificates() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let (app, seen) = recording_app().await;
    let vault_ingress = free_port();
    let vault = format!(
        "service: vault\nport: {app}\nmtls: strict\ningress: {{ port: {vault_ingress}, health_path: /healthz }}\n"
    );
    mesh.sidecar("vault-1", &vault, 1).await;
    let web_egress = free_port();
    let (web_app, _) = recording_app().await;
    mesh.sidecar(
        "web-1",
        &caller(
            "web",
            web_app,
            free_port(),
            web_egress,
            "  - service: vault\n",
        ),
        2,
    )
    .await;
    assert!(
        until_status(&mesh, web_egress, "vault", "/secret", 200).await,
        "a mesh caller reaches the strict service over mTLS\n{}",
        mesh.sidecar_log("vault-1")
    );

    // Plaintext: refused with an explanation, except the health path the registry calls.
    let before = seen.lock().expect("lock").len();
    let plain = mesh
        .http
        .get(format!("http://127.0.0.1:{vault_ingress}/secret"))
        .send()
        .await
        .expect("plaintext answer");
    assert_eq!(plain.status(), 403);
    assert!(
        plain
            .text()
            .await
            .unwrap_or_default()
            .contains("accepts only mutual TLS"),
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        before,
        "the app was not called"
    );
    let health = mesh
        .http
        .get(format!("http://127.0.0.1:{vault_ingress}/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);

    // A caller whose certificate comes from another CA (claiming web's identity) fails the
    // handshake: the request never reaches the app.
    let dir = tempfile::tempdir().expect("tmp");
    let rogue = rogue_certificate(dir.path(), "spiffe://meshplane.local/service/web");
    let rogue_egress = free_port();
    let (rogue_app, _) = recording_app().await;
    mesh.sidecar_with(
        "rogue-1",
        &caller(
            "rogue",
            rogue_app,
            free_port(),
            rogue_egress,
            "  - service: vault\n",
        ),
        2,
        &[
            "--cert-file",
            &rogue.0,
            "--key-file",
            &rogue.1,
            "--ca-file",
            &rogue.2,
        ],
    )
    .await;
    let before = seen.lock().expect("lock").len();
    let (status, body) = call(&mesh, rogue_egress, "vault", "GET", "/secret", &[]).await;
    assert_eq!(status, 503, "untrusted certificate: {body}");
    assert_eq!(
        seen.lock().expect("lock").len(),
        before,
        "the app was not called"
    );
    let handshake_failures = envoy_stat(
        &mesh.http,
        mesh.sidecar_admin("vault-1"),
        &format!("listener.127.0.0.1_{vault_ingress}.ssl.connection_error"),
    )
    .await
    .unwrap_or(0);
    assert!(
        handshake_failures >= 1,
        "vault's listener saw a failed handshake"
    );
}

/// A CA nobody trusts and a certificate from it for `uri`: (cert, key, ca) file paths.
fn rogue_certificate(dir: &std::path::Path, uri: &str) -> (String, String, String) {
    let (cert, key, ca, _) = TestCa::new(dir, "rogue").issue("rogue", uri);
    (cert, key, ca)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_certificates_are_used_and_replaced_files_picked_up_without_restart() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let dir = tempfile::tempdir().expect("tmp");
    let ca = TestCa::new(dir.path(), "deployment");
    let (app, seen) = recording_app().await;
    let ingress = free_port();
    let (oc, ok, oca, _) = ca.issue("orders", "spiffe://meshplane.local/service/orders");
    mesh.sidecar_with(
        "orders-1",
        &format!("service: orders\nport: {app}\nmtls: strict\ningress: {{ port: {ingress} }}\n"),
        1,
        &["--cert-file", &oc, "--key-file", &ok, "--ca-file", &oca],
    )
    .await;
    let egress = free_port();
    let (web_app, _) = recording_app().await;
    let (wc, wk, wca, first) = ca.issue("web", "spiffe://meshplane.local/service/web");
    mesh.sidecar_with(
        "web-1",
        &caller("web", web_app, free_port(), egress, "  - service: orders\n"),
        2,
        &["--cert-file", &wc, "--key-file", &wk, "--ca-file", &wca],
    )
    .await;
    assert!(
        until_status(&mesh, egress, "orders", "/x", 200).await,
        "mTLS with host certificates\n{}",
        mesh.sidecar_log("orders-1")
    );
    let web_admin = mesh.sidecar_admin("web-1");
    let pid_before = envoy_stat(&mesh.http, web_admin, "server.hot_restart_epoch").await;
    assert_eq!(
        serial(&mesh, web_admin).await.as_deref(),
        Some(first.as_str())
    );

    // The deployment replaces web's certificate: Envoy serves the new one, no restart.
    let (_, _, _, second) = ca.issue("web", "spiffe://meshplane.local/service/web");
    assert_ne!(first, second);
    assert!(
        poll(|| async { serial(&mesh, web_admin).await.as_deref() == Some(second.as_str()) }).await,
        "Envoy picked up the replaced files\n{}",
        mesh.sidecar_log("web-1")
    );
    assert_eq!(
        envoy_stat(&mesh.http, web_admin, "server.hot_restart_epoch").await,
        pid_before,
        "no restart"
    );
    let (status, _) = call(&mesh, egress, "orders", "GET", "/after-rotation", &[]).await;
    assert_eq!(status, 200);
    let last = seen.lock().expect("lock").last().cloned().expect("seen");
    assert!(
        last.xfcc
            .contains("URI=spiffe://meshplane.local/service/web"),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_under_load_without_a_failed_request() {
    // 12 s certificates: renewed every ~6 s.
    let mut mesh = Mesh::start(|c, _| c.cert_ttl = "12s".to_owned()).await;
    let (app, _) = recording_app().await;
    let ingress = free_port();
    mesh.sidecar(
        "payments-1",
        &format!("service: payments\nport: {app}\nmtls: strict\ningress: {{ port: {ingress} }}\n"),
        1,
    )
    .await;
    let egress = free_port();
    let (web_app, _) = recording_app().await;
    mesh.sidecar(
        "web-1",
        &caller(
            "web",
            web_app,
            free_port(),
            egress,
            "  - service: payments\n",
        ),
        2,
    )
    .await;
    assert!(until_status(&mesh, egress, "payments", "/pay", 200).await);
    let admin = mesh.sidecar_admin("payments-1");
    let first = serial(&mesh, admin)
        .await
        .expect("payments has a certificate");

    // Continuous load until both proxies have rotated twice (or the deadline).
    let started = tokio::time::Instant::now();
    let mut failures = Vec::new();
    let mut requests = 0u32;
    let mut serials = vec![first.clone()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while serials.len() < 3 && tokio::time::Instant::now() < deadline {
        let (status, body) = call(&mesh, egress, "payments", "GET", "/pay", &[]).await;
        requests += 1;
        if status != 200 {
            failures.push((status, body));
        }
        if requests.is_multiple_of(20)
            && let Some(s) = serial(&mesh, admin).await
            && serials.last() != Some(&s)
        {
            serials.push(s);
        }
    }
    assert!(
        serials.len() >= 3,
        "two rotations within the deadline: {serials:?}\n{}",
        mesh.sidecar_log("payments-1")
    );
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed during rotation: {:?}",
        failures.len(),
        failures.first()
    );
    // Renewal at half the lifetime, not a storm: two sidecars, one certificate each per ~6 s.
    let metrics = mesh
        .http
        .get(format!("http://{}/metrics", mesh.cp.admin_addr))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let issued: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meshplane_ca_certificates_issued_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("issued counter");
    let bound = 2.0 * (started.elapsed().as_secs_f64() / 6.0 + 2.0);
    assert!(
        issued <= bound,
        "{issued} certificates issued in {:?}: renewals come too early",
        started.elapsed()
    );
}

/// The serial number of the certificate payments' Envoy currently serves (admin `/certs`).
async fn serial(mesh: &Mesh, admin: u16) -> Option<String> {
    let certs: serde_json::Value = mesh
        .http
        .get(format!("http://127.0.0.1:{admin}/certs"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    certs["certificates"]
        .as_array()?
        .iter()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_owned))
        .next()
}

/// Kills and reaps a child process when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A host that runs Envoy itself (`meshplane bootstrap`) with `meshplane identity` serving
/// its certificate from the control plane's CA: a strict service reachable over mTLS.
#[tokio::test(flavor = "multi_thread")]
async fn a_self_run_envoy_gets_its_identity_from_meshplane_identity() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (app, seen) = recording_app().await;
    let ingress = free_port();
    let descriptor = dir.path().join("legacy.yaml");
    std::fs::write(
        &descriptor,
        format!("service: legacy\nport: {app}\nmtls: strict\ningress: {{ port: {ingress} }}\n"),
    )
    .expect("write");
    let work = dir.path().join("run");
    let admin = free_port();
    let common = [
        "--descriptor".to_owned(),
        descriptor.display().to_string(),
        "--control-plane".to_owned(),
        mesh.cp.xds_addr.to_string(),
        "--instance-id".to_owned(),
        "legacy-1".to_owned(),
        "--work-dir".to_owned(),
        work.display().to_string(),
        "--ca-url".to_owned(),
        format!("http://{}", mesh.cp.admin_addr),
    ];
    let meshplane = env!("CARGO_BIN_EXE_meshplane");
    let out = std::process::Command::new(meshplane)
        .arg("bootstrap")
        .args(&common)
        .args([
            "--admin-port",
            &admin.to_string(),
            "--listen-address",
            "127.0.0.1",
        ])
        .output()
        .expect("meshplane bootstrap runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(&work).expect("mkdir");
    let bootstrap = work.join("envoy.json");
    std::fs::write(&bootstrap, &out.stdout).expect("write bootstrap");

    let log = std::fs::File::create(dir.path().join("identity.log")).expect("log");
    let _identity = Reaped(
        std::process::Command::new(meshplane)
            .arg("identity")
            .args(&common)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("meshplane identity starts"),
    );
    let socket = work.join("sds.sock");
    assert!(
        poll(|| async { socket.exists() }).await,
        "meshplane identity serves {}: {}",
        socket.display(),
        std::fs::read_to_string(dir.path().join("identity.log")).unwrap_or_default()
    );
    let envoy = meshplane_test_support::envoy::envoy_binary();
    let envoy_log = std::fs::File::create(dir.path().join("envoy.log")).expect("log");
    let _envoy = Reaped(
        std::process::Command::new(envoy)
            .args(["-c", &bootstrap.display().to_string()])
            .args(["--base-id", &admin.to_string(), "--concurrency", "1"])
            .args(["--log-level", "warning"])
            .stdin(std::process::Stdio::null())
            .stdout(envoy_log.try_clone().expect("log"))
            .stderr(envoy_log)
            .spawn()
            .expect("envoy starts"),
    );
    // Registered by the host's own tooling, with its mTLS mode.
    let registration = serde_json::json!({
        "ID": "legacy-1", "Name": "legacy", "Address": "127.0.0.1", "Port": ingress,
        "Meta": { "mtls": "strict" },
    });
    let r = mesh
        .http
        .put(format!(
            "http://{}/v1/agent/service/register",
            mesh.registry()
        ))
        .json(&registration)
        .send()
        .await
        .expect("registry");
    assert!(r.status().is_success());

    let egress = free_port();
    let (web_app, _) = recording_app().await;
    mesh.sidecar(
        "web-1",
        &caller("web", web_app, free_port(), egress, "  - service: legacy\n"),
        2,
    )
    .await;
    assert!(
        until_status(&mesh, egress, "legacy", "/old", 200).await,
        "web reaches the self-run Envoy over mTLS\n{}",
        std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default()
    );
    let last = seen.lock().expect("lock").last().cloned().expect("seen");
    assert!(
        last.xfcc
            .contains("URI=spiffe://meshplane.local/service/web"),
        "{last:?}"
    );
    let plain = mesh
        .http
        .get(format!("http://127.0.0.1:{ingress}/old"))
        .send()
        .await
        .expect("plaintext answer");
    assert_eq!(plain.status(), 403, "strict: plaintext refused");
}

/// Accepts any server certificate: this client tests what the *server* accepts.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `GET /` over TLS presenting `cert_pem`/`key_pem`; the response head, or the error.
async fn tls_get(port: u16, cert_pem: &str, key_pem: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("vault").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"GET /secret HTTP/1.1\r\nHost: vault\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await {
        Ok(Ok(_)) if !out.is_empty() => Ok(String::from_utf8_lossy(&out).into_owned()),
        Ok(Ok(_)) => Err("closed without a response".to_owned()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no answer".to_owned()),
    }
}

/// The strict service's own listener refuses a client certificate from an untrusted CA
/// (checked from a client that trusts any server, so only the server's check can fail),
/// and accepts one the control plane's CA signed.
#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_refuses_client_certificates_from_an_untrusted_ca() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let (app, seen) = recording_app().await;
    let ingress = free_port();
    mesh.sidecar(
        "vault-1",
        &format!("service: vault\nport: {app}\nmtls: strict\ningress: {{ port: {ingress} }}\n"),
        1,
    )
    .await;

    // A key of our own, signed by the mesh CA for `web`: accepted.
    let (key_pem, csr) = key_and_csr("web");
    let (status, signed) = sign(&mesh, "web", &csr, None).await;
    assert_eq!(status, 200, "{signed}");
    let chain = signed["certificate_chain"].as_str().expect("chain");
    // The listener may still be warming its secrets right after start.
    let ok = poll(|| async {
        tls_get(ingress, chain, &key_pem)
            .await
            .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;
    assert!(
        ok,
        "a mesh certificate is accepted: {:?}",
        tls_get(ingress, chain, &key_pem).await
    );
    let seen_before = seen.lock().expect("lock").len();

    // The same identity from a CA nobody configured: the handshake is refused.
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key, _) = rogue_certificate(dir.path(), "spiffe://meshplane.local/service/web");
    let cert = std::fs::read_to_string(cert).expect("cert");
    let key = std::fs::read_to_string(key).expect("key");
    let refused = tls_get(ingress, &cert, &key).await;
    assert!(
        refused.is_err(),
        "an untrusted client certificate must not get a response: {refused:?}"
    );
    assert_eq!(
        seen.lock().expect("lock").len(),
        seen_before,
        "the app was not called"
    );
}

/// A fresh key and a CSR for `service`'s SPIFFE id: (key PEM, CSR PEM).
fn key_and_csr(service: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    let uri = format!("spiffe://meshplane.local/service/{service}");
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.as_str().try_into().expect("uri"))];
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (key.serialize_pem(), csr)
}

/// `POST /api/ca/sign` for `service` with an optional Bearer token: (status, JSON or text).
async fn sign(
    mesh: &Mesh,
    service: &str,
    csr: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut r = mesh
        .http
        .post(format!("http://{}/api/ca/sign", mesh.cp.admin_addr))
        .json(&serde_json::json!({ "service": service, "csr": csr }));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("CA reachable");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// With per-service enrolment tokens, one service's token never yields another's identity;
/// the operator's token still enrols any service; a sidecar enrols with its own token.
#[tokio::test(flavor = "multi_thread")]
async fn enrolment_tokens_bind_identities_to_services() {
    let mut mesh = Mesh::start(|c, dir| {
        let file = dir.join("enrolment.yaml");
        std::fs::write(&file, "orders: orders-enrol\nweb: web-enrol\n").expect("write");
        c.enrolment_tokens = Some(file);
        c.token = Some("operator-secret".to_owned());
    })
    .await;
    let (_, csr) = key_and_csr("web");
    let (status, body) = sign(&mesh, "web", &csr, Some("orders-enrol")).await;
    assert_eq!(
        status, 403,
        "orders' token must not get web's identity: {body}"
    );
    assert!(
        body.as_str().unwrap_or_default().contains("`web`"),
        "{body}"
    );
    let (status, _) = sign(&mesh, "web", &csr, None).await;
    assert_eq!(status, 401);
    let (status, body) = sign(&mesh, "web", &csr, Some("web-enrol")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"], "spiffe://meshplane.local/service/web");
    let (status, _) = sign(&mesh, "web", &csr, Some("operator-secret")).await;
    assert_eq!(status, 200, "the operator's token enrols any service");

    // A sidecar enrolling with its own token gets its identity and serves traffic.
    let (app, _) = recording_app().await;
    let ingress = free_port();
    mesh.sidecar_with(
        "orders-1",
        &format!("service: orders\nport: {app}\ningress: {{ port: {ingress} }}\n"),
        1,
        &["--ca-token", "orders-enrol"],
    )
    .await;
    assert!(
        serial(&mesh, mesh.sidecar_admin("orders-1"))
            .await
            .is_some(),
        "orders' Envoy has a certificate\n{}",
        mesh.sidecar_log("orders-1")
    );
}
