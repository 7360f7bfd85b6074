//! The flags documents in docs/egress-flags.md are valid, and decide what the page says.

use meshplane_model::ServiceName;
use meshplane_rollout::{Flags, InstanceInfo, Source};
use meshplane_test_support::docs::blocks_tagged;

const DOC: &str = include_str!("../../../docs/egress-flags.md");

fn documented() -> Vec<Flags> {
    blocks_tagged(DOC, "yaml")
        .iter()
        .map(|body| {
            let value: serde_json::Value =
                serde_norway::from_str(body).unwrap_or_else(|e| panic!("not YAML: {e}\n{body}"));
            Flags::from_json(value).unwrap_or_else(|e| panic!("invalid: {e}\n{body}"))
        })
        .collect()
}

#[test]
fn the_documented_flags_are_valid_and_decide_as_described() {
    let all = documented();
    assert!(!all.is_empty(), "the page lost its example");
    let flags = &all[0];
    let orders = ServiceName::new("orders").expect("name");
    let tags = vec!["canary".to_owned()];
    let canary = InstanceInfo {
        id: "orders-1",
        datacenter: "dc1",
        tags: &tags,
    };
    let d = flags.decide(&orders, Some("payments"), &canary);
    assert!(d.proxy);
    assert_eq!(d.source, Source::DependencyOverride);
    let seventh = InstanceInfo {
        id: "orders-7",
        datacenter: "dc1",
        tags: &tags,
    };
    // The instance override is more specific than the tag's.
    assert!(!flags.decide(&orders, Some("payments"), &seventh).proxy);
    let partner = flags.decide(&orders, Some("https://api.partner.example"), &canary);
    assert_eq!((partner.proxy, partner.source), (false, Source::Dependency));
    let other = flags.decide(&orders, Some("stock"), &canary);
    assert_eq!(other.source, Source::Service);
}
