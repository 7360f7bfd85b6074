//! A group's egress routes kept as encoded parts, one per virtual host, so that a service
//! appearing, disappearing or changing its tags re-encodes one virtual host, not the
//! 1,000 of a wildcard group's route configuration.
//!
//! The parts concatenate to exactly the bytes prost gives for [`route::egress`]'s
//! `RouteConfiguration`: a message's encoding is its fields in order, and a repeated field's
//! is its elements one after the other. Each part is itself the encoding of a
//! `RouteConfiguration` holding only that part (the name, or one virtual host), so no field
//! number is written by hand. Byte-identical matters: a resource's version is a hash of its
//! bytes, and must be the same whether the routes were built at once or patched, in every
//! control-plane instance and across restarts.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use meshplane_model::{Descriptor, ServiceName};
use prost::Message;

use crate::{Catalog, GroupConfig, dependency_services, names, route};

/// A group's egress `RouteConfiguration`, patchable one service at a time. Start with
/// [`EgressRoutes::new`] (or [`EgressRoutes::take_from_config`] after [`crate::group_config`]),
/// call [`EgressRoutes::update_service`] for each service that changed, then
/// [`EgressRoutes::encode`].
#[derive(Debug, Clone)]
pub struct EgressRoutes {
    descriptor: Descriptor,
    /// The encoded `name` field.
    name: Vec<u8>,
    /// Each dependency's virtual host, encoded; in name order, the order of
    /// [`dependency_services`].
    services: BTreeMap<ServiceName, Vec<u8>>,
    /// The domain and domain-pattern virtual hosts, encoded: they follow the services'.
    others: Vec<u8>,
}

impl EgressRoutes {
    /// The egress routes of a group with `descriptor` over `catalog`; `None` when the group
    /// has no egress listener (and so no egress routes).
    pub fn new(descriptor: &Descriptor, catalog: &dyn Catalog) -> Option<Self> {
        descriptor.egress.as_ref()?;
        let services = dependency_services(descriptor, catalog);
        let config = route::egress(descriptor, &services, catalog);
        Some(Self::split(descriptor, &services, config))
    }

    /// Takes the egress routes out of `config`, which [`crate::group_config`] translated for
    /// a group with `descriptor`: the same as [`EgressRoutes::new`] over the same catalog,
    /// without building the virtual hosts a second time. `None` (and `config` unchanged)
    /// when the group has no egress routes.
    pub fn take_from_config(descriptor: &Descriptor, config: &mut GroupConfig) -> Option<Self> {
        let at = config
            .routes
            .iter()
            .position(|r| r.name == names::EGRESS_ROUTES)?;
        let routes = config.routes.remove(at);
        Some(Self::split(descriptor, &config.services, routes))
    }

    /// `config` as [`route::egress`] built it for `services`: one virtual host per service,
    /// in order, then the others.
    fn split(
        descriptor: &Descriptor,
        services: &[ServiceName],
        config: RouteConfiguration,
    ) -> Self {
        let mut hosts = config.virtual_hosts.into_iter();
        let services = services
            .iter()
            .zip(hosts.by_ref())
            .map(|(service, host)| (service.clone(), encode_host(host)))
            .collect();
        EgressRoutes {
            descriptor: descriptor.clone(),
            name: encode_name(&config.name),
            services,
            others: hosts.flat_map(encode_host).collect(),
        }
    }

    /// Brings `service`'s virtual host in line with `catalog`: added when the service is a
    /// dependency (a wildcard group's: it is in the catalog; a named one: the descriptor
    /// lists it), re-encoded with its current tags, removed when it is no longer one.
    pub fn update_service(&mut self, service: &ServiceName, catalog: &dyn Catalog) {
        let dependency = if self.descriptor.depends_on_all() {
            catalog.instances(service).is_some()
        } else {
            self.descriptor.service_dependencies().any(|s| s == service)
        };
        if dependency {
            let host = route::service_host(
                &self.descriptor.service,
                service,
                route::dependency(&self.descriptor, service),
                &route::tags_of(service, catalog),
                route::speaks_http2(service, catalog),
            );
            self.services.insert(service.clone(), encode_host(host));
        } else {
            self.services.remove(service);
        }
    }

    /// The services that have a virtual host, in order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }

    /// The encoded `RouteConfiguration`.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.name.len()
            + self.services.values().map(Vec::len).sum::<usize>()
            + self.others.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.name);
        for host in self.services.values() {
            out.extend_from_slice(host);
        }
        out.extend_from_slice(&self.others);
        out
    }
}

fn encode_name(name: &str) -> Vec<u8> {
    RouteConfiguration {
        name: name.to_owned(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn encode_host(host: VirtualHost) -> Vec<u8> {
    RouteConfiguration {
        virtual_hosts: vec![host],
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests;
