use std::collections::BTreeMap;

use meshplane_model::{Health, Instance, InstanceId, Locality};
use meshplane_registry::{RegistryEvent, SourceId, Store, Writer, store};

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

fn name(s: &str) -> ServiceName {
    s.parse().expect("name")
}

fn registry(instances: Vec<Instance>) -> (Store, Writer) {
    let (store, mut writer) = store();
    let mut services: BTreeMap<ServiceName, Vec<Instance>> = BTreeMap::new();
    for i in instances {
        services.entry(i.service.clone()).or_default().push(i);
    }
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("embedded"),
        services,
    });
    (store, writer)
}

fn export(instances: Vec<Instance>) -> Export {
    Export::build("dc1", &registry(instances).0.snapshot(), None)
}

fn set(writer: &mut Writer, service: &str, instances: Vec<Instance>) {
    writer.apply(RegistryEvent::Service {
        source: SourceId::new("embedded"),
        name: name(service),
        instances,
    });
}

#[test]
fn only_local_instances_are_exported_and_read_back_as_they_were() {
    let local = vec![
        instance("payments", "payments-1", "dc1"),
        instance("payments", "payments-2", "dc1"),
        instance("orders", "orders-1", "dc1"),
    ];
    let mut all = local.clone();
    // Learned from other datacenters: never re-exported.
    all.push(instance("payments", "payments-dc2", "dc2"));
    all.push(instance("ledger", "ledger-1", "dc3"));
    let export = export(all);
    assert_eq!(export.service_count(), 2);
    let update = decode("dc1", &Held::default(), &export.json()).expect("valid");
    assert!(update.full);
    assert_eq!(update.held.version, export.version);
    assert_eq!(update.services.len(), 2);
    assert_eq!(update.services[&name("payments")], local[..2]);
    let inflated = inflate(&export.gzip(), 1 << 20).expect("gzip");
    assert_eq!(inflated, export.json());
}

#[test]
fn the_version_follows_the_content_only() {
    let a = export(vec![instance("payments", "p-1", "dc1")]);
    let same = export(vec![
        instance("payments", "p-1", "dc1"),
        instance("payments", "p-9", "dc2"),
    ]);
    let mut moved = instance("payments", "p-1", "dc1");
    moved.health = Health::Critical;
    let changed = export(vec![moved]);
    assert_eq!(
        a.version, same.version,
        "another datacenter's instances do not count"
    );
    assert_ne!(a.version, changed.version);
}

#[test]
fn changes_since_an_older_state_carry_only_what_changed_and_land_on_its_version() {
    let (store, mut writer) = registry(vec![
        instance("payments", "payments-1", "dc1"),
        instance("orders", "orders-1", "dc1"),
        instance("ledger", "ledger-1", "dc1"),
    ]);
    let first = Export::build("dc1", &store.snapshot(), None);
    let follower = decode("dc1", &Held::default(), &first.json()).expect("full");

    let mut failing = instance("payments", "payments-1", "dc1");
    failing.health = Health::Critical;
    set(&mut writer, "payments", vec![failing.clone()]);
    set(&mut writer, "ledger", Vec::new());
    set(
        &mut writer,
        "billing",
        vec![instance("billing", "billing-1", "dc1")],
    );
    // Only another datacenter's instance of `orders` changes: nothing to send for it.
    set(
        &mut writer,
        "orders",
        vec![
            instance("orders", "orders-1", "dc1"),
            instance("orders", "orders-2", "dc2"),
        ],
    );
    let second = Export::build("dc1", &store.snapshot(), Some(&first));
    let scratch = Export::build("dc1", &store.snapshot(), None);
    assert_eq!(second.version, scratch.version);
    assert_eq!(second.json(), scratch.json(), "incremental = from scratch");

    let changes = second.changes_since(&first).expect("changed");
    let update = decode("dc1", &follower.held, &changes).expect("changes apply");
    assert!(!update.full);
    assert_eq!(update.held.version, second.version);
    assert_eq!(
        update.services,
        BTreeMap::from([
            (
                name("billing"),
                vec![instance("billing", "billing-1", "dc1")]
            ),
            (name("ledger"), Vec::new()),
            (name("payments"), vec![failing]),
        ])
    );
    assert!(second.changes_since(&scratch).is_none(), "same state");

    // Applied to anything else than the state they start from, they are refused.
    let refused = decode("dc1", &Held::default(), &changes);
    assert!(
        matches!(refused, Err(WireError::WrongBase { .. })),
        "{refused:?}"
    );
    let mut other = follower.held.clone();
    other.hashes.insert(name("orders"), 7);
    let refused = decode("dc1", &other, &changes);
    assert!(
        matches!(refused, Err(WireError::Version { .. })),
        "{refused:?}"
    );
}

#[test]
fn answers_that_are_not_a_state_of_that_datacenter_are_refused() {
    let export = Export::build(
        "dc2",
        &registry(vec![instance("payments", "p-1", "dc2")])
            .0
            .snapshot(),
        None,
    );
    let json = export.json();
    let held = Held::default();
    assert!(matches!(
        decode("dc3", &held, &json),
        Err(WireError::WrongDatacenter { .. })
    ));
    assert!(matches!(
        decode("dc2", &held, &json[..json.len() / 2]),
        Err(WireError::Json(_))
    ));
    assert!(matches!(
        decode(
            "dc2",
            &held,
            br#"{"datacenter":"dc2","version":"x","services":{}}"#
        ),
        Err(WireError::Version { .. })
    ));
    assert!(matches!(
        decode(
            "dc2",
            &held,
            br#"{"datacenter":"dc2","version":"x","services":{},"more":1}"#
        ),
        Err(WireError::Json(_))
    ));
    // A peer re-exporting what it learned elsewhere, or listing an instance under another
    // service (versions computed honestly).
    for (listed, instance, expected) in [
        ("payments", instance("payments", "p-1", "dc1"), "foreign"),
        ("orders", instance("payments", "p-1", "dc2"), "misplaced"),
    ] {
        let array = serde_json::to_string(&[instance]).expect("json");
        let version = version_of(
            [(&name(listed), xxhash_rust::xxh3::xxh3_128(array.as_bytes()))].into_iter(),
        );
        let forged = format!(
            r#"{{"datacenter":"dc2","version":"{version}","services":{{"{listed}":{array}}}}}"#
        );
        let refused = decode("dc2", &held, forged.as_bytes());
        match expected {
            "foreign" => assert!(
                matches!(refused, Err(WireError::ForeignInstance { .. })),
                "{refused:?}"
            ),
            _ => assert!(
                matches!(refused, Err(WireError::MisplacedInstance { .. })),
                "{refused:?}"
            ),
        }
    }
}

#[test]
fn inflating_stops_at_the_limit() {
    let export = export(
        (0..200)
            .map(|n| instance("payments", &format!("p-{n}"), "dc1"))
            .collect(),
    );
    assert!(matches!(
        inflate(&export.gzip(), 1000),
        Err(WireError::TooLarge { limit: 1000 })
    ));
    assert!(matches!(
        inflate(b"not gzip", 1000),
        Err(WireError::Gzip(_))
    ));
}

#[test]
fn another_datacenters_change_reuses_the_encoded_bodies() {
    let (store, mut writer) = registry(vec![instance("payments", "payments-1", "dc1")]);
    let local = crate::LocalState::new("dc1", store);
    let first = local.current().expect("synced");
    let gzip = first.gzip();
    set(
        &mut writer,
        "payments",
        vec![
            instance("payments", "payments-1", "dc1"),
            instance("payments", "payments-dc2", "dc2"),
        ],
    );
    let second = local.current().expect("synced");
    assert!(second.index > first.index);
    assert_eq!(second.version, first.version);
    assert_eq!(
        second.gzip().as_ptr(),
        gzip.as_ptr(),
        "the same state is not compressed again"
    );
}
