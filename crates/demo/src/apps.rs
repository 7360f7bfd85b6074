//! The demo's applications: small HTTP servers that call each other through their sidecars'
//! egress proxies, plus an HTTPS "partner API" outside the mesh.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The external-looking domain the demo's `orders` calls (pinned to 127.0.0.1).
pub const PARTNER_HOST: &str = "api.partner.example";

#[derive(Clone)]
struct AppState {
    instance: Arc<str>,
    /// Client whose proxy is this app's sidecar egress port.
    egress: Option<reqwest::Client>,
}

/// Binds 127.0.0.1:0 and serves `router` until shutdown; returns the address.
async fn serve(router: Router, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

/// A client that sends every request through an explicit HTTP proxy (the sidecar's egress).
pub fn egress_client(egress_port: u16) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!(
            "http://127.0.0.1:{egress_port}"
        ))?)
        .timeout(std::time::Duration::from_secs(10))
        .build()?)
}

/// `payments`: answers with its instance id and the caller its Envoy verified (the URI in
/// `x-forwarded-client-cert`, set from the client certificate).
pub async fn payments(instance: &str, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let state = AppState {
        instance: instance.into(),
        egress: None,
    };
    let router = Router::new()
        .route(
            "/pay",
            get(|State(s): State<AppState>, headers: HeaderMap| async move {
                let caller = headers
                    .get("x-forwarded-client-cert")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').find_map(|f| f.strip_prefix("URI=")))
                    .unwrap_or("an unauthenticated caller")
                    .to_owned();
                format!("paid by {} for {caller}\n", s.instance)
            }),
        )
        .route("/status/health", get(|| async { "ok\n" }))
        .with_state(state);
    serve(router, shutdown).await
}

async fn relay(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
) -> Result<String, (StatusCode, String)> {
    let mut request = client.get(url);
    if let Some(v) = headers.get("x-canary") {
        request = request.header("x-canary", v);
    }
    let response = request
        .send()
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{url}: {e}\n")))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err((
            StatusCode::BAD_GATEWAY,
            format!("{url} answered {status}: {body}"),
        ))
    }
}

/// `orders`: calls `payments` and the partner API through its egress.
pub async fn orders(egress_port: u16, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let state = AppState {
        instance: "orders".into(),
        egress: Some(egress_client(egress_port)?),
    };
    let router = Router::new()
        .route(
            "/order",
            get(|State(s): State<AppState>, headers: HeaderMap| async move {
                let client = s
                    .egress
                    .as_ref()
                    .ok_or((StatusCode::INTERNAL_SERVER_ERROR, String::new()))?;
                let paid = relay(client, "http://payments/pay", &headers).await?;
                let rates =
                    relay(client, &format!("http://{PARTNER_HOST}/rates"), &headers).await?;
                Ok::<_, (StatusCode, String)>(format!(
                    "order placed; {}; {}",
                    paid.trim(),
                    rates.trim()
                ))
            }),
        )
        .route("/status/health", get(|| async { "ok\n" }))
        .with_state(state);
    serve(router, shutdown).await
}

/// `web`: the front end; calls `orders` through its egress.
pub async fn web(egress_port: u16, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let state = AppState {
        instance: "web".into(),
        egress: Some(egress_client(egress_port)?),
    };
    let router = Router::new()
        .route(
            "/",
            get(|State(s): State<AppState>, headers: HeaderMap| async move {
                let client = s
                    .egress
                    .as_ref()
                    .ok_or((StatusCode::INTERNAL_SERVER_ERROR, String::new()))?;
                relay(client, "http://orders/order", &headers).await
            }),
        )
        .route("/status/health", get(|| async { "ok\n" }))
        .with_state(state);
    serve(router, shutdown).await
}

/// The partner API: HTTPS on 127.0.0.1 with a certificate for [`PARTNER_HOST`].
pub async fn partner(
    cert_pem: &str,
    key_pem: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("demo certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("demo key")?;
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Router::new().route(
        "/rates",
        get(|| async { "EUR/PLN 4.27 (partner API over TLS)\n" }),
    );
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => return,
            };
            let Ok((tcp, _)) = accepted else { continue };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    Ok(addr)
}
