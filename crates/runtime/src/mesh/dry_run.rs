//! Dry runs for the admin API (`POST /api/dry-run`): a proposed descriptor translated beside
//! each live group of its service, both against the same registry state, so that what
//! differs is the descriptor's doing. Nothing is published or recorded.

use std::sync::Arc;

use meshplane_admin::dry_run::{Plan, PlannedGroup, Planner};
use meshplane_model::Descriptor;
use meshplane_registry::Store;
use meshplane_translate::{MeshOptions, ProxyGroup, check_policy};
use meshplane_xds::SnapshotCache;
use serde_json::Value;

use super::grouper::Groups;
use super::translator::translate_once;

/// The control plane's [`Planner`].
pub struct DryRunPlanner {
    store: Store,
    groups: Groups,
    cache: SnapshotCache,
    options: Arc<MeshOptions>,
}

impl DryRunPlanner {
    /// Plans against `store`'s registry and the groups live in `cache`.
    pub fn new(
        store: Store,
        groups: Groups,
        cache: SnapshotCache,
        options: Arc<MeshOptions>,
    ) -> Self {
        DryRunPlanner {
            store,
            groups,
            cache,
            options,
        }
    }
}

/// A descriptor as compared: without what only the sidecar reads (`stats`, `metrics`).
fn comparable(d: &Descriptor) -> Value {
    let mut d = d.clone();
    d.stats = Default::default();
    d.metrics = Default::default();
    serde_json::to_value(&d).unwrap_or(Value::Null)
}

impl Planner for DryRunPlanner {
    fn plan(&self, text: &str) -> Result<Plan, String> {
        // The sidecar's checks, in the sidecar's words.
        let descriptor = Descriptor::from_yaml(text).map_err(|e| e.to_string())?;
        check_policy(&descriptor, &self.options).map_err(|e| e.to_string())?;
        let registry = self.store.snapshot();
        let translate = |group: &ProxyGroup| {
            translate_once(group, registry.clone(), self.options.clone()).map_err(|e| {
                format!(
                    "cannot translate for datacenter {}: {e:#}",
                    group.datacenter
                )
            })
        };
        // The proposed descriptor deployed where each live group runs, as the same kind of
        // client (an Envoy, or a proxyless gRPC client).
        let proposed = |live: Option<&ProxyGroup>| ProxyGroup {
            descriptor: descriptor.clone(),
            listen_address: live.map_or("0.0.0.0", |g| &g.listen_address).to_owned(),
            datacenter: live
                .map_or(&self.options.datacenter, |g| &g.datacenter)
                .clone(),
            proxyless: live.is_some_and(|g| g.proxyless),
        };
        let live: Vec<_> = self
            .groups
            .of_service(descriptor.service.as_str())
            .into_iter()
            .filter(|(key, _)| self.cache.snapshot(key).is_some())
            .collect();
        let mut groups = Vec::new();
        if live.is_empty() {
            let group = proposed(None);
            groups.push(PlannedGroup {
                key: None,
                datacenter: group.datacenter.clone(),
                current: None,
                proposed: (comparable(&descriptor), translate(&group)?),
            });
        }
        for (key, group) in live {
            let next = proposed(Some(&group));
            groups.push(PlannedGroup {
                key: Some(key),
                datacenter: group.datacenter.clone(),
                current: Some((comparable(&group.descriptor), translate(&group)?)),
                proposed: (comparable(&descriptor), translate(&next)?),
            });
        }
        Ok(Plan {
            service: descriptor.service.to_string(),
            groups,
        })
    }
}
