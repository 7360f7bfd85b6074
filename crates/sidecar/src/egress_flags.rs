//! The app's egress rollout decisions, served on its egress port: Envoy routes
//! `GET /.meshplane/egress` to a small HTTP server in this process (the bootstrap's
//! `meshplane:egress-flags` cluster), which answers from what it last learnt.
//!
//! [`follow`] long-polls the control plane's `GET /api/rollout/decisions` for this instance
//! (service, instance id, datacenter, tags, and the descriptor's dependencies), at each of the
//! control plane's admin URLs in turn, and keeps the last answer in memory and in the work
//! directory (`egress-flags.json`), so a control plane away — or a sidecar restarted while it
//! is away — still serves the last known decisions. [`serve`] answers the app: the decisions'
//! JSON with an `ETag`, and with `If-None-Match` + `?wait=30s` waits for a change (`304` when
//! the wait ends first); `503` until the decisions were ever known. It also takes the app's
//! reports of calls sent direct (`POST /.meshplane/egress/report`, see
//! [`crate::traffic_report`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshplane_model::Descriptor;
use meshplane_model::descriptor::Target;
use meshplane_model::traffic::AppReport;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::traffic_report::DirectCalls;

/// Set on answers while the decisions could not be confirmed with the control plane (it is
/// away, or has not answered since the sidecar started from its cache): `true`.
pub const STALE_HEADER: &str = "x-meshplane-stale";
/// The cache file in the work directory.
pub const CACHE_FILE: &str = "egress-flags.json";
/// How long one long poll of the control plane waits.
const POLL_WAIT: Duration = Duration::from_secs(60);
/// The longest `?wait=` the app gets (under Envoy's 5-minute stream idle timeout).
const MAX_APP_WAIT: Duration = Duration::from_secs(240);
/// Pauses between failed polls: the first, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The last decisions learnt: the control plane's JSON and its ETag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The ETag the control plane gave them.
    pub etag: String,
    /// The decisions' JSON, as the control plane answered it.
    pub decisions: String,
}

/// What [`follow`] asks the control plane for, and where.
#[derive(Debug, Clone)]
pub struct FollowSpec {
    /// The control plane's admin URLs, tried in turn.
    pub admin_urls: Vec<String>,
    /// The decisions route's query (without `wait`); a new one (a reloaded descriptor) is
    /// asked at once; empty while the descriptor has no egress port.
    pub query: watch::Receiver<String>,
    /// Where the last decisions are kept across restarts.
    pub cache: PathBuf,
    /// The client (with the control plane's CA bundle, if any).
    pub http: reqwest::Client,
    /// Whether the last poll failed (shared with [`serve`]).
    pub stale: Arc<AtomicBool>,
}

/// The decisions route's query for this instance: its service, id, datacenter, tags and
/// dependencies as the descriptor names them.
pub fn decisions_query(d: &Descriptor, instance: &str, datacenter: &str) -> String {
    let mut q = form_pairs();
    q.append_pair("service", d.service.as_str());
    q.append_pair("instance", instance);
    q.append_pair("datacenter", datacenter);
    for tag in &d.tags {
        q.append_pair("tag", tag);
    }
    for dep in &d.dependencies {
        let name = match &dep.target {
            Target::Service(s) => s.to_string(),
            Target::Domain(domain) => {
                let (scheme, default) = if domain.tls {
                    ("https", 443)
                } else {
                    ("http", 80)
                };
                if domain.port == default {
                    format!("{scheme}://{}", domain.host)
                } else {
                    format!("{scheme}://{}:{}", domain.host, domain.port)
                }
            }
            Target::DomainPattern(p) => p.clone(),
            Target::AllServices => continue,
        };
        q.append_pair("dependency", &name);
    }
    q.finish()
}

fn form_pairs() -> form_urlencoded::Serializer<'static, String> {
    form_urlencoded::Serializer::new(String::new())
}

/// The decisions kept in `cache` from an earlier run, if any.
pub fn load_cache(cache: &std::path::Path) -> Option<Known> {
    let text = std::fs::read(cache).ok()?;
    serde_json::from_slice(&text).ok()
}

fn store_cache(cache: &std::path::Path, known: &Known) {
    let Ok(text) = serde_json::to_vec(known) else {
        return;
    };
    // Write-then-rename: a crash never leaves half a file.
    let tmp = cache.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, cache)) {
        tracing::warn!(error = %e, file = %cache.display(), "cannot keep the egress flags on disk");
    }
}

/// Follows this instance's decisions until `shutdown`, publishing each new answer on
/// `known_tx` and keeping it on disk. A control plane away keeps the last answer.
pub async fn follow(
    spec: FollowSpec,
    known_tx: watch::Sender<Option<Known>>,
    shutdown: CancellationToken,
) {
    if spec.admin_urls.is_empty() {
        return;
    }
    let mut at = 0;
    let mut pause = RETRY_FIRST;
    let mut failing = false;
    let mut query_rx = spec.query.clone();
    loop {
        let base = &spec.admin_urls[at % spec.admin_urls.len()];
        let query = query_rx.borrow_and_update().clone();
        if query.is_empty() {
            // No egress port (yet): nothing to follow until a reload adds one.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = query_rx.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let known_etag = known_tx.borrow().as_ref().map(|k| k.etag.clone());
        let poll = poll_once(&spec.http, base, &query, known_etag.as_deref());
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            // Dependencies or tags changed: ask the new question now.
            Ok(()) = query_rx.changed() => continue,
            outcome = poll => outcome,
        };
        match outcome {
            Ok(answer) => {
                if failing {
                    tracing::info!(control_plane = %base, "egress flags followed again");
                    failing = false;
                }
                spec.stale.store(false, Ordering::Relaxed);
                pause = RETRY_FIRST;
                if let Some(known) = answer {
                    store_cache(&spec.cache, &known);
                    known_tx.send_if_modified(|k| {
                        let changed = k.as_ref() != Some(&known);
                        *k = Some(known);
                        changed
                    });
                }
            }
            Err(e) => {
                spec.stale.store(true, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(control_plane = %base, error = %e, "cannot follow the egress flags; serving the last known");
                    failing = true;
                }
                at += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One long poll: new decisions, `None` when unchanged, or why it failed.
async fn poll_once(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    known_etag: Option<&str>,
) -> Result<Option<Known>, String> {
    let wait = if known_etag.is_some() {
        POLL_WAIT
    } else {
        Duration::ZERO
    };
    let url = format!(
        "{base}/api/rollout/decisions?{query}&wait={}ms",
        wait.as_millis()
    );
    let mut request = http.get(url).timeout(wait + Duration::from_secs(10));
    if let Some(etag) = known_etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let resp = request.send().await.map_err(|e| e.to_string())?;
    match resp.status() {
        reqwest::StatusCode::NOT_MODIFIED => Ok(None),
        reqwest::StatusCode::OK => {
            let etag = resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let decisions = resp.text().await.map_err(|e| e.to_string())?;
            Ok(Some(Known { etag, decisions }))
        }
        status => {
            let body = resp.text().await.unwrap_or_default();
            Err(format!("{status}: {}", body.trim()))
        }
    }
}

/// Serves `GET /.meshplane/egress` on `listener` from `known_rx` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    known_rx: watch::Receiver<Option<Known>>,
    stale: Arc<AtomicBool>,
    direct: DirectCalls,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route(meshplane_model::egress_flags::PATH, get(answer))
        .route(
            meshplane_model::traffic::APP_REPORT_PATH,
            post(app_report).with_state(direct),
        )
        .with_state(Served { known_rx, stale });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "the egress flags server stopped");
    }
}

#[derive(Clone)]
struct Served {
    known_rx: watch::Receiver<Option<Known>>,
    stale: Arc<AtomicBool>,
}

async fn answer(
    State(Served {
        mut known_rx,
        stale,
    }): State<Served>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let wait = match app_wait(query.as_deref()) {
        Ok(wait) => wait,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let given = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = tokio::time::Instant::now() + wait.unwrap_or(Duration::ZERO);
    loop {
        let current = known_rx.borrow_and_update().clone();
        if let Some(known) = &current {
            if given.as_deref() != Some(known.etag.as_str()) {
                return reply(StatusCode::OK, known, &stale);
            }
            if wait.is_none() {
                return reply(StatusCode::NOT_MODIFIED, known, &stale);
            }
        }
        tokio::select! {
            changed = known_rx.changed() => {
                if changed.is_err() {
                    return (StatusCode::SERVICE_UNAVAILABLE, "meshplane: the sidecar is stopping\n").into_response();
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return match &current {
                    Some(known) => reply(StatusCode::NOT_MODIFIED, known, &stale),
                    None => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "meshplane: the egress flags are not known yet (the control plane has not answered since this sidecar started); retry\n",
                    )
                        .into_response(),
                };
            }
        }
    }
}

/// `POST /.meshplane/egress/report`: the app's calls sent straight to mesh services since its
/// previous post, counted in the next traffic report.
async fn app_report(State(direct): State<DirectCalls>, body: axum::body::Bytes) -> Response {
    let report: AppReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("meshplane: not a report of direct calls ({{\"direct\": {{\"<service>\": <calls>}}}}): {e}\n"),
            )
                .into_response();
        }
    };
    let ignored = direct.add(report);
    if ignored.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    // Taken, but not all of it: say which names were not counted.
    let shown: Vec<&String> = ignored.iter().take(10).collect();
    let body = serde_json::json!({
        "ignored": shown,
        "ignored_count": ignored.len(),
        "reason": "not a service name, or past 4096 services between two reports",
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

fn app_wait(query: Option<&str>) -> Result<Option<Duration>, String> {
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key == "wait" {
            let wait = meshplane_model::descriptor::parse_duration(&value)
                .map_err(|e| format!("wait: {e}\n"))?;
            return Ok(Some(wait.min(MAX_APP_WAIT)));
        }
    }
    Ok(None)
}

fn reply(status: StatusCode, known: &Known, stale: &AtomicBool) -> Response {
    let body = if status == StatusCode::OK {
        known.decisions.clone()
    } else {
        String::new()
    };
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&known.etag) {
        headers.insert(header::ETAG, v);
    }
    if status == StatusCode::OK {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if stale.load(Ordering::Relaxed) {
        headers.insert(STALE_HEADER, HeaderValue::from_static("true"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_instance_its_tags_and_dependencies_as_written() {
        let d = Descriptor::from_yaml(
            "service: orders\nport: 8080\ningress: { port: 31001 }\negress: { port: 31000 }\ntags: [canary]\ndependencies:\n  - service: payments\n  - domain: https://api.example.com\n  - domain: http://legacy.example.com:8080\n",
        )
        .expect("descriptor");
        assert_eq!(
            decisions_query(&d, "orders-1", "dc1"),
            "service=orders&instance=orders-1&datacenter=dc1&tag=canary&dependency=payments&dependency=https%3A%2F%2Fapi.example.com&dependency=http%3A%2F%2Flegacy.example.com%3A8080"
        );
    }

    #[test]
    fn the_cache_round_trips() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = dir.path().join(CACHE_FILE);
        assert_eq!(load_cache(&cache), None);
        let known = Known {
            etag: "\"abc\"".into(),
            decisions: "{\"default\":{}}".into(),
        };
        store_cache(&cache, &known);
        assert_eq!(load_cache(&cache), Some(known));
    }
}
