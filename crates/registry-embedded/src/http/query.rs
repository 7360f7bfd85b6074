//! Query parameters (`index`, `wait`, `passing`, `tag`, `dc`, `note`, …), the token check for
//! write routes, and blocking-query waiting.

use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use axum::http::{HeaderMap, StatusCode};
use meshplane_consul_api::duration;
use tokio::time::Instant;

use super::{ApiError, ApiState};
use crate::catalog::Catalog;

/// Consul's default blocking wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// Consul's maximum blocking wait.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// The query parameters the API understands; unknown ones are ignored, as Consul does.
#[derive(Debug, Default)]
pub struct Query {
    pub index: Option<u64>,
    pub wait: Option<Duration>,
    pub passing: bool,
    pub tags: Vec<String>,
    pub dc: Option<String>,
    pub stale: bool,
    pub note: Option<String>,
    pub token: Option<String>,
    pub replace_existing_checks: bool,
    /// `node-meta=key:value` filters (repeatable).
    pub node_meta: Vec<(String, String)>,
}

// === impl Query ===

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Query::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match &*key {
                "index" => {
                    let index = value.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "Invalid index {value:?}: must be a non-negative integer"
                        ))
                    })?;
                    q.index = Some(index);
                }
                "wait" => {
                    let wait = duration::parse(&value).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Invalid wait time {value:?}: use a duration such as \"30s\" or \"5m\""
                        ))
                    })?;
                    q.wait = Some(wait);
                }
                "passing" => q.passing = !matches!(&*value, "false" | "0"),
                "tag" => q.tags.push(value.into_owned()),
                "dc" => q.dc = Some(value.into_owned()).filter(|dc| !dc.is_empty()),
                "stale" => q.stale = true,
                "note" => q.note = Some(value.into_owned()),
                "token" => q.token = Some(value.into_owned()),
                "node-meta" => {
                    let (k, v) = value.split_once(':').ok_or_else(|| {
                        ApiError::bad_request(format!("Invalid node-meta {value:?}: use key:value"))
                    })?;
                    q.node_meta.push((k.to_owned(), v.to_owned()));
                }
                // Consul's filter expressions are a language of their own; answering
                // unfiltered would hand the caller entries it asked to exclude.
                "filter" => {
                    return Err(ApiError::bad_request(
                        "Filter expressions (?filter=) are not supported by Meshplane's embedded \
                         registry: filter on the client side, or use node-meta, tag and passing",
                    ));
                }
                "replace-existing-checks" => {
                    q.replace_existing_checks = !matches!(&*value, "false" | "0");
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// Whether the registry's node passes the `node-meta` filters. The embedded registry is
    /// a single node without metadata: only a query without them matches it.
    pub fn node_matches(&self) -> bool {
        self.node_meta.is_empty()
    }

    /// Fails like Consul when another datacenter is asked for.
    pub fn check_dc(&self, state: &ApiState) -> Result<(), ApiError> {
        match &self.dc {
            Some(dc) if **dc != *state.datacenter => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "No path to datacenter {dc:?}: this registry only serves {:?}",
                    state.datacenter
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The wait of a blocking query: default 5m, at most 10m, plus Consul's random jitter of up
    /// to wait/16 so concurrent watchers do not all wake at once.
    pub fn wait_with_jitter(&self) -> Duration {
        let wait = self.wait.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
        let spread = (wait / 16).as_millis() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            RandomState::new().hash_one(Instant::now()) % spread
        };
        wait + Duration::from_millis(jitter)
    }
}

/// Blocks until `relevant(catalog) > index` or the wait elapses, when the query asked to block
/// (`index` > 0). Returns the relevant index to report in `X-Consul-Index`.
pub async fn block(state: &ApiState, query: &Query, relevant: impl Fn(&Catalog) -> u64) -> u64 {
    // (the relevant index, the catalog's latest index), read under one lock.
    let current = || {
        let catalog = state.catalog.read();
        (relevant(&catalog), catalog.index())
    };
    let Some(min) = query.index.filter(|i| *i > 0) else {
        return current().0;
    };
    let deadline = Instant::now() + query.wait_with_jitter();
    let mut index_rx = state.index_rx.clone();
    loop {
        index_rx.borrow_and_update();
        let (now, latest) = current();
        // An index from the future (the data directory was replaced) cannot be waited for:
        // answer at once so the client sees the lower index and resets, as Consul clients do.
        let from_the_future = min > latest;
        if now > min || from_the_future {
            return now;
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, index_rx.changed()) => match changed {
                Ok(Ok(())) => continue,
                _ => return now,
            },
            () = state.shutdown.cancelled() => return now,
        }
    }
}

/// Write routes need the configured token in `X-Consul-Token`, `Authorization: Bearer` or
/// `?token=`: 401 when none is given, 403 when it is wrong.
pub fn authorize(state: &ApiState, headers: &HeaderMap, query: &Query) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .or(query.token.as_deref())
        .filter(|t| !t.is_empty());
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ACL token required: send it in the X-Consul-Token header or as Authorization: Bearer <token>",
        )),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Permission denied: the ACL token is not valid",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
