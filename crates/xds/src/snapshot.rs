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

/// An immutable, consistent set of resources for one group.
#[derive(Debug, Clone)]
pub struct Snapshot {
    by_type: [ResourceMap; 5],
    digest: String,
    /// `version_of` each type's map, in `ResourceType::ALL` order.
    type_versions: [String; 5],
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
        let digest = digest_of(&by_type);
        let type_versions = std::array::from_fn(|i| version_of(&by_type[i]));
        let snapshot = Snapshot {
            by_type,
            digest,
            type_versions,
        };
        snapshot.check()?;
        Ok(snapshot)
    }

    /// Consistency check: every EDS resource a cluster references and every route
    /// configuration a listener references is present.
    pub fn check(&self) -> Result<(), SnapshotError> {
        for map in &self.by_type {
            for r in map.values() {
                for reference in r.references() {
                    if !self.by_type[reference.kind.index()].contains_key(&reference.name) {
                        return Err(SnapshotError::MissingReference {
                            from_kind: r.kind(),
                            from: r.name().to_owned(),
                            kind: reference.kind,
                            name: reference.name.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
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

fn digest_of(by_type: &[ResourceMap; 5]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (kind, map) in ResourceType::ALL.iter().zip(by_type) {
        hasher.update(kind.short_name().as_bytes());
        hasher.update(version_of(map).as_bytes());
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
