//! Serving this datacenter's local state to the others: `GET /api/datacenters/local-state`.
//!
//! - `ETag` is the state's content version; `If-None-Match` with the current version answers
//!   `304 Not Modified` with no body;
//! - `?wait=30s` with `If-None-Match` holds the request until the state changes (answered
//!   `200`) or the wait ends (`304`), so a follower learns a change as it happens without
//!   polling; waits are capped at [`MAX_WAIT`];
//! - `If-None-Match` with an older version this control plane still remembers (the last
//!   [`HISTORY`] states) is answered with the changes since it (`"since"`, the changed
//!   services in full, `"removed"`), so a follower's cost follows what changed, not the size
//!   of the datacenter; an unknown version gets the full state;
//! - `Accept-Encoding: gzip` gets the body compressed (the full state once per state, shared
//!   by every follower);
//! - before the local registry's first full sync the answer is `503`: an empty or partial
//!   state must never reach another datacenter, which keeps what it had.
//!
//! The state is built once per store change and only when asked, re-encoding only the services
//! that changed, and shared by every follower.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshplane_registry::Store;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::status::Followed;

use crate::wire::Export;

/// The route's path.
pub const PATH: &str = "/api/datacenters/local-state";
/// Header naming the answering datacenter.
pub const DATACENTER_HEADER: &str = "x-meshplane-datacenter";
/// Longest `?wait=` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How many past states are remembered to answer with changes since them.
pub const HISTORY: usize = 64;
/// Change sets at least this large are gzip-compressed when the follower accepts it.
const GZIP_CHANGES_FROM: usize = 16 << 10;

/// This control plane's local state, as exported to other datacenters.
pub struct LocalState {
    datacenter: String,
    store: Store,
    /// The latest states, newest last; the last one is current.
    history: Mutex<VecDeque<Arc<Export>>>,
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
            history: Mutex::new(VecDeque::new()),
        })
    }

    /// The current export, or `None` before the local registry's first full sync.
    pub fn current(&self) -> Option<Arc<Export>> {
        let snapshot = self.store.snapshot();
        if !snapshot.is_synced() {
            return None;
        }
        let previous = self.history.lock().back().cloned();
        if let Some(p) = &previous
            && p.index == snapshot.index
        {
            return previous;
        }
        let built = Arc::new(Export::build(
            &self.datacenter,
            &snapshot,
            previous.as_deref(),
        ));
        let mut history = self.history.lock();
        // Another request may have built a newer one meanwhile.
        if history.back().is_some_and(|b| b.index >= built.index) {
            return history.back().cloned();
        }
        // A change elsewhere (another datacenter's instances) leaves the state as it was: the
        // new entry serves the remembered one's bodies under the new index.
        if let Some(same) = history
            .back()
            .filter(|b| b.version == built.version)
            .cloned()
        {
            built.keep_bodies_of(&same);
            history.pop_back();
        }
        history.push_back(built.clone());
        while history.len() > HISTORY {
            history.pop_front();
        }
        Some(built)
    }

    /// A remembered state of that version.
    fn remembered(&self, version: &str) -> Option<Arc<Export>> {
        self.history
            .lock()
            .iter()
            .rev()
            .find(|e| e.version == version)
            .cloned()
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

/// Where this control plane's view of every datacenter is served.
pub const DATACENTERS_PATH: &str = "/api/datacenters";

/// The routes: `local`'s export, and the datacenters this control plane follows.
pub fn router(local: Arc<LocalState>, followed: Followed) -> Router {
    let datacenter = local.datacenter.clone();
    Router::new()
        .route(PATH, get(serve))
        .with_state(local)
        .route(
            DATACENTERS_PATH,
            get(move || {
                let view = DatacentersView {
                    datacenter: datacenter.clone(),
                    remote: followed.views(),
                };
                async move { axum::Json(view) }
            }),
        )
}

/// `GET /api/datacenters`.
#[derive(Debug, Serialize)]
struct DatacentersView {
    /// This control plane's datacenter.
    datacenter: String,
    /// Every datacenter it follows.
    remote: Vec<crate::status::DatacenterView>,
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
    let changes = known
        .as_deref()
        .and_then(|k| local.remembered(k))
        .and_then(|older| export.changes_since(&older));
    let (body, compressed) = match (changes, gzip) {
        (Some(changes), true) if changes.len() >= GZIP_CHANGES_FROM => {
            (crate::wire::gzip(&changes), true)
        }
        (Some(changes), _) => (changes, false),
        (None, true) => (export.gzip(), true),
        (None, false) => (export.json(), false),
    };
    let mut response = body.into_response();
    if compressed {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    finish(response, etag, datacenter)
}

fn finish(mut response: Response, etag: HeaderValue, datacenter: HeaderValue) -> Response {
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
