//! Configuration mistakes fail before anything connects, with a message saying what to fix.

use std::time::Duration;

use meshplane_registry_consul::{ConfigError, ConsulConfig, ConsulSource};

#[test]
fn bad_address_budget_and_ca_file_are_rejected() {
    let bad_address = ConsulConfig {
        address: "127.0.0.1:8500".into(),
        ..ConsulConfig::default()
    };
    assert!(matches!(
        ConsulSource::new(bad_address),
        Err(ConfigError::Address(_))
    ));

    let no_budget = ConsulConfig {
        max_connections: 1,
        ..ConsulConfig::default()
    };
    assert!(matches!(
        ConsulSource::new(no_budget),
        Err(ConfigError::Budget(1))
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = ConsulConfig {
        address: "https://consul.example:8501".into(),
        ca_file: Some(dir.path().join("missing-ca.pem")),
        ..ConsulConfig::default()
    };
    let err = ConsulSource::new(missing).expect_err("missing CA");
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let not_pem = ConsulConfig {
        ca_file: Some(empty),
        ..ConsulConfig::default()
    };
    assert!(matches!(
        ConsulSource::new(not_pem),
        Err(ConfigError::CaFile { .. })
    ));
}

#[test]
fn defaults_respect_consuls_limits() {
    let d = ConsulConfig::default();
    assert!(d.stale, "stale reads by default");
    assert_eq!(d.wait, Duration::from_secs(300));
    let plan = meshplane_registry_consul::ConnectionPlan::for_budget(d.max_connections);
    assert_eq!(
        plan,
        meshplane_registry_consul::ConnectionPlan {
            health_slots: 89,
            spare: 10
        }
    );
    assert_eq!(1 + plan.health_slots + plan.spare, d.max_connections);
    assert!(
        d.max_connections < 200,
        "Consul's default http_max_conns_per_client is 200"
    );
}
