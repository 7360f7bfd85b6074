//! The coordinator: one catalog watch, one health watch per service, and the bookkeeping that
//! turns their results into store events without ever emptying services on failure.
//!
//! Connections ([`ConnectionPlan`]): the catalog watch holds one connection; health watches
//! share `health_slots` permits (a FIFO semaphore held for the duration of each request; HTTP/1.1
//! means one connection per in-flight request), idle connections are reused, and `spare`
//! connections absorb those caught in transition, keeping the source within `max_connections`. With at
//! most `health_slots` services each has its own long-blocking query (a change arrives at once);
//! with more, they take turns and each query blocks for `rotation × slots / services` (at least
//! 200ms), so every service is re-read about every `rotation`, and a change waits for its
//! service's turn unless its query is in flight. Defaults with 1,000 services: ≤ 100 connections
//! (Consul allows 200 per client address), 89 health slots, each service re-read about every
//! 10s (~100 requests/s to Consul); changes reach the store in ~5s median, ≤ ~10s (see
//! `BENCHMARKS.md`, "Consul source"). Lower `rotation` or raise `max_connections` for faster changes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use meshplane_consul_api::{CatalogServices, ServiceEntry};
use meshplane_model::{Instance, ServiceName};
use meshplane_registry::{
    EventSink, RegistryEvent, RegistrySource, SinkClosed, SourceId, SourceStatus,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    ConfigError, ConnectionPlan, ConsulClient, ConsulConfig, ConsulError,
    watch::{self, Deliver, SharedWait, Timing},
    wire,
};

/// Shortest blocking wait used when watches take turns.
const MIN_ROTATION_WAIT: Duration = Duration::from_millis(200);
/// The key used for the catalog watch in the set of failing watches.
const CATALOG: &str = "catalog (/v1/catalog/services)";

/// Follows Consul and feeds the store. Construct with [`ConsulSource::new`], run through
/// [`RegistrySource::run`].
#[derive(Debug)]
pub struct ConsulSource {
    config: ConsulConfig,
    client: ConsulClient,
}

/// A watch result, sent from watch tasks to the coordinator.
enum Update {
    Catalog(Result<Vec<ServiceName>, ConsulError>),
    Health(ServiceName, Result<Vec<Instance>, String>),
}

/// The coordinator's state.
struct Coordinator {
    source: SourceId,
    sink: EventSink,
    /// Last known instances per watched service (kept while Consul fails).
    known: BTreeMap<ServiceName, Vec<Instance>>,
    /// Running health watches, each cancelled through a child of `parent`.
    watches: HashMap<ServiceName, CancellationToken>,
    parent: CancellationToken,
    /// Watches whose last request failed, with the error.
    failing: BTreeMap<String, String>,
    catalog_seen: bool,
    synced: bool,
    stale: bool,
}

// === impl ConsulSource ===

impl ConsulSource {
    /// Validates `config` and prepares the HTTP client; nothing connects until `run`.
    pub fn new(config: ConsulConfig) -> Result<Self, ConfigError> {
        let client = ConsulClient::new(&config)?;
        Ok(Self { config, client })
    }
}

impl RegistrySource for ConsulSource {
    type Error = SinkClosed;

    fn id(&self) -> SourceId {
        SourceId::new(&self.config.source_id)
    }

    async fn run(self, sink: EventSink, shutdown: CancellationToken) -> Result<(), SinkClosed> {
        let source = self.id();
        let slots = ConnectionPlan::for_budget(self.config.max_connections).health_slots;
        let full_wait = self.config.wait.as_millis() as u64;
        let (tx, mut rx) = mpsc::channel::<Update>(1024);
        let watches = shutdown.child_token();
        let status = SourceStatus::Syncing;
        sink.send(RegistryEvent::Status {
            source: source.clone(),
            status,
        })
        .await?;

        let catalog = Deliver {
            tx: tx.clone(),
            convert: Box::new(|r: Result<CatalogServices, ConsulError>| {
                Update::Catalog(r.map(|c| wire::service_names(&c)))
            }),
        };
        tokio::spawn(watch::run(
            self.client.clone(),
            "/v1/catalog/services".to_string(),
            Timing::from(&self.config),
            None, // the catalog watch has its own connection, outside the health slots
            Arc::new(AtomicU64::new(full_wait)),
            catalog,
            watches.clone(),
        ));
        let health = HealthWatches {
            client: self.client.clone(),
            timing: Timing::from(&self.config),
            permits: Arc::new(Semaphore::new(slots)),
            slots,
            wait: Arc::new(AtomicU64::new(full_wait)),
            tx,
            default_dc: self.config.datacenter.clone().unwrap_or_default(),
        };
        let mut coordinator = Coordinator {
            source,
            sink,
            known: BTreeMap::new(),
            watches: HashMap::new(),
            parent: watches.clone(),
            failing: BTreeMap::new(),
            catalog_seen: false,
            synced: false,
            stale: false,
        };
        let result = loop {
            let update = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                update = rx.recv() => match update {
                    Some(u) => u,
                    None => break Ok(()),
                },
            };
            if let Err(e) = coordinator.handle(update, &health, &self.config).await {
                break Err(e);
            }
        };
        watches.cancel();
        result
    }
}

/// Starts health watches; they share `slots` permits and the current blocking wait.
struct HealthWatches {
    client: ConsulClient,
    timing: Timing,
    permits: Arc<Semaphore>,
    slots: usize,
    wait: SharedWait,
    tx: mpsc::Sender<Update>,
    default_dc: String,
}

impl HealthWatches {
    fn spawn(&self, name: ServiceName, token: CancellationToken) {
        let deliver = Deliver {
            tx: self.tx.clone(),
            convert: health_converter(name.clone(), self.default_dc.clone()),
        };
        tokio::spawn(watch::run::<Vec<ServiceEntry>, Update>(
            self.client.clone(),
            format!("/v1/health/service/{name}"),
            self.timing.clone(),
            Some(self.permits.clone()),
            self.wait.clone(),
            deliver,
            token,
        ));
    }

    /// Re-derives the blocking wait from the number of watched services.
    fn resize(&self, config: &ConsulConfig, services: usize) {
        self.wait.store(
            rotation_wait(config, self.slots, services),
            Ordering::Relaxed,
        );
    }
}

fn health_converter(
    name: ServiceName,
    default_dc: String,
) -> Box<dyn Fn(Result<Vec<ServiceEntry>, ConsulError>) -> Update + Send> {
    Box::new(move |r| {
        let instances = r
            .map_err(|e| e.to_string())
            .and_then(|entries| wire::instances(entries, &default_dc).map_err(|e| e.to_string()));
        Update::Health(name.clone(), instances)
    })
}

/// The blocking wait for health watches: the full wait while every service has a slot, shorter
/// when they must take turns so each is re-read about every `rotation`.
fn rotation_wait(config: &ConsulConfig, slots: usize, services: usize) -> u64 {
    if services <= slots {
        return config.wait.as_millis() as u64;
    }
    let turn = config.rotation.mul_f64(slots as f64 / services as f64);
    turn.max(MIN_ROTATION_WAIT).min(config.wait).as_millis() as u64
}

// === impl Coordinator ===

impl Coordinator {
    /// Applies one watch result, then reports what changed.
    async fn handle(
        &mut self,
        update: Update,
        health: &HealthWatches,
        config: &ConsulConfig,
    ) -> Result<(), SinkClosed> {
        match update {
            Update::Catalog(Ok(names)) => {
                for name in self.catalog(names).await {
                    if let Some(token) = self.watches.get(&name) {
                        health.spawn(name, token.clone());
                    }
                }
                health.resize(config, self.watches.len());
            }
            Update::Catalog(Err(e)) => self.failed(CATALOG.into(), e.to_string()),
            Update::Health(name, Ok(instances)) => self.health(name, instances).await?,
            Update::Health(name, Err(e)) => {
                if self.watches.contains_key(&name) {
                    self.failed(name.to_string(), e);
                }
            }
        }
        self.report().await
    }

    /// Applies a new service list; returns the services whose watch must start.
    async fn catalog(&mut self, names: Vec<ServiceName>) -> Vec<ServiceName> {
        self.catalog_seen = true;
        self.failing.remove(CATALOG);
        let names: BTreeSet<ServiceName> = names.into_iter().collect();
        let gone: Vec<ServiceName> = self
            .watches
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(token) = self.watches.remove(&name) {
                token.cancel();
            }
            self.failing.remove(name.as_str());
            if self.known.remove(&name).is_some() && self.synced {
                let event = RegistryEvent::Service {
                    source: self.source.clone(),
                    name,
                    instances: vec![],
                };
                // A closed sink is noticed on the next send in `report`.
                let _ = self.sink.send(event).await;
            }
        }
        let new: Vec<ServiceName> = names
            .into_iter()
            .filter(|n| !self.watches.contains_key(n))
            .collect();
        for name in &new {
            self.watches.insert(name.clone(), self.parent.child_token());
        }
        new
    }

    async fn health(
        &mut self,
        name: ServiceName,
        instances: Vec<Instance>,
    ) -> Result<(), SinkClosed> {
        if !self.watches.contains_key(&name) {
            return Ok(()); // a late answer for a service that left the catalog
        }
        self.failing.remove(name.as_str());
        if self.known.get(&name) == Some(&instances) {
            return Ok(());
        }
        self.known.insert(name.clone(), instances.clone());
        if self.synced {
            self.sink
                .send(RegistryEvent::Service {
                    source: self.source.clone(),
                    name,
                    instances,
                })
                .await?;
        }
        Ok(())
    }

    fn failed(&mut self, key: String, error: String) {
        if !self.failing.contains_key(&key) {
            tracing::warn!(watch = %key, %error, "Consul watch failing; keeping the last known state");
        }
        self.failing.insert(key, error);
    }

    /// Sends the first full state once every watched service has answered, and stale/fresh
    /// transitions after that.
    async fn report(&mut self) -> Result<(), SinkClosed> {
        if !self.synced {
            let complete =
                self.catalog_seen && self.watches.keys().all(|n| self.known.contains_key(n));
            if !complete {
                return Ok(());
            }
            self.synced = true;
            let services = self.known.clone();
            tracing::info!(services = services.len(), "Consul initial sync complete");
            self.sink
                .send(RegistryEvent::Replace {
                    source: self.source.clone(),
                    services,
                })
                .await?;
        }
        let stale = !self.failing.is_empty();
        if stale != self.stale {
            self.stale = stale;
            let status = match self.failing.iter().next() {
                Some((key, error)) => SourceStatus::Stale {
                    reason: format!("{key}: {error}"),
                },
                None => {
                    tracing::info!("Consul watches recovered");
                    SourceStatus::Synced
                }
            };
            self.sink
                .send(RegistryEvent::Status {
                    source: self.source.clone(),
                    status,
                })
                .await?;
        }
        Ok(())
    }
}
