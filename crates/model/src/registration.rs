//! What the mesh writes into registry entries, and reads back: the names and `Meta` keys
//! shared by the sidecar (which registers), the control plane (which reads them for the
//! admin API, Prometheus discovery and datacenter discovery) and the shipped Prometheus
//! configurations (`deploy/prometheus/`).

/// `Meta` key: `"true"` on instances registered by a Meshplane sidecar.
pub const SIDECAR_META_KEY: &str = "meshplane_sidecar";

/// `Meta` key: the port of the sidecar's scrape listener, which serves Envoy's
/// `/stats/prometheus` and nothing else, on the instance's address.
pub const METRICS_PORT_META_KEY: &str = "metrics_port";

/// `Meta` key: what the instance's app speaks (`http1`, `http2`, `grpc`: the descriptor's
/// `protocol`). Callers' sidecars choose HTTP/2 or HTTP/1.1 towards a service from it; an
/// instance without it is taken as `http1`.
pub const PROTOCOL_META_KEY: &str = "protocol";

/// The path the scrape listener serves.
pub const METRICS_PATH: &str = "/stats/prometheus";

/// Tag on instances that have a scrape listener, so a Prometheus Consul discovery can
/// watch only those services (`tags: [meshplane-metrics]`). Never a routing tag: callers
/// get no route for it.
pub const METRICS_TAG: &str = "meshplane-metrics";

/// Service under which control-plane instances are registered; each instance's
/// `Meta.admin_url` is its admin API (e.g. `http://10.0.0.4:18080`), which serves
/// `/metrics`.
pub const CONTROL_PLANE_SERVICE: &str = "meshplane-control-plane";

/// `Meta` key of a control-plane instance: its admin API's URL.
pub const ADMIN_URL_META_KEY: &str = "admin_url";
