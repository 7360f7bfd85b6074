use super::*;
use crate::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};

#[test]
fn consistent_snapshot_is_accepted() {
    let s = Snapshot::new([
        mk_eds_cluster("payments"),
        mk_endpoints("payments", &[("127.0.0.1", 8080, 1)]),
        mk_http_listener("egress", 10000, "egress-routes"),
        mk_routes("egress-routes", &[("payments", "payments")]),
    ])
    .expect("consistent");
    assert_eq!(s.len(), 4);
    assert_eq!(s.resources(ResourceType::Cluster).len(), 1);
}

#[test]
fn cluster_without_endpoints_is_refused() {
    let err = Snapshot::new([mk_eds_cluster("payments")]).expect_err("missing EDS");
    assert_eq!(
        err,
        SnapshotError::MissingReference {
            from_kind: ResourceType::Cluster,
            from: "payments".into(),
            kind: ResourceType::Endpoint,
            name: "payments".into(),
        }
    );
}

#[test]
fn listener_without_route_config_is_refused() {
    let err = Snapshot::new([mk_http_listener("egress", 10000, "egress-routes")])
        .expect_err("missing RDS");
    assert!(err.to_string().contains("egress-routes"), "{err}");
}

#[test]
fn duplicate_names_are_refused() {
    let err = Snapshot::new([
        mk_endpoints("a", &[]),
        mk_endpoints("a", &[("127.0.0.1", 1, 1)]),
    ])
    .expect_err("duplicate");
    assert!(matches!(err, SnapshotError::DuplicateName { .. }));
}

#[test]
fn digest_tracks_content_only() {
    let a = Snapshot::new([mk_endpoints("a", &[("127.0.0.1", 1, 1)])]).expect("ok");
    let b = Snapshot::new([mk_endpoints("a", &[("127.0.0.1", 1, 1)])]).expect("ok");
    let c = Snapshot::new([mk_endpoints("a", &[("127.0.0.1", 2, 1)])]).expect("ok");
    assert_eq!(a.digest(), b.digest());
    assert_ne!(a.digest(), c.digest());
}
