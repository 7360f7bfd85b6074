//! A group's complete configuration: every resource of every type, checked for
//! consistency before it is published.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::resource::{Resource, ResourceType};

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// A resource names another that the snapshot does not contain (a cluster's EDS
    /// resource, a listener's route configuration). Publishing it would leave Envoy
    /// warming forever; fix the translator that produced it.
    #[error("{from_kind} `{from}` references {kind} `{name}`, which is not in the snapshot")]
    MissingReference {
        /// Type of the referencing resource.
        from_kind: ResourceType,
        /// Name of the referencing resource.
        from: String,
        /// Type of the missing resource.
        kind: ResourceType,
        /// Name of the missing resource.
        name: String,
    },
    /// Two resources of one type share a name.
    #[error("two {kind} resources are named `{name}`; names must be unique per type")]
    DuplicateName {
        /// Type of the resources.
        kind: ResourceType,
        /// The duplicated name.
        name: String,
    },
}

/// Resources of one type, by name.
pub type ResourceMap = BTreeMap<String, Arc<Resource>>;

/// Builds the resource a proxy is sent for a name it subscribes to that its snapshot lacks,
/// or `None` to send nothing for it (see [`Snapshot::with_fallback`]).
pub type Fallback = Arc<dyn Fn(&str) -> Option<Arc<Resource>> + Send + Sync>;

/// An immutable, consistent set of resources for one group.
#[derive(Clone)]
pub struct Snapshot {
    by_type: [ResourceMap; 5],
    digest: String,
    /// `version_of` each type's map, in `ResourceType::ALL` order.
    type_versions: [String; 5],
    /// What changed since the snapshot published before this one, when known.
    changes: Option<Box<Changes>>,
    /// Per type, the resource for a subscribed name the snapshot lacks; none without it.
    fallbacks: [Option<Fallback>; 5],
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("by_type", &self.by_type)
            .field("digest", &self.digest)
            .field("type_versions", &self.type_versions)
            .field("changes", &self.changes)
            .field(
                "fallbacks",
                &self
                    .fallbacks
                    .iter()
                    .map(Option::is_some)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What changed between two snapshots of a group, per type: streams whose proxy is in line
/// with the older one diff only these names instead of everything they subscribe to.
#[derive(Debug, Clone, Default)]
struct Changes {
    /// The older snapshot's type versions.
    from: [String; 5],
    /// Per type, the names added, changed or removed.
    names: [Vec<String>; 5],
}

impl Snapshot {
    /// Builds a snapshot from resources and checks it (see [`Snapshot::check`]).
    pub fn new(resources: impl IntoIterator<Item = Arc<Resource>>) -> Result<Self, SnapshotError> {
        let mut by_type: [ResourceMap; 5] = Default::default();
        for r in resources {
            let map = &mut by_type[r.kind().index()];
            if map.contains_key(r.name()) {
                return Err(SnapshotError::DuplicateName {
                    kind: r.kind(),
                    name: r.name().to_owned(),
                });
            }
            map.insert(r.name().to_owned(), r);
        }
        let type_versions = std::array::from_fn(|i| version_of(&by_type[i]));
        let digest = digest_from_versions(&type_versions);
        let snapshot = Snapshot {
            by_type,
            digest,
            type_versions,
            changes: None,
            fallbacks: Default::default(),
        };
        snapshot.check()?;
        Ok(snapshot)
    }

    /// Consistency check: every EDS resource a cluster references and every route
    /// configuration a listener references is present.
    pub fn check(&self) -> Result<(), SnapshotError> {
        self.check_resources(self.by_type.iter().flat_map(BTreeMap::values))
    }

    fn check_resources<'a>(
        &self,
        resources: impl Iterator<Item = &'a Arc<Resource>>,
    ) -> Result<(), SnapshotError> {
        for r in resources {
            for reference in r.references() {
                if !self.by_type[reference.kind.index()].contains_key(&*reference.name) {
                    return Err(SnapshotError::MissingReference {
                        from_kind: r.kind(),
                        from: r.name().to_owned(),
                        kind: reference.kind,
                        name: reference.name.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// This snapshot with `upserts` added or replacing resources of the same type and name,
    /// checked like [`Snapshot::new`] and knowing what changed: the cost of a change to a few
    /// resources of a large group (a wildcard proxy's) without rebuilding the rest.
    pub fn with_upserts(
        &self,
        upserts: impl IntoIterator<Item = Arc<Resource>>,
    ) -> Result<Self, SnapshotError> {
        self.with_patch(upserts, [])
    }

    /// This snapshot without the resources named in `removals` (type and name; absent ones
    /// are ignored), then with `upserts` added or replacing resources of the same type and
    /// name: equal, versions and digest included, to [`Snapshot::new`] of the resulting set,
    /// checked like it, and knowing what changed (see [`Snapshot::with_upserts`]).
    pub fn with_patch(
        &self,
        upserts: impl IntoIterator<Item = Arc<Resource>>,
        removals: impl IntoIterator<Item = (ResourceType, String)>,
    ) -> Result<Self, SnapshotError> {
        let mut by_type = self.by_type.clone();
        let mut names: [Vec<String>; 5] = Default::default();
        let mut removed = false;
        for (kind, name) in removals {
            let i = kind.index();
            if by_type[i].remove(&name).is_some() {
                names[i].push(name);
                removed = true;
            }
        }
        for r in upserts {
            let i = r.kind().index();
            let changed = by_type[i]
                .get(r.name())
                .is_none_or(|old| old.version() != r.version());
            if changed {
                names[i].push(r.name().to_owned());
                by_type[i].insert(r.name().to_owned(), r);
            }
        }
        for n in &mut names {
            n.sort();
            n.dedup();
        }
        let type_versions = std::array::from_fn(|i| {
            if names[i].is_empty() {
                self.type_versions[i].clone()
            } else {
                version_of(&by_type[i])
            }
        });
        let snapshot = Snapshot {
            digest: digest_from_versions(&type_versions),
            by_type,
            type_versions,
            changes: Some(Box::new(Changes {
                from: self.type_versions.clone(),
                names,
            })),
            fallbacks: self.fallbacks.clone(),
        };
        if removed {
            // Anything left may have referenced what was removed.
            snapshot.check()?;
        } else if let Some(changes) = &snapshot.changes {
            // Only the upserts can reference something missing: nothing was removed.
            for (i, names) in changes.names.iter().enumerate() {
                snapshot
                    .check_resources(names.iter().filter_map(|n| snapshot.by_type[i].get(n)))?;
            }
        }
        Ok(snapshot)
    }

    /// This snapshot answering a subscription to a name of `kind` it lacks with
    /// `fallback`'s resource for that name, instead of with nothing. A state-of-the-world
    /// client cannot tell a resource missing from a response from one the response predates,
    /// so it waits for its own timer (gRPC's: 15 s) before concluding that the resource does
    /// not exist; a resource of that name is an answer at once. The same name must always
    /// give the same resource, and what it references must be in the snapshot or have a
    /// fallback itself. A fallback bounds what it answers (the names it accepts, how many):
    /// a client may subscribe to any names. Endpoints need none: a name the snapshot lacks gets an empty
    /// assignment. Kept by [`Snapshot::with_patch`] and [`Snapshot::with_upserts`]; not part
    /// of the digest.
    pub fn with_fallback(mut self, kind: ResourceType, fallback: Fallback) -> Self {
        self.fallbacks[kind.index()] = Some(fallback);
        self
    }

    /// The fallback's resource of `kind` for `name`, if the snapshot has a fallback for it.
    pub fn fallback(&self, kind: ResourceType, name: &str) -> Option<Arc<Resource>> {
        self.fallbacks[kind.index()].as_ref().and_then(|f| f(name))
    }

    /// Whether the snapshot has a fallback for `kind`.
    pub fn has_fallback(&self, kind: ResourceType) -> bool {
        self.fallbacks[kind.index()].is_some()
    }

    /// Records what changed since `previous` (the group's snapshot before this one), so
    /// streams in line with `previous` do work proportional to the change, not to the group.
    pub fn with_changes_from(mut self, previous: &Snapshot) -> Self {
        if self
            .changes
            .as_ref()
            .is_some_and(|c| c.from == previous.type_versions)
        {
            return self;
        }
        let mut changes = Changes {
            from: previous.type_versions.clone(),
            names: Default::default(),
        };
        for (i, names) in changes.names.iter_mut().enumerate() {
            if self.type_versions[i] != previous.type_versions[i] {
                *names = changed_names(&previous.by_type[i], &self.by_type[i]);
            }
        }
        self.changes = Some(Box::new(changes));
        self
    }

    /// The names of `kind` that changed since a snapshot whose version of `kind` was
    /// `from`; `None` when this snapshot does not know (diff everything instead).
    pub(crate) fn changed_since(&self, kind: ResourceType, from: &str) -> Option<&[String]> {
        let changes = self.changes.as_ref()?;
        (changes.from[kind.index()] == from).then(|| &*changes.names[kind.index()])
    }

    /// Resources of one type.
    pub fn resources(&self, kind: ResourceType) -> &ResourceMap {
        &self.by_type[kind.index()]
    }

    /// The version of every resource of one type (changes iff any of them changes).
    pub(crate) fn type_version(&self, kind: ResourceType) -> &str {
        &self.type_versions[kind.index()]
    }

    /// One resource.
    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.by_type[kind.index()].get(name)
    }

    /// Total number of resources.
    pub fn len(&self) -> usize {
        self.by_type.iter().map(BTreeMap::len).sum()
    }

    /// True when the snapshot holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A digest of every resource's name and version, per type and overall: the same
    /// content always gives the same digest (used by consistency checks across instances).
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// Names present in only one of two maps, or with another version: one merge walk, with
/// shared resources (the same `Arc`) compared by pointer.
fn changed_names(old: &ResourceMap, new: &ResourceMap) -> Vec<String> {
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some((n, _)), None) => {
                out.push((*n).clone());
                a.next();
            }
            (None, Some((n, _))) => {
                out.push((*n).clone());
                b.next();
            }
            (Some((na, ra)), Some((nb, rb))) => match na.cmp(nb) {
                std::cmp::Ordering::Less => {
                    out.push((*na).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push((*nb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if !Arc::ptr_eq(ra, rb) && ra.version() != rb.version() {
                        out.push((*na).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

fn digest_from_versions(type_versions: &[String; 5]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (kind, version) in ResourceType::ALL.iter().zip(type_versions) {
        hasher.update(kind.short_name().as_bytes());
        hasher.update(version.as_bytes());
    }
    format!("{:016x}", hasher.digest())
}

/// The version of a set of resources: a hash of their names and versions. Used as the
/// SotW `version_info` and the delta `system_version_info`.
pub(crate) fn version_of(resources: &ResourceMap) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, r) in resources {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(r.version().as_bytes());
        hasher.update(&[0]);
    }
    format!("{:016x}", hasher.digest())
}

#[cfg(test)]
mod tests;
