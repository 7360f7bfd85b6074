use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use meshplane_model::{Instance, ServiceName};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    EventStream, RegistryEvent, ServiceEntry, Snapshot, SourceId, SourceStatus, TOMBSTONE_CAPACITY,
};

type ServiceWatchers = Arc<Mutex<HashMap<ServiceName, watch::Sender<Option<Arc<ServiceEntry>>>>>>;

/// Read-only handle to the registry: cheap to clone, one per consumer.
#[derive(Clone, Debug)]
pub struct Store {
    snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    service_watchers: ServiceWatchers,
}

/// The only handle that can change the registry.
///
/// Deliberately not `Clone`: a single writer applies events in one order, so the index is
/// monotonic and every snapshot is consistent without locking readers out. Sources never hold
/// the writer; they send events through an [`EventSink`](crate::EventSink) and the task running
/// [`Writer::run`] applies them.
#[derive(Debug)]
pub struct Writer {
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    service_watchers: ServiceWatchers,
    /// What each source currently contributes, service by service (never empty lists), each
    /// list sorted. With a single contributing source (the usual case) the snapshot shares the
    /// same `Arc`, so instances are held once.
    by_source: BTreeMap<SourceId, BTreeMap<ServiceName, Arc<[Instance]>>>,
}

/// Creates an empty registry at index 0.
pub fn store() -> (Store, Writer) {
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let service_watchers = ServiceWatchers::default();
    let store = Store {
        snapshot_rx,
        service_watchers: service_watchers.clone(),
    };
    let writer = Writer {
        snapshot_tx,
        service_watchers,
        by_source: BTreeMap::new(),
    };
    (store, writer)
}

// === impl Store ===

impl Store {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot_rx.borrow().clone()
    }

    /// A receiver that is marked changed whenever the registry really changes (never for
    /// events that repeat what is already known).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot_rx.clone()
    }

    /// A receiver for one service, woken only when that service's instances change. Holds
    /// `None` while the service has no instances.
    pub fn watch_service(&self, name: &ServiceName) -> watch::Receiver<Option<Arc<ServiceEntry>>> {
        // Hold the map lock while reading the snapshot: the writer publishes under the same
        // lock, so a new watcher can never start from a value older than the last publish.
        let mut watchers = self.service_watchers.lock();
        if let Some(tx) = watchers.get(name) {
            return tx.subscribe();
        }
        let current = self.snapshot_rx.borrow().service(name.as_str()).cloned();
        let (tx, rx) = watch::channel(current);
        watchers.insert(name.clone(), tx);
        rx
    }

    /// Waits until the registry's index is above `index` (or `shutdown` is cancelled), then
    /// returns the snapshot.
    pub async fn changed_after(&self, index: u64, shutdown: &CancellationToken) -> Arc<Snapshot> {
        let mut rx = self.snapshot_rx.clone();
        tokio::select! {
            res = rx.wait_for(|s| s.index > index) => match res {
                Ok(s) => s.clone(),
                Err(_) => self.snapshot(),
            },
            () = shutdown.cancelled() => self.snapshot(),
        }
    }
}

// === impl Writer ===

impl Writer {
    /// Applies one event synchronously. Returns whether anything observable changed; only then
    /// is the index bumped and are watchers woken.
    pub fn apply(&mut self, event: RegistryEvent) -> bool {
        let current = self.snapshot_tx.borrow().clone();
        let (source, affected, status) = match event {
            RegistryEvent::Replace { source, services } => {
                let services: BTreeMap<_, _> = services
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(name, instances)| (name, sorted(instances)))
                    .collect();
                let mut affected: BTreeSet<ServiceName> = services.keys().cloned().collect();
                if let Some(old) = self.by_source.insert(source.clone(), services) {
                    affected.extend(old.into_keys());
                }
                (source, affected, Some(SourceStatus::Synced))
            }
            RegistryEvent::Service {
                source,
                name,
                instances,
            } => {
                let per_source = self.by_source.entry(source.clone()).or_default();
                if instances.is_empty() {
                    per_source.remove(&name);
                } else {
                    per_source.insert(name.clone(), sorted(instances));
                }
                (source, BTreeSet::from([name]), None)
            }
            RegistryEvent::Status { source, status } => (source, BTreeSet::new(), Some(status)),
        };

        let mut updated: Vec<(ServiceName, Option<Arc<[Instance]>>)> = Vec::new();
        for name in affected {
            let merged = self.merged(&name);
            let old = current.services.get(&name).map(|s| &s.instances);
            let same = match (old, &merged) {
                (Some(old), Some(new)) => Arc::ptr_eq(old, new) || **old == **new,
                (None, None) => true,
                _ => false,
            };
            if !same {
                updated.push((name, merged));
            }
        }
        let old_status = current.sources.get(&source);
        let new_status = match status {
            Some(s) => s,
            None => old_status.cloned().unwrap_or_default(),
        };
        let status_changed = old_status != Some(&new_status);
        if updated.is_empty() && !status_changed {
            return false;
        }
        self.publish(&current, source, new_status, updated);
        true
    }

    /// Applies events from `events` until it closes or `shutdown` is cancelled.
    pub async fn run(mut self, mut events: EventStream, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                event = events.rx.recv() => match event {
                    Some(event) => {
                        let source = event.source().clone();
                        if self.apply(event) {
                            tracing::debug!(%source, index = self.snapshot_tx.borrow().index, "registry changed");
                        }
                    }
                    None => return,
                },
            }
        }
    }

    /// A reader for this writer's store.
    pub fn store(&self) -> Store {
        Store {
            snapshot_rx: self.snapshot_tx.subscribe(),
            service_watchers: self.service_watchers.clone(),
        }
    }

    /// The service's instances across sources, sorted; `None` when no source has any.
    fn merged(&self, name: &ServiceName) -> Option<Arc<[Instance]>> {
        let mut lists = self
            .by_source
            .values()
            .filter_map(|services| services.get(name));
        let first = lists.next()?;
        let Some(second) = lists.next() else {
            return Some(first.clone());
        };
        let mut merged: Vec<Instance> = first.iter().chain(second.iter()).cloned().collect();
        merged.extend(lists.flat_map(|l| l.iter().cloned()));
        Some(sorted(merged))
    }

    fn publish(
        &mut self,
        current: &Snapshot,
        source: SourceId,
        status: SourceStatus,
        updated: Vec<(ServiceName, Option<Arc<[Instance]>>)>,
    ) {
        let mut next = current.clone();
        next.index = current.index + 1;
        next.sources.insert(source, status);
        let mut changed = Vec::with_capacity(updated.len());
        for (name, instances) in updated {
            let entry = instances.map(|instances| {
                Arc::new(ServiceEntry {
                    name: name.clone(),
                    instances,
                    modify_index: next.index,
                })
            });
            match &entry {
                Some(entry) => {
                    next.tombstones.remove(&name);
                    next.services.insert(name.clone(), entry.clone());
                }
                None => {
                    next.services.remove(&name);
                    next.tombstones.insert(name.clone(), next.index);
                }
            }
            changed.push((name, entry));
        }
        trim_tombstones(&mut next);

        let mut watchers = self.service_watchers.lock();
        self.snapshot_tx.send_replace(Arc::new(next));
        for (name, entry) in changed {
            if let Some(tx) = watchers.get(&name) {
                if tx.receiver_count() == 0 {
                    watchers.remove(&name);
                } else {
                    tx.send_replace(entry);
                }
            }
        }
    }
}

fn trim_tombstones(snapshot: &mut Snapshot) {
    while snapshot.tombstones.len() > TOMBSTONE_CAPACITY {
        let oldest = snapshot
            .tombstones
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(name, at)| (name.clone(), *at));
        let Some((name, at)) = oldest else { return };
        snapshot.tombstones.remove(&name);
        snapshot.tombstone_floor = snapshot.tombstone_floor.max(at);
    }
}

fn sorted(mut instances: Vec<Instance>) -> Arc<[Instance]> {
    instances.sort_by(|a, b| (&a.id, &a.node).cmp(&(&b.id, &b.node)));
    instances.into()
}
