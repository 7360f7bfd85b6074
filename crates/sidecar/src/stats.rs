//! Which statistics the sidecar's Envoy creates: the bootstrap's `stats_config` and
//! `deferred_stat_options`, from the descriptor's `stats` (`docs/descriptor.md`).
//!
//! Envoy creates ~150 statistics per cluster and keeps them for the cluster's life; a proxy
//! with `service: "*"` has one cluster per service, so at 1,000 services most of its memory is
//! statistics nobody reads. The mesh keeps every statistic outside clusters (they do not grow
//! with the mesh) and, per cluster, only [`KEPT_PER_CLUSTER`]: what Meshplane itself reads
//! (the admin panel and relay, the tests), what tells an operator a dependency is failing, and
//! nothing that only profiles Envoy. A service adds patterns or keeps everything; it cannot
//! remove what the mesh keeps, since the admin API relies on it.

use meshplane_model::{Stats, StatsPattern};
use serde_json::{Value, json};

/// Families kept whole: their size is fixed by the proxy's listeners and secrets, not by
/// the number of services. `cluster.meshplane_*.` are the proxy's own links to the control
/// plane and to its sidecar (tests count xDS connections there).
pub const KEPT_PREFIXES: [&str; 21] = [
    "server.",
    "cluster_manager.",
    "listener_manager.",
    "control_plane.",
    "runtime.",
    "overload.",
    "http.",
    "http1.",
    "http2.",
    "listener.",
    "sds.",
    "tls_inspector.",
    "dns_cache.",
    "dns.",
    "main_thread.",
    "workers.",
    "filesystem.",
    "cluster.meshplane_xds.",
    "cluster.meshplane_sds.",
    // The tracer's own counters (spans sent, flushes): a handful, whatever the mesh's size.
    "tracing.",
    // Service pairs: one virtual cluster per dependency (egress) and per client named in
    // `incoming` plus `other` (ingress); see [`service_pair_tags`].
    "vhost.",
];

/// Labels Envoy gives the service-pair statistics in its Prometheus output, from the names
/// the control plane gives virtual hosts and clusters:
///
/// - `vhost.outbound|<destination>.vcluster.<source>.upstream_rq_*` (the caller's egress) and
///   `vhost.inbound|<destination>.vcluster.<source>.upstream_rq_*` (the callee's ingress;
///   `<source>` is a client named in `incoming`, or `other`) become
///   `envoy_vhost_vcluster_upstream_rq_*{direction, destination_service, source_service}`;
/// - `cluster.<name>.zone.<from>.<to>.upstream_rq_*` (the caller's requests by datacenter
///   pair) become `envoy_cluster_zone_upstream_rq_*{envoy_cluster_name, source_datacenter,
///   destination_datacenter}`.
///
/// - `cluster.<name>.grpc.<code>` (gRPC calls by final status, counted by the listeners'
///   `grpc_stats` filter) become `envoy_cluster_grpc{envoy_cluster_name, grpc_status}`, the
///   status as its number (`0` OK, `7` PERMISSION_DENIED, `14` UNAVAILABLE…).
///
/// Envoy's own labels stay (`envoy_response_code`, `envoy_response_code_class`, and
/// `envoy_virtual_host`/`envoy_virtual_cluster` beside the pair's).
pub fn service_pair_tags() -> Value {
    json!([
        { "tag_name": "direction", "regex": r"^vhost\.((inbound|outbound)\|)" },
        { "tag_name": "destination_service", "regex": r"^vhost\.(?:inbound|outbound)\|((.+?)\.)vcluster\." },
        { "tag_name": "source_service", "regex": r"^vhost\..+?\.vcluster\.((.+?)\.)upstream_rq" },
        { "tag_name": "source_datacenter", "regex": r"^cluster\..+?\.zone\.(([^.]+)\.)[^.]+\.upstream_rq" },
        { "tag_name": "destination_datacenter", "regex": r"^cluster\..+?\.zone\.[^.]+\.(([^.]+)\.)upstream_rq" },
        { "tag_name": "grpc_status", "regex": r"^cluster\..+\.grpc(\.(\d+))$" },
    ])
}

/// What the mesh keeps of every cluster, by name after `cluster.<name>.`: endpoints known and
/// healthy, requests by outcome class and their latency, retries and timeouts, connection
/// failures, circuit breakers and outlier ejections, EDS updates, and mTLS failures.
pub const KEPT_PER_CLUSTER: [&str; 38] = [
    "membership_total",
    "membership_healthy",
    "membership_degraded",
    "membership_excluded",
    "upstream_rq_total",
    "upstream_rq_completed",
    "upstream_rq_active",
    "upstream_rq_pending_active",
    "upstream_rq_1xx",
    "upstream_rq_2xx",
    "upstream_rq_3xx",
    "upstream_rq_4xx",
    "upstream_rq_5xx",
    "upstream_rq_time",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_pending_overflow",
    "upstream_cx_total",
    "upstream_cx_active",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_none_healthy",
    "upstream_cx_overflow",
    "upstream_cx_destroy_remote_with_active_rq",
    "update_success",
    "update_rejected",
    "outlier_detection.ejections_active",
    "outlier_detection.ejections_enforced_total",
    "circuit_breakers.default.cx_open",
    "circuit_breakers.default.rq_open",
    "circuit_breakers.default.rq_pending_open",
    "ssl.handshake",
    "ssl.connection_error",
    "ssl.fail_verify_san",
];

/// gRPC calls per cluster (a regular expression after `cluster.<name>.`): by final status
/// (`grpc.0`, `grpc.14`…), `success`, `failure`, `total` and message counts — a fixed set,
/// since the `grpc_stats` filter does not split them by method.
pub const KEPT_GRPC_PER_CLUSTER: &str = r"grpc\.[a-z0-9_]+";

/// The bootstrap fields for `stats` (none for `all`: Envoy's own behaviour).
pub fn bootstrap_fields(stats: &Stats) -> Vec<(&'static str, Value)> {
    let Stats::Mesh(extra) = stats else {
        return vec![("stats_config", json!({ "stats_tags": service_pair_tags() }))];
    };
    let patterns: Vec<Value> = KEPT_PREFIXES
        .iter()
        .map(|p| json!({ "prefix": p }))
        .chain(std::iter::once(
            json!({ "safe_regex": { "regex": per_cluster_regex() } }),
        ))
        .chain(extra.iter().map(pattern))
        .collect();
    vec![
        (
            "stats_config",
            json!({
                "stats_tags": service_pair_tags(),
                "stats_matcher": { "inclusion_list": { "patterns": patterns } },
            }),
        ),
        // Cluster traffic statistics are created when a cluster first carries traffic: a
        // wildcard proxy calls few of its clusters, and the others cost no statistics at all.
        (
            "deferred_stat_options",
            json!({ "enable_deferred_creation_stats": true }),
        ),
    ]
}

/// One RE2 expression for every kept per-cluster statistic. Cluster names may contain dots
/// (service names and domains do), so the name is `.+` and the statistic is anchored at the end.
fn per_cluster_regex() -> String {
    let names: Vec<String> = KEPT_PER_CLUSTER
        .iter()
        .map(|n| n.replace('.', "\\."))
        .collect();
    format!(
        "^cluster\\..+\\.({}|{KEPT_GRPC_PER_CLUSTER})$",
        names.join("|")
    )
}

fn pattern(p: &StatsPattern) -> Value {
    match p {
        StatsPattern::Prefix(t) => json!({ "prefix": t }),
        StatsPattern::Suffix(t) => json!({ "suffix": t }),
        StatsPattern::Exact(t) => json!({ "exact": t }),
        StatsPattern::Contains(t) => json!({ "contains": t }),
        StatsPattern::Regex(t) => json!({ "safe_regex": { "regex": t } }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_means_no_matcher_and_eager_statistics() {
        assert_eq!(
            bootstrap_fields(&Stats::All),
            vec![("stats_config", json!({ "stats_tags": service_pair_tags() }))]
        );
    }

    #[test]
    fn the_mesh_list_comes_first_and_additions_after_it() {
        let fields = bootstrap_fields(&Stats::Mesh(vec![
            StatsPattern::Suffix(".lb_healthy_panic".into()),
            StatsPattern::Regex("^vhost\\..*".into()),
        ]));
        let (key, config) = &fields[0];
        assert_eq!(*key, "stats_config");
        let patterns = config["stats_matcher"]["inclusion_list"]["patterns"]
            .as_array()
            .expect("patterns");
        assert_eq!(patterns.len(), KEPT_PREFIXES.len() + 3);
        assert_eq!(patterns[0], json!({ "prefix": "server." }));
        assert_eq!(
            patterns[KEPT_PREFIXES.len() + 1],
            json!({ "suffix": ".lb_healthy_panic" })
        );
        assert_eq!(
            patterns[KEPT_PREFIXES.len() + 2],
            json!({ "safe_regex": { "regex": "^vhost\\..*" } })
        );
        assert_eq!(fields[1].0, "deferred_stat_options");
    }

    #[test]
    fn the_per_cluster_expression_escapes_dots_and_anchors_both_ends() {
        let re = per_cluster_regex();
        assert!(re.starts_with("^cluster\\..+\\.(membership_total|"), "{re}");
        assert!(re.contains("|ssl\\.handshake|"), "{re}");
        assert!(re.ends_with(")$"), "{re}");
        // What Envoy makes of it is checked with a real Envoy in `tests/stats.rs`.
    }

    #[test]
    fn the_descriptor_page_lists_the_mesh_list() {
        let doc = include_str!("../../../docs/descriptor.md");
        let missing: Vec<&str> = KEPT_PREFIXES
            .iter()
            .chain(KEPT_PER_CLUSTER.iter())
            .filter(|name| !doc.contains(&format!("`{name}`")))
            .copied()
            .collect();
        assert!(missing.is_empty(), "docs/descriptor.md lacks {missing:?}");
    }
}
