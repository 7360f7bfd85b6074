//! One Envoy child: its command line, spawning, signals, and the report of its exit.
//!
//! Each child is awaited by its own task, which sends an [`ExitReport`] when it ends; the
//! supervisor keeps only the pid (to signal) and matches reports by pid. Children are
//! spawned with `kill_on_drop`, so dropping the runtime (e.g. a panicking test) reaps them,
//! and in their own process group, so a terminal's Ctrl-C reaches the sidecar first and it
//! can deregister before Envoy stops.
//!
//! A SIGKILLed sidecar leaves no orphaned Envoy holding its ports: Envoy asks the kernel for
//! SIGTERM when its parent dies (checked by the `meshplane` binary's
//! `envoy_dies_with_a_killed_sidecar` test). Envoy does so while starting, so a sidecar
//! killed within Envoy's first milliseconds can still leak it; closing that window would
//! need `prctl` in `pre_exec`, which is `unsafe` (forbidden here).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use rustix::process::{Pid, Signal};
use tokio::sync::mpsc;

use crate::access_log::AccessLogSink;
use crate::config::DrainTimes;

/// How often Envoy writes out buffered access-log lines (`--file-flush-interval-msec`).
pub const ACCESS_LOG_FLUSH_INTERVAL_MS: u64 = 1000;

/// How to start Envoy, minus the restart epoch.
#[derive(Debug, Clone)]
pub struct EnvoyCommand {
    /// The Envoy binary.
    pub binary: PathBuf,
    /// The bootstrap file.
    pub config_path: PathBuf,
    /// Hot-restart base id (the same for every epoch).
    pub base_id: u32,
    /// `--log-level`.
    pub log_level: String,
    /// `--concurrency`, if set.
    pub concurrency: Option<u32>,
    /// Drain and parent-shutdown times.
    pub drain: DrainTimes,
    /// Where every epoch's stdout (its access-log lines) is written.
    pub access_log: Arc<AccessLogSink>,
}

/// A running (or recently exited) Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvoyProcess {
    /// Process id.
    pub pid: u32,
    /// Hot-restart epoch it was started with.
    pub epoch: u32,
}

/// How an Envoy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvoyExit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// Waiting for it failed (it is gone either way).
    WaitFailed(String),
}

/// Sent by a child's wait task when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// Which child.
    pub process: EnvoyProcess,
    /// How it ended.
    pub exit: EnvoyExit,
}

// === impl EnvoyCommand ===

impl EnvoyCommand {
    /// Envoy's arguments for `epoch`.
    pub fn args(&self, epoch: u32) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-c".into(), self.config_path.clone().into()];
        let mut push = |flag: &str, value: String| {
            args.push(flag.into());
            args.push(value.into());
        };
        push("--base-id", self.base_id.to_string());
        push("--restart-epoch", epoch.to_string());
        push(
            "--drain-time-s",
            self.drain.drain_time.as_secs().max(1).to_string(),
        );
        push(
            "--parent-shutdown-time-s",
            self.drain.parent_shutdown_time.as_secs().max(1).to_string(),
        );
        push("--drain-strategy", "gradual".to_owned());
        // Access-log lines reach the sidecar within a second (Envoy's default is 10 s); a
        // flush is one write of everything buffered, so this costs nothing per request.
        push(
            "--file-flush-interval-msec",
            ACCESS_LOG_FLUSH_INTERVAL_MS.to_string(),
        );
        push("--log-level", self.log_level.clone());
        if let Some(c) = self.concurrency {
            push("--concurrency", c.to_string());
        }
        args
    }

    /// Starts Envoy at `epoch`; its exit is reported on `exits_tx`, its stdout goes to
    /// [`Self::access_log`] (its stderr, Envoy's own log, is the sidecar's).
    pub fn spawn(
        &self,
        epoch: u32,
        exits_tx: mpsc::UnboundedSender<ExitReport>,
    ) -> std::io::Result<EnvoyProcess> {
        let (stdout_rx, stdout_tx) = std::io::pipe()?;
        // Reading before Envoy exists is fine; if Envoy fails to start, the write end closes
        // with the command below and the reader ends.
        self.access_log.capture(stdout_rx, epoch)?;
        let mut child = tokio::process::Command::new(&self.binary)
            .args(self.args(epoch))
            .stdin(Stdio::null())
            .stdout(stdout_tx)
            .kill_on_drop(true)
            .process_group(0)
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("Envoy exited at once"))?;
        let process = EnvoyProcess { pid, epoch };
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => EnvoyExit::from(status),
                Err(e) => EnvoyExit::WaitFailed(e.to_string()),
            };
            // The receiver is gone only when the sidecar is; nothing to tell then.
            let _ = exits_tx.send(ExitReport { process, exit });
        });
        Ok(process)
    }
}

// === impl EnvoyProcess ===

impl EnvoyProcess {
    /// Asks Envoy to stop (SIGTERM).
    pub fn terminate(&self) {
        self.signal(Signal::TERM);
    }

    /// Stops Envoy at once (SIGKILL).
    pub fn kill(&self) {
        self.signal(Signal::KILL);
    }

    fn signal(&self, signal: Signal) {
        let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) else {
            return;
        };
        if let Err(e) = rustix::process::kill_process(pid, signal) {
            tracing::debug!(pid = self.pid, ?signal, error = %e, "cannot signal Envoy (already gone?)");
        }
    }
}

// === impl EnvoyExit ===

impl From<ExitStatus> for EnvoyExit {
    fn from(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => EnvoyExit::Code(code),
            (None, Some(signal)) => EnvoyExit::Signal(signal),
            (None, None) => EnvoyExit::WaitFailed(format!("unknown exit status {status}")),
        }
    }
}

impl EnvoyExit {
    /// The exit code a shell would report: the code, or 128 + signal.
    pub fn exit_code(&self) -> u8 {
        let code = match self {
            EnvoyExit::Code(c) => *c,
            EnvoyExit::Signal(s) => 128 + s,
            EnvoyExit::WaitFailed(_) => 1,
        };
        u8::try_from(code & 0xff).unwrap_or(1)
    }
}

impl std::fmt::Display for EnvoyExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvoyExit::Code(c) => write!(f, "exit code {c}"),
            EnvoyExit::Signal(s) => write!(f, "signal {s}"),
            EnvoyExit::WaitFailed(e) => write!(f, "unknown ({e})"),
        }
    }
}
