//! The coordinator: a catalog watch, the health of every service, and the bookkeeping that
//! turns their results into store events without ever emptying services on failure.
//!
//! Two ways to follow health, chosen by the number of services against the connection budget
//! ([`ConnectionPlan`]: the catalog watch holds one connection; `health_slots` requests run at
//! once, HTTP/1.1 being one connection per request in flight):
//! - **Watches** (up to `health_slots` services): one long-blocking query per service on
//!   `/v1/health/service/<name>`; a change arrives as soon as Consul answers it.
//! - **Signals** (more services; back to watches below half the slots): one blocking query on
//!   `/v1/health/state/any` (holding one slot) says which services' checks changed
//!   ([`CheckSignals`]), and only those are read again, up to `MAX_READS` (32) at once.
//!   Its first answer is only a baseline (a change before it is in no signal), so every
//!   service is read once it is in, and whatever was read before it is read again.
//!   Registrations and deregistrations with checks, and health changes, show there. What
//!   checks do not show (an instance without checks, a re-registration with other ports) moves
//!   the catalog's index or the checks' index without a check change: after `CATALOG_GRACE`
//!   for the checks watch to explain it, every service is read again (a sweep, at most one at
//!   a time). Every service is also re-read every `resync` (5m) as a safety net.
//!   Idle cost: the two blocking queries plus `services / resync` reads per second (1,000
//!   services: ~3.3/s); see `BENCHMARKS.md`, "Consul source".
//! - **Multiplexed** (whenever Consul answers over HTTP/2, as it does on its HTTPS port, at
//!   any number of services): one long-blocking query per service as in watches mode, carried
//!   [`STREAMS_PER_CONNECTION`] to an HTTP/2 connection (1,000 services: 10 connections and
//!   the catalog's), so every change arrives as soon as Consul answers it, whatever the size.
//!   Idle cost: `services / wait` requests per second (1,000 services: ~3.3/s).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use meshplane_consul_api::{CatalogServices, ServiceEntry};
use meshplane_model::{Instance, ServiceName};
use meshplane_registry::{
    EventSink, RegistryEvent, RegistrySource, SinkClosed, SourceId, SourceStatus,
};
use tokio::{
    sync::{Semaphore, mpsc},
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use crate::{
    Backoff, ConfigError, ConnectionPlan, ConsulClient, ConsulConfig, ConsulError, ErrorObserver,
    signals::{CheckSignals, Reduced},
    watch::{self, Convert, Deliver, Timing},
    wire,
};

/// How long a catalog change the checks do not explain waits for the checks watch (whose
/// answer for the same change may still be on its way) before every service is read again.
const CATALOG_GRACE: Duration = Duration::from_secs(1);
/// The key used for the catalog watch in the set of failing watches.
const CATALOG: &str = "catalog (/v1/catalog/services)";
/// The key used for the checks watch in the set of failing watches.
const CHECKS: &str = "checks (/v1/health/state/any)";
/// The liveness probe's key among failing watches, and its path.
const PROBE: &str = "liveness (/v1/status/leader)";
const PROBE_PATH: &str = "/v1/status/leader";
/// Wait of a plain read of one service (it does not block; this bounds a hung request).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most reads of single services at once (signals mode). Short requests cycle connections
/// fast; a connection that just finished is not yet back in the pool when the next read
/// starts, so many parallel reads would open connections beyond the budget. 32 keep a sweep
/// of 1,000 services well under a second.
const MAX_READS: usize = 32;

/// Follows Consul and feeds the store. Construct with [`ConsulSource::new`], run through
/// [`RegistrySource::run`].
#[derive(Debug)]
pub struct ConsulSource {
    config: ConsulConfig,
    client: ConsulClient,
}

/// A result, sent from watch and read tasks to the coordinator.
enum Update {
    Catalog(Result<(BTreeMap<ServiceName, Vec<String>>, u64), ConsulError>),
    Health(ServiceName, Result<Vec<Instance>, String>),
    /// `/v1/health/state/any`, reduced where it was received.
    Checks(Result<(Reduced, u64), ConsulError>),
    /// A read of one service (signals) ended; its result came as `Health` before.
    ReadDone(ServiceName),
    /// Whether Consul answered the liveness probe.
    Probe(Result<(), String>),
}

/// How health is followed (see the module docs).
enum Mode {
    Watches,
    Signals(Box<Signals>),
    /// Consul speaks HTTP/2: one watch per service, [`STREAMS_PER_CONNECTION`] to a connection.
    Multiplexed,
}

/// Blocking queries carried by one HTTP/2 connection (multiplexed mode). Consul (Go) accepts
/// 250 concurrent streams per connection and hyper 200; a request beyond the server's limit
/// would wait for a stream to close, which a blocking query does only after `wait`.
pub const STREAMS_PER_CONNECTION: usize = 100;

/// Signals mode's state.
struct Signals {
    checks_watch: CancellationToken,
    signals: CheckSignals,
    /// The catalog index of a change the checks have not explained yet, and until when
    /// to wait for them.
    unexplained: Option<(u64, Instant)>,
    /// Reads in flight, and those asked for again meanwhile.
    reading: HashSet<ServiceName>,
    again: HashSet<ServiceName>,
    /// Services read before the checks watch's first answer (the baseline): a change between
    /// such a read and the baseline is in no signal, so each is read again once it is in.
    early: HashSet<ServiceName>,
    /// Whether every service has been read since switching to signals. The first sweep waits
    /// for the baseline (so that nothing needs reading twice), unless the checks watch fails
    /// first.
    swept: bool,
    next_resync: Instant,
}

/// The coordinator's state.
struct Coordinator {
    source: SourceId,
    sink: EventSink,
    mode: Mode,
    /// The catalog: services and their tags.
    catalog: BTreeMap<ServiceName, Vec<String>>,
    catalog_index: u64,
    /// Last known instances per service (kept while Consul fails).
    known: BTreeMap<ServiceName, Vec<Instance>>,
    /// Watches mode: the running health watches, each cancelled through a child of `parent`.
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

    /// Tells `errors` of every failed request to Consul (the control plane counts them in
    /// `meshplane_registry_errors_total`).
    pub fn with_errors(mut self, errors: ErrorObserver) -> Self {
        self.client = self.client.with_errors(errors);
        self
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
        let (tx, mut rx) = mpsc::channel::<Update>(1024);
        let watches = shutdown.child_token();
        sink.send(RegistryEvent::Status {
            source: source.clone(),
            status: SourceStatus::Syncing,
        })
        .await?;

        let catalog = Deliver {
            tx: tx.clone(),
            convert: Box::new(|r: Result<(CatalogServices, u64), ConsulError>| {
                Update::Catalog(r.map(|(c, index)| (wire::service_tags(&c), index)))
            }),
        };
        tokio::spawn(watch::run(
            self.client.clone(),
            "/v1/catalog/services".to_string(),
            Timing::from(&self.config),
            None, // the catalog watch has its own connection, outside the health slots
            self.config.wait,
            catalog,
            watches.clone(),
        ));
        tokio::spawn(probe(
            self.client.clone(),
            (self.config.probe_interval, self.config.probe_timeout),
            tx.clone(),
            watches.clone(),
        ));
        let health = Health {
            client: self.client.clone(),
            shards: std::sync::Mutex::new(Vec::new()),
            config: self.config.clone(),
            permits: Arc::new(Semaphore::new(slots)),
            reads: Arc::new(Semaphore::new(
                MAX_READS.min(slots.saturating_sub(1)).max(1),
            )),
            slots,
            tx,
            default_dc: self.config.datacenter.clone().unwrap_or_default(),
        };
        let mut coordinator = Coordinator {
            source,
            sink,
            mode: Mode::Watches,
            catalog: BTreeMap::new(),
            catalog_index: 0,
            known: BTreeMap::new(),
            watches: HashMap::new(),
            parent: watches.clone(),
            failing: BTreeMap::new(),
            catalog_seen: false,
            synced: false,
            stale: false,
        };
        let result = loop {
            let timer = coordinator.next_timer();
            let update = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = sleep_until(timer.unwrap_or_else(far_future)), if timer.is_some() => None,
                update = rx.recv() => match update {
                    Some(u) => Some(u),
                    None => break Ok(()),
                },
            };
            let handled = match update {
                Some(update) => coordinator.handle(update, &health).await,
                None => {
                    coordinator.timer(&health);
                    coordinator.report().await
                }
            };
            if let Err(e) = handled {
                break Err(e);
            }
        };
        watches.cancel();
        result
    }
}

/// Asks Consul whether it answers at all, every `interval`, until `shutdown`: blocking
/// queries alone cannot tell a quiet Consul from a hung one for minutes.
async fn probe(
    client: ConsulClient,
    (interval, timeout): (Duration, Duration),
    tx: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    loop {
        let answered = tokio::select! {
            () = shutdown.cancelled() => return,
            r = client.probe(PROBE_PATH, timeout) => r.map_err(|e| e.to_string()),
        };
        if tx.send(Update::Probe(answered)).await.is_err() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// Starts health watches and reads; they share `slots` permits.
struct Health {
    client: ConsulClient,
    /// Multiplexed mode: HTTP/2 clients, one connection each, and the watches each carries.
    shards: std::sync::Mutex<Vec<Arc<Shard>>>,
    config: ConsulConfig,
    permits: Arc<Semaphore>,
    /// Signals mode: reads of single services, fewer than the slots (see [`MAX_READS`]).
    reads: Arc<Semaphore>,
    slots: usize,
    tx: mpsc::Sender<Update>,
    default_dc: String,
}

/// One HTTP/2 connection of multiplexed mode.
struct Shard {
    client: ConsulClient,
    watches: AtomicUsize,
}

impl Health {
    /// Watches and multiplexed modes: a long-blocking watch of one service. Over HTTP/1.1 each
    /// request in flight holds a slot (a connection); over HTTP/2 the watch is carried by the
    /// least loaded connection.
    fn watch(&self, name: ServiceName, token: CancellationToken, multiplexed: bool) {
        let deliver = Deliver {
            tx: self.tx.clone(),
            convert: health_converter(name.clone(), self.default_dc.clone()),
        };
        let path = format!("/v1/health/service/{name}");
        let (timing, wait) = (Timing::from(&self.config), self.config.wait);
        if !multiplexed {
            tokio::spawn(watch::run::<Vec<ServiceEntry>, Update>(
                self.client.clone(),
                path,
                timing,
                Some(self.permits.clone()),
                wait,
                deliver,
                token,
            ));
            return;
        }
        let shard = self.shard();
        shard.watches.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let client = shard.client.clone();
            watch::run::<Vec<ServiceEntry>, Update>(
                client, path, timing, None, wait, deliver, token,
            )
            .await;
            shard.watches.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Multiplexed mode: the connection for one more watch — the first with room, a new one
    /// while the budget allows, else the least loaded.
    fn shard(&self) -> Arc<Shard> {
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let load = |s: &Arc<Shard>| s.watches.load(Ordering::Relaxed);
        if let Some(shard) = shards.iter().find(|s| load(s) < STREAMS_PER_CONNECTION) {
            return shard.clone();
        }
        if shards.len() < max_shards(&self.config) {
            match ConsulClient::new_multiplexed(&self.config) {
                Ok(client) => {
                    let client = client.with_errors(self.client.errors().clone());
                    let shard = Arc::new(Shard {
                        client,
                        watches: AtomicUsize::new(0),
                    });
                    shards.push(shard.clone());
                    return shard;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot build another HTTP/2 client for Consul; sharing a connection")
                }
            }
        }
        match shards.iter().min_by_key(|s| load(s)) {
            Some(shard) => shard.clone(),
            None => Arc::new(Shard {
                client: self.client.clone(),
                watches: AtomicUsize::new(0),
            }),
        }
    }

    /// Signals mode: the blocking watch of every check.
    fn watch_checks(&self, token: CancellationToken) {
        let deliver = Deliver {
            tx: self.tx.clone(),
            convert: Box::new(Update::Checks),
        };
        tokio::spawn(watch::run_with(
            self.client.clone(),
            "/v1/health/state/any".to_string(),
            Reduced::from_body,
            Timing::from(&self.config),
            Some(self.permits.clone()),
            self.config.wait,
            deliver,
            token,
        ));
    }

    /// Signals mode: one plain read of a service, retried with backoff until it succeeds or
    /// `token` is cancelled. Each failure is reported (the source goes stale).
    fn read(&self, name: ServiceName, token: CancellationToken) {
        let (client, permits, tx) = (self.client.clone(), self.reads.clone(), self.tx.clone());
        let convert = health_converter(name.clone(), self.default_dc.clone());
        let mut backoff = Backoff::new(self.config.min_retry, self.config.max_retry);
        let path = format!("/v1/health/service/{name}");
        tokio::spawn(async move {
            loop {
                let result = tokio::select! {
                    () = token.cancelled() => break,
                    result = async {
                        let _permit = permits.acquire().await.ok()?;
                        Some(client.get::<Vec<ServiceEntry>>(&path, 0, READ_TIMEOUT).await)
                    } => match result {
                        Some(result) => result,
                        None => break,
                    },
                };
                let ok = result.is_ok();
                if tx.send(convert(result)).await.is_err() || ok {
                    break;
                }
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
            let _ = tx.send(Update::ReadDone(name)).await;
        });
    }
}

/// HTTP/2 connections multiplexed mode may open: the budget less the catalog watch's.
fn max_shards(config: &ConsulConfig) -> usize {
    config.max_connections.saturating_sub(1).max(1)
}

fn health_converter(name: ServiceName, default_dc: String) -> Convert<Vec<ServiceEntry>, Update> {
    Box::new(move |r| {
        let instances = r.map_err(|e| e.to_string()).and_then(|(entries, _)| {
            wire::instances(entries, &default_dc).map_err(|e| e.to_string())
        });
        Update::Health(name.clone(), instances)
    })
}

// === impl Coordinator ===

impl Coordinator {
    /// Applies one result, then reports what changed.
    async fn handle(&mut self, update: Update, health: &Health) -> Result<(), SinkClosed> {
        match update {
            Update::Catalog(Ok((services, index))) => self.catalog(services, index, health).await,
            Update::Catalog(Err(e)) => self.failed(CATALOG.into(), e.to_string()),
            Update::Health(name, Ok(instances)) => self.health(name, instances).await?,
            Update::Health(name, Err(e)) => {
                if self.catalog.contains_key(&name) {
                    self.failed(name.to_string(), e);
                }
            }
            Update::Checks(Ok((checks, index))) => self.checks(checks, index, health),
            Update::Checks(Err(e)) => {
                self.failed(CHECKS.into(), e.to_string());
                self.sweep_without_baseline(health);
            }
            Update::ReadDone(name) => self.read_done(name, health),
            Update::Probe(Ok(())) => {
                self.failing.remove(PROBE);
            }
            Update::Probe(Err(e)) => self.failed(PROBE.into(), e),
        }
        self.report().await
    }

    /// Applies a new catalog: services that left are emptied, new ones and those whose tags
    /// changed are read (or watched), and the mode follows the number of services.
    async fn catalog(
        &mut self,
        services: BTreeMap<ServiceName, Vec<String>>,
        index: u64,
        health: &Health,
    ) {
        self.catalog_seen = true;
        self.failing.remove(CATALOG);
        let gone: Vec<ServiceName> = self
            .catalog
            .keys()
            .filter(|n| !services.contains_key(*n))
            .cloned()
            .collect();
        let changed: Vec<ServiceName> = services
            .iter()
            .filter(|(n, tags)| self.catalog.get(*n) != Some(*tags))
            .map(|(n, _)| n.clone())
            .collect();
        let moved = index != self.catalog_index;
        self.catalog = services;
        self.catalog_index = index;
        for name in &gone {
            if let Some(token) = self.watches.remove(name) {
                token.cancel();
            }
            self.failing.remove(name.as_str());
            if self.known.remove(name).is_some() && self.synced {
                let event = RegistryEvent::Service {
                    source: self.source.clone(),
                    name: name.clone(),
                    instances: vec![],
                };
                // A closed sink is noticed on the next send in `report`.
                let _ = self.sink.send(event).await;
            }
        }
        let switched = self.choose_mode(health);
        match &mut self.mode {
            Mode::Watches | Mode::Multiplexed => {
                let multiplexed = matches!(self.mode, Mode::Multiplexed);
                let new: Vec<ServiceName> = self
                    .catalog
                    .keys()
                    .filter(|n| !self.watches.contains_key(*n))
                    .cloned()
                    .collect();
                for name in new {
                    let token = self.parent.child_token();
                    self.watches.insert(name.clone(), token.clone());
                    health.watch(name, token, multiplexed);
                }
            }
            Mode::Signals(signals) => {
                // (Just switched: every service will be read, nothing to explain.)
                if !switched
                    && changed.is_empty()
                    && gone.is_empty()
                    && moved
                    && signals.signals.index() < index
                {
                    signals.unexplained = Some((index, Instant::now() + CATALOG_GRACE));
                }
                if !switched {
                    for name in changed {
                        self.read(name, health);
                    }
                }
            }
        }
    }

    /// Switches between watches and signals as the number of services crosses the slots, and
    /// to multiplexed watches while Consul answers over HTTP/2; whether it switched to signals
    /// (every service will be read once the checks watch's baseline is in).
    fn choose_mode(&mut self, health: &Health) -> bool {
        let services = self.catalog.len();
        let multiplexed = health.client.multiplexed()
            && services <= max_shards(&health.config) * STREAMS_PER_CONNECTION;
        match (&self.mode, multiplexed) {
            (Mode::Multiplexed, true) => return false,
            (Mode::Multiplexed, false) => {
                tracing::info!(
                    services,
                    "Consul no longer answers over HTTP/2 (or too many services): back to HTTP/1.1"
                );
                for (_, token) in self.watches.drain() {
                    token.cancel();
                }
                self.mode = Mode::Watches;
            }
            (_, true) => {
                tracing::info!(
                    services,
                    streams_per_connection = STREAMS_PER_CONNECTION,
                    "Consul answers over HTTP/2: one blocking watch per service, multiplexed"
                );
                if let Mode::Signals(signals) = &self.mode {
                    signals.checks_watch.cancel();
                    self.failing.remove(CHECKS);
                }
                // HTTP/1.1 watches hold slots; each service's new watch reads it at once.
                for (_, token) in self.watches.drain() {
                    token.cancel();
                }
                self.mode = Mode::Multiplexed;
                return false;
            }
            (_, false) => {}
        }
        match self.mode {
            Mode::Watches if services > health.slots => {
                tracing::info!(
                    services,
                    slots = health.slots,
                    "more Consul services than health slots: following /v1/health/state/any"
                );
                for (_, token) in self.watches.drain() {
                    token.cancel();
                }
                let checks_watch = self.parent.child_token();
                health.watch_checks(checks_watch.clone());
                self.mode = Mode::Signals(Box::new(Signals {
                    checks_watch,
                    signals: CheckSignals::default(),
                    unexplained: None,
                    reading: HashSet::new(),
                    again: HashSet::new(),
                    early: HashSet::new(),
                    swept: false,
                    next_resync: Instant::now() + health.config.resync,
                }));
                // Every service is read once the checks watch's first answer is in: what
                // changed before that answer is in no signal, what changes after it is.
                true
            }
            Mode::Signals(ref signals) if services <= health.slots / 2 => {
                tracing::info!(services, "few Consul services: one blocking watch each");
                signals.checks_watch.cancel();
                self.failing.remove(CHECKS);
                self.mode = Mode::Watches;
                false
            }
            _ => false,
        }
    }

    /// Signals mode: reads `name` once more (or again after the read in flight).
    fn read(&mut self, name: ServiceName, health: &Health) {
        let Mode::Signals(signals) = &mut self.mode else {
            return;
        };
        if !signals.signals.has_baseline() {
            signals.early.insert(name.clone());
        }
        if signals.reading.contains(&name) {
            signals.again.insert(name);
        } else {
            signals.reading.insert(name.clone());
            health.read(name, self.parent.child_token());
        }
    }

    fn read_done(&mut self, name: ServiceName, health: &Health) {
        let Mode::Signals(signals) = &mut self.mode else {
            return;
        };
        signals.reading.remove(&name);
        if signals.again.remove(&name) && self.catalog.contains_key(&name) {
            self.read(name, health);
        }
    }

    /// Signals mode: reads the services whose checks changed.
    fn checks(&mut self, checks: Reduced, index: u64, health: &Health) {
        self.failing.remove(CHECKS);
        let Mode::Signals(signals) = &mut self.mode else {
            return; // a late answer after switching back to watches
        };
        let baseline = !signals.signals.has_baseline();
        let changes = signals.signals.update(checks, index);
        if signals.unexplained.is_some_and(|(at, _)| index >= at) {
            signals.unexplained = None;
        }
        if baseline {
            // Read now what was read before the baseline (or everything, the first time):
            // each read is sent after it, so it sees every change the baseline holds.
            let early = std::mem::take(&mut signals.early);
            if std::mem::replace(&mut signals.swept, true) {
                for name in early {
                    if self.catalog.contains_key(&name) {
                        self.read(name, health);
                    }
                }
            } else {
                self.sweep(health);
            }
            return;
        }
        let sweep = changes.unexplained;
        for name in changes.services {
            if let Ok(name) = ServiceName::new(name.as_str())
                && self.catalog.contains_key(&name)
            {
                self.read(name, health);
            }
        }
        if sweep {
            self.sweep(health);
        }
    }

    /// Signals mode: the checks watch failed before its first answer. Every service is read
    /// anyway, so the state does not wait on that one endpoint; the reads are repeated once
    /// the baseline is in.
    fn sweep_without_baseline(&mut self, health: &Health) {
        if let Mode::Signals(signals) = &mut self.mode
            && !signals.swept
        {
            signals.swept = true;
            self.sweep(health);
        }
    }

    /// Signals mode: reads every service again.
    fn sweep(&mut self, health: &Health) {
        let all: Vec<ServiceName> = self.catalog.keys().cloned().collect();
        tracing::debug!(services = all.len(), "reading every Consul service again");
        for name in all {
            self.read(name, health);
        }
    }

    /// When the coordinator must wake up without an update.
    fn next_timer(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Watches | Mode::Multiplexed => None,
            Mode::Signals(signals) => Some(
                signals
                    .unexplained
                    .map_or(signals.next_resync, |(_, at)| at.min(signals.next_resync)),
            ),
        }
    }

    /// A timer fired: an unexplained catalog change, or the periodic resync.
    fn timer(&mut self, health: &Health) {
        let now = Instant::now();
        let Mode::Signals(signals) = &mut self.mode else {
            return;
        };
        let mut sweep = false;
        if signals.unexplained.is_some_and(|(_, at)| at <= now) {
            signals.unexplained = None;
            sweep = true;
        }
        if signals.next_resync <= now {
            signals.next_resync = now + health.config.resync;
            sweep = true;
        }
        if sweep {
            self.sweep(health);
        }
    }

    async fn health(
        &mut self,
        name: ServiceName,
        instances: Vec<Instance>,
    ) -> Result<(), SinkClosed> {
        if !self.catalog.contains_key(&name) {
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

    /// Sends the first full state once every service has answered, and stale/fresh
    /// transitions after that.
    async fn report(&mut self) -> Result<(), SinkClosed> {
        if !self.synced {
            let complete =
                self.catalog_seen && self.catalog.keys().all(|n| self.known.contains_key(n));
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
