//! The exposition parses as the Prometheus text format and carries every family, typed, with
//! the values recorded.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{RegistryEvent, SourceId};
use meshplane_xds::{
    GroupKey, Nack, ResourceType, SnapshotCache, StreamInfo, StreamKind, XdsObserver,
};
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

use super::Metrics;

fn mk_instance(id: &str) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: ServiceName::new("payments").expect("name"),
        node: "node-1".into(),
        address: "10.0.0.1".into(),
        port: 8080,
        tags: Vec::new(),
        meta: BTreeMap::new(),
        weight: 1,
        health: Health::Passing,
        locality: Locality::default(),
    }
}

fn mk_stream(kind: StreamKind) -> StreamInfo {
    StreamInfo {
        stream_id: 1,
        node_id: "orders-1".into(),
        service: "orders".into(),
        group: GroupKey::new("orders"),
        kind,
        remote_addr: None,
        connected_since: SystemTime::now(),
        user_agent: String::new(),
    }
}

fn parse(text: &str) -> MetricsExposition<PrometheusType, PrometheusValue> {
    openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}\n{text}"))
}

/// The value of the sample of `family` whose labels are `labels` (name, value).
fn value(
    exposition: &MetricsExposition<PrometheusType, PrometheusValue>,
    family: &str,
    labels: &[&str],
) -> f64 {
    let family = exposition
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let labels: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    let sample = family
        .get_sample_by_label_values(&labels)
        .unwrap_or_else(|| panic!("no sample {labels:?} in {}", family.family_name));
    match &sample.value {
        PrometheusValue::Gauge(n) => n.as_f64(),
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Histogram(h) => h.count.unwrap_or_default() as f64,
        other => panic!("unexpected value {other:?}"),
    }
}

#[test]
fn exposition_parses_with_every_family_typed() {
    let (store, mut writer) = meshplane_registry::store();
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("embedded"),
        services: [(
            ServiceName::new("payments").expect("name"),
            vec![mk_instance("p1"), mk_instance("p2")],
        )]
        .into_iter()
        .collect(),
    });
    // A source name that needs escaping in a label value.
    let odd_source = "file \"a\\b\"";
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new(odd_source),
        services: BTreeMap::new(),
    });
    let metrics = Metrics::new(store, SnapshotCache::new());

    let sotw = metrics.xds().stream_opened(&mk_stream(StreamKind::Sotw));
    let delta = metrics.xds().stream_opened(&mk_stream(StreamKind::Delta));
    sotw.sent(ResourceType::Cluster, "v1", "1");
    sotw.acked(ResourceType::Cluster, "v1", Some(Duration::from_millis(3)));
    sotw.sent(ResourceType::Cluster, "v2", "2");
    sotw.nacked(
        ResourceType::Cluster,
        &Nack {
            version: "v2".into(),
            nonce: "2".into(),
            message: "bad cluster".into(),
            at: SystemTime::now(),
        },
    );
    delta.sent(ResourceType::Endpoint, "e1", "1");
    delta.failed("boom");
    delta.closed();
    metrics.xds().stream_refused("no node");
    metrics.translation().translated(Duration::from_millis(7));
    metrics.translation().published();
    metrics.translation().error();
    metrics.ca().issued();
    metrics.ca().issued();
    metrics.ca().refused();
    metrics.registry().error("consul", "body");
    metrics.registry().error("consul", "body");
    metrics.registry().error("consul", "status");

    let text = metrics.encode();
    let exposition = parse(&text);
    let expected = [
        ("meshplane_xds_streams", PrometheusType::Gauge),
        ("meshplane_xds_proxies_by_type", PrometheusType::Gauge),
        ("meshplane_xds_responses_total", PrometheusType::Counter),
        ("meshplane_xds_nacks_total", PrometheusType::Counter),
        (
            "meshplane_xds_streams_failed_total",
            PrometheusType::Counter,
        ),
        ("meshplane_xds_push_ack_seconds", PrometheusType::Histogram),
        ("meshplane_groups", PrometheusType::Gauge),
        ("meshplane_translation_seconds", PrometheusType::Histogram),
        (
            "meshplane_translation_errors_total",
            PrometheusType::Counter,
        ),
        (
            "meshplane_snapshots_published_total",
            PrometheusType::Counter,
        ),
        (
            "meshplane_ca_certificates_issued_total",
            PrometheusType::Counter,
        ),
        ("meshplane_ca_sign_refused_total", PrometheusType::Counter),
        ("meshplane_registry_services", PrometheusType::Gauge),
        ("meshplane_registry_instances", PrometheusType::Gauge),
        ("meshplane_registry_index", PrometheusType::Gauge),
        ("meshplane_registry_translation_lag", PrometheusType::Gauge),
        ("meshplane_registry_stale", PrometheusType::Gauge),
        ("meshplane_registry_source_up", PrometheusType::Gauge),
        ("meshplane_registry_errors_total", PrometheusType::Counter),
    ];
    for (name, kind) in &expected {
        let family = exposition
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("no family {name} in\n{text}"));
        assert_eq!(&family.family_type, kind, "{name}");
        assert!(!family.help.is_empty(), "{name} has no help");
    }
    assert_eq!(exposition.families.len(), expected.len(), "{text}");

    assert_eq!(value(&exposition, "meshplane_xds_streams", &["sotw"]), 1.0);
    assert_eq!(value(&exposition, "meshplane_xds_streams", &["delta"]), 0.0);
    assert_eq!(
        value(&exposition, "meshplane_xds_proxies_by_type", &["CDS"]),
        1.0
    );
    assert_eq!(
        value(&exposition, "meshplane_xds_proxies_by_type", &["EDS"]),
        0.0
    );
    assert_eq!(
        value(&exposition, "meshplane_xds_responses_total", &["CDS"]),
        2.0
    );
    assert_eq!(
        value(&exposition, "meshplane_xds_responses_total", &["EDS"]),
        1.0
    );
    assert_eq!(
        value(&exposition, "meshplane_xds_nacks_total", &["CDS"]),
        1.0
    );
    assert_eq!(
        value(&exposition, "meshplane_xds_streams_failed_total", &[]),
        2.0
    );
    assert_eq!(
        value(&exposition, "meshplane_xds_push_ack_seconds", &[]),
        1.0
    );
    assert_eq!(
        value(&exposition, "meshplane_translation_seconds", &[]),
        1.0
    );
    assert_eq!(
        value(&exposition, "meshplane_ca_certificates_issued_total", &[]),
        2.0
    );
    assert_eq!(
        value(&exposition, "meshplane_ca_sign_refused_total", &[]),
        1.0
    );
    assert_eq!(
        value(
            &exposition,
            "meshplane_registry_errors_total",
            &["body", "consul"]
        ),
        2.0
    );
    assert_eq!(
        value(
            &exposition,
            "meshplane_registry_errors_total",
            &["status", "consul"]
        ),
        1.0
    );
    assert_eq!(value(&exposition, "meshplane_registry_services", &[]), 1.0);
    assert_eq!(value(&exposition, "meshplane_registry_instances", &[]), 2.0);
    // Nothing translated yet: the lag is the whole index; caught up, none.
    let index = value(&exposition, "meshplane_registry_index", &[]);
    assert!(index >= 1.0, "{text}");
    assert_eq!(
        value(&exposition, "meshplane_registry_translation_lag", &[]),
        index
    );
    metrics.translation().caught_up(index as u64);
    let caught_up = parse(&metrics.encode());
    assert_eq!(
        value(&caught_up, "meshplane_registry_translation_lag", &[]),
        0.0
    );
    assert_eq!(
        value(&exposition, "meshplane_registry_source_up", &["embedded"]),
        1.0
    );
    assert_eq!(
        value(&exposition, "meshplane_registry_source_up", &[odd_source]),
        1.0
    );
    // The names users grep for, as samples.
    for line in [
        "meshplane_ca_certificates_issued_total 2",
        "meshplane_xds_nacks_total{type=\"CDS\"} 1",
        "meshplane_xds_streams{protocol=\"sotw\"} 1",
        "meshplane_registry_instances 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line `{line}` in\n{text}"
        );
    }
}

#[test]
fn a_closed_stream_gives_its_gauges_back() {
    let metrics = Metrics::new(meshplane_registry::store().0, SnapshotCache::new());
    let stream = metrics.xds().stream_opened(&mk_stream(StreamKind::Delta));
    stream.sent(ResourceType::Listener, "l1", "1");
    stream.sent(ResourceType::Listener, "l2", "2");
    stream.closed();
    let exposition = parse(&metrics.encode());
    assert_eq!(value(&exposition, "meshplane_xds_streams", &["delta"]), 0.0);
    assert_eq!(
        value(&exposition, "meshplane_xds_proxies_by_type", &["LDS"]),
        0.0
    );
    assert_eq!(
        value(&exposition, "meshplane_xds_responses_total", &["LDS"]),
        2.0
    );
}
