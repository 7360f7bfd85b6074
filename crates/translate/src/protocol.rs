//! Which HTTP version a caller's sidecar speaks towards a mesh service.
//!
//! A service's cluster is shared by every caller, so its protocol is decided once per
//! service, from what its instances registered (`Meta.protocol`, the app's `protocol`), the
//! way `Meta.mtls` decides mTLS per endpoint (see `security`). HTTP is a cluster-wide choice
//! in Envoy (only ALPN could choose per endpoint, and plaintext endpoints have none), so
//! instances that disagree — a rollout changing the app's protocol, or moving the service
//! behind sidecars — need one rule:
//!
//! - HTTP/2 when some instance declares `http2` or `grpc` and every instance can take
//!   HTTP/2: it declares `http2`/`grpc`, or it is behind a Meshplane sidecar that registered
//!   a protocol (its ingress accepts HTTP/1.1 and HTTP/2 and converts for its app);
//! - HTTP/1.1 otherwise, which every instance takes: an instance without `Meta.protocol`
//!   (an app registered without a sidecar, or a sidecar from before protocols) is `http1`.
//!
//! So `http1` services keep HTTP/1.1 between sidecars (header case and WebSocket upgrades
//! work as before), and a gRPC service reaches all its instances over HTTP/2 as soon as none
//! of them is an HTTP/1.1-only endpoint.

use meshplane_model::registration::{PROTOCOL_META_KEY, SIDECAR_META_KEY};
use meshplane_model::{Instance, Protocol};

use crate::endpoints::routable_address;

/// The HTTP version of a connection from a caller's sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2: ALPN `h2` over mTLS, prior knowledge (h2c) in plaintext.
    Http2,
}

/// What an instance's app speaks, as registered; `None` when it registered nothing (or a
/// name this control plane does not know).
fn declared(i: &Instance) -> Option<Protocol> {
    i.meta
        .get(PROTOCOL_META_KEY)
        .and_then(|p| Protocol::from_name(p))
}

/// Whether an HTTP/2 connection reaches the instance's app.
fn accepts_http2(i: &Instance) -> bool {
    let sidecar = i.meta.get(SIDECAR_META_KEY).is_some_and(|v| v == "true");
    let registered = i.meta.contains_key(PROTOCOL_META_KEY);
    declared(i).is_some_and(Protocol::is_http2) || (sidecar && registered)
}

/// The protocol callers use towards a service with these instances (see the module docs).
/// Only instances that become endpoints count (not those registered with a host name).
pub fn upstream_protocol(instances: &[Instance]) -> UpstreamProtocol {
    let endpoints = || instances.iter().filter(|i| routable_address(i));
    let wants = endpoints().any(|i| declared(i).is_some_and(Protocol::is_http2));
    if wants && endpoints().all(accepts_http2) {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    }
}

#[cfg(test)]
mod tests;
