//! The catalog in Consul's JSON shapes ([`meshplane_consul_api`]): what this registry answers
//! where Consul would, field for field.

use meshplane_consul_api::{
    AgentService, CatalogService, HealthCheck, Node as ConsulNode, ServiceEntry, Weights,
    catalog::ServiceProxy,
    duration,
    health::{HealthCheckDefinition, status},
};
use meshplane_model::Health;
use serde::{Serialize, Serializer, ser::SerializeStruct};

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
    let (interval, timeout) = intervals(&check.kind);
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

/// [`check`]'s JSON, written straight from the catalog: `/v1/health/state/:state` answers
/// every check of the datacenter, and building tens of thousands of owned [`HealthCheck`]s
/// first cost more than writing the JSON (BENCHMARKS.md, "Consul source"). Byte for byte the
/// JSON of [`check`] (tested).
pub struct CheckJson<'a> {
    pub check: &'a Check,
    pub reg: &'a Registration,
    pub node: &'a Node,
}

impl CheckJson<'_> {
    /// The check's status as Consul writes it.
    pub fn status(&self) -> &'static str {
        status(self.check.status)
    }
}

impl Serialize for CheckJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (c, service) = (self.check, &self.reg.service);
        let (interval, timeout) = intervals(&c.kind);
        let mut out = serializer.serialize_struct("HealthCheck", 16)?;
        out.serialize_field("Node", &self.node.name)?;
        out.serialize_field("CheckID", &c.id)?;
        out.serialize_field("Name", &c.name)?;
        out.serialize_field("Status", status(c.status))?;
        out.serialize_field("Notes", &c.notes)?;
        out.serialize_field("Output", &c.output)?;
        out.serialize_field("ServiceID", service.id.as_str())?;
        out.serialize_field("ServiceName", service.name.as_str())?;
        out.serialize_field("ServiceTags", &service.tags)?;
        out.serialize_field("Type", c.kind.type_name())?;
        out.serialize_field("Interval", &interval)?;
        out.serialize_field("Timeout", &timeout)?;
        out.serialize_field("ExposedPort", &0u16)?;
        out.serialize_field("Definition", &HealthCheckDefinition::default())?;
        out.serialize_field("CreateIndex", &c.create_index)?;
        out.serialize_field("ModifyIndex", &c.modify_index)?;
        out.end()
    }
}

/// A check's `Interval` and `Timeout` (empty for TTL checks).
fn intervals(kind: &CheckKind) -> (String, String) {
    match kind {
        CheckKind::Http {
            interval, timeout, ..
        } => (duration::format(*interval), duration::format(*timeout)),
        CheckKind::Ttl { .. } => (String::new(), String::new()),
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

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use meshplane_model::{Health, InstanceId, ServiceName};

    use super::*;
    use crate::registration::ServiceDef;

    fn registration(checks: Vec<Check>) -> Registration {
        Registration {
            service: ServiceDef {
                id: InstanceId::new("web-1").expect("id"),
                name: ServiceName::new("web").expect("name"),
                tags: vec!["v1".into(), "quoted \"tag\"".into()],
                address: "10.0.0.1".into(),
                port: 8080,
                meta: BTreeMap::new(),
                weight_passing: 1,
                weight_warning: 1,
                enable_tag_override: false,
            },
            checks,
            create_index: 3,
            modify_index: 4,
        }
    }

    fn a_check(kind: CheckKind, status: Health) -> Check {
        Check {
            id: "service:web-1".into(),
            name: "Service 'web' check".into(),
            kind,
            deregister_after: None,
            notes: "n\u{e9}e".into(),
            output: "HTTP GET: 200 OK\nline two".into(),
            status,
            create_index: 5,
            modify_index: 9,
        }
    }

    #[test]
    fn check_json_is_byte_for_byte_the_json_of_the_owned_check() {
        let node = Node {
            name: "meshplane".into(),
            id: "8f4e9a52-0000-4000-8000-000000000001".into(),
            address: "127.0.0.1".into(),
            datacenter: "dc1".into(),
        };
        let http = CheckKind::Http {
            url: "http://127.0.0.1:8080/health".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(1500),
            method: "GET".into(),
            header: BTreeMap::new(),
        };
        let ttl = CheckKind::Ttl {
            ttl: Duration::from_secs(30),
        };
        for (kind, status) in [(http, Health::Warning), (ttl, Health::Critical)] {
            let reg = registration(vec![a_check(kind, status)]);
            let check = &reg.checks[0];
            let owned = serde_json::to_string(&super::check(check, &reg, &node)).expect("owned");
            let view = serde_json::to_string(&CheckJson {
                check,
                reg: &reg,
                node: &node,
            })
            .expect("view");
            assert_eq!(view, owned);
        }
    }
}
