//! Pure translation: registry state and a proxy's descriptor in, Envoy resources out.
//! No async, no I/O, no registry or xDS-server types.
//!
//! Translation is split so its cost scales with what changed:
//! - per service, shared by every proxy that depends on it: [`service_cluster`], and
//!   [`service_endpoints`] per datacenter of those proxies (each proxy's own datacenter is
//!   priority 0), built once per registry change of that service;
//! - per group of identical proxies: [`group_config`] (listeners, routes, and the clusters
//!   only that group uses: the local app, external domains).
//!
//! - per group, patched: [`EgressRoutes`], the egress routes in encoded parts, so a service
//!   appearing, leaving or changing tags re-encodes one virtual host of a large group.
//!
//! Start at [`group_config`]; [`MeshOptions`] holds the control-plane-wide settings.

mod access_log;
mod cluster;
mod egress_routes;
mod endpoints;
mod listener;
pub mod names;
mod proto;
mod protocol;
mod proxyless;
mod rbac;
mod route;
mod security;
mod tracing;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use meshplane_model::descriptor::Target;
use meshplane_model::{Descriptor, Instance, ServiceName};

pub use access_log::ERROR_STATUS_RUNTIME_KEY;
pub use cluster::service_cluster;
pub use egress_routes::EgressRoutes;
pub use endpoints::{routable_address, service_endpoints};
pub use protocol::{UpstreamProtocol, upstream_protocol};
pub use proxyless::{
    REASON_PREFIX, proxyless_clusters, proxyless_endpoints, proxyless_mtls_clusters,
    undeclared_cluster, undeclared_listener,
};
pub use rbac::{AUDIT_PREFIX, ENFORCE_PREFIX};

/// Control-plane-wide translation settings.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// The control plane's datacenter: the datacenter of proxies that do not name theirs.
    pub datacenter: String,
    /// Failover order of the other datacenters, after the proxy's own; datacenters not
    /// listed come after these, in name order.
    pub datacenter_order: Vec<String>,
    /// Per-service failover order or local-only pinning, replacing [`Self::datacenter_order`].
    pub service_localities: BTreeMap<ServiceName, ServiceLocality>,
    /// Envoy's overprovisioning factor (percent) on every service's endpoints: the proxy's
    /// datacenter keeps all of a service's traffic while its healthy share of instances times
    /// this factor reaches 100 %. See [`DEFAULT_OVERPROVISIONING_FACTOR`].
    pub overprovisioning_factor: u32,
    /// Services allowed to depend on every service (`service: "*"`).
    pub allow_wildcard_dependencies: BTreeSet<ServiceName>,
    /// CA bundle used to verify external `https://` domains.
    pub domain_ca_file: String,
    /// Fixed addresses for external domains (split-horizon DNS, demos, tests).
    pub domain_addresses: BTreeMap<String, IpAddr>,
    /// SPIFFE trust domain of service identities (`spiffe://<trust_domain>/service/<name>`).
    pub trust_domain: String,
    /// Where Envoys send trace spans, and how many requests they trace; `None`: no tracing.
    pub tracing: Option<TracingOptions>,
}

/// The OpenTelemetry collector every proxy sends its spans to (OTLP over gRPC), and the
/// share of requests traced where a service's descriptor does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingOptions {
    /// The collector's host (a name or an IP address).
    pub host: String,
    /// The collector's OTLP/gRPC port.
    pub port: u16,
    /// Default sampling.
    pub sampling: meshplane_model::descriptor::Percent,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            datacenter: "dc1".to_owned(),
            datacenter_order: Vec::new(),
            service_localities: BTreeMap::new(),
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
            allow_wildcard_dependencies: BTreeSet::new(),
            domain_ca_file: "/etc/ssl/certs/ca-certificates.crt".to_owned(),
            domain_addresses: BTreeMap::new(),
            trust_domain: meshplane_model::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            tracing: None,
        }
    }
}

/// The default [`MeshOptions::overprovisioning_factor`]: 100,000 %, so a datacenter keeps all
/// of a service's traffic while at least one in 1,000 of its instances is healthy. Traffic
/// leaves the proxy's datacenter when none of its instances can serve, not when some are
/// restarting (with Envoy's own default, 140 %, one instance of three down would already send
/// 7 % of requests to another datacenter).
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 100_000;

/// Where a service's traffic may go, overriding the control plane's datacenter order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceLocality {
    /// Failover order of the other datacenters for this service (unlisted ones follow in
    /// name order); `None` keeps [`MeshOptions::datacenter_order`].
    pub datacenter_order: Option<Vec<String>>,
    /// Only the proxy's own datacenter: the service's endpoints never leave it.
    pub local_only: bool,
}

/// What the translator needs to know about the registry.
pub trait Catalog {
    /// Every service name.
    fn services(&self) -> Vec<ServiceName>;
    /// Instances of a service; `None` when it is unknown.
    fn instances(&self, service: &ServiceName) -> Option<&[Instance]>;
}

/// One proxy group's input: its descriptor and where its ingress listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyGroup {
    /// The service descriptor sent as node metadata.
    pub descriptor: Descriptor,
    /// Address the ingress listener binds (the address registered in the registry).
    pub listen_address: String,
    /// The proxy's datacenter (its node locality): priority 0 of every service's endpoints.
    pub datacenter: String,
    /// A proxyless gRPC client (its node metadata says so), not an Envoy: [`group_config`]
    /// gives it API listeners and their routes, and its services' resources are
    /// [`proxyless_clusters`] and [`proxyless_endpoints`] instead.
    pub proxyless: bool,
    /// A proxyless client whose bootstrap defines gRPC's certificate provider
    /// [`GRPC_CERTIFICATE_PROVIDER`](meshplane_model::node_metadata::GRPC_CERTIFICATE_PROVIDER)
    /// (its node metadata says so): its clusters are [`proxyless_mtls_clusters`].
    pub proxyless_mtls: bool,
}

/// A group's own resources. Service clusters and endpoints come from
/// [`service_cluster`] / [`service_endpoints`] for each name in `services`.
#[derive(Debug, Clone, Default)]
pub struct GroupConfig {
    /// Ingress and egress listeners.
    pub listeners: Vec<Listener>,
    /// Route configurations served by RDS.
    pub routes: Vec<RouteConfiguration>,
    /// Clusters only this group uses: the local app, external domains.
    pub clusters: Vec<Cluster>,
    /// Mesh services this group depends on (each needs its shared cluster and endpoints).
    pub services: Vec<ServiceName>,
}

/// Why a group cannot be translated. Reported to that proxy only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The descriptor asks for every service but its service is not allowed to.
    #[error(
        "dependencies: `service: \"*\"` is only allowed for services listed in allow_wildcard_dependencies; `{0}` is not. List its dependencies explicitly or ask the mesh operator to allow it"
    )]
    WildcardNotAllowed(ServiceName),
}

/// Checks what only the control plane can check (policy, not syntax).
pub fn check_policy(descriptor: &Descriptor, options: &MeshOptions) -> Result<(), TranslateError> {
    if descriptor.depends_on_all()
        && !options
            .allow_wildcard_dependencies
            .contains(&descriptor.service)
    {
        return Err(TranslateError::WildcardNotAllowed(
            descriptor.service.clone(),
        ));
    }
    Ok(())
}

/// The mesh services a group depends on: its named dependencies, or every service in the
/// catalog for `service: "*"`.
pub fn dependency_services(descriptor: &Descriptor, catalog: &dyn Catalog) -> Vec<ServiceName> {
    let mut out: Vec<ServiceName> = if descriptor.depends_on_all() {
        catalog.services()
    } else {
        descriptor.service_dependencies().cloned().collect()
    };
    out.sort();
    out.dedup();
    out
}

/// Translates one group (an Envoy's listeners, routes and own clusters; a proxyless gRPC
/// client's API listeners and routes).
pub fn group_config(
    group: &ProxyGroup,
    catalog: &dyn Catalog,
    options: &MeshOptions,
) -> Result<GroupConfig, TranslateError> {
    let d = &group.descriptor;
    check_policy(d, options)?;
    let services = dependency_services(d, catalog);
    if group.proxyless {
        return Ok(proxyless::config(group, services, catalog));
    }
    let mut config = GroupConfig {
        listeners: vec![listener::ingress(group, options)],
        routes: Vec::new(),
        clusters: vec![cluster::local_app(d)],
        services: services.clone(),
    };
    if let Some(egress) = &d.egress {
        config
            .listeners
            .push(listener::egress(d, egress.port, options));
        config.routes.push(route::egress(d, &services, catalog));
        for dep in &d.dependencies {
            match &dep.target {
                Target::Domain(domain) => {
                    config.clusters.push(cluster::domain(domain, options));
                    if domain.tls {
                        config.clusters.push(cluster::tunnel(domain, options));
                    }
                }
                Target::DomainPattern(_) => {
                    if !config
                        .clusters
                        .iter()
                        .any(|c| c.name == names::DYNAMIC_FORWARD_PROXY)
                    {
                        config.clusters.push(cluster::dynamic_forward_proxy());
                    }
                }
                Target::Service(_) | Target::AllServices => {}
            }
        }
    }
    if let Some(t) = &options.tracing {
        config.clusters.push(tracing::collector(t));
    }
    config.clusters.dedup_by(|a, b| a.name == b.name);
    Ok(config)
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
