//! Egress routes: one virtual host per dependency and, for any other host, only the path of
//! the sidecar's egress flags (an undeclared host matches no route and gets the listener's
//! "not a dependency" 503), with per-dependency
//! timeouts and retries, canary preference and tag selection. A service callers reach over
//! HTTP/2 gets each route twice: first for gRPC calls carrying their own deadline
//! (`grpc-timeout`, which then replaces the timeout), then for every other request.

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{DataSource, Metadata, data_source};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualCluster, VirtualHost, header_matcher, retry_policy, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Struct;
use meshplane_model::descriptor::{Dependency, Domain, Retries, RetryOn, Target};
use meshplane_model::{Descriptor, ServiceName};

use crate::Catalog;
use crate::endpoints::{CANARY_TAG, LB_NAMESPACE, TAGS_KEY};
use crate::names;
use crate::proto::{any, duration, stable_map, string_value, u32_value};
use crate::protocol::{UpstreamProtocol, upstream_protocol};

/// Header that prefers canary instances (`1`), falling back to any instance.
pub const CANARY_HEADER: &str = "x-canary";
/// Header that selects instances with a tag, without fallback.
pub const TAG_HEADER: &str = "x-service-tag";
/// Request timeout when the dependency sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Retries when the dependency sets none: connection failures, resets and refused streams
/// are retried (on another instance) so they never surface as bare 503s.
pub const DEFAULT_RETRIES: u32 = 2;

/// The egress route configuration.
pub(crate) fn egress(
    d: &Descriptor,
    services: &[ServiceName],
    catalog: &dyn Catalog,
) -> RouteConfiguration {
    let mut virtual_hosts = Vec::new();
    for service in services {
        let tags = tags_of(service, catalog);
        virtual_hosts.push(service_host(
            &d.service,
            service,
            dependency(d, service),
            &tags,
            speaks_http2(service, catalog),
        ));
    }
    for dep in &d.dependencies {
        match &dep.target {
            Target::Domain(domain) => virtual_hosts.push(domain_host(domain, dep)),
            Target::DomainPattern(pattern) => virtual_hosts.push(pattern_host(pattern, dep)),
            Target::Service(_) | Target::AllServices => {}
        }
    }
    virtual_hosts.push(egress_flags_host());
    RouteConfiguration {
        name: names::EGRESS_ROUTES.to_owned(),
        virtual_hosts,
        ..Default::default()
    }
}

/// The app's own questions to its egress port (`http://127.0.0.1:<egress>/.meshplane/egress`,
/// any host no dependency claims) and its reports (`/.meshplane/egress/report`): that path and
/// those under it go to the sidecar process's flags server,
/// with no timeout (the app long-polls it). Every other path still matches no route and gets
/// the listener's "not a dependency" 503.
fn egress_flags_host() -> VirtualHost {
    VirtualHost {
        name: names::EGRESS_FLAGS_HOST.to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![mk_route(
            names::EGRESS_FLAGS_HOST,
            RouteMatch {
                // The path and what is under it (`/report`), nothing else.
                path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(
                    meshplane_model::egress_flags::PATH.to_owned(),
                )),
                ..Default::default()
            },
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    meshplane_model::egress_flags::CLUSTER.to_owned(),
                )),
                timeout: Some(duration(Duration::ZERO)),
                ..Default::default()
            }),
        )],
        ..Default::default()
    }
}

/// The dependency naming `service` (its timeout and retries), if the descriptor names it.
pub(crate) fn dependency<'a>(d: &'a Descriptor, service: &ServiceName) -> Option<&'a Dependency> {
    d.dependencies
        .iter()
        .find(|dep| matches!(&dep.target, Target::Service(s) if s == service))
}

/// Whether callers' sidecars speak HTTP/2 to `service`, the only way a gRPC call reaches
/// it: only then do its routes need a twin for calls carrying their own deadline.
pub(crate) fn speaks_http2(service: &ServiceName, catalog: &dyn Catalog) -> bool {
    let instances = catalog.instances(service).unwrap_or_default();
    upstream_protocol(instances) == UpstreamProtocol::Http2
}

/// A service's tags: one route each. The scrape tag every sidecar adds selects nothing
/// (every instance of the service has it), so it gets no route.
pub(crate) fn tags_of(service: &ServiceName, catalog: &dyn Catalog) -> BTreeSet<String> {
    catalog
        .instances(service)
        .unwrap_or_default()
        .iter()
        .flat_map(|i| i.tags.iter())
        .filter(|t| *t != meshplane_model::registration::METRICS_TAG)
        .cloned()
        .collect()
}

fn prefix_match(headers: Vec<HeaderMatcher>) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
        headers,
        ..Default::default()
    }
}

fn connect_match() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::ConnectMatcher(
            route_match::ConnectMatcher {},
        )),
        ..Default::default()
    }
}

pub(crate) fn header_exact(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// The header Envoy sets on the mTLS chain with the verified client certificate's URI SAN,
/// last: `By=<own>;Hash=<hash>;URI=<caller>`.
const XFCC_HEADER: &str = "x-forwarded-client-cert";

fn header_suffix(name: &str, suffix: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Suffix(suffix.to_owned())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn header_present(name: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
        ..Default::default()
    }
}

fn lb_match(key: &str, value: envoy_types::pb::google::protobuf::Value) -> Metadata {
    let mut fields = stable_map();
    fields.insert(key.to_owned(), value);
    let mut filter_metadata = stable_map();
    filter_metadata.insert(LB_NAMESPACE.to_owned(), Struct { fields });
    Metadata {
        filter_metadata,
        ..Default::default()
    }
}

/// The header carrying a gRPC call's own deadline.
const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// What bounds a forwarded request in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The dependency's `timeout` (every request, gRPC calls without a deadline included).
    Timeout,
    /// A gRPC call's own deadline (`grpc-timeout`), uncapped, so a long stream lives as long
    /// as its client allows. Only on routes that match calls carrying `grpc-timeout`: Envoy's
    /// `max_grpc_timeout` gives a gRPC call without the header no limit at all.
    GrpcTimeout,
}

/// Forwards to `cluster` within the dependency's timeout (or the call's own deadline). The
/// retry policy is the virtual host's, said once for all its routes (see [`dependency_retries`]).
fn forward(
    cluster: &str,
    dep: Option<&Dependency>,
    metadata_match: Option<Metadata>,
    deadline: Deadline,
) -> route::Action {
    route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
        timeout: Some(duration(
            dep.and_then(|d| d.timeout).unwrap_or(DEFAULT_TIMEOUT),
        )),
        metadata_match,
        // `max_stream_duration.grpc_timeout_header_max` would say the same in one route, but
        // switches every request to Envoy's stream-duration timeouts, counted from the
        // request's start: a WebSocket or a client stream would end at `timeout`, when
        // `timeout` only starts once the request is complete.
        #[allow(deprecated)]
        max_grpc_timeout: (deadline == Deadline::GrpcTimeout).then(|| duration(Duration::ZERO)),
        ..Default::default()
    })
}

/// The routes for requests matching `headers`: one bounded by the dependency's `timeout`
/// and, when the service speaks HTTP/2 (so it may be gRPC), before it, its twin for gRPC
/// calls that carry their own deadline.
fn forward_routes(
    name: &str,
    headers: Vec<HeaderMatcher>,
    cluster: &str,
    dep: Option<&Dependency>,
    metadata_match: Option<Metadata>,
    http2: bool,
) -> Vec<Route> {
    let mut routes = Vec::with_capacity(2);
    if http2 {
        let mut with_deadline = headers.clone();
        with_deadline.push(header_present(GRPC_TIMEOUT_HEADER));
        routes.push(mk_route(
            &format!("{name}/{GRPC_TIMEOUT_HEADER}"),
            prefix_match(with_deadline),
            forward(cluster, dep, metadata_match.clone(), Deadline::GrpcTimeout),
        ));
    }
    routes.push(mk_route(
        name,
        prefix_match(headers),
        forward(cluster, dep, metadata_match, Deadline::Timeout),
    ));
    routes
}

/// The dependency's retry policy, for a virtual host (every route without its own inherits
/// it): one copy per service rather than one per route.
fn dependency_retries(dep: Option<&Dependency>) -> Option<RetryPolicy> {
    Some(retry_policy(dep.and_then(|d| d.retries.as_ref())))
}

/// `action` with the dependency's retry policy on the route itself: a domain's virtual host
/// also holds its `CONNECT` tunnel route, which must not retry.
fn with_retries(mut action: route::Action, dep: &Dependency) -> route::Action {
    if let route::Action::Route(a) = &mut action {
        a.retry_policy = dependency_retries(Some(dep));
    }
    action
}

fn tunnel(cluster: &str) -> route::Action {
    route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
        // A tunnel lives as long as the app keeps it open.
        timeout: Some(duration(Duration::ZERO)),
        upgrade_configs: vec![route_action::UpgradeConfig {
            upgrade_type: "CONNECT".to_owned(),
            connect_config: Some(route_action::upgrade_config::ConnectConfig::default()),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn mk_route(name: &str, r#match: RouteMatch, action: route::Action) -> Route {
    Route {
        name: name.to_owned(),
        r#match: Some(r#match),
        action: Some(action),
        ..Default::default()
    }
}

/// Attempts made in a priority (a datacenter) before a retry moves on to the next one: the
/// first two attempts of a request stay in the proxy's datacenter (on two hosts when it has
/// two); the third and fourth go to the next datacenter. So a request whose local instances
/// all refuse it (stopped before their health checks say so) is served elsewhere instead of
/// failing, while one bad local instance only moves the request to another local one.
pub const ATTEMPTS_PER_DATACENTER: i32 = 2;

/// A retry policy. Retries always go to a different host when one exists, and to the next
/// datacenter after [`ATTEMPTS_PER_DATACENTER`] attempts, with jittered backoff (25 ms base,
/// 250 ms cap).
pub(crate) fn retry_policy(retries: Option<&Retries>) -> RetryPolicy {
    let (attempts, per_try, on) = match retries {
        Some(r) => (r.attempts, r.per_try_timeout, r.on.clone()),
        None => (
            DEFAULT_RETRIES,
            None,
            vec![
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::RefusedStream,
                // gRPC's own "try again" (a server shedding load, or going away).
                RetryOn::Grpc(meshplane_model::descriptor::GrpcRetryStatus::Unavailable),
            ],
        ),
    };
    let mut retry_on: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for condition in &on {
        match condition {
            RetryOn::ConnectFailure => retry_on.push("connect-failure"),
            RetryOn::Reset => retry_on.push("reset"),
            RetryOn::RefusedStream => retry_on.push("refused-stream"),
            RetryOn::GatewayError => retry_on.push("gateway-error"),
            RetryOn::ServerError => retry_on.push("5xx"),
            // Envoy has no "503" token: statuses go through retriable-status-codes.
            RetryOn::Status(code) => codes.push(u32::from(*code)),
            RetryOn::Grpc(status) => retry_on.push(status.name()),
        }
    }
    if !codes.is_empty() {
        retry_on.push("retriable-status-codes");
    }
    retry_on.dedup();
    RetryPolicy {
        retry_on: retry_on.join(","),
        num_retries: Some(u32_value(attempts)),
        per_try_timeout: per_try.map(duration),
        retriable_status_codes: codes,
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                any(&PreviousHostsPredicate::default()),
            )),
        }],
        host_selection_retry_max_attempts: 5,
        retry_priority: Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_owned(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(any(
                &PreviousPrioritiesConfig {
                    update_frequency: ATTEMPTS_PER_DATACENTER,
                },
            ))),
        }),
        retry_back_off: Some(retry_back_off()),
        ..Default::default()
    }
}

/// Between retries: 25 ms growing to 250 ms (Envoy's default grows to 250 ms from 25 ms
/// too, said here so proxyless gRPC clients, which have no default, get the same).
pub(crate) fn retry_back_off() -> retry_policy::RetryBackOff {
    retry_policy::RetryBackOff {
        base_interval: Some(duration(Duration::from_millis(25))),
        max_interval: Some(duration(Duration::from_millis(250))),
    }
}

/// A service's virtual host for `caller`'s egress: one route per tag, the canary route, the
/// default route (each with its twin for gRPC calls carrying a deadline when `http2`: the
/// service's callers speak HTTP/2 to it, see [`speaks_http2`]), and one virtual cluster,
/// `caller`, that counts every request: its
/// statistics, `vhost.outbound|<service>.vcluster.<caller>.*`, are the caller's side of the
/// service pair (the sidecar's bootstrap turns the names into `direction`,
/// `destination_service` and `source_service` labels).
pub(crate) fn service_host(
    caller: &ServiceName,
    service: &ServiceName,
    dep: Option<&Dependency>,
    tags: &BTreeSet<String>,
    http2: bool,
) -> VirtualHost {
    let name = service.as_str();
    let mut routes: Vec<Route> = tags
        .iter()
        .flat_map(|tag| {
            forward_routes(
                &format!("{name}/tag/{tag}"),
                vec![header_exact(TAG_HEADER, tag)],
                name,
                dep,
                Some(lb_match(TAGS_KEY, string_value(tag))),
                http2,
            )
        })
        .collect();
    routes.push(mk_route(
        &format!("{name}/tag/unknown"),
        prefix_match(vec![header_present(TAG_HEADER)]),
        route::Action::DirectResponse(DirectResponseAction {
            status: 503,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(format!(
                    "meshplane: no instance of `{name}` has the tag requested in {TAG_HEADER}\n"
                ))),
                ..Default::default()
            }),
            ..Default::default()
        }),
    ));
    routes.extend(forward_routes(
        &format!("{name}/canary"),
        vec![header_exact(CANARY_HEADER, "1")],
        name,
        dep,
        Some(lb_match(TAGS_KEY, string_value(CANARY_TAG))),
        http2,
    ));
    routes.extend(forward_routes(
        &format!("{name}/default"),
        Vec::new(),
        name,
        dep,
        None,
        http2,
    ));
    VirtualHost {
        name: names::outbound_host(service),
        domains: vec![name.to_owned()],
        routes,
        retry_policy: dependency_retries(dep),
        // Envoy wants a matcher: every request has a method.
        virtual_clusters: vec![VirtualCluster {
            name: caller.to_string(),
            headers: vec![header_present(":method")],
        }],
        ..Default::default()
    }
}

fn domain_host(domain: &Domain, dep: &Dependency) -> VirtualHost {
    let cluster = names::domain_cluster(domain);
    let tunnel_cluster = if domain.tls {
        names::tunnel_cluster(domain)
    } else {
        cluster.clone()
    };
    VirtualHost {
        name: cluster.clone(),
        domains: vec![domain.host.clone()],
        routes: vec![
            mk_route(
                &format!("{cluster}/connect"),
                connect_match(),
                tunnel(&tunnel_cluster),
            ),
            mk_route(
                &format!("{cluster}/default"),
                prefix_match(Vec::new()),
                with_retries(forward(&cluster, Some(dep), None, Deadline::Timeout), dep),
            ),
        ],
        ..Default::default()
    }
}

fn pattern_host(pattern: &str, dep: &Dependency) -> VirtualHost {
    let cluster = names::DYNAMIC_FORWARD_PROXY;
    VirtualHost {
        name: format!("pattern:{pattern}"),
        domains: vec![pattern.to_owned()],
        routes: vec![
            mk_route(
                &format!("{pattern}/connect"),
                connect_match(),
                tunnel(cluster),
            ),
            mk_route(
                &format!("{pattern}/default"),
                prefix_match(Vec::new()),
                with_retries(forward(cluster, Some(dep), None, Deadline::Timeout), dep),
            ),
        ],
        ..Default::default()
    }
}

/// The ingress routes: health path and everything else to the local app. One virtual cluster
/// per client the service names in `incoming`, matched on the caller identity Envoy sets from
/// the verified certificate (`x-forwarded-client-cert`, which a caller cannot set: Envoy
/// replaces it on the mTLS chain and removes it on the plaintext one): its statistics,
/// `vhost.inbound|<service>.vcluster.<client>.*`, are the callee's side of the service
/// pair; every other caller counts under Envoy's own `other`.
pub(crate) fn ingress(d: &Descriptor, trust_domain: &str) -> RouteConfiguration {
    let to_app = |timeout: Duration| {
        route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                names::LOCAL_APP.to_owned(),
            )),
            timeout: Some(duration(timeout)),
            ..Default::default()
        })
    };
    let health = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Path(
            d.ingress.health_path.clone(),
        )),
        ..Default::default()
    };
    RouteConfiguration {
        name: names::INGRESS_ROUTES.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: names::inbound_host(&d.service),
            virtual_clusters: ingress_clusters(d, trust_domain),
            domains: vec!["*".to_owned()],
            routes: vec![
                mk_route("health", health, to_app(Duration::from_secs(5))),
                mk_route(
                    "app",
                    prefix_match(Vec::new()),
                    to_app(d.ingress.timeout.unwrap_or(DEFAULT_TIMEOUT)),
                ),
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The ingress virtual clusters: one per client named in `incoming`, matched on the verified
/// identity; Envoy counts everyone else under its own `other`. Without named clients, one
/// `other` counts every caller, so the callee's side of its pairs always exists.
fn ingress_clusters(d: &Descriptor, trust_domain: &str) -> Vec<VirtualCluster> {
    let clients = d.named_clients();
    if clients.is_empty() {
        return vec![VirtualCluster {
            name: OTHER_CALLERS.to_owned(),
            headers: vec![header_present(":method")],
        }];
    }
    clients
        .iter()
        .map(|client| VirtualCluster {
            name: client.to_string(),
            headers: vec![header_suffix(
                XFCC_HEADER,
                &format!(
                    ";URI={}",
                    meshplane_model::identity::spiffe_id(trust_domain, client)
                ),
            )],
        })
        .collect()
}

/// Envoy's name for requests no virtual cluster matched.
const OTHER_CALLERS: &str = "other";

/// The plaintext side of a `strict` ingress: the health path reaches the app (the
/// registry's check has no certificate); everything else is refused with a 403 that says why.
pub(crate) fn strict_plaintext(d: &Descriptor, trust_domain: &str) -> RouteConfiguration {
    let mut config = ingress(d, trust_domain);
    let refuse = route::Action::DirectResponse(DirectResponseAction {
        status: 403,
        body: Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(format!(
                "meshplane: `{}` accepts only mutual TLS (mtls: strict); call it through a sidecar\n",
                d.service
            ))),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(vh) = config.virtual_hosts.first_mut() {
        vh.routes.truncate(1);
        vh.routes.push(mk_route(
            "plaintext-refused",
            prefix_match(Vec::new()),
            refuse,
        ));
    }
    config
}

#[cfg(test)]
mod tests;
