//! The cost of following a datacenter of 1,000 services × 20 instances.
//!
//!     cargo bench -p meshplane-remote --bench sync
//!
//! dc2's store is loaded directly; its export is served over HTTP on 127.0.0.1 and followed by
//! a `RemoteSource` feeding dc1's store, in the same process. Prints a Markdown table: each
//! stage's wall time, the process CPU time it used, and the bytes on the wire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{RegistryEvent, RegistrySource, SourceId, Store};
use meshplane_remote::{LocalState, RemoteConfig, RemoteSource, wire};
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 1_000;
const INSTANCES: usize = 20;
const CHANGES: usize = 50;
const NOT_MODIFIED: usize = 200;

fn instance(s: usize, i: usize, health: Health) -> Instance {
    Instance {
        id: InstanceId::new(format!("svc-{s}-{i}")).expect("id"),
        service: ServiceName::new(format!("svc-{s}")).expect("name"),
        node: format!("node-{i}"),
        address: format!("10.{}.{}.{}", s / 256, s % 256, i),
        port: 31001,
        tags: if i.is_multiple_of(10) {
            vec!["canary".into()]
        } else {
            vec![]
        },
        meta: BTreeMap::from([("protocol".to_string(), "http1".to_string())]),
        weight: 100,
        health,
        locality: Locality {
            datacenter: "dc2".into(),
            zone: None,
        },
    }
}

/// CPU time of this process (user + system), from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |n: usize| {
        fields
            .get(n)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn count(store: &Store) -> usize {
    store.snapshot().instance_count()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let shutdown = CancellationToken::new();
    let (dc2, mut writer) = meshplane_registry::store();
    let services: BTreeMap<ServiceName, Vec<Instance>> = (0..SERVICES)
        .map(|s| {
            (
                ServiceName::new(format!("svc-{s}")).expect("name"),
                (0..INSTANCES)
                    .map(|i| instance(s, i, Health::Passing))
                    .collect(),
            )
        })
        .collect();
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("embedded"),
        services,
    });

    println!("| stage | wall | CPU (process) | bytes | note |");
    println!("|---|---:|---:|---:|---|");
    let (t, c) = (Instant::now(), cpu());
    let export = wire::Export::build("dc2", &dc2.snapshot(), None);
    let (build_wall, build_cpu) = (t.elapsed(), cpu() - c);
    println!(
        "| build the export (20,000 instances → JSON + version) | {:.1} ms | {:.0} ms | {} | from scratch (the first request; later states re-encode only the services that changed) |",
        ms(build_wall),
        ms(build_cpu),
        export.json().len()
    );
    let (t, c) = (Instant::now(), cpu());
    let gzip = export.gzip();
    println!(
        "| gzip it | {:.1} ms | {:.0} ms | {} | once per state, shared by every follower (a full state is sent to a follower that holds nothing, or a version the remote no longer remembers) |",
        ms(t.elapsed()),
        ms(cpu() - c),
        gzip.len()
    );
    // One service changes: the export is rebuilt from the previous one.
    writer.apply(RegistryEvent::Service {
        source: SourceId::new("embedded"),
        name: ServiceName::new("svc-500").expect("name"),
        instances: (0..INSTANCES)
            .map(|i| {
                instance(
                    500,
                    i,
                    if i == 0 {
                        Health::Critical
                    } else {
                        Health::Passing
                    },
                )
            })
            .collect(),
    });
    let (t, c) = (Instant::now(), cpu());
    let next = wire::Export::build("dc2", &dc2.snapshot(), Some(&export));
    let change_set = next.changes_since(&export).expect("changed");
    println!(
        "| one service changed: rebuild from the previous export + its change set | {:.2} ms | {:.0} ms | {} | what a follower holding the previous version is sent |",
        ms(t.elapsed()),
        ms(cpu() - c),
        change_set.len()
    );
    let (t, c) = (Instant::now(), cpu());
    let inflated = wire::inflate(&gzip, 256 << 20).expect("inflate");
    let state = wire::decode("dc2", &wire::Held::default(), &inflated).expect("decode");
    println!(
        "| follower: inflate + check + decode | {:.1} ms | {:.0} ms | | {} services |",
        ms(t.elapsed()),
        ms(cpu() - c),
        state.services.len()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            meshplane_remote::router(
                LocalState::new("dc2", dc2.clone()),
                meshplane_remote::Followed::default(),
            ),
        )
        .with_graceful_shutdown(s.cancelled_owned())
        .await
    });

    // "Not modified": what an unchanged datacenter costs per request.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://{addr}{}", meshplane_remote::export::PATH);
    let first = http.get(&url).send().await.expect("first");
    let version = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("etag")
        .to_owned();
    let _ = first.bytes().await;
    let (t, c) = (Instant::now(), cpu());
    for _ in 0..NOT_MODIFIED {
        let r = http
            .get(&url)
            .header("if-none-match", &version)
            .send()
            .await
            .expect("304");
        assert_eq!(r.status().as_u16(), 304);
    }
    println!(
        "| `304 Not Modified` (If-None-Match), per request | {:.3} ms | {:.2} ms | 0 (body) | mean of {NOT_MODIFIED}, client and server |",
        ms(t.elapsed()) / NOT_MODIFIED as f64,
        ms(cpu() - c) / NOT_MODIFIED as f64
    );

    // The follower: initial sync, then one change at a time.
    let (dc1, dc1_writer) = meshplane_registry::store();
    let (sink, events) = meshplane_registry::event_channel(64);
    tokio::spawn(dc1_writer.run(events, shutdown.clone()));
    let source = RemoteSource::new(RemoteConfig {
        datacenter: "dc2".into(),
        urls: vec![format!("http://{addr}")],
        ..RemoteConfig::default()
    })
    .expect("source");
    let (t, c) = (Instant::now(), cpu());
    tokio::spawn(source.run(sink, shutdown.clone()));
    while count(&dc1) < SERVICES * INSTANCES {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "| follower's initial sync (request → dc1's store holds all 20,000) | {:.1} ms | {:.0} ms | {} | gzip on the wire |",
        ms(t.elapsed()),
        ms(cpu() - c),
        gzip.len()
    );

    let mut latencies = Vec::with_capacity(CHANGES);
    let mut changes = dc1.subscribe();
    let c = cpu();
    for n in 0..CHANGES {
        // A different service each time, its first instance going critical.
        let s = n * 7 % SERVICES;
        let health = Health::Critical;
        let name = ServiceName::new(format!("svc-{s}")).expect("name");
        let t = Instant::now();
        writer.apply(RegistryEvent::Service {
            source: SourceId::new("embedded"),
            name: name.clone(),
            instances: (0..INSTANCES)
                .map(|i| instance(s, i, if i == 0 { health } else { Health::Passing }))
                .collect(),
        });
        loop {
            let snapshot = changes.borrow_and_update().clone();
            if snapshot
                .service(name.as_str())
                .is_some_and(|e| e.instances[0].health == health)
            {
                break;
            }
            changes.changed().await.expect("dc1's store");
        }
        let took = t.elapsed();
        latencies.push(took);
    }
    let per_change_cpu = (cpu() - c) / CHANGES as u32;
    latencies.sort();
    println!(
        "| one change in dc2 → in dc1's store (HTTP, long poll), p50 / p99 / max of {CHANGES} | {:.1} / {:.1} / {:.1} ms | {:.0} ms per change | {} | the changed service only, both ends |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
        ms(per_change_cpu),
        change_set.len()
    );
    shutdown.cancel();
}
