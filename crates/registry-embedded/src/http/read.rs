//! Read routes: catalog, health, agent listings and status. Per-service reads block on that
//! service's index; `/v1/catalog/services` blocks on registrations and deregistrations,
//! `/v1/health/state/:state` on any change.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};
use meshplane_consul_api::{
    AgentService, CatalogService, CatalogServices, HealthCheck, ServiceEntry,
};
use serde::Serialize;

use super::{
    ApiError, ApiState,
    query::{Query, block},
    render,
};
use crate::{catalog::Catalog, registration::Registration};

type ApiResult = Result<Response, ApiError>;

pub async fn catalog_services(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let query = Query::parse(raw.as_deref())?;
    query.check_dc(&state)?;
    let index = block(&state, &query, Catalog::services_index).await;
    let body: CatalogServices = read(&state, |c| {
        c.services()
            .into_iter()
            .filter(|_| query.node_matches())
            .map(|(name, tags)| {
                let tags = tags.into_iter().map(str::to_owned).collect();
                (name.to_string(), Some(tags))
            })
            .collect()
    });
    Ok(blocking_response(index, &query, body))
}

pub async fn catalog_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = Query::parse(raw.as_deref())?;
    query.check_dc(&state)?;
    let index = block(&state, &query, |c| c.name_index(&name)).await;
    let body = read(&state, |c| {
        c.instances(&name)
            .filter(|r| query.node_matches() && has_tags(r, &query.tags))
            .map(|r| render::catalog_entry(r, c.node()))
            .collect::<Vec<CatalogService>>()
    });
    Ok(blocking_response(index, &query, body))
}

pub async fn health_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = Query::parse(raw.as_deref())?;
    query.check_dc(&state)?;
    let index = block(&state, &query, |c| c.name_index(&name)).await;
    let body = read(&state, |c| {
        c.instances(&name)
            .filter(|r| query.node_matches() && has_tags(r, &query.tags))
            .filter(|r| {
                !query.passing
                    || r.checks
                        .iter()
                        .all(|ch| ch.status == meshplane_model::Health::Passing)
            })
            .map(|r| render::health_entry(r, c.node()))
            .collect::<Vec<ServiceEntry>>()
    });
    Ok(blocking_response(index, &query, body))
}

/// `GET /v1/health/state/:state`: every check (the node's and each instance's) in `state`
/// (`any`, `passing`, `warning` or `critical`), blocking on any change to the catalog, as
/// Consul blocks it on its checks. Change detectors watch `any`.
pub async fn health_state(
    State(state): State<ApiState>,
    Path(wanted): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    use meshplane_consul_api::health::status;
    let query = Query::parse(raw.as_deref())?;
    query.check_dc(&state)?;
    if !matches!(
        wanted.as_str(),
        "any" | status::PASSING | status::WARNING | status::CRITICAL
    ) {
        return Err(ApiError::bad_request(format!(
            "Invalid state `{wanted}`: one of any, passing, warning, critical"
        )));
    }
    let index = block(&state, &query, Catalog::index).await;
    // Written straight from the catalog under the read lock ([`render::CheckJson`]): this
    // answer holds every check of the datacenter, and change detectors read it on every change.
    let body = read(&state, |c| {
        let node = c.node();
        let serf = render::serf_health(node);
        let entries: Vec<StateEntry<'_>> = std::iter::once(StateEntry::Node(&serf))
            .filter(|_| wanted == "any" || serf.status == wanted)
            .chain(c.registrations().flat_map(|reg| {
                reg.checks
                    .iter()
                    .map(move |check| render::CheckJson { check, reg, node })
                    .filter(|ch| wanted == "any" || ch.status() == wanted)
                    .map(StateEntry::Service)
            }))
            .collect();
        serde_json::to_vec(&entries)
    })
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render checks: {e}"),
        )
    })?;
    let json = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    );
    Ok(blocking_headers(index, &query, json.into_response()))
}

/// One element of `/v1/health/state/:state`: the node's check, or an instance's.
#[derive(Serialize)]
#[serde(untagged)]
enum StateEntry<'a> {
    Node(&'a HealthCheck),
    Service(render::CheckJson<'a>),
}

pub async fn agent_services(State(state): State<ApiState>) -> ApiResult {
    let body: BTreeMap<String, AgentService> = read(&state, |c| {
        c.registrations()
            .map(|r| (r.service.id.to_string(), render::service(r, c.node())))
            .collect()
    });
    Ok(Json(body).into_response())
}

pub async fn agent_checks(State(state): State<ApiState>) -> ApiResult {
    let body: BTreeMap<String, HealthCheck> = read(&state, |c| {
        c.registrations()
            .flat_map(|r| {
                r.checks
                    .iter()
                    .map(move |ch| (ch.id.clone(), render::check(ch, r, c.node())))
            })
            .collect()
    });
    Ok(Json(body).into_response())
}

pub async fn datacenters(State(state): State<ApiState>) -> Response {
    Json([&*state.datacenter]).into_response()
}

/// `/v1/agent/self`: the agent's configuration and membership, as far as clients read them
/// (Prometheus's Consul discovery takes `Config.Datacenter` from it). `Config.Version` is
/// Meshplane's version: this is not a Consul agent.
pub async fn agent_self(State(state): State<ApiState>) -> Response {
    let node = state.catalog.read().node().clone();
    let (host, port) = state
        .leader
        .rsplit_once(':')
        .map_or((node.address.as_str(), "0"), |(h, p)| (h, p));
    let body = serde_json::json!({
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.id,
            "Server": true,
            "Revision": "meshplane",
            "Version": env!("CARGO_PKG_VERSION"),
        },
        "Member": {
            "Name": node.name,
            "Addr": host.trim_start_matches('[').trim_end_matches(']'),
            "Port": port.parse::<u16>().unwrap_or_default(),
            "Tags": { "dc": node.datacenter, "role": "consul" },
            "Status": 1,
        },
        "Meta": {},
    });
    with_consul_headers(Json(body).into_response())
}

pub async fn leader(State(state): State<ApiState>) -> Response {
    with_consul_headers(Json(&*state.leader).into_response())
}

pub async fn peers(State(state): State<ApiState>) -> Response {
    with_consul_headers(Json([&*state.leader]).into_response())
}

fn read<T>(state: &ApiState, f: impl FnOnce(&Catalog) -> T) -> T {
    f(&state.catalog.read())
}

/// Consul's `tag` filter: every requested tag must be present.
fn has_tags(reg: &Registration, tags: &[String]) -> bool {
    tags.iter().all(|t| reg.service.tags.contains(t))
}

pub(super) fn blocking_response(index: u64, query: &Query, body: impl Serialize) -> Response {
    blocking_headers(index, query, Json(body).into_response())
}

/// Adds a blocking query's headers (`X-Consul-Index`, consistency) to `response`.
fn blocking_headers(index: u64, query: &Query, response: Response) -> Response {
    let mut response = with_consul_headers(response);
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-consul-index"),
        HeaderValue::from(index.max(1)),
    );
    let consistency = if query.stale { "stale" } else { "leader" };
    headers.insert(
        HeaderName::from_static("x-consul-effective-consistency"),
        HeaderValue::from_static(consistency),
    );
    response
}

fn with_consul_headers(mut response: Response) -> Response {
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-consul-knownleader"),
        HeaderValue::from_static("true"),
    );
    headers.insert(
        HeaderName::from_static("x-consul-lastcontact"),
        HeaderValue::from_static("0"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}
