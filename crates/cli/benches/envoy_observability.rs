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
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use meshplane_runtime::control_plane::{self, ControlPlane};
use otlp::Receiver;
use support::{
    DEADLINE, LoadArgs, Sidecar, clock_ticks, cpu_ticks, free_port, load_average, loopback_config,
    machine, quantile, spread, us,
};
use tokio_util::sync::CancellationToken;

/// The tracing tests' OTLP receiver (one implementation for tests and benchmark).
#[path = "../tests/support/otlp.rs"]
mod otlp;
/// Sidecar processes, CPU time, quantiles (shared with the gRPC benchmark).
mod support;

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

fn main() {
    support::block_on(run(LoadArgs::parse()));
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

async fn run(args: LoadArgs) {
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
        let mut config = loopback_config(&env.dir.join("data"));
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
        let callee = Sidecar::spawn(env.envoy, env.dir, &cp, "payments-1", &payments).await;
        let caller = Sidecar::spawn(env.envoy, env.dir, &cp, "orders-1", &orders).await;
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
