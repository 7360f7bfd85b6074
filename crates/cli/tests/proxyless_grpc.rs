//! Proxyless gRPC: real gRPC clients with no sidecar — grpcio's own xDS client
//! (`tests/grpc/echo.py client-xds`) and Node's `@grpc/grpc-js-xds`
//! (`tests/grpc-node/echo-xds.js`, the same commands) — bootstrapped by `meshplane bootstrap --grpc`, resolve
//! `xds:///payments` through the control plane (LDS API listener → RDS → CDS → EDS) to
//! grpcio echo servers registered in the embedded registry: they reach the right service,
//! honour registry weights, move to a new instance within 1 s of its registration, stop
//! using a deregistered one, follow `x-canary: 1` to a canary; a target that is not one of
//! the descriptor's dependencies fails at once with UNAVAILABLE naming it; the admin API
//! shows the client SYNCED like a sidecar. With certificates (`--certs-dir`, gRFC A29) they
//! call a callee whose real Envoy sidecar is `mtls: strict` over mTLS, as their service: its
//! `incoming` permissions allow one service and deny another; a plaintext client is refused;
//! the files stay valid past the first certificate's expiry (`--follow`).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::grpc::{GrpcServer, ROOT, python};
use support::{Mesh, MeshplaneProcess, TestCa, free_port, poll};

/// A proxyless client process: one JSON command per line in, one JSON answer per line out.
struct XdsClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// Which gRPC implementation a client is.
#[derive(Debug, Clone, Copy)]
enum Grpc {
    /// grpcio (gRPC's C core).
    Python,
    /// @grpc/grpc-js with @grpc/grpc-js-xds.
    Node,
}

impl XdsClient {
    fn start(grpc: Grpc, bootstrap: &std::path::Path) -> XdsClient {
        Self::start_with(grpc, bootstrap, false)
    }

    /// With `xds_credentials`, the client's channels use gRPC's xDS credentials (plaintext
    /// fallback): mTLS where the control plane's clusters ask for it.
    fn start_with(grpc: Grpc, bootstrap: &std::path::Path, xds_credentials: bool) -> XdsClient {
        let mut command = match grpc {
            Grpc::Python => {
                let mut c = Command::new(python());
                c.args([&format!("{ROOT}/tests/grpc/echo.py"), "client-xds"]);
                c
            }
            Grpc::Node => {
                let modules = format!("{ROOT}/tests/grpc-node/node_modules/@grpc/grpc-js-xds");
                assert!(
                    std::path::Path::new(&modules).exists(),
                    "{modules} is missing: run scripts/install-test-deps.sh"
                );
                let mut c = Command::new("node");
                c.arg(format!("{ROOT}/tests/grpc-node/echo-xds.js"));
                c
            }
        };
        if xds_credentials {
            command.arg("xds-credentials");
        }
        let mut child = command
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the gRPC client starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        XdsClient {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, command: &Value) {
        writeln!(self.stdin, "{command}").expect("command written");
        self.stdin.flush().expect("flushed");
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("an answer");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON answer, got {line:?}"))
    }

    /// Runs one command (blocking this worker only: the control plane runs on others).
    fn call(&mut self, command: Value) -> Value {
        tokio::task::block_in_place(|| {
            self.send(&command);
            self.answer()
        })
    }
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replies per server name (`payments-a:x` → `payments-a`).
fn by_server(answer: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for reply in answer["replies"].as_array().expect("replies") {
        let name = reply.as_str().unwrap_or_default();
        let name = name.split(':').next().unwrap_or_default().to_owned();
        *out.entry(name).or_default() += 1;
    }
    out
}

fn payments(count: usize) -> Value {
    json!({ "target": "xds:///payments", "payload": "x", "count": count })
}

/// `meshplane bootstrap --grpc` for `descriptor`, written to a file in the test's directory.
fn bootstrap(mesh: &Mesh, name: &str, descriptor: &str) -> std::path::PathBuf {
    bootstrap_with(mesh, name, descriptor, &[])
}

fn bootstrap_with(mesh: &Mesh, name: &str, descriptor: &str, extra: &[&str]) -> std::path::PathBuf {
    let dir = mesh.dir.path();
    let descriptor_file = dir.join(format!("{name}.yaml"));
    std::fs::write(&descriptor_file, descriptor).expect("descriptor written");
    let out = dir.join(format!("{name}-bootstrap.json"));
    let status = Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .arg("bootstrap")
        .arg("--grpc")
        .arg("--descriptor")
        .arg(&descriptor_file)
        .arg("--control-plane")
        .arg(mesh.cp.xds_addr.to_string())
        .args(extra)
        .args(["--instance-id", name, "--output"])
        .arg(&out)
        .status()
        .expect("meshplane bootstrap runs");
    assert!(status.success(), "meshplane bootstrap --grpc failed");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("bootstrap written"))
            .expect("JSON");
    assert_eq!(written["node"]["metadata"]["proxyless"], "grpc");
    out
}

const CHECKOUT: &str = "service: checkout\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_grpc_client_follows_the_registry() {
    follows_the_registry(Grpc::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_grpc_client_follows_the_registry() {
    follows_the_registry(Grpc::Node).await;
}

async fn follows_the_registry(grpc: Grpc) {
    let mesh = Mesh::start(|_, _| {}).await;
    let a = GrpcServer::start("payments-a");
    let b = GrpcServer::start("payments-b");
    mesh.register("payments-a", "payments", a.port, &[], 3)
        .await;
    mesh.register("payments-b", "payments", b.port, &[], 1)
        .await;
    let bootstrap_file = bootstrap(&mesh, "checkout-1", CHECKOUT);

    // Shared with the polling closures (never locked across an await).
    let client = parking_lot::Mutex::new(XdsClient::start(grpc, &bootstrap_file));
    // The right service, with registry weights 3:1 (gRPC picks at random by locality
    // weight; 400 calls put the share of a 3/4 weight within ±0.1 with a margin of >4σ).
    let answer = client.lock().call(payments(400));
    assert_eq!(answer["ok"], true, "{answer}");
    let counts = by_server(&answer);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        vec!["payments-a", "payments-b"],
        "only payments instances"
    );
    let share = counts["payments-a"] as f64 / 400.0;
    assert!(
        (0.65..=0.85).contains(&share),
        "weights 3:1 give payments-a ~75 % of calls, got {counts:?}"
    );

    // The admin API shows the client like a sidecar: its group, SYNCED, and which gRPC.
    let admin = format!("http://{}/api/proxies", mesh.cp.admin_addr);
    let synced = poll(|| async {
        let proxies: Value = match mesh.http.get(&admin).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        proxies.as_array().into_iter().flatten().any(|p| {
            p["node_id"] == "checkout-1"
                && p["sync"] == "SYNCED"
                && p["client"].as_str().is_some_and(|c| c.starts_with("gRPC "))
                // Both libraries speak state-of-the-world ADS.
                && p["protocol"] == "sotw"
                && p["group"].as_str().is_some_and(|g| g.contains("-grpc-"))
        })
    })
    .await;
    assert!(synced, "checkout-1 is SYNCED in {admin}");

    // A new instance gets calls within 1 s of its registration.
    let c = GrpcServer::start("payments-c");
    let registered = Instant::now();
    mesh.register("payments-c", "payments", c.port, &[], 1)
        .await;
    let answer = client
        .lock()
        .call(json!({ "target": "xds:///payments", "payload": "x",
        "until": "payments-c:", "max_seconds": 5 }));
    let took = registered.elapsed();
    assert_eq!(answer["ok"], true, "payments-c never answered: {answer}");
    assert!(
        took < Duration::from_secs(1),
        "payments-c got its first call {took:?} after its registration"
    );
    eprintln!("{grpc:?}: registration to first call on the new instance: {took:?}");

    // A deregistered instance (still running) gets no more calls.
    let deregistered = Instant::now();
    mesh.deregister("payments-a").await;
    let gone = poll(|| async {
        let answer = client.lock().call(payments(20));
        !by_server(&answer).contains_key("payments-a")
    })
    .await;
    assert!(
        gone,
        "payments-a kept getting calls after its deregistration"
    );
    eprintln!(
        "{grpc:?}: deregistration to 20 calls without it: {:?}",
        deregistered.elapsed()
    );
    let answer = client.lock().call(payments(100));
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(
        !by_server(&answer).contains_key("payments-a"),
        "payments-a is deregistered: {answer}"
    );

    // A canary: `x-canary: 1` goes to it, other calls keep going everywhere.
    let d = GrpcServer::start("payments-d");
    mesh.register("payments-d", "payments", d.port, &["canary"], 1)
        .await;
    let canary = json!({ "target": "xds:///payments", "payload": "x",
        "metadata": { "x-canary": "1" }, "count": 20 });
    let routed = poll(|| async {
        let answer = client.lock().call(canary.clone());
        by_server(&answer).keys().collect::<Vec<_>>() == vec!["payments-d"]
    })
    .await;
    assert!(routed, "x-canary: 1 calls go to the canary payments-d");
    let answer = client.lock().call(payments(60));
    assert!(
        by_server(&answer).len() > 1,
        "calls without x-canary are not pinned to the canary: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_grpc_client_fails_fast_on_an_undeclared_target() {
    undeclared_target_fails_fast(Grpc::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_grpc_client_fails_fast_on_an_undeclared_target() {
    undeclared_target_fails_fast(Grpc::Node).await;
}

/// A target that is not one of the descriptor's dependencies fails at once with UNAVAILABLE
/// (the control plane answers its listener with one that routes to a cluster without
/// endpoints, named with the reason, which grpcio quotes), not after gRPC's 15 s resource
/// timer or, for grpc-js, at the call's deadline: a registered service (`billing`) asked for by a client
/// that already holds its dependency's listener, and an unknown name (`ledger`) as a fresh
/// client's first target. The client's own dependency keeps working.
async fn undeclared_target_fails_fast(grpc: Grpc) {
    let mesh = Mesh::start(|_, _| {}).await;
    let payments_a = GrpcServer::start("payments-a");
    let billing = GrpcServer::start("billing-1");
    mesh.register("payments-a", "payments", payments_a.port, &[], 1)
        .await;
    mesh.register("billing-1", "billing", billing.port, &[], 1)
        .await;
    let bootstrap_file = bootstrap(&mesh, "checkout-1", CHECKOUT);

    // The client holds its dependency's listener first (the registration may take a moment
    // to reach the control plane's configuration).
    let client = parking_lot::Mutex::new(XdsClient::start(grpc, &bootstrap_file));
    let reached = poll(|| async { client.lock().call(payments(1))["ok"] == true }).await;
    assert!(reached, "payments answers");
    let mut client = client.into_inner();
    let mut fresh = XdsClient::start(grpc, &bootstrap_file);
    for (c, target) in [(&mut client, "billing"), (&mut fresh, "ledger")] {
        let started = Instant::now();
        let answer = c.call(
            json!({ "target": format!("xds:///{target}"), "payload": "x",
            "timeout": 20 }),
        );
        let took = started.elapsed();
        eprintln!("{grpc:?}: a call to undeclared {target} failed after {took:?}: {answer}");
        assert_eq!(
            answer["ok"], false,
            "{target} must not be reachable: {answer}"
        );
        assert_eq!(answer["code"], "UNAVAILABLE", "{answer}");
        let details = answer["details"].as_str().unwrap_or_default();
        match grpc {
            // grpc-core quotes the cluster's name, which says why.
            Grpc::Python => assert!(
                details.contains(&format!("`{target}` is not a dependency of `checkout`")),
                "the message names {target}: {answer}"
            ),
            // grpc-js says only that the cluster has no endpoints.
            Grpc::Node => assert_eq!(
                details, "priority policy has empty priority list",
                "{answer}"
            ),
        }
        assert!(
            took < Duration::from_secs(5),
            "{target}: failed after {took:?}, not at once (gRPC's resource timer is 15 s)"
        );
    }
    assert_eq!(client.call(payments(1))["ok"], true, "payments still works");
    // The clients accepted the answers: every stream SYNCED, nothing rejected.
    let admin = format!("http://{}/api/proxies", mesh.cp.admin_addr);
    let synced = poll(|| async {
        let proxies: Value = match mesh.http.get(&admin).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        let streams: Vec<&Value> = proxies
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["node_id"] == "checkout-1")
            .collect();
        // grpcio opens one stream per channel target, grpc-js one per process.
        streams.len() >= 2 && streams.iter().all(|p| p["sync"] == "SYNCED")
    })
    .await;
    assert!(
        synced,
        "every stream of both clients SYNCED in {admin}: {}",
        mesh.http
            .get(&admin)
            .send()
            .await
            .expect("admin")
            .text()
            .await
            .unwrap_or_default()
    );
}

/// Authenticated xDS: with client certificates required on the xDS port, a proxyless client
/// presents its host certificate through gRPC's `tls` channel credentials (`--xds-tls` with
/// host files) and gets its service's configuration; a certificate proving another service
/// gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxyless_client_over_authenticated_xds() {
    let pki = tempfile::tempdir().expect("tmp");
    let ca = TestCa::new(pki.path(), "deploy");
    let (server_cert, server_key) = ca.issue_server("xds-server");
    let mesh = Mesh::start(|config, _| {
        config.xds_tls_cert = Some(server_cert.clone().into());
        config.xds_tls_key = Some(server_key.clone().into());
        config.xds_client_ca = Some(ca.ca_file().into());
    })
    .await;
    let a = GrpcServer::start("payments-a");
    mesh.register("payments-a", "payments", a.port, &[], 1)
        .await;

    let tls_flags = |name: &str, uri: &str| {
        let (cert, key, ca_file, _) = ca.issue(name, uri);
        vec![
            "--xds-tls".to_owned(),
            "--cert-file".to_owned(),
            cert,
            "--key-file".to_owned(),
            key,
            "--ca-file".to_owned(),
            ca_file,
        ]
    };
    let flags = tls_flags("checkout", "spiffe://meshplane.local/service/checkout");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let good = bootstrap_with(&mesh, "checkout-1", CHECKOUT, &flags);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&good).expect("read")).expect("JSON");
    assert_eq!(written["xds_servers"][0]["channel_creds"][0]["type"], "tls");
    let mut client = XdsClient::start(Grpc::Python, &good);
    let answer = client.call(payments(5));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        by_server(&answer).keys().collect::<Vec<_>>(),
        vec!["payments-a"]
    );

    // A certificate that proves another service: the control plane refuses the stream.
    let flags = tls_flags("impostor", "spiffe://meshplane.local/service/billing");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let bad = bootstrap_with(&mesh, "checkout-2", CHECKOUT, &flags);
    let mut impostor = XdsClient::start(Grpc::Python, &bad);
    let answer =
        impostor.call(json!({ "target": "xds:///payments", "payload": "x", "timeout": 5 }));
    assert_eq!(
        answer["ok"], false,
        "an impostor must get nothing: {answer}"
    );
    eprintln!("impostor: {answer}");
}

const BILLING: &str = "service: billing\nport: 8081\ningress: { port: 31002 }\ndependencies:\n  - service: payments\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_grpc_client_calls_a_strict_callee_over_mtls() {
    mtls_to_a_strict_callee(Grpc::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_grpc_client_calls_a_strict_callee_over_mtls() {
    mtls_to_a_strict_callee(Grpc::Node).await;
}

/// mTLS from proxyless clients: `meshplane bootstrap --grpc --certs-dir` enrols at the
/// control plane's CA and names the files in the bootstrap; the client's clusters then
/// present its certificate to `payments`' strict sidecar, whose `incoming` names callers by
/// that certificate.
async fn mtls_to_a_strict_callee(grpc: Grpc) {
    // Short-lived certificates, so the test sees one expire.
    let ttl = Duration::from_secs(10);
    let mut mesh = Mesh::start(|c, _| c.cert_ttl = "10s".to_owned()).await;
    let server = GrpcServer::start("payments-1");
    let payments_descriptor = format!(
        "service: payments\nport: {}\nprotocol: grpc\nmtls: strict\ningress: {{ port: {} }}\nincoming:\n  endpoints:\n    - {{ path: /meshplane.test.Echo/Unary, clients: [checkout] }}\n",
        server.port,
        free_port()
    );
    mesh.sidecar("payments-1", &payments_descriptor, 1).await;
    let dir = mesh.dir.path().to_owned();
    let ca_url = format!("http://{}", mesh.cp.admin_addr);

    // checkout's certificate keeper: enrols, writes the bootstrap, renews until killed.
    let descriptor = dir.join("checkout.yaml");
    std::fs::write(&descriptor, CHECKOUT).expect("descriptor written");
    let certs = dir.join("checkout-certs");
    let checkout_bootstrap = dir.join("checkout-1-bootstrap.json");
    let args: Vec<String> = [
        "bootstrap",
        "--grpc",
        "--descriptor",
        &descriptor.display().to_string(),
        "--control-plane",
        &mesh.cp.xds_addr.to_string(),
        "--instance-id",
        "checkout-1",
        "--ca-url",
        &ca_url,
        "--certs-dir",
        &certs.display().to_string(),
        "--certs-refresh-interval",
        "1s",
        "--follow",
        "--output",
        &checkout_bootstrap.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let _keeper = MeshplaneProcess::spawn(&args, &dir.join("checkout-keeper.log"));
    let enrolled = Instant::now();
    assert!(
        poll(|| async { checkout_bootstrap.exists() }).await,
        "meshplane bootstrap --follow wrote no bootstrap"
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&checkout_bootstrap).expect("bootstrap"))
            .expect("JSON");
    assert_eq!(
        written["node"]["metadata"]["certificate_provider"],
        "meshplane"
    );
    let provider = &written["certificate_providers"]["meshplane"];
    assert_eq!(provider["plugin_name"], "file_watcher", "{written}");
    assert_eq!(
        provider["config"]["certificate_file"],
        certs.join("current/cert.pem").display().to_string()
    );
    let first_set = std::fs::read_link(certs.join("current")).expect("current");

    // checkout reaches payments (once its sidecar's instance is passing) over mTLS.
    let client = parking_lot::Mutex::new(XdsClient::start_with(grpc, &checkout_bootstrap, true));
    let reached = poll(|| async { client.lock().call(payments(1))["ok"] == true }).await;
    let answer = client.lock().call(payments(10));
    assert!(reached, "checkout never reached payments: {answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        by_server(&answer).keys().collect::<Vec<_>>(),
        vec!["payments-1"]
    );
    // gRPC accepted the mTLS clusters (no NACK), in a group of clients with certificates.
    let proxies = mesh.admin_json("/api/proxies").await;
    let checkout = proxies
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == "checkout-1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(checkout["sync"], "SYNCED", "{checkout}");
    assert!(
        checkout["group"]
            .as_str()
            .is_some_and(|g| g.contains("-grpc-mtls-")),
        "{checkout}"
    );

    // billing, with a certificate of its own: `incoming` names only checkout.
    let billing_certs = dir.join("billing-certs");
    let billing_bootstrap = bootstrap_with(
        &mesh,
        "billing-1",
        BILLING,
        &[
            "--ca-url",
            &ca_url,
            "--certs-dir",
            &billing_certs.display().to_string(),
        ],
    );
    let mut billing = XdsClient::start_with(grpc, &billing_bootstrap, true);
    let answer =
        billing.call(json!({ "target": "xds:///payments", "payload": "x", "timeout": 10 }));
    assert_eq!(answer["ok"], false, "billing is not allowed: {answer}");
    assert_eq!(answer["code"], "PERMISSION_DENIED", "{answer}");
    // Denied by the permissions (on the mTLS chain), not refused as plaintext.
    assert_eq!(answer["details"], "RBAC: access denied", "{answer}");

    // checkout without a certificate: plaintext, refused by the strict callee.
    let plain_bootstrap = bootstrap(&mesh, "checkout-2", CHECKOUT);
    let mut plain = XdsClient::start_with(grpc, &plain_bootstrap, true);
    let answer = plain.call(json!({ "target": "xds:///payments", "payload": "x", "timeout": 10 }));
    assert_eq!(answer["ok"], false, "plaintext must be refused: {answer}");
    assert_eq!(answer["code"], "PERMISSION_DENIED", "{answer}");
    assert!(
        answer["details"]
            .as_str()
            .is_some_and(|d| d.contains("accepts only mutual TLS")),
        "{answer}"
    );

    // The keeper renews the files before expiry; after the first certificate expired, a
    // client reading them (new connections, a new handshake) still gets through.
    let renewed = poll(|| async {
        std::fs::read_link(certs.join("current")).is_ok_and(|set| set != first_set)
    })
    .await;
    assert!(renewed, "the certificate files were not renewed");
    let expired = poll(|| async { enrolled.elapsed() > ttl + Duration::from_secs(1) }).await;
    assert!(expired);
    let mut late = XdsClient::start_with(grpc, &checkout_bootstrap, true);
    let answer = late.call(json!({ "target": "xds:///payments", "payload": "x", "timeout": 10 }));
    assert_eq!(answer["ok"], true, "renewed files work: {answer}");
    let answer = client.lock().call(payments(5));
    assert_eq!(answer["ok"], true, "the first client still works: {answer}");
}

/// A client enrolled at the control plane's CA (`--certs-dir`) also authenticates its xDS
/// connection with that certificate (`--xds-tls` without host files; grpcio's `tls` channel
/// credentials): a control plane whose CA is the operator's, requiring client certificates
/// from it on the xDS port, serves it, and its calls reach a strict callee.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxyless_client_enrolled_at_the_ca_authenticates_its_xds_stream() {
    let pki = tempfile::tempdir().expect("tmp");
    let operator = TestCa::new(pki.path(), "operator");
    let (server_cert, server_key) = operator.issue_server("xds");
    let (ca_cert, ca_key) = (
        operator.ca_file().to_owned(),
        operator.key_file().to_owned(),
    );
    let mut mesh = Mesh::start(move |c, _| {
        c.xds_tls_cert = Some(server_cert.into());
        c.xds_tls_key = Some(server_key.into());
        c.xds_client_ca = Some(ca_cert.clone().into());
        c.ca_cert = Some(ca_cert.into());
        c.ca_key = Some(ca_key.into());
    })
    .await;
    let server = GrpcServer::start("payments-1");
    let payments_descriptor = format!(
        "service: payments\nport: {}\nprotocol: grpc\nmtls: strict\ningress: {{ port: {} }}\n",
        server.port,
        free_port()
    );
    mesh.sidecar_with("payments-1", &payments_descriptor, 1, &["--xds-tls"])
        .await;
    let certs = mesh.dir.path().join("checkout-certs");
    let bootstrap_file = bootstrap_with(
        &mesh,
        "checkout-1",
        CHECKOUT,
        &[
            "--xds-tls",
            "--ca-url",
            &format!("http://{}", mesh.cp.admin_addr),
            "--certs-dir",
            &certs.display().to_string(),
        ],
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&bootstrap_file).expect("read"))
            .expect("JSON");
    let creds = &written["xds_servers"][0]["channel_creds"][0];
    assert_eq!(creds["type"], "tls", "{written}");
    assert_eq!(
        creds["config"]["certificate_file"],
        certs.join("current/cert.pem").display().to_string()
    );
    let client =
        parking_lot::Mutex::new(XdsClient::start_with(Grpc::Python, &bootstrap_file, true));
    let reached = poll(|| async { client.lock().call(payments(1))["ok"] == true }).await;
    assert!(reached, "checkout never reached payments");
    let proxies = mesh.admin_json("/api/proxies").await;
    let checkout = proxies
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["node_id"] == "checkout-1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(checkout["sync"], "SYNCED", "{checkout}");
}
