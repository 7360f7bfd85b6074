//! Control-plane configuration: defaults, overridden by a `--config` YAML file, overridden
//! by `MESHPLANE_*` environment variables and flags (the binary merges those).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Which registry feeds the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
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

impl std::str::FromStr for RegistryKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(RegistryKind::Embedded),
            "consul" => Ok(RegistryKind::Consul),
            "file" => Ok(RegistryKind::File),
            other => Err(format!(
                "unknown registry `{other}`: use embedded, consul or file"
            )),
        }
    }
}

/// Settings of `meshplane control-plane`. Every field is optional in the YAML file; keys
/// are the flag names (`xds-addr`, `data-dir`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// Address of the xDS (ADS) gRPC server.
    pub xds_addr: SocketAddr,
    /// Address of the admin API and web panel.
    pub admin_addr: SocketAddr,
    /// Registry source.
    pub registry: RegistryKind,
    /// Embedded registry's Consul-compatible API address.
    pub registry_addr: SocketAddr,
    /// Consul HTTP address (`--registry consul`).
    pub consul_addr: Option<String>,
    /// Consul ACL token (`X-Consul-Token`), for `--registry consul`.
    pub consul_token: Option<String>,
    /// CA that signed Consul's HTTPS certificate, for `--registry consul`.
    pub consul_ca_file: Option<PathBuf>,
    /// Services file (`--registry file`).
    pub services_file: Option<PathBuf>,
    /// Where durable state (registry, CA) lives.
    pub data_dir: PathBuf,
    /// This control plane's datacenter.
    pub datacenter: String,
    /// Token required on admin and registry write routes (and sent to sidecar relays).
    pub token: Option<String>,
    /// Admin URLs of the other control-plane instances, for `/api/consistency`.
    pub peers: Vec<String>,
    /// SPIFFE trust domain of service identities.
    pub trust_domain: String,
    /// Certificate (PEM) of the xDS server; with `xds_tls_key` it serves TLS.
    pub xds_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the xDS server.
    pub xds_tls_key: Option<PathBuf>,
    /// CA bundle (PEM) proxies' client certificates must chain to; requires each proxy's
    /// certificate to prove the service it asks configuration for.
    pub xds_client_ca: Option<PathBuf>,
    /// Operator CA certificate (PEM) for the built-in CA; without it (and `ca_key`) a CA is
    /// generated once and kept under `data_dir/ca/`.
    pub ca_cert: Option<PathBuf>,
    /// Operator CA private key (PEM).
    pub ca_key: Option<PathBuf>,
    /// YAML file of per-service enrolment tokens for the CA (`orders: <token>`): a sidecar
    /// gets only the identity its token is for. Without it, `token` enrols every service.
    pub enrolment_tokens: Option<PathBuf>,
    /// Lifetime of certificates the built-in CA signs (sidecars renew at half of it), e.g.
    /// `24h`, `30m`.
    pub cert_ttl: String,
    /// Services allowed to depend on every service (`service: "*"`).
    pub allow_wildcard_dependencies: Vec<meshplane_model::ServiceName>,
    /// CA bundle that verifies external `https://` domains (default: the system bundle).
    pub domain_ca_file: Option<String>,
    /// Fixed addresses for external domains (split-horizon DNS).
    pub domain_addresses: std::collections::BTreeMap<String, std::net::IpAddr>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            xds_addr: ([127, 0, 0, 1], 18000).into(),
            admin_addr: ([127, 0, 0, 1], 18080).into(),
            registry: RegistryKind::Embedded,
            registry_addr: ([127, 0, 0, 1], 8500).into(),
            consul_addr: None,
            consul_token: None,
            consul_ca_file: None,
            services_file: None,
            data_dir: PathBuf::from("./meshplane-data"),
            datacenter: "dc1".to_owned(),
            token: None,
            peers: Vec::new(),
            trust_domain: meshplane_model::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            xds_tls_cert: None,
            xds_tls_key: None,
            xds_client_ca: None,
            ca_cert: None,
            ca_key: None,
            enrolment_tokens: None,
            cert_ttl: "24h".to_owned(),
            allow_wildcard_dependencies: Vec::new(),
            domain_ca_file: None,
            domain_addresses: Default::default(),
        }
    }
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
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
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
        if self.ca_cert.is_some() != self.ca_key.is_some() {
            return Err(ConfigError::Invalid(
                "--ca-cert and --ca-key go together".into(),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
