//! The catalog reads with responses shaped like the samples in Consul's catalog API docs.

use meshplane_consul_api::{CatalogService, CatalogServices};
use serde_json::json;

#[test]
fn catalog_services_sample() {
    let sample = json!({
        "consul": [],
        "redis": [],
        "postgresql": ["primary", "secondary"],
        "web": null
    });
    let services: CatalogServices = serde_json::from_value(sample.clone()).expect("reads");
    assert_eq!(
        services.keys().map(String::as_str).collect::<Vec<_>>(),
        ["consul", "postgresql", "redis", "web"]
    );
    assert_eq!(services["web"], None, "a service without tags may be null");
    assert_eq!(serde_json::to_value(&services).expect("writes"), sample);
}

#[test]
fn catalog_service_sample() {
    let sample = json!([
        {
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
            "Node": "foobar",
            "Address": "192.168.10.10",
            "Datacenter": "dc1",
            "TaggedAddresses": { "lan": "192.168.10.10", "wan": "10.0.10.10" },
            "NodeMeta": { "somekey": "somevalue" },
            "CreateIndex": 51,
            "ModifyIndex": 51,
            "ServiceAddress": "172.17.0.3",
            "ServiceEnableTagOverride": false,
            "ServiceID": "32a2a47f7992:nodea:5000",
            "ServiceName": "foobar",
            "ServicePort": 5000,
            "ServiceMeta": { "foobar_meta_value": "baz" },
            "ServiceTaggedAddresses": {
                "lan": { "address": "172.17.0.3", "port": 5000 },
                "wan": { "address": "198.18.0.1", "port": 512 }
            },
            "ServiceTags": ["tacos"],
            "ServiceProxy": { "DestinationServiceName": "", "DestinationServiceID": "", "LocalServiceAddress": "", "LocalServicePort": 0, "Config": null, "Upstreams": null },
            "ServiceConnect": { "Native": false, "Proxy": null },
            "Namespace": "default"
        }
    ]);
    let entries: Vec<CatalogService> = serde_json::from_value(sample).expect("reads");
    let e = &entries[0];
    assert_eq!(e.service_id, "32a2a47f7992:nodea:5000");
    assert_eq!(
        (e.service_address.as_str(), e.service_port),
        ("172.17.0.3", 5000)
    );
    assert_eq!(e.service_tags, ["tacos"]);
    assert_eq!(e.node_meta["somekey"], "somevalue");
    assert_eq!(
        (e.service_weights.passing, e.service_weights.warning),
        (1, 1)
    );
    assert_eq!((e.create_index, e.modify_index), (51, 51));

    let written = serde_json::to_value(&entries).expect("writes");
    let again: Vec<CatalogService> = serde_json::from_value(written.clone()).expect("reads back");
    assert_eq!(again, entries);
    // A plain service's proxy and Connect settings are written as Consul writes them then.
    assert_eq!(written[0]["ServiceProxy"], json!({ "Expose": {} }));
    assert_eq!(written[0]["ServiceConnect"], json!({}));
}
