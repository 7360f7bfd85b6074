//! The Consul source watching 1,000 services × 20 instances (served by the embedded registry's
//! Consul-compatible API) under the default connection budget.
//!
//!     cargo bench -p meshplane-registry-consul --bench consul_watch
//!
//! Reports initial sync time, peak concurrent connections (counted by a TCP proxy in front of
//! the API), request rate, and how long 50 simultaneous changes on 50 services take to reach the
//! store while watches take turns.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use meshplane_registry::{RegistrySource, event_channel, store};
use meshplane_registry_consul::{ConsulConfig, ConsulSource};
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 1_000;
const INSTANCES: usize = 20;
const CHANGES: usize = 50;

struct Proxy {
    addr: SocketAddr,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

async fn counting_proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (active, peak, accepted) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (a, p, n) = (active.clone(), peak.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::Relaxed);
            let (a, p) = (a.clone(), p.clone());
            p.fetch_max(a.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                a.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Proxy {
        addr,
        peak,
        accepted,
    }
}

async fn register(http: &reqwest::Client, url: &str, s: usize, id: &str) {
    let body = serde_json::json!({"Name": format!("svc-{s}"), "ID": id, "Port": 31001,
        "Address": format!("10.{}.{}.1", s / 256, s % 256), "Check": {"TTL": "1h", "Status": "passing"}});
    let r = http
        .put(format!("{url}/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success());
}

async fn bench() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let registry = EmbeddedRegistry::bind(config).await.expect("bind");
    let api = registry.local_addr();
    let url = format!("http://{api}");
    let shutdown = CancellationToken::new();
    tokio::spawn(registry.serve(shutdown.clone()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let permits = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for s in 0..SERVICES {
        for i in 0..INSTANCES {
            let (http, url, permits) = (http.clone(), url.clone(), permits.clone());
            tasks.push(tokio::spawn(async move {
                let _p = permits.acquire_owned().await.expect("permit");
                register(&http, &url, s, &format!("svc-{s}-{i}")).await;
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }

    let proxy = counting_proxy(api).await;
    let config = ConsulConfig {
        address: format!("http://{}", proxy.addr),
        ..ConsulConfig::default()
    };
    let budget = config.max_connections;
    let (reader, writer) = store();
    let (sink, events) = event_channel(1024);
    tokio::spawn(writer.run(events, shutdown.clone()));
    let started = Instant::now();
    tokio::spawn(
        ConsulSource::new(config)
            .expect("config")
            .run(sink, shutdown.clone()),
    );
    let mut rx = reader.subscribe();
    rx.wait_for(|s| s.is_synced() && s.instance_count() == SERVICES * INSTANCES)
        .await
        .expect("sync");
    let sync = started.elapsed();
    println!(
        "| initial sync of {SERVICES} services × {INSTANCES} instances | {:.0} ms |",
        sync.as_secs_f64() * 1e3
    );

    // Steady state: let the rotation settle, then count requests over 10 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = proxy.accepted.load(Ordering::Relaxed);
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let connections = proxy.accepted.load(Ordering::Relaxed) - before;
    println!(
        "| new TCP connections per second, steady state | {:.1} |",
        connections as f64 / window.as_secs_f64()
    );

    // 50 changes at once on 50 different services; time until each is in the store.
    let started = Instant::now();
    for c in 0..CHANGES {
        let s = c * (SERVICES / CHANGES) + 7;
        register(&http, &url, s, &format!("new-{c}")).await;
    }
    let acked = started.elapsed();
    let mut seen: HashMap<usize, Duration> = HashMap::new();
    let mut rx = reader.subscribe();
    while seen.len() < CHANGES {
        let snap = rx.borrow_and_update().clone();
        for c in 0..CHANGES {
            let s = c * (SERVICES / CHANGES) + 7;
            let name = format!("svc-{s}");
            let present = snap.service(&name).is_some_and(|e| {
                e.instances
                    .iter()
                    .any(|i| i.id.as_str() == format!("new-{c}"))
            });
            if present {
                seen.entry(c).or_insert_with(|| started.elapsed());
            }
        }
        if seen.len() < CHANGES
            && tokio::time::timeout(Duration::from_secs(60), rx.changed())
                .await
                .is_err()
        {
            break;
        }
    }
    let mut latencies: Vec<Duration> = seen.values().copied().collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "| {CHANGES} simultaneous changes: all acknowledged after | {:.0} ms |",
        acked.as_secs_f64() * 1e3
    );
    println!(
        "| change → store, p50 / p90 / max | {:.0} / {:.0} / {:.0} ms |",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    println!(
        "| peak concurrent connections (budget {budget}, Consul's limit 200) | {} |",
        proxy.peak.load(Ordering::SeqCst)
    );
    shutdown.cancel();
}

fn main() {
    println!("| measure | value |");
    println!("|---|---|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}
