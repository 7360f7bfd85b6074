//! Pure decisions: restart backoff and crash limits, hot-restart base ids, the registry
//! registration body.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use meshplane_sidecar::config::{CheckTimes, CrashPolicy};
use meshplane_sidecar::envoy::{EnvoyCommand, EnvoyExit, base_id_for};
use meshplane_sidecar::registration::service_registration;
use meshplane_sidecar::restart_policy::{AfterCrash, Backoff, CrashWindow};
use meshplane_sidecar::{Outcome, SidecarConfig};
use serde_json::json;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn backoff_doubles_up_to_the_cap_and_resets() {
    let mut b = Backoff::new(ms(100), ms(1000));
    let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
    assert_eq!(
        delays,
        vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
    );
    b.reset();
    assert_eq!(b.next_delay(), ms(100));
    let mut long = Backoff::new(ms(1), Duration::from_secs(30));
    assert_eq!(
        (0..100).map(|_| long.next_delay()).last(),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn crash_window_gives_up_after_too_many_crashes_in_the_window() {
    let policy = CrashPolicy {
        max_crashes: 2,
        window: Duration::from_secs(60),
        backoff_initial: ms(100),
        backoff_max: ms(300),
    };
    let mut w = CrashWindow::new(policy);
    let t0 = Instant::now();
    assert_eq!(w.record(t0), AfterCrash::RestartAfter(ms(100)));
    assert_eq!(w.record(t0 + ms(10)), AfterCrash::RestartAfter(ms(200)));
    assert_eq!(w.record(t0 + ms(20)), AfterCrash::GiveUp);

    // Crashes spread wider than the window never add up, and backoff starts over.
    let mut w = CrashWindow::new(policy);
    for i in 0..10u64 {
        assert_eq!(
            w.record(t0 + Duration::from_secs(61 * i)),
            AfterCrash::RestartAfter(ms(100))
        );
    }
}

#[test]
fn base_ids_are_stable_distinct_and_in_envoys_range() {
    assert_eq!(
        base_id_for("orders-host1-31001"),
        base_id_for("orders-host1-31001")
    );
    let ids: std::collections::BTreeSet<u32> = (0..1000)
        .map(|i| base_id_for(&format!("svc-host-{i}")))
        .collect();
    assert_eq!(
        ids.len(),
        1000,
        "no collisions among 1000 instances of one host"
    );
    assert!(ids.iter().all(|id| (1..10_000_000).contains(id)));
}

#[test]
fn envoy_command_line_carries_epoch_and_base_id() {
    let config = SidecarConfig::new("meshplane.yaml", vec![]);
    let cmd = EnvoyCommand {
        binary: "envoy".into(),
        config_path: "/tmp/b.json".into(),
        base_id: 4242,
        log_level: "info".into(),
        concurrency: Some(2),
        drain: config.drain,
        access_log: meshplane_sidecar::access_log::AccessLogSink::open(&config.access_log)
            .expect("stdout"),
    };
    let args: Vec<String> = cmd
        .args(3)
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    let joined = args.join(" ");
    assert!(
        joined.starts_with("-c /tmp/b.json --base-id 4242 --restart-epoch 3 "),
        "{joined}"
    );
    assert!(
        joined.contains("--drain-time-s 10 --parent-shutdown-time-s 15"),
        "{joined}"
    );
    assert!(joined.ends_with("--concurrency 2"), "{joined}");
}

#[test]
fn exit_codes_propagate() {
    assert_eq!(Outcome::Stopped.exit_code(), 0);
    assert_eq!(Outcome::EnvoyFailed(EnvoyExit::Code(3)).exit_code(), 3);
    assert_eq!(Outcome::EnvoyFailed(EnvoyExit::Code(0)).exit_code(), 1);
    assert_eq!(Outcome::EnvoyFailed(EnvoyExit::Signal(9)).exit_code(), 137);
}

#[test]
fn registration_advertises_the_ingress_port_with_a_check_through_envoy() {
    let golden = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/orders.yaml"
    ));
    let d = meshplane_sidecar::descriptor::load(golden)
        .unwrap()
        .descriptor;
    let check = CheckTimes {
        interval: Duration::from_secs(10),
        timeout: ms(1500),
        deregister_critical_after: Duration::from_secs(600),
    };
    let r = service_registration(&d, "orders-1", "10.0.0.5", 31002, check);
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({
            "ID": "orders-1",
            "Name": "orders",
            "Address": "10.0.0.5",
            "Port": 31001,
            "Tags": ["canary", "meshplane-metrics"],
            "Weights": { "Passing": 100, "Warning": 1 },
            "Meta": {
                "meshplane_sidecar": "true", "mtls": "permissive", "metrics_port": "31002",
                "protocol": "http1",
            },
            "Check": {
                "CheckID": "service:orders-1",
                "Name": "orders via Envoy ingress",
                "HTTP": "http://10.0.0.5:31001/status/health",
                "Method": "GET",
                "Interval": "10s",
                "Timeout": "1500ms",
                "DeregisterCriticalServiceAfter": "600s",
            },
        })
    );
    let v6 = service_registration(&d, "orders-1", "fd00::5", 31002, check);
    assert_eq!(
        v6.check.and_then(|c| c.http).as_deref(),
        Some("http://[fd00::5]:31001/status/health")
    );
    for protocol in meshplane_model::Protocol::ALL {
        let d = meshplane_model::Descriptor {
            protocol,
            ..d.clone()
        };
        let r = service_registration(&d, "orders-1", "10.0.0.5", 31002, check);
        assert_eq!(
            r.meta.get("protocol").map(String::as_str),
            Some(protocol.as_str()),
            "the app's protocol is registered for callers"
        );
    }
}
