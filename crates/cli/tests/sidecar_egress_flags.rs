//! `GET /.meshplane/egress` on a real sidecar's egress port (real Envoy routing it to the
//! `meshplane sidecar` process): the instance's egress rollout decisions, following changes
//! made in the admin API within a second, and kept while the control plane is away.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Mesh, orders_to_payments, poll, upstream};

const TOKEN: &str = "t0ken-for-tests";
/// A flag flipped in the admin API reaches a waiting app within this.
const FLIP_WITHIN: Duration = Duration::from_secs(1);

/// `(status, ETag, body)` of the sidecar's flags endpoint, with `If-None-Match` if given.
async fn flags(
    http: &reqwest::Client,
    egress: u16,
    query: &str,
    etag: Option<&str>,
) -> (u16, String, String) {
    let mut r = http.get(format!(
        "http://127.0.0.1:{egress}/.meshplane/egress{query}"
    ));
    if let Some(etag) = etag {
        r = r.header("if-none-match", etag);
    }
    match r.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (status, etag, resp.text().await.unwrap_or_default())
        }
        Err(e) => (0, String::new(), e.to_string()),
    }
}

fn payments_proxy(body: &str) -> Option<bool> {
    let v: Value = serde_json::from_str(body).ok()?;
    v["dependencies"]["payments"]["proxy"].as_bool()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sidecar_serves_its_decisions_follows_a_flip_within_a_second_and_keeps_them_without_the_control_plane()
 {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    let pay = upstream("payments-1").await;
    mesh.register("payments-1", "payments", pay, &[], 1).await;
    let (d, egress) = orders_to_payments();
    mesh.sidecar("orders-1", &d, 2).await;
    let http = mesh.http.clone();

    // Nothing written: the mesh's default, not proxied.
    let ok = poll(|| async {
        let (status, _, body) = flags(&http, egress, "", None).await;
        status == 200 && payments_proxy(&body) == Some(false)
    })
    .await;
    assert!(
        ok,
        "{:?}\n{}",
        flags(&http, egress, "", None).await,
        mesh.sidecar_log("orders-1")
    );
    let (_, etag, body) = flags(&http, egress, "", None).await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["instance"], "orders-1");
    assert_eq!(v["dependencies"]["payments"]["source"], "mesh");
    // Unchanged: 304 at once without a wait, and after a short one.
    assert_eq!(flags(&http, egress, "", Some(&etag)).await.0, 304);
    assert_eq!(
        flags(&http, egress, "?wait=200ms", Some(&etag)).await.0,
        304
    );

    // The app waits for a change; the flag is flipped in the admin API.
    let waiting = {
        let (http, etag) = (http.clone(), etag.clone());
        tokio::spawn(async move {
            let answer = flags(&http, egress, "?wait=30s", Some(&etag)).await;
            (answer, Instant::now())
        })
    };
    meshplane_test_support::hold(
        Duration::from_millis(300),
        "the app's long poll waits",
        || async { !waiting.is_finished() },
    )
    .await;
    let flipped = Instant::now();
    mesh.put_rollout(
        r#"{"services": {"orders": {"dependencies": {"payments": {"proxy": true}}}}}"#,
    )
    .await;
    let ((status, new_etag, body), answered) = waiting.await.expect("poll task");
    assert_eq!(status, 200, "{body}");
    assert_ne!(new_etag, etag);
    assert_eq!(payments_proxy(&body), Some(true), "{body}");
    let took = answered.saturating_duration_since(flipped);
    println!("flip to the app's long poll answering: {took:?}");
    assert!(took < FLIP_WITHIN, "the app saw the flip {took:?} after it");

    // A reloaded descriptor (SIGHUP) with a new tag: the sidecar asks for the new
    // instance's decisions at once.
    mesh.put_rollout(r#"{"services": {"orders": {"dependencies": {"payments": {"proxy": true, "overrides": [{"tag": "canary", "proxy": false}]}}}}}"#,
    )
    .await;
    let file = mesh.dir.path().join("orders-1.yaml");
    std::fs::write(&file, format!("{d}tags: [canary]\n")).expect("descriptor");
    let pid = rustix::process::Pid::from_raw(mesh.sidecar_pid("orders-1") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    let overridden = poll(|| async {
        let (status, _, body) = flags(&http, egress, "", None).await;
        status == 200
            && body.contains(r#""payments":{"proxy":false,"source":"dependency-override"}"#)
    })
    .await;
    assert!(overridden, "{:?}", flags(&http, egress, "", None).await);
    let confirmed = http
        .get(format!("http://127.0.0.1:{egress}/.meshplane/egress"))
        .send()
        .await
        .expect("sidecar");
    assert!(!confirmed.headers().contains_key("x-meshplane-stale"));
    let (_, new_etag, _) = flags(&http, egress, "", None).await;

    // The control plane goes away: the sidecar keeps serving the last decisions (and keeps
    // them on disk for a restart).
    mesh.shutdown.cancel();
    let gone = poll(|| async {
        mesh.http
            .get(format!("http://{}/healthz", mesh.cp.admin_addr))
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(gone, "the control plane stopped");
    meshplane_test_support::hold(
        Duration::from_secs(2),
        "the last decisions are served",
        || async {
            let (status, etag, body) = flags(&http, egress, "", None).await;
            status == 200 && etag == new_etag && payments_proxy(&body) == Some(false)
        },
    )
    .await;
    // ... saying they could not be confirmed.
    let stale = || async {
        http.get(format!("http://127.0.0.1:{egress}/.meshplane/egress"))
            .send()
            .await
            .ok()
            .and_then(|r| r.headers().get("x-meshplane-stale").cloned())
            .is_some_and(|v| v == "true")
    };
    assert!(
        poll(stale).await,
        "x-meshplane-stale: true once the control plane is away"
    );
    let cache = mesh.dir.path().join("orders-1").join("egress-flags.json");
    let cached = std::fs::read_to_string(&cache).expect("the decisions are kept on disk");
    assert!(cached.contains(&new_etag.replace('"', "\\\"")), "{cached}");
}

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The example app (examples/python-requests/app.py, using the reference interceptor) as a
/// process: each line it prints, with when it was read. Killed and reaped on drop.
struct App {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
}

impl App {
    fn start(egress: u16, direct: u16) -> App {
        let python = format!("{ROOT}/.tools/venv/bin/python");
        assert!(
            std::path::Path::new(&python).exists(),
            "{python} is missing: run scripts/install-test-deps.sh"
        );
        let mut child = std::process::Command::new(python)
            .arg(format!("{ROOT}/examples/python-requests/app.py"))
            .args(["--egress-port", &egress.to_string()])
            .args(["--call", "http://payments/"])
            .args(["--direct", &format!("payments=http://127.0.0.1:{direct}")])
            .args(["--every", "0.02"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python app starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        App { child, lines }
    }

    /// The next line, waiting at most `within`.
    fn next(&self, within: Duration) -> Option<(Instant, String)> {
        self.lines.recv_timeout(within).ok()
    }

    /// Reads lines until one is `want`; when it was read.
    fn until(&self, want: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some((at, line)) if line == want => return at,
                Some((_, line)) => seen.push(line),
                None => break,
            }
        }
        let last = &seen[seen.len().saturating_sub(10)..];
        panic!(
            "the app never printed {want:?} within {within:?}; it printed {} lines, the last {last:?}",
            seen.len()
        );
    }

    /// Drops the lines printed so far.
    fn skip_pending(&self) {
        while self.lines.try_recv().is_ok() {}
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The callee: answers `envoy` when the call came through an Envoy (which adds
/// `x-envoy-expected-rq-timeout-ms`), `direct` otherwise.
async fn callee() -> u16 {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = axum::Router::new().fallback(|headers: HeaderMap| async move {
        if headers.contains_key("x-envoy-expected-rq-timeout-ms") {
            "envoy"
        } else {
            "direct"
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

async fn decision(mesh: &Mesh, instance: &str) -> bool {
    let body: Value = mesh
        .http
        .get(format!(
            "http://{}/api/rollout/decisions?service=orders&instance={instance}&dependency=payments",
            mesh.cp.admin_addr
        ))
        .send()
        .await
        .expect("admin API")
        .json()
        .await
        .expect("json");
    body["dependencies"]["payments"]["proxy"]
        .as_bool()
        .expect("a decision")
}

fn rollout(percent: u32) -> String {
    format!(
        r#"{{"services": {{"orders": {{"dependencies": {{"payments": {{"proxy": true, "rollout": {percent}}}}}}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_with_the_python_interceptor_moves_to_envoy_within_a_second_of_the_flip_and_rollouts_pick_a_stable_subset()
 {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    let pay = callee().await;
    mesh.register("payments-1", "payments", pay, &[], 1).await;
    let (d, egress) = orders_to_payments();
    mesh.sidecar("orders-1", &d, 2).await;
    let admin = mesh.sidecar_admin("orders-1");
    let through_envoy = || async {
        support::envoy_stat(&mesh.http, admin, "cluster.payments.upstream_rq_total")
            .await
            .unwrap_or(0)
    };

    // Not migrated: the app calls payments directly, Envoy carries nothing.
    let app = App::start(egress, pay);
    app.until("200 direct", Duration::from_secs(20));
    assert_eq!(through_envoy().await, 0);

    // Flipped in the admin API: the app's calls go through Envoy within a second.
    let flipped = Instant::now();
    mesh.put_rollout(
        r#"{"services": {"orders": {"dependencies": {"payments": {"proxy": true}}}}}"#,
    )
    .await;
    let seen = app.until("200 envoy", Duration::from_secs(5));
    let took = seen.saturating_duration_since(flipped);
    println!("flip to the app's first call through Envoy: {took:?}");
    assert!(took < FLIP_WITHIN, "the app moved {took:?} after the flip");
    // From then on, every call does; Envoy counts them.
    app.skip_pending();
    for _ in 0..10 {
        let (_, line) = app.next(Duration::from_secs(5)).expect("a call");
        assert_eq!(line, "200 envoy");
    }
    assert!(through_envoy().await >= 10);

    // A rollout: a stable share of the instances, only growing with the percentage.
    mesh.put_rollout(&rollout(50)).await;
    let instances: Vec<String> = (1..=40).map(|i| format!("orders-{i}")).collect();
    let mut half = Vec::new();
    for id in &instances {
        half.push(decision(&mesh, id).await);
    }
    let proxied = half.iter().filter(|p| **p).count();
    assert!(
        (10..=30).contains(&proxied),
        "50 % of 40 instances: {proxied}"
    );
    for (id, was) in instances.iter().zip(&half) {
        assert_eq!(decision(&mesh, id).await, *was, "{id} is stable");
    }
    mesh.put_rollout(&rollout(80)).await;
    let mut more = 0;
    for (id, was) in instances.iter().zip(&half) {
        let now = decision(&mesh, id).await;
        assert!(now || !was, "{id} left the rollout when it grew");
        more += usize::from(now);
    }
    assert!(more > proxied, "80 % takes more instances than 50 %");
    // The running instance follows its own share of it.
    let want = if decision(&mesh, "orders-1").await {
        "200 envoy"
    } else {
        "200 direct"
    };
    app.until(want, Duration::from_secs(5));
    app.skip_pending();
    for _ in 0..5 {
        assert_eq!(app.next(Duration::from_secs(5)).expect("a call").1, want);
    }

    // Back to off: direct again, without restarting anything.
    mesh.put_rollout(r#"{"default": {"proxy": false}}"#).await;
    app.until("200 direct", Duration::from_secs(5));
}

/// A sidecar started without an egress port, given one by a reload (SIGHUP, as the README's
/// "Migrating a fleet" does): the new egress port serves the instance's decisions and takes
/// the app's reports of direct calls.
#[tokio::test(flavor = "multi_thread")]
async fn egress_added_by_a_reload_serves_the_decisions_and_takes_reports() {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    let (app, ingress) = (upstream("orders-app").await, support::free_port());
    let without = format!("service: orders\nport: {app}\ningress: {{ port: {ingress} }}\n");
    mesh.sidecar("orders-1", &without, 1).await;
    let (with, egress) = {
        let egress = support::free_port();
        let d = format!(
            "{without}egress: {{ port: {egress} }}\ndependencies:\n  - service: payments\n"
        );
        (d, egress)
    };
    std::fs::write(mesh.dir.path().join("orders-1.yaml"), &with).expect("descriptor");
    let pid = rustix::process::Pid::from_raw(mesh.sidecar_pid("orders-1") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    let http = mesh.http.clone();
    let served = poll(|| async {
        let (status, _, body) = flags(&http, egress, "", None).await;
        status == 200 && payments_proxy(&body) == Some(false)
    })
    .await;
    assert!(
        served,
        "{:?}\n{}",
        flags(&http, egress, "", None).await,
        mesh.sidecar_log("orders-1")
    );
    let report = |body: &'static str| {
        http.post(format!(
            "http://127.0.0.1:{egress}/.meshplane/egress/report"
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
    };
    let taken = report(r#"{"direct": {"payments": 2}}"#)
        .await
        .expect("post");
    assert_eq!(taken.status(), 204);
    // A name that is no service is left out, and said so; the rest is taken.
    let partly = report(r#"{"direct": {"payments": 1, "::1": 3}}"#)
        .await
        .expect("post");
    assert_eq!(partly.status(), 200);
    let v: Value = partly.json().await.expect("json");
    assert_eq!(v["ignored"], serde_json::json!(["::1"]));
    assert_eq!(report("not json").await.expect("post").status(), 400);
}
