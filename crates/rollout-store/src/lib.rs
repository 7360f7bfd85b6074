//! The egress rollout flags document, stored in Consul-style KV through the KV HTTP API: the
//! embedded registry's own KV (durable like its registrations) or a Consul's, so that every
//! control plane sharing it sees one document. [`RolloutStore`] is the handle the admin API
//! uses; it knows the keys, the stored shape and the KV calls, and nothing of HTTP routes.
//!
//! - The document lives at `meshplane/rollout/flags`; its version is the key's `ModifyIndex`
//!   (`0`: never written, the default document). Writes are check-and-set on that index
//!   (`?cas=`), so two concurrent writers can never lose an update: the second is told the
//!   document moved ([`WriteError::Stale`]).
//! - Every write carries its own change record (who, when, a summary, the document before) in
//!   the same value, so a change and its record are one atomic write; the record is then
//!   copied to `meshplane/rollout/audit/<previous version>-<ms>` for the audit log. Whoever
//!   follows the key (every control plane, [`RolloutStore::follow`]) copies a record that is
//!   missing, so a control plane dying between the two writes loses no audit entry.
//! - [`RolloutStore::follow`] keeps the current document in a `watch` channel with a blocking
//!   query on the key; the decisions route long-polls on it.
//!
//! Start at [`RolloutStore`]; the KV calls are in `kv.rs`, the change summary in `change.rs`.

mod change;
mod kv;
mod pinned;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use change::summary;
pub use kv::KvConfig;
use meshplane_rollout::Flags;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The key of the flags document.
pub const FLAGS_KEY: &str = "meshplane/rollout/flags";
/// The prefix of the audit log's entries.
pub const AUDIT_PREFIX: &str = "meshplane/rollout/audit/";

/// How long one blocking query on the flags key waits.
const FOLLOW_WAIT: Duration = Duration::from_secs(300);
/// Pause after a failed read before the next.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// Writes without an expected version retry a check-and-set lost to another writer this often.
const UNCONDITIONAL_ATTEMPTS: usize = 5;

/// The KV store could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The KV address or CA bundle is unusable.
    #[error("rollout flags storage: {0}")]
    Config(String),
    /// The KV API failed or answered something unexpected (unreachable, refused, not JSON).
    #[error("rollout flags storage unavailable: {0}")]
    Kv(String),
    /// A stored value is not a flags document (someone wrote the key by hand?).
    #[error("the value at {key} is not a flags document: {message}")]
    Corrupt {
        /// The KV key.
        key: String,
        /// Why it does not parse.
        message: String,
    },
}

/// A write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The document is no longer at the version the writer read: read it again, re-apply the
    /// change, write with the new version.
    #[error(
        "the flags document changed (now version {current}, expected {expected}): read it again and retry"
    )]
    Stale {
        /// The version the writer expected.
        expected: u64,
        /// The version now stored.
        current: u64,
    },
    /// The store is unavailable.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The flags document and its version (the KV `ModifyIndex`; `0` before the first write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Versioned {
    /// The document.
    pub flags: Flags,
    /// Its version, for `If-Match`.
    pub version: u64,
}

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The name the caller gave (`X-Meshplane-Actor`), else `token` or `anonymous`.
    pub name: String,
    /// The caller's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
}

/// What a write records next to the document it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Change {
    at: String,
    at_unix_ms: u64,
    actor: Actor,
    previous_version: u64,
    summary: Vec<String>,
    before: Flags,
}

/// One entry of the audit log: who changed the document when, what changed, and the document
/// before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, as an HTTP date (UTC).
    pub at: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Who.
    pub actor: Actor,
    /// The version the change was made on.
    pub previous_version: u64,
    /// One line per setting added, removed or changed.
    pub summary: Vec<String>,
    /// The document before.
    pub before: Flags,
    /// The document after.
    pub after: Flags,
}

/// The stored value: the document and the change that wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    flags: Flags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
}

impl Change {
    fn audit_key(&self) -> String {
        format!(
            "{AUDIT_PREFIX}{:020}-{:013}",
            self.previous_version, self.at_unix_ms
        )
    }

    fn entry(&self, after: &Flags) -> AuditEntry {
        AuditEntry {
            at: self.at.clone(),
            at_unix_ms: self.at_unix_ms,
            actor: self.actor.clone(),
            previous_version: self.previous_version,
            summary: self.summary.clone(),
            before: self.before.clone(),
            after: after.clone(),
        }
    }
}

/// The flags document in KV; cheap to clone (one shared KV client and watch channel).
#[derive(Clone)]
pub struct RolloutStore {
    kv: kv::Kv,
    current_tx: Arc<watch::Sender<Option<Arc<Versioned>>>>,
    /// Cancelled when [`RolloutStore::follow`] stops: long polls end then, instead of
    /// holding the control plane's shutdown until they time out.
    stopped: CancellationToken,
}

impl std::fmt::Debug for RolloutStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutStore").finish_non_exhaustive()
    }
}

impl RolloutStore {
    /// A store on the KV API at `config`; nothing is read until asked or followed.
    pub fn new(config: KvConfig) -> Result<RolloutStore, StoreError> {
        Ok(RolloutStore {
            kv: kv::Kv::new(config)?,
            current_tx: Arc::new(watch::Sender::new(None)),
            stopped: CancellationToken::new(),
        })
    }

    /// The document as last seen by [`RolloutStore::follow`] or a write through this store;
    /// `None` until the first read succeeded. Changes are announced on it.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Versioned>>> {
        self.current_tx.subscribe()
    }

    /// Resolves once [`RolloutStore::follow`] stopped (the control plane is shutting down).
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// Reads the document from KV now.
    pub async fn current(&self) -> Result<Versioned, StoreError> {
        let (value, _) = self.kv.get(FLAGS_KEY, None).await?;
        let (versioned, _) = parse(value.as_ref())?;
        Ok(versioned)
    }

    /// Replaces the document with `flags` (already validated by the caller), if it is still
    /// at version `expected` (any version when `None`), recording the change as `actor`'s.
    pub async fn write(
        &self,
        flags: Flags,
        expected: Option<u64>,
        actor: Actor,
    ) -> Result<Versioned, WriteError> {
        let attempts = if expected.is_some() {
            1
        } else {
            UNCONDITIONAL_ATTEMPTS
        };
        for _ in 0..attempts {
            let before = self.current().await?;
            if let Some(expected) = expected.filter(|e| *e != before.version) {
                return Err(WriteError::Stale {
                    expected,
                    current: before.version,
                });
            }
            let change = new_change(&before, &flags, actor.clone());
            let stored = Stored {
                flags: flags.clone(),
                change: Some(change.clone()),
            };
            let bytes = serde_json::to_vec(&stored).map_err(|e| StoreError::Kv(e.to_string()))?;
            if !self.kv.put_cas(FLAGS_KEY, bytes, before.version).await? {
                continue;
            }
            tracing::info!(
                actor = %change.actor.name,
                remote = change.actor.remote_address.as_deref().unwrap_or(""),
                changes = change.summary.len(),
                "rollout flags changed"
            );
            self.record(&change, &flags).await;
            // The version the write created: read back (a later writer may already have
            // moved it; then that is what the caller sees).
            let now = self.current().await?;
            self.publish(Arc::new(now.clone()));
            return Ok(now);
        }
        let current = self.current().await?.version;
        Err(WriteError::Stale {
            expected: expected.unwrap_or(current),
            current,
        })
    }

    /// The audit log, oldest first.
    pub async fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.kv
            .list(AUDIT_PREFIX)
            .await?
            .into_iter()
            .map(|v| {
                serde_json::from_slice(&v.value).map_err(|e| StoreError::Corrupt {
                    key: v.key.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Follows the document with blocking queries until `shutdown`, publishing every version
    /// to [`RolloutStore::subscribe`]'s receivers and copying a change record the audit log
    /// lacks. A KV outage keeps the last document.
    pub async fn follow(&self, shutdown: CancellationToken) {
        let _stopped = self.stopped.clone().drop_guard();
        let mut index = 0;
        let mut recorded = 0;
        let mut failing = false;
        loop {
            let read = tokio::select! {
                _ = shutdown.cancelled() => return,
                read = self.kv.get(FLAGS_KEY, (index > 0).then_some((index, FOLLOW_WAIT))) => read,
            };
            let outcome = read.and_then(|(value, new_index)| {
                let parsed = parse(value.as_ref())?;
                // An index going backwards (the KV store was reset) restarts the query.
                index = if new_index < index {
                    0
                } else {
                    new_index.max(1)
                };
                Ok(parsed)
            });
            match outcome {
                Ok((versioned, change)) => {
                    if failing {
                        tracing::info!("rollout flags storage reachable again");
                        failing = false;
                    }
                    // Once per version: a blocking query also returns when other keys move.
                    let copied = match change.filter(|_| versioned.version != recorded) {
                        Some(change) => self.record(&change, &versioned.flags).await,
                        None => true,
                    };
                    if copied {
                        recorded = versioned.version;
                    }
                    self.publish(Arc::new(versioned));
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the rollout flags; keeping the last document");
                        failing = true;
                    }
                    index = 0;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(FOLLOW_RETRY) => {}
                    }
                }
            }
        }
    }

    fn publish(&self, versioned: Arc<Versioned>) {
        self.current_tx.send_if_modified(|current| {
            if current.as_ref().is_some_and(|c| **c == *versioned) {
                return false;
            }
            *current = Some(versioned);
            true
        });
    }

    /// Copies a change record to the audit log unless it is there already (`cas=0`);
    /// `false` when the KV store could not be written (a later read retries).
    async fn record(&self, change: &Change, after: &Flags) -> bool {
        let entry = change.entry(after);
        let bytes = match serde_json::to_vec(&entry) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an audit entry");
                return true;
            }
        };
        match self.kv.put_cas(&change.audit_key(), bytes, 0).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the rollout audit entry; retrying on the next read");
                false
            }
        }
    }
}

fn new_change(before: &Versioned, after: &Flags, actor: Actor) -> Change {
    let now = SystemTime::now();
    let at_unix_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Change {
        at: httpdate::fmt_http_date(now),
        at_unix_ms,
        actor,
        previous_version: before.version,
        summary: summary(&before.flags, after),
        before: before.flags.clone(),
    }
}

/// The stored value as a document (the default one when absent) and its change record. A
/// bare flags document (written to the key by hand) is accepted too.
fn parse(value: Option<&kv::KvValue>) -> Result<(Versioned, Option<Change>), StoreError> {
    let Some(value) = value else {
        return Ok((
            Versioned {
                flags: Flags::default(),
                version: 0,
            },
            None,
        ));
    };
    let corrupt = |message: String| StoreError::Corrupt {
        key: value.key.clone(),
        message,
    };
    let json: serde_json::Value =
        serde_json::from_slice(&value.value).map_err(|e| corrupt(e.to_string()))?;
    let (flags, change) = match serde_json::from_value::<Stored>(json.clone()) {
        Ok(stored) => (stored.flags, stored.change),
        Err(_) => (
            Flags::from_json(json).map_err(|e| corrupt(e.to_string()))?,
            None,
        ),
    };
    flags.validate().map_err(|e| corrupt(e.to_string()))?;
    Ok((
        Versioned {
            flags,
            version: value.modify_index,
        },
        change,
    ))
}
