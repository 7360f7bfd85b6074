//! Decoding `PUT /v1/agent/service/register` bodies the way Consul does: field names match
//! case-insensitively and in snake_case (real clients send `name`, `ID`, `check_id`,
//! `DeregisterCriticalServiceAfter` alike), unknown fields are ignored, and every invalid value
//! is rejected with a message before anything is written.
//!
//! Two steps: the body's keys are renamed to Consul's spelling and read into the wire types
//! of [`meshplane_consul_api`] (wrong JSON types fail there, named by their path), then the
//! values are checked and defaulted the way Consul does into what this registry stores.

use std::{collections::BTreeMap, time::Duration};

use meshplane_consul_api::{
    CheckDefinition, ServiceRegistration, Weights, agent::CheckUpdate, duration, health::status,
};
use meshplane_model::{Health, InstanceId, ServiceName};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::registration::{CheckKind, ServiceDef};

/// Consul's default HTTP check timeout.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A decoded registration request, not yet applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterRequest {
    /// The service.
    pub service: ServiceDef,
    /// Its checks, in order (`Check` first, then `Checks`).
    pub checks: Vec<CheckSpec>,
}

/// A check as requested (its id already defaulted).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    /// Check id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// TTL or HTTP.
    pub kind: CheckKind,
    /// `DeregisterCriticalServiceAfter`.
    pub deregister_after: Option<Duration>,
    /// Notes.
    pub notes: String,
    /// Initial status (Consul's default: critical).
    pub status: Health,
}

/// Why a request body was rejected. Rendered as the plain-text body of a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON (or not a JSON object).
    #[error("Request decode failed: {0}")]
    Json(String),
    /// A field has a missing or invalid value.
    #[error("{0}")]
    Invalid(String),
}

/// Decodes a `PUT /v1/agent/check/update/:id` body: `{"Status": "passing", "Output": "…"}`.
pub fn decode_check_update(body: &[u8]) -> Result<(Health, String), DecodeError> {
    let raw = object(body)?;
    let update: CheckUpdate = read(canonical(raw, CheckUpdate::FIELDS))?;
    let status = match update.status.as_deref() {
        Some(status::PASSING) => Health::Passing,
        Some(status::WARNING) => Health::Warning,
        Some(status::CRITICAL) => Health::Critical,
        other => {
            return Err(invalid(format!(
                "Invalid Status {other:?}: use passing, warning or critical"
            )));
        }
    };
    Ok((status, update.output.unwrap_or_default()))
}

/// Decodes and validates a registration body.
pub fn decode_register(body: &[u8]) -> Result<RegisterRequest, DecodeError> {
    let registration: ServiceRegistration = read(canonical_registration(object(body)?))?;
    let id = registration.instance_id().to_owned();
    let ServiceRegistration {
        name,
        tags,
        address,
        port,
        meta: raw_meta,
        weights: raw_weights,
        enable_tag_override,
        kind,
        check: first_check,
        checks: more_checks,
        ..
    } = registration;
    if name.is_empty() {
        return Err(invalid("Missing service name"));
    }
    let name = ServiceName::new(name).map_err(|e| invalid(format!("Invalid service name: {e}")))?;
    let Weights { passing, warning } = raw_weights.unwrap_or_default();
    if passing == 0 {
        return Err(invalid("Invalid Weights.Passing: must be greater than 0"));
    }
    let service = ServiceDef {
        id: InstanceId::new(id).map_err(|e| invalid(e.to_string()))?,
        name,
        tags,
        address,
        port,
        meta: meta(raw_meta)?,
        weight_passing: passing,
        weight_warning: warning,
        enable_tag_override,
    };
    if let Some(kind) = kind.filter(|k| !k.is_empty()) {
        return Err(invalid(format!(
            "Invalid Kind {kind:?}: the embedded registry only registers plain services"
        )));
    }

    // An empty `Check` object is how some clients say "no check".
    let raw_checks: Vec<CheckDefinition> = first_check
        .filter(|c| *c != CheckDefinition::default())
        .into_iter()
        .chain(more_checks)
        .collect();
    let total = raw_checks.len();
    let checks = raw_checks
        .into_iter()
        .enumerate()
        .map(|(i, raw)| check(raw, &service, i, total))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for c in &checks {
        if !seen.insert(c.id.as_str()) {
            return Err(invalid(format!(
                "Duplicate CheckID {:?}: give each check its own CheckID",
                c.id
            )));
        }
    }
    Ok(RegisterRequest { service, checks })
}

fn check(
    raw: CheckDefinition,
    service: &ServiceDef,
    i: usize,
    total: usize,
) -> Result<CheckSpec, DecodeError> {
    let unsupported = [
        ("TCP", raw.tcp.is_some()),
        ("GRPC", raw.grpc.is_some()),
        ("Args", raw.args.is_some()),
        ("ScriptArgs", raw.script_args.is_some()),
        ("DockerContainerID", raw.docker_container_id.is_some()),
        ("H2PING", raw.h2ping.is_some()),
        ("UDP", raw.udp.is_some()),
        ("OSService", raw.os_service.is_some()),
        ("AliasService", raw.alias_service.is_some()),
    ];
    if let Some((kind, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(invalid(format!(
            "Invalid check: {kind} checks are not supported by the embedded registry; use a TTL or HTTP check"
        )));
    }
    let id = raw
        .check_id
        .or(raw.id)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            // Consul's defaults: `service:<id>`, suffixed `:<n>` when there are several.
            if total > 1 {
                format!("service:{}:{}", service.id, i + 1)
            } else {
                format!("service:{}", service.id)
            }
        });
    let name = raw
        .name
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("Service '{}' check", service.name));
    let ttl = opt_duration(raw.ttl, "TTL")?;
    let http = raw.http.filter(|s| !s.is_empty());
    let kind = match (ttl, http) {
        (Some(_), Some(_)) => {
            return Err(invalid("Invalid check: give either TTL or HTTP, not both"));
        }
        (Some(ttl), None) if ttl.is_zero() => {
            return Err(invalid("Invalid check: TTL must be > 0"));
        }
        (Some(ttl), None) => CheckKind::Ttl { ttl },
        (None, Some(url)) => {
            let interval = opt_duration(raw.interval, "Interval")?.unwrap_or_default();
            if interval.is_zero() {
                return Err(invalid("Interval must be > 0 for HTTP checks"));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!(
                    "Invalid check HTTP {url:?}: must be an http:// or https:// URL"
                )));
            }
            CheckKind::Http {
                url,
                interval,
                timeout: opt_duration(raw.timeout, "Timeout")?.unwrap_or(DEFAULT_HTTP_TIMEOUT),
                method: raw
                    .method
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "GET".into()),
                header: raw.header.unwrap_or_default(),
            }
        }
        (None, None) => {
            return Err(invalid(
                "Invalid check: TTL or HTTP is required (the embedded registry runs TTL and HTTP checks)",
            ));
        }
    };
    let status = match raw.status.as_deref() {
        None | Some("") | Some(status::CRITICAL) => Health::Critical,
        Some(status::PASSING) => Health::Passing,
        Some(status::WARNING) => Health::Warning,
        Some(other) => {
            return Err(invalid(format!(
                "Invalid check Status {other:?}: use passing, warning or critical"
            )));
        }
    };
    Ok(CheckSpec {
        id,
        name,
        kind,
        deregister_after: opt_duration(
            raw.deregister_critical_service_after,
            "DeregisterCriticalServiceAfter",
        )?,
        notes: raw.notes.unwrap_or_default(),
        status,
    })
}

fn object(body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    match value {
        Value::Object(raw) => Ok(raw),
        _ => Err(DecodeError::Json("expected a JSON object".into())),
    }
}

/// A registration's keys in Consul's spelling, at every level that has Consul field names
/// (not inside `Meta` or `Header`, whose keys are the user's).
fn canonical_registration(raw: Map<String, Value>) -> Map<String, Value> {
    let mut fields = canonical(raw, ServiceRegistration::FIELDS);
    if let Some(Value::Object(check)) = fields.get_mut("Check") {
        *check = canonical(std::mem::take(check), CheckDefinition::FIELDS);
    }
    if let Some(Value::Array(checks)) = fields.get_mut("Checks") {
        for check in checks {
            if let Value::Object(check) = check {
                *check = canonical(std::mem::take(check), CheckDefinition::FIELDS);
            }
        }
    }
    if let Some(Value::Object(weights)) = fields.get_mut("Weights") {
        *weights = canonical(std::mem::take(weights), Weights::FIELDS);
    }
    fields
}

/// Renames keys to their canonical Consul spelling, matching case-insensitively and ignoring
/// `_`/`-` (Consul's `TranslateKeys` + mapstructure behaviour). Unknown keys are dropped.
fn canonical(raw: Map<String, Value>, fields: &[&'static str]) -> Map<String, Value> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let mut out = Map::new();
    for (key, value) in raw {
        let key = squash(&key);
        if let Some(field) = fields.iter().find(|f| squash(f) == key) {
            out.insert((*field).to_owned(), value);
        }
    }
    out
}

/// Reads canonical fields into a wire type; a wrong JSON type is named by its path
/// (`Port`, `Checks[1].TTL`, `Service Meta.owner`).
fn read<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        // Consul's own word for the registration's `Meta`.
        let path = if path == "Meta" || path.starts_with("Meta.") {
            format!("Service {path}")
        } else {
            path
        };
        invalid(format!("Invalid {path}: {}", e.into_inner()))
    })
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

fn opt_duration(value: Option<String>, key: &str) -> Result<Option<Duration>, DecodeError> {
    match value {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => duration::parse(&s).map(Some).ok_or_else(|| {
            invalid(format!(
                "Invalid {key} {s:?}: use a duration such as \"10s\" or \"1m\""
            ))
        }),
    }
}

/// Consul's limits on service metadata.
fn meta(m: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DecodeError> {
    if m.len() > 64 {
        return Err(invalid(
            "Invalid Service Meta: at most 64 key/value pairs are allowed",
        ));
    }
    for (k, v) in &m {
        if k.is_empty()
            || k.len() > 128
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(format!(
                "Invalid Service Meta: key {k:?} must be 1-128 characters of letters, digits, '_' or '-'"
            )));
        }
        if v.len() > 512 {
            return Err(invalid(format!(
                "Invalid Service Meta: value of {k:?} is longer than 512 characters"
            )));
        }
    }
    Ok(m)
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
