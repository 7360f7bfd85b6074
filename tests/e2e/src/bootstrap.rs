//! The Envoy bootstrap the harness writes: a node identity, ADS over gRPC to the
//! in-process control plane (its only static cluster), and admin on an ephemeral port.

use serde_json::{Value, json};

use crate::envoy::EnvoyConfig;

/// The bootstrap: ADS over gRPC to the control plane, admin on an ephemeral port.
pub(crate) fn render(config: &EnvoyConfig) -> Value {
    let ads_source = json!({ "ads": {}, "resource_api_version": "V3" });
    json!({
        "node": { "id": config.node_id, "cluster": config.service },
        "admin": { "address": socket_address("127.0.0.1", 0) },
        "dynamic_resources": {
            "ads_config": {
                "api_type": config.flavour.api_type(),
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": {
                        "cluster_name": "xds",
                        // Reconnect quickly when the control plane restarts (default backoff
                        // grows to 30 s).
                        "retry_policy": {
                            "retry_back_off": { "base_interval": "0.1s", "max_interval": "0.5s" }
                        }
                    }
                }]
            },
            "cds_config": ads_source,
            "lds_config": ads_source
        },
        "static_resources": {
            "clusters": [{
                "name": "xds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": {
                    "cluster_name": "xds",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                        "address": socket_address(&config.xds_addr.ip().to_string(), config.xds_addr.port())
                    } }] }]
                }
            }]
        }
    })
}

fn socket_address(ip: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": ip, "port_value": port } })
}
