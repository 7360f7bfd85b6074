//! The migration view (`GET /api/migration`) against a mesh with known counts: services with
//! every instance behind a sidecar, with some, and with none, and egress flags that send one
//! of two instances' calls through Envoy; and calls made through Envoy and direct by an app
//! using the reference interceptor, measured, reported and shown, with a dry run naming the
//! caller a tightened `incoming` would deny.

mod support;

use serde_json::json;
use support::{Mesh, caller, free_port, poll, upstream};

const TOKEN: &str = "migration-token";

#[tokio::test(flavor = "multi_thread")]
async fn the_migration_view_counts_sidecars_ingress_and_egress_decisions() {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    // payments: one instance behind a sidecar, one registered by the app itself.
    let app = upstream("payments-app").await;
    let payments = format!(
        "service: payments\nport: {app}\ningress: {{ port: {} }}\n",
        free_port()
    );
    mesh.sidecar("payments-1", &payments, 1).await;
    let direct = upstream("payments-2").await;
    mesh.register("payments-2", "payments", direct, &[], 1)
        .await;
    // orders: both instances behind sidecars.
    for id in ["orders-1", "orders-2"] {
        let d = caller(
            "orders",
            free_port(),
            free_port(),
            free_port(),
            "  - service: payments\n",
        );
        mesh.sidecar(id, &d, 2).await;
    }
    // legacy: no sidecar at all.
    for id in ["legacy-1", "legacy-2"] {
        let port = upstream(id).await;
        mesh.register(id, "legacy", port, &[], 1).await;
    }
    // orders-1 alone sends its calls to payments through Envoy.
    let flags = json!({
        "services": { "orders": { "dependencies": { "payments": {
            "proxy": false,
            "overrides": [ { "instance": "orders-1", "proxy": true } ]
        } } } }
    });
    mesh.put_rollout(&flags.to_string()).await;

    let complete =
        poll(|| async { mesh.admin_json("/api/migration").await["totals"]["instances"] == 6 })
            .await;
    assert!(
        complete,
        "six instances: {}",
        mesh.admin_json("/api/migration").await
    );
    let view = mesh.admin_json("/api/migration").await;
    assert_eq!(
        view["totals"],
        json!({
            "services": 3,
            "ingress_via_envoy": 1,
            "ingress_mixed": 1,
            "ingress_direct": 1,
            "using_egress": 1,
            "sending_via_egress": 0,
            "sending_direct": 0,
            "calls": { "proxy": 0, "direct": 0 },
            "instances": 6,
            "instances_with_sidecar": 3,
        }),
        "{view:#}"
    );
    let services = &view["services"];
    assert_eq!(
        services["payments"],
        json!({
            "instances": 2, "with_sidecar": 1, "without_sidecar": 1, "ingress": "mixed",
            "egress_default": { "proxy": 0, "direct": 1 }, "egress": [],
            "calls": { "reporting": 0, "proxy": 0, "direct": 0, "via_egress": null, "by_dependency": [] }
        }),
        "{view:#}"
    );
    assert_eq!(
        services["orders"],
        json!({
            "instances": 2, "with_sidecar": 2, "without_sidecar": 0, "ingress": "envoy",
            "egress_default": { "proxy": 0, "direct": 2 },
            "egress": [ { "dependency": "payments", "proxy": 1, "direct": 1 } ],
            "calls": { "reporting": 0, "proxy": 0, "direct": 0, "via_egress": null, "by_dependency": [] }
        }),
        "{view:#}"
    );
    assert_eq!(
        services["legacy"],
        json!({
            "instances": 2, "with_sidecar": 0, "without_sidecar": 2, "ingress": "direct",
            "egress_default": { "proxy": 0, "direct": 0 }, "egress": [],
            "calls": { "reporting": 0, "proxy": 0, "direct": 0, "via_egress": null, "by_dependency": [] }
        }),
        "{view:#}"
    );
    assert!(
        view["flags_version"].as_u64().is_some_and(|v| v > 0),
        "{view:#}"
    );
}

/// The reference interceptor's example app making `count` calls to payments, through the
/// egress proxy or direct as the flags say; it reports its direct calls before exiting.
/// Every call must answer `200 payments-1`.
async fn app_calls(egress: u16, direct: u16, count: u32) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let python = format!("{root}/.tools/venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run scripts/install-test-deps.sh"
    );
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(format!("{root}/examples/python-requests/app.py"))
        .args(["--egress-port", &egress.to_string()])
        .args(["--call", "http://payments/"])
        .args(["--direct", &format!("payments=http://127.0.0.1:{direct}")])
        .args(["--every", "0"])
        .args(["--count", &count.to_string()])
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("the app finishes")
        .expect("the app runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        out.status.success() && lines == vec!["200 payments-1"; count as usize],
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until orders-1's sidecar serves `proxy` for payments.
async fn sidecar_says(mesh: &Mesh, egress: u16, proxy: bool) {
    let url = format!("http://127.0.0.1:{egress}/.meshplane/egress");
    let ok = poll(|| async {
        let Ok(resp) = mesh.http.get(&url).send().await else {
            return false;
        };
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        v["dependencies"]["payments"]["proxy"] == proxy
    })
    .await;
    assert!(ok, "orders-1's sidecar never said proxy={proxy}");
}

/// Requests sent through Envoy and direct, counted by the sidecar (Envoy's counters, across a
/// hot restart, and the interceptor's reports) and reported to the control plane: the
/// migration view's measured share, the traffic pairs, and a dry run naming the caller a
/// tightened `incoming` would deny.
#[tokio::test(flavor = "multi_thread")]
async fn measured_calls_through_envoy_and_direct_reach_the_view_and_the_dry_run() {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    // payments: registered by the app itself (no sidecar): reachable both ways.
    let payments = upstream("payments-1").await;
    mesh.register("payments-1", "payments", payments, &[], 1)
        .await;
    let (orders, egress) = support::orders_to_payments();
    mesh.sidecar_with(
        "orders-1",
        &orders,
        2,
        &["--traffic-report-interval", "200ms"],
    )
    .await;

    let proxy = |on: bool| {
        json!({ "services": { "orders": { "dependencies": { "payments": { "proxy": on } } } } })
            .to_string()
    };
    mesh.put_rollout(&proxy(true)).await;
    sidecar_says(&mesh, egress, true).await;
    app_calls(egress, payments, 7).await;
    let calls =
        || async { mesh.admin_json("/api/migration").await["services"]["orders"]["calls"].clone() };
    assert!(
        poll(|| async { calls().await["proxy"] == 7 }).await,
        "7 calls through Envoy reported: {}",
        calls().await
    );
    // A hot restart (SIGHUP): the new Envoy takes over its parent's counters, which were
    // reported already; its own calls are counted, the parent's not twice.
    let pid = rustix::process::Pid::from_raw(mesh.sidecar_pid("orders-1") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    let admin = mesh.sidecar_admin("orders-1");
    let restarted = poll(|| async {
        support::envoy_stat(&mesh.http, admin, "server.hot_restart_epoch").await == Some(1)
    })
    .await;
    assert!(restarted, "{}", mesh.sidecar_log("orders-1"));
    app_calls(egress, payments, 3).await;
    mesh.put_rollout(&proxy(false)).await;
    sidecar_says(&mesh, egress, false).await;
    app_calls(egress, payments, 5).await;

    let expected = json!({
        "reporting": 1, "proxy": 10, "direct": 5, "via_egress": 0.667,
        "by_dependency": [ { "dependency": "payments", "proxy": 10, "direct": 5 } ]
    });
    let reported = poll(|| async {
        mesh.admin_json("/api/migration").await["services"]["orders"]["calls"] == expected
    })
    .await;
    assert!(
        reported,
        "orders' calls: {:#}\n{}",
        mesh.admin_json("/api/migration").await["services"]["orders"],
        mesh.sidecar_log("orders-1")
    );
    // Reported once: later reports (every 200 ms) add nothing.
    meshplane_test_support::hold(
        std::time::Duration::from_secs(1),
        "the counts stay as made",
        || async {
            let calls = &mesh.admin_json("/api/migration").await["services"]["orders"]["calls"];
            match calls == &expected {
                true => Ok(()),
                false => Err(calls.to_string()),
            }
        },
    )
    .await;
    let view = mesh.admin_json("/api/migration").await;
    assert_eq!(view["totals"]["calls"], json!({ "proxy": 10, "direct": 5 }));
    assert_eq!(view["totals"]["sending_via_egress"], 1);
    assert_eq!(view["totals"]["sending_direct"], 1);
    assert_eq!(
        mesh.admin_json("/api/traffic").await,
        json!({ "window_s": 600, "pairs": [
            { "caller": "orders", "callee": "payments", "reporting": 1, "proxy": 10, "direct": 5 }
        ] })
    );

    // A report without the token is refused and changes nothing.
    let url = format!("http://{}/api/traffic/reports", mesh.cp.admin_addr);
    let forged = json!({ "service": "orders", "instance": "orders-9", "datacenter": "dc1",
        "calls": { "payments": { "proxy": 1000 } } });
    let refused = mesh
        .http
        .post(&url)
        .json(&forged)
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 401);
    let bad = mesh
        .http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({ "service": "orders", "instance": "", "datacenter": "dc1", "calls": {} }))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    assert_eq!(
        mesh.admin_json("/api/migration").await["services"]["orders"]["calls"],
        expected
    );

    // payments proposes to let only `web` call /api/: orders, seen calling it both ways,
    // would lose access.
    let proposed = format!(
        "service: payments\nport: {payments}\ningress: {{ port: {} }}\nincoming:\n  endpoints:\n    - {{ path_prefix: /api/, clients: [web] }}\n",
        free_port()
    );
    let resp = mesh
        .http
        .post(format!("http://{}/api/dry-run", mesh.cp.admin_addr))
        .body(proposed.clone())
        .send()
        .await
        .expect("dry run");
    assert_eq!(resp.status(), 200);
    let run: serde_json::Value = resp.json().await.expect("json");
    let callers = &run["groups"][0]["callers"];
    assert_eq!(
        callers,
        &json!([{
            "service": "orders", "proxy": 10, "direct": 5, "loses_access": true,
            "through_sidecar": { "now": { "access": "allowed" }, "proposed": {
                "access": "denied",
                "reason": "no endpoint rule lets `orders` through and unlisted endpoints are blocked (the health path excepted)"
            } },
            "sent_direct": { "now": { "access": "allowed" }, "proposed": {
                "access": "denied",
                "reason": "no endpoint rule lets an anonymous (plaintext) caller through and unlisted endpoints are blocked (the health path excepted)"
            } }
        }]),
        "{run:#}"
    );
    let text = mesh
        .http
        .post(format!(
            "http://{}/api/dry-run?format=text",
            mesh.cp.admin_addr
        ))
        .body(proposed)
        .send()
        .await
        .expect("dry run")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("  callers in the last 10 min (! would lose access):\n  ! orders — 10 through its sidecar: allowed → denied"),
        "{text}"
    );
}
