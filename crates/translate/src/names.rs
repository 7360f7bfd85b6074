//! Resource names. Mesh services keep their own name (cluster `payments`, EDS `payments`)
//! so config dumps read naturally; everything else has a `:` in its name, which a service
//! name cannot contain, so the two never collide.

use meshplane_model::ServiceName;
use meshplane_model::descriptor::Domain;

/// The ingress listener.
pub const INGRESS_LISTENER: &str = "ingress";
/// The egress listener.
pub const EGRESS_LISTENER: &str = "egress";
/// The egress route configuration (RDS).
pub const EGRESS_ROUTES: &str = "egress";
/// The ingress route configuration (inline in the ingress listener).
pub const INGRESS_ROUTES: &str = "ingress";
/// The cluster of the local application.
pub const LOCAL_APP: &str = "meshplane:local-app";
/// The OpenTelemetry collector's cluster (`--tracing-collector`).
pub const TRACING_COLLECTOR: &str = "meshplane:tracing";
/// The egress virtual host (and route) of the sidecar's flags endpoint.
pub const EGRESS_FLAGS_HOST: &str = "meshplane:egress-flags";
/// The dynamic forward proxy cluster (`domain_pattern` dependencies).
pub const DYNAMIC_FORWARD_PROXY: &str = "meshplane:dynamic-forward-proxy";

/// Cluster of an external domain (TLS origination for `https://`).
pub fn domain_cluster(d: &Domain) -> String {
    format!("domain:{}:{}", d.host, d.port)
}

/// TCP cluster a `CONNECT` tunnel to an `https://` domain uses (the app does TLS itself).
pub fn tunnel_cluster(d: &Domain) -> String {
    format!("tunnel:{}:{}", d.host, d.port)
}

/// The egress virtual host of mesh service `service` (its statistics are
/// `vhost.outbound|<service>.*`; `|` cannot be in a service name).
pub fn outbound_host(service: &ServiceName) -> String {
    format!("outbound|{service}")
}

/// The ingress virtual host of `service` (statistics `vhost.inbound|<service>.*`).
pub fn inbound_host(service: &ServiceName) -> String {
    format!("inbound|{service}")
}

/// The route configuration of a proxyless gRPC client's target `service`.
pub fn proxyless_routes(service: &ServiceName) -> String {
    format!("grpc:{service}")
}

/// A proxyless gRPC client's cluster of `service`'s canary instances (and its EDS name).
pub fn canary_cluster(service: &ServiceName) -> String {
    format!("canary:{service}")
}
