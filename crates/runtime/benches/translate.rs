//! Translation cost of one registry change at the production shape: 1,000 services × 20
//! instances, 1,000 groups of ordinary proxies (each sees its own service and 4 dependencies)
//! and one wildcard group (`service: "*"`, every service).
//!
//! `cargo bench -p meshplane-runtime --bench translate` prints, per kind of change, the time
//! the translator takes from a new registry snapshot to every affected group's snapshot
//! published (p50 / p99 / max over the rounds), and how many groups it published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshplane_model::{Descriptor, Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{RegistryEvent, SourceId, store};
use meshplane_runtime::mesh::{Groups, Translator};
use meshplane_translate::{MeshOptions, ProxyGroup};
use meshplane_xds::{GroupKey, SnapshotCache};

const SERVICES: usize = 1_000;
const INSTANCES: usize = 20;
const DEPENDENCIES: usize = 4;
const ROUNDS: usize = 200;

fn service(s: usize) -> ServiceName {
    ServiceName::new(format!("svc-{s:04}")).expect("valid name")
}

fn instance(s: usize, i: usize, port: u16, health: Health) -> Instance {
    Instance {
        id: InstanceId::new(format!("svc-{s:04}-{i}")).expect("valid id"),
        service: service(s),
        node: format!("node-{i}"),
        address: format!("10.{}.{}.{}", s / 250, s % 250, i + 1),
        port,
        tags: if i.is_multiple_of(10) {
            vec!["canary".into()]
        } else {
            vec![]
        },
        meta: BTreeMap::from([("version".to_owned(), "1".to_owned())]),
        weight: 1,
        health,
        locality: Locality {
            datacenter: "dc1".into(),
            zone: None,
        },
    }
}

fn instances(s: usize, port: u16, failing: Option<usize>) -> Vec<Instance> {
    (0..INSTANCES)
        .map(|i| {
            let health = if failing == Some(i) {
                Health::Critical
            } else {
                Health::Passing
            };
            instance(s, i, port, health)
        })
        .collect()
}

fn group(yaml: &str) -> ProxyGroup {
    ProxyGroup {
        descriptor: Descriptor::from_yaml(yaml).expect("valid descriptor"),
        listen_address: "10.0.0.1".into(),
        datacenter: "dc1".into(),
        proxyless: false,
        proxyless_mtls: false,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, mut times: Vec<Duration>, groups: usize) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| {what} | {groups} | {:.2} | {:.2} | {:.2} |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().expect("rounds")),
    );
}

fn main() {
    let source = SourceId::new("bench");
    let (store, mut writer) = store();
    writer.apply(RegistryEvent::Replace {
        source: source.clone(),
        services: (0..SERVICES)
            .map(|s| (service(s), instances(s, 8080, None)))
            .collect(),
    });

    let groups = Groups::default();
    let mut keys = Vec::new();
    for s in 0..SERVICES {
        let deps: Vec<String> = (1..=DEPENDENCIES)
            .map(|d| format!("{{ service: {} }}", service((s + d) % SERVICES)))
            .collect();
        let yaml = format!(
            "service: {}\nport: 8080\ningress: {{ port: 15000 }}\negress: {{ port: 15001 }}\ndependencies: [{}]\n",
            service(s),
            deps.join(", ")
        );
        let key = GroupKey::new(format!("g-{s}"));
        groups.insert(key.clone(), group(&yaml));
        keys.push(key);
    }
    let wildcard = GroupKey::new("batch");
    groups.insert(
        wildcard.clone(),
        group("service: batch\nport: 8080\ningress: { port: 15000 }\negress: { port: 15001 }\ndependencies: [{ service: \"*\" }]\n"),
    );
    keys.push(wildcard.clone());

    let options = MeshOptions {
        allow_wildcard_dependencies: [ServiceName::new("batch").expect("valid name")].into(),
        ..MeshOptions::default()
    };
    let cache = SnapshotCache::new();
    // Subscribed like connected proxies, so pruning would keep them.
    let mut subscriptions: Vec<_> = keys.iter().map(|k| cache.subscribe(k)).collect();
    let options = Arc::new(options);
    let mut translator = Translator::new(cache.clone(), groups.clone(), options.clone());
    translator.on_registry(store.snapshot());
    let started = Instant::now();
    for key in &keys {
        translator.on_demand(key);
    }
    println!(
        "initial translation of {} groups: {:.0} ms",
        keys.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    woken_groups(&mut subscriptions);
    let wildcard_snapshot = cache.snapshot(&wildcard);
    let wildcard_resources = wildcard_snapshot.as_ref().map_or(0, |s| s.len());
    // The translator keeps the same bytes again, as parts, to patch them.
    let wildcard_routes = wildcard_snapshot
        .as_ref()
        .and_then(|s| {
            s.get(
                meshplane_xds::ResourceType::Route,
                meshplane_translate::names::EGRESS_ROUTES,
            )
            .map(|r| r.encoded_any().len())
        })
        .unwrap_or(0);
    println!(
        "wildcard group: {wildcard_resources} resources; egress routes {:.0} KiB encoded",
        wildcard_routes as f64 / 1024.0
    );

    println!();
    println!("| change (one service) | groups published | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---:|---:|---:|---:|");
    let mut change = |what: &str, event: &dyn Fn(usize, usize) -> RegistryEvent| {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut woken = 0;
        for round in 0..ROUNDS {
            let s = (round * 7) % SERVICES;
            writer.apply(event(s, round));
            let started = Instant::now();
            translator.on_registry(store.snapshot());
            times.push(started.elapsed());
            woken += woken_groups(&mut subscriptions);
        }
        report(what, times, woken / ROUNDS);
    };
    change("health flip (endpoints only)", &|s, round| {
        RegistryEvent::Service {
            source: source.clone(),
            name: service(s),
            instances: instances(s, 8080, Some(round % INSTANCES)),
        }
    });
    change("instance added (endpoints only)", &|s, round| {
        let mut list = instances(s, 8080, None);
        list.push(instance(s, 100 + round, 8080, Health::Passing));
        RegistryEvent::Service {
            source: source.clone(),
            name: service(s),
            instances: list,
        }
    });
    change(
        "service removed / re-added (cluster, endpoints, virtual host)",
        &|s, round| {
            let present = round % 2 == 1;
            RegistryEvent::Service {
                source: source.clone(),
                name: service(s),
                instances: if present {
                    instances(s, 8080, None)
                } else {
                    vec![]
                },
            }
        },
    );

    // A storm through the translator task: every service changes within about a second.
    drop(subscriptions);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(storm(Storm {
        store,
        writer,
        source,
        groups,
        options,
        keys,
        wildcard,
    }));
}

struct Storm {
    store: meshplane_registry::Store,
    writer: meshplane_registry::Writer,
    source: SourceId,
    groups: Groups,
    options: Arc<MeshOptions>,
    keys: Vec<GroupKey>,
    wildcard: GroupKey,
}

/// Every service's endpoints change once, 10 services every 10 ms (1,000 in ~1 s), while the
/// translator task runs; each group's snapshot changes are counted (each would be one push to
/// each of its proxies), and the final state is compared with a translation from scratch.
async fn storm(mut storm: Storm) {
    let cache = SnapshotCache::new();
    let mut translator =
        Translator::new(cache.clone(), storm.groups.clone(), storm.options.clone());
    translator.on_registry(storm.store.snapshot());
    for key in &storm.keys {
        translator.on_demand(key);
    }
    let counters: Vec<_> = storm
        .keys
        .iter()
        .map(|key| {
            let mut rx = cache.subscribe(key);
            rx.borrow_and_update();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while rx.changed().await.is_ok() {
                    rx.borrow_and_update();
                    seen.push(Instant::now());
                }
                seen
            })
        })
        .collect();
    let (_demand_tx, demand_rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(translator.run(storm.store.clone(), demand_rx, shutdown.clone()));

    let started = Instant::now();
    for s in 0..SERVICES {
        storm.writer.apply(RegistryEvent::Service {
            source: storm.source.clone(),
            name: service(s),
            instances: instances(s, 9090, None),
        });
        if s % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let last_change = Instant::now();
    // Quiet for 1 s: everything has been translated.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    let _ = task.await;
    // The counters end when the cache (and with it every group's sender) is dropped.
    let snapshots: Vec<_> = storm.keys.iter().map(|k| cache.snapshot(k)).collect();
    drop(cache);
    let mut pushes = Vec::new();
    let mut settled = last_change;
    for (i, counter) in counters.into_iter().enumerate() {
        let seen = counter.await.unwrap_or_default();
        if let Some(last) = seen.last() {
            settled = settled.max(*last);
        }
        pushes.push((seen.len(), storm.keys[i] == storm.wildcard));
    }
    // The final state equals a translation from scratch.
    let fresh_cache = SnapshotCache::new();
    let mut fresh = Translator::new(fresh_cache.clone(), storm.groups, storm.options);
    fresh.on_registry(storm.store.snapshot());
    let mut exact = 0;
    for (key, snapshot) in storm.keys.iter().zip(snapshots) {
        fresh.on_demand(key);
        let same = match (snapshot, fresh_cache.snapshot(key)) {
            (Some(a), Some(b)) => a.digest() == b.digest(),
            _ => false,
        };
        exact += usize::from(same);
    }
    let ordinary: Vec<usize> = pushes.iter().filter(|(_, w)| !w).map(|(n, _)| *n).collect();
    let wildcard: Vec<usize> = pushes.iter().filter(|(_, w)| *w).map(|(n, _)| *n).collect();
    println!();
    println!(
        "storm: {SERVICES} services changed in {:.0} ms; the last group settled {:.0} ms after the last change; \
         snapshots per group: ordinary max {} (mean {:.1}), wildcard {}; {exact}/{} groups equal a fresh translation",
        (last_change - started).as_secs_f64() * 1e3,
        (settled - last_change).as_secs_f64() * 1e3,
        ordinary.iter().max().copied().unwrap_or(0),
        ordinary.iter().sum::<usize>() as f64 / ordinary.len().max(1) as f64,
        wildcard.iter().max().copied().unwrap_or(0),
        storm.keys.len(),
    );
}

/// How many groups got a new snapshot since the last call.
fn woken_groups(subscriptions: &mut [meshplane_xds::SnapshotRx]) -> usize {
    subscriptions
        .iter_mut()
        .filter(|rx| rx.has_changed().unwrap_or(false))
        .map(|rx| rx.borrow_and_update())
        .count()
}
