//! The in-memory catalog: every registration, indexed for the HTTP API's reads and blocking
//! queries. Mutated only by the writer thread after a durable commit; read by HTTP handlers
//! and the check runner under a short read lock.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use meshplane_model::{Health, ServiceName};

use crate::registration::{CheckKind, Node, Registration};

/// A committed change, applied to the catalog after it is durable.
#[derive(Clone, Debug)]
pub enum Change {
    /// Insert or replace a registration (keyed by its service id).
    Put(Registration),
    /// Remove the registration with this service id.
    Delete(String),
    /// Write a key/value entry.
    KvPut(crate::kv::KvEntry),
    /// Remove a key.
    KvDelete(String),
    /// A TTL check was reported on; push its deadline without a status change.
    Touch {
        /// The TTL check.
        check_id: String,
        /// Its new deadline.
        deadline: Instant,
    },
}

/// Every registration plus the indexes Consul's API exposes.
#[derive(Debug)]
pub struct Catalog {
    node: Node,
    index: u64,
    services_index: u64,
    regs: BTreeMap<String, Registration>,
    by_name: BTreeMap<ServiceName, BTreeSet<String>>,
    /// Last index at which anything about a service name changed (kept after removal, so a
    /// blocking query on a vanished service still returns).
    name_index: HashMap<ServiceName, u64>,
    check_owner: HashMap<String, String>,
    ttl_deadline: HashMap<String, Instant>,
    critical_since: HashMap<String, Instant>,
    kv: BTreeMap<String, crate::kv::KvEntry>,
    /// Index of the last key/value write or delete (what KV reads block on).
    kv_index: u64,
}

// === impl Catalog ===

impl Catalog {
    /// A catalog holding `regs` and the key/value entries `kv`, loaded from disk at `index`.
    pub fn new(
        node: Node,
        index: u64,
        regs: Vec<Registration>,
        kv: Vec<crate::kv::KvEntry>,
    ) -> Self {
        let kv_index = kv.iter().map(|e| e.modify_index).max().unwrap_or(1);
        let mut catalog = Catalog {
            node,
            index: index.max(1),
            services_index: index.max(1),
            regs: BTreeMap::new(),
            by_name: BTreeMap::new(),
            name_index: HashMap::new(),
            check_owner: HashMap::new(),
            ttl_deadline: HashMap::new(),
            critical_since: HashMap::new(),
            kv: kv.into_iter().map(|e| (e.key.clone(), e)).collect(),
            kv_index,
        };
        let now = Instant::now();
        for reg in regs {
            catalog.put(reg, now);
        }
        catalog
    }

    /// The single node this registry represents.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// A key's entry.
    pub fn kv_get(&self, key: &str) -> Option<&crate::kv::KvEntry> {
        self.kv.get(key)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn kv_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a crate::kv::KvEntry> + 'a {
        self.kv
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// Index of the last key/value change (≥ 1).
    pub fn kv_index(&self) -> u64 {
        self.kv_index.max(1)
    }

    /// The last index used (≥ 1).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Index of the last registration or deregistration (what `/v1/catalog/services` blocks on).
    pub fn services_index(&self) -> u64 {
        self.services_index
    }

    /// Index of the last change touching `name` (what per-service queries block on).
    pub fn name_index(&self, name: &str) -> u64 {
        self.name_index
            .get(name)
            .copied()
            .unwrap_or(self.services_index)
            .max(1)
    }

    /// Service names changed after `index` (including ones now without instances).
    pub fn names_changed_since(&self, index: u64) -> Vec<ServiceName> {
        self.name_index
            .iter()
            .filter(|(_, at)| **at > index)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Service names with the union of their tags, as `/v1/catalog/services` lists them.
    pub fn services(&self) -> BTreeMap<&ServiceName, BTreeSet<&str>> {
        self.by_name
            .iter()
            .map(|(name, ids)| {
                let tags = ids
                    .iter()
                    .filter_map(|id| self.regs.get(id))
                    .flat_map(|r| r.service.tags.iter().map(String::as_str))
                    .collect();
                (name, tags)
            })
            .collect()
    }

    /// All registrations of one service, by id.
    pub fn instances(&self, name: &str) -> impl Iterator<Item = &Registration> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|id| self.regs.get(id))
    }

    /// Every registration, by service id.
    pub fn registrations(&self) -> impl Iterator<Item = &Registration> {
        self.regs.values()
    }

    /// The registration with this service id.
    pub fn registration(&self, id: &str) -> Option<&Registration> {
        self.regs.get(id)
    }

    /// The service id owning a check.
    pub fn check_owner(&self, check_id: &str) -> Option<&str> {
        self.check_owner.get(check_id).map(String::as_str)
    }

    /// When a TTL check expires unless reported on.
    pub fn ttl_deadline(&self, check_id: &str) -> Option<Instant> {
        self.ttl_deadline.get(check_id).copied()
    }

    /// TTL checks whose deadline has passed and are not already critical.
    pub fn expired_ttls(&self, now: Instant) -> Vec<String> {
        self.ttl_deadline
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .filter(|(id, _)| self.check_status(id) != Some(Health::Critical))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Services with a check critical for longer than its `DeregisterCriticalServiceAfter`.
    pub fn reapable(&self, now: Instant) -> Vec<String> {
        self.regs
            .values()
            .filter(|r| {
                r.checks.iter().any(|c| {
                    match (c.deregister_after, self.critical_since.get(&c.id)) {
                        (Some(after), Some(since)) => {
                            now.saturating_duration_since(*since) >= after
                        }
                        _ => false,
                    }
                })
            })
            .map(|r| r.service.id.to_string())
            .collect()
    }

    /// HTTP checks with their definition: `(check_id, url, interval, timeout, method, header)`.
    pub fn http_checks(&self) -> impl Iterator<Item = (&str, &CheckKind)> {
        self.regs
            .values()
            .flat_map(|r| r.checks.iter())
            .filter(|c| matches!(c.kind, CheckKind::Http { .. }))
            .map(|c| (c.id.as_str(), &c.kind))
    }

    fn check_status(&self, check_id: &str) -> Option<Health> {
        let owner = self.check_owner.get(check_id)?;
        self.regs
            .get(owner)?
            .checks
            .iter()
            .find(|c| c.id == check_id)
            .map(|c| c.status)
    }

    /// Applies committed changes; `index` is the last index they used.
    pub fn apply(&mut self, index: u64, changes: Vec<Change>) {
        let now = Instant::now();
        for change in changes {
            match change {
                Change::Put(reg) => {
                    let name = reg.service.name.clone();
                    // `/v1/catalog/services` lists names and tags: it changes when a
                    // registration is new, or renames or retags its service.
                    let listed =
                        |r: &Registration| (r.service.name.clone(), r.service.tags.clone());
                    if self.regs.get(reg.service.id.as_str()).map(listed) != Some(listed(&reg)) {
                        self.services_index = reg.modify_index.max(self.services_index);
                    }
                    self.name_index.insert(name, index);
                    self.put(reg, now);
                }
                Change::Delete(id) => {
                    if let Some(reg) = self.remove(&id) {
                        self.name_index.insert(reg.service.name, index);
                        self.services_index = index;
                    }
                }
                Change::Touch { check_id, deadline } => {
                    if self.check_owner.contains_key(&check_id) {
                        self.ttl_deadline.insert(check_id, deadline);
                    }
                }
                Change::KvPut(entry) => {
                    self.kv_index = index;
                    self.kv.insert(entry.key.clone(), entry);
                }
                Change::KvDelete(key) => {
                    self.kv_index = index;
                    self.kv.remove(&key);
                }
            }
        }
        self.index = self.index.max(index);
    }

    fn put(&mut self, reg: Registration, now: Instant) {
        let id = reg.service.id.to_string();
        let kept: BTreeSet<&str> = reg.checks.iter().map(|c| c.id.as_str()).collect();
        if let Some(old) = self.regs.get(&id) {
            let dropped: Vec<String> = old
                .checks
                .iter()
                .filter(|c| !kept.contains(c.id.as_str()))
                .map(|c| c.id.clone())
                .collect();
            if old.service.name != reg.service.name {
                if let Some(ids) = self.by_name.get_mut(&old.service.name) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_name.remove(&old.service.name);
                    }
                }
                self.name_index
                    .insert(old.service.name.clone(), reg.modify_index);
            }
            for check_id in dropped {
                self.forget_check(&check_id);
            }
        }
        for check in &reg.checks {
            self.check_owner.insert(check.id.clone(), id.clone());
            if let CheckKind::Ttl { ttl } = check.kind {
                self.ttl_deadline
                    .entry(check.id.clone())
                    .or_insert(now + ttl);
            }
            if check.status == Health::Critical {
                self.critical_since.entry(check.id.clone()).or_insert(now);
            } else {
                self.critical_since.remove(&check.id);
            }
        }
        self.by_name
            .entry(reg.service.name.clone())
            .or_default()
            .insert(id.clone());
        self.index = self.index.max(reg.modify_index);
        self.regs.insert(id, reg);
    }

    fn remove(&mut self, id: &str) -> Option<Registration> {
        let reg = self.regs.remove(id)?;
        for check in &reg.checks {
            self.forget_check(&check.id);
        }
        if let Some(ids) = self.by_name.get_mut(&reg.service.name) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_name.remove(&reg.service.name);
            }
        }
        Some(reg)
    }

    fn forget_check(&mut self, check_id: &str) {
        self.check_owner.remove(check_id);
        self.ttl_deadline.remove(check_id);
        self.critical_since.remove(check_id);
    }
}

/// The deadline of a TTL check reported on `now`.
pub fn ttl_deadline(kind: &CheckKind, now: Instant) -> Option<Instant> {
    match kind {
        CheckKind::Ttl { ttl } => Some(now + *ttl),
        CheckKind::Http { .. } => None,
    }
}
