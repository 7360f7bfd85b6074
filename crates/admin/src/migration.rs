//! `GET /api/migration`: where the migration of each service into the mesh stands, from the
//! registry and the egress rollout flags. Per service: its instances registered by a sidecar
//! (their registration points at Envoy's ingress listener, so callers reach them through
//! Envoy) and those registered without one (callers reach the app directly), and for the
//! service's default and each dependency named in the flags how many of its sidecar
//! instances are told to send their calls through their egress proxy. Mesh-wide totals say
//! how many services accept ingress through Envoy and how many use egress.
//!
//! [`view`] is pure: the registry snapshot and the flags in, the view out.

use std::collections::BTreeMap;

use meshplane_model::registration::{CONTROL_PLANE_SERVICE, SIDECAR_META_KEY};
use meshplane_registry::Snapshot;
use meshplane_rollout::{Flags, InstanceInfo};
use serde::Serialize;

/// The whole view.
#[derive(Debug, Serialize)]
pub struct Migration {
    /// Mesh-wide counts.
    pub totals: Totals,
    /// Per service.
    pub services: BTreeMap<String, ServiceMigration>,
    /// The flags' version the egress counts come from (`null`: no flags store, every count
    /// is of the default, direct).
    pub flags_version: Option<u64>,
}

/// Mesh-wide counts.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Services in the registry (the control planes' own registrations left out).
    pub services: usize,
    /// Services whose every instance is registered by a sidecar: all ingress goes through
    /// Envoy.
    pub ingress_via_envoy: usize,
    /// Services with instances of both kinds (a migration under way).
    pub ingress_mixed: usize,
    /// Services without any sidecar.
    pub ingress_direct: usize,
    /// Services with at least one sidecar instance told to proxy some of its calls.
    pub using_egress: usize,
    /// Instances, and those registered by a sidecar.
    pub instances: usize,
    pub instances_with_sidecar: usize,
}

/// One service.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ServiceMigration {
    /// Registered instances.
    pub instances: usize,
    /// Of which registered by a sidecar (their registration points at Envoy).
    pub with_sidecar: usize,
    /// Of which registered without one (callers reach the app itself).
    pub without_sidecar: usize,
    /// `envoy` (every instance), `mixed`, or `direct` (none).
    pub ingress: &'static str,
    /// Egress decisions of the sidecar instances for the service's default (every
    /// dependency without a rule of its own)...
    pub egress_default: Split,
    /// ...and for each dependency the flags name for it.
    pub egress: Vec<DependencySplit>,
}

/// How many sidecar instances proxy, and how many call directly.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Split {
    pub proxy: usize,
    pub direct: usize,
}

/// [`Split`] for one dependency.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DependencySplit {
    /// As the descriptor and the flags name it.
    pub dependency: String,
    #[serde(flatten)]
    pub split: Split,
}

/// The view of `registry` under `flags` (`None`: no flags store; everything direct).
pub fn view(registry: &Snapshot, flags: Option<(&Flags, u64)>) -> Migration {
    let none = Flags::default();
    let (doc, version) = match flags {
        Some((f, v)) => (f, Some(v)),
        None => (&none, None),
    };
    let mut totals = Totals::default();
    let mut services = BTreeMap::new();
    for (name, entry) in &registry.services {
        if name.as_str() == CONTROL_PLANE_SERVICE {
            continue;
        }
        let instances = &entry.instances;
        let sidecars: Vec<_> = instances
            .iter()
            .filter(|i| i.meta.contains_key(SIDECAR_META_KEY))
            .collect();
        let dependencies: Vec<&str> = doc
            .services
            .get(name)
            .map(|s| s.dependencies.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut egress_default = Split::default();
        let mut egress: Vec<DependencySplit> = dependencies
            .iter()
            .map(|d| DependencySplit {
                dependency: (*d).to_owned(),
                split: Split::default(),
            })
            .collect();
        let count = |split: &mut Split, proxy: bool| {
            if proxy {
                split.proxy += 1;
            } else {
                split.direct += 1;
            }
        };
        for i in &sidecars {
            let info = InstanceInfo {
                id: i.id.as_str(),
                datacenter: &i.locality.datacenter,
                tags: &i.tags,
            };
            let decisions = doc.decisions(name, dependencies.iter().copied(), &info);
            count(&mut egress_default, decisions.default.proxy);
            for e in &mut egress {
                if let Some(decision) = decisions.dependencies.get(&e.dependency) {
                    count(&mut e.split, decision.proxy);
                }
            }
        }
        let (n, with) = (instances.len(), sidecars.len());
        let ingress = match with {
            0 => "direct",
            w if w == n => "envoy",
            _ => "mixed",
        };
        totals.services += 1;
        totals.instances += n;
        totals.instances_with_sidecar += with;
        match ingress {
            "envoy" => totals.ingress_via_envoy += 1,
            "mixed" => totals.ingress_mixed += 1,
            _ => totals.ingress_direct += 1,
        }
        if egress_default.proxy > 0 || egress.iter().any(|e| e.split.proxy > 0) {
            totals.using_egress += 1;
        }
        services.insert(
            name.to_string(),
            ServiceMigration {
                instances: n,
                with_sidecar: with,
                without_sidecar: n - with,
                ingress,
                egress_default,
                egress,
            },
        );
    }
    Migration {
        totals,
        services,
        flags_version: version,
    }
}
