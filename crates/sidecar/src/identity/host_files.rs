//! Certificates the deployment puts on the host: loaded once, then polled.
//!
//! Files are compared by content, not modification time (a `rename` into place can keep
//! the old mtime, and some tools restore mtimes). A change is served only once the three
//! files form a valid set again: during a rotation the certificate is often replaced before
//! its key, and serving that half-written pair would break every connection.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::error::IdentityError;
use super::material::{Leaf, Material, Origins, display_time};
use super::sds::Publisher;

/// The three host files.
#[derive(Debug, Clone)]
pub(super) struct HostFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    origins: Origins,
}

/// What the poll loop remembers between polls.
#[derive(Debug)]
struct PollState {
    /// Digest of the files served now.
    served: u64,
    /// The problem last warned about (digest of the content or of the error), so each
    /// problem is logged once, not every poll.
    reported: Option<u64>,
    /// Whether the served certificate's expiry was warned about.
    expiry_reported: bool,
}

// === impl HostFiles ===

impl HostFiles {
    pub(super) fn new(cert: PathBuf, key: PathBuf, ca: PathBuf) -> Self {
        let origins = Origins {
            cert: format!("`{}`", cert.display()),
            key: format!("`{}`", key.display()),
            ca: format!("`{}`", ca.display()),
        };
        HostFiles {
            cert,
            key,
            ca,
            origins,
        }
    }

    /// Reads and checks the files.
    pub(super) async fn load(&self) -> Result<(Material, Leaf), IdentityError> {
        let material = self.read().await?;
        let leaf = material.check(&self.origins, SystemTime::now())?;
        Ok((material, leaf))
    }

    async fn read(&self) -> Result<Material, IdentityError> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|error| IdentityError::Read { path, error })
        };
        Ok(Material::new(
            read(self.cert.clone()).await?,
            read(self.key.clone()).await?,
            read(self.ca.clone()).await?,
        ))
    }

    /// Polls every `every` until `shutdown`, publishing each valid replacement. `served` is
    /// the digest of the material served now.
    pub(super) async fn watch(
        self,
        served: u64,
        every: Duration,
        publisher: Publisher,
        shutdown: CancellationToken,
    ) {
        let mut state = PollState {
            served,
            reported: None,
            expiry_reported: false,
        };
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.poll(&mut state, &publisher).await;
        }
    }

    async fn poll(&self, state: &mut PollState, publisher: &Publisher) {
        let material = match self.read().await {
            Ok(m) => m,
            Err(e) => {
                let problem = xxhash_rust::xxh3::xxh3_64(e.to_string().as_bytes());
                if state.reported.replace(problem) != Some(problem) {
                    tracing::warn!(error = %e, "host certificate files unreadable; still serving the previous certificate");
                }
                return;
            }
        };
        let digest = material.digest();
        if digest == state.served {
            state.reported = None;
            self.warn_if_expired(state, publisher);
            return;
        }
        let leaf = match material.check(&self.origins, SystemTime::now()) {
            Ok(leaf) => leaf,
            Err(e) => {
                if state.reported.replace(digest) != Some(digest) {
                    tracing::warn!(error = %e, "replaced host certificate files are not usable (yet); still serving the previous certificate");
                }
                return;
            }
        };
        match publisher.publish(&material, &leaf) {
            Ok(generation) => {
                *state = PollState {
                    served: digest,
                    reported: None,
                    expiry_reported: false,
                };
                tracing::info!(
                    identity = leaf.identity.as_deref().unwrap_or("-"),
                    serial = %leaf.serial_hex,
                    not_after = %display_time(leaf.not_after),
                    generation,
                    "serving the replaced host certificate"
                );
            }
            Err(e) => tracing::error!(error = %e, "cannot serve the replaced host certificate"),
        }
    }

    fn warn_if_expired(&self, state: &mut PollState, publisher: &Publisher) {
        let not_after = publisher.not_after();
        if !state.expiry_reported && not_after <= SystemTime::now() {
            state.expiry_reported = true;
            tracing::warn!(
                cert = %self.cert.display(),
                not_after = %display_time(not_after),
                "the host certificate has expired: peers will refuse it until the files are replaced"
            );
        }
    }
}
