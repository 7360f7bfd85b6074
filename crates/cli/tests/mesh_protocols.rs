//! Protocols per service through real sidecars: a real gRPC client and server (`grpcio`,
//! `tests/grpc/echo.py`) through two sidecars over mTLS — unary, server- and
//! client-streaming calls, a deadline that reaches the server, the registry's health check
//! answered from the app's gRPC health; `curl --http2-prior-knowledge` through an egress
//! port to an HTTP/2 app (mTLS and plaintext between sidecars) and to an HTTP/1.1-only app
//! (Envoy converts), and straight to ingress ports (callers without a sidecar); WebSocket
//! upgrades to an `http1` app, also across the HTTP/2 hop of a rollout to `http2`.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::Request;
use serde_json::{Value, json};
use support::grpc::{GrpcServer, ROOT, python};
use support::{Mesh, caller, envoy_hosts, envoy_stat, free_port, poll};

/// Every Envoy statistic, for the per-protocol connection counters the mesh's list leaves out.
const ALL_STATS: &str = "stats: { include: all }\n";

/// Runs the gRPC client against `127.0.0.1:port` (`:authority` = `authority`), one call per
/// spec, and returns one result per call.
async fn grpc_calls(port: u16, authority: &str, calls: &[Value]) -> Vec<Value> {
    let input: String = calls.iter().map(|c| format!("{c}\n")).collect();
    let args = [
        format!("{ROOT}/tests/grpc/echo.py"),
        "client".to_owned(),
        format!("127.0.0.1:{port}"),
        authority.to_owned(),
    ];
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the gRPC client starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("calls written");
        let out = child.wait_with_output().expect("the client ends");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    })
    .await
    .expect("client task")
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_through_two_sidecars_over_mtls() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let server = GrpcServer::start("payments");
    let payments_ingress = free_port();
    let payments = format!(
        "service: payments\nport: {}\nprotocol: grpc\nmtls: strict\ningress: {{ port: {payments_ingress}, timeout: 2s }}\n{ALL_STATS}",
        server.port,
    );
    mesh.sidecar("payments-1", &payments, 1).await;
    let egress = free_port();
    let orders = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n",
    ) + ALL_STATS;
    mesh.sidecar("orders-1", &orders, 2).await;

    // The registry learns the protocol from the sidecar; the gRPC app's health is checked
    // by Envoy (grpc.health.v1), so the instance turns passing and gets traffic.
    let unary = json!({"method": "Unary", "payload": "hi"});
    let reached = poll(|| async {
        let results = grpc_calls(egress, "payments", std::slice::from_ref(&unary)).await;
        results.len() == 1 && results[0]["reply"] == "payments:hi"
    })
    .await;
    assert!(
        reached,
        "a unary call reaches payments through both sidecars\n{}\n{}",
        mesh.sidecar_log("orders-1"),
        mesh.sidecar_log("payments-1")
    );
    let catalog: Value = mesh
        .http
        .get(format!(
            "http://{}/v1/catalog/service/payments",
            mesh.registry()
        ))
        .send()
        .await
        .expect("registry")
        .json()
        .await
        .expect("json");
    assert_eq!(catalog[0]["ServiceMeta"]["protocol"], "grpc", "{catalog}");

    let results = grpc_calls(
        egress,
        "payments",
        &[
            unary.clone(),
            json!({"method": "Stream", "count": 4}),
            json!({"method": "Collect", "messages": ["a", "b", "c"]}),
            json!({"method": "Deadline", "timeout": 5}),
            json!({"method": "Deadline"}),
            json!({"method": "Sleep", "payload": "5", "timeout": 0.5}),
            json!({"method": "Sleep", "payload": "3", "timeout": 10}),
        ],
    )
    .await;
    assert_eq!(results.len(), 7, "{results:?}");
    assert_eq!(results[0]["reply"], "payments:hi");
    assert_eq!(
        results[1]["reply"],
        json!(["payments:0", "payments:1", "payments:2", "payments:3"]),
        "server streaming"
    );
    assert_eq!(results[2]["reply"], "a,b,c", "client streaming");
    let left: f64 = results[3]["reply"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the server sees a deadline: {results:?}"));
    // grpc-timeout is coarse (the client rounds it up to its unit), so a little over 5 s
    // may be left; without the header the server would see no deadline at all.
    assert!(
        left > 3.0 && left <= 6.0,
        "the client's 5 s deadline reaches the server: {left}"
    );
    assert_eq!(results[4]["reply"], "none", "no deadline, none invented");
    // The 0.5 s deadline passes before the 5 s sleep ends: DEADLINE_EXCEEDED, whether the
    // client's own timer fires first or the caller's sidecar's (it enforces the same deadline,
    // `grpc-timeout` being its route timeout, and may fire first on a loaded host).
    assert_eq!(results[5]["code"], "DEADLINE_EXCEEDED", "{results:?}");
    // A call that outlives payments' ingress `timeout` (2 s) under a 10 s deadline is ended by
    // payments' sidecar: DEADLINE_EXCEEDED (`upstream request timeout`), not the UNAVAILABLE
    // Envoy answers an HTTP 504 with, which clients retry.
    assert_eq!(results[6]["code"], "DEADLINE_EXCEEDED", "{results:?}");
    assert_eq!(
        results[6]["details"], "upstream request timeout",
        "ended by the sidecar: {results:?}"
    );
    assert!(
        poll(|| async { server.printed().iter().any(|l| l == "cancelled Sleep") }).await,
        "the expired call is cancelled at the server too: {:?}",
        server.printed()
    );

    // An undeclared service: a gRPC error that says so, as HTTP callers get a 503 body.
    let undeclared = grpc_calls(egress, "billing", std::slice::from_ref(&unary)).await;
    assert_eq!(undeclared[0]["code"], "UNAVAILABLE", "{undeclared:?}");
    let details = undeclared[0]["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("`billing` is not a dependency of `orders`"),
        "{details}"
    );

    // The hop between the sidecars is HTTP/2 over mTLS.
    let orders_admin = mesh.sidecar_admin("orders-1");
    let payments_admin = mesh.sidecar_admin("payments-1");
    for (admin, stat) in [
        (orders_admin, "cluster.payments.upstream_cx_http2_total"),
        (orders_admin, "cluster.payments.ssl.handshake"),
        (payments_admin, "http.ingress.downstream_cx_http2_total"),
        (payments_admin, "http.ingress.downstream_cx_ssl_total"),
    ] {
        let n = envoy_stat(&mesh.http, admin, stat).await.unwrap_or(0);
        assert!(n > 0, "{stat} = {n}");
    }

    // The registry's plain HTTP check of the health path is answered from the app's gRPC
    // health: 200 while it serves, 503 once it is gone.
    let health = format!("http://127.0.0.1:{payments_ingress}/status/health");
    let status = |url: String| {
        let http = mesh.http.clone();
        async move {
            match http.get(url).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    assert_eq!(status(health.clone()).await, 200);
    drop(server);
    assert!(
        poll(|| {
            let check = status(health.clone());
            async move { check.await == 503 }
        })
        .await,
        "the health path fails when the gRPC app is gone: {}",
        status(health.clone()).await
    );
}

/// An h2c-only (`http2`) or HTTP/1.1-only app answering with the HTTP version it got (after
/// 4 s on `/slow`).
async fn versioned_app(http2: bool) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(
                    axum::Router::new().fallback(|req: Request<axum::body::Body>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(std::time::Duration::from_secs(4)).await;
                        }
                        format!("{:?}", req.version())
                    }),
                );
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let builder = if http2 {
                    builder.http2_only()
                } else {
                    builder.http1_only()
                };
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    port
}

/// `curl --http2-prior-knowledge` through `egress` to `host`: (HTTP version and status, body).
async fn curl_h2(egress: u16, host: &str) -> (String, String) {
    curl_with(egress, host, "--http2-prior-knowledge").await
}

/// `curl --http2`: an HTTP/1.1 request with `Upgrade: h2c` (and `HTTP2-Settings`) through
/// `egress` to `host`: (HTTP version and status, body).
async fn curl_h2c_upgrade(egress: u16, host: &str) -> (String, String) {
    curl_with(egress, host, "--http2").await
}

async fn curl_with(egress: u16, host: &str, mode: &str) -> (String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", mode, "--max-time", "5"])
        .args(["-H", &format!("host: {host}")])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("http://127.0.0.1:{egress}/hello"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = text.rsplit_once('\n').unwrap_or(("", &text));
    (meta.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_callers_reach_http2_and_http1_apps() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let mut ingress = std::collections::BTreeMap::new();
    for (service, protocol, mtls) in [
        ("h2-mtls", "http2", "permissive"),
        ("h2-plain", "http2", "disabled"),
        ("h1-only", "http1", "permissive"),
    ] {
        let app = versioned_app(protocol == "http2").await;
        let port = free_port();
        let d = format!(
            "service: {service}\nport: {app}\nprotocol: {protocol}\nmtls: {mtls}\ningress: {{ port: {port} }}\n{ALL_STATS}",
        );
        mesh.sidecar(&format!("{service}-1"), &d, 1).await;
        ingress.insert(service, port);
    }
    let egress = free_port();
    let web = caller(
        "web",
        free_port(),
        free_port(),
        egress,
        "  - service: h2-mtls\n  - service: h2-plain\n    timeout: 1s\n  - service: h1-only\n",
    ) + ALL_STATS;
    mesh.sidecar("web-1", &web, 2).await;

    for (service, app_saw) in [
        ("h2-mtls", "HTTP/2.0"),
        ("h2-plain", "HTTP/2.0"),
        ("h1-only", "HTTP/1.1"),
    ] {
        let want = ("2 200".to_owned(), app_saw.to_owned());
        let ok = poll(|| async { curl_h2(egress, service).await == want }).await;
        assert!(
            ok,
            "curl speaks HTTP/2 to the egress and {service}'s app gets {app_saw}: {:?}\n{}",
            curl_h2(egress, service).await,
            mesh.sidecar_log("web-1")
        );
    }
    // Plain HTTP/2 to an HTTP/2 service keeps the dependency's timeout, even with a
    // `grpc-timeout` header (only a gRPC call's own deadline replaces it): 504 at 1 s.
    for extra in [None, Some("grpc-timeout: 10S")] {
        let started = std::time::Instant::now();
        let mut curl = tokio::process::Command::new("curl");
        curl.args(["-s", "-o", "/dev/null", "--http2-prior-knowledge"])
            .args([
                "--max-time",
                "5",
                "-H",
                "host: h2-plain",
                "-w",
                "%{http_code}",
            ]);
        if let Some(header) = extra {
            curl.args(["-H", header]);
        }
        let out = curl
            .arg(format!("http://127.0.0.1:{egress}/slow"))
            .output()
            .await
            .expect("curl runs");
        let elapsed = started.elapsed();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "504", "{extra:?}");
        assert!(
            elapsed < std::time::Duration::from_secs(3),
            "{extra:?}: the 1 s timeout, not the app's 4 s: {elapsed:?}"
        );
    }
    // `Upgrade: h2c` from an HTTP/1.1 client: the upgrade is declined (the answer is
    // HTTP/1.1), the request itself is served — over HTTP/2 past the egress where the
    // callee speaks it.
    for (service, app_saw) in [
        ("h2-mtls", "HTTP/2.0"),
        ("h2-plain", "HTTP/2.0"),
        ("h1-only", "HTTP/1.1"),
    ] {
        let got = curl_h2c_upgrade(egress, service).await;
        assert_eq!(
            got,
            ("1.1 200".to_owned(), app_saw.to_owned()),
            "curl --http2 (Upgrade: h2c) to {service}\n{}",
            mesh.sidecar_log("web-1")
        );
    }
    // The same straight to a sidecar's ingress, from a caller outside the mesh (plaintext is
    // accepted by `permissive` and `disabled`).
    for (service, app_saw) in [
        ("h2-mtls", "HTTP/2.0"),
        ("h2-plain", "HTTP/2.0"),
        ("h1-only", "HTTP/1.1"),
    ] {
        let got = curl_h2c_upgrade(ingress[service], service).await;
        assert_eq!(
            got,
            ("1.1 200".to_owned(), app_saw.to_owned()),
            "curl --http2 (Upgrade: h2c) to {service}'s ingress"
        );
    }
    // Between sidecars: HTTP/2 over mTLS, h2c in plaintext, HTTP/1.1 to the HTTP/1.1 service.
    let web_admin = mesh.sidecar_admin("web-1");
    for (stat, positive) in [
        ("cluster.h2-mtls.upstream_cx_http2_total", true),
        ("cluster.h2-mtls.ssl.handshake", true),
        ("cluster.h2-plain.upstream_cx_http2_total", true),
        ("cluster.h1-only.upstream_cx_http1_total", true),
        ("cluster.h1-only.upstream_cx_http2_total", false),
    ] {
        let n = envoy_stat(&mesh.http, web_admin, stat).await.unwrap_or(0);
        assert_eq!(n > 0, positive, "{stat} = {n}");
    }
    let plain_admin = mesh.sidecar_admin("h2-plain-1");
    let ssl = envoy_stat(
        &mesh.http,
        plain_admin,
        "http.ingress.downstream_cx_ssl_total",
    )
    .await
    .unwrap_or(0);
    let h2 = envoy_stat(
        &mesh.http,
        plain_admin,
        "http.ingress.downstream_cx_http2_total",
    )
    .await
    .unwrap_or(0);
    assert!(
        ssl == 0 && h2 > 0,
        "h2c in plaintext: ssl {ssl}, http2 {h2}"
    );
}

/// A WebSocket-capable HTTP/1.1 app, as far as the mesh can tell: it answers an upgrade
/// request with 101 and then echoes every byte.
async fn upgrading_app() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let reply: &[u8] = if head.contains("upgrade: websocket") {
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                if tcp.write_all(reply).await.is_err() {
                    return;
                }
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Sends a WebSocket upgrade for `host` through `egress`, then `payload`: the status line
/// and what came back after the upgrade.
async fn upgrade_and_echo(egress: u16, host: &str, payload: &[u8]) -> (String, Vec<u8>) {
    upgrade_and_echo_with(egress, host, "", payload).await
}

/// [`upgrade_and_echo`] with extra header lines (`name: value\r\n`).
async fn upgrade_and_echo_with(
    egress: u16,
    host: &str,
    headers: &str,
    payload: &[u8],
) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", egress)).await else {
        return (String::new(), Vec::new());
    };
    let request = format!(
        "GET /chat HTTP/1.1\r\nhost: {host}\r\n{headers}connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let exchange = async {
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte).await.ok()? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let status = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        if !status.contains(" 101 ") {
            return Some((status, Vec::new()));
        }
        tcp.write_all(payload).await.ok()?;
        let mut echoed = vec![0u8; payload.len()];
        tcp.read_exact(&mut echoed).await.ok()?;
        Some((status, echoed))
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_reach_an_http1_app_with_nothing_declared() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let app = upgrading_app().await;
    let chat = format!(
        "service: chat\nport: {app}\ningress: {{ port: {} }}\n",
        free_port()
    );
    mesh.sidecar("chat-1", &chat, 1).await;
    let egress = free_port();
    let web = caller(
        "web",
        free_port(),
        free_port(),
        egress,
        "  - service: chat\n",
    );
    mesh.sidecar("web-1", &web, 2).await;
    // Bytes after the upgrade are opaque to Envoy: a frame is just bytes here.
    let frame = b"\x81\x05hello";
    let want = (
        "HTTP/1.1 101 Switching Protocols".to_owned(),
        frame.to_vec(),
    );
    let upgraded = poll(|| async { upgrade_and_echo(egress, "chat", frame).await == want }).await;
    assert!(
        upgraded,
        "the upgrade goes through both sidecars (over mTLS) and the app echoes: {:?}\n{}",
        upgrade_and_echo(egress, "chat", frame).await,
        mesh.sidecar_log("web-1")
    );
}

/// During a rollout of a service to `http2`, its callers reach every instance over HTTP/2
/// (all are behind sidecars): a WebSocket upgrade for an `http1` instance crosses that hop
/// as an extended CONNECT and reaches the app as an HTTP/1.1 upgrade again.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_cross_an_http2_hop_during_a_rollout() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let old = upgrading_app().await;
    let new = versioned_app(true).await;
    for (id, app, protocol, tag) in [
        ("chat-1", old, "http1", "old"),
        ("chat-2", new, "http2", "new"),
    ] {
        let d = format!(
            "service: chat\nport: {app}\nprotocol: {protocol}\ntags: [{tag}]\ningress: {{ port: {} }}\n{ALL_STATS}",
            free_port()
        );
        mesh.sidecar(id, &d, 1).await;
    }
    let egress = free_port();
    let web = caller(
        "web",
        free_port(),
        free_port(),
        egress,
        "  - service: chat\n",
    ) + ALL_STATS;
    mesh.sidecar("web-1", &web, 2).await;
    // Both instances registered (sidecars register once live, in their own time): only
    // then does web's cluster see the rollout; no request goes out before.
    let web_admin = mesh.sidecar_admin("web-1");
    let both = poll(|| async {
        envoy_hosts(&mesh.http, web_admin)
            .await
            .and_then(|h| h.get("chat").map(|hosts| hosts.len() == 2))
            .unwrap_or(false)
    })
    .await;
    assert!(both, "web sees both chat instances");
    let frame = b"\x81\x05hello";
    let want = (
        "HTTP/1.1 101 Switching Protocols".to_owned(),
        frame.to_vec(),
    );
    let to_old = "x-service-tag: old\r\n";
    let upgraded =
        poll(|| async { upgrade_and_echo_with(egress, "chat", to_old, frame).await == want }).await;
    assert!(
        upgraded,
        "the upgrade reaches the http1 instance: {:?}\n{}",
        upgrade_and_echo_with(egress, "chat", to_old, frame).await,
        mesh.sidecar_log("chat-1")
    );
    let h2 = envoy_stat(
        &mesh.http,
        web_admin,
        "cluster.chat.upstream_cx_http2_total",
    )
    .await
    .unwrap_or(0);
    let h1 = envoy_stat(
        &mesh.http,
        web_admin,
        "cluster.chat.upstream_cx_http1_total",
    )
    .await
    .unwrap_or(0);
    assert!(
        h2 > 0 && h1 == 0,
        "the hop is HTTP/2: http2 {h2}, http1 {h1}"
    );
}

/// gRPC semantics through the mesh: a call refused with UNAVAILABLE by one instance is
/// retried on another (the default retry conditions include gRPC's `unavailable`), the
/// refusal is in the callee's access log with its gRPC status, a call's own deadline
/// replaces the dependency's timeout (which still bounds a call without one), and a method
/// `incoming` does not grant is answered PERMISSION_DENIED as a gRPC status, not an HTML 403.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_retries_on_unavailable_and_permissions_per_method() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let good = GrpcServer::start("payments-1");
    let shedding = GrpcServer::start_with("payments-2", &["unavailable"]);
    let incoming = "incoming:\n  endpoints:\n    - { path: /meshplane.test.Echo/Unary, clients: [orders] }\n    - { path: /meshplane.test.Echo/Sleep, clients: [orders] }\n";
    for (id, server) in [("payments-1", &good), ("payments-2", &shedding)] {
        let d = format!(
            "service: payments\nport: {}\nprotocol: grpc\nmtls: strict\ningress: {{ port: {} }}\n{incoming}",
            server.port,
            free_port()
        );
        mesh.sidecar(id, &d, 1).await;
    }
    let egress = free_port();
    // A short dependency timeout: a gRPC call's own deadline replaces it.
    let orders = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n    timeout: 500ms\n",
    );
    mesh.sidecar("orders-1", &orders, 2).await;
    let admin = mesh.sidecar_admin("orders-1");
    assert!(
        poll(|| async {
            envoy_stat(&mesh.http, admin, "cluster.payments.membership_healthy").await == Some(2)
        })
        .await,
        "both payments instances healthy at orders\n{}",
        mesh.sidecar_log("payments-2")
    );

    let calls: Vec<Value> = (0..20)
        .map(|i| json!({"method": "Unary", "payload": format!("{i}")}))
        .collect();
    let results = grpc_calls(egress, "payments", &calls).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["reply"], format!("payments-1:{i}"), "call {i}: {r}");
    }
    assert!(
        shedding.printed().iter().any(|l| l == "refused Unary"),
        "no call reached the shedding instance, so nothing was retried"
    );
    let retried = envoy_stat(&mesh.http, admin, "cluster.payments.upstream_rq_retry")
        .await
        .unwrap_or(0);
    assert!(retried > 0, "orders' Envoy retried: {retried}");
    // The callee logs the refusal (default `errors`: a gRPC status other than OK).
    assert!(
        poll(|| async {
            mesh.sidecar_log("payments-2").lines().any(|l| {
                l.contains("\"meshplane\":\"access\"")
                    && l.contains("\"grpc_status\":\"UNAVAILABLE\"")
            })
        })
        .await,
        "payments-2's access log has the UNAVAILABLE call\n{}",
        mesh.sidecar_log("payments-2")
    );

    // The client's 5 s deadline, not the dependency's 500 ms timeout, bounds a 1 s call.
    let long = grpc_calls(
        egress,
        "payments",
        &[json!({"method": "Sleep", "payload": "1", "timeout": 5})],
    )
    .await;
    assert_eq!(long[0]["reply"], "woke", "{long:?}");
    // A gRPC call without a deadline is bounded by the dependency's timeout: orders' sidecar
    // ends it at 500 ms with DEADLINE_EXCEEDED (`upstream request timeout`: the sidecar's,
    // the client has no timer), and the server's handler is cancelled.
    let unbounded = grpc_calls(
        egress,
        "payments",
        &[json!({"method": "Sleep", "payload": "5"})],
    )
    .await;
    assert_eq!(unbounded[0]["code"], "DEADLINE_EXCEEDED", "{unbounded:?}");
    assert_eq!(
        unbounded[0]["details"], "upstream request timeout",
        "{unbounded:?}"
    );
    let seconds = unbounded[0]["seconds"].as_f64().expect("seconds");
    assert!(
        (0.45..3.0).contains(&seconds),
        "ended at the dependency's 500 ms timeout, not the 5 s sleep: {seconds} s"
    );
    assert!(
        poll(|| async { good.printed().iter().any(|l| l == "cancelled Sleep") }).await,
        "the server's handler is cancelled: {:?}",
        good.printed()
    );

    // A method incoming does not grant: a gRPC PERMISSION_DENIED.
    let denied = grpc_calls(
        egress,
        "payments",
        &[json!({"method": "Stream", "count": 2})],
    )
    .await;
    assert_eq!(denied[0]["ok"], false, "{denied:?}");
    assert_eq!(denied[0]["code"], "PERMISSION_DENIED", "{denied:?}");

    // gRPC statuses in the metrics, on both sides: the caller counts each call's final status
    // per dependency (the retried calls ended OK), the shedding callee its refusals.
    for (id, stat, at_least) in [
        ("orders-1", "cluster.payments.grpc.0", 21),
        ("orders-1", "cluster.payments.grpc.7", 1),
        ("orders-1", "cluster.payments.grpc.total", 22),
        ("payments-2", "cluster.meshplane_local-app.grpc.14", 1),
    ] {
        let admin = mesh.sidecar_admin(id);
        assert!(
            poll(|| async { envoy_stat(&mesh.http, admin, stat).await.unwrap_or(0) >= at_least })
                .await,
            "{id}: {stat} = {:?}, want at least {at_least}",
            envoy_stat(&mesh.http, admin, stat).await
        );
    }
    let scrape = mesh
        .http
        .get(format!("http://127.0.0.1:{admin}/stats/prometheus"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let denied_series = scrape.lines().find(|l| {
        l.starts_with("envoy_cluster_grpc{")
            && l.contains("envoy_cluster_name=\"payments\"")
            && l.contains("grpc_status=\"7\"")
    });
    assert!(
        denied_series.is_some(),
        "envoy_cluster_grpc{{envoy_cluster_name=\"payments\",grpc_status=\"7\"}} in:\n{}",
        scrape
            .lines()
            .filter(|l| l.contains("grpc"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
