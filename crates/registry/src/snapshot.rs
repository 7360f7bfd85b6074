use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use meshplane_model::{Instance, ServiceName};

use crate::{SourceId, SourceStatus};

/// One immutable, consistent view of the registry at an index. Cheap to clone through `Arc`;
/// services that did not change are shared between successive snapshots.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Monotonic index: bumped once per event that really changed something.
    pub index: u64,
    /// Every known service with at least one instance, merged across sources.
    pub services: BTreeMap<ServiceName, Arc<ServiceEntry>>,
    /// Status of every source that has reported.
    pub sources: BTreeMap<SourceId, SourceStatus>,
    /// Services removed recently, with the index of their removal.
    pub(crate) tombstones: BTreeMap<ServiceName, u64>,
    /// Changes at or before this index may have been forgotten from `tombstones`.
    pub(crate) tombstone_floor: u64,
}

/// A service and its instances, merged across sources and sorted by instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The service.
    pub name: ServiceName,
    /// Its instances, sorted by `(id, node)`.
    pub instances: Arc<[Instance]>,
    /// Index of the last change to this service.
    pub modify_index: u64,
}

/// What changed since an index, as answered by [`Snapshot::changed_since`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changes {
    /// The index is too old to say precisely: treat every service as changed.
    All,
    /// These services were added, modified or removed.
    Services(BTreeSet<ServiceName>),
}

// === impl Snapshot ===

impl Snapshot {
    /// The service's entry, if it has instances.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceEntry>> {
        self.services.get(name)
    }

    /// Every service added, modified or removed after `index` (so a consumer can recompute only
    /// what depends on them), or [`Changes::All`] if the store no longer remembers that far back.
    pub fn changed_since(&self, index: u64) -> Changes {
        if index < self.tombstone_floor {
            return Changes::All;
        }
        let changed = self
            .services
            .values()
            .filter(|s| s.modify_index > index)
            .map(|s| s.name.clone());
        let removed = self
            .tombstones
            .iter()
            .filter(|(_, at)| **at > index)
            .map(|(name, _)| name.clone());
        Changes::Services(changed.chain(removed).collect())
    }

    /// True once every source that has reported has delivered a full sync at least once
    /// (stale sources count: their last full state is still being served).
    pub fn is_synced(&self) -> bool {
        !self.sources.is_empty()
            && self
                .sources
                .values()
                .all(|s| !matches!(s, SourceStatus::Syncing))
    }

    /// True if any source is serving possibly out-of-date data.
    pub fn is_stale(&self) -> bool {
        self.sources.values().any(SourceStatus::is_stale)
    }

    /// Total number of instances across services.
    pub fn instance_count(&self) -> usize {
        self.services.values().map(|s| s.instances.len()).sum()
    }
}
