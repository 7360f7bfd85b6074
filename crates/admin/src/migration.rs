//! `GET /api/migration`: where the migration of each service into the mesh stands, from the
//! registry and the egress rollout flags. Per service: its instances registered by a sidecar
//! (their registration points at Envoy's ingress listener, so callers reach them through
//! Envoy) and those registered without one (callers reach the app directly), and for the
//! service's default and each dependency named in the flags how many of its sidecar
//! instances are told to send their calls through their egress proxy; and, from the
//! sidecars' traffic reports of the last minutes ([`crate::traffic`]), how many of the
//! service's calls to mesh services went through its egress proxy and how many its apps sent
//! straight to the callee. Mesh-wide totals say how many services accept ingress through
//! Envoy and how many use egress.
//!
//! [`view`] is pure: the registry snapshot, the flags and the recent traffic in, the view out.

use std::collections::BTreeMap;

use meshplane_model::registration::{CONTROL_PLANE_SERVICE, SIDECAR_META_KEY};
use meshplane_model::traffic::Calls;
use meshplane_registry::Snapshot;
use meshplane_rollout::{Flags, InstanceInfo};
use serde::Serialize;

use crate::traffic::Recent;

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
    /// Services whose calls went through their egress proxy in the window (measured), and
    /// services whose apps reported calls sent direct.
    pub sending_via_egress: usize,
    pub sending_direct: usize,
    /// Calls to mesh services in the window, mesh-wide: through egress proxies, and direct.
    pub calls: Calls,
    /// Instances, and those registered by a sidecar.
    pub instances: usize,
    pub instances_with_sidecar: usize,
}

/// One service.
#[derive(Debug, Serialize, PartialEq)]
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
    /// Its calls to mesh services in the window, as its sidecars reported them.
    pub calls: MeasuredCalls,
}

/// A service's recent calls (measured), in total and per called service.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct MeasuredCalls {
    /// Instances of the service that reported in the window.
    pub reporting: usize,
    /// Through the egress proxy, and sent direct (reported by the apps' interceptors).
    #[serde(flatten)]
    pub total: Calls,
    /// `proxy / (proxy + direct)`, to three decimals; `null` without calls.
    pub via_egress: Option<f64>,
    /// Per called service, by name.
    pub by_dependency: Vec<DependencyCalls>,
}

/// [`Calls`] to one service.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DependencyCalls {
    pub dependency: String,
    #[serde(flatten)]
    pub calls: Calls,
}

impl MeasuredCalls {
    fn of(caller: &meshplane_model::ServiceName, recent: &Recent) -> MeasuredCalls {
        let mut out = MeasuredCalls {
            reporting: recent.reporting.get(caller).copied().unwrap_or_default(),
            ..MeasuredCalls::default()
        };
        for (callee, calls) in recent.pairs.get(caller).into_iter().flatten() {
            if calls.is_empty() {
                continue;
            }
            out.total.add(*calls);
            out.by_dependency.push(DependencyCalls {
                dependency: callee.to_string(),
                calls: *calls,
            });
        }
        out.via_egress = share(out.total);
        out
    }
}

/// The share of `calls` sent through the egress proxy, to three decimals.
fn share(calls: Calls) -> Option<f64> {
    let all = calls.proxy.checked_add(calls.direct)?;
    (all > 0).then(|| (calls.proxy as f64 * 1000.0 / all as f64).round() / 1000.0)
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

/// The view of `registry` under `flags` (`None`: no flags store; everything direct), with
/// the `recent` traffic reported.
pub fn view(registry: &Snapshot, flags: Option<(&Flags, u64)>, recent: &Recent) -> Migration {
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
        let calls = MeasuredCalls::of(name, recent);
        totals.sending_via_egress += usize::from(calls.total.proxy > 0);
        totals.sending_direct += usize::from(calls.total.direct > 0);
        totals.calls.add(calls.total);
        services.insert(
            name.to_string(),
            ServiceMigration {
                instances: n,
                with_sidecar: with,
                without_sidecar: n - with,
                ingress,
                egress_default,
                egress,
                calls,
            },
        );
    }
    Migration {
        totals,
        services,
        flags_version: version,
    }
}
