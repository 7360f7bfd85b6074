use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Struct;
use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{RegistryEvent, SourceId};
use meshplane_translate::MeshOptions;
use meshplane_xds::{GroupError, GroupKey, NodeGrouper, PeerInfo, SnapshotCache};

use super::{DescriptorGrouper, Groups, Translator};

pub(super) fn yaml_to_struct(yaml: &str) -> Struct {
    let json: serde_json::Value = serde_norway::from_str(yaml).expect("yaml");
    fn to_value(v: &serde_json::Value) -> envoy_types::pb::google::protobuf::Value {
        use envoy_types::pb::google::protobuf::{ListValue, Value, value::Kind};
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Array(a) => Kind::ListValue(ListValue {
                values: a.iter().map(to_value).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(Struct {
                fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
            }),
        };
        Value { kind: Some(kind) }
    }
    match to_value(&json).kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StructValue(s)) => s,
        _ => panic!("descriptor is a map"),
    }
}

pub(super) fn mk_node(id: &str, yaml: &str) -> Node {
    let metadata = yaml_to_struct(yaml);
    let service = yaml
        .lines()
        .find_map(|l| l.strip_prefix("service: "))
        .unwrap_or_default();
    Node {
        id: id.into(),
        cluster: service.into(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

/// A node whose sidecar says it runs in `datacenter` (`node.locality.zone`).
pub(super) fn mk_node_in(id: &str, yaml: &str, datacenter: &str) -> Node {
    Node {
        locality: Some(envoy_types::pb::envoy::config::core::v3::Locality {
            zone: datacenter.into(),
            ..Default::default()
        }),
        ..mk_node(id, yaml)
    }
}

/// An instance on `port`, in dc2 when the port is odd and dc1 otherwise: changes that move
/// instances between ports move them between datacenters too.
fn mk_spread_instance(service: &str, tags: &[&str], port: u16) -> Instance {
    let mut i = mk_instance(service, &format!("{service}-{port}"), port);
    i.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    i.locality.datacenter = if port % 2 == 1 { "dc2" } else { "dc1" }.into();
    i
}

/// The first full sync of `source`, with no services: a registry that is loaded.
/// A grouper and a translator over a fresh, synced store, wired as the control plane wires
/// them (the translator is driven by hand: `on_registry`, `on_demand`).
pub(super) struct Harness {
    pub options: Arc<MeshOptions>,
    pub groups: Groups,
    pub grouper: DescriptorGrouper,
    pub cache: SnapshotCache,
    pub translator: Translator,
    pub store: meshplane_registry::Store,
    pub writer: meshplane_registry::Writer,
    pub source: SourceId,
}

impl Harness {
    pub(super) fn new(options: MeshOptions) -> Harness {
        let options = Arc::new(options);
        let groups = Groups::default();
        let cache = SnapshotCache::new();
        let (store, mut writer) = meshplane_registry::store();
        let source = SourceId::new("test");
        writer.apply(synced(&source));
        Harness {
            grouper: DescriptorGrouper::new(groups.clone(), options.clone()),
            translator: Translator::new(cache.clone(), groups.clone(), options.clone()),
            options,
            groups,
            cache,
            store,
            writer,
            source,
        }
    }

    /// Applies `event` and lets the translator see the new registry.
    pub(super) fn apply(&mut self, event: RegistryEvent) {
        self.writer.apply(event);
        self.translator.on_registry(self.store.snapshot());
    }
}

/// `node` with `node.metadata.proxyless: kind` (`grpc` for a proxyless gRPC client).
pub(super) fn proxyless(mut node: Node, kind: &str) -> Node {
    if let Some(m) = node.metadata.as_mut() {
        m.fields.insert(
            meshplane_model::node_metadata::PROXYLESS_KEY.into(),
            envoy_types::pb::google::protobuf::Value {
                kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                    kind.into(),
                )),
            },
        );
    }
    node
}

pub(super) fn synced(source: &SourceId) -> RegistryEvent {
    RegistryEvent::Replace {
        source: source.clone(),
        services: Default::default(),
    }
}

pub(super) fn mk_instance(service: &str, id: &str, port: u16) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: ServiceName::new(service).expect("name"),
        node: "n".into(),
        address: "127.0.0.1".into(),
        port,
        tags: vec![],
        meta: BTreeMap::new(),
        weight: 1,
        health: Health::Passing,
        locality: Locality {
            datacenter: "dc1".into(),
            zone: None,
        },
    }
}

pub(super) const ORDERS: &str = "service: orders\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\ndependencies: [{ service: payments }]\n";
pub(super) const WEB: &str = "service: web\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\ndependencies: [{ service: orders }]\n";

#[test]
fn identical_descriptors_share_a_group_and_bad_ones_get_field_errors() {
    let grouper = DescriptorGrouper::new(Groups::default(), Arc::new(MeshOptions::default()));
    let peer = PeerInfo::default();
    let a = grouper
        .group(&mk_node("orders-1", ORDERS), &peer)
        .expect("valid");
    let b = grouper
        .group(&mk_node("orders-2", ORDERS), &peer)
        .expect("valid");
    assert_eq!(a, b, "same descriptor, same group");
    let all_stats = format!("{ORDERS}stats: {{ include: all }}\n");
    let d = grouper
        .group(&mk_node("orders-5", &all_stats), &peer)
        .expect("valid");
    assert_eq!(
        a, d,
        "statistics are the sidecar's: same configuration, same group"
    );
    let c = grouper.group(&mk_node("web-1", WEB), &peer).expect("valid");
    assert_ne!(a, c);
    let all_logged = format!("{ORDERS}access_log: all\n");
    let e = grouper
        .group(&mk_node("orders-6", &all_logged), &peer)
        .expect("valid");
    assert_ne!(a, e, "access logs are configuration: another group");
    match grouper.group(
        &mk_node("orders-7", &format!("{ORDERS}access_log: loud\n")),
        &peer,
    ) {
        Err(GroupError::InvalidArgument(m)) => {
            assert!(m.contains("access_log: `loud` is not a choice"), "{m}")
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }

    let bad = "service: orders\nport: 1\ningress: { port: 2 }\ndependencies: [{ service: payments, timeout: soon }]\n";
    match grouper.group(&mk_node("orders-3", bad), &peer) {
        Err(GroupError::InvalidArgument(m)) => {
            assert!(m.contains("dependencies[0].timeout"), "{m}")
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    let mut liar = mk_node("orders-4", ORDERS);
    liar.cluster = "payments".into();
    match grouper.group(&liar, &peer) {
        Err(GroupError::InvalidArgument(m)) => {
            assert!(m.contains("differs from the descriptor's service"), "{m}")
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    let wildcard =
        "service: hadoop\nport: 1\ningress: { port: 2 }\ndependencies: [{ service: \"*\" }]\n";
    match grouper.group(&mk_node("hadoop-1", wildcard), &peer) {
        Err(GroupError::InvalidArgument(m)) => {
            assert!(m.contains("allow_wildcard_dependencies"), "{m}")
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[test]
fn a_registry_change_recomputes_only_the_groups_that_see_it() {
    let groups = Groups::default();
    let grouper = DescriptorGrouper::new(groups.clone(), Arc::new(MeshOptions::default()));
    let cache = SnapshotCache::new();
    let mut translator = Translator::new(cache.clone(), groups, Arc::new(MeshOptions::default()));
    let (store, mut writer) = meshplane_registry::store();
    let source = SourceId::new("test");
    let services = [
        (
            ServiceName::new("payments").expect("name"),
            vec![mk_instance("payments", "p1", 10)],
        ),
        (
            ServiceName::new("orders").expect("name"),
            vec![mk_instance("orders", "o1", 20)],
        ),
    ]
    .into_iter()
    .collect();
    writer.apply(RegistryEvent::Replace {
        source: source.clone(),
        services,
    });
    translator.on_registry(store.snapshot());

    let peer = PeerInfo::default();
    let orders: GroupKey = grouper
        .group(&mk_node("orders-1", ORDERS), &peer)
        .expect("valid");
    let web: GroupKey = grouper.group(&mk_node("web-1", WEB), &peer).expect("valid");
    let mut orders_rx = cache.subscribe(&orders);
    let mut web_rx = cache.subscribe(&web);
    translator.on_demand(&orders);
    translator.on_demand(&web);
    let orders_v1 = orders_rx
        .borrow_and_update()
        .clone()
        .expect("orders snapshot");
    let web_v1 = web_rx.borrow_and_update().clone().expect("web snapshot");
    assert!(
        orders_v1
            .get(meshplane_xds::ResourceType::Cluster, "payments")
            .is_some()
    );
    assert!(
        web_v1
            .get(meshplane_xds::ResourceType::Cluster, "payments")
            .is_none(),
        "web only sees its dependencies"
    );

    // payments changes: orders is recomputed, web is not touched.
    writer.apply(RegistryEvent::Service {
        source,
        name: ServiceName::new("payments").expect("name"),
        instances: vec![
            mk_instance("payments", "p1", 10),
            mk_instance("payments", "p2", 11),
        ],
    });
    translator.on_registry(store.snapshot());
    assert!(orders_rx.has_changed().expect("open"));
    assert!(
        !web_rx.has_changed().expect("open"),
        "web does not depend on payments"
    );
    let orders_v2 = orders_rx.borrow_and_update().clone().expect("snapshot");
    // The shared cluster resource is the same Arc; only endpoints changed.
    let c1 = orders_v1
        .get(meshplane_xds::ResourceType::Cluster, "payments")
        .expect("cluster");
    let c2 = orders_v2
        .get(meshplane_xds::ResourceType::Cluster, "payments")
        .expect("cluster");
    assert_eq!(c1.version(), c2.version());
    let e1 = orders_v1
        .get(meshplane_xds::ResourceType::Endpoint, "payments")
        .expect("eds");
    let e2 = orders_v2
        .get(meshplane_xds::ResourceType::Endpoint, "payments")
        .expect("eds");
    assert_ne!(e1.version(), e2.version());
}

pub(super) const BATCH: &str = "service: batch\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\ndependencies: [{ service: \"*\" }]\n";

/// A wildcard group and an ordinary one, translated incrementally through a series of
/// changes, always equal what a translator starting from the same registry builds from
/// scratch; endpoint-only changes leave the route alone.
#[test]
fn incremental_updates_equal_a_fresh_translation() {
    let options = Arc::new(MeshOptions {
        allow_wildcard_dependencies: [ServiceName::new("batch").expect("name")].into(),
        ..MeshOptions::default()
    });
    let groups = Groups::default();
    let grouper = DescriptorGrouper::new(groups.clone(), options.clone());
    let peer = PeerInfo::default();
    let batch = grouper
        .group(&mk_node("batch-1", BATCH), &peer)
        .expect("valid");
    let orders = grouper
        .group(&mk_node("orders-1", ORDERS), &peer)
        .expect("valid");
    // The same services' proxies in another datacenter, served by the same control plane.
    let batch_dc2 = grouper
        .group(&mk_node_in("batch-2", BATCH, "dc2"), &peer)
        .expect("valid");
    let orders_dc2 = grouper
        .group(&mk_node_in("orders-2", ORDERS, "dc2"), &peer)
        .expect("valid");
    let cache = SnapshotCache::new();
    let mut translator = Translator::new(cache.clone(), groups.clone(), options.clone());
    let (store, mut writer) = meshplane_registry::store();
    let source = SourceId::new("test");
    let payments = ServiceName::new("payments").expect("name");
    let service = |name: &str, tags: &[&str], ports: &[u16]| RegistryEvent::Service {
        source: source.clone(),
        name: ServiceName::new(name).expect("name"),
        instances: ports
            .iter()
            .map(|p| mk_spread_instance(name, tags, *p))
            .collect(),
    };
    writer.apply(synced(&source));
    writer.apply(service("payments", &[], &[10]));
    writer.apply(service("orders", &[], &[20]));
    translator.on_registry(store.snapshot());
    let all = [&batch, &orders, &batch_dc2, &orders_dc2];
    let _subscribed: Vec<_> = all.iter().map(|k| cache.subscribe(k)).collect();
    for key in all {
        translator.on_demand(key);
    }

    let route = |key: &GroupKey| {
        cache
            .snapshot(key)
            .and_then(|s| {
                s.get(
                    meshplane_xds::ResourceType::Route,
                    meshplane_translate::names::EGRESS_ROUTES,
                )
                .cloned()
            })
            .expect("egress routes")
    };
    let steps: Vec<(&str, RegistryEvent, bool)> = vec![
        ("payments moves", service("payments", &[], &[10, 11]), false),
        (
            "payments gets a canary",
            service("payments", &["canary"], &[10, 11]),
            true,
        ),
        ("a new service", service("ledger", &[], &[30]), true),
        (
            "ledger's instance moves",
            service("ledger", &[], &[31]),
            false,
        ),
        ("payments leaves", service("payments", &[], &[]), true),
        ("payments comes back", service("payments", &[], &[12]), true),
    ];
    for (what, event, route_changes) in steps {
        let before = route(&batch);
        writer.apply(event);
        translator.on_registry(store.snapshot());
        // A fresh translator over the same registry and groups.
        let fresh_cache = SnapshotCache::new();
        let mut fresh = Translator::new(fresh_cache.clone(), groups.clone(), options.clone());
        fresh.on_registry(store.snapshot());
        for key in all {
            fresh.on_demand(key);
            let incremental = cache.snapshot(key).expect("published");
            let scratch = fresh_cache.snapshot(key).expect("published");
            assert_eq!(incremental.digest(), scratch.digest(), "{what}: {key}");
        }
        assert_eq!(
            route(&batch).version() != before.version(),
            route_changes,
            "{what}: the wildcard group's routes"
        );
    }
    assert!(
        cache
            .snapshot(&orders)
            .and_then(|s| s
                .get(meshplane_xds::ResourceType::Cluster, payments.as_str())
                .cloned())
            .is_some()
    );
}

const BATCH_NO_EGRESS: &str =
    "service: batch\nport: 1\ningress: { port: 2 }\ndependencies: [{ service: \"*\" }]\n";

/// Services appearing, leaving and changing tags (alone or with other changes in one pass)
/// patch every group's snapshot (wildcard groups with and without egress, groups of named
/// dependencies) instead of translating it again, and each patched snapshot equals what a
/// translator starting from the same registry builds from scratch.
#[test]
fn reshapes_patch_snapshots_equal_to_a_fresh_translation() {
    use meshplane_xds::ResourceType;

    let options = Arc::new(MeshOptions {
        allow_wildcard_dependencies: [ServiceName::new("batch").expect("name")].into(),
        ..MeshOptions::default()
    });
    let groups = Groups::default();
    let grouper = DescriptorGrouper::new(groups.clone(), options.clone());
    let peer = PeerInfo::default();
    // Every kind of group in two datacenters, served by the same control plane.
    let keys: Vec<GroupKey> = [
        ("batch-1", BATCH),
        ("batch-2", BATCH_NO_EGRESS),
        ("orders-1", ORDERS),
        ("web-1", WEB),
    ]
    .into_iter()
    .flat_map(|(id, yaml)| {
        [
            grouper.group(&mk_node(id, yaml), &peer).expect("valid"),
            grouper
                .group(&mk_node_in(id, yaml, "dc2"), &peer)
                .expect("valid"),
        ]
    })
    .collect();
    let cache = SnapshotCache::new();
    let mut translator = Translator::new(cache.clone(), groups.clone(), options.clone());
    let (store, mut writer) = meshplane_registry::store();
    let source = SourceId::new("test");
    let service = |name: &str, tags: &[&str], ports: &[u16]| RegistryEvent::Service {
        source: source.clone(),
        name: ServiceName::new(name).expect("name"),
        instances: ports
            .iter()
            .map(|p| mk_spread_instance(name, tags, *p))
            .collect(),
    };
    writer.apply(synced(&source));
    writer.apply(service("payments", &[], &[10]));
    writer.apply(service("orders", &[], &[20]));
    translator.on_registry(store.snapshot());
    let _subscribed: Vec<_> = keys.iter().map(|k| cache.subscribe(k)).collect();
    for key in &keys {
        translator.on_demand(key);
    }

    let steps: Vec<(&str, Vec<RegistryEvent>)> = vec![
        (
            "ledger appears",
            vec![service("ledger", &["canary"], &[30, 31])],
        ),
        (
            "payments gets tags",
            vec![service("payments", &["canary", "eu"], &[10])],
        ),
        ("orders leaves", vec![service("orders", &[], &[])]),
        (
            "ledger drops its tag",
            vec![service("ledger", &[], &[30, 31])],
        ),
        (
            "orders comes back with a tag",
            vec![service("orders", &["v2"], &[21, 22])],
        ),
        (
            "ledger leaves as payments moves",
            vec![
                service("ledger", &[], &[]),
                service("payments", &["canary", "eu"], &[11]),
            ],
        ),
        ("payments leaves", vec![service("payments", &[], &[])]),
        (
            "payments and ledger come back",
            vec![
                service("payments", &[], &[12, 13]),
                service("ledger", &["eu"], &[32]),
            ],
        ),
    ];
    for (what, events) in steps {
        let before: Vec<_> = keys
            .iter()
            .map(|k| cache.snapshot(k).expect("published"))
            .collect();
        for event in events {
            writer.apply(event);
        }
        translator.on_registry(store.snapshot());
        let fresh_cache = SnapshotCache::new();
        let mut fresh = Translator::new(fresh_cache.clone(), groups.clone(), options.clone());
        fresh.on_registry(store.snapshot());
        for (key, before) in keys.iter().zip(before) {
            fresh.on_demand(key);
            let patched = cache.snapshot(key).expect("published");
            let scratch = fresh_cache.snapshot(key).expect("published");
            assert_eq!(patched.digest(), scratch.digest(), "{what}: {key}");
            for kind in ResourceType::ALL {
                let names = |s: &meshplane_xds::Snapshot| -> Vec<(String, String)> {
                    s.resources(kind)
                        .iter()
                        .map(|(n, r)| (n.clone(), r.version().to_owned()))
                        .collect()
                };
                assert_eq!(names(&patched), names(&scratch), "{what}: {key}: {kind}");
            }
            assert_eq!(
                translator.tracked_services(key),
                fresh.tracked_services(key),
                "{what}: {key}: the services it is tracked as depending on"
            );
            // Patched, not translated again: the listeners are the very same resources.
            for (name, listener) in before.resources(ResourceType::Listener) {
                let now = patched.get(ResourceType::Listener, name).expect("listener");
                assert!(
                    Arc::ptr_eq(listener, now),
                    "{what}: {key} was translated again"
                );
            }
        }
    }
    let wildcard = cache.snapshot(&keys[0]).expect("published");
    assert!(wildcard.get(ResourceType::Cluster, "ledger").is_some());
}

/// A burst of registry changes (one every millisecond for 200 ms) reaches a group in a few
/// coalesced passes, at most one per `MIN_PASS_INTERVAL`, ending in the final state; a change
/// after a quiet period is translated at once.
#[tokio::test(start_paused = true)]
async fn bursts_are_coalesced_and_a_quiet_change_goes_out_at_once() {
    use super::translator::MIN_PASS_INTERVAL;
    use meshplane_xds::ResourceType;
    use tokio::time::{Duration, Instant, sleep};

    let groups = Groups::default();
    let options = Arc::new(MeshOptions::default());
    let grouper = DescriptorGrouper::new(groups.clone(), options.clone());
    let orders = grouper
        .group(&mk_node("orders-1", ORDERS), &PeerInfo::default())
        .expect("valid");
    let (cache, demand_rx) = SnapshotCache::with_demand();
    let translator = Translator::new(cache.clone(), groups, options);
    let (store, mut writer) = meshplane_registry::store();
    let source = SourceId::new("test");
    let payments_on = |port: u16| RegistryEvent::Service {
        source: source.clone(),
        name: ServiceName::new("payments").expect("name"),
        instances: vec![mk_instance("payments", "p1", port)],
    };
    writer.apply(synced(&source));
    writer.apply(payments_on(1000));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(translator.run(store, demand_rx, shutdown.clone()));

    let mut rx = cache.subscribe(&orders);
    rx.changed().await.expect("first snapshot");
    rx.borrow_and_update();
    let port_of = |rx: &meshplane_xds::SnapshotRx| {
        rx.borrow()
            .as_ref()
            .and_then(|s| s.get(ResourceType::Endpoint, "payments").cloned())
            .map(|r| format!("{:?}", r.to_any().value))
    };
    let (count_tx, mut count_rx) = tokio::sync::mpsc::unbounded_channel();
    let counter = {
        let mut rx = rx.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                rx.borrow_and_update();
                let _ = count_tx.send(Instant::now());
            }
        })
    };

    // Quiet: one change is translated without waiting for the interval.
    sleep(Duration::from_secs(1)).await;
    let changed_at = Instant::now();
    writer.apply(payments_on(1001));
    let published_at = count_rx.recv().await.expect("published");
    assert!(published_at - changed_at < Duration::from_millis(5));

    // A burst right after: 200 changes, one per millisecond.
    let burst = Duration::from_millis(200);
    for i in 0..200u16 {
        writer.apply(payments_on(2000 + i));
        sleep(Duration::from_millis(1)).await;
    }
    let expected = {
        let (store2, mut writer2) = meshplane_registry::store();
        writer2.apply(synced(&source));
        writer2.apply(payments_on(2199));
        let cache2 = SnapshotCache::new();
        let groups2 = Groups::default();
        let grouper2 = DescriptorGrouper::new(groups2.clone(), Arc::new(MeshOptions::default()));
        let key = grouper2
            .group(&mk_node("orders-1", ORDERS), &PeerInfo::default())
            .expect("valid");
        let mut t = Translator::new(cache2.clone(), groups2, Arc::new(MeshOptions::default()));
        t.on_registry(store2.snapshot());
        t.on_demand(&key);
        let rx2 = cache2.subscribe(&key);
        port_of(&rx2)
    };
    sleep(MIN_PASS_INTERVAL * 2).await;
    assert_eq!(port_of(&rx), expected, "the burst ends in its final state");
    let mut passes = Vec::new();
    while let Ok(at) = count_rx.try_recv() {
        passes.push(at);
    }
    let bound = (burst.as_millis() / MIN_PASS_INTERVAL.as_millis()) as usize + 2;
    assert!(
        !passes.is_empty() && passes.len() <= bound,
        "{} pushes for 200 changes in {burst:?} (at most {bound})",
        passes.len()
    );
    for pair in passes.windows(2) {
        assert!(pair[1] - pair[0] >= MIN_PASS_INTERVAL, "{passes:?}");
    }
    shutdown.cancel();
    task.await.expect("translator stops");
    counter.abort();
}

#[test]
fn groups_demanded_before_the_registry_syncs_wait_for_it() {
    // A control plane that just restarted: proxies reconnect while the registry reloads. A
    // group published from a half-loaded registry would tell them to drop endpoints and
    // clusters they hold; it waits for the first full sync instead.
    let groups = Groups::default();
    let grouper = DescriptorGrouper::new(groups.clone(), Arc::new(MeshOptions::default()));
    let cache = SnapshotCache::new();
    let mut translator = Translator::new(cache.clone(), groups, Arc::new(MeshOptions::default()));
    let (store, mut writer) = meshplane_registry::store();
    let source = SourceId::new("test");
    writer.apply(RegistryEvent::Status {
        source: source.clone(),
        status: meshplane_registry::SourceStatus::Syncing,
    });
    translator.on_registry(store.snapshot());
    let orders: GroupKey = grouper
        .group(&mk_node("orders-1", ORDERS), &PeerInfo::default())
        .expect("valid");
    let rx = cache.subscribe(&orders);
    translator.on_demand(&orders);
    assert!(
        rx.borrow().is_none(),
        "published before the registry synced"
    );

    // The full sync arrives: the group is published with it, payments' endpoints included.
    let services = [(
        ServiceName::new("payments").expect("name"),
        vec![mk_instance("payments", "p1", 10)],
    )]
    .into_iter()
    .collect();
    writer.apply(RegistryEvent::Replace { source, services });
    translator.on_registry(store.snapshot());
    let snapshot = rx.borrow().clone().expect("published once synced");
    let endpoints = snapshot
        .get(meshplane_xds::ResourceType::Endpoint, "payments")
        .expect("payments' assignment")
        .to_any()
        .value;
    assert!(
        endpoints.windows(9).any(|w| w == b"127.0.0.1"),
        "payments' instance is in its assignment"
    );
}
