use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log, access_log_filter};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StdoutAccessLog, stdout_access_log,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::value::Kind;
use meshplane_model::Descriptor;
use prost::Message;

use crate::{Catalog, MeshOptions, ProxyGroup, group_config};

struct Empty;

impl Catalog for Empty {
    fn services(&self) -> Vec<meshplane_model::ServiceName> {
        Vec::new()
    }
    fn instances(&self, _: &meshplane_model::ServiceName) -> Option<&[meshplane_model::Instance]> {
        None
    }
}

const BASE: &str =
    "service: orders\nport: 8080\ningress: { port: 31001 }\negress: { port: 31000 }\n";

fn mk_listeners(extra: &str) -> Vec<Listener> {
    let group = ProxyGroup {
        descriptor: Descriptor::from_yaml(&format!("{BASE}{extra}")).expect("valid"),
        listen_address: "0.0.0.0".into(),
        datacenter: "dc1".into(),
        proxyless: false,
        proxyless_mtls: false,
    };
    group_config(&group, &Empty, &MeshOptions::default())
        .expect("translates")
        .listeners
}

/// Every HTTP connection manager of a listener, one per filter chain.
fn hcms(listener: &Listener) -> Vec<HttpConnectionManager> {
    listener
        .filter_chains
        .iter()
        .map(|chain| match &chain.filters[0].config_type {
            Some(filter::ConfigType::TypedConfig(any)) => {
                HttpConnectionManager::decode(any.value.as_slice()).expect("an HCM")
            }
            other => panic!("unexpected filter config {other:?}"),
        })
        .collect()
}

/// An access log's JSON keys and their Envoy format strings.
fn fields(log: &AccessLog) -> BTreeMap<String, String> {
    let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
        panic!("typed config")
    };
    let stdout = StdoutAccessLog::decode(any.value.as_slice()).expect("a stdout log");
    let Some(stdout_access_log::AccessLogFormat::LogFormat(format)) = stdout.access_log_format
    else {
        panic!("a log format")
    };
    let Some(
        envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format::JsonFormat(
            json,
        ),
    ) = format.format
    else {
        panic!("a JSON format")
    };
    json.fields
        .into_iter()
        .map(|(k, v)| match v.kind {
            Some(Kind::StringValue(s)) => (k, s),
            other => panic!("{k}: not a string: {other:?}"),
        })
        .collect()
}

/// One access log: its filter and its JSON keys with their format strings.
type Log = (
    Option<access_log_filter::FilterSpecifier>,
    BTreeMap<String, String>,
);

/// The request logs (`"meshplane": "access"`) of each chain of a listener.
fn request_logs(listener: &Listener) -> Vec<Vec<Log>> {
    hcms(listener)
        .iter()
        .map(|hcm| {
            hcm.access_log
                .iter()
                .map(|log| {
                    (
                        log.filter.clone().and_then(|f| f.filter_specifier),
                        fields(log),
                    )
                })
                .filter(|(_, f)| f.get("meshplane").map(String::as_str) == Some("access"))
                .collect()
        })
        .collect()
}

#[test]
fn errors_is_the_default_on_every_chain_of_both_listeners() {
    for mtls in ["", "mtls: strict\n", "mtls: disabled\n"] {
        let listeners = mk_listeners(mtls);
        for listener in &listeners {
            let per_chain = request_logs(listener);
            assert!(!per_chain.is_empty());
            for logs in per_chain {
                assert_eq!(
                    logs.len(),
                    1,
                    "{} ({mtls:?}): one request log",
                    listener.name
                );
                let Some(access_log_filter::FilterSpecifier::OrFilter(or)) = &logs[0].0 else {
                    panic!("errors: 5xx or flagged, got {:?}", logs[0].0)
                };
                let kinds: Vec<_> = or
                    .filters
                    .iter()
                    .map(|f| match &f.filter_specifier {
                        Some(access_log_filter::FilterSpecifier::StatusCodeFilter(s)) => {
                            let c = s.comparison.as_ref().expect("comparison");
                            format!("status>={}", c.value.as_ref().expect("value").default_value)
                        }
                        Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(r)) => {
                            format!("flags{:?}", r.flags)
                        }
                        Some(access_log_filter::FilterSpecifier::AndFilter(a)) => {
                            // gRPC requests whose grpc-status is not OK.
                            let grpc = a.filters.iter().any(|f| {
                                matches!(&f.filter_specifier,
                                    Some(access_log_filter::FilterSpecifier::GrpcStatusFilter(g))
                                        if g.exclude && g.statuses == [0])
                            });
                            let request = a.filters.iter().any(|f| {
                                matches!(&f.filter_specifier,
                                    Some(access_log_filter::FilterSpecifier::HeaderFilter(h))
                                        if h.header.as_ref().is_some_and(|h| h.name == "content-type"))
                            });
                            if grpc && request { "grpc!=OK".to_owned() } else { format!("{a:?}") }
                        }
                        other => format!("{other:?}"),
                    })
                    .collect();
                assert_eq!(kinds, ["status>=500", "flags[]", "grpc!=OK"]);
            }
        }
    }
}

#[test]
fn all_logs_every_request_and_off_none_but_rbac_decisions_stay() {
    for listener in mk_listeners("access_log: all\n") {
        for logs in request_logs(&listener) {
            assert_eq!(logs.len(), 1);
            assert!(logs[0].0.is_none(), "all: no filter");
        }
    }
    let off = mk_listeners(
        "access_log: off\nincoming:\n  endpoints: [{ path_prefix: /api/, clients: [web] }]\n",
    );
    for listener in &off {
        for hcm in hcms(listener) {
            let kinds: Vec<String> = hcm
                .access_log
                .iter()
                .map(|l| fields(l)["meshplane"].clone())
                .collect();
            let want: &[&str] = if listener.name == "ingress" {
                &["rbac"]
            } else {
                &[]
            };
            assert_eq!(kinds, want, "{}", listener.name);
        }
    }
}

#[test]
fn lines_name_caller_and_destination_per_direction_and_never_the_query() {
    let listeners = mk_listeners("access_log: all\n");
    let ingress = &request_logs(&listeners[0])[0][0].1;
    let egress = &request_logs(&listeners[1])[0][0].1;
    assert_eq!(ingress["direction"], "ingress");
    assert_eq!(ingress["caller"], "%DOWNSTREAM_PEER_URI_SAN%");
    assert_eq!(ingress["destination"], "orders");
    assert_eq!(egress["direction"], "egress");
    assert_eq!(egress["caller"], "spiffe://meshplane.local/service/orders");
    assert_eq!(egress["destination"], "%UPSTREAM_CLUSTER%");
    let keys: Vec<&str> = ingress.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "authority",
            "bytes_received",
            "bytes_sent",
            "caller",
            "destination",
            "direction",
            "duration_ms",
            "grpc_status",
            "meshplane",
            "method",
            "path",
            "protocol",
            "request_id",
            "response_details",
            "response_flags",
            "service",
            "status",
            "time",
            "trace_id",
            "upstream_failure",
            "upstream_host",
            "upstream_service_time_ms",
        ]
    );
    assert_eq!(ingress["path"], "%PATH(NQ:PATH):2048%");
    // No log of any kind prints the full `:path` (with its query string).
    let with_rbac = mk_listeners(
        "access_log: all\nincoming:\n  unlisted_endpoints: log\n  endpoints: [{ path_prefix: /api/, clients: [web] }]\n",
    );
    for listener in &with_rbac {
        for hcm in hcms(listener) {
            for log in &hcm.access_log {
                for (key, format) in fields(log) {
                    assert!(!format.contains("(:PATH)"), "{key}: {format}");
                }
            }
        }
    }
}

#[test]
fn request_logs_encode_to_the_same_bytes_every_time() {
    let first: Vec<Vec<u8>> = mk_listeners("")
        .iter()
        .map(Message::encode_to_vec)
        .collect();
    for _ in 0..10 {
        let again: Vec<Vec<u8>> = mk_listeners("")
            .iter()
            .map(Message::encode_to_vec)
            .collect();
        assert_eq!(first, again);
    }
}
