//! The built-in CA's signing route: `POST /api/ca/sign` with a [`SignRequest`] (a CSR for a
//! key the sidecar generated and keeps), answered with a [`SignResponse`].
//!
//! The token (when configured) is the enrolment credential; the CA itself checks that the
//! CSR proves possession of its key and names exactly the requested service's SPIFFE id.
//! Nothing here logs or returns key material (there is none: only public certificates).

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use meshplane_model::identity::{SignRequest, SignResponse};

use crate::AdminState;
use crate::auth::require_token;
use crate::relay::ApiError;

/// Largest accepted request body: a CSR is about 1 KiB.
pub(crate) const MAX_SIGN_BODY: usize = 64 * 1024;

/// `POST /api/ca/sign`.
pub(crate) async fn sign(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<SignResponse>, ApiError> {
    require_token(&s, &headers)?;
    let Some(ca) = &s.ca else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this control plane runs no CA; give sidecars host certificates (--cert-file/--key-file/--ca-file)",
        ));
    };
    let req: SignRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not a sign request ({{\"service\", \"csr\"}}): {e}"),
        )
    })?;
    match ca.sign(&req, SystemTime::now()) {
        Ok(issued) => {
            s.metrics
                .certificates_issued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                service = %req.service,
                identity = %issued.identity,
                not_after_unix = issued.not_after_unix,
                "issued certificate"
            );
            Ok(Json(issued))
        }
        Err(e) => {
            s.metrics
                .certificates_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(service = %req.service, error = %e, "refused to sign");
            let status = match e {
                // The CA's own failure, not the request's.
                meshplane_ca::SignError::Issue(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            Err(ApiError::new(status, e.to_string()))
        }
    }
}
