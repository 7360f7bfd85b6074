use super::*;
use meshplane_model::{Health, InstanceId, Locality};

use crate::fixtures::{Fixture, name};

fn mk_instance(service: &str, id: &str, dc: &str, tags: &[&str]) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: name(service),
        node: "n1".into(),
        address: "10.0.0.1".into(),
        port: 31001,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: Default::default(),
        weight: 10,
        health: Health::Passing,
        locality: Locality {
            datacenter: dc.into(),
            zone: None,
        },
    }
}

fn mk_group(yaml: &str) -> ProxyGroup {
    ProxyGroup {
        descriptor: Descriptor::from_yaml(yaml).expect("valid"),
        listen_address: "0.0.0.0".into(),
        datacenter: "dc1".into(),
        proxyless: false,
        proxyless_mtls: false,
    }
}

const ORDERS: &str = "service: orders\nport: 8080\ningress: { port: 31001 }\negress: { port: 31000 }\ndependencies:\n  - service: payments\n    timeout: 2s\n    retries: { attempts: 3, on: [connect-failure, \"503\"] }\n  - domain: https://api.example.com\n";

#[test]
fn group_gets_only_its_dependencies() {
    let catalog = Fixture(vec![
        (
            name("payments"),
            vec![mk_instance("payments", "p1", "dc1", &["canary"])],
        ),
        (
            name("billing"),
            vec![mk_instance("billing", "b1", "dc1", &[])],
        ),
    ]);
    let config = group_config(&mk_group(ORDERS), &catalog, &MeshOptions::default()).expect("ok");
    assert_eq!(config.services, vec![name("payments")]);
    let cluster_names: Vec<_> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        cluster_names,
        vec![
            names::LOCAL_APP,
            "domain:api.example.com:443",
            "tunnel:api.example.com:443"
        ]
    );
    let routes = &config.routes[0];
    let hosts: Vec<_> = routes
        .virtual_hosts
        .iter()
        .map(|v| v.domains[0].as_str())
        .collect();
    // Last, any other host: only the egress flags path.
    assert_eq!(hosts, vec!["payments", "api.example.com", "*"]);
    let listeners: Vec<_> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listeners, vec!["ingress", "egress"]);
}

#[test]
fn retries_map_statuses_to_retriable_status_codes() {
    let d = Descriptor::from_yaml(ORDERS).expect("valid");
    let policy = route::retry_policy(d.dependencies[0].retries.as_ref());
    assert_eq!(policy.retry_on, "connect-failure,retriable-status-codes");
    assert_eq!(policy.retriable_status_codes, vec![503]);
    assert_eq!(policy.num_retries.map(|n| n.value), Some(3));
    let default = route::retry_policy(None);
    assert_eq!(
        default.retry_on,
        "connect-failure,reset,refused-stream,unavailable"
    );
    assert_eq!(
        default.retry_host_predicate.len(),
        1,
        "retries go to another host"
    );
}

#[test]
fn wildcard_needs_permission() {
    let yaml = "service: hadoop\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\ndependencies: [{ service: \"*\" }]\n";
    let catalog = Fixture(vec![(name("a"), vec![]), (name("b"), vec![])]);
    let err =
        group_config(&mk_group(yaml), &catalog, &MeshOptions::default()).expect_err("refused");
    assert!(
        err.to_string().contains("allow_wildcard_dependencies"),
        "{err}"
    );
    let options = MeshOptions {
        allow_wildcard_dependencies: [name("hadoop")].into_iter().collect(),
        ..Default::default()
    };
    let config = group_config(&mk_group(yaml), &catalog, &options).expect("allowed");
    assert_eq!(config.services, vec![name("a"), name("b")]);
}

#[test]
fn endpoints_prefer_the_local_datacenter_and_mark_critical_unhealthy() {
    let mut down = mk_instance("payments", "p2", "dc1", &[]);
    down.health = Health::Critical;
    let instances = vec![
        mk_instance("payments", "p3", "dc2", &[]),
        down,
        mk_instance("payments", "p1", "dc1", &["canary", "blue"]),
    ];
    let cla = service_endpoints(
        &name("payments"),
        &instances,
        "dc1",
        &MeshOptions::default(),
    );
    assert_eq!(cla.cluster_name, "payments");
    assert_eq!(cla.endpoints.len(), 2);
    assert_eq!(
        cla.endpoints[0]
            .locality
            .as_ref()
            .map(|l| l.region.as_str()),
        Some("dc1")
    );
    assert_eq!(cla.endpoints[0].priority, 0);
    assert_eq!(cla.endpoints[1].priority, 1);
    let dc1 = &cla.endpoints[0].lb_endpoints;
    assert_eq!(dc1.len(), 2);
    assert_eq!(
        dc1[1].health_status,
        envoy_types::pb::envoy::config::core::v3::HealthStatus::Unhealthy as i32
    );
    assert_eq!(dc1[0].load_balancing_weight.map(|w| w.value), Some(10));
}

#[test]
fn equal_input_encodes_to_equal_bytes() {
    use prost::Message;
    let instances = vec![mk_instance(
        "payments",
        "p1",
        "dc1",
        &["canary", "blue", "green"],
    )];
    let a = service_endpoints(
        &name("payments"),
        &instances,
        "dc1",
        &MeshOptions::default(),
    )
    .encode_to_vec();
    for _ in 0..20 {
        let b = service_endpoints(
            &name("payments"),
            &instances,
            "dc1",
            &MeshOptions::default(),
        )
        .encode_to_vec();
        assert_eq!(a, b, "multi-key metadata must encode deterministically");
    }
}

#[test]
fn host_name_addresses_are_left_out_of_endpoints() {
    let mut named = mk_instance("payments", "p9", "dc1", &[]);
    named.address = "payments-9.internal".into();
    let instances = vec![mk_instance("payments", "p1", "dc1", &[]), named];
    let cla = service_endpoints(
        &name("payments"),
        &instances,
        "dc1",
        &MeshOptions::default(),
    );
    assert_eq!(
        cla.endpoints[0].lb_endpoints.len(),
        1,
        "only the IP instance is routable"
    );
}

#[test]
fn tracing_goes_to_the_collector_from_both_listeners_named_after_the_service() {
    use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;

    let hcms = |config: &GroupConfig| -> Vec<HttpConnectionManager> {
        config
            .listeners
            .iter()
            .flat_map(|l| l.filter_chains.iter())
            .flat_map(|c| c.filters.iter())
            .filter_map(|f| match &f.config_type {
                Some(
                    envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                        a,
                    ),
                ) => HttpConnectionManager::decode(a.value.as_slice()).ok(),
                _ => None,
            })
            .collect()
    };
    let catalog = Fixture(vec![]);
    let untraced = group_config(&mk_group(ORDERS), &catalog, &MeshOptions::default()).expect("ok");
    assert!(hcms(&untraced).iter().all(|h| h.tracing.is_none()));
    assert!(
        !untraced
            .clusters
            .iter()
            .any(|c| c.name == names::TRACING_COLLECTOR)
    );

    let options = MeshOptions {
        tracing: Some(TracingOptions {
            host: "10.0.0.9".into(),
            port: 4317,
            sampling: meshplane_model::descriptor::Percent::new(1.0).expect("valid"),
        }),
        ..MeshOptions::default()
    };
    for (yaml, sampling) in [
        (ORDERS.to_owned(), 1.0),
        (format!("{ORDERS}tracing: {{ sampling: 12.5 }}\n"), 12.5),
    ] {
        let config = group_config(&mk_group(&yaml), &catalog, &options).expect("ok");
        let hcms = hcms(&config);
        assert_eq!(
            hcms.len(),
            3,
            "ingress (its mTLS and plaintext chains) and egress"
        );
        for h in &hcms {
            assert!(h.preserve_external_request_id);
            let t = h.tracing.as_ref().expect("traced");
            assert_eq!(t.random_sampling.as_ref().map(|p| p.value), Some(sampling));
            let provider = t.provider.as_ref().expect("provider");
            assert_eq!(provider.name, "envoy.tracers.opentelemetry");
            let Some(tracing::http::ConfigType::TypedConfig(any)) = &provider.config_type else {
                panic!("typed config");
            };
            let otel = OpenTelemetryConfig::decode(any.value.as_slice()).expect("decodes");
            assert_eq!(otel.service_name, "orders");
        }
        let collector = config
            .clusters
            .iter()
            .find(|c| c.name == names::TRACING_COLLECTOR)
            .expect("collector cluster");
        let options = collector
            .typed_extension_protocol_options
            .values()
            .next()
            .expect("protocol options");
        let options =
            envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions::decode(
                options.value.as_slice(),
            )
            .expect("decodes");
        assert!(
            format!("{options:?}").contains("Http2ProtocolOptions"),
            "gRPC needs HTTP/2: {options:?}"
        );
    }
}
