//! The bootstrap: golden output, metadata as written, and Envoy's own verdict on it.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;

use meshplane_model::{Stats, StatsPattern};
use meshplane_sidecar::bootstrap::{BootstrapSpec, XdsTlsMode, bootstrap};
use meshplane_sidecar::descriptor;
use meshplane_sidecar::{BootstrapArgs, ControlPlaneAddr, XdsFlavour, render_bootstrap};
use serde_json::{Value, json};

fn golden_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

fn orders() -> descriptor::LoadedDescriptor {
    descriptor::load(&golden_dir().join("orders.yaml")).unwrap()
}

fn mk_bootstrap(written: &Value, control_plane: &[ControlPlaneAddr], xds: XdsFlavour) -> Value {
    mk_bootstrap_tls(written, control_plane, xds, None)
}

fn mk_bootstrap_tls(
    written: &Value,
    control_plane: &[ControlPlaneAddr],
    xds: XdsFlavour,
    xds_tls: Option<XdsTlsMode<'_>>,
) -> Value {
    mk_bootstrap_stats(written, control_plane, xds, xds_tls, &Stats::default())
}

fn mk_bootstrap_stats(
    written: &Value,
    control_plane: &[ControlPlaneAddr],
    xds: XdsFlavour,
    xds_tls: Option<XdsTlsMode<'_>>,
    stats: &Stats,
) -> Value {
    bootstrap(&BootstrapSpec {
        descriptor: written,
        instance_id: "orders-host1-31001",
        service: "orders",
        datacenter: "dc2",
        admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
        control_plane,
        xds,
        listen_address: None,
        admin_relay: None,
        xds_tls,
        sds_socket: Path::new("/run/meshplane/orders/sds.sock"),
        stats,
        metrics_port: Some(31002),
        egress_flags: Some(SocketAddr::from(([127, 0, 0, 1], 31003))),
    })
}

fn cps(list: &str) -> Vec<ControlPlaneAddr> {
    ControlPlaneAddr::parse_list(list).unwrap()
}

/// Compares with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites it.
fn assert_golden(name: &str, actual: &Value) {
    let path = golden_dir().join(name);
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        text, expected,
        "{name} differs; rerun with UPDATE_GOLDEN=1 if the change is intended"
    );
}

#[test]
fn bootstrap_matches_golden() {
    let loaded = orders();
    let value = mk_bootstrap(
        &loaded.written,
        &cps("10.0.0.1:18000,cp2.internal:18000"),
        XdsFlavour::StateOfTheWorld,
    );
    assert_golden("orders-bootstrap.json", &value);
}

#[test]
fn metadata_is_the_descriptor_as_written_plus_admin() {
    let loaded = orders();
    let value = mk_bootstrap(
        &loaded.written,
        &cps("127.0.0.1:18000"),
        XdsFlavour::StateOfTheWorld,
    );
    let node = &value["node"];
    assert_eq!(node["id"], "orders-host1-31001");
    assert_eq!(node["cluster"], "orders");
    assert_eq!(node["locality"], json!({ "zone": "dc2" }));
    let mut metadata = node["metadata"].as_object().unwrap().clone();
    assert_eq!(
        metadata.remove("admin"),
        Some(json!({ "address": "127.0.0.1", "port": 9901 }))
    );
    assert_eq!(Value::Object(metadata.clone()), loaded.written);
    // Integers stay integers; strings stay strings (`"503"` was quoted in the YAML).
    assert!(metadata["port"].is_u64());
    assert_eq!(
        metadata["dependencies"][0]["retries"]["on"][2],
        json!("503")
    );
    // And the control plane can parse it back (after removing `admin`).
    let parsed = meshplane_model::Descriptor::from_json(Value::Object(metadata)).unwrap();
    assert_eq!(parsed, loaded.descriptor);
}

#[test]
fn ads_flavour_and_failover_priorities() {
    let loaded = orders();
    let sotw = mk_bootstrap(
        &loaded.written,
        &cps("127.0.0.1:1"),
        XdsFlavour::StateOfTheWorld,
    );
    assert_eq!(sotw["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    assert_eq!(sotw["static_resources"]["clusters"][0]["type"], "STATIC");
    let delta = mk_bootstrap(
        &loaded.written,
        &cps("a:1, b:2 ,[::1]:3"),
        XdsFlavour::Delta,
    );
    assert_eq!(
        delta["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );
    let cluster = &delta["static_resources"]["clusters"][0];
    assert_eq!(cluster["type"], "STRICT_DNS");
    let endpoints = cluster["load_assignment"]["endpoints"].as_array().unwrap();
    let summary: Vec<(u64, String, u64)> = endpoints
        .iter()
        .map(|e| {
            let sa = &e["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
            (
                e["priority"].as_u64().unwrap(),
                sa["address"].as_str().unwrap().to_owned(),
                sa["port_value"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(0, "a".into(), 1), (1, "b".into(), 2), (2, "::1".into(), 3)]
    );
}

/// A hung control plane (connection open, nothing answers) is only noticed by unanswered
/// HTTP/2 PINGs; and after it answers again, a proxy must not sit out Envoy's default 30 s
/// backoff. The reliability suite measures both with real Envoy; this pins the numbers.
#[test]
fn xds_keepalive_detects_a_hung_control_plane_and_retries_within_half_a_second() {
    use meshplane_sidecar::bootstrap::{
        XDS_HANG_DETECTED_WITHIN, XDS_KEEPALIVE_INTERVAL_SECS, XDS_KEEPALIVE_TIMEOUT_SECS,
    };
    let loaded = orders();
    let value = mk_bootstrap(
        &loaded.written,
        &cps("127.0.0.1:18000"),
        XdsFlavour::StateOfTheWorld,
    );
    let grpc = &value["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"];
    assert_eq!(
        grpc["retry_policy"]["retry_back_off"],
        json!({ "base_interval": "0.1s", "max_interval": "0.5s" })
    );
    let cluster = &value["static_resources"]["clusters"][0];
    let keepalive = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"];
    assert_eq!(keepalive, &json!({ "interval": "5s", "timeout": "2s" }));
    // Envoy jitters the interval by up to 15 %.
    let worst = XDS_KEEPALIVE_INTERVAL_SECS as f64 * 1.15 + XDS_KEEPALIVE_TIMEOUT_SECS as f64;
    assert!(XDS_HANG_DETECTED_WITHIN.as_secs_f64() >= worst);
}

#[test]
fn control_plane_addresses_are_checked() {
    for bad in ["nohost", "host:", ":80", "host:99999", "host:0", "ho st:80"] {
        assert!(
            bad.parse::<ControlPlaneAddr>().is_err(),
            "{bad} should be rejected"
        );
    }
    assert_eq!(
        "[::1]:18000"
            .parse::<ControlPlaneAddr>()
            .unwrap()
            .to_string(),
        "[::1]:18000"
    );
}

#[test]
fn bootstrap_command_renders_valid_json_with_defaults() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BootstrapArgs,
    }
    let path = golden_dir().join("orders.yaml");
    let cli = Cli::parse_from([
        "x",
        "--descriptor",
        path.to_str().unwrap(),
        "--control-plane",
        "127.0.0.1:18000",
        "--listen-address",
        "127.0.0.1",
    ]);
    let value: Value = serde_json::from_str(&render_bootstrap(cli.args).unwrap()).unwrap();
    assert_eq!(
        value["admin"]["address"]["socket_address"]["port_value"],
        9901
    );
    assert_eq!(value["node"]["metadata"]["address"], "127.0.0.1");
    assert!(value["node"]["id"].as_str().unwrap().starts_with("orders-"));
    assert!(value["node"]["id"].as_str().unwrap().ends_with("-31001"));
}

#[test]
fn xds_tls_over_sds_presents_the_identity_and_checks_the_control_plane_host() {
    let loaded = orders();
    let value = mk_bootstrap_tls(
        &loaded.written,
        &cps("127.0.0.1:18000,cp.example:18000"),
        XdsFlavour::StateOfTheWorld,
        Some(XdsTlsMode::Sds { ca_file: None }),
    );
    let xds = &value["static_resources"]["clusters"][0];
    assert_eq!(xds["name"], "meshplane_xds");
    let common = &xds["transport_socket"]["typed_config"]["common_tls_context"];
    let sds = |v: &Value| {
        (
            v["name"].as_str().unwrap().to_owned(),
            v["sds_config"]["api_config_source"]["grpc_services"][0]["envoy_grpc"]["cluster_name"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    assert_eq!(
        sds(&common["tls_certificate_sds_secret_configs"][0]),
        ("meshplane_identity".to_owned(), "meshplane_sds".to_owned())
    );
    let combined = &common["combined_validation_context"];
    assert_eq!(
        sds(&combined["validation_context_sds_secret_config"]),
        ("meshplane_trust".to_owned(), "meshplane_sds".to_owned())
    );
    assert_eq!(
        combined["default_validation_context"]["match_typed_subject_alt_names"],
        json!([
            { "san_type": "IP_ADDRESS", "matcher": { "exact": "127.0.0.1" } },
            { "san_type": "DNS", "matcher": { "exact": "cp.example" } },
        ])
    );
    assert!(common.get("tls_certificates").is_none(), "no key file");
}

/// Envoy itself accepts every variant (`--mode validate` neither binds nor connects).
#[test]
fn envoy_validates_the_bootstrap() {
    let envoy = meshplane_test_support::envoy::envoy_binary();
    let dir = tempfile::tempdir().unwrap();
    let loaded = orders();
    let ca_file = dir.path().join("control-plane-ca.pem");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&ca_file, ca_params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let variants = [
        (
            "sotw",
            mk_bootstrap(
                &loaded.written,
                &cps("127.0.0.1:18000"),
                XdsFlavour::StateOfTheWorld,
            ),
        ),
        (
            "delta-failover",
            mk_bootstrap(
                &loaded.written,
                &cps("127.0.0.1:18000,localhost:18001"),
                XdsFlavour::Delta,
            ),
        ),
        (
            "xds-tls-sds",
            mk_bootstrap_tls(
                &loaded.written,
                &cps("127.0.0.1:18000,localhost:18001"),
                XdsFlavour::StateOfTheWorld,
                Some(XdsTlsMode::Sds { ca_file: None }),
            ),
        ),
        (
            "xds-tls-sds-ca-file",
            mk_bootstrap_tls(
                &loaded.written,
                &cps("127.0.0.1:18000"),
                XdsFlavour::Delta,
                Some(XdsTlsMode::Sds {
                    ca_file: Some(&ca_file),
                }),
            ),
        ),
        (
            "stats-all",
            mk_bootstrap_stats(
                &loaded.written,
                &cps("127.0.0.1:18000"),
                XdsFlavour::StateOfTheWorld,
                None,
                &Stats::All,
            ),
        ),
        (
            "stats-additions",
            mk_bootstrap_stats(
                &loaded.written,
                &cps("127.0.0.1:18000"),
                XdsFlavour::StateOfTheWorld,
                None,
                &Stats::Mesh(vec![
                    StatsPattern::Prefix("vhost.".into()),
                    StatsPattern::Suffix(".lb_healthy_panic".into()),
                    StatsPattern::Exact("cluster.payments.upstream_cx_rx_bytes_total".into()),
                    StatsPattern::Contains("retry".into()),
                    StatsPattern::Regex("^cluster\\.payments\\..*".into()),
                ]),
            ),
        ),
    ];
    for (name, value) in variants {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
        let out = std::process::Command::new(&envoy)
            .args(["--mode", "validate", "--log-level", "warning", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: Envoy rejected the bootstrap:\n{log}"
        );
        assert!(!log.contains("[warning]"), "{name}: Envoy warned:\n{log}");
    }
}
