//! The translator task: keeps every active group's snapshot current.
//!
//! Cost scales with what changed: a service's cluster and endpoints are built once per change
//! and shared (`Arc`) by every group that depends on it; a registry change recomputes only
//! the groups that depend on a changed service (and wildcard groups).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshplane_model::{Instance, ServiceName};
use meshplane_registry::{Changes, Snapshot as RegistrySnapshot, Store};
use meshplane_telemetry::TranslationMetrics;
use meshplane_translate::{
    Catalog, MeshOptions, ProxyGroup, group_config, service_cluster, service_endpoints,
};
use meshplane_xds::{GroupKey, Resource, Snapshot, SnapshotCache};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::grouper::Groups;

/// How often groups without proxies are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

struct RegistryCatalog<'a>(&'a RegistrySnapshot);

impl Catalog for RegistryCatalog<'_> {
    fn services(&self) -> Vec<ServiceName> {
        self.0.services.keys().cloned().collect()
    }

    fn instances(&self, service: &ServiceName) -> Option<&[Instance]> {
        self.0.services.get(service).map(|e| &*e.instances)
    }
}

struct ServiceResources {
    cluster: Arc<Resource>,
    endpoints: Arc<Resource>,
}

struct ActiveGroup {
    services: Vec<ServiceName>,
    wildcard: bool,
}

/// Translation state; see the module docs.
pub struct Translator {
    metrics: TranslationMetrics,
    cache: SnapshotCache,
    groups: Groups,
    options: Arc<MeshOptions>,
    registry: Arc<RegistrySnapshot>,
    services: HashMap<ServiceName, ServiceResources>,
    active: HashMap<GroupKey, ActiveGroup>,
    dependents: HashMap<ServiceName, BTreeSet<GroupKey>>,
}

impl Translator {
    /// A translator publishing into `cache` the groups recorded in `groups`.
    pub fn new(cache: SnapshotCache, groups: Groups, options: Arc<MeshOptions>) -> Self {
        Translator {
            metrics: TranslationMetrics::default(),
            cache,
            groups,
            options,
            registry: Arc::new(RegistrySnapshot::default()),
            services: HashMap::new(),
            active: HashMap::new(),
            dependents: HashMap::new(),
        }
    }

    /// Records translation time and errors into `metrics`.
    pub fn with_metrics(mut self, metrics: TranslationMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// A proxy needs a group that has no snapshot yet.
    pub fn on_demand(&mut self, key: &GroupKey) {
        let started = Instant::now();
        self.publish(key);
        self.metrics.translated(started.elapsed());
    }

    /// The registry changed: rebuild changed services, then the groups that see them.
    pub fn on_registry(&mut self, next: Arc<RegistrySnapshot>) {
        let started = Instant::now();
        let changes = next.changed_since(self.registry.index);
        self.registry = next;
        self.metrics.caught_up(self.registry.index);
        let affected: BTreeSet<GroupKey> = match changes {
            Changes::All => {
                self.services.clear();
                self.active.keys().cloned().collect()
            }
            Changes::Services(changed) => {
                let mut affected = BTreeSet::new();
                for service in &changed {
                    self.services.remove(service);
                    if let Some(keys) = self.dependents.get(service) {
                        affected.extend(keys.iter().cloned());
                    }
                }
                if !changed.is_empty() {
                    affected.extend(
                        self.active
                            .iter()
                            .filter(|(_, g)| g.wildcard)
                            .map(|(k, _)| k.clone()),
                    );
                }
                affected
            }
        };
        for key in &affected {
            self.publish(key);
        }
        if !affected.is_empty() {
            self.metrics.translated(started.elapsed());
            tracing::debug!(groups = affected.len(), index = self.registry.index, elapsed = ?started.elapsed(), "registry change translated");
        }
    }

    fn service_resources(&mut self, name: &ServiceName) -> &ServiceResources {
        let registry = &self.registry;
        let options = &self.options;
        self.services.entry(name.clone()).or_insert_with(|| {
            let instances = registry
                .services
                .get(name)
                .map(|e| &*e.instances)
                .unwrap_or_default();
            for i in instances
                .iter()
                .filter(|i| !meshplane_translate::routable_address(i))
            {
                tracing::warn!(service = %name, instance = %i.id, address = %i.address,
                    "instance address is not an IP address; register its IP (Envoy endpoints cannot be host names)");
            }
            ServiceResources {
                cluster: Resource::cluster(&service_cluster(name, options)),
                endpoints: Resource::endpoints(&service_endpoints(name, instances, options)),
            }
        })
    }

    fn publish(&mut self, key: &GroupKey) {
        let Some(group) = self.groups.get(key) else {
            tracing::debug!(%key, "no descriptor recorded for group; its proxies will get nothing until they reconnect");
            return;
        };
        match self.build(&group) {
            Ok((snapshot, services)) => {
                self.track(key, &group, services);
                self.metrics.published();
                if let Err(e) = self.cache.set_snapshot(key, snapshot) {
                    self.metrics.error();
                    tracing::error!(%key, error = %e, "refusing to publish an inconsistent snapshot; proxies keep their current config");
                }
            }
            Err(e) => {
                self.metrics.error();
                tracing::warn!(%key, error = %e, "cannot translate group");
            }
        }
    }

    fn build(&mut self, group: &ProxyGroup) -> anyhow::Result<(Snapshot, Vec<ServiceName>)> {
        let config = group_config(group, &RegistryCatalog(&self.registry), &self.options)?;
        let mut resources: Vec<Arc<Resource>> = Vec::new();
        resources.extend(config.clusters.iter().map(Resource::cluster));
        resources.extend(config.listeners.iter().map(Resource::listener));
        resources.extend(config.routes.iter().map(Resource::route));
        for service in &config.services {
            let r = self.service_resources(service);
            resources.push(r.cluster.clone());
            resources.push(r.endpoints.clone());
        }
        Ok((Snapshot::new(resources)?, config.services))
    }

    fn track(&mut self, key: &GroupKey, group: &ProxyGroup, services: Vec<ServiceName>) {
        if let Some(previous) = self.active.remove(key) {
            for s in &previous.services {
                if let Some(set) = self.dependents.get_mut(s) {
                    set.remove(key);
                }
            }
        }
        for s in &services {
            self.dependents
                .entry(s.clone())
                .or_default()
                .insert(key.clone());
        }
        let wildcard = group.descriptor.depends_on_all();
        self.active
            .insert(key.clone(), ActiveGroup { services, wildcard });
    }

    /// Forgets groups no proxy uses any more.
    pub fn prune(&mut self) {
        let gone = self.cache.prune_unwatched();
        for key in &gone {
            if let Some(g) = self.active.remove(key) {
                for s in &g.services {
                    if let Some(set) = self.dependents.get_mut(s) {
                        set.remove(key);
                    }
                }
            }
        }
        self.dependents.retain(|_, set| !set.is_empty());
        let needed: BTreeSet<&ServiceName> = self.dependents.keys().collect();
        self.services.retain(|name, _| needed.contains(name));
        self.groups.remove(&gone);
    }

    /// Runs until shutdown: registry changes, group demand and periodic pruning.
    pub async fn run(
        mut self,
        store: Store,
        mut demand_rx: mpsc::UnboundedReceiver<GroupKey>,
        shutdown: CancellationToken,
    ) {
        let mut registry_rx = store.subscribe();
        self.on_registry(registry_rx.borrow_and_update().clone());
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        prune.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = registry_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = registry_rx.borrow_and_update().clone();
                    self.on_registry(next);
                }
                key = demand_rx.recv() => match key {
                    Some(key) => self.on_demand(&key),
                    None => return,
                },
                _ = prune.tick() => self.prune(),
            }
        }
    }
}
