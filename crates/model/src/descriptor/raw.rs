//! The descriptor as written (serde), and its validation into [`Descriptor`].

use std::collections::BTreeSet;

use serde::Deserialize;

use super::stats::RawStats;
use super::tracing::RawTracing;
use super::{
    AccessLog, Client, Dependency, Descriptor, DescriptorError, Domain, EgressListener,
    EndpointRule, Incoming, IngressListener, MetricsListener, MtlsMode, PathMatch, Protocol,
    Retries, RetryOn, Role, Target, Unlisted, parse_duration,
};
use crate::ServiceName;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];
const MAX_RETRIES: u32 = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    service: String,
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
    ingress: RawIngress,
    #[serde(default)]
    egress: Option<RawEgress>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    mtls: RawMtls,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    dependencies: Vec<RawDependency>,
    #[serde(default)]
    incoming: Option<RawIncoming>,
    #[serde(default)]
    preserve_header_case: bool,
    #[serde(default)]
    stats: Option<RawStats>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
    #[serde(default)]
    tracing: Option<RawTracing>,
    #[serde(default)]
    access_log: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    port: u16,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    health_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    port: u16,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum RawMtls {
    #[default]
    Permissive,
    Strict,
    Disabled,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    domain_pattern: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<RawRetries>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetries {
    attempts: u32,
    #[serde(default)]
    per_try_timeout: Option<String>,
    #[serde(default)]
    on: Vec<StringOrNumber>,
}

/// `on: [connect-failure, 503]`: YAML reads a bare 503 as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncoming {
    #[serde(default)]
    unlisted_endpoints: RawUnlisted,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    roles: Vec<RawRole>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawUnlisted {
    #[default]
    Block,
    Log,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    path_regex: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    clients: Vec<String>,
    #[serde(default)]
    unlisted_clients: Option<RawUnlisted>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    #[serde(default)]
    clients: Vec<String>,
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> DescriptorError {
    let field = e.path().to_string();
    let message = e.inner().to_string();
    if field == "." {
        DescriptorError::field("descriptor", message)
    } else {
        DescriptorError::field(field, message)
    }
}

pub(super) fn parse_yaml(text: &str) -> Result<Descriptor, DescriptorError> {
    let de = serde_norway::Deserializer::from_str(text);
    let raw: RawDescriptor = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field == "." && inner.location().is_some() && !inner.to_string().contains("field") {
            DescriptorError::Syntax {
                format: "YAML",
                message: inner.to_string(),
            }
        } else if field == "." {
            DescriptorError::field("descriptor", inner.to_string())
        } else {
            DescriptorError::field(field, inner.to_string())
        }
    })?;
    raw.validate()
}

pub(super) fn parse_json(value: serde_json::Value) -> Result<Descriptor, DescriptorError> {
    let raw: RawDescriptor = serde_path_to_error::deserialize(value).map_err(path_error)?;
    raw.validate()
}

fn service_name(field: &str, name: &str) -> Result<ServiceName, DescriptorError> {
    ServiceName::new(name).map_err(|e| DescriptorError::field(field, e.to_string()))
}

fn duration(
    field: &str,
    text: &Option<String>,
) -> Result<Option<std::time::Duration>, DescriptorError> {
    text.as_deref()
        .map(|t| parse_duration(t).map_err(|m| DescriptorError::field(field, m)))
        .transpose()
}

fn access_log(text: Option<&str>) -> Result<AccessLog, DescriptorError> {
    match text {
        None | Some("errors") => Ok(AccessLog::Errors),
        Some("all") => Ok(AccessLog::All),
        Some("off") => Ok(AccessLog::Off),
        Some(other) => Err(DescriptorError::field(
            "access_log",
            format!(
                "`{other}` is not a choice; use `errors` (the default: failed requests), `all` (every request) or `off`"
            ),
        )),
    }
}

fn protocol(text: Option<&str>) -> Result<Protocol, DescriptorError> {
    let Some(text) = text else {
        return Ok(Protocol::default());
    };
    Protocol::from_name(text).ok_or_else(|| {
        DescriptorError::field(
            "protocol",
            format!(
                "`{text}` is not a choice; use `http1` (the default, WebSocket included), `http2` (HTTP/2 without TLS, h2c) or `grpc`"
            ),
        )
    })
}

fn port(field: &str, port: u16) -> Result<u16, DescriptorError> {
    if port == 0 {
        return Err(DescriptorError::field(
            field,
            "port 0 is not a port; use 1-65535",
        ));
    }
    Ok(port)
}

impl RawDescriptor {
    fn validate(self) -> Result<Descriptor, DescriptorError> {
        let service = service_name("service", &self.service)?;
        let app_port = port("port", self.port)?;
        let ingress_port = port("ingress.port", self.ingress.port)?;
        let egress = self
            .egress
            .map(|e| port("egress.port", e.port).map(|port| EgressListener { port }))
            .transpose()?;
        if ingress_port == app_port {
            return Err(DescriptorError::field(
                "ingress.port",
                format!(
                    "must differ from the app's port {app_port}: Envoy listens there and forwards to the app"
                ),
            ));
        }
        if let Some(e) = &egress
            && (e.port == app_port || e.port == ingress_port)
        {
            return Err(DescriptorError::field(
                "egress.port",
                format!(
                    "port {} is already used by the app or the ingress listener",
                    e.port
                ),
            ));
        }
        let metrics = match &self.metrics {
            None => MetricsListener::default(),
            Some(m) => {
                let p = port("metrics.port", m.port)?;
                if p == app_port
                    || p == ingress_port
                    || egress.as_ref().is_some_and(|e| e.port == p)
                {
                    return Err(DescriptorError::field(
                        "metrics.port",
                        format!(
                            "port {p} is already used by the app, the ingress or the egress listener"
                        ),
                    ));
                }
                MetricsListener { port: Some(p) }
            }
        };
        let health_path = self
            .ingress
            .health_path
            .unwrap_or_else(|| "/status/health".to_owned());
        if !health_path.starts_with('/') {
            return Err(DescriptorError::field(
                "ingress.health_path",
                "must start with `/`",
            ));
        }
        let ingress = IngressListener {
            port: ingress_port,
            timeout: duration("ingress.timeout", &self.ingress.timeout)?,
            health_path,
        };
        let weight = self.weight.unwrap_or(100);
        if !(1..=10_000).contains(&weight) {
            return Err(DescriptorError::field(
                "weight",
                "use a weight between 1 and 10000",
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.trim().is_empty() {
                return Err(DescriptorError::field(
                    format!("tags[{i}]"),
                    "tags cannot be empty",
                ));
            }
        }
        let dependencies = self
            .dependencies
            .into_iter()
            .enumerate()
            .map(|(i, d)| d.validate(&format!("dependencies[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let incoming = self.incoming.map(RawIncoming::validate).transpose()?;
        if matches!(self.mtls, RawMtls::Disabled)
            && let Some(i) = incoming
                .iter()
                .flat_map(|inc| inc.endpoints.iter())
                .position(|e| !e.clients.is_empty())
        {
            return Err(DescriptorError::field(
                format!("incoming.endpoints[{i}].clients"),
                "callers are identified by their mTLS certificate, and with `mtls: disabled` none has one: \
                 set `mtls: permissive` or `strict`, or drop the clients (open endpoint)",
            ));
        }
        let tracing = self
            .tracing
            .map(RawTracing::validate)
            .transpose()?
            .unwrap_or_default();
        let stats = self
            .stats
            .map(RawStats::validate)
            .transpose()?
            .unwrap_or_default();
        Ok(Descriptor {
            service,
            port: app_port,
            protocol: protocol(self.protocol.as_deref())?,
            ingress,
            egress,
            tags: self.tags,
            mtls: match self.mtls {
                RawMtls::Permissive => MtlsMode::Permissive,
                RawMtls::Strict => MtlsMode::Strict,
                RawMtls::Disabled => MtlsMode::Disabled,
            },
            weight,
            dependencies,
            incoming,
            preserve_header_case: self.preserve_header_case,
            stats,
            metrics,
            tracing,
            access_log: access_log(self.access_log.as_deref())?,
        })
    }
}

impl RawDependency {
    fn validate(self, at: &str) -> Result<Dependency, DescriptorError> {
        let target = match (self.service, self.domain, self.domain_pattern) {
            (Some(s), None, None) if s == "*" => Target::AllServices,
            (Some(s), None, None) => Target::Service(service_name(&format!("{at}.service"), &s)?),
            (None, Some(d), None) => Target::Domain(domain(&format!("{at}.domain"), &d)?),
            (None, None, Some(p)) => {
                Target::DomainPattern(domain_pattern(&format!("{at}.domain_pattern"), &p)?)
            }
            _ => {
                return Err(DescriptorError::field(
                    at,
                    "set exactly one of `service`, `domain` or `domain_pattern`",
                ));
            }
        };
        let retries = self
            .retries
            .map(|r| r.validate(&format!("{at}.retries")))
            .transpose()?;
        Ok(Dependency {
            target,
            timeout: duration(&format!("{at}.timeout"), &self.timeout)?,
            retries,
        })
    }
}

fn domain(field: &str, text: &str) -> Result<Domain, DescriptorError> {
    let bad = |m: &str| {
        DescriptorError::field(
            field,
            format!("`{text}` {m}; write e.g. https://api.example.com"),
        )
    };
    let (tls, rest) = if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("needs a scheme (http:// or https://)"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(bad(
            "must be a scheme and host only, without path, query or credentials",
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("has a bad port"))?,
        ),
        None => (rest, if tls { 443 } else { 80 }),
    };
    if !valid_host(host) {
        return Err(bad("has no valid host name"));
    }
    Ok(Domain {
        tls,
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn domain_pattern(field: &str, text: &str) -> Result<String, DescriptorError> {
    match text.strip_prefix("*.") {
        Some(rest) if valid_host(rest) => Ok(text.to_ascii_lowercase()),
        _ => Err(DescriptorError::field(
            field,
            format!(
                "`{text}` is not a pattern; write a leading wildcard label, e.g. \"*.example.org\""
            ),
        )),
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl RawRetries {
    fn validate(self, at: &str) -> Result<Retries, DescriptorError> {
        if self.attempts > MAX_RETRIES {
            return Err(DescriptorError::field(
                format!("{at}.attempts"),
                format!(
                    "{} retries would multiply load on a failing service; use at most {MAX_RETRIES}",
                    self.attempts
                ),
            ));
        }
        let on = self
            .on
            .into_iter()
            .enumerate()
            .map(|(i, v)| retry_on(&format!("{at}.on[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Retries {
            attempts: self.attempts,
            per_try_timeout: duration(&format!("{at}.per_try_timeout"), &self.per_try_timeout)?,
            on,
        })
    }
}

fn retry_on(field: &str, value: StringOrNumber) -> Result<RetryOn, DescriptorError> {
    let text = match value {
        StringOrNumber::String(s) => s,
        StringOrNumber::Number(n) => n.to_string(),
    };
    Ok(match text.as_str() {
        "connect-failure" => RetryOn::ConnectFailure,
        "reset" => RetryOn::Reset,
        "refused-stream" => RetryOn::RefusedStream,
        "gateway-error" => RetryOn::GatewayError,
        "5xx" => RetryOn::ServerError,
        code => match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => RetryOn::Status(c),
            _ => match super::GrpcRetryStatus::ALL.iter().find(|(_, n)| *n == code) {
                Some((status, _)) => RetryOn::Grpc(*status),
                None => {
                    return Err(DescriptorError::field(
                        field,
                        format!(
                            "unknown retry condition `{code}`; use connect-failure, reset, refused-stream, gateway-error, 5xx, a status code such as \"503\", or for gRPC calls unavailable, resource-exhausted, internal, deadline-exceeded or cancelled"
                        ),
                    ));
                }
            },
        },
    })
}

impl RawIncoming {
    fn validate(self) -> Result<Incoming, DescriptorError> {
        let mut role_names = BTreeSet::new();
        let roles = self
            .roles
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("incoming.roles[{i}]");
                if r.name.is_empty() || r.name.contains(':') {
                    return Err(DescriptorError::field(
                        format!("{at}.name"),
                        "role names are non-empty and have no `:`",
                    ));
                }
                if !role_names.insert(r.name.clone()) {
                    return Err(DescriptorError::field(
                        format!("{at}.name"),
                        format!("role `{}` is defined twice", r.name),
                    ));
                }
                let clients = r
                    .clients
                    .iter()
                    .enumerate()
                    .map(|(j, c)| service_name(&format!("{at}.clients[{j}]"), c))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Role {
                    name: r.name,
                    clients,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let endpoints = self
            .endpoints
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                e.validate(
                    &format!("incoming.endpoints[{i}]"),
                    &role_names,
                    self.unlisted_endpoints,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Incoming {
            unlisted_endpoints: unlisted(self.unlisted_endpoints),
            endpoints,
            roles,
        })
    }
}

fn unlisted(u: RawUnlisted) -> Unlisted {
    match u {
        RawUnlisted::Block => Unlisted::Block,
        RawUnlisted::Log => Unlisted::Log,
    }
}

impl RawEndpoint {
    fn validate(
        self,
        at: &str,
        roles: &BTreeSet<String>,
        default_unlisted: RawUnlisted,
    ) -> Result<EndpointRule, DescriptorError> {
        let path = match (self.path, self.path_prefix, self.path_regex) {
            (Some(p), None, None) => PathMatch::Exact(absolute_path(&format!("{at}.path"), p)?),
            (None, Some(p), None) => {
                PathMatch::Prefix(absolute_path(&format!("{at}.path_prefix"), p)?)
            }
            (None, None, Some(r)) => {
                if r.is_empty() {
                    return Err(DescriptorError::field(
                        format!("{at}.path_regex"),
                        "empty regular expression",
                    ));
                }
                // Envoy uses RE2; its syntax is (nearly) that of `regex-syntax`, so a typo is
                // reported here instead of as a rejected listener.
                if let Err(e) = regex_syntax::Parser::new().parse(&r) {
                    return Err(DescriptorError::field(
                        format!("{at}.path_regex"),
                        format!(
                            "not a valid regular expression: {}",
                            last_line(&e.to_string())
                        ),
                    ));
                }
                PathMatch::Regex(r)
            }
            _ => {
                return Err(DescriptorError::field(
                    at,
                    "set exactly one of `path`, `path_prefix` or `path_regex`",
                ));
            }
        };
        let methods = self
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let upper = m.to_ascii_uppercase();
                if METHODS.contains(&upper.as_str()) {
                    Ok(upper)
                } else {
                    Err(DescriptorError::field(
                        format!("{at}.methods[{i}]"),
                        format!(
                            "unknown HTTP method `{m}`; use one of {}",
                            METHODS.join(", ")
                        ),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let clients = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let field = format!("{at}.clients[{i}]");
                match c.strip_prefix("role:") {
                    Some(role) if roles.contains(role) => Ok(Client::Role(role.to_owned())),
                    Some(role) => Err(DescriptorError::field(
                        field,
                        format!("role `{role}` is not defined; add it under incoming.roles"),
                    )),
                    None => service_name(&field, c).map(Client::Service),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EndpointRule {
            path,
            methods,
            clients,
            unlisted_clients: unlisted(self.unlisted_clients.unwrap_or(default_unlisted)),
        })
    }
}

/// The last non-empty line of a multi-line message (`regex-syntax` ends with the reason).
pub(super) fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_owned()
}

fn absolute_path(field: &str, p: String) -> Result<String, DescriptorError> {
    if p.starts_with('/') {
        Ok(p)
    } else {
        Err(DescriptorError::field(
            field,
            format!("`{p}` must start with `/`"),
        ))
    }
}
