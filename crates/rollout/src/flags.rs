//! The flags document and its validation.

use std::collections::BTreeMap;

use meshplane_model::ServiceName;
use meshplane_model::descriptor::Percent;
use serde::{Deserialize, Serialize};

/// Every egress rollout flag of the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flags {
    /// The mesh's default, for services and dependencies without a setting of their own.
    #[serde(default)]
    pub default: Setting,
    /// Per service (the caller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<ServiceName, ServiceFlags>,
}

/// One service's flags: its default and one rule per dependency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFlags {
    /// Applies to every dependency without a rule of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Rule>,
    /// By dependency as the descriptor names it: a service (`payments`) or a domain
    /// (`https://api.partner.example`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, Rule>,
}

/// A setting, and overrides of it for some instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Whether calls go through the egress proxy; `None`: the less specific rule decides,
    /// except where an override applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<bool>,
    /// With `proxy: true`, the share of instances that do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Percent>,
    /// Settings for some instances, by instance, tag or datacenter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// A decided setting: proxy or not, for all instances or a stable share of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Whether calls go through the egress proxy.
    pub proxy: bool,
    /// With `proxy: true`, the share of instances that do (the others call directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Percent>,
}

/// A setting for the instances one selector picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Exactly one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub datacenter: Option<String>,
    /// Whether those instances' calls go through the egress proxy.
    pub proxy: bool,
    /// With `proxy: true`, the share of those instances that do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Percent>,
}

/// What an override selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// One instance, by id.
    Instance(&'a str),
    /// Instances with this registry tag (e.g. `canary`).
    Tag(&'a str),
    /// Instances in this datacenter.
    Datacenter(&'a str),
}

/// A flags document that cannot be used; names the field, as descriptor errors do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FlagsError {
    /// Where, e.g. `services.orders.dependencies.payments.overrides[1]`.
    pub field: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> FlagsError {
    FlagsError {
        field: field.into(),
        message: message.into(),
    }
}

impl Flags {
    /// Parses a flags document (YAML, or JSON, which is YAML) and checks it.
    pub fn from_json(value: serde_json::Value) -> Result<Flags, FlagsError> {
        let flags: Flags =
            serde_json::from_value(value).map_err(|e| error("flags", e.to_string()))?;
        flags.validate()?;
        Ok(flags)
    }

    /// Checks what serde cannot: one selector per override, rollouts only with `proxy:
    /// true`, non-empty names.
    pub fn validate(&self) -> Result<(), FlagsError> {
        check_setting("default", Some(self.default.proxy), self.default.rollout)?;
        for (service, s) in &self.services {
            let at = format!("services.{service}");
            if let Some(rule) = &s.default {
                check_rule(&format!("{at}.default"), rule)?;
            }
            for (dependency, rule) in &s.dependencies {
                if dependency.trim().is_empty() {
                    return Err(error(
                        format!("{at}.dependencies"),
                        "a dependency name cannot be empty",
                    ));
                }
                check_rule(&format!("{at}.dependencies.{dependency}"), rule)?;
            }
        }
        Ok(())
    }
}

fn check_rule(at: &str, rule: &Rule) -> Result<(), FlagsError> {
    check_setting(at, rule.proxy, rule.rollout)?;
    for (i, o) in rule.overrides.iter().enumerate() {
        let at = format!("{at}.overrides[{i}]");
        o.selector().map_err(|m| error(&at, m))?;
        check_setting(&at, Some(o.proxy), o.rollout)?;
    }
    Ok(())
}

fn check_setting(
    at: &str,
    proxy: Option<bool>,
    rollout: Option<Percent>,
) -> Result<(), FlagsError> {
    if rollout.is_some() && proxy != Some(true) {
        return Err(error(
            format!("{at}.rollout"),
            "a rollout is the share of instances that proxy: set `proxy: true` with it",
        ));
    }
    Ok(())
}

impl Override {
    /// Which instances it selects; an error unless exactly one selector is set.
    pub fn selector(&self) -> Result<Selector<'_>, String> {
        match (&self.instance, &self.tag, &self.datacenter) {
            (Some(i), None, None) if !i.is_empty() => Ok(Selector::Instance(i)),
            (None, Some(t), None) if !t.is_empty() => Ok(Selector::Tag(t)),
            (None, None, Some(d)) if !d.is_empty() => Ok(Selector::Datacenter(d)),
            _ => Err("set exactly one of `instance`, `tag` or `datacenter` (not empty)".to_owned()),
        }
    }

    pub(crate) fn setting(&self) -> Setting {
        Setting {
            proxy: self.proxy,
            rollout: self.rollout,
        }
    }
}
