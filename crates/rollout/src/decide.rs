//! The decision for one instance of a service, per dependency.

use std::collections::BTreeMap;

use meshplane_model::ServiceName;
use serde::Serialize;

use crate::flags::{Flags, Rule, Selector, Setting};

/// What the decision depends on about the calling instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo<'a> {
    /// Its instance id (also what its rollout share is computed from).
    pub id: &'a str,
    /// Its datacenter.
    pub datacenter: &'a str,
    /// Its registry tags.
    pub tags: &'a [String],
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// An override of the dependency's rule.
    DependencyOverride,
    /// The dependency's own setting.
    Dependency,
    /// An override of the service's default.
    ServiceOverride,
    /// The service's default.
    Service,
    /// The mesh's default.
    Mesh,
}

/// Whether one instance sends one dependency's calls through its egress proxy, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Through the egress proxy (`true`) or straight to the callee.
    pub proxy: bool,
    /// The rule that decided.
    pub source: Source,
    /// With a rollout: its percentage (this instance is in it exactly when `proxy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<meshplane_model::descriptor::Percent>,
}

/// One instance's decisions for its dependencies, plus the default for any other host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decisions {
    /// By dependency.
    pub dependencies: BTreeMap<String, Decision>,
    /// For a dependency not listed (one the app calls that the flags were not told about).
    pub default: Decision,
}

impl Flags {
    /// The decision for `instance` of `service` calling `dependency`.
    pub fn decide(
        &self,
        service: &ServiceName,
        dependency: Option<&str>,
        instance: &InstanceInfo<'_>,
    ) -> Decision {
        let flags = self.services.get(service);
        let key = (service.as_str(), dependency.unwrap_or(""), instance.id);
        let levels = [
            (
                flags.and_then(|f| dependency.and_then(|d| f.dependencies.get(d))),
                Source::DependencyOverride,
                Source::Dependency,
            ),
            (
                flags.and_then(|f| f.default.as_ref()),
                Source::ServiceOverride,
                Source::Service,
            ),
        ];
        for (rule, by_override, by_rule) in levels {
            let Some(rule) = rule else { continue };
            if let Some(setting) = override_for(rule, instance) {
                return decision(setting, by_override, key);
            }
            if let Some(proxy) = rule.proxy {
                let setting = Setting {
                    proxy,
                    rollout: rule.rollout,
                };
                return decision(setting, by_rule, key);
            }
        }
        decision(self.default, Source::Mesh, key)
    }

    /// `instance`'s decisions for each of `dependencies`.
    pub fn decisions<'d>(
        &self,
        service: &ServiceName,
        dependencies: impl IntoIterator<Item = &'d str>,
        instance: &InstanceInfo<'_>,
    ) -> Decisions {
        Decisions {
            dependencies: dependencies
                .into_iter()
                .map(|d| (d.to_owned(), self.decide(service, Some(d), instance)))
                .collect(),
            default: self.decide(service, None, instance),
        }
    }
}

/// The most specific override of `rule` that selects `instance`: by instance, then tag, then
/// datacenter (the first listed of a kind).
fn override_for(rule: &Rule, instance: &InstanceInfo<'_>) -> Option<Setting> {
    let by = |wanted: fn(Selector<'_>, &InstanceInfo<'_>) -> bool| {
        rule.overrides
            .iter()
            .find(|o| o.selector().is_ok_and(|s| wanted(s, instance)))
            .map(crate::flags::Override::setting)
    };
    by(|s, i| matches!(s, Selector::Instance(id) if id == i.id))
        .or_else(|| by(|s, i| matches!(s, Selector::Tag(t) if i.tags.iter().any(|x| x == t))))
        .or_else(|| by(|s, i| matches!(s, Selector::Datacenter(d) if d == i.datacenter)))
}

fn decision(
    setting: Setting,
    source: Source,
    (service, dependency, instance): (&str, &str, &str),
) -> Decision {
    let proxy = setting.proxy
        && setting
            .rollout
            .is_none_or(|p| share(service, dependency, instance) < p.millionths());
    Decision {
        proxy,
        source,
        rollout: setting.rollout,
    }
}

/// An instance's place in a rollout, in millionths of a percent (0 to 10^8): stable, and
/// independent per service and dependency, so the same few instances are not always first.
fn share(service: &str, dependency: &str, instance: &str) -> u32 {
    let mut key = Vec::with_capacity(service.len() + dependency.len() + instance.len() + 2);
    key.extend_from_slice(service.as_bytes());
    key.push(0);
    key.extend_from_slice(dependency.as_bytes());
    key.push(0);
    key.extend_from_slice(instance.as_bytes());
    // < 10^8, so it fits in u32.
    (xxhash_rust::xxh3::xxh3_64(&key) % 100_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(yaml: &str) -> Flags {
        let value: serde_json::Value = serde_norway::from_str(yaml).expect("YAML");
        Flags::from_json(value).expect("valid")
    }

    fn at<'a>(id: &'a str, dc: &'a str, tags: &'a [String]) -> InstanceInfo<'a> {
        InstanceInfo {
            id,
            datacenter: dc,
            tags,
        }
    }

    fn orders() -> ServiceName {
        ServiceName::new("orders").expect("name")
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let f = flags(
            "services:\n  orders:\n    default: { proxy: true, overrides: [{ datacenter: dc3, proxy: false }] }\n    dependencies:\n      payments:\n        proxy: true\n        overrides:\n          - { datacenter: dc2, proxy: false }\n          - { tag: canary, proxy: true }\n          - { instance: orders-9, proxy: false }\n      billing: { overrides: [{ tag: canary, proxy: false }] }\n",
        );
        let none: Vec<String> = Vec::new();
        let canary = vec!["canary".to_owned()];
        let d = |dep: Option<&str>, i: InstanceInfo<'_>| {
            let d = f.decide(&orders(), dep, &i);
            (d.proxy, d.source)
        };
        assert_eq!(
            d(Some("payments"), at("orders-1", "dc1", &none)),
            (true, Source::Dependency)
        );
        assert_eq!(
            d(Some("payments"), at("orders-1", "dc2", &none)),
            (false, Source::DependencyOverride)
        );
        // A tag beats a datacenter, an instance beats a tag.
        assert_eq!(
            d(Some("payments"), at("orders-1", "dc2", &canary)),
            (true, Source::DependencyOverride)
        );
        assert_eq!(
            d(Some("payments"), at("orders-9", "dc1", &canary)),
            (false, Source::DependencyOverride)
        );
        // billing has no setting of its own outside canaries: the service default decides.
        assert_eq!(
            d(Some("billing"), at("orders-1", "dc1", &none)),
            (true, Source::Service)
        );
        assert_eq!(
            d(Some("billing"), at("orders-1", "dc1", &canary)),
            (false, Source::DependencyOverride)
        );
        assert_eq!(
            d(Some("billing"), at("orders-1", "dc3", &none)),
            (false, Source::ServiceOverride)
        );
        assert_eq!(
            d(None, at("orders-1", "dc1", &none)),
            (true, Source::Service)
        );
        // Another service: the mesh's default, off.
        let web = ServiceName::new("web").expect("name");
        let m = f.decide(&web, Some("orders"), &at("web-1", "dc1", &none));
        assert_eq!((m.proxy, m.source), (false, Source::Mesh));
    }

    #[test]
    fn a_rollout_picks_a_stable_growing_share_of_instances() {
        let ids: Vec<String> = (0..2000).map(|i| format!("orders-{i}")).collect();
        let none: Vec<String> = Vec::new();
        let chosen = |percent: u32| -> Vec<&str> {
            let f = flags(&format!(
                "services:\n  orders:\n    dependencies:\n      payments: {{ proxy: true, rollout: {percent} }}\n"
            ));
            ids.iter()
                .map(String::as_str)
                .filter(|id| {
                    f.decide(&orders(), Some("payments"), &at(id, "dc1", &none))
                        .proxy
                })
                .collect()
        };
        let (ten, twenty) = (chosen(10), chosen(20));
        // About the share asked for (binomial, 2,000 draws: well within ±3 %).
        assert!((140..=260).contains(&ten.len()), "{}", ten.len());
        assert!((340..=460).contains(&twenty.len()), "{}", twenty.len());
        // The same instances every time, and 20 % keeps every instance of 10 %.
        assert_eq!(ten, chosen(10));
        assert!(ten.iter().all(|id| twenty.contains(id)));
        assert!(chosen(0).is_empty());
        assert_eq!(chosen(100).len(), ids.len());
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("lib.rs");
        let yaml: String = doc
            .lines()
            .skip_while(|l| *l != "//! ```yaml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| {
                format!(
                    "{}\n",
                    l.trim_start_matches("//!").strip_prefix(' ').unwrap_or("")
                )
            })
            .collect();
        let f = flags(&yaml);
        let none: Vec<String> = Vec::new();
        let d = f.decide(&orders(), Some("payments"), &at("orders-1", "dc2", &none));
        assert_eq!((d.proxy, d.source), (false, Source::DependencyOverride));
    }

    #[test]
    fn bad_documents_name_the_field() {
        let bad = |yaml: &str| {
            let value: serde_json::Value = serde_norway::from_str(yaml).expect("YAML");
            Flags::from_json(value).expect_err("invalid").to_string()
        };
        let e = bad(
            "services:\n  orders:\n    dependencies:\n      payments: { proxy: false, rollout: 10 }\n",
        );
        assert!(
            e.starts_with("services.orders.dependencies.payments.rollout:"),
            "{e}"
        );
        let e = bad(
            "services:\n  orders:\n    dependencies:\n      payments: { overrides: [{ tag: canary, datacenter: dc2, proxy: true }] }\n",
        );
        assert!(
            e.starts_with("services.orders.dependencies.payments.overrides[0]:"),
            "{e}"
        );
        assert!(e.contains("exactly one"), "{e}");
        let e = bad(
            "services:\n  orders:\n    dependencies:\n      payments: { proxy: true, rollout: 150 }\n",
        );
        assert!(e.contains("percentage"), "{e}");
        let e = bad("services:\n  orders:\n    depends: {}\n");
        assert!(e.contains("unknown field"), "{e}");
        let e = bad("services:\n  \"not a service\": {}\n");
        assert!(e.starts_with("flags:"), "{e}");
    }
}
