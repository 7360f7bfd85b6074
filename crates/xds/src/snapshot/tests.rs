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

fn mesh(ports: &[u16]) -> Vec<Arc<Resource>> {
    let names: Vec<String> = (0..ports.len()).map(|i| format!("svc-{i}")).collect();
    let hosts: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), n.as_str())).collect();
    let mut out: Vec<Arc<Resource>> = names
        .iter()
        .zip(ports)
        .flat_map(|(n, port)| {
            [
                mk_eds_cluster(n),
                mk_endpoints(n, &[("10.0.0.1", *port, 1)]),
            ]
        })
        .collect();
    out.push(mk_http_listener("egress", 10000, "egress-routes"));
    out.push(mk_routes("egress-routes", &hosts));
    out
}

#[test]
fn upserts_give_the_snapshot_built_from_scratch_and_name_what_changed() {
    let before = Snapshot::new(mesh(&[8080, 8080, 8080])).expect("consistent");
    let after = before
        .with_upserts([mk_endpoints("svc-1", &[("10.0.0.1", 9090, 1)])])
        .expect("consistent");
    let scratch = Snapshot::new(mesh(&[8080, 9090, 8080])).expect("consistent");
    assert_eq!(after.digest(), scratch.digest());
    for kind in ResourceType::ALL {
        assert_eq!(after.type_version(kind), scratch.type_version(kind));
        let changed = after
            .changed_since(kind, before.type_version(kind))
            .expect("knows its predecessor");
        let expected: &[String] = if kind == ResourceType::Endpoint {
            &["svc-1".to_owned()]
        } else {
            &[]
        };
        assert_eq!(changed, expected, "{kind}");
    }
    // Only a stream in line with the predecessor may use the change set.
    assert!(
        after
            .changed_since(
                ResourceType::Endpoint,
                scratch.type_version(ResourceType::Endpoint)
            )
            .is_none()
    );
    // An unchanged upsert changes nothing.
    let same = before
        .with_upserts([mk_endpoints("svc-0", &[("10.0.0.1", 8080, 1)])])
        .expect("consistent");
    assert_eq!(same.digest(), before.digest());
}

#[test]
fn upserts_are_checked() {
    let before = Snapshot::new(mesh(&[8080])).expect("consistent");
    let err = before
        .with_upserts([mk_eds_cluster("svc-9")])
        .expect_err("a cluster without endpoints");
    assert!(err.to_string().contains("svc-9"), "{err}");
}

#[test]
fn changes_from_a_predecessor_name_added_changed_and_removed() {
    let before = Snapshot::new(mesh(&[8080, 8080, 8080])).expect("consistent");
    let mut resources = mesh(&[8080, 9090]);
    resources.retain(|r| r.kind() != ResourceType::Route);
    resources.push(mk_routes(
        "egress-routes",
        &[("svc-0", "svc-0"), ("svc-1", "svc-1")],
    ));
    let after = Snapshot::new(resources)
        .expect("consistent")
        .with_changes_from(&before);
    let changed = |kind| {
        after
            .changed_since(kind, before.type_version(kind))
            .expect("knows its predecessor")
            .to_vec()
    };
    assert_eq!(changed(ResourceType::Cluster), ["svc-2"]);
    assert_eq!(changed(ResourceType::Endpoint), ["svc-1", "svc-2"]);
    assert!(changed(ResourceType::Listener).is_empty());
    assert_eq!(changed(ResourceType::Route), ["egress-routes"]);
}

#[test]
fn a_patch_gives_the_snapshot_built_from_scratch_and_names_what_changed() {
    // svc-2 leaves (cluster, endpoints, its virtual host); svc-1's endpoints move.
    let before = Snapshot::new(mesh(&[8080, 8080, 8080])).expect("consistent");
    let routes = mk_routes("egress-routes", &[("svc-0", "svc-0"), ("svc-1", "svc-1")]);
    let after = before
        .with_patch(
            [
                mk_endpoints("svc-1", &[("10.0.0.1", 9090, 1)]),
                routes.clone(),
            ],
            [
                (ResourceType::Cluster, "svc-2".to_owned()),
                (ResourceType::Endpoint, "svc-2".to_owned()),
                (ResourceType::Secret, "never-there".to_owned()),
            ],
        )
        .expect("consistent");
    let mut resources = mesh(&[8080, 9090]);
    resources.retain(|r| r.kind() != ResourceType::Route);
    resources.push(routes);
    let scratch = Snapshot::new(resources).expect("consistent");
    assert_eq!(after.digest(), scratch.digest());
    assert_eq!(after.len(), scratch.len());
    let changed = |kind| {
        after
            .changed_since(kind, before.type_version(kind))
            .expect("knows its predecessor")
            .to_vec()
    };
    for kind in ResourceType::ALL {
        assert_eq!(
            after.type_version(kind),
            scratch.type_version(kind),
            "{kind}"
        );
    }
    assert_eq!(changed(ResourceType::Cluster), ["svc-2"]);
    assert_eq!(changed(ResourceType::Endpoint), ["svc-1", "svc-2"]);
    assert!(changed(ResourceType::Listener).is_empty());
    assert_eq!(changed(ResourceType::Route), ["egress-routes"]);
    assert!(changed(ResourceType::Secret).is_empty());

    // Added back: the snapshot it started from.
    let back = after
        .with_patch(mesh(&[8080, 8080, 8080]), [])
        .expect("consistent");
    assert_eq!(back.digest(), before.digest());
}

#[test]
fn a_patch_that_removes_what_is_referenced_is_refused() {
    let before = Snapshot::new(mesh(&[8080, 8080])).expect("consistent");
    let err = before
        .with_patch([], [(ResourceType::Endpoint, "svc-1".to_owned())])
        .expect_err("cluster svc-1 still needs its endpoints");
    assert_eq!(
        err,
        SnapshotError::MissingReference {
            from_kind: ResourceType::Cluster,
            from: "svc-1".into(),
            kind: ResourceType::Endpoint,
            name: "svc-1".into(),
        }
    );
    let err = before
        .with_patch([], [(ResourceType::Route, "egress-routes".to_owned())])
        .expect_err("the listener still needs its routes");
    assert!(err.to_string().contains("egress-routes"), "{err}");
}
