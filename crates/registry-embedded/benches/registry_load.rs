//! 1,000 services × 20 instances into the store and out through the Consul-compatible API.
//!
//!     cargo bench -p meshplane-registry-embedded --bench registry_load
//!
//! Prints a Markdown table: time and resident memory per stage. Client and server run in one
//! process, so the API figures include the load generator.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{RegistryEvent, RegistrySource, SourceId, event_channel, store};
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 1_000;
const INSTANCES: usize = 20;
const CONCURRENCY: usize = 64;

fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn row(stage: &str, took: Duration, note: &str) {
    let (rss, peak) = rss_mib();
    println!(
        "| {stage} | {:.1} ms | {rss:.1} | {peak:.1} | {note} |",
        took.as_secs_f64() * 1e3
    );
}

fn mk_instance(s: usize, i: usize) -> Instance {
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
        meta: BTreeMap::from([("version".to_string(), "1".to_string())]),
        weight: 100,
        health: Health::Passing,
        locality: Locality {
            datacenter: "dc1".into(),
            zone: None,
        },
    }
}

fn input() -> BTreeMap<ServiceName, Vec<Instance>> {
    (0..SERVICES)
        .map(|s| {
            (
                ServiceName::new(format!("svc-{s}")).expect("name"),
                (0..INSTANCES).map(|i| mk_instance(s, i)).collect(),
            )
        })
        .collect()
}

fn bench_store() {
    let before = rss_mib().0;
    let services = input();
    let (reader, mut writer) = store();
    let started = Instant::now();
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("bench"),
        services,
    });
    let took = started.elapsed();
    let resident = rss_mib().0 - before;
    row(
        "store: one Replace of 20,000 instances",
        took,
        &format!("atomic full resync; store holds {resident:.1} MiB"),
    );
    assert_eq!(reader.snapshot().instance_count(), SERVICES * INSTANCES);
    drop((reader, writer));

    let (reader, mut writer) = store();
    let services = input();
    let started = Instant::now();
    for (name, instances) in services {
        writer.apply(RegistryEvent::Service {
            source: SourceId::new("bench"),
            name,
            instances,
        });
    }
    row(
        "store: 1,000 per-service events",
        started.elapsed(),
        "one index bump and snapshot each",
    );

    let base = reader.snapshot().index;
    let mut list: Vec<Instance> = (0..INSTANCES).map(|i| mk_instance(7, i)).collect();
    list[3].health = Health::Critical;
    let name = list[3].service.clone();
    let started = Instant::now();
    writer.apply(RegistryEvent::Service {
        source: SourceId::new("bench"),
        name,
        instances: list,
    });
    let diff = reader.snapshot().changed_since(base);
    row(
        "store: one health flip + changed_since",
        started.elapsed(),
        &format!("{diff:?}"),
    );
}

async fn bench_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let registry = EmbeddedRegistry::bind(config.clone()).await.expect("bind");
    let url = format!("http://{}", registry.local_addr());
    let source = registry.source();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(registry.serve(shutdown.clone()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    // Register through the API: each 200 is durable (group commit).
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(SERVICES * INSTANCES);
    for s in 0..SERVICES {
        for i in 0..INSTANCES {
            let (http, url, permits) = (http.clone(), url.clone(), permits.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore");
                let body = serde_json::json!({"Name": format!("svc-{s}"), "ID": format!("svc-{s}-{i}"),
                    "Address": format!("10.{}.{}.{}", s / 256, s % 256, i), "Port": 31001,
                    "Tags": if i.is_multiple_of(10) { vec!["canary"] } else { vec![] }, "Meta": {"version": "1"},
                    "Check": {"TTL": "1h", "Status": "passing"}});
                let r = http.put(format!("{url}/v1/agent/service/register")).json(&body).send().await.expect("register");
                assert!(r.status().is_success());
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    let took = started.elapsed();
    row(
        "API: register 20,000 (64 concurrent clients)",
        took,
        &format!(
            "{:.0} registrations/s, durable",
            20_000.0 / took.as_secs_f64()
        ),
    );

    // Into the store through the embedded source.
    let (reader, writer) = store();
    let (sink, events) = event_channel(1024);
    let started = Instant::now();
    tokio::spawn(writer.run(events, shutdown.clone()));
    tokio::spawn(source.run(sink, shutdown.clone()));
    let mut rx = reader.subscribe();
    rx.wait_for(|s| s.instance_count() == SERVICES * INSTANCES)
        .await
        .expect("store fills");
    row(
        "store fed by the embedded source",
        started.elapsed(),
        "initial Replace of 20,000 instances",
    );

    // Out through the API.
    let started = Instant::now();
    let r = http
        .get(format!("{url}/v1/catalog/services"))
        .send()
        .await
        .expect("catalog");
    let body = r.bytes().await.expect("body");
    row(
        "API: GET /v1/catalog/services",
        started.elapsed(),
        &format!("{} KiB", body.len() / 1024),
    );
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(SERVICES);
    for s in 0..SERVICES {
        let (http, url, permits) = (http.clone(), url.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let r = http
                .get(format!("{url}/v1/health/service/svc-{s}"))
                .send()
                .await
                .expect("health");
            let entries: Vec<serde_json::Value> = r.json().await.expect("json");
            assert_eq!(entries.len(), INSTANCES);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let took = started.elapsed();
    row(
        "API: GET /v1/health/service/:name × 1,000",
        took,
        &format!(
            "{:.0} queries/s, 20 entries each",
            1_000.0 / took.as_secs_f64()
        ),
    );

    shutdown.cancel();
    server.await.expect("server").expect("serves");

    let started = Instant::now();
    let reopened = EmbeddedRegistry::bind(config).await.expect("reopen");
    row("restart: open redb + load 20,000", started.elapsed(), "");
    drop(reopened);
    let size = std::fs::metadata(dir.path().join("registry.redb")).map_or(0, |m| m.len());
    println!("\nDatabase file: {:.1} MiB", size as f64 / 1048576.0);
}

fn main() {
    println!("| stage | time | RSS MiB | peak RSS MiB | note |");
    println!("|---|---|---|---|---|");
    row("baseline", Duration::ZERO, "");
    bench_store();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench_api());
}
