//! Process signals → sidecar controls: SIGTERM and SIGINT cancel the shutdown token;
//! SIGHUP asks for a hot restart (several SIGHUPs in a row coalesce into one).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Listens for signals until `shutdown` is cancelled. Returns the hot-restart requests.
pub fn install(shutdown: CancellationToken) -> std::io::Result<mpsc::Receiver<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (hot_restart_tx, hot_restart_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM: deregistering and stopping Envoy");
                    shutdown.cancel();
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: deregistering and stopping Envoy");
                    shutdown.cancel();
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: hot-restarting Envoy");
                    // Full means a restart is already pending: this one coalesces into it.
                    let _ = hot_restart_tx.try_send(());
                }
                _ = shutdown.cancelled() => return,
            }
        }
    });
    Ok(hot_restart_rx)
}
