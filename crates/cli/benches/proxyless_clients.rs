//! What N real proxyless gRPC clients cost the control plane: N grpcio processes (gRPC's own
//! xDS client, `tests/grpc/echo.py client-xds`, bootstrapped by `meshplane bootstrap --grpc`,
//! each its own node) resolve `xds:///payments` (20 instances) and make one call each; then
//! endpoint changes are made through the registry API, each waited for until every client
//! has acknowledged it. Prints the control plane's resident memory per client (this process
//! runs it; the clients are other processes), its CPU time per change, and the time from a
//! change to the last client's ACK.
//!
//!     cargo bench -p meshplane --bench proxyless_clients
//!     cargo bench -p meshplane --bench proxyless_clients -- --clients 100 --changes 20
//!
//! Needs the project's venv (`scripts/install-test-deps.sh`: grpcio). Every process started
//! is reaped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshplane_runtime::control_plane;
use serde_json::{Value, json};
use support::{clock_ticks, cpu_ticks, loopback_config, machine, quantile};

/// Sidecar processes, CPU time, quantiles (shared with the other benchmarks).
mod support;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const INSTANCES: usize = 20;
const CLIENT: &str = "service: checkout\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n";

fn main() {
    let mut clients = 50;
    let mut changes = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse::<usize>().ok());
        match arg.as_str() {
            "--clients" => clients = value().expect("--clients N"),
            "--changes" => changes = value().expect("--changes N"),
            _ => {}
        }
    }
    support::block_on(run(clients, changes));
}

/// Reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn run(clients: usize, changes: usize) {
    let python = format!("{ROOT}/.tools/venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run scripts/install-test-deps.sh"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cp = control_plane::start(loopback_config(&dir.path().join("data")), shutdown.clone())
        .await
        .expect("control plane");
    let registry = cp.registry_addr.expect("embedded registry");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // A server per instance: gRPC keeps one endpoint per address.
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for i in 0..INSTANCES {
        let mut server = Command::new(&python)
            .args([
                &format!("{ROOT}/tests/grpc/echo.py"),
                "server",
                &format!("payments-{i}"),
            ])
            // It serves until its stdin closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("echo server");
        let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
        let port: u16 = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.trim().parse().ok())
            .expect("the server prints its port");
        ports.push(port);
        servers.push((Reaped(server), lines));
    }
    let register = |i: usize, weight: u32| {
        let (http, port, id) = (http.clone(), ports[i], format!("payments-{i}"));
        async move {
            let body = json!({ "ID": id, "Name": "payments", "Address": "127.0.0.1",
                "Port": port, "Weights": { "Passing": weight, "Warning": 1 } });
            let r = http
                .put(format!("http://{registry}/v1/agent/service/register"))
                .json(&body)
                .send()
                .await
                .expect("registry");
            assert!(r.status().is_success(), "register {id}");
        }
    };
    for i in 0..INSTANCES {
        register(i, 1).await;
    }
    let descriptor = dir.path().join("checkout.yaml");
    std::fs::write(&descriptor, CLIENT).expect("descriptor");

    let before = rss_kib();
    let mut running = Vec::new();
    let started = Instant::now();
    for i in 0..clients {
        let bootstrap = dir.path().join(format!("checkout-{i}.json"));
        let status = Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .args(["bootstrap", "--grpc", "--descriptor"])
            .arg(&descriptor)
            .args(["--control-plane", &cp.xds_addr.to_string()])
            .args(["--instance-id", &format!("checkout-{i}"), "--output"])
            .arg(&bootstrap)
            .status()
            .expect("meshplane bootstrap");
        assert!(status.success());
        let mut child = Command::new(&python)
            .args([&format!("{ROOT}/tests/grpc/echo.py"), "client-xds"])
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gRPC client");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        writeln!(
            stdin,
            "{}",
            json!({ "target": "xds:///payments", "payload": "x", "timeout": 60 })
        )
        .expect("command");
        running.push((Reaped(child), stdin, stdout));
    }
    for (_, _, stdout) in &mut running {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("answer");
        let answer: Value = serde_json::from_str(&line).expect("JSON answer");
        assert_eq!(answer["ok"], true, "{answer}");
    }
    println!(
        "{clients} grpcio clients resolved xds:///payments and called it in {:.1?}",
        started.elapsed()
    );
    let admin = |path: &'static str| {
        let url = format!("http://{}{path}", cp.admin_addr);
        let http = http.clone();
        async move {
            let v: Value = http
                .get(url)
                .send()
                .await
                .expect("admin")
                .json()
                .await
                .expect("JSON");
            v
        }
    };
    let proxies = || async {
        admin("/api/proxies")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let eds_responses = |all: &[Value]| -> Vec<u64> {
        all.iter()
            .map(|p| p["types"]["EDS"]["responses"].as_u64().unwrap_or(0))
            .collect()
    };
    let all_synced =
        |all: &[Value]| all.len() == clients && all.iter().all(|p| p["sync"] == "SYNCED");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !all_synced(&proxies().await) {
        assert!(Instant::now() < deadline, "clients never all SYNCED");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the allocator settle before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib();

    let pid = std::process::id();
    // What one poll of the admin API costs this process (subtracted below).
    let idle = 100;
    let cpu = cpu_ticks(pid);
    for _ in 0..idle {
        proxies().await;
    }
    let per_poll = (cpu_ticks(pid) - cpu) as f64 / idle as f64;
    let mut took = Vec::new();
    let mut ticks = 0.0;
    for k in 0..changes {
        let seen = eds_responses(&proxies().await);
        let cpu = cpu_ticks(pid);
        let mut polls = 0;
        let at = Instant::now();
        // A weight change of one instance: every client's endpoints change.
        register(k % INSTANCES, 2 + k as u32).await;
        loop {
            let now = proxies().await;
            polls += 1;
            if all_synced(&now) && eds_responses(&now).iter().zip(&seen).all(|(n, s)| n > s) {
                break;
            }
            if at.elapsed() > Duration::from_secs(30) {
                let behind: Vec<String> = now
                    .iter()
                    .zip(&seen)
                    .filter(|(p, s)| {
                        p["sync"] != "SYNCED"
                            || p["types"]["EDS"]["responses"].as_u64() <= Some(**s)
                    })
                    .map(|(p, _)| {
                        format!("{} {} EDS {}", p["node_id"], p["sync"], p["types"]["EDS"])
                    })
                    .collect();
                let state = admin("/api/services/payments").await;
                panic!(
                    "change {k} not ACKed by every client ({} streams): {behind:?}\n{state:#}",
                    now.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took.push(at.elapsed());
        ticks += ((cpu_ticks(pid) - cpu) as f64 - polls as f64 * per_poll).max(0.0);
    }
    took.sort();
    let cpu_ms = ticks * 1000.0 / clock_ticks() / changes as f64;
    println!("machine: {}", machine());
    println!(
        "control plane resident memory: {} KiB before the clients, {} KiB with them: {:.1} KiB per client",
        before,
        after,
        after.saturating_sub(before) as f64 / clients as f64
    );
    println!(
        "an endpoint change to {clients} clients: every client ACKed in p50 {:.1?}, max {:.1?}; control-plane CPU {cpu_ms:.1} ms per change ({:.0} µs per client; the admin polling that watched for the ACKs, {:.2} ms a poll, subtracted)",
        quantile(&took, 0.5),
        took.last().copied().unwrap_or_default(),
        cpu_ms * 1000.0 / clients as f64,
        per_poll * 1000.0 / clock_ticks()
    );
    drop(running);
    shutdown.cancel();
}
