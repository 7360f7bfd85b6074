//! The Consul source watching 1,000 services × 20 instances (served by the embedded registry's
//! Consul-compatible API) under the default connection budget.
//!
//!     cargo bench -p meshplane-registry-consul --bench consul_watch
//!
//! Reports initial sync time, peak concurrent connections and requests (counted by a TCP proxy
//! in front of the API), the request rate at idle, how long one registration, health change and
//! deregistration at a time takes to reach the store (p50 / p99 / max over 40 of each), and 50
//! simultaneous changes on 50 services.

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
use meshplane_registry_consul::{ConsulConfig, ConsulSource, signals::Reduced};
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 1_000;
const INSTANCES: usize = 20;
const CHANGES: usize = 50;
const SINGLE: usize = 40;

async fn put(http: &reqwest::Client, url: &str) {
    let r = http.put(url).send().await.expect("PUT");
    assert!(r.status().is_success(), "{url}: {}", r.status());
}

struct Proxy {
    addr: SocketAddr,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Copies client → server, counting request lines (`GET /v1/`, `PUT /v1/`).
async fn copy_counting(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    requests: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    // The end of the previous chunk, so a request line split across reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut window = std::mem::take(&mut tail);
        window.extend_from_slice(&buf[..n]);
        let found = window
            .windows(8)
            .filter(|w| *w == b"GET /v1/" || *w == b"PUT /v1/")
            .count();
        requests.fetch_add(found, Ordering::Relaxed);
        tail = window[window.len().saturating_sub(7)..].to_vec();
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn counting_proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (active, peak, accepted, requests) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (a, p, n, r) = (
        active.clone(),
        peak.clone(),
        accepted.clone(),
        requests.clone(),
    );
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::Relaxed);
            let (a, p, r) = (a.clone(), p.clone(), r.clone());
            p.fetch_max(a.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(outbound) = tokio::net::TcpStream::connect(target).await {
                    // As transparent as a wire: no Nagle delay added to small writes.
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, out_write) = outbound.into_split();
                    let up = copy_counting(in_read, out_write, r);
                    let down = tokio::io::copy(&mut out_read, &mut in_write);
                    let _ = tokio::join!(up, down);
                }
                a.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Proxy {
        addr,
        peak,
        accepted,
        requests,
    }
}

async fn register(http: &reqwest::Client, url: &str, s: usize, id: &str) {
    register_with(http, url, s, id, "passing").await;
}

async fn register_with(http: &reqwest::Client, url: &str, s: usize, id: &str, status: &str) {
    let body = serde_json::json!({"Name": format!("svc-{s}"), "ID": id, "Port": 31001,
        "Address": format!("10.{}.{}.1", s / 256, s % 256), "Check": {"TTL": "1h", "Status": status}});
    let r = http
        .put(format!("{url}/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success());
}

/// How the source reaches the registry's API.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    /// Plain HTTP/1.1 (a Consul agent's port 8500): signals mode above 89 services.
    Http1,
    /// HTTPS, where HTTP/2 is negotiated (a Consul agent with `tls.enabled`, port 8501):
    /// multiplexed watches.
    Http2,
}

async fn bench(transport: Transport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = meshplane_test_support::pki::TestPki::new(&["127.0.0.1"]).write(dir.path());
    let tls = (transport == Transport::Http2).then(|| {
        meshplane_https::TlsFiles {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        }
        .load()
        .expect("TLS files")
    });
    let config = EmbeddedConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        tls,
        ..Default::default()
    };
    let registry = EmbeddedRegistry::bind(config).await.expect("bind");
    let api = registry.local_addr();
    let scheme = match transport {
        Transport::Http1 => "http",
        Transport::Http2 => "https",
    };
    let url = format!("{scheme}://{api}");
    let shutdown = CancellationToken::new();
    tokio::spawn(registry.serve(shutdown.clone()));
    let ca = std::fs::read(&pki.ca).expect("CA");
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).expect("CA PEM"))
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
        address: format!("{scheme}://{}", proxy.addr),
        ca_file: Some(pki.ca.clone()),
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

    // Idle: let the initial reads settle, then count requests and connections over 10 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (connections_before, requests_before) = (
        proxy.accepted.load(Ordering::Relaxed),
        proxy.requests.load(Ordering::Relaxed),
    );
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let connections = proxy.accepted.load(Ordering::Relaxed) - connections_before;
    let requests = proxy.requests.load(Ordering::Relaxed) - requests_before;
    if transport == Transport::Http1 {
        println!(
            "| idle: requests / new TCP connections per second | {:.1} / {:.1} |",
            requests as f64 / window.as_secs_f64(),
            connections as f64 / window.as_secs_f64()
        );
    } else {
        println!(
            "| idle: new TCP connections per second (each service's blocking query returns every `wait`, 5 min) | {:.1} |",
            connections as f64 / window.as_secs_f64()
        );
    }

    // One change at a time: PUT → the store has it.
    let mut registered = Vec::new();
    let mut passing = Vec::new();
    let mut deregistered = Vec::new();
    // How long the registry took to acknowledge each PUT (its durable commit is inside).
    let mut acks = Vec::new();
    for c in 0..SINGLE {
        let s = (c * 37 + 11) % SERVICES;
        let (name, id) = (format!("svc-{s}"), format!("one-{c}"));
        let has = |id: &str, snap: &meshplane_registry::Snapshot| {
            snap.service(&name)
                .and_then(|e| e.instances.iter().find(|i| i.id.as_str() == id).cloned())
        };
        let started = Instant::now();
        register_with(&http, &url, s, &id, "critical").await;
        acks.push(started.elapsed());
        let mut rx = reader.subscribe();
        rx.wait_for(|snap| has(&id, snap).is_some())
            .await
            .expect("registered");
        registered.push(started.elapsed());
        let started = Instant::now();
        put(&http, &format!("{url}/v1/agent/check/pass/service:{id}")).await;
        acks.push(started.elapsed());
        rx.wait_for(|snap| {
            has(&id, snap).is_some_and(|i| i.health == meshplane_model::Health::Passing)
        })
        .await
        .expect("passing");
        passing.push(started.elapsed());
        let started = Instant::now();
        put(&http, &format!("{url}/v1/agent/service/deregister/{id}")).await;
        acks.push(started.elapsed());
        rx.wait_for(|snap| has(&id, snap).is_none())
            .await
            .expect("deregistered");
        deregistered.push(started.elapsed());
    }
    acks.sort();
    println!(
        "| those PUTs acknowledged by the registry (durable commit), p50 / max of {} | {:.0} / {:.0} ms |",
        acks.len(),
        acks[acks.len() / 2].as_secs_f64() * 1e3,
        acks[acks.len() - 1].as_secs_f64() * 1e3
    );
    for (what, mut samples) in [
        ("registration", registered),
        ("health change", passing),
        ("deregistration", deregistered),
    ] {
        samples.sort();
        let at = |p: f64| {
            let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        println!(
            "| {what} → store, one at a time (PUT to store), p50 / p99 / max of {SINGLE} | {:.0} / {:.0} / {:.0} ms |",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }

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
    let requests = match transport {
        Transport::Http1 => proxy.requests.load(Ordering::Relaxed).to_string(),
        Transport::Http2 => "(encrypted)".to_string(),
    };
    println!(
        "| requests / connections opened in all | {requests} / {} |",
        proxy.accepted.load(Ordering::Relaxed)
    );
    if transport == Transport::Http2 {
        shutdown.cancel();
        return;
    }
    // Where a signalled change spends its time: one answer of every check, one read of a
    // service (median of 20 plain GETs each, body received and read as the source does),
    // split into the server's answer (until the headers), the body's transfer and the parse.
    let time_get = |path: String| {
        let http = http.clone();
        async move {
            let mut samples = Vec::new();
            for _ in 0..20 {
                let started = Instant::now();
                let response = http.get(&path).send().await.expect("GET");
                let headers = started.elapsed();
                let body = response.bytes().await.expect("body");
                let received = started.elapsed();
                if path.contains("state/any") {
                    Reduced::from_body(&body).expect("checks");
                } else {
                    let _: Vec<meshplane_consul_api::ServiceEntry> =
                        serde_json::from_slice(&body).expect("entries");
                }
                samples.push((started.elapsed(), headers, received, body.len()));
            }
            samples.sort();
            samples[samples.len() / 2]
        }
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (what, path) in [
        ("/v1/health/state/any", "/v1/health/state/any"),
        ("/v1/health/service/<name>", "/v1/health/service/svc-1"),
    ] {
        let (total, headers, received, bytes) = time_get(format!("{url}{path}")).await;
        println!(
            "| one `{what}` answer ({} KiB): GET + parse, median (headers / body received / parsed) | {:.1} ms ({:.1} / {:.1} / {:.1}) |",
            bytes / 1024,
            ms(total),
            ms(headers),
            ms(received),
            ms(total)
        );
    }
    // The source's own work on one answer of every check, apart from the network: parse
    // (borrowed) and reduce to per-service hashes (median of 20).
    let body = http
        .get(format!("{url}/v1/health/state/any"))
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        ms(samples[samples.len() / 2])
    };
    let (mut parse, mut reduce) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let started = Instant::now();
        let checks: Vec<meshplane_consul_api::CheckState<'_>> =
            serde_json::from_slice(&body).expect("checks");
        parse.push(started.elapsed());
        let started = Instant::now();
        std::hint::black_box(Reduced::from_checks(&checks));
        reduce.push(started.elapsed());
    }
    println!(
        "| the source's work on that answer: parse / reduce, median | {:.1} / {:.1} ms |",
        median(parse),
        median(reduce)
    );
    shutdown.cancel();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (title, transport) in [
        ("plain HTTP/1.1 (signals mode)", Transport::Http1),
        (
            "HTTPS with HTTP/2 (multiplexed watches; requests are encrypted, not counted)",
            Transport::Http2,
        ),
    ] {
        println!("\n{title}\n");
        println!("| measure | value |");
        println!("|---|---|");
        runtime.block_on(bench(transport));
    }
}
