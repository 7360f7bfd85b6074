//! The supervision loop: one current Envoy, older epochs draining after hot restarts,
//! restarts with backoff after crashes, and the orderly stop (deregister, then stop Envoy).
//!
//! The loop owns all process state; child exits arrive as [`ExitReport`]s, signals as the
//! shutdown token and the hot-restart channel, so nothing here needs a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::announce::Announcer;
use crate::envoy::{EnvoyCommand, EnvoyExit, EnvoyProcess, ExitReport};
use crate::error::SidecarError;
use crate::registration::ServiceRegistration;
use crate::restart_policy::{AfterCrash, CrashWindow};
use crate::setup::Prepared;
use crate::status::{Outcome, SidecarStatus};

const DEREGISTER_ATTEMPTS: u32 = 3;

pub(crate) struct Supervisor {
    prepared: Prepared,
    command: EnvoyCommand,
    announcer: Announcer,
    registration: ServiceRegistration,
    exits_tx: mpsc::UnboundedSender<ExitReport>,
    exits_rx: mpsc::UnboundedReceiver<ExitReport>,
    current: Option<EnvoyProcess>,
    draining: Vec<EnvoyProcess>,
    next_epoch: u32,
    crashes: CrashWindow,
    crash_restarts: u32,
    /// Cancels the running announcement (the Envoy it waits for was replaced or stopped).
    announcing: Option<CancellationToken>,
    status_tx: watch::Sender<SidecarStatus>,
}

impl Supervisor {
    pub(crate) fn new(prepared: Prepared, status_tx: watch::Sender<SidecarStatus>) -> Self {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let announcer = Announcer {
            admin: crate::envoy::AdminClient::new(prepared.admin),
            registry: crate::registration::RegistryClient::with_roots(
                &prepared.config.registry,
                prepared.config.token.clone(),
                prepared.control_plane_roots.clone(),
            ),
            ready_timeout: prepared.config.ready_timeout,
            attempted: Arc::new(AtomicBool::new(false)),
            status_tx: status_tx.clone(),
        };
        Supervisor {
            command: prepared.envoy_command(),
            registration: prepared.registration(),
            crashes: CrashWindow::new(prepared.config.crash),
            prepared,
            announcer,
            exits_tx,
            exits_rx,
            current: None,
            draining: Vec::new(),
            next_epoch: 0,
            crash_restarts: 0,
            announcing: None,
            status_tx,
        }
    }

    /// Starts Envoy and supervises it until shutdown or until it keeps crashing.
    pub(crate) async fn run(
        mut self,
        shutdown: CancellationToken,
        mut hot_restart_rx: mpsc::Receiver<()>,
    ) -> Result<Outcome, SidecarError> {
        if let Err(e) = self.start(0) {
            self.stop().await;
            return Err(e);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(()) = hot_restart_rx.recv() => self.hot_restart(),
                Some(report) = self.exits_rx.recv() => {
                    match self.on_exit(report, &shutdown).await {
                        Ok(None) => {}
                        Ok(Some(outcome)) => {
                            self.stop().await;
                            return Ok(outcome);
                        }
                        Err(e) => {
                            self.stop().await;
                            return Err(e);
                        }
                    }
                }
            }
        }
        self.stop().await;
        Ok(Outcome::Stopped)
    }

    /// Spawns Envoy at `epoch` as the current one and announces it.
    fn start(&mut self, epoch: u32) -> Result<(), SidecarError> {
        let process = self
            .command
            .spawn(epoch, self.exits_tx.clone())
            .map_err(|error| SidecarError::Spawn {
                binary: self.command.binary.clone(),
                error,
            })?;
        tracing::info!(
            pid = process.pid,
            epoch,
            base_id = self.command.base_id,
            "Envoy started"
        );
        if let Some(old) = self.current.replace(process) {
            self.draining.push(old);
        }
        self.next_epoch = epoch + 1;
        if let Some(cancel) = self.announcing.take() {
            cancel.cancel();
        }
        let cancel = CancellationToken::new();
        self.announcing = Some(cancel.clone());
        let registration = self.registration.clone();
        tokio::spawn(self.announcer.clone().announce(epoch, registration, cancel));
        self.publish();
        Ok(())
    }

    /// SIGHUP: re-read the descriptor and start the next epoch; the old Envoy hands over its
    /// listeners, drains and exits by itself. A bad descriptor keeps the running Envoy.
    fn hot_restart(&mut self) {
        if self.current.is_none() {
            tracing::warn!("hot restart requested while Envoy is down; ignored");
            return;
        }
        // Log rotation: a moved access-log file is let go now rather than at the next check.
        self.command.access_log.reopen();
        match self.prepared.reload() {
            Ok(()) => self.registration = self.prepared.registration(),
            Err(e) => {
                tracing::error!(error = %e, "hot restart refused; the running Envoy keeps serving");
                return;
            }
        }
        let epoch = self.next_epoch;
        if let Err(e) = self.start(epoch) {
            tracing::error!(error = %e, "hot restart failed; the running Envoy keeps serving");
        }
    }

    /// Handles a child's exit: a draining epoch leaving is expected; the current one
    /// leaving is a crash, answered by a restart or, past the crash limit, by giving up.
    async fn on_exit(
        &mut self,
        report: ExitReport,
        shutdown: &CancellationToken,
    ) -> Result<Option<Outcome>, SidecarError> {
        let ExitReport { process, exit } = report;
        if self.current != Some(process) {
            self.draining.retain(|p| *p != process);
            tracing::info!(pid = process.pid, epoch = process.epoch, %exit, "previous Envoy exited");
            self.publish();
            return Ok(None);
        }
        tracing::warn!(pid = process.pid, epoch = process.epoch, %exit, "Envoy exited unexpectedly");
        self.current = None;
        if let Some(cancel) = self.announcing.take() {
            cancel.cancel();
        }
        self.publish();
        let delay = match self.crashes.record(Instant::now()) {
            AfterCrash::GiveUp => {
                tracing::error!(
                    crashes = self.crashes.count(),
                    window = ?self.prepared.config.crash.window,
                    "Envoy keeps crashing; giving up"
                );
                return Ok(Some(Outcome::EnvoyFailed(exit)));
            }
            AfterCrash::RestartAfter(delay) => delay,
        };
        tracing::info!(in_ = ?delay, "restarting Envoy");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(Some(Outcome::Stopped)),
        }
        // Older epochs would hold the base id's hot-restart sockets that epoch 0 needs.
        self.stop_processes(self.draining.clone()).await;
        self.crash_restarts += 1;
        self.start(0)?;
        Ok(None)
    }

    /// Deregisters (if a registration may have happened), then stops every Envoy.
    async fn stop(&mut self) {
        if let Some(cancel) = self.announcing.take() {
            cancel.cancel();
        }
        if self.announcer.attempted.load(Ordering::SeqCst) {
            self.deregister().await;
        }
        let all: Vec<EnvoyProcess> = self
            .current
            .take()
            .into_iter()
            .chain(self.draining.drain(..))
            .collect();
        self.stop_processes(all).await;
        self.prepared.cleanup();
        self.publish();
    }

    async fn deregister(&mut self) {
        let id = self.registration.instance_id();
        for attempt in 1..=DEREGISTER_ATTEMPTS {
            match self.announcer.registry.deregister(id).await {
                Ok(()) => {
                    tracing::info!(%id, "deregistered");
                    self.status_tx.send_modify(|s| s.registered = false);
                    return;
                }
                Err(e) => {
                    tracing::warn!(%id, attempt, error = %e, "deregistration failed");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        tracing::error!(%id, "could not deregister; the registry's health check will mark it critical");
    }

    /// SIGTERM to each process, SIGKILL to those still there after the stop timeout;
    /// returns once every one of them has been reaped.
    async fn stop_processes(&mut self, mut left: Vec<EnvoyProcess>) {
        for p in &left {
            p.terminate();
        }
        let deadline = tokio::time::Instant::now() + self.prepared.config.drain.stop_timeout;
        let mut killed = false;
        while !left.is_empty() {
            let report = if killed {
                self.exits_rx.recv().await
            } else {
                match tokio::time::timeout_at(deadline, self.exits_rx.recv()).await {
                    Ok(report) => report,
                    Err(_) => {
                        tracing::warn!(
                            count = left.len(),
                            "Envoy did not stop in time; killing it"
                        );
                        left.iter().for_each(EnvoyProcess::kill);
                        killed = true;
                        continue;
                    }
                }
            };
            let Some(ExitReport { process, exit }) = report else {
                return;
            };
            log_stopped(process, &exit);
            left.retain(|p| *p != process);
            self.draining.retain(|p| *p != process);
            if self.current == Some(process) {
                self.current = None;
            }
        }
    }

    fn publish(&self) {
        let current = self.current;
        let draining = self.draining.clone();
        let crash_restarts = self.crash_restarts;
        self.status_tx.send_modify(|s| {
            s.current = current;
            s.draining = draining;
            s.crash_restarts = crash_restarts;
        });
    }
}

fn log_stopped(process: EnvoyProcess, exit: &EnvoyExit) {
    tracing::info!(pid = process.pid, epoch = process.epoch, %exit, "Envoy stopped");
}
