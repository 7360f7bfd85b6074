//! The agent endpoints with payloads shaped like the samples in Consul's HTTP API docs
//! (`/v1/agent/service/register`, `/v1/agent/services`, `/v1/agent/check/update`).

use std::collections::BTreeSet;

use meshplane_consul_api::{
    AgentService, CheckDefinition, ServiceRegistration, Weights, agent::CheckUpdate,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// Reads `sample`, writes it back and reads that again: the value must survive.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(sample: &Value) -> T {
    let read: T = serde_json::from_value(sample.clone()).expect("the sample reads");
    let written = serde_json::to_value(&read).expect("writes");
    let again: T = serde_json::from_value(written).expect("what was written reads");
    assert_eq!(again, read);
    read
}

#[test]
fn register_sample_with_a_script_check() {
    let sample = json!({
        "ID": "redis1",
        "Name": "redis",
        "Tags": ["primary", "v1"],
        "Address": "127.0.0.1",
        "Port": 8000,
        "Meta": { "redis_version": "4.0" },
        "EnableTagOverride": false,
        "Check": {
            "DeregisterCriticalServiceAfter": "90m",
            "Args": ["/usr/local/bin/check_redis.py"],
            "Interval": "10s",
            "Timeout": "5s"
        },
        "Weights": { "Passing": 10, "Warning": 1 }
    });
    let r: ServiceRegistration = round_trip(&sample);
    assert_eq!(r.instance_id(), "redis1");
    assert_eq!((r.address.as_str(), r.port), ("127.0.0.1", 8000));
    assert_eq!(r.tags, ["primary", "v1"]);
    assert_eq!(r.meta["redis_version"], "4.0");
    assert_eq!(
        r.weights,
        Some(Weights {
            passing: 10,
            warning: 1
        })
    );
    let check = r.check.as_ref().expect("the check");
    assert_eq!(
        check.args.as_deref(),
        Some(&["/usr/local/bin/check_redis.py".to_owned()][..])
    );
    assert_eq!(check.interval.as_deref(), Some("10s"));
    assert_eq!(
        check.deregister_critical_service_after.as_deref(),
        Some("90m")
    );
    assert!(r.checks.is_empty());

    // Written back, the request says exactly what the sample said (a false
    // `EnableTagOverride` is Consul's default and left out).
    let mut expected = sample;
    expected
        .as_object_mut()
        .expect("object")
        .remove("EnableTagOverride");
    assert_eq!(serde_json::to_value(&r).expect("writes"), expected);
}

#[test]
fn register_with_several_checks_and_consul_defaults() {
    let sample = json!({
        "Name": "crab_net",
        "Tags": ["master", "v1"],
        "Port": 22037,
        "Checks": [
            { "HTTP": "http://127.0.0.1:22037", "Interval": "10s", "Header": { "X-Probe": ["1"] } },
            { "TTL": "30s", "CheckID": "crab-ttl", "Status": "passing" }
        ]
    });
    let r: ServiceRegistration = round_trip(&sample);
    assert_eq!(r.instance_id(), "crab_net", "ID defaults to the name");
    assert_eq!(r.address, "", "no address: the node's");
    assert_eq!(r.weights, None, "left out: Consul applies 1/1");
    assert!(r.meta.is_empty() && r.check.is_none());
    assert_eq!(r.checks.len(), 2);
    assert_eq!(
        r.checks[0].header.as_ref().map(|h| h["X-Probe"].clone()),
        Some(vec!["1".to_owned()])
    );
    assert_eq!(r.checks[1].check_id.as_deref(), Some("crab-ttl"));
    assert_eq!(r.checks[1].status.as_deref(), Some("passing"));
    assert_eq!(
        serde_json::to_value(&r).expect("writes")["Checks"],
        sample["Checks"]
    );
}

#[test]
fn null_lists_and_maps_read_as_empty_and_wrong_types_fail() {
    let r: ServiceRegistration =
        serde_json::from_value(json!({ "Name": "web", "Tags": null, "Meta": null, "Port": null }))
            .expect("nulls read");
    assert!(r.tags.is_empty() && r.meta.is_empty());
    assert_eq!(r.port, 0);
    for bad in [
        json!({ "Name": "web", "Port": 70000 }),
        json!({ "Name": "web", "Port": "80" }),
        json!({ "Name": "web", "Tags": "a" }),
        json!({ "Name": "web", "Meta": { "k": 1 } }),
    ] {
        assert!(
            serde_json::from_value::<ServiceRegistration>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    let empty_id = ServiceRegistration {
        id: Some(String::new()),
        name: "web".into(),
        ..ServiceRegistration::default()
    };
    assert_eq!(empty_id.instance_id(), "web");
}

#[test]
fn weights_default_to_one_each() {
    let w: Weights = serde_json::from_value(json!({ "Passing": 5 })).expect("reads");
    assert_eq!((w.passing, w.warning), (5, 1));
    let w: Weights =
        serde_json::from_value(json!({ "Passing": null, "Warning": 2 })).expect("reads");
    assert_eq!((w.passing, w.warning), (1, 2));
    assert_eq!(
        Weights::default(),
        Weights {
            passing: 1,
            warning: 1
        }
    );
}

#[test]
fn agent_services_sample() {
    let sample = json!({
        "redis": {
            "ID": "redis",
            "Service": "redis",
            "Tags": [],
            "TaggedAddresses": {
                "lan": { "address": "127.0.0.1", "port": 8000 },
                "wan": { "address": "198.18.0.53", "port": 80 }
            },
            "Meta": { "redis_version": "4.0" },
            "Port": 8000,
            "Address": "",
            "EnableTagOverride": false,
            "Datacenter": "dc1",
            "Weights": { "Passing": 10, "Warning": 1 }
        }
    });
    let services: std::collections::BTreeMap<String, AgentService> = round_trip(&sample);
    let redis = &services["redis"];
    assert_eq!(
        (redis.id.as_str(), redis.service.as_str()),
        ("redis", "redis")
    );
    assert_eq!((redis.address.as_str(), redis.port), ("", 8000));
    assert_eq!(redis.weights.passing, 10);
    assert_eq!(redis.datacenter, "dc1");

    // Before Consul 1.2.3 there were no weights: 1/1.
    let old: AgentService =
        serde_json::from_value(json!({ "ID": "a", "Service": "a", "Weights": null }))
            .expect("reads");
    assert_eq!(old.weights, Weights::default());
}

#[test]
fn check_update_sample() {
    let sample = json!({ "Status": "passing", "Output": "curl reported a failure:\n\n..." });
    let update: CheckUpdate = round_trip(&sample);
    assert_eq!(update.status.as_deref(), Some("passing"));
    assert_eq!(serde_json::to_value(&update).expect("writes"), sample);
}

/// `FIELDS` lists exactly the names the types write, so loose matching (the embedded
/// registry's) and the types cannot drift apart.
#[test]
fn field_lists_match_what_the_types_write() {
    fn keys(v: impl Serialize) -> BTreeSet<String> {
        match serde_json::to_value(v).expect("writes") {
            Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("expected an object, got {other}"),
        }
    }
    fn set(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }
    let s = || Some(String::new());
    let check = CheckDefinition {
        check_id: s(),
        id: s(),
        name: s(),
        ttl: s(),
        http: s(),
        method: s(),
        header: Some(Default::default()),
        interval: s(),
        timeout: s(),
        deregister_critical_service_after: s(),
        status: s(),
        notes: s(),
        tcp: s(),
        grpc: s(),
        args: Some(Vec::new()),
        script_args: Some(Vec::new()),
        docker_container_id: s(),
        h2ping: s(),
        udp: s(),
        os_service: s(),
        alias_service: s(),
    };
    assert_eq!(keys(&check), set(CheckDefinition::FIELDS));
    let registration = ServiceRegistration {
        id: s(),
        weights: Some(Weights::default()),
        enable_tag_override: true,
        kind: s(),
        check: Some(check.clone()),
        checks: vec![check],
        ..ServiceRegistration::default()
    };
    assert_eq!(keys(&registration), set(ServiceRegistration::FIELDS));
    assert_eq!(keys(Weights::default()), set(Weights::FIELDS));
    let update = CheckUpdate {
        status: s(),
        output: s(),
    };
    assert_eq!(keys(&update), set(CheckUpdate::FIELDS));
}
