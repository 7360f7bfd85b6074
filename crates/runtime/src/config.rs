//! Control-plane configuration, declared once.
//!
//! [`ControlPlaneConfig`] is at the same time the flags of `meshplane control-plane` (clap
//! derive: a field's doc comment is its `--help` text, `default_value` its default, `env` its
//! `MESHPLANE_<FLAG>` variable), the `--config` YAML file (serde: the keys are the flag
//! names) and what [`crate::control_plane::start`] takes. [`ControlPlaneConfig::layered`]
//! merges the layers: flags > `MESHPLANE_<FLAG>` > `--config` file > defaults;
//! [`ControlPlaneConfig::to_yaml`] prints the result (`--print-config`) in the file's format.
//!
//! Adding a control-plane flag is one field on [`ControlPlaneConfig`], nothing else:
//!
//! ```ignore
//! /// What it does, for `--help` (the first sentence is the short help).
//! #[arg(long, env = "MESHPLANE_MY_FLAG", default_value = "x")]
//! pub my_flag: String,
//! ```
//!
//! - An optional setting is an `Option<T>` without `default_value`; a list is a `Vec<T>` with
//!   `value_delimiter = ','`; `T` parses with `FromStr` (or derives `clap::ValueEnum`) and
//!   (de)serializes with serde.
//! - A secret (a token) adds `hide_env_values = true`: that also keeps it out of
//!   `--print-config`.
//! - A setting too structured for a flag (a map) is `#[arg(skip)]`: a YAML-only key.
//!
//! The tests below check that every flag has its `MESHPLANE_<FLAG>` variable and its YAML key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::{Deserialize, Serialize};

/// Which registry feeds the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryKind {
    /// The embedded, durable registry with a Consul-compatible API (default).
    #[default]
    Embedded,
    /// A Consul agent or server, read with blocking queries.
    Consul,
    /// A YAML file of services, watched for changes.
    File,
}

/// Where one service's traffic may go (`service-datacenters` in the `--config` file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceDatacenters {
    /// Failover order of the other datacenters for this service, replacing
    /// `datacenter-order` (unlisted datacenters follow in name order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    /// Only the proxy's own datacenter: the service's traffic never leaves it.
    pub local_only: bool,
}

/// Settings of `meshplane control-plane`: its flags, its `MESHPLANE_<FLAG>` variables and
/// its `--config` YAML keys (the flag names, e.g. `xds-addr`). Absent YAML keys keep their
/// defaults; unknown keys are an error naming the key.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// xDS (ADS) gRPC address.
    #[arg(long, env = "MESHPLANE_XDS_ADDR", default_value = "127.0.0.1:18000")]
    pub xds_addr: SocketAddr,
    /// Admin API and web panel address.
    #[arg(long, env = "MESHPLANE_ADMIN_ADDR", default_value = "127.0.0.1:18080")]
    pub admin_addr: SocketAddr,
    /// Registry that feeds the control plane.
    #[arg(
        long,
        env = "MESHPLANE_REGISTRY",
        value_enum,
        default_value = "embedded"
    )]
    pub registry: RegistryKind,
    /// Embedded registry's Consul-compatible API address.
    #[arg(
        long,
        env = "MESHPLANE_REGISTRY_ADDR",
        default_value = "127.0.0.1:8500"
    )]
    pub registry_addr: SocketAddr,
    /// Consul HTTP address, for --registry consul.
    #[arg(long, env = "MESHPLANE_CONSUL_ADDR")]
    pub consul_addr: Option<String>,
    /// Consul ACL token (`X-Consul-Token`), for --registry consul.
    #[arg(long, env = "MESHPLANE_CONSUL_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,
    /// CA (PEM) of Consul's HTTPS certificate, for --registry consul.
    #[arg(long, env = "MESHPLANE_CONSUL_CA_FILE")]
    pub consul_ca_file: Option<PathBuf>,
    /// Services YAML file, for --registry file.
    #[arg(long, env = "MESHPLANE_SERVICES_FILE")]
    pub services_file: Option<PathBuf>,
    /// Directory for durable state (the embedded registry, the generated CA).
    #[arg(long, env = "MESHPLANE_DATA_DIR", default_value = "./meshplane-data")]
    pub data_dir: PathBuf,
    /// This control plane's datacenter.
    #[arg(long, env = "MESHPLANE_DATACENTER", default_value = "dc1")]
    pub datacenter: String,
    /// Token required on admin and registry write routes (and sent to sidecar relays).
    #[arg(long, env = "MESHPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Admin URLs of the other control-plane instances (for /api/consistency),
    /// comma-separated.
    #[arg(long, env = "MESHPLANE_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// SPIFFE trust domain of service identities.
    #[arg(
        long,
        env = "MESHPLANE_TRUST_DOMAIN",
        default_value = meshplane_model::identity::DEFAULT_TRUST_DOMAIN
    )]
    pub trust_domain: String,
    /// Certificate (PEM) of the xDS server; with --xds-tls-key the xDS port speaks TLS.
    #[arg(long, env = "MESHPLANE_XDS_TLS_CERT")]
    pub xds_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the xDS server.
    #[arg(long, env = "MESHPLANE_XDS_TLS_KEY")]
    pub xds_tls_key: Option<PathBuf>,
    /// CA (PEM) of proxies' client certificates: each proxy must then prove, with
    /// spiffe://<trust-domain>/service/<name>, the service it asks configuration for.
    #[arg(long, env = "MESHPLANE_XDS_CLIENT_CA")]
    pub xds_client_ca: Option<PathBuf>,
    /// Certificate chain (PEM) of the admin API (and the CA's signing route); with
    /// --admin-tls-key it serves HTTPS only. Sidecars then use --ca-url https://… and check
    /// it with --control-plane-ca-file.
    #[arg(long, env = "MESHPLANE_ADMIN_TLS_CERT")]
    pub admin_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --admin-tls-cert.
    #[arg(long, env = "MESHPLANE_ADMIN_TLS_KEY")]
    pub admin_tls_key: Option<PathBuf>,
    /// Certificate chain (PEM) of the embedded registry's Consul-compatible API; with
    /// --registry-tls-key it serves HTTPS only (sidecars: --registry https://…).
    #[arg(long, env = "MESHPLANE_REGISTRY_TLS_CERT")]
    pub registry_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --registry-tls-cert.
    #[arg(long, env = "MESHPLANE_REGISTRY_TLS_KEY")]
    pub registry_tls_key: Option<PathBuf>,
    /// Operator CA certificate (PEM) of the built-in CA; without it (and --ca-key) a CA is
    /// generated once and kept under --data-dir.
    #[arg(long, env = "MESHPLANE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Operator CA private key (PEM).
    #[arg(long, env = "MESHPLANE_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// YAML file of per-service enrolment tokens (`orders: <token>`): the CA then signs a
    /// service's identity only for its own token (or --token). Without it, --token enrols
    /// every service.
    #[arg(long, env = "MESHPLANE_ENROLMENT_TOKENS")]
    pub enrolment_tokens: Option<PathBuf>,
    /// Lifetime of certificates the built-in CA signs (e.g. 24h, 30m); sidecars renew at
    /// half of it.
    #[arg(long, env = "MESHPLANE_CERT_TTL", default_value = "24h")]
    pub cert_ttl: String,
    /// Services allowed to depend on every service (`service: "*"`), comma-separated.
    #[arg(
        long,
        env = "MESHPLANE_ALLOW_WILDCARD_DEPENDENCIES",
        value_delimiter = ','
    )]
    pub allow_wildcard_dependencies: Vec<meshplane_model::ServiceName>,
    /// CA bundle (PEM) verifying external https:// domains [default: the system bundle].
    #[arg(long, env = "MESHPLANE_DOMAIN_CA_FILE")]
    pub domain_ca_file: Option<String>,
    /// Other datacenters' control planes (admin URLs), followed for their local instances:
    /// `dc2=URL[,URL…];dc3=URL…`.
    #[arg(long, env = "MESHPLANE_REMOTE_DATACENTERS")]
    pub remote_datacenters: Option<String>,
    /// On `--registry consul` without --remote-datacenters, the datacenters of Consul's catalog
    /// never followed, comma-separated.
    #[arg(long, env = "MESHPLANE_REMOTE_DATACENTERS_DENY", value_delimiter = ',')]
    pub remote_datacenters_deny: Vec<String>,
    /// How long a remote datacenter's last state is kept while none of its control planes
    /// answers; then its instances are dropped.
    #[arg(long, env = "MESHPLANE_REMOTE_KEEP_STALE", default_value = "2m")]
    pub remote_keep_stale: String,
    /// CA bundle (PEM) verifying remote control planes' `https://` admin URLs [default: the
    /// system's roots].
    #[arg(long, env = "MESHPLANE_REMOTE_CA_FILE")]
    pub remote_ca_file: Option<PathBuf>,
    /// Grafana's address, e.g. `https://grafana.example.com`: the web panel links each
    /// service and instance to its dashboard (`deploy/grafana/`, imported with their uids).
    #[arg(long, env = "MESHPLANE_GRAFANA_URL")]
    pub grafana_url: Option<String>,
    /// Where every sidecar's Envoy sends trace spans: an OpenTelemetry collector's OTLP/gRPC
    /// address, `HOST:PORT` [default: no tracing].
    #[arg(long, env = "MESHPLANE_TRACING_COLLECTOR")]
    pub tracing_collector: Option<String>,
    /// Share of requests traced, in percent (0–100), for services whose descriptor sets no
    /// `tracing.sampling`; a request that arrives sampled stays sampled.
    #[arg(long, env = "MESHPLANE_TRACING_SAMPLING", default_value = "1")]
    pub tracing_sampling: String,
    /// Failover order of the other datacenters after each proxy's own, e.g. `dc2,dc3`;
    /// datacenters not listed follow in name order.
    #[arg(long, env = "MESHPLANE_DATACENTER_ORDER", value_delimiter = ',')]
    pub datacenter_order: Vec<String>,
    /// Envoy's overprovisioning factor (percent, at least 100) on every service's endpoints:
    /// a proxy's datacenter keeps all of a service's traffic while its share of healthy
    /// instances times this factor reaches 100 %. The default keeps traffic in the datacenter
    /// until none of its instances (up to 1,000) is healthy; 140 is Envoy's gradual spill-over.
    #[arg(
        long,
        env = "MESHPLANE_OVERPROVISIONING_FACTOR",
        default_value = "100000"
    )]
    pub overprovisioning_factor: u32,
    /// Per-service datacenter order or local-only pinning, e.g.
    /// `{payments: {order: [dc3, dc2]}, ledger: {local-only: true}}`. YAML only.
    #[arg(skip)]
    pub service_datacenters:
        std::collections::BTreeMap<meshplane_model::ServiceName, ServiceDatacenters>,
    /// Fixed addresses for external domains (split-horizon DNS), e.g.
    /// `{api.partner.example: 10.1.2.3}`. YAML only.
    #[arg(skip)]
    pub domain_addresses: std::collections::BTreeMap<String, std::net::IpAddr>,
}

impl Default for ControlPlaneConfig {
    /// The defaults declared on the fields (what `--help` shows), without the environment.
    fn default() -> Self {
        let command = flags().mut_args(|arg| arg.env(None));
        command
            .try_get_matches_from(["control-plane"])
            .and_then(|matches| Self::from_arg_matches(&matches))
            .expect("the defaults declared on ControlPlaneConfig parse (tested)")
    }
}

/// The control-plane flags alone, as clap sees them.
fn flags() -> clap::Command {
    ControlPlaneConfig::augment_args(clap::Command::new("control-plane"))
}

/// The YAML key of a flag (`xds_addr` → `xds-addr`).
fn yaml_key(arg: &clap::Arg) -> String {
    arg.get_id().as_str().replace('_', "-")
}

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML for this configuration.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why, with line and column.
        source: serde_norway::Error,
    },
    /// A setting is missing or contradicts another.
    #[error("{0}")]
    Invalid(String),
}

impl ControlPlaneConfig {
    /// Reads a YAML configuration file; absent keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The effective configuration: `parsed` (what clap made of the flags, the environment
    /// and the defaults, with `matches` its parse) for every setting given by a flag or a
    /// `MESHPLANE_<FLAG>` variable; the `file`, when there is one, for the rest.
    pub fn layered(
        parsed: Self,
        matches: &ArgMatches,
        file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let Some(path) = file else {
            return Ok(parsed);
        };
        let mut merged = Self::from_file(path)?.to_mapping()?;
        let given = parsed.to_mapping()?;
        for arg in flags().get_arguments() {
            let id = arg.get_id().as_str();
            let explicit = matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            let key = serde_norway::Value::from(yaml_key(arg));
            if let (true, Some(value)) = (explicit, given.get(&key)) {
                merged.insert(key, value.clone());
            }
        }
        serde_norway::from_value(serde_norway::Value::Mapping(merged))
            .map_err(|e| ConfigError::Invalid(format!("cannot merge the configuration: {e}")))
    }

    /// The configuration as a `--config` file (`--print-config`). Secrets are left out and
    /// only said to be set or not: a printed configuration is shared, a token is not.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        let mut mapping = self.to_mapping()?;
        let mut secrets = String::new();
        for arg in flags()
            .get_arguments()
            .filter(|a| a.is_hide_env_values_set())
        {
            let key = yaml_key(arg);
            let set = mapping
                .shift_remove(key.as_str())
                .is_some_and(|v| !v.is_null());
            let state = if set { "set (not printed)" } else { "not set" };
            secrets.push_str(&format!("# {key}: {state}\n"));
        }
        let body = serde_norway::to_string(&mapping)
            .map_err(|e| ConfigError::Invalid(format!("cannot print the configuration: {e}")))?;
        Ok(format!(
            "# meshplane control-plane: effective configuration (flags > MESHPLANE_<FLAG> > --config file > defaults)\n{body}{secrets}"
        ))
    }

    fn to_mapping(&self) -> Result<serde_norway::Mapping, ConfigError> {
        match serde_norway::to_value(self) {
            Ok(serde_norway::Value::Mapping(m)) => Ok(m),
            Ok(other) => Err(ConfigError::Invalid(format!(
                "the configuration is not a mapping: {other:?}"
            ))),
            Err(e) => Err(ConfigError::Invalid(format!(
                "cannot encode the configuration: {e}"
            ))),
        }
    }

    /// The per-service enrolment tokens (empty without `enrolment_tokens`): every key a
    /// valid service name, every token non-empty.
    pub fn load_enrolment_tokens(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
        let Some(path) = &self.enrolment_tokens else {
            return Ok(Default::default());
        };
        let bad =
            |m: String| ConfigError::Invalid(format!("--enrolment-tokens {}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let tokens: std::collections::BTreeMap<String, String> = serde_norway::from_str(&text)
            .map_err(|e| bad(format!("expected `service: token` lines: {e}")))?;
        for (service, token) in &tokens {
            meshplane_model::ServiceName::new(service.as_str())
                .map_err(|e| bad(format!("`{service}`: {e}")))?;
            if token.trim().is_empty() {
                return Err(bad(format!("the token of `{service}` is empty")));
            }
        }
        Ok(tokens)
    }

    /// The admin API's certificate and key, when it serves HTTPS.
    pub fn admin_tls(&self) -> Option<meshplane_https::TlsFiles> {
        tls_files(&self.admin_tls_cert, &self.admin_tls_key)
    }

    /// The embedded registry's certificate and key, when it serves HTTPS.
    pub fn registry_tls(&self) -> Option<meshplane_https::TlsFiles> {
        tls_files(&self.registry_tls_cert, &self.registry_tls_key)
    }

    /// `--remote-datacenters`: each remote datacenter and its control planes' admin URLs.
    pub fn remote_datacenters(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let Some(text) = self.remote_datacenters.as_deref() else {
            return Ok(Vec::new());
        };
        let bad = |m: String| {
            ConfigError::Invalid(format!(
                "--remote-datacenters {text:?}: {m} (expected dc2=URL[,URL…];dc3=URL…)"
            ))
        };
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (dc, urls) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` has no `=`")))?;
            let dc = dc.trim();
            if !is_datacenter_name(dc) {
                return Err(bad(format!("`{dc}` is not a datacenter name")));
            }
            if dc == self.datacenter {
                return Err(bad(format!(
                    "`{dc}` is this control plane's own datacenter"
                )));
            }
            if out.iter().any(|(d, _)| d == dc) {
                return Err(bad(format!("`{dc}` is listed twice")));
            }
            let urls: Vec<String> = urls
                .split(',')
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty())
                .collect();
            if urls.is_empty() {
                return Err(bad(format!("`{dc}` has no URL")));
            }
            if let Some(u) = urls
                .iter()
                .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
            {
                return Err(bad(format!("`{u}` is not an http:// or https:// URL")));
            }
            out.push((dc.to_owned(), urls));
        }
        Ok(out)
    }

    /// Checks `--datacenter-order`, `--overprovisioning-factor` and `service-datacenters`.
    pub fn check_locality(&self) -> Result<(), ConfigError> {
        let check_order = |what: &str, order: &[String]| {
            for (at, dc) in order.iter().enumerate() {
                if !is_datacenter_name(dc) {
                    return Err(ConfigError::Invalid(format!(
                        "{what}: `{dc}` is not a datacenter name"
                    )));
                }
                if order[..at].contains(dc) {
                    return Err(ConfigError::Invalid(format!(
                        "{what}: `{dc}` is listed twice"
                    )));
                }
            }
            Ok(())
        };
        check_order("--datacenter-order", &self.datacenter_order)?;
        if self.overprovisioning_factor < 100 {
            return Err(ConfigError::Invalid(format!(
                "--overprovisioning-factor {}: below 100 a datacenter with every instance healthy would still send traffic away; use 100 or more (140 spills gradually, 100000 only when none is healthy)",
                self.overprovisioning_factor
            )));
        }
        for (service, s) in &self.service_datacenters {
            if let Some(order) = &s.order {
                if s.local_only {
                    return Err(ConfigError::Invalid(format!(
                        "service-datacenters.{service}: `order` and `local-only: true` contradict each other (a local-only service has no other datacenter); keep one"
                    )));
                }
                check_order(&format!("service-datacenters.{service}.order"), order)?;
            }
        }
        Ok(())
    }

    /// `--tracing-collector` and `--tracing-sampling`, checked: `None` without a collector.
    pub fn tracing(&self) -> Result<Option<meshplane_translate::TracingOptions>, ConfigError> {
        let sampling = meshplane_model::descriptor::Percent::parse(&self.tracing_sampling)
            .map_err(|e| ConfigError::Invalid(format!("--tracing-sampling: {e}")))?;
        let Some(collector) = &self.tracing_collector else {
            return Ok(None);
        };
        let bad = |why: &str| {
            ConfigError::Invalid(format!(
                "--tracing-collector `{collector}`: {why}; give the OTLP/gRPC address as HOST:PORT, e.g. otel-collector:4317 or 10.0.0.9:4317"
            ))
        };
        let (host, port) = collector.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let valid_name = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !(valid_name || host.parse::<std::net::IpAddr>().is_ok()) {
            return Err(bad("the host is neither a DNS name nor an IP address"));
        }
        Ok(Some(meshplane_translate::TracingOptions {
            host: host.to_owned(),
            port,
            sampling,
        }))
    }

    /// `--remote-keep-stale` as a duration.
    pub fn remote_keep_stale(&self) -> Result<std::time::Duration, ConfigError> {
        meshplane_model::descriptor::parse_duration(&self.remote_keep_stale).map_err(|e| {
            ConfigError::Invalid(format!(
                "--remote-keep-stale {:?}: {e}",
                self.remote_keep_stale
            ))
        })
    }

    /// `cert_ttl` as a duration.
    pub fn cert_ttl(&self) -> Result<std::time::Duration, ConfigError> {
        meshplane_model::descriptor::parse_duration(&self.cert_ttl)
            .map_err(|e| ConfigError::Invalid(format!("--cert-ttl {:?}: {e}", self.cert_ttl)))
    }

    /// Checks settings that depend on each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.xds_tls_cert.is_some() != self.xds_tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "--xds-tls-cert and --xds-tls-key go together".into(),
            ));
        }
        if self.xds_client_ca.is_some() && self.xds_tls_cert.is_none() {
            return Err(ConfigError::Invalid(
                "--xds-client-ca needs TLS on the xDS port: also give --xds-tls-cert and --xds-tls-key".into(),
            ));
        }
        for (cert, key, flags) in [
            (
                &self.admin_tls_cert,
                &self.admin_tls_key,
                "--admin-tls-cert and --admin-tls-key",
            ),
            (
                &self.registry_tls_cert,
                &self.registry_tls_key,
                "--registry-tls-cert and --registry-tls-key",
            ),
        ] {
            if cert.is_some() != key.is_some() {
                return Err(ConfigError::Invalid(format!("{flags} go together")));
            }
        }
        if self.ca_cert.is_some() != self.ca_key.is_some() {
            return Err(ConfigError::Invalid(
                "--ca-cert and --ca-key go together".into(),
            ));
        }
        self.remote_datacenters()?;
        self.remote_keep_stale()?;
        self.check_locality()?;
        self.tracing()?;
        if let Some(url) = &self.grafana_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "--grafana-url `{url}` is not an http:// or https:// URL"
            )));
        }
        let ttl = self.cert_ttl()?;
        if ttl < std::time::Duration::from_secs(10) {
            return Err(ConfigError::Invalid(format!(
                "--cert-ttl {}: certificates must live at least 10s",
                self.cert_ttl
            )));
        }
        match self.registry {
            RegistryKind::Consul if self.consul_addr.is_none() => Err(ConfigError::Invalid(
                "--registry consul needs --consul-addr (e.g. http://127.0.0.1:8500)".into(),
            )),
            RegistryKind::File if self.services_file.is_none() => Err(ConfigError::Invalid(
                "--registry file needs --services-file FILE".into(),
            )),
            _ => Ok(()),
        }
    }
}

fn tls_files(cert: &Option<PathBuf>, key: &Option<PathBuf>) -> Option<meshplane_https::TlsFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some(meshplane_https::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    }
}

/// A datacenter name: letters, digits, `-`, `_`, `.`.
fn is_datacenter_name(dc: &str) -> bool {
    !dc.is_empty()
        && dc
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (ControlPlaneConfig, ArgMatches) {
        let matches = flags()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(std::iter::once("control-plane").chain(args.iter().copied()))
            .expect("valid flags");
        let parsed = ControlPlaneConfig::from_arg_matches(&matches).expect("config");
        (parsed, matches)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = ControlPlaneConfig::default();
        assert_eq!(d.xds_addr.to_string(), "127.0.0.1:18000");
        assert_eq!(d.admin_addr.to_string(), "127.0.0.1:18080");
        assert_eq!(d.registry, RegistryKind::Embedded);
        assert_eq!(d.registry_addr.to_string(), "127.0.0.1:8500");
        assert_eq!(d.data_dir, PathBuf::from("./meshplane-data"));
        assert_eq!(d.datacenter, "dc1");
        assert_eq!(d.trust_domain, "meshplane.local");
        assert_eq!(d.cert_ttl, "24h");
        assert!(d.token.is_none() && d.peers.is_empty() && d.domain_addresses.is_empty());
    }

    #[test]
    fn every_flag_has_its_variable_and_its_yaml_key() {
        let keys = ControlPlaneConfig::default().to_mapping().expect("mapping");
        for arg in flags().get_arguments() {
            let long = arg.get_long().expect("every setting is a long flag");
            let env = format!("MESHPLANE_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(&env)), "--{long}");
            assert_eq!(yaml_key(arg), long);
            assert!(keys.contains_key(long), "--{long} has no YAML key");
        }
    }

    #[test]
    fn datacenter_order_and_service_datacenters_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tmp dir");
        let path = dir.path().join("cp.yaml");
        std::fs::write(
            &path,
            "datacenter-order: [dc3]\noverprovisioning-factor: 140\nservice-datacenters:\n  \
             payments: {order: [dc2, dc3]}\n  ledger: {local-only: true}\n",
        )
        .expect("write");
        let (parsed, matches) = parse(&["--datacenter-order", "dc2,dc3"]);
        let cfg = ControlPlaneConfig::layered(parsed, &matches, Some(&path)).expect("merged");
        assert_eq!(cfg.datacenter_order, ["dc2", "dc3"], "flag over file");
        assert_eq!(cfg.overprovisioning_factor, 140);
        let service = |s: &str| meshplane_model::ServiceName::new(s).expect("name");
        assert_eq!(
            cfg.service_datacenters.get(&service("payments")),
            Some(&ServiceDatacenters {
                order: Some(vec!["dc2".into(), "dc3".into()]),
                local_only: false
            })
        );
        assert!(cfg.service_datacenters[&service("ledger")].local_only);
        cfg.validate().expect("valid");
        assert_eq!(
            ControlPlaneConfig::default().overprovisioning_factor,
            meshplane_translate::DEFAULT_OVERPROVISIONING_FACTOR
        );

        let invalid = |edit: &dyn Fn(&mut ControlPlaneConfig)| {
            let mut cfg = cfg.clone();
            edit(&mut cfg);
            cfg.validate().expect_err("invalid").to_string()
        };
        let e = invalid(&|c| c.datacenter_order = vec!["dc2".into(), "dc2".into()]);
        assert!(
            e.contains("--datacenter-order") && e.contains("twice"),
            "{e}"
        );
        let e = invalid(&|c| c.datacenter_order = vec!["d c".into()]);
        assert!(e.contains("not a datacenter name"), "{e}");
        let e = invalid(&|c| c.overprovisioning_factor = 99);
        assert!(e.contains("--overprovisioning-factor 99"), "{e}");
        for (collector, why) in [
            ("otel", "no port"),
            ("otel:0", "not a number"),
            ("otel:http", "not a number"),
            ("ot el:4317", "neither"),
            (":4317", "neither"),
        ] {
            let e = invalid(&|c| c.tracing_collector = Some(collector.to_owned()));
            assert!(
                e.contains("--tracing-collector") && e.contains(why),
                "{collector}: {e}"
            );
        }
        let e = invalid(&|c| c.tracing_sampling = "150".to_owned());
        assert!(e.contains("--tracing-sampling"), "{e}");
        let mut traced = cfg.clone();
        assert_eq!(
            traced.tracing().expect("valid"),
            None,
            "no collector, no tracing"
        );
        traced.tracing_collector = Some("[::1]:4317".to_owned());
        traced.tracing_sampling = "0.5".to_owned();
        let t = traced.tracing().expect("valid").expect("tracing");
        assert_eq!(
            (t.host.as_str(), t.port, t.sampling.value()),
            ("::1", 4317, 0.5)
        );
        let e = invalid(&|c| {
            c.service_datacenters.insert(
                service("ledger"),
                ServiceDatacenters {
                    order: Some(vec!["dc2".into()]),
                    local_only: true,
                },
            );
        });
        assert!(
            e.contains("service-datacenters.ledger") && e.contains("contradict"),
            "{e}"
        );
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().expect("tmp dir");
        let path = dir.path().join("cp.yaml");
        std::fs::write(
            &path,
            "xds-addr: 127.0.0.1:19000\ndatacenter: dc2\npeers: [http://a:1]\ncert-ttl: 1h\n\
             domain-addresses: {api.partner.example: 10.1.2.3}\n",
        )
        .expect("write");
        let (parsed, matches) = parse(&[
            "--xds-addr",
            "127.0.0.1:19001",
            "--peers",
            "http://b:2,http://c:3",
        ]);
        let cfg = ControlPlaneConfig::layered(parsed, &matches, Some(&path)).expect("merged");
        assert_eq!(cfg.xds_addr.port(), 19001, "flag over file");
        assert_eq!(cfg.peers, ["http://b:2", "http://c:3"], "flag over file");
        assert_eq!(cfg.datacenter, "dc2", "file over default");
        assert_eq!(cfg.cert_ttl, "1h", "file over default");
        assert_eq!(cfg.admin_addr.port(), 18080, "default");
        assert_eq!(
            cfg.domain_addresses
                .get("api.partner.example")
                .map(ToString::to_string),
            Some("10.1.2.3".to_owned()),
            "YAML-only keys"
        );
        // A flag given with its default value still wins over the file.
        let (parsed, matches) = parse(&["--datacenter", "dc1"]);
        let cfg = ControlPlaneConfig::layered(parsed, &matches, Some(&path)).expect("merged");
        assert_eq!(cfg.datacenter, "dc1");
    }

    #[test]
    fn printed_configuration_reads_back_without_its_secrets() {
        let cfg = ControlPlaneConfig {
            token: Some("s3cret".into()),
            registry: RegistryKind::File,
            services_file: Some("services.yaml".into()),
            peers: vec!["http://peer:18080".into()],
            domain_addresses: [("api.partner.example".to_owned(), [10, 1, 2, 3].into())]
                .into_iter()
                .collect(),
            datacenter_order: vec!["dc3".into(), "dc2".into()],
            service_datacenters: [(
                meshplane_model::ServiceName::new("ledger").expect("name"),
                ServiceDatacenters {
                    order: None,
                    local_only: true,
                },
            )]
            .into(),
            ..Default::default()
        };
        let yaml = cfg.to_yaml().expect("yaml");
        assert!(!yaml.contains("s3cret"), "{yaml}");
        assert!(yaml.contains("# token: set (not printed)"), "{yaml}");
        assert!(yaml.contains("# consul-token: not set"), "{yaml}");
        let back: ControlPlaneConfig = serde_norway::from_str(&yaml).expect("reads back");
        assert_eq!(back, ControlPlaneConfig { token: None, ..cfg });
    }

    #[test]
    fn yaml_keys_are_flag_names_and_unknown_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("meshplane-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("cp.yaml");
        std::fs::write(&path, "xds-addr: 127.0.0.1:19000\ndatacenter: dc2\n").expect("write");
        let cfg = ControlPlaneConfig::from_file(&path).expect("valid");
        assert_eq!(cfg.xds_addr.port(), 19000);
        assert_eq!(cfg.datacenter, "dc2");
        assert_eq!(cfg.admin_addr.port(), 18080, "absent keys keep defaults");

        std::fs::write(&path, "xds-adr: 127.0.0.1:19000\n").expect("write");
        let err = ControlPlaneConfig::from_file(&path).expect_err("typo");
        assert!(err.to_string().contains("xds-adr"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn consul_needs_an_address() {
        let cfg = ControlPlaneConfig {
            registry: RegistryKind::Consul,
            ..Default::default()
        };
        assert!(
            cfg.validate()
                .expect_err("missing")
                .to_string()
                .contains("--consul-addr")
        );
    }

    #[test]
    fn enrolment_tokens_are_checked() {
        let dir = std::env::temp_dir().join(format!("meshplane-enrol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("tokens.yaml");
        let cfg = ControlPlaneConfig {
            enrolment_tokens: Some(path.clone()),
            ..Default::default()
        };
        std::fs::write(&path, "orders: s3cret\nweb: other\n").expect("write");
        let tokens = cfg.load_enrolment_tokens().expect("valid");
        assert_eq!(tokens.get("orders").map(String::as_str), Some("s3cret"));
        for (text, says) in [
            ("Bad Name: x\n", "Bad Name"),
            ("orders: \"  \"\n", "empty"),
            ("- orders\n", "service: token"),
        ] {
            std::fs::write(&path, text).expect("write");
            let err = cfg.load_enrolment_tokens().expect_err(text).to_string();
            assert!(
                err.contains(says) && err.contains("--enrolment-tokens"),
                "{err}"
            );
            assert!(!err.contains("s3cret"), "tokens never in errors: {err}");
        }
        assert!(
            ControlPlaneConfig::default()
                .load_enrolment_tokens()
                .expect("none")
                .is_empty()
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn remote_datacenters_are_parsed_and_checked() {
        let with = |text: &str| ControlPlaneConfig {
            remote_datacenters: Some(text.into()),
            ..ControlPlaneConfig::default()
        };
        assert_eq!(
            with("dc2=http://a:1,https://b:2/ ; dc3=http://c:3")
                .remote_datacenters()
                .expect("valid"),
            [
                (
                    "dc2".to_owned(),
                    vec!["http://a:1".to_owned(), "https://b:2".to_owned()]
                ),
                ("dc3".to_owned(), vec!["http://c:3".to_owned()]),
            ]
        );
        assert!(
            ControlPlaneConfig::default()
                .remote_datacenters()
                .expect("none")
                .is_empty()
        );
        for (bad, says) in [
            ("dc2", "has no `=`"),
            ("dc1=http://a:1", "own datacenter"),
            ("dc2=http://a:1;dc2=http://b:1", "listed twice"),
            ("dc2=", "has no URL"),
            ("dc2=a:1", "not an http:// or https:// URL"),
            ("d c=http://a:1", "not a datacenter name"),
        ] {
            let e = with(bad).validate().expect_err(bad).to_string();
            assert!(
                e.contains(says) && e.contains("--remote-datacenters"),
                "{bad}: {e}"
            );
        }
        let e = ControlPlaneConfig {
            remote_keep_stale: "soon".into(),
            ..ControlPlaneConfig::default()
        }
        .validate()
        .expect_err("bad duration")
        .to_string();
        assert!(e.contains("--remote-keep-stale"), "{e}");
    }
}
