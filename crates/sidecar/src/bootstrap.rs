//! The Envoy bootstrap: a pure function of the descriptor and the sidecar's settings.
//!
//! Everything Envoy serves comes over ADS from the control plane; the bootstrap only says
//! who this proxy is (`node`), where the control plane is (the static `meshplane_xds`
//! cluster, one failover priority per address), where the admin API listens (127.0.0.1
//! only), the scrape listener that serves Prometheus the admin's `/stats/prometheus` and
//! nothing else, and which statistics Envoy keeps (`stats.rs`). Output is JSON, which Envoy
//! reads as YAML.

use std::net::{IpAddr, SocketAddr};

use meshplane_model::identity::{IDENTITY_SECRET, TRUST_SECRET};
use meshplane_model::node_metadata::{ADMIN_KEY, ADMIN_RELAY_KEY, LISTEN_ADDRESS_KEY};
use meshplane_model::registration::METRICS_PATH;
use serde_json::{Value, json};

use crate::config::{ControlPlaneAddr, XdsFlavour};

/// Name of the static cluster that reaches the control plane.
pub const XDS_CLUSTER: &str = "meshplane_xds";

/// Name of the scrape listener (static, so scraping works whatever the control plane does).
pub const METRICS_LISTENER: &str = "meshplane_metrics";

/// Static cluster from the scrape listener to Envoy's own admin API.
const ADMIN_CLUSTER: &str = "meshplane_admin";

/// Cap on downstream connections, so Envoy's overload manager has a limit (and does not warn).
const MAX_DOWNSTREAM_CONNECTIONS: u64 = 50_000;

/// How often Envoy sends an HTTP/2 PING on the xDS connection (±15 %, Envoy's default
/// jitter). A control plane that hangs (a partition, a frozen VM: the connection stays open,
/// nothing answers) sends no FIN or RST, so only an unanswered PING reveals it. 5 s costs a
/// 10,000-proxy mesh 2,000 tiny frames a second at the control plane.
pub const XDS_KEEPALIVE_INTERVAL_SECS: u64 = 5;

/// How long a PING may go unanswered before Envoy aborts the xDS connection and reconnects.
pub const XDS_KEEPALIVE_TIMEOUT_SECS: u64 = 2;

/// The longest a hung control plane goes unnoticed: a PING interval at its jittered maximum
/// plus the PING timeout (5 s × 1.15 + 2 s, rounded up).
pub const XDS_HANG_DETECTED_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);

/// Envoy's backoff between xDS stream attempts, first and longest (full jitter: each wait is
/// random below the current step). Envoy's default is 500 ms growing to 30 s, which can leave
/// a proxy blind for half a minute after its control plane is back; capped at 500 ms, a
/// proxy resumes within half a second of the control plane answering again, and a reconnect
/// storm still spreads over that half second.
const XDS_RETRY_BASE: &str = "0.1s";
const XDS_RETRY_MAX: &str = "0.5s";

/// What the bootstrap is built from.
#[derive(Debug, Clone)]
pub struct BootstrapSpec<'a> {
    /// The descriptor as written (YAML converted to JSON, same keys and values).
    pub descriptor: &'a Value,
    /// `node.id`: the instance id.
    pub instance_id: &'a str,
    /// `node.cluster`: the service name.
    pub service: &'a str,
    /// `node.locality.zone`: the datacenter.
    pub datacenter: &'a str,
    /// Envoy's admin address (always loopback).
    pub admin: SocketAddr,
    /// Control-plane addresses, in failover order.
    pub control_plane: &'a [ControlPlaneAddr],
    /// State-of-the-world or delta ADS.
    pub xds: XdsFlavour,
    /// Address the ingress listener binds, if not all interfaces.
    pub listen_address: Option<IpAddr>,
    /// Where the admin relay listens, advertised to the control plane.
    pub admin_relay: Option<SocketAddr>,
    /// TLS on the connection to the control plane, and the certificate Envoy presents.
    pub xds_tls: Option<XdsTlsMode<'a>>,
    /// Unix socket where the sidecar serves this proxy's certificate and trust bundle (SDS).
    pub sds_socket: &'a std::path::Path,
    /// Which statistics Envoy creates (the descriptor's `stats`).
    pub stats: &'a meshplane_model::Stats,
    /// Port of the scrape listener, on the ingress listener's address; `None`: no scrape
    /// listener.
    pub metrics_port: Option<u16>,
    /// Where this process serves the app's egress flags (`meshplane:egress-flags`, which the
    /// egress route of `/.meshplane/egress` names); `None`: no such cluster.
    pub egress_flags: Option<SocketAddr>,
}

/// How Envoy authenticates to the control plane on the xDS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsTlsMode<'a> {
    /// Host files, read by Envoy: the certificate and key it presents, and the CA bundle the
    /// control plane's certificate must chain to.
    HostFiles {
        /// Certificate chain (PEM).
        cert_file: &'a std::path::Path,
        /// Its private key (PEM).
        key_file: &'a std::path::Path,
        /// CA bundle (PEM) for the control plane's certificate.
        ca_file: &'a std::path::Path,
    },
    /// The identity the sidecar serves over SDS (the CA-issued certificate, renewed: new
    /// connections use the new certificate, the live stream stays up). The control plane's
    /// certificate must chain to `ca_file`, or else to the mesh's trust bundle, and name the
    /// control-plane host dialled (DNS or IP SAN), so no workload certificate of the mesh
    /// can stand in for the control plane.
    Sds {
        /// CA bundle (PEM) for the control plane's certificate; `None`: the trust bundle.
        ca_file: Option<&'a std::path::Path>,
    },
}

/// Builds the bootstrap document.
pub fn bootstrap(spec: &BootstrapSpec<'_>) -> Value {
    let mut bootstrap = json!({
        "node": node(spec),
        "admin": {
            "address": socket_address(&spec.admin.ip().to_string(), spec.admin.port()),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": spec.xds.api_type(),
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {
                        "retry_back_off": { "base_interval": XDS_RETRY_BASE, "max_interval": XDS_RETRY_MAX },
                    },
                } }],
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" },
        },
        "static_resources": {
            "clusters": [xds_cluster(spec.control_plane, spec.xds_tls), sds_cluster(spec.sds_socket)],
        },
        "layered_runtime": {
            "layers": [
                { "name": "static", "static_layer": {} },
                // Lets an operator flip runtime flags through the (loopback-only) admin API.
                { "name": "admin", "admin_layer": {} },
            ],
        },
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                },
            }],
        },
    });
    if let Some(port) = spec.metrics_port {
        let listen = spec
            .listen_address
            .map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
        let statics = &mut bootstrap["static_resources"];
        statics["listeners"] = json!([metrics_listener(&listen, port)]);
        if let Some(clusters) = statics["clusters"].as_array_mut() {
            clusters.push(admin_cluster(spec.admin));
        }
    }
    if let Some(addr) = spec.egress_flags
        && let Some(clusters) = bootstrap["static_resources"]["clusters"].as_array_mut()
    {
        clusters.push(egress_flags_cluster(addr));
    }
    if let Some(obj) = bootstrap.as_object_mut() {
        for (key, value) in crate::stats::bootstrap_fields(spec.stats) {
            obj.insert(key.to_owned(), value);
        }
    }
    bootstrap
}

/// The sidecar process's egress flags server, on 127.0.0.1.
fn egress_flags_cluster(addr: SocketAddr) -> Value {
    let name = meshplane_model::egress_flags::CLUSTER;
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                "address": socket_address(&addr.ip().to_string(), addr.port()),
            } }] }],
        },
    })
}

/// The scrape listener: `GET /stats/prometheus` goes to Envoy's admin API, every other
/// method or path gets a 404 that says what the port serves, so a scraper's network reach
/// never extends to the admin's write endpoints (`/quitquitquit`, `/runtime_modify`, ...).
/// Paths are normalised first (`/stats/prometheus/../quitquitquit` is `/quitquitquit`), and
/// escaped slashes are refused. A scrape is never turned away by the global connection limit
/// (an overloaded proxy is exactly the one to look at).
fn metrics_listener(address: &str, port: u16) -> Value {
    let refuse = json!({
        "match": { "prefix": "/" },
        "direct_response": {
            "status": 404,
            "body": { "inline_string": format!("meshplane: this port serves only GET {METRICS_PATH}\n") },
        },
    });
    json!({
        "name": METRICS_LISTENER,
        "address": socket_address(address, port),
        "ignore_global_conn_limit": true,
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": METRICS_LISTENER,
                    "normalize_path": true,
                    "merge_slashes": true,
                    "path_with_escaped_slashes_action": "REJECT_REQUEST",
                    "route_config": {
                        "name": METRICS_LISTENER,
                        "virtual_hosts": [{
                            "name": METRICS_LISTENER,
                            "domains": ["*"],
                            "routes": [
                                {
                                    "match": {
                                        "path": METRICS_PATH,
                                        "headers": [{ "name": ":method", "string_match": { "exact": "GET" } }],
                                    },
                                    "route": { "cluster": ADMIN_CLUSTER, "timeout": "10s" },
                                },
                                refuse,
                            ],
                        }],
                    },
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
                    }],
                },
            }],
        }],
    })
}

/// Envoy's own admin API, for the scrape listener.
fn admin_cluster(admin: SocketAddr) -> Value {
    json!({
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": socket_address(&admin.ip().to_string(), admin.port()) },
                }],
            }],
        },
    })
}

/// The node: identity plus the descriptor (as written) and the admin address as metadata.
fn node(spec: &BootstrapSpec<'_>) -> Value {
    let mut metadata = match spec.descriptor {
        Value::Object(fields) => fields.clone(),
        _ => serde_json::Map::new(),
    };
    metadata.insert(
        ADMIN_KEY.to_owned(),
        json!({ "address": spec.admin.ip().to_string(), "port": spec.admin.port() }),
    );
    if let Some(relay) = spec.admin_relay {
        metadata.insert(
            ADMIN_RELAY_KEY.to_owned(),
            json!({ "address": relay.ip().to_string(), "port": relay.port() }),
        );
    }
    if let Some(ip) = spec.listen_address {
        metadata.insert(LISTEN_ADDRESS_KEY.to_owned(), json!(ip.to_string()));
    }
    json!({
        "id": spec.instance_id,
        "cluster": spec.service,
        "locality": { "zone": spec.datacenter },
        "metadata": metadata,
    })
}

/// The control-plane cluster: HTTP/2 (gRPC), HTTP/2 PINGs that detect a hung control plane
/// ([`XDS_HANG_DETECTED_WITHIN`]) and TCP keepalives for a vanished host, one priority per
/// address so Envoy uses the first reachable one. Outlier detection ejects an address on its
/// first locally originated failure (refused connect, or the stream reset by an unanswered
/// PING), so the next attempt goes to the next priority; priorities fail over on unhealthy
/// hosts. Ejecting on the first failure matters for a hung instance: the kernel still
/// accepts its connections, so a second failure would cost another PING timeout. A lone
/// address that is ejected is still used (Envoy's panic threshold). Outlier detection costs
/// the control plane nothing, unlike active health checks from thousands of proxies.
fn xds_cluster(addrs: &[ControlPlaneAddr], tls: Option<XdsTlsMode<'_>>) -> Value {
    let all_ips = addrs.iter().all(|a| a.host.parse::<IpAddr>().is_ok());
    let endpoints: Vec<Value> = addrs
        .iter()
        .enumerate()
        .map(|(priority, a)| {
            json!({
                "priority": priority,
                "lb_endpoints": [{ "endpoint": { "address": socket_address(&a.host, a.port) } }],
            })
        })
        .collect();
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {
                            "interval": format!("{XDS_KEEPALIVE_INTERVAL_SECS}s"),
                            "timeout": format!("{XDS_KEEPALIVE_TIMEOUT_SECS}s"),
                        },
                    },
                },
            },
        },
        "upstream_connection_options": {
            "tcp_keepalive": {
                "keepalive_probes": 3,
                "keepalive_time": 30,
                "keepalive_interval": 10,
            },
        },
        "outlier_detection": {
            "split_external_local_origin_errors": true,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "base_ejection_time": "5s",
            "max_ejection_percent": 100,
        },
        "load_assignment": { "cluster_name": XDS_CLUSTER, "endpoints": endpoints },
    });
    if !all_ips && let Some(obj) = cluster.as_object_mut() {
        obj.insert("dns_lookup_family".to_owned(), json!("V4_PREFERRED"));
    }
    if let (Some(tls), Some(obj)) = (tls, cluster.as_object_mut()) {
        obj.insert("transport_socket".to_owned(), xds_tls_socket(tls, addrs));
    }
    cluster
}

/// Envoy presents the proxy's certificate and verifies the control plane's.
fn xds_tls_socket(tls: XdsTlsMode<'_>, addrs: &[ControlPlaneAddr]) -> Value {
    let common = match tls {
        XdsTlsMode::HostFiles {
            cert_file,
            key_file,
            ca_file,
        } => json!({
            "alpn_protocols": ["h2"],
            "tls_certificates": [{
                "certificate_chain": { "filename": cert_file.display().to_string() },
                "private_key": { "filename": key_file.display().to_string() },
            }],
            "validation_context": {
                "trusted_ca": { "filename": ca_file.display().to_string() },
            },
        }),
        XdsTlsMode::Sds { ca_file } => {
            let sans = control_plane_sans(addrs);
            let validation = match ca_file {
                Some(ca) => json!({ "validation_context": {
                    "trusted_ca": { "filename": ca.display().to_string() },
                    "match_typed_subject_alt_names": sans,
                }}),
                None => json!({ "combined_validation_context": {
                    "default_validation_context": { "match_typed_subject_alt_names": sans },
                    "validation_context_sds_secret_config": sds_secret(TRUST_SECRET),
                }}),
            };
            let mut common = json!({
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [sds_secret(IDENTITY_SECRET)],
            });
            if let (Some(obj), Value::Object(validation)) = (common.as_object_mut(), validation) {
                obj.extend(validation);
            }
            common
        }
    };
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        },
    })
}

/// The control plane's certificate must name one of the hosts dialled: an IP SAN for an
/// address, a DNS SAN for a name. Workload certificates carry only a SPIFFE URI, so they
/// never match.
fn control_plane_sans(addrs: &[ControlPlaneAddr]) -> Vec<Value> {
    let mut hosts: Vec<&str> = addrs.iter().map(|a| a.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts
        .into_iter()
        .map(|host| {
            let san_type = if host.parse::<IpAddr>().is_ok() {
                "IP_ADDRESS"
            } else {
                "DNS"
            };
            json!({ "san_type": san_type, "matcher": { "exact": host } })
        })
        .collect()
}

/// A secret from the sidecar's SDS server (the `meshplane_sds` cluster).
fn sds_secret(name: &str) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": meshplane_model::identity::SDS_CLUSTER } }],
            },
        },
    })
}

/// The sidecar's local SDS server (a Unix socket only this user can open): the mTLS
/// certificate, its key and the trust bundle never travel over the network.
fn sds_cluster(socket: &std::path::Path) -> Value {
    json!({
        "name": meshplane_model::identity::SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
        "load_assignment": {
            "cluster_name": meshplane_model::identity::SDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": { "pipe": { "path": socket.display().to_string() } } },
                }],
            }],
        },
    })
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}
