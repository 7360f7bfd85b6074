//! `POST /api/dry-run`: what the proxies of a service would be sent if a descriptor were
//! deployed, compared with what they are sent now. Nothing changes: the control plane
//! translates the proposed descriptor, and each live group of its service, against the same
//! registry state (so the difference is the descriptor's alone), and this module compares
//! the two — the descriptors field by field, and the resources (clusters, endpoints,
//! listeners, routes; never secrets) in Envoy's JSON, down to the fields that differ.
//!
//! Lists whose elements carry a `name` (virtual hosts, filter chains, HTTP filters, RBAC
//! policies…) are compared by name; other lists (a descriptor's dependencies, an endpoint's
//! methods) element by element, as sets. The runtime does the translating through
//! [`Planner`]; [`diff`] and [`render`] are pure.
//!
//! Callers: every service whose sidecars reported calls to this one in the traffic window
//! ([`crate::traffic`]), with what the live descriptor and the proposed one let through of
//! them — through the caller's sidecar (with its certificate) and sent direct (anonymous) —
//! so a tightened `incoming` names the callers it would start denying before it is deployed.

use std::collections::BTreeMap;

use meshplane_model::descriptor::{Access, Via};
use meshplane_model::traffic::Calls;
use meshplane_model::{Descriptor, ServiceName};
use meshplane_xds::{GroupKey, ResourceType, Snapshot};
use serde::Serialize;
use serde_json::Value;

/// Translates descriptors for a dry run. Implemented by the runtime, which owns the
/// registry view and the mesh options.
pub trait Planner: Send + Sync {
    /// Parses and checks `descriptor` (YAML or JSON, as a sidecar reads `meshplane.yaml`)
    /// and translates it, and each live group of its service, against the current registry.
    fn plan(&self, descriptor: &str) -> Result<Plan, String>;
}

/// What [`Planner::plan`] produced.
pub struct Plan {
    /// The descriptor's service.
    pub service: String,
    /// The proposed descriptor.
    pub proposed: Descriptor,
    /// One comparison per live group of the service; when none is live, one against
    /// nothing (`key: None`, `current: None`).
    pub groups: Vec<PlannedGroup>,
}

/// The live configuration of one group and what the proposed descriptor would give it.
pub struct PlannedGroup {
    /// The live group, if any.
    pub key: Option<GroupKey>,
    /// Its datacenter (the proposed descriptor is translated for the same one).
    pub datacenter: String,
    /// Live: the descriptor, as JSON, and its translation now.
    pub current: Option<(Descriptor, Value, Snapshot)>,
    /// Whether the group's clients are proxyless gRPC clients (which serve nothing: no
    /// callers to tell about).
    pub proxyless: bool,
    /// Proposed: the descriptor (as JSON) and its translation.
    pub proposed: (Value, Snapshot),
}

/// One difference: a field (or a whole resource, or list element) added, removed or changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Where: `dependencies`, `virtual_hosts[payments].routes[0].route.timeout`, …; a list
    /// element compared as a set is shown as `field[=]`.
    pub path: String,
    /// The value now; absent when added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The value proposed; absent when removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// A resource added, removed or changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceChange {
    /// CDS, EDS, LDS or RDS.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Resource name.
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// For `changed`: the fields that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Change>,
}

/// The dry run of one group.
#[derive(Debug, Serialize)]
pub struct GroupDiff {
    /// The live group compared with (`null`: no proxy of the service is connected).
    pub group: Option<String>,
    /// Proxies of the group connected to this control plane.
    pub proxies: usize,
    /// The datacenter the translation is for.
    pub datacenter: String,
    /// Descriptor fields that differ (the control plane ignores `stats` and `metrics`).
    pub descriptor: Vec<Change>,
    /// Resources that differ.
    pub resources: Vec<ResourceChange>,
    /// The service's callers in the traffic window, and what each descriptor lets through.
    pub callers: Vec<CallerChange>,
}

/// One caller seen in the traffic window.
#[derive(Debug, Serialize)]
pub struct CallerChange {
    /// The calling service.
    pub service: String,
    /// Its calls in the window: through its sidecar, and sent direct.
    #[serde(flatten)]
    pub calls: Calls,
    /// What is let through of its calls through its sidecar (absent without such calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub through_sidecar: Option<AccessChange>,
    /// What is let through of its calls sent direct (absent without such calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_direct: Option<AccessChange>,
    /// Whether the proposed descriptor lets through less of the calls it makes than now.
    pub loses_access: bool,
}

/// What the live descriptor lets through (everything when no sidecar serves the service
/// yet), and what the proposed one would.
#[derive(Debug, Serialize)]
pub struct AccessChange {
    pub now: Access,
    pub proposed: Access,
}

/// The callers of `proposed`'s service in `recent` (caller, calls), against `current`.
fn callers(
    current: Option<&Descriptor>,
    proposed: &Descriptor,
    recent: &[(ServiceName, Calls)],
) -> Vec<CallerChange> {
    recent
        .iter()
        .map(|(caller, calls)| {
            let change = |via: Via, count: u64| {
                (count > 0).then(|| AccessChange {
                    now: current.map_or(Access::Allowed, |d| d.access(caller, via)),
                    proposed: proposed.access(caller, via),
                })
            };
            let through_sidecar = change(Via::Mesh, calls.proxy);
            let sent_direct = change(Via::Direct, calls.direct);
            let loses_access = [&through_sidecar, &sent_direct]
                .into_iter()
                .flatten()
                .any(|c| c.proposed.narrower_than(&c.now));
            CallerChange {
                service: caller.to_string(),
                calls: *calls,
                through_sidecar,
                sent_direct,
                loses_access,
            }
        })
        .collect()
}

/// A dry run's answer.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// The service.
    pub service: String,
    /// Per live group.
    pub groups: Vec<GroupDiff>,
    /// How far back the callers' calls go, in seconds.
    pub traffic_window_s: u64,
}

impl DryRun {
    /// Compares each planned group; `proxies` counts a group's connected proxies, `recent`
    /// are the service's callers in the traffic window.
    pub fn of(
        plan: Plan,
        proxies: impl Fn(&GroupKey) -> usize,
        recent: &[(ServiceName, Calls)],
    ) -> DryRun {
        let proposed = &plan.proposed;
        let groups = plan
            .groups
            .into_iter()
            .map(|g| {
                let (after_descriptor, after) = &g.proposed;
                GroupDiff {
                    group: g.key.as_ref().map(ToString::to_string),
                    proxies: g.key.as_ref().map_or(0, &proxies),
                    datacenter: g.datacenter.clone(),
                    // With nothing live, every resource is new; the descriptor is the request.
                    descriptor: g
                        .current
                        .as_ref()
                        .map(|(_, before, _)| diff(before, after_descriptor))
                        .unwrap_or_default(),
                    resources: resources(g.current.as_ref().map(|(_, _, s)| s), after),
                    callers: match g.proxyless {
                        true => Vec::new(),
                        false => callers(g.current.as_ref().map(|(d, _, _)| d), proposed, recent),
                    },
                }
            })
            .collect();
        DryRun {
            service: plan.service,
            groups,
            traffic_window_s: crate::traffic::WINDOW.as_secs(),
        }
    }
}

/// Resources of `before` (none: nothing live) and `after` that differ, by type then name.
pub fn resources(before: Option<&Snapshot>, after: &Snapshot) -> Vec<ResourceChange> {
    let mut out = Vec::new();
    for kind in ResourceType::ALL {
        if kind == ResourceType::Secret {
            continue; // private keys never leave the control plane
        }
        let json = |s: Option<&Snapshot>| -> BTreeMap<String, Value> {
            s.into_iter()
                .flat_map(|s| s.resources(kind).values())
                .map(|r| {
                    let any = r.to_any();
                    (
                        r.name().to_owned(),
                        meshplane_envoy_json::to_json(&any.type_url, &any.value),
                    )
                })
                .collect()
        };
        let (before, after) = (json(before), json(Some(after)));
        for (name, b) in &before {
            match after.get(name) {
                None => out.push(ResourceChange {
                    kind: kind.short_name(),
                    name: name.clone(),
                    change: "removed",
                    fields: Vec::new(),
                }),
                Some(a) if a != b => out.push(ResourceChange {
                    kind: kind.short_name(),
                    name: name.clone(),
                    change: "changed",
                    fields: diff(b, a),
                }),
                Some(_) => {}
            }
        }
        for name in after.keys().filter(|n| !before.contains_key(*n)) {
            out.push(ResourceChange {
                kind: kind.short_name(),
                name: name.clone(),
                change: "added",
                fields: Vec::new(),
            });
        }
    }
    out
}

/// The differences between two JSON values, as paths.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<Change>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                match a.get(k) {
                    Some(av) => walk(&join(path, k), bv, av, out),
                    None => out.push(Change {
                        path: join(path, k),
                        before: Some(bv.clone()),
                        after: None,
                    }),
                }
            }
            for (k, av) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                out.push(Change {
                    path: join(path, k),
                    before: None,
                    after: Some(av.clone()),
                });
            }
        }
        (Value::Array(b), Value::Array(a)) => match (named(b), named(a)) {
            (Some(b), Some(a)) => {
                for (name, bv) in &b {
                    let at = format!("{path}[{name}]");
                    match a.get(name) {
                        Some(av) => walk(&at, bv, av, out),
                        None => out.push(Change {
                            path: at,
                            before: Some((*bv).clone()),
                            after: None,
                        }),
                    }
                }
                for (name, av) in a.iter().filter(|(n, _)| !b.contains_key(*n)) {
                    out.push(Change {
                        path: format!("{path}[{name}]"),
                        before: None,
                        after: Some((*av).clone()),
                    });
                }
            }
            _ => {
                let at = format!("{path}[=]");
                for bv in b.iter().filter(|v| !a.contains(v)) {
                    out.push(Change {
                        path: at.clone(),
                        before: Some(bv.clone()),
                        after: None,
                    });
                }
                for av in a.iter().filter(|v| !b.contains(v)) {
                    out.push(Change {
                        path: at.clone(),
                        before: None,
                        after: Some(av.clone()),
                    });
                }
            }
        },
        _ => out.push(Change {
            path: path.to_owned(),
            before: (!before.is_null()).then(|| before.clone()),
            after: (!after.is_null()).then(|| after.clone()),
        }),
    }
}

/// A list whose elements are all objects with distinct string `name`s, by name.
fn named(list: &[Value]) -> Option<BTreeMap<&str, &Value>> {
    let mut map = BTreeMap::new();
    for v in list {
        let name = v.get("name")?.as_str()?;
        if map.insert(name, v).is_some() {
            return None;
        }
    }
    (!map.is_empty()).then_some(map)
}

fn access_text(a: &Access) -> String {
    match a {
        Access::Allowed => "allowed".to_owned(),
        Access::Some {
            denied_endpoints,
            unlisted_endpoints: true,
            ..
        } => format!("all but {}", denied_endpoints.join(", ")),
        Access::Some { endpoints, .. } => format!("only {}", endpoints.join(", ")),
        Access::Denied { reason } => format!("denied ({reason})"),
    }
}

/// The dry run for people: per group, `+` added, `-` removed, `~` changed.
pub fn render(run: &DryRun) -> String {
    let mut out = String::new();
    let short = |v: &Value| {
        let text = v.to_string();
        if text.chars().count() > 160 {
            format!("{}…", text.chars().take(160).collect::<String>())
        } else {
            text
        }
    };
    let change = |out: &mut String, indent: &str, c: &Change| {
        let line = match (&c.before, &c.after) {
            (None, Some(a)) => format!("{indent}+ {}: {}\n", c.path, short(a)),
            (Some(b), None) => format!("{indent}- {}: {}\n", c.path, short(b)),
            (Some(b), Some(a)) => format!("{indent}~ {}: {} → {}\n", c.path, short(b), short(a)),
            (None, None) => String::new(),
        };
        out.push_str(&line);
    };
    for g in &run.groups {
        match &g.group {
            Some(key) => out.push_str(&format!(
                "service {} — group {key} ({} connected), datacenter {}\n",
                run.service,
                match g.proxies {
                    1 => "1 proxy".to_owned(),
                    n => format!("{n} proxies"),
                },
                g.datacenter
            )),
            None => out.push_str(&format!(
                "service {} — no proxy connected: everything would be new (datacenter {})\n",
                run.service, g.datacenter
            )),
        }
        if g.descriptor.is_empty() && g.resources.is_empty() {
            out.push_str("  no change\n");
            continue;
        }
        if !g.descriptor.is_empty() {
            out.push_str("  descriptor:\n");
            for c in &g.descriptor {
                change(&mut out, "    ", c);
            }
        }
        for r in &g.resources {
            let sign = match r.change {
                "added" => '+',
                "removed" => '-',
                _ => '~',
            };
            out.push_str(&format!("  {sign} {} {}\n", r.kind, r.name));
            for c in &r.fields {
                change(&mut out, "      ", c);
            }
        }
        if !g.callers.is_empty() {
            out.push_str(&format!(
                "  callers in the last {} min (! would lose access):\n",
                run.traffic_window_s / 60
            ));
            for c in &g.callers {
                let mark = if c.loses_access { '!' } else { ' ' };
                let mut ways = Vec::new();
                if let Some(a) = &c.through_sidecar {
                    ways.push(format!(
                        "{} through its sidecar: {} → {}",
                        c.calls.proxy,
                        access_text(&a.now),
                        access_text(&a.proposed)
                    ));
                }
                if let Some(a) = &c.sent_direct {
                    ways.push(format!(
                        "{} sent direct: {} → {}",
                        c.calls.direct,
                        access_text(&a.now),
                        access_text(&a.proposed)
                    ));
                }
                out.push_str(&format!("  {mark} {} — {}\n", c.service, ways.join("; ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn callers_the_proposed_incoming_would_deny_are_named() {
        let descriptor = |extra: &str| {
            Descriptor::from_yaml(&format!(
                "service: payments\nport: 8080\ningress: {{ port: 31001 }}\n{extra}"
            ))
            .expect("descriptor")
        };
        let now = descriptor("");
        let proposed = descriptor(
            "incoming:\n  endpoints:\n    - { path_prefix: /, clients: [web] }\n    - { path: /status/health }\n",
        );
        let calls = |proxy, direct| Calls { proxy, direct };
        let name = |s: &str| ServiceName::new(s).expect("name");
        let recent = [
            (name("legacy"), calls(0, 7)),
            (name("orders"), calls(120, 0)),
            (name("web"), calls(4, 0)),
        ];
        let found = callers(Some(&now), &proposed, &recent);
        let loses: Vec<(&str, bool)> = found
            .iter()
            .map(|c| (c.service.as_str(), c.loses_access))
            .collect();
        assert_eq!(loses, [("legacy", true), ("orders", true), ("web", false)]);
        let orders = &found[1];
        assert!(orders.sent_direct.is_none());
        let through = orders.through_sidecar.as_ref().expect("proxied calls");
        assert_eq!(through.now, Access::Allowed);
        assert_eq!(
            through.proposed,
            Access::Some {
                endpoints: vec!["/status/health".to_owned()],
                denied_endpoints: vec!["/*".to_owned()],
                unlisted_endpoints: false,
            }
        );
        // The same descriptor loses nobody anything.
        assert!(
            callers(Some(&proposed), &proposed, &recent)
                .iter()
                .all(|c| !c.loses_access)
        );
        let run = DryRun {
            service: "payments".to_owned(),
            groups: vec![GroupDiff {
                group: Some("payments-1".to_owned()),
                proxies: 1,
                datacenter: "dc1".to_owned(),
                descriptor: Vec::new(),
                resources: vec![ResourceChange {
                    kind: "LDS",
                    name: "ingress".to_owned(),
                    change: "changed",
                    fields: Vec::new(),
                }],
                callers: found,
            }],
            traffic_window_s: 600,
        };
        let text = render(&run);
        assert!(
            text.contains("  ! orders — 120 through its sidecar: allowed → only /status/health\n"),
            "{text}"
        );
        assert!(
            text.contains("    web — 4 through its sidecar: allowed → allowed\n"),
            "{text}"
        );
    }

    #[test]
    fn named_lists_are_compared_by_name_and_others_as_sets() {
        let before = json!({
            "virtual_hosts": [
                {"name": "payments", "domains": ["payments"], "timeout": "2s"},
                {"name": "billing", "domains": ["billing"]},
            ],
            "dependencies": [{"service": "payments"}, {"service": "billing"}],
        });
        let after = json!({
            "virtual_hosts": [
                {"name": "payments", "domains": ["payments"], "timeout": "5s"},
                {"name": "inventory", "domains": ["inventory"]},
            ],
            "dependencies": [{"service": "payments"}, {"service": "inventory"}],
        });
        let changes = diff(&before, &after);
        let paths: Vec<(&str, bool, bool)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.before.is_some(), c.after.is_some()))
            .collect();
        assert_eq!(
            paths,
            [
                ("dependencies[=]", true, false),
                ("dependencies[=]", false, true),
                ("virtual_hosts[billing]", true, false),
                ("virtual_hosts[payments].timeout", true, true),
                ("virtual_hosts[inventory]", false, true),
            ]
        );
        assert_eq!(changes[0].before, Some(json!({"service": "billing"})));
        assert_eq!(changes[1].after, Some(json!({"service": "inventory"})));
    }

    #[test]
    fn equal_values_have_no_change_and_new_fields_are_added() {
        let v = json!({"a": [1, 2], "b": {"c": true}});
        assert!(diff(&v, &v).is_empty());
        let changes = diff(&Value::Null, &v);
        assert_eq!(
            changes,
            [Change {
                path: String::new(),
                before: None,
                after: Some(v.clone())
            }]
        );
        let more = json!({"a": [1, 2], "b": {"c": true, "d": 1}});
        assert_eq!(
            diff(&v, &more),
            [Change {
                path: "b.d".into(),
                before: None,
                after: Some(json!(1))
            }]
        );
    }
}
