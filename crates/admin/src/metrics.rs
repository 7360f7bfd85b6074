//! `/metrics`: the exposition of `meshplane-telemetry`'s registry, which the xDS server, the
//! translator task and the CA routes record into.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AdminState;

pub(crate) async fn render(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, meshplane_telemetry::CONTENT_TYPE)],
        s.metrics.encode(),
    )
}
