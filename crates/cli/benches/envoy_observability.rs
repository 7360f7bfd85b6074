//! What tracing and access logging cost per request in Envoy: a caller's sidecar (`orders`,
//! egress to `payments`) and the callee's (`payments`), over mTLS, under a constant load like
//! the demo's (one client, one kept-alive connection, requests one after the other, paced),
//! in five configurations: nothing, `access_log: all`, tracing at 100 % to a real OTLP
//! receiver (`tests/otlp/receiver.py`, with the project's venv), both, and tracing at the
//! default 1 % (what a request that is not sampled costs).
//!
//!     cargo bench -p meshplane --bench envoy_observability
//!     cargo bench -p meshplane --bench envoy_observability -- --rate 250 --seconds 6 --rounds 3
//!
//! Each configuration has its own control plane (in this process; a collector only for the
//! traced ones) and its own two `meshplane sidecar` processes (the binary built with this
//! bench) running the real Envoy (`MESHPLANE_ENVOY`, `PATH`, or `.tools/envoy`), access logs
//! to a file (`--access-log PATH`). The rounds run the configurations in turn, each round
//! starting with the next one (so drift in the machine's load spreads over all of them); a
//! run sends `--rate` requests a second
//! for `--seconds` and measures, per request, the client's latency (p50, p99) and the CPU
//! time of each Envoy (`utime + stime` of `/proc/<pid>/stat` over the run, divided by the
//! requests). "Added" is a configuration's figure minus the same round's `nothing`. Every
//! process started is reaped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use meshplane_runtime::ControlPlaneConfig;
use meshplane_runtime::control_plane::{self, ControlPlane};
use otlp::Receiver;
use tokio_util::sync::CancellationToken;

/// The tracing tests' OTLP receiver (one implementation for tests and benchmark).
#[path = "../tests/support/otlp.rs"]
mod otlp;
/// A sidecar that is not ready by then has failed.
const DEADLINE: Duration = Duration::from_secs(60);

/// One configuration of both sidecars.
#[derive(Clone, Copy)]
struct Setup {
    name: &'static str,
    access_log: bool,
    /// `--tracing-sampling` of a control plane with a collector; `None`: no collector.
    tracing: Option<&'static str>,
}

const SETUPS: [Setup; 5] = [
    Setup {
        name: "nothing",
        access_log: false,
        tracing: None,
    },
    Setup {
        name: "access_log: all",
        access_log: true,
        tracing: None,
    },
    Setup {
        name: "tracing 100 %",
        access_log: false,
        tracing: Some("100"),
    },
    Setup {
        name: "both",
        access_log: true,
        tracing: Some("100"),
    },
    Setup {
        name: "tracing 1 % (default)",
        access_log: false,
        tracing: Some("1"),
    },
];

struct Args {
    rate: u32,
    seconds: u64,
    rounds: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        rate: 250,
        seconds: 6,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rate" => args.rate = value().parse().expect("--rate N (requests a second)"),
            "--seconds" => args.seconds = value().parse().expect("--seconds N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}; use --rate N --seconds N --rounds N"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args));
}

/// What one run measured.
struct Run {
    requests: u64,
    failed: u64,
    p50: Duration,
    p99: Duration,
    /// CPU per request (µs): caller's Envoy, callee's Envoy, both sidecars, the OTLP receiver.
    caller_us: f64,
    callee_us: f64,
    sidecars_us: f64,
    receiver_us: f64,
}

async fn run(args: Args) {
    let envoy = meshplane_test_support::envoy::envoy_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start();
    let ticks = clock_ticks();
    println!("machine: {}", machine());

    let mut meshes = Vec::new();
    for (i, setup) in SETUPS.iter().enumerate() {
        let env = Env {
            envoy: &envoy,
            dir: &dir.path().join(format!("setup-{i}")),
            collector: setup.tracing.map(|sampling| (receiver.port, sampling)),
        };
        meshes.push(Mesh::start(&env, *setup).await);
    }
    // Warm-up: connections, TLS sessions, first-use statistics.
    for mesh in &meshes {
        mesh.load(args.rate, Duration::from_secs(1)).await;
    }

    let mut runs: Vec<Vec<Run>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        // Each round starts with another configuration, so none always runs first.
        for i in (0..SETUPS.len()).map(|k| (k + round) % SETUPS.len()) {
            let mesh = &meshes[i];
            let before = mesh.cpu(&receiver);
            let (latencies, failed) = mesh
                .load(args.rate, Duration::from_secs(args.seconds))
                .await;
            let after = mesh.cpu(&receiver);
            let requests = latencies.len() as u64;
            let per_request =
                |k: usize| (after[k] - before[k]) as f64 / ticks * 1e6 / (requests + failed) as f64;
            let mut sorted = latencies;
            sorted.sort();
            runs[i].push(Run {
                requests,
                failed,
                p50: quantile(&sorted, 0.50),
                p99: quantile(&sorted, 0.99),
                caller_us: per_request(0),
                callee_us: per_request(1),
                sidecars_us: per_request(2),
                receiver_us: if SETUPS[i].tracing.is_some() {
                    per_request(3)
                } else {
                    0.0
                },
            });
            eprintln!(
                "round {} {}: {} requests",
                round + 1,
                SETUPS[i].name,
                requests
            );
        }
    }
    report(&runs);
    let spans = receiver.spans().len();
    let lines: Vec<usize> = meshes.iter().map(Mesh::access_log_lines).collect();
    let mut handshakes = Vec::new();
    for mesh in &meshes {
        handshakes.push(mesh.handshakes().await);
    }
    println!();
    println!(
        "checks: spans received {spans}; access-log lines per setup {lines:?}; {handshakes:?}; load average after {}",
        load_average()
    );
    for mesh in meshes {
        mesh.stop();
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `median (min–max)` of `values`.
fn spread(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let (Some(min), Some(max)) = (values.first(), values.last()) else {
        return "-".to_owned();
    };
    format!("{:.0} ({:.0}–{:.0})", values[values.len() / 2], min, max)
}

fn report(runs: &[Vec<Run>]) {
    println!();
    println!(
        "| configuration | requests (failed) | latency p50 / p99 (µs) | added p50 / p99 vs nothing (µs) | CPU per request, caller's Envoy (µs) | callee's Envoy (µs) | both Envoys, added vs nothing (µs) | both sidecars (µs) | OTLP receiver (µs) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = &runs[0];
    for (setup, rs) in SETUPS.iter().zip(runs) {
        let col = |f: &dyn Fn(&Run) -> f64| spread(rs.iter().map(f).collect());
        let added = |f: &dyn Fn(&Run) -> f64| {
            spread(rs.iter().zip(base).map(|(r, b)| f(r) - f(b)).collect())
        };
        let requests: u64 = rs.iter().map(|r| r.requests).sum();
        let failed: u64 = rs.iter().map(|r| r.failed).sum();
        println!(
            "| {} | {requests} ({failed}) | {} / {} | {} / {} | {} | {} | {} | {} | {} |",
            setup.name,
            col(&|r| us(r.p50)),
            col(&|r| us(r.p99)),
            added(&|r| us(r.p50)),
            added(&|r| us(r.p99)),
            col(&|r| r.caller_us),
            col(&|r| r.callee_us),
            added(&|r| r.caller_us + r.callee_us),
            col(&|r| r.sidecars_us),
            col(&|r| r.receiver_us),
        );
    }
    println!();
    println!("Each cell: median over the rounds (min–max).");
}

struct Env<'a> {
    envoy: &'a Path,
    dir: &'a Path,
    /// The receiver's port and the sampling, for a traced configuration.
    collector: Option<(u16, &'static str)>,
}

/// A control plane with `payments` and `orders` sidecars.
struct Mesh {
    _cp: ControlPlane,
    shutdown: CancellationToken,
    caller: Sidecar,
    callee: Sidecar,
    egress: u16,
    http: reqwest::Client,
    access_logs: [PathBuf; 2],
}

impl Mesh {
    async fn start(env: &Env<'_>, setup: Setup) -> Mesh {
        std::fs::create_dir_all(env.dir).expect("dir");
        let shutdown = CancellationToken::new();
        let mut config = ControlPlaneConfig {
            xds_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            registry_addr: ([127, 0, 0, 1], 0).into(),
            data_dir: env.dir.join("data"),
            ..Default::default()
        };
        if let Some((port, sampling)) = env.collector {
            config.tracing_collector = Some(format!("127.0.0.1:{port}"));
            config.tracing_sampling = sampling.to_owned();
        }
        let cp = control_plane::start(config, shutdown.clone())
            .await
            .expect("control plane starts");
        let access_log = if setup.access_log { "all" } else { "off" };
        let payments = format!(
            "service: payments\nport: {}\ningress: {{ port: {} }}\naccess_log: {access_log}\n",
            app().await,
            free_port()
        );
        let egress = free_port();
        let orders = format!(
            "service: orders\nport: {}\ningress: {{ port: {} }}\negress: {{ port: {egress} }}\ndependencies:\n  - service: payments\naccess_log: {access_log}\n",
            free_port(),
            free_port()
        );
        let callee = Sidecar::spawn(env, &cp, "payments-1", &payments).await;
        let caller = Sidecar::spawn(env, &cp, "orders-1", &orders).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let mesh = Mesh {
            access_logs: [caller.access_log.clone(), callee.access_log.clone()],
            _cp: cp,
            shutdown,
            caller,
            callee,
            egress,
            http,
        };
        let end = Instant::now() + DEADLINE;
        while !mesh.call().await.is_some_and(|ok| ok) {
            assert!(
                Instant::now() < end,
                "{}: orders never reached payments; logs in {}",
                setup.name,
                env.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        mesh
    }

    /// One request through the caller's egress; `None` when it did not complete.
    async fn call(&self) -> Option<bool> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}/pay", self.egress))
            .header("host", "payments")
            .send()
            .await
            .ok()?;
        let ok = r.status().is_success();
        r.bytes().await.ok()?;
        Some(ok)
    }

    /// `rate` requests a second, one at a time, for `length`: each one's latency, and how
    /// many failed.
    async fn load(&self, rate: u32, length: Duration) -> (Vec<Duration>, u64) {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = Instant::now() + length;
        let mut latencies = Vec::new();
        let mut failed = 0;
        while Instant::now() < end {
            tick.tick().await;
            let start = Instant::now();
            match self.call().await {
                Some(true) => latencies.push(start.elapsed()),
                _ => failed += 1,
            }
        }
        (latencies, failed)
    }

    /// CPU ticks so far: caller's Envoy, callee's Envoy, both sidecars, the receiver.
    fn cpu(&self, receiver: &Receiver) -> [u64; 4] {
        [
            cpu_ticks(self.caller.envoy_pid),
            cpu_ticks(self.callee.envoy_pid),
            cpu_ticks(self.caller.child.id()) + cpu_ticks(self.callee.child.id()),
            cpu_ticks(receiver.pid()),
        ]
    }

    /// The caller's TLS handshakes to payments (`cluster.payments.ssl.handshake`): mTLS is
    /// on the path.
    async fn handshakes(&self) -> String {
        let url = format!(
            "http://127.0.0.1:{}/stats?filter=^cluster\\.payments\\.ssl\\.handshake$",
            self.caller.admin
        );
        match self.http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default().trim().to_owned(),
            Err(e) => e.to_string(),
        }
    }

    fn access_log_lines(&self) -> usize {
        self.access_logs
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum()
    }

    fn stop(self) {
        drop(self.caller);
        drop(self.callee);
        self.shutdown.cancel();
    }
}

/// The callee's app: answers every path at once.
async fn app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = Router::new().fallback(get(|| async { "paid" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

/// A `meshplane sidecar` process; stopped (SIGTERM, then SIGKILL) and reaped on drop.
struct Sidecar {
    child: Child,
    envoy_pid: u32,
    admin: u16,
    access_log: PathBuf,
}

impl Sidecar {
    async fn spawn(env: &Env<'_>, cp: &ControlPlane, id: &str, descriptor: &str) -> Sidecar {
        let file = env.dir.join(format!("{id}.yaml"));
        std::fs::write(&file, descriptor).expect("write descriptor");
        let log = std::fs::File::create(env.dir.join(format!("{id}.log"))).expect("log");
        let access_log = env.dir.join(format!("{id}-access.log"));
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
            .args(["--work-dir", &env.dir.join(id).display().to_string()])
            .env("MESHPLANE_ENVOY", env.envoy)
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

fn free_port() -> u16 {
    meshplane_sidecar::envoy::free_loopback_port().expect("a free port on 127.0.0.1")
}

/// The Envoy a sidecar started: its child named `envoy`.
fn envoy_pid(sidecar: u32) -> Option<u32> {
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
fn cpu_ticks(pid: u32) -> u64 {
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
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> String {
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
