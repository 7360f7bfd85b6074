//! Serving this datacenter's local state to the others: `GET /api/datacenters/local-state`.
//!
//! - `ETag` is the state's content version; `If-None-Match` with the current version answers
//!   `304 Not Modified` with no body;
//! - `?wait=30s` with `If-None-Match` holds the request until the state changes (answered
//!   `200`) or the wait ends (`304`), so a follower learns a change as it happens without
//!   polling; waits are capped at [`MAX_WAIT`];
//! - `Accept-Encoding: gzip` gets the body compressed (once per state, shared by every
//!   follower);
//! - before the local registry's first full sync the answer is `503`: an empty or partial
//!   state must never reach another datacenter, which keeps what it had.
//!
//! The state is built once per store change and only when asked, shared by every follower.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshplane_registry::Store;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::wire::Export;

/// The route's path.
pub const PATH: &str = "/api/datacenters/local-state";
/// Header naming the answering datacenter.
pub const DATACENTER_HEADER: &str = "x-meshplane-datacenter";
/// Longest `?wait=` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// This control plane's local state, as exported to other datacenters.
pub struct LocalState {
    datacenter: String,
    store: Store,
    current: Mutex<Option<Arc<Export>>>,
}

impl std::fmt::Debug for LocalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalState")
            .field("datacenter", &self.datacenter)
            .finish_non_exhaustive()
    }
}

impl LocalState {
    /// The state of `datacenter` in `store`.
    pub fn new(datacenter: impl Into<String>, store: Store) -> Arc<Self> {
        Arc::new(LocalState {
            datacenter: datacenter.into(),
            store,
            current: Mutex::new(None),
        })
    }

    /// The current export, or `None` before the local registry's first full sync.
    pub fn current(&self) -> Option<Arc<Export>> {
        let snapshot = self.store.snapshot();
        if !snapshot.is_synced() {
            return None;
        }
        let previous = self.current.lock().clone();
        if let Some(p) = &previous
            && p.index == snapshot.index
        {
            return previous;
        }
        let built = Export::build(&self.datacenter, &snapshot);
        // A change elsewhere (another datacenter's instances) keeps the compressed body.
        let export = match previous {
            Some(p) if p.version == built.version => Arc::new(p.reindexed(snapshot.index)),
            _ => Arc::new(built),
        };
        *self.current.lock() = Some(export.clone());
        Some(export)
    }

    /// The export once its version differs from `known`, or the current one after `wait`.
    pub async fn changed(&self, known: &str, wait: Duration) -> Option<Arc<Export>> {
        let mut changes = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            changes.borrow_and_update();
            let current = self.current();
            if current.as_ref().is_some_and(|c| c.version != known) {
                return current;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return current,
            }
        }
    }
}

#[derive(Deserialize)]
struct Params {
    wait: Option<String>,
}

/// The route serving `local`.
pub fn router(local: Arc<LocalState>) -> Router {
    Router::new().route(PATH, get(serve)).with_state(local)
}

async fn serve(
    State(local): State<Arc<LocalState>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let wait = match params
        .wait
        .as_deref()
        .map(meshplane_model::descriptor::parse_duration)
    {
        None => Duration::ZERO,
        Some(Ok(wait)) => wait.min(MAX_WAIT),
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("wait: {e}\n")).into_response(),
    };
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let export = match &known {
        Some(known) if !wait.is_zero() => local.changed(known, wait).await,
        _ => local.current(),
    };
    let Some(export) = export else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the local registry has not finished its first sync\n",
        )
            .into_response();
    };
    let etag = HeaderValue::from_str(&format!("\"{}\"", export.version))
        .unwrap_or(HeaderValue::from_static("\"\""));
    let datacenter =
        HeaderValue::from_str(&local.datacenter).unwrap_or(HeaderValue::from_static(""));
    if known.as_deref() == Some(export.version.as_str()) {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (HeaderName::from_static(DATACENTER_HEADER), datacenter),
            ],
        )
            .into_response();
    }
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut response = if gzip {
        let mut r = export.gzip().into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        export.json.clone().into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ETAG, etag);
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(DATACENTER_HEADER, datacenter);
    response
}
