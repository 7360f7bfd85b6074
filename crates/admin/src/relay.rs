//! Diagnosing a sidecar through the control plane: config dump, stats, traffic summary and
//! log level, fetched from the sidecar's admin relay.
//!
//! Envoy's own admin interface stays on 127.0.0.1 of its host. Each sidecar runs a small relay
//! (`meshplane sidecar --admin-relay-addr`) that forwards only these reads and the log-level
//! write, requires the control plane's token when one is configured, and advertises its address
//! in the node metadata. The control plane looks the address up by node id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AdminState;

/// Where each connected proxy's admin relay listens, by node id.
pub trait ProxyDirectory: Send + Sync + std::fmt::Debug {
    /// The relay address advertised by the proxy with this node id.
    fn relay_addr(&self, node_id: &str) -> Option<SocketAddr>;
}

/// Log levels Envoy accepts.
pub const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
];

/// An admin API error: a status and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, message)
}

struct Relay {
    base: String,
    client: reqwest::Client,
    token: Option<Arc<str>>,
}

fn relay_for(s: &AdminState, id: &str) -> Result<Relay, ApiError> {
    if !s.status.proxies().iter().any(|p| p.stream.node_id == id) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no connected proxy `{id}`"),
        ));
    }
    let addr = s.directory.relay_addr(id).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("proxy `{id}` advertises no admin relay (start it with `meshplane sidecar`)"),
        )
    })?;
    Ok(Relay {
        base: format!("http://{addr}"),
        client: s.http.clone(),
        token: s.token.clone(),
    })
}

impl Relay {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::Response, ApiError> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "cannot reach the sidecar's admin relay at {}: {e}",
                    self.base
                ),
            )
        })?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(error(
                StatusCode::BAD_GATEWAY,
                format!("sidecar relay answered {status}: {}", body.trim()),
            ));
        }
        Ok(response)
    }

    async fn json(&self, path: &str) -> Result<Value, ApiError> {
        self.send(reqwest::Method::GET, path)
            .await?
            .json()
            .await
            .map_err(|e| {
                error(
                    StatusCode::BAD_GATEWAY,
                    format!("sidecar relay sent invalid JSON: {e}"),
                )
            })
    }
}

fn json_response(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

pub(crate) async fn config_dump(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match relay_for(&s, &id) {
        Ok(relay) => relay
            .json("/config_dump")
            .await
            .map(json_response)
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn stats(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match relay_for(&s, &id) {
        Ok(relay) => relay
            .json("/stats")
            .await
            .map(json_response)
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

/// One certificate a proxy's Envoy uses (public details from Envoy's `/certs`).
#[derive(Debug, Serialize, PartialEq)]
pub struct CertSummary {
    /// `identity` (the proxy's own chain) or `trust` (a CA it verifies peers with).
    pub role: &'static str,
    /// URI SANs (SPIFFE ids) of the certificate.
    pub uris: Vec<String>,
    /// Serial number (hex, as Envoy prints it).
    pub serial: String,
    /// Expiry, as Envoy prints it (RFC 3339).
    pub expires: String,
    /// Whole days left.
    pub days_until_expiration: Option<u64>,
}

/// Distinct certificates in Envoy's `/certs` output, own identity first.
pub fn summarise_certs(certs: &Value) -> Vec<CertSummary> {
    let mut out: Vec<CertSummary> = Vec::new();
    let contexts = certs
        .get("certificates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (role, key) in [("identity", "cert_chain"), ("trust", "ca_cert")] {
        for c in contexts
            .iter()
            .filter_map(|ctx| ctx.get(key).and_then(Value::as_array))
            .flatten()
        {
            let serial = c
                .get("serial_number")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if out.iter().any(|o| o.role == role && o.serial == serial) {
                continue;
            }
            let uris = c
                .get("subject_alt_names")
                .and_then(Value::as_array)
                .map(|sans| {
                    sans.iter()
                        .filter_map(|s| s.get("uri").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.push(CertSummary {
                role,
                uris,
                serial,
                expires: c
                    .get("expiration_time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                days_until_expiration: c
                    .get("days_until_expiration")
                    .and_then(|d| d.as_u64().or_else(|| d.as_str()?.parse().ok())),
            });
        }
    }
    out
}

/// `/api/proxies/:id/certs`: the certificates the proxy's Envoy uses (never a key).
pub(crate) async fn certs(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match relay_for(&s, &id) {
        Ok(relay) => relay
            .json("/certs")
            .await
            .map(|v| Json(summarise_certs(&v)).into_response())
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

/// Cumulative traffic of one listener.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Traffic {
    /// Requests received.
    pub requests: u64,
    /// 5xx responses sent.
    pub errors_5xx: u64,
    /// Median request time, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile request time, ms.
    pub p99_ms: Option<f64>,
}

/// `/api/proxies/:id/traffic`.
#[derive(Debug, Serialize)]
pub struct TrafficSample {
    /// When the sample was taken (Unix ms).
    pub at_ms: u64,
    /// The ingress listener.
    pub ingress: Traffic,
    /// The egress listener.
    pub egress: Traffic,
}

/// Summarises Envoy's `/stats?format=json` for one HTTP connection manager prefix.
pub fn summarise(stats: &Value, prefix: &str) -> Traffic {
    let mut t = Traffic::default();
    let Some(entries) = stats.get("stats").and_then(Value::as_array) else {
        return t;
    };
    for e in entries {
        match (
            e.get("name").and_then(Value::as_str),
            e.get("value").and_then(Value::as_u64),
        ) {
            (Some(n), Some(v)) if n == format!("http.{prefix}.downstream_rq_total") => {
                t.requests = v
            }
            (Some(n), Some(v)) if n == format!("http.{prefix}.downstream_rq_5xx") => {
                t.errors_5xx = v
            }
            _ => {}
        }
        let Some(h) = e.get("histograms") else {
            continue;
        };
        let supported: Vec<f64> = h
            .get("supported_quantiles")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let wanted = format!("http.{prefix}.downstream_rq_time");
        let Some(q) = h
            .get("computed_quantiles")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|q| q.get("name").and_then(Value::as_str) == Some(wanted.as_str()))
            })
        else {
            continue;
        };
        let values = q
            .get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let at = |p: f64| {
            let i = supported
                .iter()
                .position(|s| (*s - p).abs() < f64::EPSILON)?;
            values.get(i)?.get("cumulative")?.as_f64()
        };
        t.p50_ms = at(50.0);
        t.p99_ms = at(99.0);
    }
    t
}

pub(crate) async fn traffic(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    let relay = match relay_for(&s, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match relay.json("/stats").await {
        Ok(stats) => {
            let at_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            Json(TrafficSample {
                at_ms,
                ingress: summarise(&stats, "ingress"),
                egress: summarise(&stats, "egress"),
            })
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn logging(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    let relay = match relay_for(&s, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match relay.send(reqwest::Method::GET, "/logging").await {
        Ok(r) => r.text().await.unwrap_or_default().into_response(),
        Err(e) => e.into_response(),
    }
}

/// `?level=`.
#[derive(Debug, Deserialize)]
pub(crate) struct LevelQuery {
    level: Option<String>,
}

pub(crate) async fn set_logging(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LevelQuery>,
) -> Response {
    if let Err(e) = crate::auth::require_token(&s, &headers) {
        return e.into_response();
    }
    let Some(level) = q.level.filter(|l| LOG_LEVELS.contains(&l.as_str())) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("give ?level= one of {}", LOG_LEVELS.join(", ")),
        )
        .into_response();
    };
    let relay = match relay_for(&s, &id) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    tracing::info!(proxy = %id, %level, "changing proxy log level");
    match relay
        .send(reqwest::Method::POST, &format!("/logging?level={level}"))
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default().into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_envoy_stats_json() {
        let stats = serde_json::json!({"stats": [
            {"name": "http.ingress.downstream_rq_total", "value": 42},
            {"name": "http.ingress.downstream_rq_5xx", "value": 3},
            {"name": "http.egress.downstream_rq_total", "value": 7},
            {"histograms": {
                "supported_quantiles": [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100],
                "computed_quantiles": [{"name": "http.ingress.downstream_rq_time", "values": [
                    {"cumulative": 0}, {"cumulative": 1}, {"cumulative": 2.5}, {"cumulative": 3},
                    {"cumulative": 4}, {"cumulative": 5}, {"cumulative": 9.5}, {"cumulative": 10},
                    {"cumulative": 11}, {"cumulative": 12}]}]}}
        ]});
        assert_eq!(
            summarise(&stats, "ingress"),
            Traffic {
                requests: 42,
                errors_5xx: 3,
                p50_ms: Some(2.5),
                p99_ms: Some(9.5)
            }
        );
        assert_eq!(summarise(&stats, "egress").requests, 7);
    }
}
