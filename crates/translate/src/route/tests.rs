use std::collections::BTreeSet;

use meshplane_model::registration::{PROTOCOL_META_KEY, SIDECAR_META_KEY};
use meshplane_model::{Health, Instance, InstanceId, Locality};

use super::*;
use crate::fixtures::{Fixture, name};

fn mk_instance(protocol: &str) -> Instance {
    Instance {
        id: InstanceId::new("payments-1").expect("id"),
        service: name("payments"),
        node: "n1".into(),
        address: "10.0.0.1".into(),
        port: 31001,
        tags: vec!["v2".into()],
        meta: [(SIDECAR_META_KEY, "true"), (PROTOCOL_META_KEY, protocol)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        weight: 1,
        health: Health::Passing,
        locality: Locality::default(),
    }
}

fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("{}: not forwarded: {other:?}", r.name),
    }
}

#[allow(deprecated)]
fn max_grpc_timeout(r: &Route) -> Option<Duration> {
    action(r)
        .max_grpc_timeout
        .as_ref()
        .map(|d| Duration::new(d.seconds as u64, d.nanos as u32))
}

fn matches_deadline(r: &Route) -> bool {
    r.r#match
        .as_ref()
        .expect("a match")
        .headers
        .iter()
        .any(|h| h.name == GRPC_TIMEOUT_HEADER)
}

fn host(http2: bool) -> VirtualHost {
    let dep = Dependency {
        target: Target::Service(name("payments")),
        timeout: Some(Duration::from_millis(500)),
        retries: None,
    };
    let tags = BTreeSet::from(["v2".to_owned()]);
    service_host(&name("orders"), &name("payments"), Some(&dep), &tags, http2)
}

/// A gRPC call carrying `grpc-timeout` keeps its own deadline (Envoy's `max_grpc_timeout`
/// 0: uncapped); every other request, a gRPC call without a deadline included, gets the
/// dependency's timeout, which `max_grpc_timeout` would take away from it.
#[test]
fn http2_services_get_a_twin_route_for_grpc_calls_with_a_deadline() {
    let host = host(true);
    let names: Vec<_> = host.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "payments/tag/v2/grpc-timeout",
            "payments/tag/v2",
            "payments/tag/unknown",
            "payments/canary/grpc-timeout",
            "payments/canary",
            "payments/default/grpc-timeout",
            "payments/default",
        ]
    );
    for r in host
        .routes
        .iter()
        .filter(|r| r.name != "payments/tag/unknown")
    {
        let twin = r.name.ends_with("/grpc-timeout");
        assert_eq!(matches_deadline(r), twin, "{}", r.name);
        assert_eq!(
            max_grpc_timeout(r),
            twin.then_some(Duration::ZERO),
            "{}",
            r.name
        );
        assert_eq!(
            action(r).timeout.as_ref().map(|d| d.nanos),
            Some(500_000_000),
            "{}: the dependency's timeout",
            r.name
        );
    }
    // One retry policy, the virtual host's, for every route.
    assert!(host.retry_policy.is_some(), "the virtual host retries");
    assert!(
        host.routes
            .iter()
            .filter_map(|r| match &r.action {
                Some(route::Action::Route(a)) => Some(a),
                _ => None,
            })
            .all(|a| a.retry_policy.is_none()),
        "routes inherit the virtual host's retry policy"
    );
    // The twin keeps its route's other matchers and subset.
    let (twin, plain) = (&host.routes[0], &host.routes[1]);
    let headers = |r: &Route| r.r#match.as_ref().expect("match").headers.clone();
    assert_eq!(headers(twin)[..1], headers(plain)[..]);
    assert_eq!(action(twin).metadata_match, action(plain).metadata_match);
}

#[test]
fn http1_services_bound_every_request_by_the_timeout() {
    let host = host(false);
    assert!(
        host.routes
            .iter()
            .all(|r| !matches_deadline(r) && !r.name.ends_with("/grpc-timeout")),
        "no twins: {:?}",
        host.routes.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    for r in host
        .routes
        .iter()
        .filter(|r| r.name != "payments/tag/unknown")
    {
        assert_eq!(max_grpc_timeout(r), None, "{}", r.name);
    }
}

#[test]
fn the_twin_follows_the_protocol_callers_speak() {
    for (protocol, http2) in [("grpc", true), ("http2", true), ("http1", false)] {
        let catalog = Fixture(vec![(name("payments"), vec![mk_instance(protocol)])]);
        assert_eq!(
            speaks_http2(&name("payments"), &catalog),
            http2,
            "{protocol}"
        );
    }
    assert!(!speaks_http2(&name("payments"), &Fixture(Vec::new())));
}
