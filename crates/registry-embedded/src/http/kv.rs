//! `/v1/kv/:key`: Consul's key/value API on the registry's database. Reads are open like the
//! other reads and block on the key/value index; writes need the token and are answered
//! `true` once durable, `false` when a `cas` index no longer matches.

use axum::{
    Json,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde::Serialize;

use super::{
    ApiError, ApiState,
    agent::{read_body, submit},
    query::{Query, authorize, block},
    read::blocking_response,
};
use crate::{catalog::Catalog, kv::KvEntry, writer::Op};

/// The parameters of the KV routes beyond the common ones.
#[derive(Debug, Default)]
struct KvQuery {
    raw: bool,
    recurse: bool,
    keys: bool,
    cas: Option<u64>,
    flags: u64,
}

fn kv_query(raw: Option<&str>) -> Result<KvQuery, ApiError> {
    let mut q = KvQuery::default();
    let number = |name: &str, value: &str| {
        value.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid {name} {value:?}: must be a non-negative integer"
            ))
        })
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*key {
            "raw" => q.raw = true,
            "recurse" => q.recurse = true,
            "keys" => q.keys = true,
            "cas" => q.cas = Some(number("cas", &value)?),
            "flags" => q.flags = number("flags", &value)?,
            // Locks need sessions, which this registry does not have: writing anyway would
            // let two holders believe they hold the lock.
            "acquire" | "release" => {
                return Err(ApiError::bad_request(format!(
                    "`{key}` needs a session; Meshplane's embedded registry has no sessions or locks: use cas"
                )));
            }
            _ => {}
        }
    }
    Ok(q)
}

/// A KV entry in Consul's JSON shape.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    create_index: u64,
    modify_index: u64,
}

fn entry(e: &KvEntry) -> Entry<'_> {
    Entry {
        lock_index: 0,
        key: &e.key,
        flags: e.flags,
        value: (!e.value.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
        create_index: e.create_index,
        modify_index: e.modify_index,
    }
}

pub async fn get(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref())?;
    query.check_dc(&state)?;
    let kv = kv_query(raw.as_deref())?;
    let index = block(&state, &query, Catalog::kv_index).await;
    let catalog = state.catalog.read();
    if kv.recurse || kv.keys {
        let found: Vec<&KvEntry> = catalog.kv_prefix(&key).collect();
        if found.is_empty() {
            drop(catalog);
            return Ok(not_found(index, &query));
        }
        let response = if kv.keys {
            let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
            blocking_response(index, &query, keys)
        } else {
            let entries: Vec<Entry<'_>> = found.into_iter().map(entry).collect();
            blocking_response(index, &query, entries)
        };
        return Ok(response);
    }
    let Some(found) = catalog.kv_get(&key) else {
        drop(catalog);
        return Ok(not_found(index, &query));
    };
    if kv.raw {
        let mut response = blocking_response(index, &query, ());
        *response.body_mut() = Body::from(found.value.clone());
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(response);
    }
    Ok(blocking_response(index, &query, [entry(found)]))
}

/// Consul's answer for a missing key: 404, empty, with the index to block on next.
fn not_found(index: u64, query: &Query) -> Response {
    let mut response = blocking_response(index, query, ());
    *response.status_mut() = StatusCode::NOT_FOUND;
    *response.body_mut() = Body::empty();
    response
}

pub async fn put(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref())?;
    authorize(&state, &headers, &query)?;
    let kv = kv_query(raw.as_deref())?;
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let value = read_body(body).await?;
    if value.len() > crate::kv::MAX_VALUE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Value exceeds {} byte limit", crate::kv::MAX_VALUE_BYTES),
        ));
    }
    let op = Op::KvPut {
        key,
        value: value.to_vec(),
        flags: kv.flags,
        cas: kv.cas,
    };
    written(submit(&state, op).await)
}

pub async fn delete(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref())?;
    authorize(&state, &headers, &query)?;
    let kv = kv_query(raw.as_deref())?;
    if kv.recurse && kv.cas.is_some() {
        return Err(ApiError::bad_request(
            "Conflicting flags: cas cannot be used with recurse",
        ));
    }
    let op = Op::KvDelete {
        key,
        recurse: kv.recurse,
        cas: kv.cas,
    };
    written(submit(&state, op).await)
}

/// `true` once durable; `false` for a `cas` that no longer matched; errors as elsewhere.
fn written(outcome: Result<(), ApiError>) -> Result<Response, ApiError> {
    match outcome {
        Ok(()) => Ok(Json(true).into_response()),
        Err(e) if e.status == StatusCode::CONFLICT => Ok(Json(false).into_response()),
        Err(e) => Err(e),
    }
}
