//! The single writer: a dedicated thread that turns operations into durable commits.
//!
//! Operations queue on a channel; the thread takes everything queued (up to [`MAX_BATCH`]),
//! computes the new registrations against the catalog, commits them in one redb transaction
//! (one fsync for the whole batch — group commit), then publishes them to the catalog and only
//! then answers each caller. Readers therefore never see a change that is not on disk, and a
//! caller never gets a 200 for one that is not.

use std::{collections::HashMap, sync::Arc, time::Instant};

use meshplane_model::Health;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    catalog::{Catalog, Change, ttl_deadline},
    db::Db,
    decode::RegisterRequest,
    kv::KvEntry,
    registration::{Check, CheckKind, Registration},
};

/// Most operations committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// A change requested of the registry.
#[derive(Debug)]
pub enum Op {
    /// Register (or re-register) a service and its checks.
    Register {
        /// The decoded request.
        request: RegisterRequest,
        /// Consul's `replace-existing-checks`: drop checks missing from the request.
        replace_existing_checks: bool,
    },
    /// Deregister a service by id.
    Deregister(String),
    /// A TTL report from a client (`/v1/agent/check/{pass,warn,fail}`).
    TtlUpdate {
        /// The TTL check.
        check_id: String,
        /// New status.
        status: Health,
        /// The `note`.
        output: String,
    },
    /// A result from the registry's own checking (HTTP run, TTL expiry).
    CheckResult {
        /// The check.
        check_id: String,
        /// New status.
        status: Health,
        /// Output.
        output: String,
        /// For TTL expiry: only apply if the deadline really passed (a report may have raced).
        ttl_expiry: bool,
    },
    /// Deregister a service whose check stayed critical too long, if that is still true.
    Reap(String),
    /// Write a key (`PUT /v1/kv/:key`); with `cas`, only if its modify index is that (0: only
    /// if absent), else [`OpError::CasMismatch`].
    KvPut {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Consul's opaque flags.
        flags: u64,
        /// Check-and-set index.
        cas: Option<u64>,
    },
    /// Remove a key, or every key under a prefix (`DELETE /v1/kv/:key`); `cas` as for
    /// [`Op::KvPut`] (single keys only).
    KvDelete {
        /// The key or prefix.
        key: String,
        /// Every key starting with `key`.
        recurse: bool,
        /// Check-and-set index.
        cas: Option<u64>,
    },
}

/// Why an operation was refused. Mapped to HTTP statuses in one place (`http::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// No service has this id.
    #[error(
        "Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name."
    )]
    UnknownService(String),
    /// No check has this id.
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    /// pass/warn/fail was sent to a check that is not a TTL check.
    #[error("CheckID {0:?} does not have associated TTL; only TTL checks accept pass/warn/fail")]
    NotTtl(String),
    /// The commit failed; nothing was written.
    #[error("{0}")]
    Storage(String),
    /// The registry is shutting down.
    #[error("the registry is shutting down; retry against another instance")]
    ShuttingDown,
    /// A `cas` write whose index no longer matches: nothing was written (Consul answers
    /// `false`).
    #[error("the key changed since index {0}")]
    CasMismatch(u64),
}

/// A queued operation and where to send its outcome.
#[derive(Debug)]
pub struct Command {
    /// The operation.
    pub op: Op,
    /// Receives the outcome once it is durable (or refused).
    pub reply: Option<oneshot::Sender<Result<(), OpError>>>,
}

/// Everything the writer thread owns.
pub struct WriterThread {
    pub db: Db,
    pub catalog: Arc<RwLock<Catalog>>,
    pub index_tx: watch::Sender<u64>,
    pub commands: mpsc::Receiver<Command>,
}

/// The pending view of one batch: registrations changed so far (None = deleted).
struct Batch<'a> {
    catalog: &'a Catalog,
    overlay: HashMap<String, Option<Registration>>,
    /// Key/value entries written (Some) or deleted (None) so far in this batch.
    kv_overlay: HashMap<String, Option<KvEntry>>,
    changes: Vec<Change>,
    index: u64,
}

// === impl WriterThread ===

impl WriterThread {
    /// Runs until every command sender is dropped.
    pub fn run(mut self) {
        while let Some(first) = self.commands.blocking_recv() {
            let mut commands = vec![first];
            while commands.len() < MAX_BATCH {
                match self.commands.try_recv() {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            self.process(commands);
        }
    }

    fn process(&mut self, commands: Vec<Command>) {
        let catalog = self.catalog.read();
        let mut batch = Batch {
            catalog: &catalog,
            overlay: HashMap::new(),
            kv_overlay: HashMap::new(),
            changes: Vec::new(),
            index: catalog.index(),
        };
        let mut outcomes = Vec::with_capacity(commands.len());
        for command in commands {
            let outcome = batch.apply(command.op);
            outcomes.push((command.reply, outcome));
        }
        let (index, changes) = (batch.index, batch.changes);
        let base = catalog.index();
        drop(catalog);

        let durable = changes.iter().any(|c| !matches!(c, Change::Touch { .. }));
        if durable && let Err(e) = self.db.commit(index, &changes) {
            tracing::error!(error = %e, "registry commit failed; nothing from this batch was applied");
            for (reply, outcome) in outcomes {
                let failed = outcome.and(Err(OpError::Storage(e.to_string())));
                if let Some(reply) = reply {
                    let _ = reply.send(failed);
                }
            }
            return;
        }
        if !changes.is_empty() {
            let mut catalog = self.catalog.write();
            catalog.apply(index, changes);
        }
        if index > base {
            self.index_tx.send_replace(index);
        }
        for (reply, outcome) in outcomes {
            if let Some(reply) = reply {
                // The caller may have gone away (client disconnected); the change stands.
                let _ = reply.send(outcome);
            }
        }
    }
}

// === impl Batch ===

impl Batch<'_> {
    fn apply(&mut self, op: Op) -> Result<(), OpError> {
        match op {
            Op::Register {
                request,
                replace_existing_checks,
            } => {
                self.register(request, replace_existing_checks);
                Ok(())
            }
            Op::Deregister(id) => {
                if self.get(&id).is_none() {
                    return Err(OpError::UnknownService(id));
                }
                self.delete(id);
                Ok(())
            }
            Op::TtlUpdate {
                check_id,
                status,
                output,
            } => self.update_check(&check_id, status, output, true),
            Op::CheckResult {
                check_id,
                status,
                output,
                ttl_expiry,
            } => {
                if ttl_expiry {
                    let expired = self
                        .catalog
                        .ttl_deadline(&check_id)
                        .is_some_and(|d| d <= Instant::now());
                    let touched = self.changes.iter().any(
                        |c| matches!(c, Change::Touch { check_id: id, .. } if *id == check_id),
                    );
                    if !expired || touched {
                        return Ok(());
                    }
                }
                match self.update_check(&check_id, status, output, false) {
                    // The service may have been deregistered meanwhile: nothing to do.
                    Err(OpError::UnknownCheck(_)) => Ok(()),
                    other => other,
                }
            }
            Op::Reap(id) => {
                if self.get(&id).is_some() && self.catalog.reapable(Instant::now()).contains(&id) {
                    tracing::info!(service_id = %id, "deregistering service critical for longer than DeregisterCriticalServiceAfter");
                    self.delete(id);
                }
                Ok(())
            }
            Op::KvPut {
                key,
                value,
                flags,
                cas,
            } => {
                let current = self.kv_get(&key).cloned();
                let current_index = current.as_ref().map_or(0, |e| e.modify_index);
                if let Some(cas) = cas
                    && cas != current_index
                {
                    return Err(OpError::CasMismatch(cas));
                }
                let index = self.next_index();
                let entry = KvEntry {
                    create_index: current.map_or(index, |e| e.create_index),
                    modify_index: index,
                    key: key.clone(),
                    value,
                    flags,
                };
                self.kv_overlay.insert(key, Some(entry.clone()));
                self.changes.push(Change::KvPut(entry));
                Ok(())
            }
            Op::KvDelete { key, recurse, cas } => {
                if let Some(cas) = cas {
                    let current_index = self.kv_get(&key).map_or(0, |e| e.modify_index);
                    if cas != current_index {
                        return Err(OpError::CasMismatch(cas));
                    }
                }
                let keys: Vec<String> = if recurse {
                    let mut keys: Vec<String> = self
                        .catalog
                        .kv_prefix(&key)
                        .map(|e| e.key.clone())
                        .chain(
                            self.kv_overlay
                                .keys()
                                .filter(|k| k.starts_with(&key))
                                .cloned(),
                        )
                        .collect();
                    keys.sort();
                    keys.dedup();
                    keys
                } else {
                    vec![key]
                };
                let keys: Vec<String> = keys
                    .into_iter()
                    .filter(|k| self.kv_get(k).is_some())
                    .collect();
                if !keys.is_empty() {
                    self.next_index();
                }
                for key in keys {
                    self.kv_overlay.insert(key.clone(), None);
                    self.changes.push(Change::KvDelete(key));
                }
                Ok(())
            }
        }
    }

    fn kv_get(&self, key: &str) -> Option<&KvEntry> {
        match self.kv_overlay.get(key) {
            Some(pending) => pending.as_ref(),
            None => self.catalog.kv_get(key),
        }
    }

    fn get(&self, id: &str) -> Option<&Registration> {
        match self.overlay.get(id) {
            Some(pending) => pending.as_ref(),
            None => self.catalog.registration(id),
        }
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn put(&mut self, reg: Registration) {
        self.overlay
            .insert(reg.service.id.to_string(), Some(reg.clone()));
        self.changes.push(Change::Put(reg));
    }

    fn delete(&mut self, id: String) {
        self.next_index();
        self.overlay.insert(id.clone(), None);
        self.changes.push(Change::Delete(id));
    }

    fn register(&mut self, request: RegisterRequest, replace_existing_checks: bool) {
        let id = request.service.id.to_string();
        let old = self.get(&id).cloned();
        let mut checks: Vec<Check> = Vec::new();
        for spec in request.checks {
            let previous = old
                .as_ref()
                .and_then(|o| o.checks.iter().find(|c| c.id == spec.id));
            let (status, output, create_index, modify_index) = match previous {
                // Re-registering keeps the status of a check of the same kind.
                Some(p) if p.kind.type_name() == spec.kind.type_name() => {
                    (p.status, p.output.clone(), p.create_index, p.modify_index)
                }
                _ => (spec.status, String::new(), 0, 0),
            };
            checks.push(Check {
                id: spec.id,
                name: spec.name,
                kind: spec.kind,
                deregister_after: spec.deregister_after,
                notes: spec.notes,
                status,
                output,
                create_index,
                modify_index,
            });
        }
        if !replace_existing_checks && let Some(old) = &old {
            for c in &old.checks {
                if !checks.iter().any(|n| n.id == c.id) {
                    checks.push(c.clone());
                }
            }
        }
        if let Some(old) = &old
            && old.service == request.service
            && old.checks.iter().map(def_of).eq(checks.iter().map(def_of))
        {
            return; // identical re-registration: no new index, watchers stay asleep
        }
        let index = self.next_index();
        for c in &mut checks {
            if c.create_index == 0 {
                c.create_index = index;
                c.modify_index = index;
            }
        }
        self.put(Registration {
            service: request.service,
            checks,
            create_index: old.as_ref().map_or(index, |o| o.create_index),
            modify_index: index,
        });
    }

    fn update_check(
        &mut self,
        check_id: &str,
        status: Health,
        output: String,
        from_client: bool,
    ) -> Result<(), OpError> {
        let owner = self
            .owner(check_id)
            .ok_or_else(|| OpError::UnknownCheck(check_id.to_string()))?;
        let Some(mut reg) = self.get(&owner).cloned() else {
            return Err(OpError::UnknownCheck(check_id.to_string()));
        };
        let Some(check) = reg.checks.iter_mut().find(|c| c.id == check_id) else {
            return Err(OpError::UnknownCheck(check_id.to_string()));
        };
        if from_client {
            let Some(deadline) = ttl_deadline(&check.kind, Instant::now()) else {
                return Err(OpError::NotTtl(check_id.to_string()));
            };
            self.changes.push(Change::Touch {
                check_id: check_id.to_string(),
                deadline,
            });
        }
        if check.status == status && check.output == output {
            return Ok(());
        }
        check.status = status;
        check.output = output;
        let index = self.next_index();
        check.modify_index = index;
        self.put(reg);
        Ok(())
    }

    fn owner(&self, check_id: &str) -> Option<String> {
        for (id, reg) in &self.overlay {
            if reg
                .as_ref()
                .is_some_and(|r| r.checks.iter().any(|c| c.id == check_id))
            {
                return Some(id.clone());
            }
        }
        let owner = self.catalog.check_owner(check_id)?;
        // Changed in this batch but the check is no longer there: gone.
        (!self.overlay.contains_key(owner)).then(|| owner.to_string())
    }
}

/// The parts of a check that come from its definition (not its status).
fn def_of(c: &Check) -> (&str, &str, &CheckKind, Option<std::time::Duration>, &str) {
    (&c.id, &c.name, &c.kind, c.deregister_after, &c.notes)
}
