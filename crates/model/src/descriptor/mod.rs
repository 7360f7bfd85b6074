//! The service descriptor (`meshplane.yaml`): who a service is, what it calls, and who may
//! call it. Sent to the control plane as the proxy's node metadata.
//!
//! [`Descriptor::from_yaml`] (sidecar side) and [`Descriptor::from_json`] (control-plane side,
//! from node metadata) go through the same parser and validator, so both sides agree on what
//! is valid and report errors naming the field (`dependencies[0].timeout: ...`).

mod access;
mod duration;
mod raw;
mod stats;
#[cfg(test)]
mod tests;
mod tracing;

use std::time::Duration;

use serde::Serialize;

use crate::ServiceName;
pub use access::{Access, Via};
pub use duration::{format_duration, parse_duration};
pub use stats::{Stats, StatsPattern};
pub use tracing::{Percent, Tracing};

/// A parsed, validated service descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    /// The service's identity.
    pub service: ServiceName,
    /// The application's own local port (ingress traffic is forwarded there).
    pub port: u16,
    /// What the application speaks on `port`.
    pub protocol: Protocol,
    /// Envoy's public listener: this is what the registry advertises.
    pub ingress: IngressListener,
    /// Envoy's local explicit HTTP proxy for outgoing calls, if the service makes any.
    pub egress: Option<EgressListener>,
    /// Registry tags; `canary` joins the canary subset.
    pub tags: Vec<String>,
    /// Which transport the ingress listener accepts.
    pub mtls: MtlsMode,
    /// Registry weight of this instance.
    pub weight: u32,
    /// The only services and domains this proxy gets configuration for.
    pub dependencies: Vec<Dependency>,
    /// Who may call which endpoint; `None` when the descriptor has no `incoming` section
    /// (no permission is enforced).
    pub incoming: Option<Incoming>,
    /// Keep HTTP/1.1 header name case as the app wrote it (for apps that depend on it).
    pub preserve_header_case: bool,
    /// Which Envoy statistics the sidecar keeps; the control plane ignores it.
    pub stats: Stats,
    /// Where Prometheus scrapes the sidecar's Envoy; the control plane ignores it.
    pub metrics: MetricsListener,
    /// How many requests the Envoy traces (with the control plane's collector).
    pub tracing: Tracing,
    /// Which requests get a JSON access-log line, on both listeners.
    pub access_log: AccessLog,
}

/// What an application speaks on its port (`protocol`). Registered as `Meta.protocol`, from
/// which callers' sidecars choose the protocol towards its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (WebSocket upgrades included).
    #[default]
    Http1,
    /// HTTP/2 without TLS, with prior knowledge (h2c).
    Http2,
    /// gRPC: HTTP/2 (h2c) carrying gRPC.
    Grpc,
}

impl Protocol {
    /// Every protocol, in the order the docs list them.
    pub const ALL: [Protocol; 3] = [Protocol::Http1, Protocol::Http2, Protocol::Grpc];

    /// The name used in descriptors and in `Meta.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }

    /// The protocol named `name` (as in a descriptor or `Meta.protocol`).
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Whether the application needs HTTP/2 (h2c) rather than HTTP/1.1.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which requests the proxy writes an access-log line for (`access_log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLog {
    /// Failed requests: a 5xx answer, or any request Envoy flagged (no healthy upstream,
    /// timeout, reset, no route, protocol error...). A 4xx the app answered is not an
    /// error of the mesh and is not logged.
    #[default]
    Errors,
    /// Every request.
    All,
    /// None (the RBAC decision lines of `incoming` are kept).
    Off,
}

/// The ingress listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressListener {
    /// Port Envoy listens on for calls to this service.
    pub port: u16,
    /// Timeout for a request to the local app.
    pub timeout: Option<Duration>,
    /// Paths answered as health checks (routed to the app, open to every caller).
    pub health_path: String,
}

/// The egress listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressListener {
    /// Port of the local explicit proxy.
    pub port: u16,
}

/// The scrape listener: Envoy's `/stats/prometheus`, and nothing else of its admin API, on the
/// ingress listener's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MetricsListener {
    /// Its port; `None`: any free port, which the sidecar registers (`Meta.metrics_port`).
    pub port: Option<u16>,
}

/// How the ingress listener treats TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Accept mTLS and plaintext (migration).
    #[default]
    Permissive,
    /// Accept only mTLS.
    Strict,
    /// Plaintext only.
    Disabled,
}

/// One thing the service calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// What is called.
    pub target: Target,
    /// Request timeout.
    pub timeout: Option<Duration>,
    /// Retry policy; `None` means the documented default.
    pub retries: Option<Retries>,
}

/// The destination of a dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A service in the mesh.
    Service(ServiceName),
    /// Every service (`service: "*"`); only for services the control plane allows.
    AllServices,
    /// An external domain (`domain: https://api.example.com`).
    Domain(Domain),
    /// Any host matching a pattern (`domain_pattern: "*.example.org"`), resolved on demand.
    DomainPattern(String),
}

/// An external domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    /// True for `https://`: Envoy originates TLS.
    pub tls: bool,
    /// Lower-case host name.
    pub host: String,
    /// Port (default 443 for https, 80 for http).
    pub port: u16,
}

/// A retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retries {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Timeout of each attempt.
    pub per_try_timeout: Option<Duration>,
    /// Conditions that trigger a retry.
    pub on: Vec<RetryOn>,
}

/// A retry condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The connection could not be established.
    ConnectFailure,
    /// The upstream reset the connection or stream.
    Reset,
    /// The upstream refused the stream (HTTP/2 REFUSED_STREAM).
    RefusedStream,
    /// 502, 503 or 504.
    GatewayError,
    /// Any 5xx.
    #[serde(rename = "5xx")]
    ServerError,
    /// One specific status code.
    Status(u16),
    /// A gRPC status in the response (gRPC calls answer HTTP 200 with the status in
    /// `grpc-status`).
    Grpc(GrpcRetryStatus),
}

/// The gRPC statuses a call may be retried on (Envoy's gRPC retry conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcRetryStatus {
    /// `CANCELLED`.
    Cancelled,
    /// `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
    /// `INTERNAL`.
    Internal,
    /// `RESOURCE_EXHAUSTED`.
    ResourceExhausted,
    /// `UNAVAILABLE`.
    Unavailable,
}

impl GrpcRetryStatus {
    /// Every one, with the name the descriptor and Envoy use.
    pub const ALL: [(GrpcRetryStatus, &'static str); 5] = [
        (GrpcRetryStatus::Cancelled, "cancelled"),
        (GrpcRetryStatus::DeadlineExceeded, "deadline-exceeded"),
        (GrpcRetryStatus::Internal, "internal"),
        (GrpcRetryStatus::ResourceExhausted, "resource-exhausted"),
        (GrpcRetryStatus::Unavailable, "unavailable"),
    ];

    /// The name the descriptor and Envoy's `retry_on` use (`resource-exhausted`).
    pub fn name(self) -> &'static str {
        GrpcRetryStatus::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }
}

/// Incoming permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incoming {
    /// What happens to requests that match no endpoint.
    pub unlisted_endpoints: Unlisted,
    /// Endpoint rules, in order.
    pub endpoints: Vec<EndpointRule>,
    /// Named groups of clients.
    pub roles: Vec<Role>,
}

/// Block or only log what is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// Deny with 403.
    #[default]
    Block,
    /// Let through and log.
    Log,
}

/// One endpoint and who may call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRule {
    /// Which paths.
    pub path: PathMatch,
    /// Which methods (upper-case); empty means any.
    pub methods: Vec<String>,
    /// Who may call; empty means anyone.
    pub clients: Vec<Client>,
    /// What happens to callers not listed.
    pub unlisted_clients: Unlisted,
}

/// A path matcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// Exactly this path.
    Exact(String),
    /// Paths starting with this.
    Prefix(String),
    /// Paths matching this RE2 regular expression (whole path).
    Regex(String),
}

/// A caller named in a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Client {
    /// A service.
    Service(ServiceName),
    /// Every member of a role (`role:NAME`).
    Role(String),
}

/// A named group of clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// Role name, referenced as `role:NAME`.
    pub name: String,
    /// Member services.
    pub clients: Vec<ServiceName>,
}

/// Why a descriptor is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The document is not valid YAML or JSON.
    #[error("descriptor is not valid {format}: {message}")]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// Parser message (with line and column for YAML).
        message: String,
    },
    /// A field has a bad value, is unknown, or contradicts another.
    #[error("{field}: {message}")]
    Field {
        /// Path of the field, e.g. `dependencies[0].timeout`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl DescriptorError {
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        DescriptorError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Descriptor {
    /// Parses and validates a `meshplane.yaml` document.
    pub fn from_yaml(text: &str) -> Result<Self, DescriptorError> {
        raw::parse_yaml(text)
    }

    /// Parses and validates a descriptor given as JSON (the control plane converts node
    /// metadata to JSON first).
    pub fn from_json(value: serde_json::Value) -> Result<Self, DescriptorError> {
        raw::parse_json(value)
    }

    /// Services this descriptor depends on by name (not `*`, not domains).
    pub fn service_dependencies(&self) -> impl Iterator<Item = &ServiceName> {
        self.dependencies.iter().filter_map(|d| match &d.target {
            Target::Service(s) => Some(s),
            _ => None,
        })
    }

    /// Whether the descriptor depends on every service.
    pub fn depends_on_all(&self) -> bool {
        self.dependencies
            .iter()
            .any(|d| d.target == Target::AllServices)
    }

    /// Every service named as a client (directly or through a role) in incoming rules.
    pub fn named_clients(&self) -> Vec<ServiceName> {
        let Some(incoming) = &self.incoming else {
            return Vec::new();
        };
        let mut out: Vec<ServiceName> = incoming
            .endpoints
            .iter()
            .flat_map(|e| e.clients.iter())
            .flat_map(|c| match c {
                Client::Service(s) => vec![s.clone()],
                Client::Role(r) => incoming
                    .roles
                    .iter()
                    .filter(|role| &role.name == r)
                    .flat_map(|role| role.clients.iter().cloned())
                    .collect(),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
