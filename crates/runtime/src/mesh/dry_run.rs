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
            proxyless_mtls: live.is_some_and(|g| g.proxyless_mtls),
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
                proxyless: false,
                proposed: (comparable(&descriptor), translate(&group)?),
            });
        }
        for (key, group) in live {
            let next = proposed(Some(&group));
            groups.push(PlannedGroup {
                key: Some(key),
                datacenter: group.datacenter.clone(),
                current: Some((
                    group.descriptor.clone(),
                    comparable(&group.descriptor),
                    translate(&group)?,
                )),
                proxyless: group.proxyless,
                proposed: (comparable(&descriptor), translate(&next)?),
            });
        }
        Ok(Plan {
            service: descriptor.service.to_string(),
            proposed: descriptor,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use meshplane_model::ServiceName;
    use meshplane_model::node_metadata::PROXYLESS_GRPC;
    use meshplane_registry::RegistryEvent;
    use meshplane_xds::{NodeGrouper, PeerInfo, ResourceType, Snapshot};

    use super::*;
    use crate::mesh::tests::{Harness, ORDERS, mk_instance, mk_node, proxyless};

    fn listeners(snapshot: &Snapshot) -> Vec<String> {
        snapshot
            .resources(ResourceType::Listener)
            .keys()
            .cloned()
            .collect()
    }

    /// A dry run compares each live group with the same kind of client: a sidecar's
    /// proposed config has its listeners, a proxyless gRPC client's its API listeners.
    #[test]
    fn each_live_group_is_planned_as_the_client_it_is() {
        let mut h = Harness::new(MeshOptions::default());
        for (service, id, port) in [("payments", "p1", 10), ("inventory", "i1", 11)] {
            let source = h.source.clone();
            h.apply(RegistryEvent::Service {
                source,
                name: ServiceName::new(service).expect("name"),
                instances: vec![mk_instance(service, id, port)],
            });
        }
        let peer = PeerInfo::default();
        let sidecar = h
            .grouper
            .group(&mk_node("orders-1", ORDERS), &peer)
            .expect("valid");
        let client = h
            .grouper
            .group(
                &proxyless(mk_node("orders-2", ORDERS), PROXYLESS_GRPC),
                &peer,
            )
            .expect("valid");
        let cache = h.cache.clone();
        let _subscribed = (cache.subscribe(&sidecar), cache.subscribe(&client));
        h.translator.on_demand(&sidecar);
        h.translator.on_demand(&client);
        let live = |key| cache.snapshot(key).expect("published");
        let (sidecar_live, client_live) = (live(&sidecar), live(&client));

        let planner = DryRunPlanner::new(h.store, h.groups, cache, h.options);
        let proposed = ORDERS.replace(
            "[{ service: payments }]",
            "[{ service: payments }, { service: inventory }]",
        );
        let plan = planner.plan(&proposed).expect("valid descriptor");
        assert_eq!(plan.service, "orders");
        assert_eq!(plan.groups.len(), 2, "both live groups");
        for g in &plan.groups {
            let key = g.key.as_ref().expect("live");
            let (_, _, current) = g.current.as_ref().expect("live");
            let (_, next) = &g.proposed;
            if key == &client {
                // What the client is sent now, translated again: the same listeners.
                assert_eq!(listeners(current), listeners(&client_live));
                assert_eq!(listeners(next), vec!["inventory", "payments"]);
            } else {
                assert_eq!(key, &sidecar);
                assert_eq!(listeners(current), listeners(&sidecar_live));
                assert_eq!(listeners(next), vec!["egress", "ingress"]);
                assert!(
                    next.resources(ResourceType::Cluster)
                        .contains_key("inventory"),
                    "the new dependency's cluster"
                );
            }
        }
        // Nothing was published: the live snapshots are the same objects.
        let after = planner.cache.snapshot(&client).expect("published");
        assert!(
            Arc::ptr_eq(&after, &client_live),
            "the client's snapshot untouched"
        );
        assert!(
            planner.plan("service: orders\nport: banana\n").is_err(),
            "an invalid descriptor is refused"
        );
    }
}
