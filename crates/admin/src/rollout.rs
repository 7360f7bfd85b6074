//! The egress rollout flags routes: the document (`GET`/`PUT /api/rollout`, versioned with an
//! ETag and `If-Match`), its audit log, and one instance's decisions with long polling (what
//! each sidecar follows and serves to its app). Storage is `meshplane-rollout-store`'s
//! handle; this module only speaks HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshplane_model::ServiceName;
use meshplane_rollout::{Decisions, Flags, InstanceInfo};
use meshplane_rollout_store::{Actor, RolloutStore, StoreError, Versioned, WriteError};
use serde::Serialize;

use crate::AdminState;
use crate::auth::{bearer, require_token};
use crate::relay::ApiError;

/// The header naming who makes a change, for the audit log.
pub const ACTOR_HEADER: &str = "x-meshplane-actor";
/// Longest accepted `?wait=` (longer waits are shortened to it).
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Largest accepted flags document.
pub(crate) const MAX_FLAGS_BODY: usize = 1024 * 1024;

fn store(s: &AdminState) -> Result<&RolloutStore, ApiError> {
    s.rollout.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "egress rollout flags are kept in a key/value store: run the control plane with --registry embedded or --registry consul (--registry file has none)",
        )
    })
}

fn unavailable(e: StoreError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn document(v: &Versioned) -> Response {
    let mut resp = Json(v).into_response();
    resp.headers_mut().insert(header::ETAG, etag(v.version));
    resp
}

/// `GET /api/rollout`: the document and its version (also the ETag).
pub(crate) async fn get(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let current = store(&s)?.current().await.map_err(unavailable)?;
    Ok(document(&current))
}

/// `PUT /api/rollout`: replaces the whole document (JSON or YAML), validated first; with
/// `If-Match: "<version>"` only if it is still that version (412 otherwise).
pub(crate) async fn put(
    State(s): State<AdminState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_token(&s, &headers)?;
    let store = store(&s)?;
    let flags = parse_document(&body)?;
    let expected = if_match(&headers)?;
    let actor = Actor {
        name: actor_name(&s, &headers),
        remote_address: extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.to_string()),
    };
    match store.write(flags, expected, actor).await {
        Ok(written) => Ok(document(&written)),
        Err(e @ WriteError::Stale { .. }) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            e.to_string(),
        )),
        Err(WriteError::Store(e)) => Err(unavailable(e)),
    }
}

/// The body as a checked flags document, or a 400 naming the field.
fn parse_document(body: &[u8]) -> Result<Flags, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let text = std::str::from_utf8(body).map_err(|_| bad("flags: the body is not UTF-8".into()))?;
    // JSON is YAML; YAML's parser gives the clearer message for either.
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_norway::from_str(text)
            .map_err(|e| bad(format!("flags: not a JSON or YAML document: {e}")))?,
    };
    Flags::from_json(value).map_err(|e| bad(e.to_string()))
}

/// `If-Match: "<version>"` (or `*`, any version).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "If-Match: expected the document's ETag, e.g. \"42\" (from GET /api/rollout), got {text:?}"
                ),
            )
        })
}

/// Who makes a change: the name the caller gives, else whether it used the token.
fn actor_name(s: &AdminState, headers: &HeaderMap) -> String {
    let given = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match given {
        Some(name) => name.chars().take(200).collect(),
        None if s.token.is_some() && bearer(headers).is_some() => "token".to_owned(),
        None => "anonymous".to_owned(),
    }
}

/// `GET /api/rollout/audit`: every change, oldest first.
pub(crate) async fn audit(State(s): State<AdminState>) -> Result<Response, ApiError> {
    let entries = store(&s)?.audit().await.map_err(unavailable)?;
    Ok(Json(entries).into_response())
}

/// One instance's decisions, as the decisions route answers them.
#[derive(Debug, Serialize)]
struct InstanceDecisions<'a> {
    service: &'a str,
    instance: &'a str,
    datacenter: &'a str,
    tags: &'a [String],
    #[serde(flatten)]
    decisions: Decisions,
}

/// What the decisions route is asked.
#[derive(Debug, Default)]
struct DecisionsQuery {
    service: Option<ServiceName>,
    instance: String,
    datacenter: String,
    tags: Vec<String>,
    dependencies: Vec<String>,
    wait: Option<Duration>,
}

fn decisions_query(raw: Option<&str>) -> Result<DecisionsQuery, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let mut q = DecisionsQuery::default();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*key {
            "service" => {
                q.service = Some(
                    ServiceName::new(value.as_ref()).map_err(|e| bad(format!("service: {e}")))?,
                );
            }
            "instance" => q.instance = value.into_owned(),
            "datacenter" => q.datacenter = value.into_owned(),
            "tag" => q.tags.push(value.into_owned()),
            "dependency" => q.dependencies.push(value.into_owned()),
            "wait" => {
                let wait = meshplane_model::descriptor::parse_duration(&value)
                    .map_err(|e| bad(format!("wait: {e}")))?;
                q.wait = Some(wait.min(MAX_WAIT));
            }
            _ => {}
        }
    }
    if q.service.is_none() {
        return Err(bad("service: required (the calling service's name)".into()));
    }
    Ok(q)
}

/// The body and ETag of `q`'s decisions under `flags`. The ETag is the body's hash, so a
/// change elsewhere in the document leaves this instance's long poll waiting.
fn render(flags: &Flags, q: &DecisionsQuery, service: &ServiceName) -> (Vec<u8>, String) {
    let instance = InstanceInfo {
        id: &q.instance,
        datacenter: &q.datacenter,
        tags: &q.tags,
    };
    let mut dependencies: Vec<&str> = q.dependencies.iter().map(String::as_str).collect();
    if let Some(s) = flags.services.get(service) {
        dependencies.extend(s.dependencies.keys().map(String::as_str));
    }
    dependencies.sort_unstable();
    dependencies.dedup();
    let body = InstanceDecisions {
        service: service.as_str(),
        instance: &q.instance,
        datacenter: &q.datacenter,
        tags: &q.tags,
        decisions: flags.decisions(service, dependencies, &instance),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let tag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(&bytes));
    (bytes, tag)
}

/// `GET /api/rollout/decisions?service=&instance=&datacenter=&tag=…&dependency=…`: one
/// instance's decision per dependency (those named in the query and in the document) and its
/// default, with an ETag; with `If-None-Match` and `?wait=`, answered when they differ from
/// that ETag, or `304` when the wait ends first.
pub(crate) async fn decisions(
    State(s): State<AdminState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = decisions_query(raw.as_deref())?;
    let service = q
        .service
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "service: required"))?;
    let store = store(&s)?;
    let mut current_rx = store.subscribe();
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = tokio::time::Instant::now() + q.wait.unwrap_or(Duration::ZERO);
    loop {
        let current: Option<Arc<Versioned>> = current_rx.borrow_and_update().clone();
        if let Some(current) = current {
            let (body, tag) = render(&current.flags, &q, &service);
            if known.as_deref() != Some(tag.as_str()) {
                return Ok(answer(StatusCode::OK, body, &tag));
            }
            if q.wait.is_none() {
                return Ok(answer(StatusCode::NOT_MODIFIED, Vec::new(), &tag));
            }
        }
        tokio::select! {
            () = store.stopped() => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the control plane is shutting down"));
            }
            changed = current_rx.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the control plane is shutting down"));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return match known {
                    Some(tag) if current_rx.borrow().is_some() => {
                        Ok(answer(StatusCode::NOT_MODIFIED, Vec::new(), &tag))
                    }
                    _ => Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the rollout flags have not been read from the key/value store yet; retry",
                    )),
                };
            }
        }
    }
}

fn answer(status: StatusCode, body: Vec<u8>, tag: &str) -> Response {
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, v);
    }
    if status == StatusCode::OK {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_query_reads_repeated_tags_and_dependencies_and_caps_wait() {
        let q = decisions_query(Some(
            "service=orders&instance=o-1&datacenter=dc2&tag=canary&tag=blue&dependency=payments&wait=1h",
        ))
        .expect("valid");
        assert_eq!(q.service.as_ref().map(ServiceName::as_str), Some("orders"));
        assert_eq!(q.tags, ["canary", "blue"]);
        assert_eq!(q.dependencies, ["payments"]);
        assert_eq!(q.wait, Some(MAX_WAIT));
        let e = decisions_query(Some("instance=o-1")).expect_err("no service");
        assert!(format!("{e:?}").contains("service"), "{e:?}");
        let e = decisions_query(Some("service=orders&wait=soon")).expect_err("bad wait");
        assert!(format!("{e:?}").contains("wait"), "{e:?}");
    }

    #[test]
    fn if_match_takes_the_etag_or_star() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).ok(), Some(None));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"42\""));
        assert_eq!(if_match(&h).ok(), Some(Some(42)));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h).ok(), Some(None));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert!(if_match(&h).is_err());
    }
}
