//! The JSON form of the resources Meshplane emits, and graceful output for what has no schema.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, TransportSocket, config_source,
    transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::google::protobuf::{Any, Duration};
use meshplane_envoy_json::{OPAQUE_ERROR_KEY, OPAQUE_VALUE_KEY, to_json};
use prost::{Message, Name};
use serde_json::{Value, json};

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn mk_cluster(socket: Any) -> Cluster {
    Cluster {
        name: "payments".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: "payments".into(),
        }),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(socket)),
        }),
        ..Default::default()
    }
}

fn tls() -> Any {
    any(&UpstreamTlsContext {
        sni: "payments".into(),
        ..Default::default()
    })
}

#[test]
fn a_cluster_reads_like_envoys_config_dump() {
    let cluster = any(&mk_cluster(tls()));
    assert_eq!(
        to_json(&cluster.type_url, &cluster.value),
        json!({
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "payments",
            "type": "EDS",
            "eds_cluster_config": {
                "eds_config": { "ads": {}, "resource_api_version": "V3" },
                "service_name": "payments"
            },
            "connect_timeout": "1.500s",
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": "payments"
                }
            }
        })
    );
}

#[test]
fn anys_inside_anys_are_expanded() {
    let hcm = HttpConnectionManager {
        stat_prefix: "egress".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: "egress".into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = any(&Listener {
        name: "egress".into(),
        filter_chains: vec![envoy_types::pb::envoy::config::listener::v3::FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    let json = to_json(&listener.type_url, &listener.value);
    let hcm = &json["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        hcm["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    assert_eq!(hcm["rds"]["route_config_name"], "egress");
    assert_eq!(
        hcm["http_filters"][0]["typed_config"],
        json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"})
    );
}

#[test]
fn an_any_without_a_schema_shows_its_type_and_bytes() {
    let unknown = Any {
        type_url: "type.googleapis.com/example.v1.Unknown".into(),
        value: vec![8, 150, 1],
    };
    let cluster = any(&mk_cluster(unknown));
    let json = to_json(&cluster.type_url, &cluster.value);
    assert_eq!(
        json["transport_socket"]["typed_config"],
        json!({"@type": "type.googleapis.com/example.v1.Unknown", OPAQUE_VALUE_KEY: "CJYB"})
    );
    assert_eq!(json["name"], "payments", "the rest is still shown");

    let top = to_json("type.googleapis.com/example.v1.Unknown", &[8, 150, 1]);
    assert_eq!(
        top,
        json!({"@type": "type.googleapis.com/example.v1.Unknown", OPAQUE_VALUE_KEY: "CJYB"})
    );
}

#[test]
fn bytes_that_do_not_decode_are_reported_not_panicked_on() {
    let garbage = [0xff, 0xff, 0xff];
    let json = to_json(
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        &garbage,
    );
    assert_eq!(json[OPAQUE_VALUE_KEY], "////");
    assert!(
        json[OPAQUE_ERROR_KEY]
            .as_str()
            .is_some_and(|e| e.contains("not a valid message")),
        "{json}"
    );
    // The same bytes inside an Any of a known type: that Any alone becomes opaque.
    let bad_tls = Any {
        type_url: UpstreamTlsContext::type_url(),
        value: garbage.to_vec(),
    };
    let cluster = any(&mk_cluster(bad_tls));
    let json = to_json(&cluster.type_url, &cluster.value);
    assert_eq!(
        json["transport_socket"]["typed_config"][OPAQUE_VALUE_KEY],
        "////"
    );
    assert!(json.get(OPAQUE_ERROR_KEY).is_none());
    let _: &Value = &json;
}
