//! Sidecar processes: each demo instance runs `meshplane sidecar` (this very binary) with its
//! descriptor, exactly as a user would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// One running sidecar.
pub struct Sidecar {
    /// Instance id.
    pub id: String,
    /// Log file (Envoy's and the sidecar's output).
    pub log: PathBuf,
    child: Child,
}

/// A free TCP port on 127.0.0.1 (bound and released; the demo owns the machine's loopback
/// for its lifetime, so the window for a collision is tiny).
pub fn free_port() -> anyhow::Result<u16> {
    // The kernel may hand a released port out again: never give the same one twice, so the
    // demo's listeners and Envoy admin ports cannot collide with each other.
    static GIVEN: parking_lot::Mutex<Vec<u16>> = parking_lot::Mutex::new(Vec::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let mut given = GIVEN.lock();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// Writes `descriptor` and starts `meshplane sidecar` for it, with its work directory
/// (bootstrap, SDS socket, certificate and key) under `dir`.
pub fn spawn(
    dir: &Path,
    id: &str,
    descriptor: &str,
    xds: SocketAddr,
    registry: SocketAddr,
    admin: SocketAddr,
) -> anyhow::Result<Sidecar> {
    let file = dir.join(format!("{id}.yaml"));
    std::fs::write(&file, descriptor)?;
    let log = dir.join(format!("{id}.log"));
    let out = std::fs::File::create(&log)?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("cannot find the meshplane binary")?;
    let admin_port = free_port()?;
    let child = Command::new(exe)
        .arg("sidecar")
        .arg("--descriptor")
        .arg(&file)
        .arg("--control-plane")
        .arg(xds.to_string())
        .arg("--registry")
        .arg(format!("http://{registry}"))
        .arg("--address")
        .arg("127.0.0.1")
        .arg("--ca-url")
        .arg(format!("http://{admin}"))
        .arg("--instance-id")
        .arg(id)
        .arg("--work-dir")
        .arg(dir.join(id))
        // The admin port, unique on this machine while the demo runs, is also the hot-restart
        // base id: two demos at once (same instance ids) must not share Envoy's.
        .args(["--admin-port", &admin_port.to_string()])
        .args(["--base-id", &admin_port.to_string()])
        .env("MESHPLANE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `meshplane sidecar`")?;
    Ok(Sidecar {
        id: id.to_owned(),
        log,
        child,
    })
}

impl Sidecar {
    /// SIGTERM (the sidecar deregisters and stops Envoy), then waits; SIGKILL after 15 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "sidecar {} exited with {status}", self.id);
            }
            Err(_) => {
                self.child.kill().await?;
                anyhow::bail!("sidecar {} did not stop within 15 s; killed", self.id);
            }
        }
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the sidecar's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}
