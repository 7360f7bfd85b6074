//! The catalog in Consul's JSON shapes ([`meshplane_consul_api`]): what this registry answers
//! where Consul would, field for field.

use meshplane_consul_api::{
    AgentService, CatalogService, HealthCheck, Node as ConsulNode, ServiceEntry, Weights,
    catalog::ServiceProxy, duration, health::status,
};
use meshplane_model::Health;

use crate::registration::{Check, CheckKind, Node, Registration};

/// One entry of `/v1/health/service/:name`: the node, the instance, the node's `serfHealth`
/// and the instance's checks.
pub fn health_entry(reg: &Registration, node: &Node) -> ServiceEntry {
    let mut checks = vec![serf_health(node)];
    checks.extend(reg.checks.iter().map(|ch| check(ch, reg, node)));
    ServiceEntry {
        node: consul_node(node),
        service: service(reg, node),
        checks,
    }
}

/// The `Node` object of a health entry.
fn consul_node(node: &Node) -> ConsulNode {
    ConsulNode {
        id: node.id.clone(),
        node: node.name.clone(),
        address: node.address.clone(),
        datacenter: node.datacenter.clone(),
        tagged_addresses: tagged_addresses(&node.address),
        meta: Default::default(),
        create_index: 1,
        modify_index: 1,
    }
}

/// The `Service` object of a health entry (and `/v1/agent/services` values).
pub fn service(reg: &Registration, node: &Node) -> AgentService {
    let s = &reg.service;
    AgentService {
        id: s.id.to_string(),
        service: s.name.to_string(),
        tags: s.tags.clone(),
        address: s.address.clone(),
        meta: s.meta.clone(),
        port: s.port,
        weights: weights(reg),
        enable_tag_override: s.enable_tag_override,
        datacenter: node.datacenter.clone(),
        create_index: reg.create_index,
        modify_index: reg.modify_index,
    }
}

/// A `/v1/catalog/service/:name` entry: node and service fields flattened.
pub fn catalog_entry(reg: &Registration, node: &Node) -> CatalogService {
    let s = &reg.service;
    CatalogService {
        id: node.id.clone(),
        node: node.name.clone(),
        address: node.address.clone(),
        datacenter: node.datacenter.clone(),
        tagged_addresses: tagged_addresses(&node.address),
        node_meta: Default::default(),
        service_kind: String::new(),
        service_id: s.id.to_string(),
        service_name: s.name.to_string(),
        service_tags: s.tags.clone(),
        service_address: s.address.clone(),
        service_weights: weights(reg),
        service_meta: s.meta.clone(),
        service_port: s.port,
        service_enable_tag_override: s.enable_tag_override,
        service_proxy: ServiceProxy::default(),
        service_connect: Default::default(),
        create_index: reg.create_index,
        modify_index: reg.modify_index,
    }
}

/// One check, as in a health entry's `Checks` list and `/v1/agent/checks`.
pub fn check(check: &Check, reg: &Registration, node: &Node) -> HealthCheck {
    let (interval, timeout) = match &check.kind {
        CheckKind::Http {
            interval, timeout, ..
        } => (duration::format(*interval), duration::format(*timeout)),
        CheckKind::Ttl { .. } => (String::new(), String::new()),
    };
    HealthCheck {
        node: node.name.clone(),
        check_id: check.id.clone(),
        name: check.name.clone(),
        status: status(check.status).to_owned(),
        notes: check.notes.clone(),
        output: check.output.clone(),
        service_id: reg.service.id.to_string(),
        service_name: reg.service.name.to_string(),
        service_tags: reg.service.tags.clone(),
        r#type: check.kind.type_name().to_owned(),
        interval,
        timeout,
        exposed_port: 0,
        definition: Default::default(),
        create_index: check.create_index,
        modify_index: check.modify_index,
    }
}

/// The node-level check Consul reports with every health entry: this registry's node is
/// always alive.
pub fn serf_health(node: &Node) -> HealthCheck {
    HealthCheck {
        node: node.name.clone(),
        check_id: "serfHealth".into(),
        name: "Serf Health Status".into(),
        status: status::PASSING.into(),
        notes: String::new(),
        output: "Agent alive and reachable".into(),
        service_id: String::new(),
        service_name: String::new(),
        service_tags: Vec::new(),
        r#type: String::new(),
        interval: String::new(),
        timeout: String::new(),
        exposed_port: 0,
        definition: Default::default(),
        create_index: 1,
        modify_index: 1,
    }
}

/// Consul's status strings.
fn status(health: Health) -> &'static str {
    match health {
        Health::Passing => status::PASSING,
        Health::Warning => status::WARNING,
        Health::Critical => status::CRITICAL,
    }
}

fn weights(reg: &Registration) -> Weights {
    Weights {
        passing: reg.service.weight_passing,
        warning: reg.service.weight_warning,
    }
}

fn tagged_addresses(address: &str) -> std::collections::BTreeMap<String, String> {
    ["lan", "lan_ipv4", "wan", "wan_ipv4"]
        .into_iter()
        .map(|network| (network.to_owned(), address.to_owned()))
        .collect()
}
