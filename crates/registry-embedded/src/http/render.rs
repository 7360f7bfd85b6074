//! Consul's JSON shapes, field for field (PascalCase, `ID`-style acronyms).

use meshplane_model::Health;
use serde_json::{Value, json};

use crate::{
    duration,
    registration::{Check, CheckKind, Node, Registration},
};

/// The `Node` object of a health entry.
pub fn node(node: &Node) -> Value {
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": tagged_addresses(&node.address),
        "Meta": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

/// The `Service` object of a health entry (and `/v1/agent/services` values).
pub fn service(reg: &Registration, node: &Node) -> Value {
    let s = &reg.service;
    json!({
        "ID": s.id,
        "Service": s.name,
        "Tags": s.tags,
        "Address": s.address,
        "Meta": s.meta,
        "Port": s.port,
        "Weights": { "Passing": s.weight_passing, "Warning": s.weight_warning },
        "EnableTagOverride": s.enable_tag_override,
        "Datacenter": node.datacenter,
        "CreateIndex": reg.create_index,
        "ModifyIndex": reg.modify_index,
    })
}

/// A `/v1/catalog/service/:name` entry: node and service fields flattened.
pub fn catalog_entry(reg: &Registration, node: &Node) -> Value {
    let s = &reg.service;
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": tagged_addresses(&node.address),
        "NodeMeta": {},
        "ServiceKind": "",
        "ServiceID": s.id,
        "ServiceName": s.name,
        "ServiceTags": s.tags,
        "ServiceAddress": s.address,
        "ServiceWeights": { "Passing": s.weight_passing, "Warning": s.weight_warning },
        "ServiceMeta": s.meta,
        "ServicePort": s.port,
        "ServiceEnableTagOverride": s.enable_tag_override,
        "ServiceProxy": { "Expose": {} },
        "ServiceConnect": {},
        "CreateIndex": reg.create_index,
        "ModifyIndex": reg.modify_index,
    })
}

/// One check, as in a health entry's `Checks` list and `/v1/agent/checks`.
pub fn check(check: &Check, reg: &Registration, node: &Node) -> Value {
    let (interval, timeout) = match &check.kind {
        CheckKind::Http {
            interval, timeout, ..
        } => (duration::format(*interval), duration::format(*timeout)),
        CheckKind::Ttl { .. } => (String::new(), String::new()),
    };
    json!({
        "Node": node.name,
        "CheckID": check.id,
        "Name": check.name,
        "Status": status(check.status),
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": reg.service.id,
        "ServiceName": reg.service.name,
        "ServiceTags": reg.service.tags,
        "Type": check.kind.type_name(),
        "Interval": interval,
        "Timeout": timeout,
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    })
}

/// The node-level check Consul reports with every health entry.
pub fn serf_health(node: &Node) -> Value {
    json!({
        "Node": node.name,
        "CheckID": "serfHealth",
        "Name": "Serf Health Status",
        "Status": "passing",
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

/// Consul's status strings.
pub fn status(health: Health) -> &'static str {
    match health {
        Health::Passing => "passing",
        Health::Warning => "warning",
        Health::Critical => "critical",
    }
}

fn tagged_addresses(address: &str) -> Value {
    json!({ "lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address })
}
