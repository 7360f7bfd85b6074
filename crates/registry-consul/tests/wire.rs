//! Parsing Consul's documented response shapes (fixtures written from Consul's HTTP API docs).

use meshplane_consul_api::{CatalogServices, ServiceEntry};
use meshplane_model::Health;
use meshplane_registry_consul::wire;

#[test]
fn catalog_services_with_null_tags() {
    let catalog: CatalogServices =
        serde_json::from_str(include_str!("fixtures/catalog_services.json")).expect("parses");
    let names: Vec<String> = wire::service_names(&catalog)
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["consul", "postgresql", "redis", "web"]);
}

#[test]
fn health_entries_become_instances() {
    let entries: Vec<ServiceEntry> =
        serde_json::from_str(include_str!("fixtures/health_service.json")).expect("parses");
    let instances = wire::instances(entries, "dc-default").expect("valid");
    assert_eq!(instances.len(), 3);

    let primary = &instances[0];
    assert_eq!(primary.id.as_str(), "redis");
    assert_eq!(primary.service.as_str(), "redis");
    assert_eq!(primary.node, "foobar");
    assert_eq!(
        (primary.address.as_str(), primary.port),
        ("10.1.10.12", 8000)
    );
    assert_eq!(primary.tags, ["primary"]);
    assert_eq!(
        primary.meta.get("redis_version").map(String::as_str),
        Some("4.0")
    );
    assert_eq!((primary.health, primary.weight), (Health::Passing, 10));
    assert_eq!(primary.locality.datacenter, "dc1");

    // Empty service address: the node's. Warning: the warning weight. A critical check of
    // another service on the same node does not count. Null tags/meta are empty.
    let second = &instances[1];
    assert_eq!(second.address, "10.1.10.13");
    assert_eq!((second.health, second.weight), (Health::Warning, 3));
    assert_eq!(second.locality.datacenter, "dc2");
    assert!(second.tags.is_empty() && second.meta.is_empty());

    // A failing node-level check (serfHealth) makes the instance critical; no weights: 1.
    let third = &instances[2];
    assert_eq!((third.health, third.weight), (Health::Critical, 1));
}

#[test]
fn invalid_service_names_are_rejected_with_the_name() {
    let json = r#"[{"Node": {"Node": "n", "Address": "1.2.3.4"},
        "Service": {"ID": "x", "Service": "bad name", "Port": 1}, "Checks": []}]"#;
    let entries: Vec<ServiceEntry> = serde_json::from_str(json).expect("parses");
    let err = wire::instances(entries, "dc1").expect_err("bad name");
    assert!(err.to_string().contains("bad name"), "{err}");
}

#[test]
fn out_of_range_ports_fail_to_parse() {
    let json = r#"[{"Node": {"Node": "n", "Address": "1.2.3.4"},
        "Service": {"ID": "x", "Service": "x", "Port": 70000}, "Checks": []}]"#;
    assert!(serde_json::from_str::<Vec<ServiceEntry>>(json).is_err());
}
