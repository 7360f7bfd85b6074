use std::time::Duration;

use super::*;

const FULL: &str = r#"
service: orders
port: 8080
ingress: { port: 31001 }
egress:  { port: 31000 }
tags: [canary]
mtls: permissive
weight: 100
dependencies:
  - service: payments
    timeout: 2s
    retries: { attempts: 2, per_try_timeout: 500ms, on: [connect-failure, reset, "503"] }
  - domain: https://api.example.com
  - domain_pattern: "*.example.org"
incoming:
  unlisted_endpoints: block
  endpoints:
    - { path_prefix: /api/, methods: [GET, POST], clients: [web, "role:backoffice"] }
    - { path: /status/health }
  roles:
    - { name: backoffice, clients: [admin-ui, reports] }
"#;

fn field_error(yaml: &str) -> (String, String) {
    match Descriptor::from_yaml(yaml) {
        Err(DescriptorError::Field { field, message }) => (field, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn the_design_example_parses() {
    let d = Descriptor::from_yaml(FULL).expect("valid");
    assert_eq!(d.service.as_str(), "orders");
    assert_eq!(d.ingress.port, 31001);
    assert_eq!(d.egress, Some(EgressListener { port: 31000 }));
    assert_eq!(d.dependencies.len(), 3);
    assert_eq!(d.dependencies[0].timeout, Some(Duration::from_secs(2)));
    let retries = d.dependencies[0].retries.as_ref().expect("retries");
    assert_eq!(
        retries.on,
        vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(503)
        ]
    );
    assert_eq!(
        d.dependencies[1].target,
        Target::Domain(Domain {
            tls: true,
            host: "api.example.com".into(),
            port: 443
        })
    );
    assert_eq!(
        d.dependencies[2].target,
        Target::DomainPattern("*.example.org".into())
    );
    let incoming = d.incoming.as_ref().expect("incoming");
    assert_eq!(
        incoming.endpoints[0].clients[1],
        Client::Role("backoffice".into())
    );
    assert!(incoming.endpoints[1].clients.is_empty());
    let names: Vec<_> = d.named_clients().iter().map(|s| s.to_string()).collect();
    assert_eq!(names, vec!["admin-ui", "reports", "web"]);
}

#[test]
fn json_and_yaml_agree() {
    let yaml = Descriptor::from_yaml(FULL).expect("valid");
    let value: serde_json::Value = serde_norway::from_str(FULL).expect("yaml");
    assert_eq!(Descriptor::from_json(value).expect("valid"), yaml);
}

#[test]
fn unknown_fields_are_named() {
    let (field, message) = field_error("service: a\nport: 1\ningress: { port: 2, prot: 3 }\n");
    assert_eq!(field, "ingress.prot");
    assert!(message.contains("unknown field `prot`"), "{message}");
    let (field, message) = field_error("service: a\nport: 1\ningress: { port: 2 }\ncolour: red\n");
    assert_eq!(field, "colour");
    assert!(message.contains("unknown field `colour`"), "{message}");
}

#[test]
fn bad_values_name_their_field() {
    let base = "service: a\nport: 1\ningress: { port: 2 }\n";
    let cases = [
        (
            "dependencies: [{ service: b, timeout: 2 s }]",
            "dependencies[0].timeout",
            "invalid duration",
        ),
        (
            "dependencies: [{ service: b, retries: { attempts: 1, on: [teapot] } }]",
            "dependencies[0].retries.on[0]",
            "teapot",
        ),
        (
            "dependencies: [{ service: b, retries: { attempts: 50 } }]",
            "dependencies[0].retries.attempts",
            "at most",
        ),
        (
            "dependencies: [{ service: b, domain: http://x.org }]",
            "dependencies[0]",
            "exactly one",
        ),
        (
            "dependencies: [{ domain: api.example.com }]",
            "dependencies[0].domain",
            "scheme",
        ),
        (
            "dependencies: [{ domain_pattern: example.org }]",
            "dependencies[0].domain_pattern",
            "wildcard",
        ),
        (
            "dependencies: [{ service: \"bad name\" }]",
            "dependencies[0].service",
            "contains",
        ),
        (
            "incoming: { endpoints: [{ path: /a, methods: [FETCH] }] }",
            "incoming.endpoints[0].methods[0]",
            "FETCH",
        ),
        (
            "incoming: { endpoints: [{ path: /a, clients: [\"role:x\"] }] }",
            "incoming.endpoints[0].clients[0]",
            "not defined",
        ),
        (
            "incoming: { endpoints: [{ path: a }] }",
            "incoming.endpoints[0].path",
            "start with",
        ),
        (
            "incoming: { unlisted_endpoints: maybe }",
            "incoming.unlisted_endpoints",
            "maybe",
        ),
        ("mtls: sometimes", "mtls", "sometimes"),
        ("weight: 0", "weight", "between"),
    ];
    for (extra, want_field, want_message) in cases {
        let (field, message) = field_error(&format!("{base}{extra}\n"));
        assert_eq!(field, want_field, "for {extra}: {message}");
        assert!(message.contains(want_message), "for {extra}: {message}");
    }
}

#[test]
fn ports_must_be_distinct_and_nonzero() {
    let (field, _) = field_error("service: a\nport: 1\ningress: { port: 1 }\n");
    assert_eq!(field, "ingress.port");
    let (field, _) =
        field_error("service: a\nport: 1\ningress: { port: 2 }\negress: { port: 2 }\n");
    assert_eq!(field, "egress.port");
    let (field, _) = field_error("service: a\nport: 0\ningress: { port: 2 }\n");
    assert_eq!(field, "port");
    let (field, message) = field_error("service: a\nport: 70000\ningress: { port: 2 }\n");
    assert_eq!(field, "port", "{message}");
    let base = "service: a\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\n";
    for taken in [1, 2, 3] {
        let (field, message) = field_error(&format!("{base}metrics: {{ port: {taken} }}\n"));
        assert_eq!(field, "metrics.port", "{message}");
        assert!(message.contains("already used"), "{message}");
    }
    let (field, _) = field_error(&format!("{base}metrics: {{ port: 0 }}\n"));
    assert_eq!(field, "metrics.port");
    let (field, message) = field_error(&format!("{base}metrics: {{ port: 4, path: /x }}\n"));
    assert!(field.starts_with("metrics"), "{field}: {message}");
    let d = Descriptor::from_yaml(&format!("{base}metrics: {{ port: 4 }}\n")).expect("valid");
    assert_eq!(d.metrics.port, Some(4));
    let d = Descriptor::from_yaml(base).expect("valid");
    assert_eq!(d.metrics.port, None, "picked by the sidecar");
}

#[test]
fn syntax_errors_carry_a_location() {
    let err = Descriptor::from_yaml("service: [unclosed\n").expect_err("syntax");
    assert!(err.to_string().contains("line"), "{err}");
}

#[test]
fn wildcard_dependency_is_parsed_as_all_services() {
    let d = Descriptor::from_yaml(
        "service: a\nport: 1\ningress: { port: 2 }\ndependencies: [{ service: \"*\" }]\n",
    )
    .expect("valid");
    assert!(d.depends_on_all());
    assert_eq!(d.service_dependencies().count(), 0);
}

#[test]
fn clients_need_mtls_to_be_identified() {
    let base = "service: a\nport: 1\ningress: { port: 2 }\nincoming:\n  endpoints:\n    - { path: /open }\n    - { path_prefix: /api/, clients: [web] }\n";
    let err = Descriptor::from_yaml(&format!("{base}mtls: disabled\n")).expect_err("no identity");
    let DescriptorError::Field { field, message } = err else {
        panic!("field error expected");
    };
    assert_eq!(field, "incoming.endpoints[1].clients");
    assert!(message.contains("mtls: permissive"), "{message}");
    assert!(Descriptor::from_yaml(&format!("{base}mtls: strict\n")).is_ok());
    // Open endpoints only: fine without mTLS.
    let open = "service: a\nport: 1\ningress: { port: 2 }\nmtls: disabled\nincoming:\n  endpoints: [{ path: /open }]\n";
    assert!(Descriptor::from_yaml(open).is_ok());
}

#[test]
fn stats_default_to_the_mesh_list_and_take_additions_or_all() {
    let base = "service: a\nport: 1\ningress: { port: 2 }\n";
    let d = Descriptor::from_yaml(base).expect("valid");
    assert_eq!(d.stats, Stats::Mesh(Vec::new()));
    let d = Descriptor::from_yaml(&format!("{base}stats: {{ include: all }}\n")).expect("valid");
    assert_eq!(d.stats, Stats::All);
    let yaml = format!(
        "{base}stats:\n  include:\n    - prefix: vhost.\n    - suffix: .upstream_cx_rx_bytes_total\n    - regex: '^cluster\\.payments\\..*'\n"
    );
    let d = Descriptor::from_yaml(&yaml).expect("valid");
    assert_eq!(
        d.stats,
        Stats::Mesh(vec![
            StatsPattern::Prefix("vhost.".into()),
            StatsPattern::Suffix(".upstream_cx_rx_bytes_total".into()),
            StatsPattern::Regex("^cluster\\.payments\\..*".into()),
        ])
    );
    let value: serde_json::Value = serde_norway::from_str(&yaml).expect("yaml");
    assert_eq!(Descriptor::from_json(value).expect("valid"), d);
}

#[test]
fn bad_stats_name_their_field() {
    let base = "service: a\nport: 1\ningress: { port: 2 }\n";
    let cases = [
        ("stats: { include: everything }", "stats.include", "`all`"),
        ("stats: { include: 3 }", "stats.include", "`all` or a list"),
        (
            "stats: { include: [{ prefix: a, suffix: b }] }",
            "stats.include[0]",
            "exactly one",
        ),
        (
            "stats: { include: [{ prefix: a }, { regex: \"(\" }] }",
            "stats.include[1].regex",
            "regular expression",
        ),
        (
            "stats: { include: [{ prefix: \"\" }] }",
            "stats.include[0]",
            "include: all",
        ),
        (
            "stats: { include: [{ begins: a }] }",
            "stats.include[0].begins",
            "unknown field",
        ),
        ("stats: { exclude: [] }", "stats.exclude", "unknown field"),
    ];
    for (extra, want_field, want_message) in cases {
        let (field, message) = field_error(&format!("{base}{extra}\n"));
        assert_eq!(field, want_field, "{extra}: {message}");
        assert!(message.contains(want_message), "{extra}: {message}");
    }
}

#[test]
fn access_log_defaults_to_errors_and_names_the_field_when_bad() {
    let base = "service: orders\nport: 8080\ningress: { port: 31001 }\n";
    let d = Descriptor::from_yaml(base).expect("valid");
    assert_eq!(d.access_log, AccessLog::Errors);
    for (text, want) in [
        ("all", AccessLog::All),
        ("off", AccessLog::Off),
        ("errors", AccessLog::Errors),
    ] {
        let d = Descriptor::from_yaml(&format!("{base}access_log: {text}\n")).expect("valid");
        assert_eq!(d.access_log, want, "{text}");
    }
    let (field, message) = field_error(&format!("{base}access_log: verbose\n"));
    assert_eq!(field, "access_log");
    assert!(
        message.contains("`verbose` is not a choice; use `errors`"),
        "the choices are named: {message}"
    );
    let json = serde_json::json!({
        "service": "orders", "port": 8080, "ingress": { "port": 31001 }, "access_log": true,
    });
    match Descriptor::from_json(json) {
        Err(DescriptorError::Field { field, .. }) => assert_eq!(field, "access_log"),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn protocol_defaults_to_http1_and_names_the_field_when_bad() {
    let base = "service: orders\nport: 8080\ningress: { port: 31001 }\n";
    let d = Descriptor::from_yaml(base).expect("valid");
    assert_eq!(d.protocol, Protocol::Http1);
    for want in Protocol::ALL {
        let d = Descriptor::from_yaml(&format!("{base}protocol: {want}\n")).expect("valid");
        assert_eq!(d.protocol, want);
        assert_eq!(
            serde_json::to_value(d.protocol).expect("serializes"),
            serde_json::json!(want.as_str()),
            "the serialized name is the one descriptors use"
        );
    }
    let (field, message) = field_error(&format!("{base}protocol: http3\n"));
    assert_eq!(field, "protocol");
    assert!(
        message.contains("`http3` is not a choice; use `http1`"),
        "the choices are named: {message}"
    );
    let json = serde_json::json!({
        "service": "orders", "port": 8080, "ingress": { "port": 31001 }, "protocol": 2,
    });
    match Descriptor::from_json(json) {
        Err(DescriptorError::Field { field, .. }) => assert_eq!(field, "protocol"),
        other => panic!("expected a field error, got {other:?}"),
    }
}
