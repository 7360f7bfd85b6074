//! The built-in CA's signing route: `POST /api/ca/sign` with a [`SignRequest`] (a CSR for a
//! key the sidecar generated and keeps), answered with a [`SignResponse`].
//!
//! Who may ask for which identity: with per-service enrolment tokens configured, a request
//! for service `S` must carry `S`'s token (or the operator's `--token`), so one service's
//! credential never yields another's identity; without them, the control plane's token (when
//! set) enrols every service. The CA itself then checks that the CSR proves possession of its
//! key and names exactly the requested service's SPIFFE id.
//! Nothing here logs or returns key material (there is none: only public certificates).

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use meshplane_model::identity::{SignRequest, SignResponse};

use crate::AdminState;
use crate::auth::{bearer, constant_time_eq, require_token};
use crate::relay::ApiError;

/// Per-service enrolment tokens (service → token). `Debug` names the services only.
#[derive(Clone, Default)]
pub struct EnrolmentTokens(std::collections::BTreeMap<String, String>);

impl EnrolmentTokens {
    /// Tokens by service name.
    pub fn new(tokens: std::collections::BTreeMap<String, String>) -> Self {
        EnrolmentTokens(tokens)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, service: &str) -> Option<&str> {
        self.0.get(service).map(String::as_str)
    }
}

impl std::fmt::Debug for EnrolmentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Largest accepted request body: a CSR is about 1 KiB.
pub(crate) const MAX_SIGN_BODY: usize = 64 * 1024;

/// `POST /api/ca/sign`.
pub(crate) async fn sign(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<SignResponse>, ApiError> {
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
    authorize(&s, &headers, &req.service, OnBehalf::Sign)?;
    match ca.sign(&req, SystemTime::now()) {
        Ok(issued) => {
            s.metrics.ca().issued();
            tracing::info!(
                service = %req.service,
                identity = %issued.identity,
                not_after_unix = issued.not_after_unix,
                "issued certificate"
            );
            Ok(Json(issued))
        }
        Err(e) => {
            s.metrics.ca().refused();
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

/// What a request asks on behalf of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnBehalf {
    /// A certificate with its identity.
    Sign,
    /// Keeping a traffic report of one of its instances.
    Report,
}

/// May this request obtain `service`'s identity, or report for it?
pub(crate) fn authorize(
    s: &AdminState,
    headers: &HeaderMap,
    service: &str,
    on_behalf: OnBehalf,
) -> Result<(), ApiError> {
    if s.enrolment_tokens.is_empty() {
        return require_token(s, headers);
    }
    let Some(given) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("send Authorization: Bearer <enrolment token of `{service}`>"),
        ));
    };
    let matches = |t: &str| constant_time_eq(given.as_bytes(), t.as_bytes());
    let own = s.enrolment_tokens.get(service).is_some_and(&matches);
    let operator = s.token.as_deref().is_some_and(matches);
    if own || operator {
        return Ok(());
    }
    let asked = match on_behalf {
        OnBehalf::Sign => {
            tracing::warn!(
                service,
                "sign request with a token not valid for this service"
            );
            "request the identity of"
        }
        // A misconfigured sidecar posts every 30 s: said once by its own log.
        OnBehalf::Report => "report the traffic of",
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!("this token may not {asked} `{service}`"),
    ))
}
