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

async fn put_flags(mesh: &Mesh, json: &str) {
    let r = mesh
        .http
        .put(format!("http://{}/api/rollout", mesh.cp.admin_addr))
        .bearer_auth(TOKEN)
        .body(json.to_owned())
        .send()
        .await
        .expect("admin API");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
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
    put_flags(
        &mesh,
        r#"{"services": {"orders": {"dependencies": {"payments": {"proxy": true}}}}}"#,
    )
    .await;
    let flipped = Instant::now();
    let ((status, new_etag, body), answered) = waiting.await.expect("poll task");
    assert_eq!(status, 200, "{body}");
    assert_ne!(new_etag, etag);
    assert_eq!(payments_proxy(&body), Some(true), "{body}");
    let took = answered.saturating_duration_since(flipped);
    println!("flip to the app's long poll answering: {took:?}");
    assert!(took < FLIP_WITHIN, "the app saw the flip {took:?} after it");

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
            status == 200 && etag == new_etag && payments_proxy(&body) == Some(true)
        },
    )
    .await;
    let cache = mesh.dir.path().join("orders-1").join("egress-flags.json");
    let cached = std::fs::read_to_string(&cache).expect("the decisions are kept on disk");
    assert!(cached.contains(&new_etag.replace('"', "\\\"")), "{cached}");
}
