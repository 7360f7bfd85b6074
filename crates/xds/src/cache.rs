//! Snapshots by group, with a watch channel per group.
//!
//! The cache owns content; the server (see [`crate::server`]) owns protocol state. They meet
//! at [`SnapshotCache::subscribe`]: a stream subscribes to its group and is woken whenever a
//! different snapshot is published for it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use crate::snapshot::{Snapshot, SnapshotError};

/// The key of a group: proxies whose relevant metadata is identical share one key, one
/// snapshot and one set of encoded resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey(Arc<str>);

impl GroupKey {
    /// A key from any string.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        GroupKey(key.into())
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a subscribed stream sees: `None` until the group's first snapshot is published.
pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

type SnapshotTx = watch::Sender<Option<Arc<Snapshot>>>;

/// Snapshots by group key.
///
/// Cheap to clone; all clones share the same groups. Locks are held only for map
/// look-ups, never across an `.await`.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    groups: Arc<RwLock<HashMap<GroupKey, SnapshotTx>>>,
    demand_tx: Option<mpsc::UnboundedSender<GroupKey>>,
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache that reports every group a stream subscribes to before any snapshot
    /// exists for it, so the owner can compute that group's snapshot on demand.
    pub fn with_demand() -> (Self, mpsc::UnboundedReceiver<GroupKey>) {
        let (demand_tx, demand_rx) = mpsc::unbounded_channel();
        let cache = SnapshotCache {
            groups: Default::default(),
            demand_tx: Some(demand_tx),
        };
        (cache, demand_rx)
    }

    /// Checks and publishes a snapshot for a group. Streams of the group are woken only if
    /// the content differs from the current snapshot (by digest).
    pub fn set_snapshot(
        &self,
        group: &GroupKey,
        snapshot: Snapshot,
    ) -> Result<bool, SnapshotError> {
        snapshot.check()?;
        let tx = self.sender(group);
        let changed = tx.send_if_modified(|current| match current {
            Some(c) if c.digest() == snapshot.digest() => false,
            _ => {
                // Streams in line with the current snapshot then diff only what changed.
                let next = match current {
                    Some(c) => snapshot.with_changes_from(c),
                    None => snapshot,
                };
                *current = Some(Arc::new(next));
                true
            }
        });
        Ok(changed)
    }

    /// The current snapshot of a group.
    pub fn snapshot(&self, group: &GroupKey) -> Option<Arc<Snapshot>> {
        let groups = self.groups.read();
        groups.get(group).and_then(|tx| tx.borrow().clone())
    }

    /// Subscribes to a group, creating it (empty) when it is unknown. A group without a
    /// snapshot is reported on the demand channel (see [`SnapshotCache::with_demand`]).
    pub fn subscribe(&self, group: &GroupKey) -> SnapshotRx {
        let rx = self.sender(group).subscribe();
        if rx.borrow().is_none()
            && let Some(demand_tx) = &self.demand_tx
        {
            let _ = demand_tx.send(group.clone());
        }
        rx
    }

    /// Groups that have a snapshot, with the number of streams subscribed to each.
    pub fn groups(&self) -> Vec<(GroupKey, usize)> {
        let groups = self.groups.read();
        let mut out: Vec<_> = groups
            .iter()
            .map(|(k, tx)| (k.clone(), tx.receiver_count()))
            .collect();
        out.sort();
        out
    }

    /// Drops a group's snapshot. Streams still subscribed keep the snapshot they have.
    pub fn remove(&self, group: &GroupKey) {
        let mut groups = self.groups.write();
        groups.remove(group);
    }

    /// Drops every group no stream subscribes to; returns the removed keys.
    pub fn prune_unwatched(&self) -> Vec<GroupKey> {
        let mut groups = self.groups.write();
        let unwatched: Vec<GroupKey> = groups
            .iter()
            .filter(|(_, tx)| tx.receiver_count() == 0)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &unwatched {
            groups.remove(k);
        }
        unwatched
    }

    fn sender(&self, group: &GroupKey) -> SnapshotTx {
        {
            let groups = self.groups.read();
            if let Some(tx) = groups.get(group) {
                return tx.clone();
            }
        }
        let mut groups = self.groups.write();
        groups
            .entry(group.clone())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }
}

impl fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("groups", &self.groups().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Resource;

    fn mk_snapshot(names: &[&str]) -> Snapshot {
        Snapshot::new(names.iter().map(|n| Resource::empty_endpoints(n))).expect("consistent")
    }

    #[test]
    fn subscribers_woken_only_on_real_change() {
        let cache = SnapshotCache::new();
        let g = GroupKey::new("g1");
        let mut rx = cache.subscribe(&g);
        assert!(rx.borrow_and_update().is_none());

        assert!(cache.set_snapshot(&g, mk_snapshot(&["a"])).expect("set"));
        assert!(rx.has_changed().expect("open"));
        rx.borrow_and_update();

        // Same content again: no wake-up.
        assert!(!cache.set_snapshot(&g, mk_snapshot(&["a"])).expect("set"));
        assert!(!rx.has_changed().expect("open"));

        assert!(
            cache
                .set_snapshot(&g, mk_snapshot(&["a", "b"]))
                .expect("set")
        );
        assert!(rx.has_changed().expect("open"));
    }

    #[test]
    fn demand_reports_groups_without_snapshot() {
        let (cache, mut demand_rx) = SnapshotCache::with_demand();
        let (g1, g2) = (GroupKey::new("g1"), GroupKey::new("g2"));
        cache.set_snapshot(&g2, mk_snapshot(&["x"])).expect("set");
        let _rx1 = cache.subscribe(&g1);
        let _rx2 = cache.subscribe(&g2);
        assert_eq!(demand_rx.try_recv().ok(), Some(g1));
        assert!(demand_rx.try_recv().is_err(), "g2 already has a snapshot");
    }

    #[test]
    fn groups_are_independent_and_prunable() {
        let cache = SnapshotCache::new();
        let (g1, g2) = (GroupKey::new("g1"), GroupKey::new("g2"));
        let rx1 = cache.subscribe(&g1);
        cache.set_snapshot(&g2, mk_snapshot(&["x"])).expect("set");
        assert!(!rx1.has_changed().expect("open"));
        assert_eq!(cache.groups(), vec![(g1.clone(), 1), (g2.clone(), 0)]);
        assert_eq!(cache.prune_unwatched(), vec![g2.clone()]);
        assert!(cache.snapshot(&g2).is_none());
        drop(rx1);
        assert_eq!(cache.prune_unwatched(), vec![g1]);
    }

    #[test]
    fn inconsistent_snapshot_is_refused_and_current_kept() {
        use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
        let cache = SnapshotCache::new();
        let g = GroupKey::new("g");
        cache.set_snapshot(&g, mk_snapshot(&["a"])).expect("set");
        let eds_cluster = Cluster {
            name: "payments".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            ..Default::default()
        };
        let err = Snapshot::new([Resource::cluster(&eds_cluster)]).expect_err("missing EDS");
        assert!(err.to_string().contains("payments"), "{err}");
        let current = cache.snapshot(&g).expect("kept");
        assert_eq!(current.len(), 1);
    }
}
