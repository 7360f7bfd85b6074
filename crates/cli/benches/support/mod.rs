//! What the Envoy benchmarks share: `meshplane sidecar` processes (reaped on drop), their
//! Envoys' CPU time from `/proc`, quantiles and the machine's description.

// Each benchmark uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshplane_runtime::ControlPlaneConfig;
use meshplane_runtime::control_plane::ControlPlane;

/// A sidecar that is not ready by then has failed.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A control plane on 127.0.0.1 ephemeral ports (xDS, admin, embedded registry) keeping its
/// data under `data_dir`.
pub fn loopback_config(data_dir: &Path) -> ControlPlaneConfig {
    ControlPlaneConfig {
        xds_addr: ([127, 0, 0, 1], 0).into(),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        registry_addr: ([127, 0, 0, 1], 0).into(),
        data_dir: data_dir.to_owned(),
        ..Default::default()
    }
}

/// The paced load of the latency benchmarks: `--rate N` a second, `--seconds N` per run,
/// `--rounds N`.
pub struct LoadArgs {
    pub rate: u32,
    pub seconds: u64,
    pub rounds: usize,
}

impl LoadArgs {
    /// From the process arguments (defaults: 250 a second, 6 s, 3 rounds).
    pub fn parse() -> LoadArgs {
        let mut args = LoadArgs {
            rate: 250,
            seconds: 6,
            rounds: 3,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            match flag.as_str() {
                "--rate" => args.rate = value().parse().expect("--rate N (a second)"),
                "--seconds" => args.seconds = value().parse().expect("--seconds N"),
                "--rounds" => args.rounds = value().parse().expect("--rounds N"),
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                other => panic!("unknown argument {other}; use --rate N --seconds N --rounds N"),
            }
        }
        args
    }
}

/// Runs a benchmark's `main` future on a multi-threaded runtime.
pub fn block_on<F: std::future::Future>(main: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(main)
}

pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `median (min–max)` of `values`.
pub fn spread(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let (Some(min), Some(max)) = (values.first(), values.last()) else {
        return "-".to_owned();
    };
    format!("{:.0} ({:.0}–{:.0})", values[values.len() / 2], min, max)
}

/// A `meshplane sidecar` process; stopped (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Sidecar {
    pub child: Child,
    pub envoy_pid: u32,
    pub admin: u16,
    pub access_log: PathBuf,
}

impl Sidecar {
    /// Starts `meshplane sidecar` for `id` with `descriptor`, files under `dir`, against the
    /// in-process control plane `cp`; returns once its Envoy runs.
    pub async fn spawn(
        envoy: &Path,
        dir: &Path,
        cp: &ControlPlane,
        id: &str,
        descriptor: &str,
    ) -> Sidecar {
        let file = dir.join(format!("{id}.yaml"));
        std::fs::write(&file, descriptor).expect("write descriptor");
        let log = std::fs::File::create(dir.join(format!("{id}.log"))).expect("log");
        let access_log = dir.join(format!("{id}-access.log"));
        let admin = free_port();
        let registry = cp.registry_addr.expect("embedded registry");
        let child = Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .arg("sidecar")
            .args(["--descriptor", &file.display().to_string()])
            .args(["--control-plane", &cp.xds_addr.to_string()])
            .args(["--instance-id", id])
            .args(["--admin-port", &admin.to_string()])
            .args(["--base-id", &admin.to_string()])
            .args(["--address", "127.0.0.1"])
            .args(["--ca-url", &format!("http://{}", cp.admin_addr)])
            .args(["--registry", &format!("http://{registry}")])
            .args(["--access-log", &access_log.display().to_string()])
            .args(["--work-dir", &dir.join(id).display().to_string()])
            .env("MESHPLANE_ENVOY", envoy)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("meshplane sidecar starts");
        let mut sidecar = Sidecar {
            child,
            envoy_pid: 0,
            admin,
            access_log,
        };
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(pid) = envoy_pid(sidecar.child.id()) {
                sidecar.envoy_pid = pid;
                return sidecar;
            }
            assert!(Instant::now() < end, "{id}: no Envoy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        meshplane_test_support::process::terminate(&mut self.child, Duration::from_secs(20));
        // The sidecar reaps its Envoy on SIGTERM; this only matters if it had to be killed.
        if let Some(pid) = rustix::process::Pid::from_raw(self.envoy_pid as i32)
            && Path::new(&format!("/proc/{}", self.envoy_pid)).exists()
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

pub fn free_port() -> u16 {
    meshplane_sidecar::envoy::free_loopback_port().expect("a free port on 127.0.0.1")
}

/// The Envoy a sidecar started: its child named `envoy`.
pub fn envoy_pid(sidecar: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{sidecar}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "envoy")
        })
}

/// `utime + stime` of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may contain spaces) start at field 3, `state`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Clock ticks a second (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "{} vCPU {cpu}, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    )
}
