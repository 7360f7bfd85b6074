//! Announcing a new Envoy: wait until it is live (admin `/server_info`), then register the
//! instance, retrying while the registry is down. One announcement runs per Envoy start
//! (first start, restart after a crash, hot restart); re-registering is idempotent and
//! picks up a reloaded descriptor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::envoy::AdminClient;
use crate::registration::{RegistryClient, ServiceRegistration};
use crate::status::SidecarStatus;

/// What an announcement needs; cheap to clone into a task.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    pub admin: AdminClient,
    pub registry: RegistryClient,
    pub ready_timeout: Duration,
    /// Set once a registration may have reached the registry: shutdown then deregisters.
    pub attempted: Arc<AtomicBool>,
    pub status_tx: watch::Sender<SidecarStatus>,
}

impl Announcer {
    /// Waits until the Envoy at `epoch` is live, then registers; stops early when `cancel`
    /// fires.
    pub async fn announce(
        self,
        epoch: u32,
        registration: ServiceRegistration,
        cancel: CancellationToken,
    ) {
        if !self.wait_live(epoch, &cancel).await {
            return;
        }
        let id = registration.instance_id();
        tracing::info!(%id, port = registration.port, "Envoy is ready; registering");
        self.attempted.store(true, Ordering::SeqCst);
        if self
            .registry
            .register_until_done(&registration, &cancel)
            .await
        {
            tracing::info!(%id, "registered");
            self.status_tx.send_modify(|s| s.registered = true);
        }
    }

    /// Polls until Envoy is live (`true`) or `cancel` fires (`false`). Past `ready_timeout`
    /// it warns once and keeps polling: Envoy waits for the control plane.
    async fn wait_live(&self, epoch: u32, cancel: &CancellationToken) -> bool {
        let deadline = Instant::now() + self.ready_timeout;
        let mut warned = false;
        let mut pause = Duration::from_millis(50);
        loop {
            if self.admin.is_live(epoch).await {
                return true;
            }
            if !warned && Instant::now() >= deadline {
                warned = true;
                tracing::warn!(
                    after = ?self.ready_timeout,
                    "Envoy is not ready yet (it waits for its first clusters and listeners from \
                     the control plane: is --control-plane reachable?); not registering until it is"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return false,
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}
