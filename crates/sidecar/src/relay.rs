//! The admin relay: the control plane's way to diagnose this sidecar's Envoy.
//!
//! Envoy's admin interface can do anything (quit, drain, change every runtime flag) and stays
//! bound to 127.0.0.1. The relay listens on an address the control plane can reach and
//! forwards exactly five things: the config dump, the stats (JSON), the certificates in use
//! (`/certs`: public details only), reading the log levels and setting the log level. When a token is configured every request must carry it
//! (`Authorization: Bearer`), so the relay is no more open than the control plane's own
//! write routes. Envoy redacts private keys from config dumps; nothing else is exposed.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Log levels Envoy accepts.
const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

#[derive(Clone)]
struct Relay {
    envoy_admin: SocketAddr,
    token: Option<String>,
    client: reqwest::Client,
}

/// Serves the relay on `listener`, forwarding to Envoy's admin on `envoy_admin`, until
/// `shutdown`.
pub async fn serve(
    listener: TcpListener,
    envoy_admin: SocketAddr,
    token: Option<String>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(std::io::Error::other)?;
    let relay = Relay {
        envoy_admin,
        token,
        client,
    };
    let router = Router::new()
        .route("/config_dump", get(config_dump))
        .route("/stats", get(stats))
        .route("/certs", get(certs))
        .route("/logging", get(get_logging).post(set_logging))
        .with_state(relay);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Whether the request carries the token (always true when none is configured).
fn authorized(relay: &Relay, headers: &HeaderMap) -> bool {
    let Some(expected) = &relay.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "the admin relay needs the control plane's token\n",
    )
        .into_response()
}

async fn forward(relay: &Relay, method: reqwest::Method, path: &str) -> Response {
    let url = format!("http://{}{path}", relay.envoy_admin);
    match relay.client.request(method, &url).send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain")
                .to_owned();
            let body = r.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("Envoy's admin interface is not answering: {e}\n"),
        )
            .into_response(),
    }
}

async fn config_dump(State(relay): State<Relay>, headers: HeaderMap) -> Response {
    if authorized(&relay, &headers) {
        forward(&relay, reqwest::Method::GET, "/config_dump").await
    } else {
        unauthorized()
    }
}

async fn stats(State(relay): State<Relay>, headers: HeaderMap) -> Response {
    if authorized(&relay, &headers) {
        forward(&relay, reqwest::Method::GET, "/stats?format=json").await
    } else {
        unauthorized()
    }
}

async fn certs(State(relay): State<Relay>, headers: HeaderMap) -> Response {
    if authorized(&relay, &headers) {
        forward(&relay, reqwest::Method::GET, "/certs").await
    } else {
        unauthorized()
    }
}

async fn get_logging(State(relay): State<Relay>, headers: HeaderMap) -> Response {
    if !authorized(&relay, &headers) {
        return unauthorized();
    }
    // POST without a level is Envoy's documented way to list the levels.
    forward(&relay, reqwest::Method::POST, "/logging").await
}

#[derive(Deserialize)]
struct LevelQuery {
    level: Option<String>,
}

async fn set_logging(
    State(relay): State<Relay>,
    headers: HeaderMap,
    Query(q): Query<LevelQuery>,
) -> Response {
    if !authorized(&relay, &headers) {
        return unauthorized();
    }
    match q.level.filter(|l| LOG_LEVELS.contains(&l.as_str())) {
        Some(level) => {
            forward(
                &relay,
                reqwest::Method::POST,
                &format!("/logging?level={level}"),
            )
            .await
        }
        None => (
            StatusCode::BAD_REQUEST,
            format!("give ?level= one of {}\n", LOG_LEVELS.join(", ")),
        )
            .into_response(),
    }
}
