//! Write routes under `/v1/agent`: each is authorized, decoded and validated completely, then
//! queued to the writer, and answered only once the change is durable.

use axum::{
    body::{Body, to_bytes},
    extract::{Path, RawQuery, State},
    http::HeaderMap,
};
use meshplane_model::Health;
use tokio::sync::oneshot;

use super::{
    ApiError, ApiState, MAX_BODY_BYTES,
    query::{Query, authorize},
};
use crate::{
    decode::{decode_check_update, decode_register},
    writer::{Command, Op, OpError},
};

pub async fn register(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<(), ApiError> {
    let query = Query::parse(raw.as_deref())?;
    authorize(&state, &headers, &query)?;
    let request = decode_register(&read_body(body).await?)?;
    submit(
        &state,
        Op::Register {
            request,
            replace_existing_checks: query.replace_existing_checks,
        },
    )
    .await
}

pub async fn deregister(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<(), ApiError> {
    let query = Query::parse(raw.as_deref())?;
    authorize(&state, &headers, &query)?;
    submit(&state, Op::Deregister(id)).await
}

pub async fn pass(
    state: State<ApiState>,
    headers: HeaderMap,
    id: Path<String>,
    raw: RawQuery,
) -> Result<(), ApiError> {
    ttl_update(state, headers, id, raw, Health::Passing).await
}

pub async fn warn(
    state: State<ApiState>,
    headers: HeaderMap,
    id: Path<String>,
    raw: RawQuery,
) -> Result<(), ApiError> {
    ttl_update(state, headers, id, raw, Health::Warning).await
}

pub async fn fail(
    state: State<ApiState>,
    headers: HeaderMap,
    id: Path<String>,
    raw: RawQuery,
) -> Result<(), ApiError> {
    ttl_update(state, headers, id, raw, Health::Critical).await
}

/// `PUT /v1/agent/check/update/:id` with `{"Status", "Output"}`: the body-based form of
/// pass/warn/fail.
pub async fn update(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(check_id): Path<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Result<(), ApiError> {
    let query = Query::parse(raw.as_deref())?;
    authorize(&state, &headers, &query)?;
    let (status, output) = decode_check_update(&read_body(body).await?)?;
    submit(
        &state,
        Op::TtlUpdate {
            check_id,
            status,
            output,
        },
    )
    .await
}

async fn ttl_update(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(check_id): Path<String>,
    RawQuery(raw): RawQuery,
    status: Health,
) -> Result<(), ApiError> {
    let query = Query::parse(raw.as_deref())?;
    authorize(&state, &headers, &query)?;
    let output = query.note.unwrap_or_default();
    submit(
        &state,
        Op::TtlUpdate {
            check_id,
            status,
            output,
        },
    )
    .await
}

/// Reads a request body up to [`MAX_BODY_BYTES`].
pub(super) async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::bad_request(format!(
            "Request body too large or unreadable: the limit is {} KiB",
            MAX_BODY_BYTES / 1024
        ))
    })
}

/// Queues `op` and waits until it is committed (or refused).
pub(super) async fn submit(state: &ApiState, op: Op) -> Result<(), ApiError> {
    let (reply_tx, reply_rx) = oneshot::channel();
    let command = Command {
        op,
        reply: Some(reply_tx),
    };
    state
        .commands
        .send(command)
        .await
        .map_err(|_| OpError::ShuttingDown)?;
    reply_rx.await.map_err(|_| OpError::ShuttingDown)??;
    Ok(())
}
