//! Golden tests: a fixed registry and descriptor in, every resource out, compared with the
//! files under `tests/golden/`. Run with `UPDATE_GOLDEN=1` to rewrite them after an intended
//! change, and review the diff.

use std::path::PathBuf;

use meshplane_model::{Descriptor, Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_translate::{
    Catalog, MeshOptions, ProxyGroup, TracingOptions, group_config, proxyless_clusters,
    proxyless_endpoints, proxyless_mtls_clusters, service_cluster, service_endpoints,
};

struct Fixture(Vec<(ServiceName, Vec<Instance>)>);

impl Catalog for Fixture {
    fn services(&self) -> Vec<ServiceName> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }
    fn instances(&self, service: &ServiceName) -> Option<&[Instance]> {
        self.0
            .iter()
            .find(|(n, _)| n == service)
            .map(|(_, i)| i.as_slice())
    }
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid")
}

fn mk_instance(id: &str, dc: &str, tags: &[&str], weight: u32, health: Health) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: name("payments"),
        node: "node-1".into(),
        address: "10.0.0.7".into(),
        port: 31001,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: Default::default(),
        weight,
        health,
        locality: Locality {
            datacenter: dc.into(),
            zone: None,
        },
    }
}

fn catalog() -> Fixture {
    Fixture(vec![(
        name("payments"),
        vec![
            Instance {
                meta: [("mtls".to_owned(), "strict".to_owned())].into(),
                ..mk_instance("payments-1", "dc1", &[], 100, Health::Passing)
            },
            mk_instance(
                "payments-2",
                "dc1",
                &["canary", "blue"],
                50,
                Health::Warning,
            ),
            mk_instance("payments-3", "dc2", &[], 100, Health::Passing),
            mk_instance("payments-4", "dc1", &[], 100, Health::Critical),
        ],
    )])
}

const ORDERS: &str = r#"
service: orders
port: 8080
ingress: { port: 31001, timeout: 30s }
egress: { port: 31000 }
preserve_header_case: true
tracing: { sampling: 25 }
dependencies:
  - service: payments
    timeout: 2s
    retries: { attempts: 2, per_try_timeout: 500ms, on: [connect-failure, reset, "503"] }
  - domain: https://api.example.com
  - domain_pattern: "*.example.org"
incoming:
  unlisted_endpoints: log
  endpoints:
    - { path_prefix: /api/, methods: [GET, POST], clients: [web, "role:backoffice"] }
    - { path: /status/health }
    - { path_regex: "/admin/[a-z]+", clients: [ops], unlisted_clients: log }
  roles:
    - { name: backoffice, clients: [admin-ui, reports] }
"#;

fn check(name: &str, rendered: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display()));
    if expected != rendered {
        let first = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(rendered.lines().count()));
        panic!(
            "{name} differs from {} at line {}:\n expected: {:?}\n   actual: {:?}\nrun with UPDATE_GOLDEN=1 if the change is intended",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            rendered.lines().nth(first)
        );
    }
}

#[test]
fn orders_group() {
    let group = ProxyGroup {
        descriptor: Descriptor::from_yaml(ORDERS).expect("valid"),
        listen_address: "10.0.0.9".into(),
        datacenter: "dc1".into(),
        proxyless: false,
        proxyless_mtls: false,
    };
    let options = MeshOptions {
        tracing: Some(TracingOptions {
            host: "otel-collector".into(),
            port: 4317,
            sampling: meshplane_model::descriptor::Percent::new(1.0).expect("valid"),
        }),
        ..MeshOptions::default()
    };
    let config = group_config(&group, &catalog(), &options).expect("translates");
    check("orders-listeners", format!("{:#?}", config.listeners));
    check("orders-routes", format!("{:#?}", config.routes));
    check("orders-clusters", format!("{:#?}", config.clusters));
}

/// Each listener's access logs, readable: per filter chain, each log's filter and its JSON
/// keys with their Envoy format strings, sorted (the encoded `Struct` is a map).
fn render_access_logs(
    listeners: &[envoy_types::pb::envoy::config::listener::v3::Listener],
) -> String {
    use envoy_types::pb::envoy::config::accesslog::v3::access_log;
    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
        StdoutAccessLog, stdout_access_log,
    };
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;
    let mut out = String::new();
    for listener in listeners {
        for chain in &listener.filter_chains {
            let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
                continue;
            };
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("an HCM");
            out.push_str(&format!("== {} / chain `{}`\n", listener.name, chain.name));
            for log in &hcm.access_log {
                out.push_str(&format!("- {}\n  filter: {:#?}\n", log.name, log.filter));
                let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
                    continue;
                };
                let stdout = StdoutAccessLog::decode(any.value.as_slice()).expect("stdout log");
                if let Some(stdout_access_log::AccessLogFormat::LogFormat(f)) =
                    stdout.access_log_format
                    && let Some(Format::JsonFormat(json)) = f.format
                {
                    let sorted: std::collections::BTreeMap<_, _> =
                        json.fields.into_iter().collect();
                    for (k, v) in sorted {
                        out.push_str(&format!("  {k}: {:?}\n", v.kind));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn orders_access_logs() {
    let group = ProxyGroup {
        descriptor: Descriptor::from_yaml(ORDERS).expect("valid"),
        listen_address: "10.0.0.9".into(),
        datacenter: "dc1".into(),
        proxyless: false,
        proxyless_mtls: false,
    };
    let config = group_config(&group, &catalog(), &MeshOptions::default()).expect("translates");
    check("orders-access-logs", render_access_logs(&config.listeners));
}

#[test]
fn payments_shared_resources() {
    let c = catalog();
    let options = MeshOptions::default();
    let instances = c.instances(&name("payments")).expect("known");
    check(
        "payments-cluster",
        format!(
            "{:#?}",
            service_cluster(&name("payments"), instances, &MeshOptions::default())
        ),
    );
    check(
        "payments-endpoints",
        format!(
            "{:#?}",
            service_endpoints(&name("payments"), instances, "dc1", &options)
        ),
    );
}

/// A gRPC service behind sidecars: its shared cluster speaks HTTP/2 (ALPN `h2` over mTLS),
/// and its own sidecar's local-app cluster HTTP/2 without TLS.
#[test]
fn grpc_service_resources() {
    let sidecar_meta = |mtls: &str| {
        [
            ("meshplane_sidecar".to_owned(), "true".to_owned()),
            ("mtls".to_owned(), mtls.to_owned()),
            ("protocol".to_owned(), "grpc".to_owned()),
        ]
        .into()
    };
    let instances = vec![
        Instance {
            meta: sidecar_meta("strict"),
            ..mk_instance("payments-1", "dc1", &[], 100, Health::Passing)
        },
        Instance {
            meta: sidecar_meta("disabled"),
            ..mk_instance("payments-2", "dc1", &[], 100, Health::Passing)
        },
    ];
    check(
        "payments-grpc-cluster",
        format!(
            "{:#?}",
            service_cluster(&name("payments"), &instances, &MeshOptions::default())
        ),
    );
    let group = ProxyGroup {
        descriptor: Descriptor::from_yaml(
            "service: payments\nport: 9090\nprotocol: grpc\ningress: { port: 31001 }\n",
        )
        .expect("valid"),
        listen_address: "10.0.0.7".into(),
        datacenter: "dc1".into(),
        proxyless: false,
        proxyless_mtls: false,
    };
    let config =
        group_config(&group, &Fixture(Vec::new()), &MeshOptions::default()).expect("translates");
    check("payments-grpc-clusters", format!("{:#?}", config.clusters));
}

/// A proxyless gRPC client (`meshplane bootstrap --grpc`): an API listener and a route
/// configuration per dependency, and the services' plain EDS clusters (with a canary one)
/// whose endpoints are one weighted locality per instance.
#[test]
fn proxyless_grpc_client() {
    let at = |i: Instance, address: &str| Instance {
        address: address.into(),
        ..i
    };
    let instances = vec![
        at(
            mk_instance("payments-1", "dc1", &[], 300, Health::Passing),
            "10.0.0.1",
        ),
        at(
            mk_instance("payments-2", "dc1", &["canary"], 100, Health::Passing),
            "10.0.0.2",
        ),
        at(
            mk_instance("payments-3", "dc2", &[], 100, Health::Passing),
            "10.0.0.3",
        ),
        at(
            mk_instance("payments-4", "dc1", &[], 100, Health::Critical),
            "10.0.0.4",
        ),
    ];
    let catalog = Fixture(vec![(name("payments"), instances.clone())]);
    let group = ProxyGroup {
        descriptor: Descriptor::from_yaml(
            "service: checkout\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n    timeout: 2s\n    retries: { attempts: 3, on: [unavailable, resource-exhausted, connect-failure] }\n",
        )
        .expect("valid"),
        listen_address: "0.0.0.0".into(),
        datacenter: "dc1".into(),
        proxyless: true,
        proxyless_mtls: false,
    };
    let options = MeshOptions::default();
    let config = group_config(&group, &catalog, &options).expect("translates");
    assert!(config.clusters.is_empty(), "no local app, no domains");
    // The API listener's HTTP connection manager decoded, so the golden reads.
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| {
            use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
            use prost::Message;
            let any = l.api_listener.as_ref().and_then(|a| a.api_listener.as_ref());
            let hcm = any.map(|a| HttpConnectionManager::decode(a.value.as_slice()).expect("HCM"));
            (l.name.clone(), hcm)
        })
        .collect();
    check(
        "proxyless-listeners-routes",
        format!("{listeners:#?}\n{:#?}", config.routes),
    );
    check(
        "proxyless-clusters-endpoints",
        format!(
            "{:#?}\n{:#?}",
            proxyless_clusters(&name("payments"), &instances),
            proxyless_endpoints(&name("payments"), &instances, "dc1", &options)
        ),
    );
    // Clients with a certificate (`--certs-dir`): the same clusters, with mTLS when every
    // instance a cluster reaches has a sidecar accepting it.
    let behind_sidecars: Vec<Instance> = instances
        .into_iter()
        .map(|mut i| {
            i.meta.insert("mtls".into(), "strict".into());
            i
        })
        .collect();
    // Each cluster's transport socket decoded, so the golden reads (the rest is the
    // plaintext clients' cluster, checked by the unit tests).
    let sockets: Vec<_> = proxyless_mtls_clusters(
        &name("payments"),
        &behind_sidecars,
        "meshplane.local",
    )
    .into_iter()
    .map(|c| {
        use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
        use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
        use prost::Message;
        let socket = c.transport_socket.expect("mTLS");
        let Some(ConfigType::TypedConfig(any)) = socket.config_type else {
            panic!("typed config");
        };
        let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("TLS context");
        (c.name, socket.name, any.type_url, tls)
    })
    .collect();
    check("proxyless-mtls-clusters", format!("{sockets:#?}"));
}
