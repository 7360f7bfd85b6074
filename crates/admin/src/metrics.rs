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
}

pub(crate) async fn render(State(s): State<AdminState>) -> impl IntoResponse {
    let mut out = String::new();
    let proxies = s.status.proxies();
    let counters = s.status.counters();
    let registry = s.store.snapshot();

    let _ = writeln!(
        out,
        "# HELP meshplane_xds_streams Connected xDS streams by protocol."
    );
    let _ = writeln!(out, "# TYPE meshplane_xds_streams gauge");
    for (label, kind) in [("sotw", StreamKind::Sotw), ("delta", StreamKind::Delta)] {
        let n = proxies.iter().filter(|p| p.kind == kind).count();
        let _ = writeln!(out, "meshplane_xds_streams{{protocol=\"{label}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP meshplane_xds_proxies_by_type Proxies that were sent each resource type."
    );
    let _ = writeln!(out, "# TYPE meshplane_xds_proxies_by_type gauge");
    for k in ResourceType::ALL {
        let n = proxies
            .iter()
            .filter(|p| p.type_status(k).sent_version.is_some())
            .count();
        let _ = writeln!(
            out,
            "meshplane_xds_proxies_by_type{{type=\"{}\"}} {n}",
            k.short_name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP meshplane_xds_responses_total xDS responses sent, by type."
    );
    let _ = writeln!(out, "# TYPE meshplane_xds_responses_total counter");
    for k in ResourceType::ALL {
        let n = counters.responses[k as usize].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "meshplane_xds_responses_total{{type=\"{}\"}} {n}",
            k.short_name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP meshplane_xds_nacks_total Responses rejected by proxies, by type."
    );
    let _ = writeln!(out, "# TYPE meshplane_xds_nacks_total counter");
    for k in ResourceType::ALL {
        let n = counters.nacks[k as usize].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "meshplane_xds_nacks_total{{type=\"{}\"}} {n}",
            k.short_name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP meshplane_xds_streams_failed_total Streams refused or ended with an error."
    );
    let _ = writeln!(out, "# TYPE meshplane_xds_streams_failed_total counter");
    let _ = writeln!(
        out,
        "meshplane_xds_streams_failed_total {}",
        counters.streams_failed.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP meshplane_groups Groups with a snapshot.");
    let _ = writeln!(out, "# TYPE meshplane_groups gauge");
    let _ = writeln!(out, "meshplane_groups {}", s.cache.groups().len());
    let _ = writeln!(
        out,
        "# HELP meshplane_registry_services Services in the registry."
    );
    let _ = writeln!(out, "# TYPE meshplane_registry_services gauge");
    let _ = writeln!(
        out,
        "meshplane_registry_services {}",
        registry.services.len()
    );
    let _ = writeln!(
        out,
        "# HELP meshplane_registry_instances Instances in the registry."
    );
    let _ = writeln!(out, "# TYPE meshplane_registry_instances gauge");
    let _ = writeln!(
        out,
        "meshplane_registry_instances {}",
        registry.instance_count()
    );
    let _ = writeln!(out, "# HELP meshplane_registry_index Registry index.");
    let _ = writeln!(out, "# TYPE meshplane_registry_index gauge");
    let _ = writeln!(out, "meshplane_registry_index {}", registry.index);
    let translated = s.metrics.translated_index.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP meshplane_registry_translation_lag Registry index steps not yet translated."
    );
    let _ = writeln!(out, "# TYPE meshplane_registry_translation_lag gauge");
    let _ = writeln!(
        out,
        "meshplane_registry_translation_lag {}",
        registry.index.saturating_sub(translated)
    );
    let _ = writeln!(
        out,
        "# HELP meshplane_registry_stale 1 while a registry source serves possibly outdated data."
    );
    let _ = writeln!(out, "# TYPE meshplane_registry_stale gauge");
    let _ = writeln!(
        out,
        "meshplane_registry_stale {}",
        u8::from(registry.is_stale())
    );
    out.push_str(&counters.push_ack_latency.render(
        "meshplane_xds_push_ack_seconds",
        "Time from sending a response to the proxy's ACK.",
    ));
    out.push_str(&s.metrics.translation.render(
        "meshplane_translation_seconds",
        "Time to translate a registry change or a newly demanded group.",
    ));
    let _ = writeln!(
        out,
        "# HELP meshplane_translation_errors_total Groups that could not be translated or published."
    );
    let _ = writeln!(out, "# TYPE meshplane_translation_errors_total counter");
    let _ = writeln!(
        out,
        "meshplane_translation_errors_total {}",
        s.metrics.translation_errors.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP meshplane_snapshots_published_total Group snapshots published."
    );
    let _ = writeln!(out, "# TYPE meshplane_snapshots_published_total counter");
    let _ = writeln!(
        out,
        "meshplane_snapshots_published_total {}",
        s.metrics.snapshots_published.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP meshplane_registry_source_up 1 when a registry source is synced, 0 while syncing or stale."
    );
    let _ = writeln!(out, "# TYPE meshplane_registry_source_up gauge");
    for (source, status) in &registry.sources {
        let up = u8::from(matches!(status, meshplane_registry::SourceStatus::Synced));
        let _ = writeln!(
            out,
            "meshplane_registry_source_up{{source=\"{}\"}} {up}",
            source.as_str()
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
