use std::{collections::BTreeMap, fmt, sync::Arc};

use meshplane_model::{Instance, ServiceName};

/// Names one registry source (`embedded`, `consul`, `file`, …). Each source's contribution is
/// kept separately so a resync of one never disturbs another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(Arc<str>);

/// What a source reports about itself; drives readiness and the "stale" flag.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SourceStatus {
    /// Started, first full sync not yet delivered.
    #[default]
    Syncing,
    /// Delivered at least one full sync and is currently up to date.
    Synced,
    /// Lost contact with its backend. Its last known state is kept and served, flagged stale.
    Stale {
        /// Human-readable reason, e.g. the last connection error.
        reason: String,
    },
}

/// One change from one source. The store applies events in order.
///
/// A source starts with [`RegistryEvent::Replace`] (a full list, applied atomically — services
/// the source no longer reports disappear in the same step, so a relist never leaks stale
/// instances), then sends [`RegistryEvent::Service`] for each service that changes.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryEvent {
    /// Replace everything `source` contributes with `services`, atomically. Also marks the
    /// source [`SourceStatus::Synced`].
    Replace {
        /// The reporting source.
        source: SourceId,
        /// Its complete state: every service and all of its instances.
        services: BTreeMap<ServiceName, Vec<Instance>>,
    },
    /// Replace the instances `source` contributes to one service. An empty list removes them.
    Service {
        /// The reporting source.
        source: SourceId,
        /// The service concerned.
        name: ServiceName,
        /// Its complete instance list from this source.
        instances: Vec<Instance>,
    },
    /// The source's health changed (e.g. Consul unreachable → `Stale`, reconnected → `Synced`).
    /// State is never dropped because of this event.
    Status {
        /// The reporting source.
        source: SourceId,
        /// Its new status.
        status: SourceStatus,
    },
}

// === impl SourceId ===

impl SourceId {
    /// Names a source.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl SourceStatus ===

impl SourceStatus {
    /// Whether the source's data may be out of date.
    pub fn is_stale(&self) -> bool {
        matches!(self, SourceStatus::Stale { .. })
    }
}

// === impl RegistryEvent ===

impl RegistryEvent {
    /// The source that emitted this event.
    pub fn source(&self) -> &SourceId {
        match self {
            RegistryEvent::Replace { source, .. }
            | RegistryEvent::Service { source, .. }
            | RegistryEvent::Status { source, .. } => source,
        }
    }
}
