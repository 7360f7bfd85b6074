//! `/metrics` in Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use meshplane_xds::{ResourceType, StreamKind};

use crate::AdminState;

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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
