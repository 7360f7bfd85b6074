//! A fake Consul agent: records register/deregister calls and answers 200.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::put;
use serde_json::Value;

/// One call the registry received.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Register { body: Value, token: Option<String> },
    Deregister { id: String, token: Option<String> },
}

#[derive(Clone, Default)]
pub struct FakeRegistry {
    calls: Arc<Mutex<Vec<Call>>>,
}

fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl FakeRegistry {
    /// Serves on `port` (0 for any); returns the address.
    pub async fn serve_on(&self, port: u16) -> SocketAddr {
        let app =
            axum::Router::new()
                .route(
                    "/v1/agent/service/register",
                    put(
                        |State(r): State<FakeRegistry>,
                         headers: HeaderMap,
                         body: axum::body::Bytes| async move {
                            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            r.calls.lock().unwrap().push(Call::Register {
                                body,
                                token: token(&headers),
                            });
                            "true"
                        },
                    ),
                )
                .route(
                    "/v1/agent/service/deregister/{id}",
                    put(
                        |State(r): State<FakeRegistry>,
                         headers: HeaderMap,
                         Path(id): Path<String>| async move {
                            r.calls.lock().unwrap().push(Call::Deregister {
                                id,
                                token: token(&headers),
                            });
                            "true"
                        },
                    ),
                )
                .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn registrations(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Register { body, .. } => Some(body),
                _ => None,
            })
            .collect()
    }

    pub fn deregistrations(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Deregister { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }
}
