//! A service's endpoints (EDS): weights, health, canary and tag metadata for subset
//! routing, the proxy's datacenter first and the others as failover priorities.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, cluster_load_assignment,
    lb_endpoint,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use meshplane_model::{Health, Instance, ServiceName};

use crate::MeshOptions;
use crate::proto::{socket, stable_map, string_value, u32_value};
use crate::security;

/// Metadata namespace the subset load balancer reads.
pub(crate) const LB_NAMESPACE: &str = "envoy.lb";
/// Endpoint metadata key holding an instance's tags (matched with `list_as_any`).
pub(crate) const TAGS_KEY: &str = "tags";
/// The registry tag that puts an instance in the canary subset.
pub(crate) const CANARY_TAG: &str = "canary";

/// The `ClusterLoadAssignment` of a service (named after it) for proxies in
/// `proxy_datacenter`: their datacenter is priority 0, the others follow in the service's
/// failover order (none when it is pinned local-only). Critical instances are sent as
/// unhealthy so Envoy's priority health accounting fails over to the next datacenter.
pub fn service_endpoints(
    service: &ServiceName,
    instances: &[Instance],
    proxy_datacenter: &str,
    options: &MeshOptions,
) -> ClusterLoadAssignment {
    let locality = options.service_localities.get(service);
    let local_only = locality.is_some_and(|l| l.local_only);
    let order = locality
        .and_then(|l| l.datacenter_order.as_deref())
        .unwrap_or(&options.datacenter_order);
    let mut by_dc: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    // EDS endpoints must be IP addresses: a host name would make Envoy reject the whole
    // assignment, taking every healthy instance of the service down with it. Registries
    // allow host names, so such instances are left out (and the runtime logs them).
    for i in instances.iter().filter(|i| routable_address(i)) {
        let dc = i.locality.datacenter.as_str();
        if local_only && dc != proxy_datacenter {
            continue;
        }
        by_dc.entry(dc).or_default().push(i);
    }
    let mut dcs: Vec<&str> = by_dc.keys().copied().collect();
    dcs.sort_by_key(|dc| (failover_rank(dc, proxy_datacenter, order), *dc));
    let endpoints = dcs
        .iter()
        .enumerate()
        .map(|(priority, dc)| {
            let mut members = by_dc[dc].clone();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            LocalityLbEndpoints {
                // The zone too: with the proxy's own (`node.locality.zone`), Envoy then
                // counts requests per datacenter pair (`cluster.<name>.zone.<from>.<to>.*`).
                locality: Some(Locality {
                    region: (*dc).to_owned(),
                    zone: (*dc).to_owned(),
                    ..Default::default()
                }),
                lb_endpoints: members.into_iter().map(lb_endpoint).collect(),
                priority: priority as u32,
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: service.to_string(),
        endpoints,
        // Explicit rather than Envoy's default, which spills traffic out of the datacenter
        // as soon as fewer than ~71 % of its instances are healthy.
        policy: Some(cluster_load_assignment::Policy {
            overprovisioning_factor: Some(u32_value(options.overprovisioning_factor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A datacenter's place in the failover order: the proxy's own first, then the listed ones,
/// then every other (ties broken by name).
fn failover_rank(dc: &str, proxy_datacenter: &str, order: &[String]) -> usize {
    if dc == proxy_datacenter {
        return 0;
    }
    match order.iter().position(|o| o == dc) {
        Some(at) => at + 1,
        None => order.len() + 1,
    }
}

/// Whether an instance's address can be an EDS endpoint (an IP address).
pub fn routable_address(i: &Instance) -> bool {
    i.address.parse::<std::net::IpAddr>().is_ok()
}

fn lb_endpoint(i: &Instance) -> LbEndpoint {
    let health = match i.health {
        Health::Passing | Health::Warning => HealthStatus::Healthy,
        Health::Critical => HealthStatus::Unhealthy,
    };
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(&i.address, i.port)),
            hostname: i.id.to_string(),
            ..Default::default()
        })),
        health_status: health as i32,
        load_balancing_weight: Some(u32_value(i.weight.max(1))),
        metadata: subset_metadata(i),
    }
}

/// Tags for subset selection (`envoy.lb`) and whether the instance accepts mTLS
/// (`envoy.transport_socket_match`). Maps are built with `stable_map`, so equal content
/// encodes to equal bytes within a process.
fn subset_metadata(i: &Instance) -> Option<Metadata> {
    let mtls = security::accepts_mtls(&i.meta);
    if i.tags.is_empty() && !mtls {
        return None;
    }
    let mut filter_metadata = stable_map();
    if !i.tags.is_empty() {
        let mut tags = i.tags.clone();
        tags.sort();
        tags.dedup();
        let mut fields = stable_map();
        fields.insert(
            TAGS_KEY.to_owned(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: tags.iter().map(|t| string_value(t)).collect(),
                })),
            },
        );
        filter_metadata.insert(LB_NAMESPACE.to_owned(), Struct { fields });
    }
    if mtls {
        let mut fields = stable_map();
        fields.insert(
            security::TLS_MATCH_KEY.to_owned(),
            string_value(security::TLS_MATCH_MTLS),
        );
        filter_metadata.insert(security::TLS_MATCH_NAMESPACE.to_owned(), Struct { fields });
    }
    Some(Metadata {
        filter_metadata,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
