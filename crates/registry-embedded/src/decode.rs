//! Decoding `PUT /v1/agent/service/register` bodies the way Consul does: field names match
//! case-insensitively and in snake_case (real clients send `name`, `ID`, `check_id`,
//! `DeregisterCriticalServiceAfter` alike), unknown fields are ignored, and every invalid value
//! is rejected with a message before anything is written.

use std::{collections::BTreeMap, time::Duration};

use meshplane_model::{Health, InstanceId, ServiceName};
use serde_json::{Map, Value};

use crate::{
    duration,
    registration::{CheckKind, ServiceDef},
};

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

const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Weights",
    "EnableTagOverride",
    "Check",
    "Checks",
    "Kind",
];
const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "ID",
    "Name",
    "TTL",
    "HTTP",
    "Interval",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "Status",
    "Notes",
    "Method",
    "Header",
    "TCP",
    "GRPC",
    "Args",
    "ScriptArgs",
    "DockerContainerID",
    "H2PING",
    "UDP",
    "OSService",
    "AliasService",
];
const WEIGHT_FIELDS: &[&str] = &["Passing", "Warning"];

const CHECK_UPDATE_FIELDS: &[&str] = &["Status", "Output"];

/// Decodes a `PUT /v1/agent/check/update/:id` body: `{"Status": "passing", "Output": "…"}`.
pub fn decode_check_update(body: &[u8]) -> Result<(Health, String), DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Value::Object(raw) = value else {
        return Err(DecodeError::Json("expected a JSON object".into()));
    };
    let f = canonical(raw, CHECK_UPDATE_FIELDS);
    let status = match opt_string(&f, "Status")?.as_deref() {
        Some("passing") => Health::Passing,
        Some("warning") => Health::Warning,
        Some("critical") => Health::Critical,
        other => {
            return Err(invalid(format!(
                "Invalid Status {other:?}: use passing, warning or critical"
            )));
        }
    };
    Ok((status, opt_string(&f, "Output")?.unwrap_or_default()))
}

/// Decodes and validates a registration body.
pub fn decode_register(body: &[u8]) -> Result<RegisterRequest, DecodeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let Value::Object(raw) = value else {
        return Err(DecodeError::Json("expected a JSON object".into()));
    };
    let fields = canonical(raw, SERVICE_FIELDS);

    let name = match fields.get("Name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(invalid("Missing service name"));
        }
        Some(_) => return Err(invalid("Invalid Name: must be a string")),
    };
    let name = ServiceName::new(name).map_err(|e| invalid(format!("Invalid service name: {e}")))?;
    let id = match opt_string(&fields, "ID")? {
        Some(id) if !id.is_empty() => id,
        _ => name.to_string(),
    };
    let (weight_passing, weight_warning) = weights(fields.get("Weights"))?;
    let service = ServiceDef {
        id: InstanceId::new(id).map_err(|e| invalid(e.to_string()))?,
        name,
        tags: string_list(fields.get("Tags"), "Tags")?,
        address: opt_string(&fields, "Address")?.unwrap_or_default(),
        port: port(fields.get("Port"))?,
        meta: meta(fields.get("Meta"))?,
        weight_passing,
        weight_warning,
        enable_tag_override: matches!(fields.get("EnableTagOverride"), Some(Value::Bool(true))),
    };
    if let Some(kind) = opt_string(&fields, "Kind")?.filter(|k| !k.is_empty()) {
        return Err(invalid(format!(
            "Invalid Kind {kind:?}: the embedded registry only registers plain services"
        )));
    }

    let mut raw_checks = Vec::new();
    match fields.get("Check") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) if c.is_empty() => {}
        Some(Value::Object(c)) => raw_checks.push(c.clone()),
        Some(_) => return Err(invalid("Invalid Check: must be an object")),
    }
    match fields.get("Checks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for c in list {
                match c {
                    Value::Object(c) => raw_checks.push(c.clone()),
                    _ => return Err(invalid("Invalid Checks: every entry must be an object")),
                }
            }
        }
        Some(_) => return Err(invalid("Invalid Checks: must be an array of objects")),
    }
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
    raw: Map<String, Value>,
    service: &ServiceDef,
    i: usize,
    total: usize,
) -> Result<CheckSpec, DecodeError> {
    let f = canonical(raw, CHECK_FIELDS);
    for unsupported in [
        "TCP",
        "GRPC",
        "Args",
        "ScriptArgs",
        "DockerContainerID",
        "H2PING",
        "UDP",
        "OSService",
        "AliasService",
    ] {
        if f.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(invalid(format!(
                "Invalid check: {unsupported} checks are not supported by the embedded registry; use a TTL or HTTP check"
            )));
        }
    }
    let id = opt_string(&f, "CheckID")?
        .or(opt_string(&f, "ID")?)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            // Consul's defaults: `service:<id>`, suffixed `:<n>` when there are several.
            if total > 1 {
                format!("service:{}:{}", service.id, i + 1)
            } else {
                format!("service:{}", service.id)
            }
        });
    let name = opt_string(&f, "Name")?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("Service '{}' check", service.name));
    let ttl = opt_duration(&f, "TTL")?;
    let http = opt_string(&f, "HTTP")?.filter(|s| !s.is_empty());
    let kind = match (ttl, http) {
        (Some(_), Some(_)) => {
            return Err(invalid("Invalid check: give either TTL or HTTP, not both"));
        }
        (Some(ttl), None) if ttl.is_zero() => {
            return Err(invalid("Invalid check: TTL must be > 0"));
        }
        (Some(ttl), None) => CheckKind::Ttl { ttl },
        (None, Some(url)) => {
            let interval = opt_duration(&f, "Interval")?.unwrap_or_default();
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
                timeout: opt_duration(&f, "Timeout")?.unwrap_or(DEFAULT_HTTP_TIMEOUT),
                method: opt_string(&f, "Method")?
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "GET".into()),
                header: header(f.get("Header"))?,
            }
        }
        (None, None) => {
            return Err(invalid(
                "Invalid check: TTL or HTTP is required (the embedded registry runs TTL and HTTP checks)",
            ));
        }
    };
    let status = match opt_string(&f, "Status")?.as_deref() {
        None | Some("") | Some("critical") => Health::Critical,
        Some("passing") => Health::Passing,
        Some("warning") => Health::Warning,
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
        deregister_after: opt_duration(&f, "DeregisterCriticalServiceAfter")?,
        notes: opt_string(&f, "Notes")?.unwrap_or_default(),
        status,
    })
}

/// Renames keys to their canonical Consul spelling, matching case-insensitively and ignoring
/// `_`/`-` (Consul's `TranslateKeys` + mapstructure behaviour). Unknown keys are dropped.
fn canonical(raw: Map<String, Value>, fields: &[&'static str]) -> BTreeMap<&'static str, Value> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        let key = squash(&key);
        if let Some(field) = fields.iter().find(|f| squash(f) == key) {
            out.insert(*field, value);
        }
    }
    out
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

fn opt_string(f: &BTreeMap<&'static str, Value>, key: &str) -> Result<Option<String>, DecodeError> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!(
            "Invalid {key}: expected a string, got {other}"
        ))),
    }
}

fn opt_duration(
    f: &BTreeMap<&'static str, Value>,
    key: &str,
) -> Result<Option<Duration>, DecodeError> {
    match opt_string(f, key)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => duration::parse(&s).map(Some).ok_or_else(|| {
            invalid(format!(
                "Invalid {key} {s:?}: use a duration such as \"10s\" or \"1m\""
            ))
        }),
    }
}

fn port(v: Option<&Value>) -> Result<u16, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "Invalid Port {n}: must be an integer from 0 to 65535"
                ))
            }),
        Some(other) => Err(invalid(format!(
            "Invalid Port {other}: must be an integer from 0 to 65535"
        ))),
    }
}

fn string_list(v: Option<&Value>, key: &str) -> Result<Vec<String>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.clone()),
                other => Err(invalid(format!(
                    "Invalid {key}: expected strings, got {other}"
                ))),
            })
            .collect(),
        Some(other) => Err(invalid(format!(
            "Invalid {key}: expected an array of strings, got {other}"
        ))),
    }
}

fn meta(v: Option<&Value>) -> Result<BTreeMap<String, String>, DecodeError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(m) = v else {
        return Err(invalid(
            "Invalid Service Meta: expected an object of strings",
        ));
    };
    if m.len() > 64 {
        return Err(invalid(
            "Invalid Service Meta: at most 64 key/value pairs are allowed",
        ));
    }
    m.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.len() > 128 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(invalid(format!(
                    "Invalid Service Meta: key {k:?} must be 1-128 characters of letters, digits, '_' or '-'"
                )));
            }
            match v {
                Value::String(s) if s.len() <= 512 => Ok((k.clone(), s.clone())),
                Value::String(_) => Err(invalid(format!("Invalid Service Meta: value of {k:?} is longer than 512 characters"))),
                other => Err(invalid(format!("Invalid Service Meta: value of {k:?} must be a string, got {other}"))),
            }
        })
        .collect()
}

fn weights(v: Option<&Value>) -> Result<(u32, u32), DecodeError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok((1, 1));
    };
    let Value::Object(m) = v else {
        return Err(invalid(
            "Invalid Weights: expected {\"Passing\": n, \"Warning\": n}",
        ));
    };
    let f = canonical(m.clone(), WEIGHT_FIELDS);
    let num = |key: &str, default: u32| match f.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "Invalid Weights.{key} {n}: must be a non-negative integer"
                ))
            }),
        Some(other) => Err(invalid(format!(
            "Invalid Weights.{key} {other}: must be an integer"
        ))),
    };
    let passing = num("Passing", 1)?;
    if passing == 0 {
        return Err(invalid("Invalid Weights.Passing: must be greater than 0"));
    }
    Ok((passing, num("Warning", 1)?))
}

fn header(v: Option<&Value>) -> Result<BTreeMap<String, Vec<String>>, DecodeError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(m) = v else {
        return Err(invalid(
            "Invalid Header: expected an object of string arrays",
        ));
    };
    m.iter()
        .map(|(k, v)| Ok((k.clone(), string_list(Some(v), "Header")?)))
        .collect()
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
