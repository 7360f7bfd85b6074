use std::collections::BTreeMap;

use meshplane_model::{Health, Instance, InstanceId, Locality};
use proptest::prelude::*;

use super::*;
use crate::ProxyGroup;

/// A registry the tests change service by service.
#[derive(Default)]
struct Registry(BTreeMap<ServiceName, Vec<Instance>>);

impl Catalog for Registry {
    fn services(&self) -> Vec<ServiceName> {
        self.0.keys().cloned().collect()
    }
    fn instances(&self, service: &ServiceName) -> Option<&[Instance]> {
        self.0.get(service).map(Vec::as_slice)
    }
}

const SERVICES: [&str; 6] = ["billing", "ledger", "orders", "payments", "search", "zeta"];
const TAGS: [&str; 3] = ["canary", "eu", "v2"];

/// Every kind of virtual host: services (one with its own timeout), a TLS domain and a
/// domain pattern.
const WILDCARD: &str = "service: batch\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\ndependencies:\n  - service: \"*\"\n  - service: payments\n    timeout: 2s\n  - domain: https://api.example.com\n  - domain_pattern: \"*.example.org\"\n";
const NAMED: &str = "service: web\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\ndependencies:\n  - service: payments\n    retries: { attempts: 3, on: [connect-failure, \"503\"] }\n  - service: orders\n  - domain: http://plain.example.com\n";
const NO_EGRESS: &str =
    "service: batch\nport: 1\ningress: { port: 2 }\ndependencies: [{ service: \"*\" }]\n";

fn mk_name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid")
}

fn mk_instances(service: &str, count: usize, tags: &[&str]) -> Vec<Instance> {
    (0..count)
        .map(|i| Instance {
            id: InstanceId::new(format!("{service}-{i}")).expect("id"),
            service: mk_name(service),
            node: "n1".into(),
            address: format!("10.0.0.{}", i + 1),
            port: 8080,
            // Tags on some instances only: a service's tags are the union.
            tags: if i == 0 {
                tags.iter().map(|t| (*t).to_owned()).collect()
            } else {
                Vec::new()
            },
            meta: Default::default(),
            weight: 1,
            health: Health::Passing,
            locality: Locality {
                datacenter: "dc1".into(),
                zone: None,
            },
        })
        .collect()
}

fn descriptor(yaml: &str) -> Descriptor {
    Descriptor::from_yaml(yaml).expect("valid descriptor")
}

/// What a full translation encodes for the group over `registry`.
fn from_scratch(d: &Descriptor, registry: &Registry) -> Vec<u8> {
    route::egress(d, &dependency_services(d, registry), registry).encode_to_vec()
}

/// One registry change: `service` gets `count` instances (0: it leaves the registry) with
/// the tags picked by `tags` (a bit set over [`TAGS`]).
#[derive(Debug, Clone)]
struct Change {
    service: usize,
    count: usize,
    tags: u8,
}

fn apply(registry: &mut Registry, change: &Change) -> ServiceName {
    let service = SERVICES[change.service];
    let tags: Vec<&str> = TAGS
        .iter()
        .enumerate()
        .filter(|(i, _)| change.tags & (1 << i) != 0)
        .map(|(_, t)| *t)
        .collect();
    if change.count == 0 {
        registry.0.remove(&mk_name(service));
    } else {
        registry
            .0
            .insert(mk_name(service), mk_instances(service, change.count, &tags));
    }
    mk_name(service)
}

fn changes() -> impl Strategy<Value = Vec<Change>> {
    prop::collection::vec(
        (0..SERVICES.len(), 0..3usize, 0..8u8).prop_map(|(service, count, tags)| Change {
            service,
            count,
            tags,
        }),
        0..40,
    )
}

proptest! {
    /// After any sequence of services appearing, leaving and changing tags, patching one
    /// service at a time encodes exactly the bytes of a translation from scratch.
    #[test]
    fn patched_routes_encode_like_a_full_translation(
        initial in changes(),
        sequence in changes(),
        wildcard in any::<bool>(),
    ) {
        let d = descriptor(if wildcard { WILDCARD } else { NAMED });
        let mut registry = Registry::default();
        for change in &initial {
            apply(&mut registry, change);
        }
        let mut routes = EgressRoutes::new(&d, &registry).expect("the group has egress");
        prop_assert_eq!(routes.encode(), from_scratch(&d, &registry));
        for change in &sequence {
            let service = apply(&mut registry, change);
            routes.update_service(&service, &registry);
            prop_assert_eq!(routes.encode(), from_scratch(&d, &registry), "after {:?}", change);
            let expected: Vec<ServiceName> = dependency_services(&d, &registry);
            prop_assert_eq!(routes.services().cloned().collect::<Vec<_>>(), expected);
        }
    }
}

#[test]
fn routes_taken_from_a_group_config_equal_new_ones() {
    let mut registry = Registry::default();
    registry.0.insert(
        mk_name("payments"),
        mk_instances("payments", 2, &["canary"]),
    );
    registry
        .0
        .insert(mk_name("orders"), mk_instances("orders", 1, &[]));
    for yaml in [WILDCARD, NAMED] {
        let group = ProxyGroup {
            descriptor: descriptor(yaml),
            listen_address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            proxyless: false,
            proxyless_mtls: false,
        };
        let options = crate::MeshOptions {
            allow_wildcard_dependencies: [mk_name("batch")].into(),
            ..Default::default()
        };
        let mut config = crate::group_config(&group, &registry, &options).expect("translates");
        let full = config.routes.clone();
        let split = EgressRoutes::take_from_config(&group.descriptor, &mut config).expect("egress");
        assert!(config.routes.is_empty(), "taken out");
        let new = EgressRoutes::new(&group.descriptor, &registry).expect("egress");
        assert_eq!(split.encode(), new.encode());
        assert_eq!(split.encode(), full[0].encode_to_vec());
    }
}

#[test]
fn groups_without_egress_have_no_egress_routes() {
    let registry = Registry::default();
    assert!(EgressRoutes::new(&descriptor(NO_EGRESS), &registry).is_none());
}

/// A service a named group does not list never gets a virtual host, and one it lists keeps
/// its virtual host (without tag routes) while it is missing from the registry.
#[test]
fn named_groups_keep_exactly_their_dependencies() {
    let d = descriptor(NAMED);
    let mut registry = Registry::default();
    let mut routes = EgressRoutes::new(&d, &registry).expect("egress");
    let listed =
        |routes: &EgressRoutes| routes.services().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(listed(&routes), ["orders", "payments"]);
    registry
        .0
        .insert(mk_name("billing"), mk_instances("billing", 1, &[]));
    routes.update_service(&mk_name("billing"), &registry);
    registry.0.remove(&mk_name("payments"));
    routes.update_service(&mk_name("payments"), &registry);
    assert_eq!(listed(&routes), ["orders", "payments"]);
    assert_eq!(routes.encode(), from_scratch(&d, &registry));
}
