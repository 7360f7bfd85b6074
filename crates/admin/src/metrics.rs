//! `/metrics` in Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use meshplane_xds::{ResourceType, StreamKind};

use crate::AdminState;

/// Control-plane work measured outside the xDS server.
#[derive(Debug, Default)]
pub struct ControlPlaneMetrics {
    /// Time to translate one registry change or one newly demanded group.
    pub translation: meshplane_xds::status::Histogram,
    /// Groups that could not be translated or published.
    pub translation_errors: std::sync::atomic::AtomicU64,
    /// Group snapshots published.
    pub snapshots_published: std::sync::atomic::AtomicU64,
    /// The registry index the translator last caught up with.
    pub translated_index: std::sync::atomic::AtomicU64,
    /// Certificates the built-in CA signed.
    pub certificates_issued: std::sync::atomic::AtomicU64,
    /// Sign requests the built-in CA refused (bad CSR, wrong identity).
    pub certificates_refused: std::sync::atomic::AtomicU64,
}

/// Writes one metric family: HELP, TYPE and its samples (`labels` is `{...}` or empty).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// One unlabelled sample.
fn single(value: u64) -> Vec<(String, u64)> {
    vec![(String::new(), value)]
}

/// One sample per resource type, labelled `type="CDS"` etc.
fn per_type(value: impl Fn(ResourceType) -> u64) -> Vec<(String, u64)> {
    ResourceType::ALL
        .iter()
        .map(|k| (format!("{{type=\"{}\"}}", k.short_name()), value(*k)))
        .collect()
}

pub(crate) async fn render(State(s): State<AdminState>) -> impl IntoResponse {
    let mut out = String::new();
    let proxies = s.status.proxies();
    let c = s.status.counters();
    let registry = s.store.snapshot();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);

    let by_protocol = [("sotw", StreamKind::Sotw), ("delta", StreamKind::Delta)]
        .iter()
        .map(|(label, kind)| {
            let n = proxies.iter().filter(|p| p.kind == *kind).count() as u64;
            (format!("{{protocol=\"{label}\"}}"), n)
        })
        .collect::<Vec<_>>();
    family(
        &mut out,
        "meshplane_xds_streams",
        "gauge",
        "Connected xDS streams by protocol.",
        &by_protocol,
    );
    let sent_type = per_type(|k| {
        proxies
            .iter()
            .filter(|p| p.type_status(k).sent_version.is_some())
            .count() as u64
    });
    family(
        &mut out,
        "meshplane_xds_proxies_by_type",
        "gauge",
        "Proxies that were sent each resource type.",
        &sent_type,
    );
    family(
        &mut out,
        "meshplane_xds_responses_total",
        "counter",
        "xDS responses sent, by type.",
        &per_type(|k| load(&c.responses[k as usize])),
    );
    family(
        &mut out,
        "meshplane_xds_nacks_total",
        "counter",
        "Responses rejected by proxies, by type.",
        &per_type(|k| load(&c.nacks[k as usize])),
    );
    family(
        &mut out,
        "meshplane_xds_streams_failed_total",
        "counter",
        "Streams refused or ended with an error.",
        &single(load(&c.streams_failed)),
    );
    out.push_str(&c.push_ack_latency.render(
        "meshplane_xds_push_ack_seconds",
        "Time from sending a response to the proxy's ACK.",
    ));
    family(
        &mut out,
        "meshplane_groups",
        "gauge",
        "Groups with a snapshot.",
        &single(s.cache.groups().len() as u64),
    );
    out.push_str(&s.metrics.translation.render(
        "meshplane_translation_seconds",
        "Time to translate a registry change or a newly demanded group.",
    ));
    family(
        &mut out,
        "meshplane_translation_errors_total",
        "counter",
        "Groups that could not be translated or published.",
        &single(load(&s.metrics.translation_errors)),
    );
    family(
        &mut out,
        "meshplane_snapshots_published_total",
        "counter",
        "Group snapshots published.",
        &single(load(&s.metrics.snapshots_published)),
    );
    family(
        &mut out,
        "meshplane_ca_certificates_issued_total",
        "counter",
        "Certificates the built-in CA signed.",
        &single(load(&s.metrics.certificates_issued)),
    );
    family(
        &mut out,
        "meshplane_ca_sign_refused_total",
        "counter",
        "Sign requests the built-in CA refused (malformed CSR, wrong identity, bad token not counted).",
        &single(load(&s.metrics.certificates_refused)),
    );
    family(
        &mut out,
        "meshplane_registry_services",
        "gauge",
        "Services in the registry.",
        &single(registry.services.len() as u64),
    );
    family(
        &mut out,
        "meshplane_registry_instances",
        "gauge",
        "Instances in the registry.",
        &single(registry.instance_count() as u64),
    );
    family(
        &mut out,
        "meshplane_registry_index",
        "gauge",
        "Registry index.",
        &single(registry.index),
    );
    let lag = registry
        .index
        .saturating_sub(load(&s.metrics.translated_index));
    family(
        &mut out,
        "meshplane_registry_translation_lag",
        "gauge",
        "Registry index steps not yet translated.",
        &single(lag),
    );
    family(
        &mut out,
        "meshplane_registry_stale",
        "gauge",
        "1 while a registry source serves possibly outdated data.",
        &single(u64::from(registry.is_stale())),
    );
    let sources = registry
        .sources
        .iter()
        .map(|(source, status)| {
            let up = u64::from(matches!(status, meshplane_registry::SourceStatus::Synced));
            (format!("{{source=\"{}\"}}", source.as_str()), up)
        })
        .collect::<Vec<_>>();
    family(
        &mut out,
        "meshplane_registry_source_up",
        "gauge",
        "1 when a registry source is synced, 0 while syncing or stale.",
        &sources,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
