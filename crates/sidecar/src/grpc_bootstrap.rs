//! `meshplane bootstrap --grpc`: the bootstrap of a proxyless gRPC client, the JSON file
//! gRPC's own xDS client reads from `GRPC_XDS_BOOTSTRAP` (gRFC A27; A65 for `tls`
//! credentials; A29 for `certificate_providers`). Pure: a spec in, JSON out.
//!
//! With certificate files (`--certs-dir`), the bootstrap defines the certificate provider
//! instance [`GRPC_CERTIFICATE_PROVIDER`] (gRPC's `file_watcher` plugin on those files) and
//! says so in the node metadata ([`CERTIFICATE_PROVIDER_KEY`]): the control plane then
//! serves clusters whose mTLS names that instance, which gRPC would NACK if the bootstrap
//! did not define it.
//!
//! The node is the same as a sidecar's Envoy (instance id, service, datacenter as
//! `locality.zone`, the descriptor as written as metadata), so dependency scoping and
//! permissions apply to the client as to an Envoy, plus `proxyless: grpc`, which tells the
//! control plane to serve gRPC's subset of xDS. No admin address: nothing to relay to.

use std::path::Path;

use std::time::Duration;

use meshplane_model::node_metadata::{
    CERTIFICATE_PROVIDER_KEY, GRPC_CERTIFICATE_PROVIDER, PROXYLESS_GRPC, PROXYLESS_KEY,
};
use serde_json::{Value, json};

use crate::config::ControlPlaneAddr;

/// What a gRPC bootstrap is made of.
#[derive(Debug, Clone)]
pub struct GrpcBootstrapSpec<'a> {
    /// The descriptor as written (JSON), sent as node metadata.
    pub descriptor: &'a Value,
    /// `node.id`.
    pub instance_id: &'a str,
    /// `node.cluster`: the descriptor's service.
    pub service: &'a str,
    /// `node.locality.zone`.
    pub datacenter: &'a str,
    /// The control plane's xDS addresses, in failover order.
    pub control_plane: &'a [ControlPlaneAddr],
    /// TLS with a client certificate on the xDS connection (the control plane's
    /// `--xds-client-ca`): gRPC reads these files itself.
    pub tls: Option<GrpcXdsTls<'a>>,
    /// The service's certificate for mTLS to its callees (gRFC A29).
    pub certificates: Option<GrpcCertificates<'a>>,
}

/// The files of gRPC's `file_watcher` certificate provider.
#[derive(Debug, Clone, Copy)]
pub struct GrpcCertificates<'a> {
    /// The service's certificate chain.
    pub cert_file: &'a Path,
    /// Its private key.
    pub key_file: &'a Path,
    /// The mesh's CA bundle callees are verified against.
    pub ca_file: &'a Path,
    /// How often gRPC re-reads the files.
    pub refresh_interval: Duration,
}

/// Files for gRPC's `tls` channel credentials (gRFC A65).
#[derive(Debug, Clone, Copy)]
pub struct GrpcXdsTls<'a> {
    /// CA bundle that signs the control plane's certificate.
    pub ca_file: &'a Path,
    /// The client's certificate (with its service's SPIFFE id).
    pub cert_file: &'a Path,
    /// Its private key.
    pub key_file: &'a Path,
    /// How often gRPC re-reads the files (renewed ones); `None`: gRPC's default.
    pub refresh_interval: Option<Duration>,
}

/// The bootstrap JSON. Every control-plane address is an `xds_servers` entry: gRPC
/// versions with xDS server fallback (gRFC A71) use the next when one is unreachable,
/// older ones use the first.
pub fn grpc_bootstrap(spec: &GrpcBootstrapSpec<'_>) -> Value {
    let creds = match spec.tls {
        Some(tls) => {
            let mut config = json!({
                "ca_certificate_file": tls.ca_file.display().to_string(),
                "certificate_file": tls.cert_file.display().to_string(),
                "private_key_file": tls.key_file.display().to_string(),
            });
            if let Some(every) = tls.refresh_interval {
                config["refresh_interval"] = json!(proto_duration(every));
            }
            json!([{ "type": "tls", "config": config }])
        }
        None => json!([{ "type": "insecure" }]),
    };
    let servers: Vec<Value> = spec
        .control_plane
        .iter()
        .map(|a| {
            let host = if a.host.contains(':') {
                format!("[{}]", a.host)
            } else {
                a.host.clone()
            };
            json!({
                "server_uri": format!("{host}:{}", a.port),
                "channel_creds": creds,
                "server_features": ["xds_v3"],
            })
        })
        .collect();
    let mut metadata = match spec.descriptor {
        Value::Object(fields) => fields.clone(),
        _ => serde_json::Map::new(),
    };
    metadata.insert(PROXYLESS_KEY.to_owned(), json!(PROXYLESS_GRPC));
    if spec.certificates.is_some() {
        metadata.insert(
            CERTIFICATE_PROVIDER_KEY.to_owned(),
            json!(GRPC_CERTIFICATE_PROVIDER),
        );
    }
    let mut bootstrap = json!({
        "xds_servers": servers,
        "node": {
            "id": spec.instance_id,
            "cluster": spec.service,
            "locality": { "zone": spec.datacenter },
            "metadata": metadata,
        },
    });
    if let Some(files) = spec.certificates {
        bootstrap["certificate_providers"] = json!({
            GRPC_CERTIFICATE_PROVIDER: {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": files.cert_file.display().to_string(),
                    "private_key_file": files.key_file.display().to_string(),
                    "ca_certificate_file": files.ca_file.display().to_string(),
                    "refresh_interval": proto_duration(files.refresh_interval),
                },
            },
        });
    }
    bootstrap
}

/// A duration as protobuf JSON (`"10s"`, `"0.500s"`), which is what gRPC parses.
fn proto_duration(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        ms => format!("{}.{ms:03}s", d.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_carries_the_descriptor_and_the_proxyless_marker() {
        let descriptor = json!({ "service": "checkout", "port": 8080, "ingress": { "port": 31001 },
            "dependencies": [{ "service": "payments" }] });
        let addrs = ControlPlaneAddr::parse_list("127.0.0.1:18000,[::1]:18001").expect("valid");
        let value = grpc_bootstrap(&GrpcBootstrapSpec {
            descriptor: &descriptor,
            instance_id: "checkout-1",
            service: "checkout",
            datacenter: "dc2",
            control_plane: &addrs,
            tls: None,
            certificates: None,
        });
        assert_eq!(value["node"]["id"], "checkout-1");
        assert_eq!(value["node"]["cluster"], "checkout");
        assert_eq!(value["node"]["locality"]["zone"], "dc2");
        assert_eq!(value["node"]["metadata"]["proxyless"], "grpc");
        assert_eq!(
            value["node"]["metadata"]["dependencies"][0]["service"],
            "payments"
        );
        assert_eq!(value["xds_servers"][0]["server_uri"], "127.0.0.1:18000");
        assert_eq!(value["xds_servers"][1]["server_uri"], "[::1]:18001");
        assert_eq!(value["xds_servers"][0]["server_features"][0], "xds_v3");
        assert_eq!(
            value["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
        let tls = grpc_bootstrap(&GrpcBootstrapSpec {
            descriptor: &descriptor,
            instance_id: "checkout-1",
            service: "checkout",
            datacenter: "dc1",
            control_plane: &addrs[..1],
            tls: Some(GrpcXdsTls {
                ca_file: Path::new("/etc/ca.pem"),
                cert_file: Path::new("/etc/cert.pem"),
                key_file: Path::new("/etc/key.pem"),
                refresh_interval: None,
            }),
            certificates: None,
        });
        let creds = &tls["xds_servers"][0]["channel_creds"][0];
        assert_eq!(creds["type"], "tls");
        assert_eq!(creds["config"]["certificate_file"], "/etc/cert.pem");
        assert!(creds["config"].get("refresh_interval").is_none());
        assert!(tls.get("certificate_providers").is_none());
        assert!(
            tls["node"]["metadata"]
                .get("certificate_provider")
                .is_none()
        );
    }

    #[test]
    fn certificate_files_become_the_provider_the_clusters_name() {
        let descriptor =
            json!({ "service": "checkout", "port": 8080, "ingress": { "port": 31001 } });
        let addrs = ControlPlaneAddr::parse_list("127.0.0.1:18000").expect("valid");
        let value = grpc_bootstrap(&GrpcBootstrapSpec {
            descriptor: &descriptor,
            instance_id: "checkout-1",
            service: "checkout",
            datacenter: "dc1",
            control_plane: &addrs,
            tls: None,
            certificates: Some(GrpcCertificates {
                cert_file: Path::new("/certs/current/cert.pem"),
                key_file: Path::new("/certs/current/key.pem"),
                ca_file: Path::new("/certs/current/ca.pem"),
                refresh_interval: Duration::from_millis(1500),
            }),
        });
        assert_eq!(
            value["node"]["metadata"]["certificate_provider"],
            "meshplane"
        );
        let provider = &value["certificate_providers"]["meshplane"];
        assert_eq!(provider["plugin_name"], "file_watcher");
        assert_eq!(
            provider["config"]["certificate_file"],
            "/certs/current/cert.pem"
        );
        assert_eq!(
            provider["config"]["private_key_file"],
            "/certs/current/key.pem"
        );
        assert_eq!(
            provider["config"]["ca_certificate_file"],
            "/certs/current/ca.pem"
        );
        assert_eq!(provider["config"]["refresh_interval"], "1.500s");
        // The xDS connection itself is unchanged.
        assert_eq!(
            value["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
    }
}
