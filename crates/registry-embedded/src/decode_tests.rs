use std::time::Duration;

use meshplane_model::Health;

use super::*;

fn decode(json: &str) -> RegisterRequest {
    decode_register(json.as_bytes()).expect("valid registration")
}

#[test]
fn defaults_follow_consul() {
    let r = decode(r#"{"Name": "web"}"#);
    assert_eq!(r.service.id.as_str(), "web", "ID defaults to Name");
    assert_eq!(r.service.port, 0);
    assert_eq!((r.service.weight_passing, r.service.weight_warning), (1, 1));
    assert!(r.checks.is_empty());
}

#[test]
fn check_ids_and_names_default_like_consul() {
    let one = decode(r#"{"Name": "web", "ID": "w1", "Check": {"TTL": "10s"}}"#);
    assert_eq!(one.checks[0].id, "service:w1");
    assert_eq!(one.checks[0].name, "Service 'web' check");
    assert_eq!(one.checks[0].status, Health::Critical);
    assert_eq!(
        one.checks[0].kind,
        CheckKind::Ttl {
            ttl: Duration::from_secs(10)
        }
    );

    let two = decode(
        r#"{"Name": "web", "ID": "w1", "Checks": [{"TTL": "10s"}, {"HTTP": "http://x/h", "Interval": "5s"}]}"#,
    );
    let ids: Vec<&str> = two.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["service:w1:1", "service:w1:2"]);
    match &two.checks[1].kind {
        CheckKind::Http {
            interval,
            timeout,
            method,
            ..
        } => {
            assert_eq!(
                (*interval, *timeout, method.as_str()),
                (Duration::from_secs(5), DEFAULT_HTTP_TIMEOUT, "GET")
            );
        }
        other => panic!("expected HTTP, got {other:?}"),
    }
}

#[test]
fn keys_match_case_insensitively_and_in_snake_case() {
    let r = decode(
        r#"{"name": "web", "SERVICE_ID_IGNORED": 1, "enable_tag_override": true, "weights": {"passing": 3},
            "check": {"ttl": "1m", "check_id": "c1", "deregister_critical_service_after": "2m", "status": "passing"}}"#,
    );
    assert!(r.service.enable_tag_override);
    assert_eq!(r.service.weight_passing, 3);
    let c = &r.checks[0];
    assert_eq!(
        (c.id.as_str(), c.status, c.deregister_after),
        ("c1", Health::Passing, Some(Duration::from_secs(120)))
    );
}

#[test]
fn duplicate_check_ids_are_rejected() {
    let err = decode_register(br#"{"Name": "web", "Checks": [{"TTL": "1s", "CheckID": "a"}, {"TTL": "2s", "CheckID": "a"}]}"#)
        .expect_err("duplicate");
    assert!(err.to_string().contains("Duplicate CheckID"), "{err}");
}

#[test]
fn both_ttl_and_http_is_ambiguous() {
    let err = decode_register(
        br#"{"Name": "web", "Check": {"TTL": "1s", "HTTP": "http://x", "Interval": "1s"}}"#,
    )
    .expect_err("ambiguous");
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn wrong_json_types_are_named_by_their_path() {
    for (body, expected) in [
        (r#"{"Name": "web", "Port": 70000}"#, "Invalid Port: "),
        (r#"{"Name": 5}"#, "Invalid Name: "),
        (
            r#"{"Name": "web", "checks": [{"ttl": "1s"}, {"ttl": 5}]}"#,
            "Invalid Checks[1].TTL: ",
        ),
        (
            r#"{"Name": "web", "Meta": {"k": 1}}"#,
            "Invalid Service Meta.k: ",
        ),
        (
            r#"{"Name": "web", "weights": {"passing": -1}}"#,
            "Invalid Weights.Passing: ",
        ),
    ] {
        let err = decode_register(body.as_bytes()).expect_err(body);
        assert!(err.to_string().starts_with(expected), "{body}: {err}");
    }
}
