//! The xDS cost of a proxyless gRPC client against a sidecar's Envoy with the same
//! descriptor: 4 dependencies of 20 instances each (one in ten a canary), in one datacenter.
//!
//! `cargo bench -p meshplane-runtime --bench proxyless` prints, for each kind of client, the
//! resources of its group's snapshot per type and their encoded bytes (what a client is sent
//! when it connects over SotW: every resource once), the bytes re-sent when one instance of
//! one dependency changes weight, and the translator's time for one group (p50 over rounds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshplane_model::{Descriptor, Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{RegistryEvent, SourceId, store};
use meshplane_runtime::mesh::{Groups, Translator};
use meshplane_translate::{MeshOptions, ProxyGroup};
use meshplane_xds::{GroupKey, ResourceType, Snapshot, SnapshotCache};

const DEPENDENCIES: usize = 4;
const INSTANCES: usize = 20;
const ROUNDS: usize = 200;

fn service(s: usize) -> ServiceName {
    ServiceName::new(format!("svc-{s:04}")).expect("valid name")
}

fn instances(s: usize, weight_of_first: u32) -> Vec<Instance> {
    (0..INSTANCES)
        .map(|i| Instance {
            id: InstanceId::new(format!("svc-{s:04}-{i}")).expect("valid id"),
            service: service(s),
            node: format!("node-{i}"),
            address: format!("10.0.{s}.{}", i + 1),
            port: 8080,
            tags: if i % 10 == 0 {
                vec!["canary".into()]
            } else {
                vec![]
            },
            meta: BTreeMap::new(),
            weight: if i == 0 { weight_of_first } else { 1 },
            health: Health::Passing,
            locality: Locality {
                datacenter: "dc1".into(),
                zone: None,
            },
        })
        .collect()
}

/// Resources per type and total encoded bytes of a snapshot.
fn size(snapshot: &Snapshot) -> (BTreeMap<&'static str, usize>, usize) {
    let mut counts = BTreeMap::new();
    let mut bytes = 0;
    for (kind, label) in [
        (ResourceType::Cluster, "CDS"),
        (ResourceType::Endpoint, "EDS"),
        (ResourceType::Listener, "LDS"),
        (ResourceType::Route, "RDS"),
    ] {
        let resources = snapshot.resources(kind);
        counts.insert(label, resources.len());
        bytes += resources
            .values()
            .map(|r| r.encoded_any().len())
            .sum::<usize>();
    }
    (counts, bytes)
}

/// Encoded bytes of the resources of `after` that are new or changed since `before`.
fn changed_bytes(before: &Snapshot, after: &Snapshot) -> usize {
    let mut bytes = 0;
    for kind in [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        for (name, r) in after.resources(kind) {
            if before.get(kind, name).map(|b| b.version()) != Some(r.version()) {
                bytes += r.encoded_any().len();
            }
        }
    }
    bytes
}

fn main() {
    let source = SourceId::new("bench");
    let (store, mut writer) = store();
    writer.apply(RegistryEvent::Replace {
        source: source.clone(),
        services: (1..=DEPENDENCIES)
            .map(|s| (service(s), instances(s, 1)))
            .collect(),
    });
    let deps: Vec<String> = (1..=DEPENDENCIES)
        .map(|d| format!("{{ service: {} }}", service(d)))
        .collect();
    let yaml = format!(
        "service: checkout\nport: 8080\ningress: {{ port: 15000 }}\negress: {{ port: 15001 }}\ndependencies: [{}]\n",
        deps.join(", ")
    );
    let groups = Groups::default();
    let mut keys = Vec::new();
    for (label, proxyless) in [("sidecar (Envoy)", false), ("proxyless gRPC", true)] {
        let key = GroupKey::new(label);
        groups.insert(
            key.clone(),
            ProxyGroup {
                descriptor: Descriptor::from_yaml(&yaml).expect("valid descriptor"),
                listen_address: "10.0.0.1".into(),
                datacenter: "dc1".into(),
                proxyless,
                proxyless_mtls: false,
            },
        );
        keys.push((label, key));
    }
    let cache = SnapshotCache::new();
    let _subscriptions: Vec<_> = keys.iter().map(|(_, k)| cache.subscribe(k)).collect();
    let mut translator = Translator::new(cache.clone(), groups, Arc::new(MeshOptions::default()));
    translator.on_registry(store.snapshot());
    for (_, key) in &keys {
        translator.on_demand(key);
    }
    let before: Vec<Arc<Snapshot>> = keys
        .iter()
        .map(|(_, k)| cache.snapshot(k).expect("published"))
        .collect();
    writer.apply(RegistryEvent::Service {
        source,
        name: service(1),
        instances: instances(1, 5),
    });
    translator.on_registry(store.snapshot());

    println!(
        "{DEPENDENCIES} dependencies × {INSTANCES} instances (1 in 10 a canary), one datacenter\n"
    );
    println!(
        "| client | CDS | EDS | LDS | RDS | bytes on connect | bytes re-sent for one weight change | translation of the group, p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ((label, key), before) in keys.iter().zip(&before) {
        let after = cache.snapshot(key).expect("published");
        let (counts, bytes) = size(&after);
        let mut times: Vec<Duration> = (0..ROUNDS)
            .map(|_| {
                // A full translation of the group (its services' shared resources are
                // cached, as in production once any group has built them).
                let started = Instant::now();
                translator.on_demand(key);
                started.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "| {label} | {} | {} | {} | {} | {bytes} | {} | {:.1} µs |",
            counts["CDS"],
            counts["EDS"],
            counts["LDS"],
            counts["RDS"],
            changed_bytes(before, &after),
            times[ROUNDS / 2].as_secs_f64() * 1e6,
        );
    }
}
