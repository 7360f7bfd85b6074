use std::collections::BTreeMap;

use meshplane_model::{Health, Instance, InstanceId, Locality};
use meshplane_registry::{RegistryEvent, SourceId, store};

use super::*;

fn instance(service: &str, id: &str, dc: &str) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: service.parse().expect("service"),
        node: "node-1".into(),
        address: "10.0.0.5".into(),
        port: 31001,
        tags: vec!["canary".into()],
        meta: BTreeMap::from([("protocol".to_owned(), "http1".to_owned())]),
        weight: 100,
        health: Health::Passing,
        locality: Locality {
            datacenter: dc.into(),
            zone: None,
        },
    }
}

fn snapshot(instances: Vec<Instance>) -> std::sync::Arc<meshplane_registry::Snapshot> {
    let (store, mut writer) = store();
    let mut services: BTreeMap<ServiceName, Vec<Instance>> = BTreeMap::new();
    for i in instances {
        services.entry(i.service.clone()).or_default().push(i);
    }
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("embedded"),
        services,
    });
    store.snapshot()
}

#[test]
fn only_local_instances_are_exported_and_read_back_as_they_were() {
    let local = vec![
        instance("payments", "payments-1", "dc1"),
        instance("payments", "payments-2", "dc1"),
        instance("orders", "orders-1", "dc1"),
    ];
    let mut all = local.clone();
    // Learned from another datacenter: never re-exported.
    all.push(instance("payments", "payments-dc2", "dc2"));
    let export = Export::build("dc1", &snapshot(all));
    assert_eq!(export.instances, 3);
    let state = decode("dc1", &export.json).expect("valid");
    assert_eq!(state.version, export.version);
    assert_eq!(state.services.len(), 2);
    assert_eq!(
        state.services[&"payments".parse::<ServiceName>().expect("name")],
        local[..2]
    );
    let inflated = inflate(&export.gzip(), 1 << 20).expect("gzip");
    assert_eq!(inflated, export.json);
}

#[test]
fn the_version_follows_the_content_only() {
    let a = Export::build("dc1", &snapshot(vec![instance("payments", "p-1", "dc1")]));
    let same = Export::build(
        "dc1",
        &snapshot(vec![
            instance("payments", "p-1", "dc1"),
            instance("payments", "p-9", "dc2"),
        ]),
    );
    let mut moved = instance("payments", "p-1", "dc1");
    moved.health = Health::Critical;
    let changed = Export::build("dc1", &snapshot(vec![moved]));
    assert_eq!(
        a.version, same.version,
        "another datacenter's instances do not count"
    );
    assert_ne!(a.version, changed.version);
}

#[test]
fn answers_that_are_not_a_state_of_that_datacenter_are_refused() {
    let export = Export::build("dc2", &snapshot(vec![instance("payments", "p-1", "dc2")]));
    let json = std::str::from_utf8(&export.json).expect("utf-8");
    assert!(matches!(
        decode("dc3", json.as_bytes()),
        Err(WireError::WrongDatacenter { .. })
    ));
    let truncated = &json[..json.len() / 2];
    assert!(matches!(
        decode("dc2", truncated.as_bytes()),
        Err(WireError::Json(_))
    ));
    assert!(matches!(
        decode(
            "dc2",
            br#"{"datacenter":"dc2","version":"x","instances":{}}"#
        ),
        Err(WireError::Version { .. })
    ));
    // A peer re-exporting what it learned elsewhere (its version computed honestly).
    let instances = serde_json::to_string(&[instance("payments", "p-1", "dc1")]).expect("json");
    let forged = format!(
        r#"{{"datacenter":"dc2","version":"{}","instances":{instances}}}"#,
        version_of(instances.as_bytes())
    );
    let refused = decode("dc2", forged.as_bytes());
    assert!(
        matches!(refused, Err(WireError::ForeignInstance { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        decode(
            "dc2",
            br#"{"datacenter":"dc2","version":"x","instances":[],"more":1}"#
        ),
        Err(WireError::Json(_))
    ));
}

#[test]
fn inflating_stops_at_the_limit() {
    let export = Export::build(
        "dc1",
        &snapshot(
            (0..200)
                .map(|n| instance("payments", &format!("p-{n}"), "dc1"))
                .collect(),
        ),
    );
    let gzip = export.gzip();
    assert!(matches!(
        inflate(&gzip, 1000),
        Err(WireError::TooLarge { limit: 1000 })
    ));
    assert!(matches!(
        inflate(b"not gzip", 1000),
        Err(WireError::Gzip(_))
    ));
}
