//! The Consul-compatible HTTP API: routes, shared state, and the one place that maps errors to
//! HTTP statuses.

mod agent;
mod kv;
mod query;
mod read;
mod render;

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::Catalog,
    decode::DecodeError,
    writer::{Command, OpError},
};

/// Largest accepted request body. Larger bodies get a 400 and nothing is written.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The catalog, read under short locks (never held across `.await`).
    pub catalog: Arc<RwLock<Catalog>>,
    /// The catalog's index, bumped after every durable change; blocking queries wait on it.
    pub index_rx: watch::Receiver<u64>,
    /// The writer's queue.
    pub commands: mpsc::Sender<Command>,
    /// When set, write routes require this token.
    pub token: Option<Arc<str>>,
    /// Our datacenter; queries for another one fail as in Consul.
    pub datacenter: Arc<str>,
    /// What `/v1/status/leader` answers (`host:port`).
    pub leader: Arc<str>,
    /// Cancelled on shutdown; releases blocking queries at once.
    pub shutdown: CancellationToken,
}

/// A Consul-style error: a status and a plain-text message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/agent/service/register", put(agent::register))
        .route("/v1/agent/service/deregister/{id}", put(agent::deregister))
        .route("/v1/agent/check/pass/{id}", put(agent::pass))
        .route("/v1/agent/check/warn/{id}", put(agent::warn))
        .route("/v1/agent/check/fail/{id}", put(agent::fail))
        .route("/v1/agent/check/update/{id}", put(agent::update))
        .route("/v1/agent/self", get(read::agent_self))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/agent/services", get(read::agent_services))
        .route("/v1/agent/checks", get(read::agent_checks))
        .route("/v1/catalog/services", get(read::catalog_services))
        .route("/v1/catalog/service/{name}", get(read::catalog_service))
        .route("/v1/health/service/{name}", get(read::health_service))
        .route("/v1/health/state/{state}", get(read::health_state))
        .route("/v1/catalog/datacenters", get(read::datacenters))
        .route("/v1/status/leader", get(read::leader))
        .route("/v1/status/peers", get(read::peers))
        .with_state(state)
}

// === impl ApiError ===

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let status = match e {
            OpError::UnknownService(_) | OpError::UnknownCheck(_) => StatusCode::NOT_FOUND,
            OpError::NotTtl(_) | OpError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            OpError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            OpError::CasMismatch(_) => StatusCode::CONFLICT,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
