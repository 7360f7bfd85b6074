//! Access logs through real Envoy sidecars: what each `access_log` setting logs, the fields
//! of a request seen from both sides of an mTLS call, no query string ever, hostile requests
//! still one JSON object per line, and the file destination across a move and a hot restart.

mod support;

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use support::{Mesh, caller, free_port, poll, upstream, via_egress};

/// The request lines (`"meshplane": "access"`) in a sidecar's output or an access-log file.
fn access_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["meshplane"] == "access")
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// GET `path` through `egress` with `Host: host` and extra headers; the status (0 on error).
async fn get_via(
    mesh: &Mesh,
    egress: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let mut r = mesh
        .http
        .get(format!("http://127.0.0.1:{egress}{path}"))
        .header("host", host);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.map_or(0, |r| r.status().as_u16())
}

/// An app answering `/slow` after a second, `/missing` with 404, anything else 200.
async fn slow_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "late"
            }),
        )
        .route(
            "/missing",
            get(|| async { (axum::http::StatusCode::NOT_FOUND, "no") }),
        )
        .fallback(get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn all_logs_a_request_on_both_sides_with_the_certificate_identity_of_the_caller() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let payments_app = upstream("payments-app").await;
    let payments_ingress = free_port();
    let payments = format!(
        "service: payments\nport: {payments_app}\ningress: {{ port: {payments_ingress} }}\naccess_log: all\n"
    );
    mesh.sidecar("payments-1", &payments, 1).await;
    let egress = free_port();
    let orders = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\naccess_log: all\n",
    );
    mesh.sidecar("orders-1", &orders, 2).await;
    assert!(
        poll(|| async { via_egress(&mesh.http, egress, "payments", None).await.0 == 200 }).await,
        "orders reaches payments\n{}",
        mesh.sidecar_log("orders-1")
    );

    let status = get_via(
        &mesh,
        egress,
        "payments",
        "/api/charge?token=hunter2-7f3a",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let by_path = |id: &str| {
        access_lines(&mesh.sidecar_log(id))
            .into_iter()
            .find(|l| l["path"] == "/api/charge")
    };
    let found =
        poll(|| async { by_path("orders-1").is_some() && by_path("payments-1").is_some() }).await;
    assert!(
        found,
        "both sides log the request\n--- orders\n{}\n--- payments\n{}",
        mesh.sidecar_log("orders-1"),
        mesh.sidecar_log("payments-1")
    );
    let (out, into) = by_path("orders-1")
        .zip(by_path("payments-1"))
        .expect("found");
    let orders_id = "spiffe://meshplane.local/service/orders";
    assert_eq!(out["direction"], "egress", "{out}");
    assert_eq!(out["service"], "orders", "{out}");
    assert_eq!(out["caller"], orders_id, "{out}");
    assert_eq!(out["destination"], "payments", "{out}");
    assert_eq!(out["method"], "GET", "{out}");
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["response_flags"], "-", "{out}");
    assert_eq!(out["response_details"], "via_upstream", "{out}");
    assert_eq!(
        out["upstream_host"],
        format!("127.0.0.1:{payments_ingress}"),
        "the caller names the callee's sidecar: {out}"
    );
    assert!(out["duration_ms"].is_u64(), "{out}");
    assert_eq!(into["direction"], "ingress", "{into}");
    assert_eq!(into["service"], "payments", "{into}");
    assert_eq!(
        into["caller"], orders_id,
        "the callee names the caller from its certificate: {into}"
    );
    assert_eq!(into["destination"], "payments", "{into}");
    assert_eq!(into["status"], 200, "{into}");
    assert_eq!(
        into["upstream_host"],
        format!("127.0.0.1:{payments_app}"),
        "{into}"
    );
    assert!(
        out["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{out}"
    );
    assert_eq!(
        out["request_id"], into["request_id"],
        "one request id on both sides"
    );
    for id in ["orders-1", "payments-1"] {
        let log = mesh.sidecar_log(id);
        assert!(
            !log.contains("hunter2"),
            "{id}: the query string never reaches a log\n{}",
            log.lines()
                .filter(|l| l.contains("hunter2"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_is_the_default_and_logs_failures_but_not_successes_or_4xx() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let app = slow_app().await;
    mesh.register("payments-a", "payments", app, &[], 1).await;
    let egress = free_port();
    let ingress = free_port();
    let orders = caller(
        "orders",
        upstream("orders-app").await,
        ingress,
        egress,
        "  - service: payments\n    timeout: 300ms\n  - service: billing\n\
         incoming:\n  endpoints:\n    - { path_prefix: /api/, clients: [web] }\n",
    );
    mesh.sidecar("orders-1", &orders, 2).await;
    assert!(
        poll(|| async { get_via(&mesh, egress, "payments", "/warm", &[]).await == 200 }).await,
        "orders reaches payments\n{}",
        mesh.sidecar_log("orders-1")
    );
    assert_eq!(get_via(&mesh, egress, "payments", "/fine", &[]).await, 200);
    assert_eq!(
        get_via(&mesh, egress, "payments", "/missing", &[]).await,
        404
    );
    // Denied by `incoming`: the decision line, not a request line.
    let denied = mesh
        .http
        .get(format!("http://127.0.0.1:{ingress}/api/denied"))
        .send()
        .await
        .expect("sent");
    assert_eq!(denied.status(), 403);
    // Declared, but no instance: no healthy upstream.
    assert_eq!(get_via(&mesh, egress, "billing", "/none", &[]).await, 503);
    assert_eq!(get_via(&mesh, egress, "payments", "/slow", &[]).await, 504);

    let timed_out = poll(|| async {
        access_lines(&mesh.sidecar_log("orders-1"))
            .iter()
            .any(|l| l["path"] == "/slow")
    })
    .await;
    let lines = access_lines(&mesh.sidecar_log("orders-1"));
    assert!(
        timed_out,
        "the timeout is logged\n{}",
        mesh.sidecar_log("orders-1")
    );
    let line = |path: &str| lines.iter().find(|l| l["path"] == path);
    let slow = line("/slow").expect("logged");
    assert_eq!(slow["status"], 504, "{slow}");
    assert!(
        slow["response_flags"]
            .as_str()
            .is_some_and(|f| f.contains("UT")),
        "{slow}"
    );
    assert_eq!(slow["destination"], "payments", "{slow}");
    assert_eq!(slow["response_details"], "response_timeout", "{slow}");
    let none = line("/none").expect("no healthy upstream is logged");
    assert_eq!(none["status"], 503, "{none}");
    assert!(
        none["response_flags"]
            .as_str()
            .is_some_and(|f| f.contains("UH")),
        "{none}"
    );
    assert_eq!(none["destination"], "billing", "{none}");
    assert_eq!(none["response_details"], "no_healthy_upstream", "{none}");
    // Written before the timeout's line, so they would be there by now.
    assert!(line("/fine").is_none(), "a 200 is not an error");
    assert!(line("/missing").is_none(), "the app's 404 is not an error");
    assert!(
        line("/api/denied").is_none(),
        "a denial has its decision line, not a request line"
    );
    assert!(
        mesh.sidecar_log("orders-1")
            .contains(r#""decision":"denied""#),
        "the decision line is there"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["status"].as_u64() >= Some(500) || l["response_flags"] != "-"),
        "only failures: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn off_logs_no_request_and_keeps_permission_decisions() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let egress = free_port();
    let ingress = free_port();
    let orders = format!(
        "service: orders\nport: {}\ningress: {{ port: {ingress} }}\negress: {{ port: {egress} }}\naccess_log: off\n\
         dependencies:\n  - service: billing\n\
         incoming:\n  endpoints:\n    - {{ path_prefix: /api/, clients: [web] }}\n",
        upstream("orders-app").await
    );
    mesh.sidecar("orders-1", &orders, 2).await;
    // Errors that `errors` would log...
    assert_eq!(get_via(&mesh, egress, "billing", "/none", &[]).await, 503);
    assert_eq!(get_via(&mesh, egress, "stranger", "/x", &[]).await, 503);
    // ...then a denied call, whose decision line comes after them in Envoy's output.
    let denied = mesh
        .http
        .get(format!(
            "http://127.0.0.1:{ingress}/api/orders?token=hunter2-7f3a"
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(denied.status(), 403);
    let decided = poll(|| async {
        mesh.sidecar_log("orders-1")
            .contains(r#""meshplane":"rbac""#)
    })
    .await;
    let log = mesh.sidecar_log("orders-1");
    assert!(decided, "the RBAC decision is still logged\n{log}");
    assert!(access_lines(&log).is_empty(), "off: no request line\n{log}");
    let decision = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["meshplane"] == "rbac")
        .expect("decision");
    assert_eq!(decision["path"], "/api/orders", "{decision}");
    assert!(
        !log.contains("hunter2"),
        "no query string in decisions either"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_file_takes_hostile_requests_and_survives_a_move_and_a_hot_restart() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let app = upstream("payments-a").await;
    mesh.register("payments-a", "payments", app, &[], 1).await;
    let file = mesh.dir.path().join("orders-access.log");
    let egress = free_port();
    let orders = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\naccess_log: all\n",
    );
    let file_arg = file.display().to_string();
    mesh.sidecar_with("orders-1", &orders, 2, &["--access-log", &file_arg])
        .await;
    assert!(
        poll(|| async { via_egress(&mesh.http, egress, "payments", None).await.0 == 200 }).await
    );

    // Quotes, backslashes, braces, bytes that are not UTF-8, a bare newline in a header.
    let hostile: [&[u8]; 4] = [
        b"GET /a\"b\\c{\"x\":1} HTTP/1.1\r\nHost: payments\r\nx-request-id: \"}{\"evil\":\"\\\r\n\r\n",
        b"GET /utf HTTP/1.1\r\nHost: payments\"\xff\xfe\r\nx-request-id: id\xc3\x28\xff\r\n\r\n",
        b"GET /bytes\xff\xfe HTTP/1.1\r\nHost: payments\r\n\r\n",
        b"GET /newline HTTP/1.1\r\nHost: payments\r\nx-request-id: a\nb\r\n\r\n",
    ];
    for request in hostile {
        raw_request(egress, request).await;
    }
    let marker = |id: &'static str| {
        let file = file.clone();
        move || {
            let file = file.clone();
            async move {
                access_lines(&read(&file))
                    .iter()
                    .any(|l| l["request_id"] == id)
            }
        }
    };
    assert_eq!(
        get_via(
            &mesh,
            egress,
            "payments",
            "/m",
            &[("x-request-id", "marker-1")]
        )
        .await,
        200
    );
    assert!(
        poll(marker("marker-1")).await,
        "lines reach the file\n{}",
        read(&file)
    );
    let text = read(&file);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
    }
    let lines = access_lines(&text);
    assert!(
        lines.iter().any(|l| l["path"] == "/a\"b\\c{\"x\":1}"),
        "the hostile path is logged as sent: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["request_id"] == "\"}{\"evil\":\"\\"),
        "the hostile request id is logged as sent: {lines:?}"
    );
    assert!(
        !mesh.sidecar_log("orders-1").contains("marker-1"),
        "with a file, lines do not go to stdout"
    );

    // Moved away (logrotate's `create` mode, no signal): a new file takes the next lines.
    let rotated = mesh.dir.path().join("orders-access.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    assert_eq!(
        get_via(
            &mesh,
            egress,
            "payments",
            "/m",
            &[("x-request-id", "marker-2")]
        )
        .await,
        200
    );
    let mut n = 2u32;
    let moved_on = poll(|| {
        // Each request is another chance: the move is noticed at the first line after it.
        n += 1;
        let id = format!("marker-{n}");
        let file = file.clone();
        let mesh = &mesh;
        async move {
            get_via(mesh, egress, "payments", "/m", &[("x-request-id", &id)]).await;
            access_lines(&read(&file)).iter().any(|l| l["path"] == "/m")
        }
    })
    .await;
    assert!(
        moved_on,
        "a new file after the move\n{}",
        mesh.sidecar_log("orders-1")
    );
    assert!(
        access_lines(&read(&rotated))
            .iter()
            .any(|l| l["request_id"] == "marker-1"),
        "the rotated file keeps its lines"
    );

    // SIGHUP: Envoy hot-restarts (two epochs for a while) and the file is reopened.
    let rotated = mesh.dir.path().join("orders-access.log.2");
    std::fs::rename(&file, &rotated).expect("rotate");
    let pid = rustix::process::Pid::from_raw(mesh.sidecar_pid("orders-1") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    let admin = mesh.sidecar_admin("orders-1");
    assert!(
        poll(|| async {
            support::envoy_stat(&mesh.http, admin, "server.hot_restart_epoch").await == Some(1)
        })
        .await,
        "hot restart\n{}",
        mesh.sidecar_log("orders-1")
    );
    assert_eq!(
        get_via(
            &mesh,
            egress,
            "payments",
            "/m",
            &[("x-request-id", "after-hup")]
        )
        .await,
        200
    );
    assert!(
        poll(marker("after-hup")).await,
        "lines after the hot restart reach the reopened file\n{}",
        mesh.sidecar_log("orders-1")
    );

    // While the previous Envoy drains (pooled connections still reach it) and the new one
    // serves new connections, both write: every line arrives, whole.
    let ids: Vec<String> = (0..40).map(|i| format!("burst-{i}")).collect();
    let mut burst = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let http = mesh.http.clone();
        burst.spawn(async move {
            http.get(format!("http://127.0.0.1:{egress}/burst"))
                .header("host", "payments")
                .header("x-request-id", id)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        });
    }
    let statuses = burst.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let all_logged = poll(|| async {
        let lines = access_lines(&read(&file));
        ids.iter()
            .all(|id| lines.iter().any(|l| l["request_id"] == id.as_str()))
    })
    .await;
    assert!(
        all_logged,
        "every request of the burst is logged\n{}",
        read(&file)
    );
    for path in [&file, &rotated] {
        for line in read(path).lines() {
            assert!(
                serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
                "{}: not one JSON object per line: {line:?}",
                path.display()
            );
        }
    }
}

/// Sends raw bytes as one HTTP/1.1 request and reads the answer (whatever it is).
async fn raw_request(port: u16, request: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
}
