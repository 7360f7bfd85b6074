//! The admin API on `--admin-addr`: what the registry holds, what every connected proxy was
//! sent and acknowledged, the translated snapshot of every group, Prometheus metrics, and
//! health/readiness. It holds read handles only: nothing here can change the registry, the
//! translation or what proxies are sent. Three routes do act, and need the token when one is
//! set: setting a proxy's Envoy log level (forwarded to its sidecar's relay, [`relay`]),
//! replacing the egress rollout flags (`PUT /api/rollout`, `rollout.rs`, through the
//! `meshplane-rollout-store` handle, which also serves their audit log and the decisions'
//! long poll) and the built-in CA's signing route (`POST /api/ca/sign`, `ca.rs`, which also
//! takes per-service enrolment tokens), which issues a sidecar's certificate.
//!
//! Two read routes compute: the migration view ([`migration`], from the registry and the
//! flags) and the dry run of a descriptor change ([`dry_run`], translated by the runtime's
//! planner, compared here; nothing is published).
//!
//! Start at [`router`]; [`views`] turns internal state into the JSON shapes. `/metrics` only
//! serves the families that `meshplane-telemetry` owns and others record into.

mod auth;
mod ca;
pub use ca::EnrolmentTokens;
pub mod consistency;
pub mod dry_run;
mod metrics;
pub mod migration;
mod panel;
pub mod relay;
mod resources;
mod rollout;
pub mod targets;
pub mod traffic;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use meshplane_registry::Store;
use meshplane_xds::{GroupKey, SnapshotCache, StatusBoard};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Read handles the admin API serves from, plus the CA it signs with.
#[derive(Clone)]
pub struct AdminState {
    /// The merged registry.
    pub store: Store,
    /// Per-proxy xDS status.
    pub status: StatusBoard,
    /// Translated snapshots by group.
    pub cache: SnapshotCache,
    /// This control plane's xDS address (proxies are "connected to" it).
    pub xds_addr: SocketAddr,
    /// Where each proxy's admin relay listens.
    pub directory: Arc<dyn relay::ProxyDirectory>,
    /// Token required on write routes (and sent to sidecar relays).
    pub token: Option<Arc<str>>,
    /// Admin URLs of the other control-plane instances.
    pub peers: Arc<Vec<String>>,
    /// This control plane's datacenter: its peers are the control planes registered in it.
    pub datacenter: String,
    /// Client for relays and peers.
    pub http: reqwest::Client,
    /// The control plane's metrics: served on `/metrics`; the CA routes record into them.
    pub metrics: meshplane_telemetry::Metrics,
    /// The built-in CA, when this control plane runs one.
    pub ca: Option<Arc<meshplane_ca::Authority>>,
    /// Per-service enrolment tokens for the CA (service → token); empty: the control plane's
    /// `token` enrols every service.
    pub enrolment_tokens: Arc<EnrolmentTokens>,
    /// Whether this admin API is served over TLS (its own URL among the Prometheus targets
    /// is then `https://`).
    pub admin_tls: bool,
    /// Grafana's address (no trailing `/`): service and instance views link to the shipped
    /// dashboards there.
    pub grafana_url: Option<Arc<str>>,
    /// Translates descriptors for `POST /api/dry-run`; `None`: the route answers 501.
    pub dry_run: Option<Arc<dyn dry_run::Planner>>,
    /// The egress rollout flags in the registry's key/value store; `None` when the registry
    /// has none (`--registry file`), and the rollout routes say so.
    pub rollout: Option<meshplane_rollout_store::RolloutStore>,
    /// The sidecars' traffic reports of the last few minutes.
    pub traffic: traffic::TrafficLog,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("AdminState")
            .field("xds_addr", &self.xds_addr)
            .field("peers", &self.peers)
            .field("token_set", &self.token.is_some())
            .field("ca", &self.ca)
            .field("enrolment_tokens", &self.enrolment_tokens)
            .finish_non_exhaustive()
    }
}

/// The admin API routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .route("/api/prometheus/targets", get(targets::route))
        .route("/api/services", get(services))
        .route("/api/services/{name}", get(service))
        .route("/api/proxies", get(proxies))
        .route("/api/state", get(registry_state))
        .route("/api/groups", get(groups))
        .route("/api/groups/{key}/resources", get(group_resources))
        .route("/api/migration", get(migration_route))
        .route(
            "/api/dry-run",
            axum::routing::post(dry_run_route)
                .layer(axum::extract::DefaultBodyLimit::max(DRY_RUN_BODY_LIMIT)),
        )
        .route("/api/proxies/{id}/config_dump", get(relay::config_dump))
        .route("/api/proxies/{id}/stats", get(relay::stats))
        .route("/api/proxies/{id}/certs", get(relay::certs))
        .route("/api/proxies/{id}/traffic", get(relay::traffic))
        .route(
            "/api/proxies/{id}/logging",
            get(relay::logging).post(relay::set_logging),
        )
        .route("/api/state/digest", get(consistency::digest_route))
        .route("/api/consistency", get(consistency::report))
        .route(
            meshplane_model::identity::SIGN_PATH,
            axum::routing::post(ca::sign)
                .layer(axum::extract::DefaultBodyLimit::max(ca::MAX_SIGN_BODY)),
        )
        .route(
            "/api/rollout",
            get(rollout::get)
                .put(rollout::put)
                .layer(axum::extract::DefaultBodyLimit::max(
                    rollout::MAX_FLAGS_BODY,
                )),
        )
        .route(
            meshplane_model::traffic::REPORTS_PATH,
            axum::routing::post(traffic::record).layer(axum::extract::DefaultBodyLimit::max(
                traffic::MAX_REPORT_BODY,
            )),
        )
        .route("/api/traffic", get(traffic::view))
        .route("/api/rollout/audit", get(rollout::audit))
        .route("/api/rollout/decisions", get(rollout::decisions))
        .merge(panel::routes())
        .with_state(state)
}

/// Serves `router` (the admin API, with whatever the control plane adds to it) until
/// `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // TCP_NODELAY: a response written in parts must not wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // The peer address reaches handlers (the rollout audit log records it).
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(s): State<AdminState>) -> Response {
    readiness(&s.store.snapshot()).into_response()
}

/// `/readyz`: ready once the registry completed its first full sync. A stale registry (a
/// source that cannot reach its registry) keeps the control plane ready, since it still
/// serves proxies the last state it knew and every instance following the same registry is
/// in the same position; the body says so, with each stale source's reason.
fn readiness(snapshot: &meshplane_registry::Snapshot) -> (StatusCode, String) {
    if !snapshot.is_synced() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the registry has not completed its first full sync\n".to_owned(),
        );
    }
    let stale: Vec<String> = snapshot
        .sources
        .iter()
        .filter_map(|(source, status)| match status {
            meshplane_registry::SourceStatus::Stale { reason } => {
                Some(format!("stale: {source}: {reason}\n"))
            }
            _ => None,
        })
        .collect();
    if stale.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::OK,
            format!(
                "ready, serving the last known registry state\n{}",
                stale.concat()
            ),
        )
    }
}

async fn services(State(s): State<AdminState>) -> Json<Vec<views::ServiceSummary>> {
    Json(views::services(&s.store.snapshot()))
}

async fn service(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    match views::service(&s.store.snapshot(), &s.status, &name, s.xds_addr) {
        Some(mut detail) => {
            if let Some(grafana) = &s.grafana_url {
                detail.dashboard = Some(format!(
                    "{grafana}/d/meshplane-service?var-service={}",
                    views::query_escape(&name)
                ));
                detail.instance_dashboard =
                    Some(format!("{grafana}/d/meshplane-instance?var-instance="));
            }
            Json(detail).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("no service `{name}` in the registry\n"),
        )
            .into_response(),
    }
}

async fn proxies(State(s): State<AdminState>) -> Json<Vec<views::ProxyView>> {
    Json(
        s.status
            .proxies()
            .iter()
            .map(|p| views::proxy(p, s.xds_addr))
            .collect(),
    )
}

async fn registry_state(State(s): State<AdminState>) -> Json<views::RegistryState> {
    Json(views::registry_state(&s.store.snapshot()))
}

async fn groups(State(s): State<AdminState>) -> Json<Vec<views::GroupView>> {
    Json(views::groups(&s.cache))
}

async fn group_resources(State(s): State<AdminState>, Path(key): Path<String>) -> Response {
    match s.cache.snapshot(&GroupKey::new(key.as_str())) {
        Some(snapshot) => Json(resources::describe(&snapshot)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no snapshot for group `{key}`\n"),
        )
            .into_response(),
    }
}

/// `GET /api/migration`: where the migration into the mesh stands, per service and in total.
async fn migration_route(State(s): State<AdminState>) -> Response {
    let registry = s.store.snapshot();
    // The document the store follows (what the sidecars are served), read once when the
    // store has not followed it yet.
    let current = match &s.rollout {
        None => None,
        Some(store) => {
            let followed = store.subscribe().borrow().clone();
            match followed {
                Some(v) => Some(v),
                None => match store.current().await {
                    Ok(v) => Some(Arc::new(v)),
                    Err(e) => {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("the egress rollout flags cannot be read: {e}\n"),
                        )
                            .into_response();
                    }
                },
            }
        }
    };
    let flags = current.as_ref().map(|v| (&v.flags, v.version));
    let recent = s.traffic.recent(tokio::time::Instant::now());
    Json(migration::view(&registry, flags, &recent)).into_response()
}

/// Largest descriptor a dry run takes (a sidecar's node metadata is bounded likewise).
const DRY_RUN_BODY_LIMIT: usize = 256 * 1024;

/// Query of `POST /api/dry-run`.
#[derive(serde::Deserialize)]
struct DryRunQuery {
    /// `text` for the readable diff; JSON otherwise.
    format: Option<String>,
}

/// `POST /api/dry-run` (body: a descriptor, YAML or JSON): what the service's proxies would
/// be sent, compared with what they are sent now. Changes nothing.
async fn dry_run_route(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<DryRunQuery>,
    body: String,
) -> Response {
    let Some(planner) = s.dry_run.clone() else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "this control plane does not translate descriptors for dry runs\n",
        )
            .into_response();
    };
    // Translating a wildcard descriptor is real work: off the async workers.
    let plan = match tokio::task::spawn_blocking(move || planner.plan(&body)).await {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid descriptor: {e}\n"),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("dry run failed: {e}\n"),
            )
                .into_response();
        }
    };
    let proxies = s.status.proxies();
    let callers = match meshplane_model::ServiceName::new(plan.service.clone()) {
        Ok(service) => s
            .traffic
            .recent(tokio::time::Instant::now())
            .callers_of(&service),
        Err(_) => Vec::new(),
    };
    let run = dry_run::DryRun::of(
        plan,
        |key| proxies.iter().filter(|p| &p.stream.group == key).count(),
        &callers,
    );
    match q.format.as_deref() {
        Some("text") => dry_run::render(&run).into_response(),
        _ => Json(run).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use meshplane_registry::{RegistryEvent, SourceId, SourceStatus};

    use super::*;

    #[test]
    fn readiness_says_stale_with_the_reason_and_stays_ready() {
        let (store, mut writer) = meshplane_registry::store();
        let source = SourceId::new("consul");
        let status = |status| RegistryEvent::Status {
            source: source.clone(),
            status,
        };
        assert_eq!(
            readiness(&store.snapshot()).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        writer.apply(RegistryEvent::Replace {
            source: source.clone(),
            services: Default::default(),
        });
        assert_eq!(
            readiness(&store.snapshot()),
            (StatusCode::OK, "ready\n".to_owned())
        );
        writer.apply(status(SourceStatus::Stale {
            reason: "liveness: timed out".into(),
        }));
        let (code, body) = readiness(&store.snapshot());
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains("stale: consul: liveness: timed out"),
            "{body}"
        );
        writer.apply(status(SourceStatus::Synced));
        assert_eq!(
            readiness(&store.snapshot()),
            (StatusCode::OK, "ready\n".to_owned())
        );
    }
}
