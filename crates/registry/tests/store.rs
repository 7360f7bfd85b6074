//! Synchronous store tests: apply events, assert snapshots and watchers.

use std::collections::BTreeMap;

use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{Changes, RegistryEvent, SourceId, SourceStatus, store};

fn mk_name(name: &str) -> ServiceName {
    ServiceName::new(name).expect("valid name")
}

fn mk_instance(service: &str, id: &str, port: u16) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("valid id"),
        service: mk_name(service),
        node: "node-1".into(),
        address: "10.0.0.1".into(),
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

fn mk_replace(source: &str, services: &[(&str, &[(&str, u16)])]) -> RegistryEvent {
    RegistryEvent::Replace {
        source: SourceId::new(source),
        services: services
            .iter()
            .map(|(svc, insts)| {
                let instances = insts
                    .iter()
                    .map(|(id, port)| mk_instance(svc, id, *port))
                    .collect();
                (mk_name(svc), instances)
            })
            .collect(),
    }
}

fn ids(store: &meshplane_registry::Store, svc: &str) -> Vec<String> {
    store
        .snapshot()
        .service(svc)
        .map(|s| s.instances.iter().map(|i| i.id.to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn replace_swaps_a_sources_state_atomically() {
    let (store, mut writer) = store();
    writer.apply(mk_replace(
        "consul",
        &[
            ("web", &[("web-1", 80), ("web-2", 80)]),
            ("db", &[("db-1", 5432)]),
        ],
    ));
    let mut rx = store.subscribe();
    rx.mark_unchanged();

    // A relist after reconnecting: `db` is gone, `web-2` is gone, `api` is new.
    writer.apply(mk_replace(
        "consul",
        &[("web", &[("web-1", 80)]), ("api", &[("api-1", 8080)])],
    ));

    let snap = rx.borrow_and_update().clone();
    assert_eq!(snap.index, 2, "one relist is one change");
    assert_eq!(
        snap.services.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["api", "web"]
    );
    assert_eq!(ids(&store, "web"), ["web-1"]);
    assert!(snap.service("db").is_none(), "stale service must not leak");
}

#[test]
fn replace_of_one_source_leaves_others_alone() {
    let (store, mut writer) = store();
    writer.apply(mk_replace("consul", &[("web", &[("web-1", 80)])]));
    writer.apply(mk_replace("file", &[("web", &[("web-9", 80)])]));
    assert_eq!(ids(&store, "web"), ["web-1", "web-9"]);

    writer.apply(mk_replace("consul", &[]));
    assert_eq!(ids(&store, "web"), ["web-9"]);
}

#[test]
fn index_is_monotonic_and_only_moves_on_change() {
    let (store, mut writer) = store();
    let mut last = store.snapshot().index;
    let events = [
        mk_replace("s", &[("web", &[("web-1", 80)])]),
        mk_replace("s", &[("web", &[("web-1", 81)])]),
        mk_replace("s", &[("web", &[("web-1", 81)])]),
        RegistryEvent::Service {
            source: SourceId::new("s"),
            name: mk_name("web"),
            instances: vec![],
        },
    ];
    let expect_change = [true, true, false, true];
    for (event, expect) in events.into_iter().zip(expect_change) {
        assert_eq!(writer.apply(event), expect);
        let index = store.snapshot().index;
        assert!(index >= last);
        assert_eq!(index > last, expect);
        last = index;
    }
}

#[test]
fn watchers_are_woken_only_on_real_change() {
    let (store, mut writer) = store();
    writer.apply(mk_replace(
        "s",
        &[("web", &[("web-1", 80)]), ("db", &[("db-1", 1)])],
    ));
    let mut all_rx = store.subscribe();
    let web_rx = store.watch_service(&mk_name("web"));
    let mut db_rx = store.watch_service(&mk_name("db"));
    all_rx.mark_unchanged();

    // Same content again: nobody wakes.
    assert!(!writer.apply(mk_replace(
        "s",
        &[("web", &[("web-1", 80)]), ("db", &[("db-1", 1)])]
    )));
    assert!(!all_rx.has_changed().expect("open"));
    assert!(!web_rx.has_changed().expect("open"));

    // Only `db` changes: the web watcher stays asleep.
    let mut unhealthy = mk_instance("db", "db-1", 1);
    unhealthy.health = Health::Critical;
    writer.apply(RegistryEvent::Service {
        source: SourceId::new("s"),
        name: mk_name("db"),
        instances: vec![unhealthy],
    });
    assert!(all_rx.has_changed().expect("open"));
    assert!(db_rx.has_changed().expect("open"));
    assert!(!web_rx.has_changed().expect("open"));
    let db = db_rx.borrow_and_update().clone().expect("db present");
    assert_eq!(db.instances[0].health, Health::Critical);
}

#[test]
fn changed_since_names_modified_and_removed_services() {
    let (store, mut writer) = store();
    writer.apply(mk_replace(
        "s",
        &[
            ("a", &[("a-1", 1)]),
            ("b", &[("b-1", 1)]),
            ("c", &[("c-1", 1)]),
        ],
    ));
    let base = store.snapshot().index;
    writer.apply(mk_replace(
        "s",
        &[("a", &[("a-1", 2)]), ("c", &[("c-1", 1)])],
    ));
    let changed = store.snapshot().changed_since(base);
    let expected = Changes::Services([mk_name("a"), mk_name("b")].into_iter().collect());
    assert_eq!(changed, expected);
    assert_eq!(
        store.snapshot().changed_since(store.snapshot().index),
        Changes::Services(Default::default())
    );
}

#[test]
fn stale_keeps_state_and_is_reported() {
    let (store, mut writer) = store();
    writer.apply(mk_replace("consul", &[("web", &[("web-1", 80)])]));
    assert!(store.snapshot().is_synced());
    writer.apply(RegistryEvent::Status {
        source: SourceId::new("consul"),
        status: SourceStatus::Stale {
            reason: "connection refused".into(),
        },
    });
    let snap = store.snapshot();
    assert!(snap.is_stale());
    assert_eq!(
        ids(&store, "web"),
        ["web-1"],
        "a failing source never empties services"
    );

    writer.apply(RegistryEvent::Status {
        source: SourceId::new("consul"),
        status: SourceStatus::Synced,
    });
    assert!(!store.snapshot().is_stale());
}

#[test]
fn not_synced_until_first_full_state() {
    let (store, mut writer) = store();
    assert!(!store.snapshot().is_synced());
    writer.apply(RegistryEvent::Status {
        source: SourceId::new("consul"),
        status: SourceStatus::Syncing,
    });
    assert!(!store.snapshot().is_synced());
    writer.apply(mk_replace("consul", &[]));
    assert!(store.snapshot().is_synced());
}

#[tokio::test]
async fn writer_task_applies_events_from_sinks() {
    let (store, writer) = store();
    let (sink, events) = meshplane_registry::event_channel(8);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(writer.run(events, shutdown.clone()));
    sink.send(mk_replace("s", &[("web", &[("web-1", 80)])]))
        .await
        .expect("send");
    let snap = store.changed_after(0, &shutdown).await;
    assert_eq!(snap.index, 1);
    shutdown.cancel();
    task.await.expect("writer task");
}
