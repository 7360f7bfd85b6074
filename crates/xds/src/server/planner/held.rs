//! What a proxy holds of one type, by name, without a per-stream copy of the names.
//!
//! A wildcard proxy of a 1,000-service mesh holds 1,000 clusters and 1,000 endpoint
//! assignments; every stream keeps what its proxy holds. An entry here is one pointer (16
//! bytes with its tag): to the resource that was sent, whose name and version the snapshot
//! already keeps, or, for what a reconnecting proxy reported, to a small record of its own.
//! Entries are ordered and looked up by that name, and a batch sent into an empty set is laid
//! out densely at once.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::resource::Resource;

/// What the proxy holds of one resource.
#[derive(Debug)]
pub(super) enum Held {
    /// Sent on this stream.
    Sent(Arc<Resource>),
    /// Reported by the proxy on reconnect (delta `initial_resource_versions`) with the version
    /// of the snapshot's resource of that name, which stands for the name and the version.
    /// Not sent on this stream: the proxy's copy may not be this content.
    ReportedCurrent(Arc<Resource>),
    /// Reported on reconnect with a version the snapshot does not have.
    Reported(Box<Reported>),
    /// Held, but must be sent again (a cluster using it was (re)created); the content is
    /// kept for clusters that are held while gone from the snapshot.
    Stale(Arc<Resource>),
    /// Held, must be sent again, and never sent on this stream (it was reported).
    StaleUnknown(Box<Arc<str>>),
}

/// A name and version a reconnecting proxy reported.
#[derive(Debug)]
pub(super) struct Reported {
    name: Arc<str>,
    version: Box<str>,
}

impl Held {
    /// What a reconnecting proxy reports holding; `current` is the snapshot's resource of
    /// that name, if any.
    pub(super) fn reported(name: &str, version: &str, current: Option<&Arc<Resource>>) -> Held {
        match current {
            Some(r) if r.version() == version => Held::ReportedCurrent(r.clone()),
            _ => Held::Reported(Box::new(Reported {
                name: current.map_or_else(|| Arc::from(name), |r| r.shared_name().clone()),
                version: version.into(),
            })),
        }
    }

    /// Reported, but due again before the proxy uses it.
    pub(super) fn stale_unknown(name: &str) -> Held {
        Held::StaleUnknown(Box::new(Arc::from(name)))
    }

    pub(super) fn name(&self) -> &str {
        match self {
            Held::Sent(r) | Held::ReportedCurrent(r) | Held::Stale(r) => r.name(),
            Held::Reported(reported) => &reported.name,
            Held::StaleUnknown(name) => name,
        }
    }

    pub(super) fn version(&self) -> &str {
        match self {
            Held::Sent(r) | Held::ReportedCurrent(r) => r.version(),
            Held::Reported(reported) => &reported.version,
            Held::Stale(_) | Held::StaleUnknown(_) => "",
        }
    }

    /// The content, when it was sent on this stream.
    pub(super) fn resource(&self) -> Option<&Arc<Resource>> {
        match self {
            Held::Sent(r) | Held::Stale(r) => Some(r),
            Held::ReportedCurrent(_) | Held::Reported(_) | Held::StaleUnknown(_) => None,
        }
    }

    /// Reported on reconnect and not due again.
    pub(super) fn is_reported(&self) -> bool {
        matches!(self, Held::ReportedCurrent(_) | Held::Reported(_))
    }

    /// Held and not due to be sent again.
    pub(super) fn fresh(&self) -> bool {
        !matches!(self, Held::Stale(_) | Held::StaleUnknown(_))
    }

    /// The same holding, due to be sent again.
    fn stale(self) -> Held {
        match self {
            Held::Sent(r) | Held::Stale(r) => Held::Stale(r),
            Held::ReportedCurrent(r) => Held::StaleUnknown(Box::new(r.shared_name().clone())),
            Held::Reported(reported) => Held::StaleUnknown(Box::new(reported.name)),
            Held::StaleUnknown(name) => Held::StaleUnknown(name),
        }
    }
}

// Entries are keyed by name: a set of them is a map from name to holding.
impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name().cmp(other.name())
    }
}

impl Borrow<str> for Held {
    fn borrow(&self) -> &str {
        self.name()
    }
}

/// What the proxy holds of one type, in name order.
#[derive(Debug, Default)]
pub(super) struct Holdings(BTreeSet<Held>);

impl Holdings {
    pub(super) fn get(&self, name: &str) -> Option<&Held> {
        self.0.get(name)
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Every holding, in name order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Held> {
        self.0.iter()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    pub(super) fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// Records that `resources` were sent, replacing what was held under their names.
    pub(super) fn sent(&mut self, resources: &[Arc<Resource>]) {
        if self.0.is_empty() {
            // A first sync: built in one go, the set's nodes are full.
            self.0 = resources.iter().cloned().map(Held::Sent).collect();
            return;
        }
        for r in resources {
            self.0.replace(Held::Sent(r.clone()));
        }
    }

    /// Marks the holding of `name`, if any, as due to be sent again.
    pub(super) fn mark_stale(&mut self, name: &str) {
        if let Some(held) = self.0.take(name) {
            self.0.insert(held.stale());
        }
    }

    /// Marks every holding as due to be sent again.
    pub(super) fn mark_all_stale(&mut self) {
        self.0 = std::mem::take(&mut self.0)
            .into_iter()
            .map(Held::stale)
            .collect();
    }
}

impl FromIterator<Held> for Holdings {
    fn from_iter<I: IntoIterator<Item = Held>>(iter: I) -> Self {
        Holdings(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_tagged_pointer() {
        assert_eq!(std::mem::size_of::<Held>(), 16);
    }

    #[test]
    fn holdings_are_keyed_by_name_and_replaced_by_a_new_send() {
        let a1 = Resource::empty_endpoints("a");
        let b = Resource::empty_endpoints("b");
        let mut held: Holdings = [Held::reported("a", "old", Some(&a1))]
            .into_iter()
            .collect();
        assert!(held.get("a").is_some_and(Held::is_reported));
        assert_eq!(held.get("a").map(Held::version), Some("old"));
        held.sent(&[b.clone(), a1.clone()]);
        assert_eq!(held.iter().map(Held::name).collect::<Vec<_>>(), ["a", "b"]);
        assert!(held.get("a").is_some_and(|h| h.resource().is_some()));
        held.mark_stale("a");
        assert_eq!(held.get("a").map(Held::version), Some(""));
        assert!(
            held.get("a")
                .is_some_and(|h| !h.fresh() && h.resource().is_some())
        );
        held.remove("b");
        assert!(!held.contains("b"));
        let mut reported: Holdings = [
            Held::reported("x", a1.version(), None),
            Held::reported("a", a1.version(), Some(&a1)),
        ]
        .into_iter()
        .collect();
        assert!(
            reported
                .get("a")
                .is_some_and(|h| h.is_reported() && h.resource().is_none())
        );
        reported.mark_all_stale();
        assert!(
            reported
                .iter()
                .all(|h| !h.fresh() && h.resource().is_none())
        );
        assert_eq!(
            reported.iter().map(Held::name).collect::<Vec<_>>(),
            ["a", "x"]
        );
    }
}
