//! One real Envoy with `service: "*"` at 1,000 services × 20 instances: how long its initial
//! configuration takes, how long each registry change takes to be applied in it, whether a
//! cluster ever warms after the initial sync, and its memory with the mesh's statistics list
//! against every statistic.
//!
//!     cargo bench -p meshplane --bench envoy_wildcard
//!     cargo bench -p meshplane --bench envoy_wildcard -- --services 1000 --instances 20 --changes 40 --stats all,mesh
//!
//! The control plane runs in this process (embedded registry, every port 127.0.0.1:0); the
//! proxy is a real `meshplane sidecar` (the binary built with this bench) running the real
//! Envoy the tests use (`MESHPLANE_ENVOY`, `PATH`, or `.tools/envoy`), with the descriptor
//! `service: batch` depending on `service: "*"`. Changes go through the registry's HTTP API
//! one at a time (register an instance, deregister it, fail an instance's TTL check, pass it
//! again, on a different service each time); "applied" is when Envoy's admin API shows the
//! service's new membership, polled back to back. Every process started is reaped.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshplane_runtime::ControlPlaneConfig;
use meshplane_runtime::control_plane;
use support::{envoy_pid, free_port, loopback_config};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Ports and the Envoy a sidecar started (shared with the other Envoy benchmarks).
mod support;

/// The wildcard service.
const BATCH: &str = "batch";
/// Concurrent registrations while loading the registry.
const LOADERS: usize = 64;
/// A phase that takes longer than this has failed.
const DEADLINE: Duration = Duration::from_secs(120);

struct Args {
    services: usize,
    instances: usize,
    changes: usize,
    stats: Vec<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        services: 1_000,
        instances: 20,
        changes: 40,
        stats: vec!["all".into(), "mesh".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--services" => args.services = value().parse().expect("--services N"),
            "--instances" => args.instances = value().parse().expect("--instances N"),
            "--changes" => args.changes = value().parse().expect("--changes N"),
            "--stats" => args.stats = value().split(',').map(str::to_owned).collect(),
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            other => panic!(
                "unknown argument {other}; use --services N --instances N --changes N --stats all,mesh"
            ),
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

async fn run(args: Args) {
    let envoy = meshplane_test_support::envoy::envoy_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let config = ControlPlaneConfig {
        allow_wildcard_dependencies: vec![BATCH.parse().expect("service name")],
        ..loopback_config(&dir.path().join("data"))
    };
    let cp = control_plane::start(config, shutdown.clone())
        .await
        .expect("control plane starts");
    let registry = format!("http://{}", cp.registry_addr.expect("embedded registry"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("client");

    let started = Instant::now();
    load(&http, &registry, args.services, args.instances).await;
    let total = args.services * args.instances;
    let loaded = poll_until(DEADLINE, Duration::from_millis(20), || async {
        cp.store.snapshot().instance_count() >= total
    })
    .await;
    assert!(loaded, "the store never held {total} instances");
    println!(
        "registry: {} services × {} instances registered and in the store in {:.1} s",
        args.services,
        args.instances,
        started.elapsed().as_secs_f64()
    );
    println!(
        "machine: {} vCPU, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let mut rows = Vec::new();
    for stats in &args.stats {
        let env = Env {
            http: &http,
            registry: &registry,
            envoy: &envoy,
            cp_xds: cp.xds_addr,
            cp_admin: cp.admin_addr,
            dir: dir.path(),
            services: args.services,
            instances: args.instances,
        };
        rows.push(measure(&env, stats, args.changes).await);
    }
    print_report(&rows);
    shutdown.cancel();
}

/// Registers `services` × `instances`; instance 0 of every service has a TTL check (passing)
/// so its health can be flipped.
async fn load(http: &reqwest::Client, registry: &str, services: usize, instances: usize) {
    let limit = Arc::new(Semaphore::new(LOADERS));
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..services {
        for i in 0..instances {
            let permit = limit.clone().acquire_owned().await.expect("semaphore");
            let (http, registry) = (http.clone(), registry.to_owned());
            tasks.spawn(async move {
                register(&http, &registry, s, &format!("svc-{s}-{i}"), i).await;
                drop(permit);
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("registration task");
    }
}

async fn register(http: &reqwest::Client, registry: &str, s: usize, id: &str, i: usize) {
    let mut body = serde_json::json!({
        "ID": id, "Name": format!("svc-{s}"), "Port": 31001,
        "Address": format!("10.{}.{}.{}", s / 256, s % 256, i + 1),
    });
    if i == 0 {
        body["Check"] = serde_json::json!({ "TTL": "1h", "Status": "passing" });
    }
    put(
        http,
        &format!("{registry}/v1/agent/service/register"),
        Some(body),
    )
    .await;
}

async fn put(http: &reqwest::Client, url: &str, body: Option<serde_json::Value>) {
    let mut request = http.put(url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("registry reachable");
    assert!(r.status().is_success(), "PUT {url}: {}", r.status());
}

struct Env<'a> {
    http: &'a reqwest::Client,
    registry: &'a str,
    envoy: &'a Path,
    cp_xds: std::net::SocketAddr,
    cp_admin: std::net::SocketAddr,
    dir: &'a Path,
    services: usize,
    instances: usize,
}

/// What one Envoy measured.
struct Row {
    stats: String,
    initial: Duration,
    initial_from_spawn: Duration,
    changes: Vec<(&'static str, Duration)>,
    put_median: Duration,
    poll_median: Duration,
    max_warming_during_changes: u64,
    clusters_modified_during_changes: u64,
    clusters_added_during_changes: u64,
    stat_count: usize,
    rss_synced_mib: f64,
    anon_synced_mib: f64,
    rss_after_changes_mib: f64,
    memory: BTreeMap<String, f64>,
    memory_after_changes: BTreeMap<String, f64>,
}

/// The `meshplane sidecar` process; stopped (SIGTERM, then SIGKILL for it and its Envoy)
/// however the bench ends.
struct Sidecar {
    child: Child,
    envoy_pid: Option<i32>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        meshplane_test_support::process::terminate(&mut self.child, Duration::from_secs(20));
        // The sidecar reaps its Envoy on SIGTERM; this only matters if it had to be killed.
        if let Some(pid) = self.envoy_pid.and_then(rustix::process::Pid::from_raw)
            && Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists()
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

fn spawn_sidecar(env: &Env<'_>, stats: &str) -> (Sidecar, u16) {
    let stats_line = match stats {
        "mesh" => String::new(),
        "all" => "stats: { include: all }\n".to_owned(),
        other => panic!("--stats takes `all` and `mesh`, not `{other}`"),
    };
    let descriptor = format!(
        "service: {BATCH}\nport: {}\ningress: {{ port: {} }}\negress: {{ port: {} }}\ndependencies:\n  - service: \"*\"\n{stats_line}",
        free_port(),
        free_port(),
        free_port()
    );
    let file = env.dir.join(format!("batch-{stats}.yaml"));
    std::fs::write(&file, descriptor).expect("write descriptor");
    let log = std::fs::File::create(env.dir.join(format!("batch-{stats}.log"))).expect("log");
    let admin = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .arg("sidecar")
        .args(["--descriptor", &file.display().to_string()])
        .args(["--control-plane", &env.cp_xds.to_string()])
        .args(["--instance-id", &format!("batch-{stats}")])
        .args(["--admin-port", &admin.to_string()])
        .args(["--base-id", &admin.to_string()])
        .args(["--address", "127.0.0.1"])
        .args(["--ca-url", &format!("http://{}", env.cp_admin)])
        .args(["--registry", env.registry])
        .args([
            "--work-dir",
            &env.dir.join(format!("batch-{stats}")).display().to_string(),
        ])
        .env("MESHPLANE_ENVOY", env.envoy)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("meshplane sidecar starts");
    (
        Sidecar {
            child,
            envoy_pid: None,
        },
        admin,
    )
}

async fn measure(env: &Env<'_>, stats: &str, changes: usize) -> Row {
    let spawned = Instant::now();
    let (mut sidecar, admin) = spawn_sidecar(env, stats);
    let envoy = EnvoyAdmin {
        http: env.http,
        port: admin,
    };
    // `/server_info` answers from Envoy's start; `/ready` only once its configuration is in.
    let up = poll_until(DEADLINE, Duration::from_millis(5), || async {
        envoy.get("/server_info").await.is_some()
    })
    .await;
    assert!(up, "{stats}: Envoy's admin API never answered");
    let admin_up = Instant::now();
    sidecar.envoy_pid = envoy_pid(sidecar.child.id()).and_then(|pid| i32::try_from(pid).ok());

    let expected_endpoints = (env.services * env.instances) as u64;
    let synced = poll_until(DEADLINE, Duration::from_millis(50), || async {
        let gauges = envoy
            .stats("^cluster_manager\\.(active|warming)_clusters$")
            .await;
        let active = gauges
            .get("cluster_manager.active_clusters")
            .copied()
            .unwrap_or(0);
        let warming = gauges
            .get("cluster_manager.warming_clusters")
            .copied()
            .unwrap_or(1);
        // Every service's cluster (below, with the sidecar's own service, which it registers
        // once Envoy is up) and the two static clusters, none warming.
        if active < env.services as u64 + 2 || warming > 0 {
            return false;
        }
        let members = envoy
            .stats("^cluster\\.(svc-[0-9]+|batch)\\.membership_total$")
            .await;
        let svc: u64 = members
            .iter()
            .filter(|(name, _)| name.starts_with("cluster.svc-"))
            .map(|(_, n)| n)
            .sum();
        svc == expected_endpoints && members.contains_key("cluster.batch.membership_total")
    })
    .await;
    assert!(
        synced,
        "{stats}: Envoy never had every cluster and endpoint"
    );
    let ready = Instant::now();
    let pid = sidecar.envoy_pid.expect("Envoy's pid");
    let rss_synced_mib = rss_mib(pid, "VmRSS:");
    let anon_synced_mib = rss_mib(pid, "RssAnon:");
    let memory = envoy.memory().await;
    let stat_count = envoy
        .get("/stats")
        .await
        .map_or(0, |text| text.lines().count());

    let (modified, added) = (
        "cluster_manager.cluster_modified",
        "cluster_manager.cluster_added",
    );
    let (modified_before, added_before) = (envoy.stat(modified).await, envoy.stat(added).await);
    let mut warming_at = Vec::new();
    let mut timings = Vec::new();
    let mut puts = Vec::new();
    let mut polls = Vec::new();
    let mut max_warming = 0;
    for n in 0..changes {
        let s = (n / 4 * 37 + 11) % env.services;
        let (kind, url, body, total, healthy) = change(env, n, s);
        let filter = format!(
            "^(cluster_manager\\.warming_clusters|cluster\\.svc-{s}\\.membership_(total|healthy))$"
        );
        let start = Instant::now();
        put(env.http, &url, body).await;
        puts.push(start.elapsed());
        let (total_name, healthy_name) = (
            format!("cluster.svc-{s}.membership_total"),
            format!("cluster.svc-{s}.membership_healthy"),
        );
        // Polled back to back: the resolution is one admin request (reported).
        loop {
            let before = Instant::now();
            let got = envoy.stats(&filter).await;
            polls.push(before.elapsed());
            let warming = got
                .get("cluster_manager.warming_clusters")
                .copied()
                .unwrap_or(0);
            max_warming = max_warming.max(warming);
            if warming > 0 && !warming_at.contains(&n) {
                warming_at.push(n);
            }
            if got.get(&total_name) == Some(&total) && got.get(&healthy_name) == Some(&healthy) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{stats}: change {n} ({kind} svc-{s}) never reached Envoy: {got:?}"
            );
        }
        timings.push((kind, start.elapsed()));
    }
    let (modified_after, added_after) = (envoy.stat(modified).await, envoy.stat(added).await);
    if !warming_at.is_empty() {
        println!("{stats}: warming clusters seen during changes {warming_at:?}");
    }
    let rss_after_changes_mib = rss_mib(pid, "VmRSS:");
    let memory_after_changes = envoy.memory().await;
    drop(sidecar);
    Row {
        stats: stats.to_owned(),
        initial: ready - admin_up,
        initial_from_spawn: ready - spawned,
        changes: timings,
        put_median: median(&mut puts),
        poll_median: median(&mut polls),
        max_warming_during_changes: max_warming,
        clusters_modified_during_changes: modified_after.saturating_sub(modified_before),
        clusters_added_during_changes: added_after.saturating_sub(added_before),
        stat_count,
        rss_synced_mib,
        anon_synced_mib,
        rss_after_changes_mib,
        memory,
        memory_after_changes,
    }
}

type Change = (&'static str, String, Option<serde_json::Value>, u64, u64);

/// The `n`th change, on service `s`: what it is, the PUT, and the membership Envoy must show
/// afterwards (total, healthy). Changes come in fours on one service, leaving it as it was.
fn change(env: &Env<'_>, n: usize, s: usize) -> Change {
    let full = env.instances as u64;
    let extra = format!("svc-{s}-extra");
    match n % 4 {
        0 => (
            "register",
            format!("{}/v1/agent/service/register", env.registry),
            Some(serde_json::json!({
                "ID": extra, "Name": format!("svc-{s}"), "Port": 31001,
                "Address": format!("10.{}.{}.250", s / 256, s % 256),
            })),
            full + 1,
            full + 1,
        ),
        1 => (
            "deregister",
            format!("{}/v1/agent/service/deregister/{extra}", env.registry),
            None,
            full,
            full,
        ),
        2 => (
            "health fail",
            format!("{}/v1/agent/check/fail/service:svc-{s}-0", env.registry),
            None,
            full,
            full - 1,
        ),
        _ => (
            "health pass",
            format!("{}/v1/agent/check/pass/service:svc-{s}-0", env.registry),
            None,
            full,
            full,
        ),
    }
}

struct EnvoyAdmin<'a> {
    http: &'a reqwest::Client,
    port: u16,
}

impl EnvoyAdmin<'_> {
    async fn get(&self, path: &str) -> Option<String> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.text().await.ok()
    }

    /// Counters and gauges whose names match `regex`.
    async fn stats(&self, regex: &str) -> BTreeMap<String, u64> {
        let text = self
            .get(&format!("/stats?filter={regex}"))
            .await
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    async fn stat(&self, name: &str) -> u64 {
        let regex = format!("^{}$", name.replace('.', "\\."));
        self.stats(&regex).await.get(name).copied().unwrap_or(0)
    }

    /// Envoy's `/memory` (tcmalloc's view), in MiB.
    async fn memory(&self) -> BTreeMap<String, f64> {
        let text = self.get("/memory").await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        json.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let bytes: f64 = v.as_str()?.parse().ok()?;
                Some((k.clone(), bytes / 1_048_576.0))
            })
            .collect()
    }
}

/// A `/proc/<pid>/status` size (`VmRSS:`, `RssAnon:`) in MiB.
fn rss_mib(pid: i32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Whether `check` holds within `deadline`, checking every `every`.
async fn poll_until<F, Fut>(deadline: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        if !every.is_zero() {
            tokio::time::sleep(every).await;
        }
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn print_report(rows: &[Row]) {
    println!();
    println!(
        "| stats | initial config: admin up → all clusters ACTIVE with all endpoints (s) | from sidecar start (s) | change → applied in Envoy, p50 / p90 / max (ms) | slowest kind | registry PUT median (ms) | one admin poll median (ms) | warming clusters seen during changes (max) | clusters added / modified by changes | statistics | Envoy VmRSS synced → after changes (MiB) | of which anonymous, synced (MiB) |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let mut all: Vec<Duration> = r.changes.iter().map(|(_, d)| *d).collect();
        all.sort();
        let pick = |q: f64| {
            all.get(((all.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        let slowest = r
            .changes
            .iter()
            .max_by_key(|(_, d)| *d)
            .map_or("-", |(k, _)| k);
        println!(
            "| {} | {:.2} | {:.2} | {} / {} / {} | {} | {} | {} | {} | {} / {} | {} | {:.0} → {:.0} | {:.0} |",
            r.stats,
            r.initial.as_secs_f64(),
            r.initial_from_spawn.as_secs_f64(),
            ms(pick(0.5)),
            ms(pick(0.9)),
            ms(pick(1.0)),
            slowest,
            ms(r.put_median),
            ms(r.poll_median),
            r.max_warming_during_changes,
            r.clusters_added_during_changes,
            r.clusters_modified_during_changes,
            r.stat_count,
            r.rss_synced_mib,
            r.rss_after_changes_mib,
            r.anon_synced_mib,
        );
    }
    println!();
    println!("Envoy's /memory after the initial sync → after the changes (MiB):");
    for r in rows {
        let parts: Vec<String> = r
            .memory
            .iter()
            .map(|(k, v)| {
                let after = r.memory_after_changes.get(k).copied().unwrap_or_default();
                format!("{k} {v:.1} → {after:.1}")
            })
            .collect();
        println!("- {}: {}", r.stats, parts.join(", "));
    }
    for r in rows {
        let by_kind = ["register", "deregister", "health fail", "health pass"].map(|kind| {
            let mut d: Vec<Duration> = r
                .changes
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, d)| *d)
                .collect();
            let max = d.iter().max().copied().unwrap_or_default();
            format!("{kind} p50 {} max {} ms", ms(median(&mut d)), ms(max))
        });
        println!("- {} changes: {}", r.stats, by_kind.join("; "));
    }
}
