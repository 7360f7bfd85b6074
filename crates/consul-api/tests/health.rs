//! `GET /v1/health/service/:name` with a response shaped like the sample in Consul's health
//! API docs, and the `null`s some Consul versions write.

use meshplane_consul_api::{CheckState, ServiceEntry, Weights, health::status};
use serde_json::json;

#[test]
fn health_service_sample() {
    let sample = json!([
        {
            "Node": {
                "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
                "Node": "foobar",
                "Address": "10.1.10.12",
                "Datacenter": "dc1",
                "TaggedAddresses": { "lan": "10.1.10.12", "wan": "10.1.10.12" },
                "Meta": { "instance_type": "t2.medium" }
            },
            "Service": {
                "ID": "redis",
                "Service": "redis",
                "Tags": ["primary"],
                "Address": "10.1.10.12",
                "TaggedAddresses": {
                    "lan": { "address": "10.1.10.12", "port": 8000 },
                    "wan": { "address": "198.18.1.2", "port": 80 }
                },
                "Meta": { "redis_version": "4.0" },
                "Port": 8000,
                "Weights": { "Passing": 10, "Warning": 1 },
                "Namespace": "default"
            },
            "Checks": [
                {
                    "Node": "foobar",
                    "CheckID": "service:redis",
                    "Name": "Service 'redis' check",
                    "Status": "passing",
                    "Notes": "",
                    "Output": "",
                    "ServiceID": "redis",
                    "ServiceName": "redis",
                    "ServiceTags": ["primary"],
                    "Namespace": "default"
                },
                {
                    "Node": "foobar",
                    "CheckID": "serfHealth",
                    "Name": "Serf Health Status",
                    "Status": "passing",
                    "Notes": "",
                    "Output": "",
                    "ServiceID": "",
                    "ServiceName": "",
                    "ServiceTags": [],
                    "Namespace": "default"
                }
            ]
        }
    ]);
    let entries: Vec<ServiceEntry> = serde_json::from_value(sample).expect("the sample reads");
    let written = serde_json::to_value(&entries).expect("writes");
    let again: Vec<ServiceEntry> = serde_json::from_value(written.clone()).expect("reads back");
    assert_eq!(again, entries);

    let entry = &entries[0];
    assert_eq!(
        (entry.node.node.as_str(), entry.node.datacenter.as_str()),
        ("foobar", "dc1")
    );
    assert_eq!(entry.node.tagged_addresses["wan"], "10.1.10.12");
    assert_eq!(entry.service.id, "redis");
    assert_eq!(
        (entry.service.address.as_str(), entry.service.port),
        ("10.1.10.12", 8000)
    );
    assert_eq!(
        entry.service.weights,
        Weights {
            passing: 10,
            warning: 1
        }
    );
    assert_eq!(entry.checks.len(), 2);
    assert_eq!(entry.checks[0].status, status::PASSING);
    assert_eq!(entry.checks[1].service_id, "", "serfHealth is a node check");

    // What is written carries Consul's field names, and only what Meshplane models: the
    // service's `TaggedAddresses` and `Namespace` (Enterprise) are not.
    assert_eq!(
        written[0]["Service"]["Weights"],
        json!({ "Passing": 10, "Warning": 1 })
    );
    assert_eq!(written[0]["Checks"][1]["CheckID"], "serfHealth");
    assert!(written[0]["Service"].get("Namespace").is_none());
}

#[test]
fn nulls_and_missing_fields_read_as_consul_means_them() {
    let entries: Vec<ServiceEntry> = serde_json::from_value(json!([
        {
            "Node": { "Node": "baz", "Address": "10.1.10.13", "TaggedAddresses": null, "Meta": null },
            "Service": { "ID": "redis-2", "Service": "redis", "Tags": null, "Meta": null, "Port": 8001 },
            "Checks": null
        }
    ]))
    .expect("reads");
    let e = &entries[0];
    assert_eq!(
        e.node.datacenter, "",
        "left out: the reader's default applies"
    );
    assert!(e.node.tagged_addresses.is_empty() && e.node.meta.is_empty());
    assert!(e.service.tags.is_empty() && e.service.meta.is_empty());
    assert_eq!(e.service.address, "", "no address: the node's");
    assert_eq!(e.service.weights, Weights::default());
    assert!(e.checks.is_empty());
}

#[test]
fn a_check_without_a_status_or_an_entry_without_a_service_id_is_refused() {
    let no_status = json!([{
        "Node": { "Node": "n" },
        "Service": { "ID": "x", "Service": "x" },
        "Checks": [{ "CheckID": "c" }]
    }]);
    assert!(serde_json::from_value::<Vec<ServiceEntry>>(no_status).is_err());
    let no_id = json!([{ "Node": { "Node": "n" }, "Service": { "Service": "x" } }]);
    assert!(serde_json::from_value::<Vec<ServiceEntry>>(no_id).is_err());
}

#[test]
fn health_state_sample_reads_what_a_change_detector_needs() {
    // Shaped like the sample of `GET /v1/health/state/:state` in Consul's health API docs:
    // a node check (no service) and a service check.
    let sample = json!([
        {
            "Node": "foobar",
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Namespace": "default",
            "CreateIndex": 10,
            "ModifyIndex": 12
        },
        {
            "Node": "foobar",
            "CheckID": "service:redis",
            "Name": "Service 'redis' check",
            "Status": "critical",
            "Notes": "",
            "Output": "connection refused",
            "ServiceID": "redis",
            "ServiceName": "redis",
            "ServiceTags": ["primary"],
            "Type": "http",
            "Interval": "10s",
            "Timeout": "1s",
            "Definition": {},
            "CreateIndex": 11,
            "ModifyIndex": 42
        },
        { "Node": "n2", "CheckID": "c", "Status": "passing", "ServiceID": null, "ServiceName": null }
    ]);
    let body = serde_json::to_vec(&sample).expect("json");
    let checks: Vec<CheckState<'_>> = serde_json::from_slice(&body).expect("reads");
    assert_eq!(
        checks[1],
        CheckState {
            node: "foobar".into(),
            check_id: "service:redis".into(),
            service_id: "redis".into(),
            service_name: "redis".into(),
            status: status::CRITICAL.into(),
            modify_index: 42,
        }
    );
    assert_eq!(checks[0].service_name, "", "a node check names no service");
    assert_eq!(checks[2].service_id, "", "null reads as empty");
    assert_eq!(checks[2].modify_index, 0);
}

#[test]
fn health_state_borrows_plain_strings_from_the_body_and_unescapes_the_others() {
    use std::borrow::Cow;
    let body = br#"[{"Node":"n1","CheckID":"service:web-1","ServiceID":"web-1","ServiceName":"web","Status":"passing","Output":"ok \"quoted\"","ModifyIndex":7},
                   {"Node":"n\u00e9","CheckID":"a\"b","ServiceID":null,"Status":"critical"}]"#;
    let checks: Vec<CheckState<'_>> = serde_json::from_slice(body).expect("reads");
    assert!(matches!(checks[0].node, Cow::Borrowed("n1")));
    assert!(matches!(checks[0].service_name, Cow::Borrowed("web")));
    assert_eq!(checks[0].modify_index, 7);
    assert_eq!(checks[1].node, "n\u{e9}");
    assert_eq!(checks[1].check_id, "a\"b");
    assert_eq!(checks[1].service_id, "");
    assert_eq!(checks[1].service_name, "");
    let wrong: Result<Vec<CheckState<'_>>, _> = serde_json::from_slice(br#"[{"Node":7}]"#);
    assert!(wrong.is_err(), "a number is not a node name");
}
