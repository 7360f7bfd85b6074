//! The translator task: keeps every active group's snapshot current.
//!
//! Cost scales with what changed: a service's cluster, and its endpoints for each datacenter
//! that has proxies depending on it (the proxy's datacenter is priority 0), are built once per
//! change and shared (`Arc`) by every group that depends on it (groups are per datacenter); a registry change touches only the
//! groups that depend on a changed service (and wildcard groups). When a change leaves a
//! service's *shape* alone (it still exists, reached over the same HTTP version, with the
//! same tags: only instances, addresses, weights or health moved), a group's own listeners and routes cannot change, so its new
//! snapshot is its current one with that service's cluster and endpoints replaced — for a
//! wildcard group of 1,000 services, two resources instead of a full translation.
//!
//! A new or removed service, or a change of its tags (one route per tag), changes one thing
//! more: that service's virtual host in the egress routes (listeners never depend on the set
//! of services). The group's snapshot is then patched with the service's cluster and
//! endpoints (added, replaced, or removed from a wildcard group) and a new egress route
//! configuration. A wildcard group keeps its routes as encoded virtual hosts
//! ([`EgressRoutes`]), so this re-encodes one virtual host and concatenates the rest; a group
//! of named dependencies rebuilds its few. Anything unusual (no snapshot published by this
//! translator, a patch the consistency check refuses) translates the group in full instead.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meshplane_model::{Instance, ServiceName};
use meshplane_registry::{Changes, Snapshot as RegistrySnapshot, Store};
use meshplane_telemetry::TranslationMetrics;
use meshplane_translate::{
    Catalog, EgressRoutes, MeshOptions, ProxyGroup, REASON_PREFIX, group_config, names,
    proxyless_clusters, proxyless_endpoints, proxyless_mtls_clusters, service_cluster,
    service_endpoints, undeclared_cluster, undeclared_listener,
};
use meshplane_xds::{GroupKey, Resource, ResourceType, Snapshot, SnapshotCache};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::grouper::Groups;

/// How often groups without proxies are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Translation passes start at most this often. A change after a quiet period is translated
/// at once; during a burst (a datacenter restarting, instances flapping) the registry's watch
/// keeps only its latest state, so the changes that arrive meanwhile are translated together
/// in the next pass: an affected proxy gets at most one push per interval (20 per second),
/// and the last change reaches it within one interval plus the pass.
pub const MIN_PASS_INTERVAL: Duration = Duration::from_millis(50);

struct RegistryCatalog<'a>(&'a RegistrySnapshot);

impl Catalog for RegistryCatalog<'_> {
    fn services(&self) -> Vec<ServiceName> {
        self.0.services.keys().cloned().collect()
    }

    fn instances(&self, service: &ServiceName) -> Option<&[Instance]> {
        self.0.services.get(service).map(|e| &*e.instances)
    }
}

/// A service's shared resources: one cluster, and endpoints per datacenter of the proxies
/// that depend on it (each datacenter sees itself as priority 0). Only datacenters with such
/// proxies are built.
struct ServiceResources {
    cluster: Arc<Resource>,
    endpoints: HashMap<String, Arc<Resource>>,
    /// Proxyless gRPC clients' clusters (the service's, and its canary one), built when some
    /// proxyless group depends on the service.
    proxyless: Option<Vec<Arc<Resource>>>,
    /// The same clusters for proxyless clients with a certificate (mTLS where the service's
    /// instances take it), built when such a group depends on the service. Same names and
    /// endpoints as [`Self::proxyless`].
    proxyless_mtls: Option<Vec<Arc<Resource>>>,
    /// Their endpoints, per datacenter like [`Self::endpoints`].
    proxyless_endpoints: HashMap<String, Vec<Arc<Resource>>>,
}

struct ActiveGroup {
    /// The group as translated: patches apply only while it is the one recorded for the key.
    group: Arc<ProxyGroup>,
    /// The mesh services the group depends on, sorted: its named dependencies, or for a
    /// wildcard group every service in the registry (kept so as services come and go).
    services: Vec<ServiceName>,
    wildcard: bool,
    /// A wildcard group's egress routes in encoded parts, patched one virtual host at a time.
    /// Groups of named dependencies hold none: rebuilding their few virtual hosts costs less
    /// than keeping a copy of every group's routes.
    routes: Option<EgressRoutes>,
    /// Digest of the snapshot this translator last published for the group: only that one
    /// may be patched (anything else in the cache is translated again).
    published: Option<String>,
}

/// A group translated in full.
struct Built {
    snapshot: Snapshot,
    services: Vec<ServiceName>,
    routes: Option<EgressRoutes>,
}

/// What of a service a group's own resources depend on: that it exists, whether callers
/// reach it over HTTP/2 (its routes then have gRPC-deadline twins), and its tags (one route
/// per tag). Everything else only changes the service's cluster and endpoints.
type Shape = (bool, BTreeSet<String>);

fn shape_of(registry: &RegistrySnapshot, service: &ServiceName) -> Option<Shape> {
    let entry = registry.services.get(service)?;
    let http2 = meshplane_translate::upstream_protocol(&entry.instances)
        == meshplane_translate::UpstreamProtocol::Http2;
    Some((
        http2,
        entry
            .instances
            .iter()
            .flat_map(|i| i.tags.iter().cloned())
            .collect(),
    ))
}

/// The most stand-ins (see [`bounded`]) one group answers per type: a client may ask for
/// any names, so what it can make the control plane build and hold is capped; names past
/// the cap get nothing (gRPC then concludes from its own timer).
const MAX_STAND_INS: usize = 256;
/// The longest stand-in cluster name: a reason naming a service (253 bytes at most).
const MAX_REASON: usize = 1024;

/// A snapshot fallback answering what `build` answers, each name built once and shared by
/// every stream of the group, at most [`MAX_STAND_INS`] names.
fn bounded(
    build: impl Fn(&str) -> Option<Arc<Resource>> + Send + Sync + 'static,
) -> meshplane_xds::Fallback {
    let built: parking_lot::Mutex<HashMap<String, Arc<Resource>>> = Default::default();
    Arc::new(move |name: &str| {
        let mut built = built.lock();
        if let Some(r) = built.get(name) {
            return Some(r.clone());
        }
        if built.len() >= MAX_STAND_INS {
            return None;
        }
        let r = build(name)?;
        built.insert(name.to_owned(), r.clone());
        Some(r)
    })
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
    /// The shape of every service in the registry.
    shapes: HashMap<ServiceName, Shape>,
    /// Groups demanded before the registry finished its first sync. They are published once
    /// it has: proxies reconnecting to a control plane that just restarted must never get a
    /// registry still loading (empty endpoints, clusters missing); they keep what they hold.
    waiting: BTreeSet<GroupKey>,
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
            shapes: HashMap::new(),
            waiting: BTreeSet::new(),
        }
    }

    /// Records translation time and errors into `metrics`.
    pub fn with_metrics(mut self, metrics: TranslationMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// A proxy needs a group that has no snapshot yet; it waits for the registry's first sync.
    pub fn on_demand(&mut self, key: &GroupKey) {
        if !self.registry.is_synced() {
            tracing::debug!(%key, "registry not synced yet: the group waits for it");
            self.waiting.insert(key.clone());
            return;
        }
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
        let published = match changes {
            Changes::All => {
                self.services.clear();
                self.shapes = self
                    .registry
                    .services
                    .keys()
                    .filter_map(|name| Some((name.clone(), shape_of(&self.registry, name)?)))
                    .collect();
                let all: Vec<GroupKey> = self.active.keys().cloned().collect();
                for key in &all {
                    self.publish(key);
                }
                all.len()
            }
            Changes::Services(changed) => {
                let mut reshaped = BTreeSet::new();
                let mut affected = BTreeSet::new();
                for service in &changed {
                    self.services.remove(service);
                    let shape = shape_of(&self.registry, service);
                    if self.shapes.get(service) != shape.as_ref() {
                        reshaped.insert(service.clone());
                    }
                    match shape {
                        Some(shape) => self.shapes.insert(service.clone(), shape),
                        None => self.shapes.remove(service),
                    };
                    if let Some(keys) = self.dependents.get(service) {
                        affected.extend(keys.iter().cloned());
                    }
                }
                let mut wildcards = Vec::new();
                if !changed.is_empty() {
                    for (key, group) in &self.active {
                        if group.wildcard {
                            affected.remove(key);
                            wildcards.push(key.clone());
                        }
                    }
                }
                // Groups of named dependencies first: a wildcard group's work never holds
                // them back.
                for key in affected.iter().chain(&wildcards) {
                    self.update(key, &changed, &reshaped);
                }
                affected.len() + wildcards.len()
            }
        };
        if published > 0 {
            self.metrics.translated(started.elapsed());
            tracing::debug!(groups = published, index = self.registry.index, elapsed = ?started.elapsed(), "registry change translated");
        }
        if self.registry.is_synced() && !self.waiting.is_empty() {
            let waiting = std::mem::take(&mut self.waiting);
            tracing::debug!(
                groups = waiting.len(),
                "registry synced: publishing the groups that waited"
            );
            for key in &waiting {
                self.on_demand(key);
            }
        }
    }

    /// Brings one group up to date after `changed` services changed: its current snapshot
    /// patched with what changed (see the module docs), or a full translation when it has no
    /// snapshot from this translator or the patch fails.
    fn update(
        &mut self,
        key: &GroupKey,
        changed: &BTreeSet<ServiceName>,
        reshaped: &BTreeSet<ServiceName>,
    ) {
        let Some(group) = self.active.get(key) else {
            return;
        };
        let seen: Vec<ServiceName> = if group.wildcard {
            changed
                .iter()
                .filter(|s| self.shapes.contains_key(*s) || reshaped.contains(*s))
                .cloned()
                .collect()
        } else {
            changed
                .iter()
                .filter(|s| group.services.contains(s))
                .cloned()
                .collect()
        };
        let current = self
            .cache
            .snapshot(key)
            .filter(|c| group.published.as_deref() == Some(c.digest()));
        let Some(current) = current else {
            self.publish(key);
            return;
        };
        let reshaping = seen.iter().any(|s| reshaped.contains(s));
        if reshaping && group.group.proxyless {
            // A proxyless group's listeners, routes and clusters follow the set of services
            // and their canaries; it is small: translate it again.
            self.publish(key);
            return;
        }
        let patched = if reshaping {
            self.reshape(key, &current, &seen)
        } else {
            self.refresh(key, &current, &seen)
        };
        match patched {
            Ok(snapshot) => self.set_snapshot(key, snapshot),
            Err(e) => {
                tracing::debug!(%key, error = %e, "cannot patch the group's snapshot; translating it again");
                // Until a full translation succeeds, nothing may patch what this one left.
                if let Some(group) = self.active.get_mut(key) {
                    group.published = None;
                }
                self.publish(key);
            }
        }
    }

    /// The seen services kept their shape: their new cluster and endpoints.
    fn refresh(
        &mut self,
        key: &GroupKey,
        current: &Snapshot,
        seen: &[ServiceName],
    ) -> anyhow::Result<Snapshot> {
        let group = self
            .active
            .get(key)
            .context("the group is not active")?
            .group
            .clone();
        let mut upserts = Vec::with_capacity(seen.len() * 2);
        for service in seen {
            upserts.extend(self.resources_for(service, &group));
        }
        Ok(current.with_upserts(upserts)?)
    }

    /// A service's shared resources for `group`: the sidecars' cluster and endpoints, or the
    /// proxyless clients' clusters and endpoints.
    fn resources_for(&mut self, service: &ServiceName, group: &ProxyGroup) -> Vec<Arc<Resource>> {
        if group.proxyless {
            self.proxyless_resources(service, &group.datacenter, group.proxyless_mtls)
        } else {
            let (cluster, endpoints) = self.service_resources(service, &group.datacenter);
            vec![cluster, endpoints]
        }
    }

    /// Some seen service appeared, left or changed tags: besides the services' clusters and
    /// endpoints (added, replaced, or removed from a wildcard group), the egress routes
    /// change by those services' virtual hosts.
    fn reshape(
        &mut self,
        key: &GroupKey,
        current: &Snapshot,
        seen: &[ServiceName],
    ) -> anyhow::Result<Snapshot> {
        let recorded = self
            .groups
            .get(key)
            .context("no descriptor recorded for the group")?;
        let group = self.active.get(key).context("the group is not active")?;
        anyhow::ensure!(
            Arc::ptr_eq(&group.group, &recorded) || *group.group == *recorded,
            "the group's descriptor changed since it was translated"
        );
        let wildcard = group.wildcard;
        let datacenter = group.group.datacenter.clone();
        let mut upserts = Vec::with_capacity(seen.len() * 2 + 1);
        let mut removals = Vec::new();
        for service in seen {
            // A wildcard group depends on exactly the services in the registry; a named
            // dependency keeps its cluster (with no endpoints) while it is missing.
            if wildcard && !self.shapes.contains_key(service) {
                removals.push((ResourceType::Cluster, service.to_string()));
                removals.push((ResourceType::Endpoint, service.to_string()));
            } else {
                let (cluster, endpoints) = self.service_resources(service, &datacenter);
                upserts.push(cluster);
                upserts.push(endpoints);
            }
        }
        let registry = self.registry.clone();
        let catalog = RegistryCatalog(&registry);
        let group = self
            .active
            .get_mut(key)
            .context("the group is not active")?;
        let routes = match &mut group.routes {
            Some(routes) => {
                for service in seen {
                    routes.update_service(service, &catalog);
                }
                Some(routes.encode())
            }
            None if wildcard => {
                anyhow::ensure!(
                    recorded.descriptor.egress.is_none(),
                    "the wildcard group's egress routes are not kept"
                );
                None
            }
            None => EgressRoutes::new(&recorded.descriptor, &catalog).map(|r| r.encode()),
        };
        if let Some(routes) = routes {
            upserts.push(Resource::route_encoded(names::EGRESS_ROUTES, routes));
        }
        let snapshot = current.with_patch(upserts, removals)?;
        if wildcard {
            for service in seen {
                let present = self.shapes.contains_key(service);
                match (group.services.binary_search(service), present) {
                    (Err(at), true) => group.services.insert(at, service.clone()),
                    (Ok(at), false) => {
                        group.services.remove(at);
                    }
                    _ => {}
                }
                if present {
                    self.dependents
                        .entry(service.clone())
                        .or_default()
                        .insert(key.clone());
                } else if let Some(set) = self.dependents.get_mut(service) {
                    set.remove(key);
                }
            }
        }
        Ok(snapshot)
    }

    /// A service's cluster and its endpoints for proxies in `datacenter`, built on first use
    /// after each change of the service.
    fn service_resources(
        &mut self,
        name: &ServiceName,
        datacenter: &str,
    ) -> (Arc<Resource>, Arc<Resource>) {
        let registry = &self.registry;
        let options = &self.options;
        let instances = registry
            .services
            .get(name)
            .map(|e| &*e.instances)
            .unwrap_or_default();
        let resources = Self::entry(&mut self.services, name, instances, options);
        let endpoints = resources
            .endpoints
            .entry(datacenter.to_owned())
            .or_insert_with(|| {
                Resource::endpoints(&service_endpoints(name, instances, datacenter, options))
            });
        (resources.cluster.clone(), endpoints.clone())
    }

    /// A service's entry, created (with its sidecars' cluster) on first use after a change.
    fn entry<'s>(
        services: &'s mut HashMap<ServiceName, ServiceResources>,
        name: &ServiceName,
        instances: &[Instance],
        options: &MeshOptions,
    ) -> &'s mut ServiceResources {
        services.entry(name.clone()).or_insert_with(|| {
            for i in instances
                .iter()
                .filter(|i| !meshplane_translate::routable_address(i))
            {
                tracing::warn!(service = %name, instance = %i.id, address = %i.address,
                    "instance address is not an IP address; register its IP (Envoy endpoints cannot be host names)");
            }
            ServiceResources {
                cluster: Resource::cluster(&service_cluster(name, instances, options)),
                endpoints: HashMap::new(),
                proxyless: None,
                proxyless_mtls: None,
                proxyless_endpoints: HashMap::new(),
            }
        })
    }

    /// A service's clusters and endpoints for proxyless clients in `datacenter`, built on
    /// first use after each change of the service. They live in the service's entry, next
    /// to the sidecars' ones, so a change of the service drops both at once.
    fn proxyless_resources(
        &mut self,
        name: &ServiceName,
        datacenter: &str,
        mtls: bool,
    ) -> Vec<Arc<Resource>> {
        let registry = &self.registry;
        let options = &self.options;
        let instances = registry
            .services
            .get(name)
            .map(|e| &*e.instances)
            .unwrap_or_default();
        let resources = Self::entry(&mut self.services, name, instances, options);
        let mut out: Vec<Arc<Resource>> = if mtls {
            resources.proxyless_mtls.get_or_insert_with(|| {
                proxyless_mtls_clusters(name, instances, &options.trust_domain)
                    .iter()
                    .map(Resource::cluster)
                    .collect()
            })
        } else {
            resources.proxyless.get_or_insert_with(|| {
                proxyless_clusters(name, instances)
                    .iter()
                    .map(Resource::cluster)
                    .collect()
            })
        }
        .clone();
        out.extend(
            resources
                .proxyless_endpoints
                .entry(datacenter.to_owned())
                .or_insert_with(|| {
                    proxyless_endpoints(name, instances, datacenter, options)
                        .iter()
                        .map(Resource::endpoints)
                        .collect()
                })
                .iter()
                .cloned(),
        );
        out
    }

    fn publish(&mut self, key: &GroupKey) {
        let Some(group) = self.groups.get(key) else {
            tracing::debug!(%key, "no descriptor recorded for group; its proxies will get nothing until they reconnect");
            return;
        };
        match self.build(&group) {
            Ok(built) => {
                self.track(key, group, built.services, built.routes);
                self.set_snapshot(key, built.snapshot);
            }
            Err(e) => {
                self.metrics.error();
                tracing::warn!(%key, error = %e, "cannot translate group");
            }
        }
    }

    fn set_snapshot(&mut self, key: &GroupKey, snapshot: Snapshot) {
        self.metrics.published();
        let digest = snapshot.digest().to_owned();
        match self.cache.set_snapshot(key, snapshot) {
            Ok(_) => {
                if let Some(group) = self.active.get_mut(key) {
                    group.published = Some(digest);
                }
            }
            Err(e) => {
                self.metrics.error();
                tracing::error!(%key, error = %e, "refusing to publish an inconsistent snapshot; proxies keep their current config");
                if let Some(group) = self.active.get_mut(key) {
                    group.published = None;
                }
            }
        }
    }

    fn build(&mut self, group: &ProxyGroup) -> anyhow::Result<Built> {
        let mut config = group_config(group, &RegistryCatalog(&self.registry), &self.options)?;
        // A wildcard Envoy group's egress routes, kept in parts (a proxyless group has none).
        let routes = if group.descriptor.depends_on_all() {
            EgressRoutes::take_from_config(&group.descriptor, &mut config)
        } else {
            None
        };
        let mut resources: Vec<Arc<Resource>> = Vec::new();
        resources.extend(config.clusters.iter().map(Resource::cluster));
        resources.extend(config.listeners.iter().map(Resource::listener));
        resources.extend(config.routes.iter().map(Resource::route));
        if let Some(routes) = &routes {
            resources.push(Resource::route_encoded(
                names::EGRESS_ROUTES,
                routes.encode(),
            ));
        }
        for service in &config.services {
            resources.extend(self.resources_for(service, group));
        }
        let mut snapshot = Snapshot::new(resources)?;
        if group.proxyless {
            // A channel to a target that is not a dependency fails at once, not after
            // gRPC's 15 s resource timer (see `undeclared_listener`): a listener for a name
            // that could be a service, and a cluster for the names those listeners route to
            // (a cluster the group merely lacks, being removed, gets nothing).
            let descriptor = group.descriptor.clone();
            snapshot = snapshot
                .with_fallback(
                    ResourceType::Listener,
                    bounded(move |target: &str| {
                        ServiceName::new(target)
                            .ok()
                            .map(|_| Resource::listener(&undeclared_listener(&descriptor, target)))
                    }),
                )
                .with_fallback(
                    ResourceType::Cluster,
                    bounded(|name: &str| {
                        (name.starts_with(REASON_PREFIX) && name.len() <= MAX_REASON)
                            .then(|| Resource::cluster(&undeclared_cluster(name)))
                    }),
                );
        }
        Ok(Built {
            snapshot,
            services: config.services,
            routes,
        })
    }

    fn track(
        &mut self,
        key: &GroupKey,
        group: Arc<ProxyGroup>,
        services: Vec<ServiceName>,
        routes: Option<EgressRoutes>,
    ) {
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
        self.active.insert(
            key.clone(),
            ActiveGroup {
                group,
                services,
                wildcard,
                routes,
                published: None,
            },
        );
    }

    /// The services a group is tracked as depending on (what pruning and later updates go by).
    #[cfg(test)]
    pub(crate) fn tracked_services(&self, key: &GroupKey) -> Option<&[ServiceName]> {
        self.active.get(key).map(|g| &*g.services)
    }

    /// The datacenters whose endpoints of `service` are built and kept.
    #[cfg(test)]
    pub(crate) fn endpoint_datacenters(&self, service: &ServiceName) -> BTreeSet<String> {
        self.services
            .get(service)
            .map(|r| r.endpoints.keys().cloned().collect())
            .unwrap_or_default()
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
        // Endpoints of a datacenter whose proxies are all gone are not kept either.
        let datacenters: BTreeSet<&str> = self
            .active
            .values()
            .map(|g| g.group.datacenter.as_str())
            .collect();
        for resources in self.services.values_mut() {
            resources
                .endpoints
                .retain(|dc, _| datacenters.contains(dc.as_str()));
            resources
                .proxyless_endpoints
                .retain(|dc, _| datacenters.contains(dc.as_str()));
        }
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
        let mut last_pass = tokio::time::Instant::now();
        let mut pending = false;
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        prune.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = registry_rx.changed(), if !pending => {
                    if changed.is_err() {
                        return;
                    }
                    pending = true;
                }
                () = tokio::time::sleep_until(last_pass + MIN_PASS_INTERVAL), if pending => {
                    pending = false;
                    last_pass = tokio::time::Instant::now();
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

/// Translates `group` in full against `registry`, outside the control plane's translator
/// (dry runs), with the very code it runs: what the group's proxies would be sent, shared
/// service resources included. Nothing is published.
pub(crate) fn translate_once(
    group: &ProxyGroup,
    registry: Arc<RegistrySnapshot>,
    options: Arc<MeshOptions>,
) -> anyhow::Result<Snapshot> {
    let mut translator = Translator::new(SnapshotCache::new(), Groups::default(), options);
    translator.registry = registry;
    Ok(translator.build(group)?.snapshot)
}
