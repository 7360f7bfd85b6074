//! `Authority::sign`: every way a CSR is refused.

use meshplane_ca::{SignError, key_and_csr};
use rcgen::{BasicConstraints, IsCa, KeyPair, SanType};

use crate::support::*;

#[test]
fn csr_for_another_service_is_wrong_identity() {
    let ca = mk_authority();
    let (_key, csr) = key_and_csr(TD, &mk_service("billing")).expect("CSR");
    let err = sign_now(&ca, "orders", csr).expect_err("refused");
    assert_eq!(
        err,
        SignError::WrongIdentity {
            expected: "spiffe://meshplane.local/service/orders".to_string(),
            found: "spiffe://meshplane.local/service/billing".to_string(),
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("service/orders") && msg.contains("service/billing"),
        "{msg}"
    );
}

#[test]
fn csr_for_another_trust_domain_is_wrong_identity() {
    let ca = mk_authority();
    let (_key, csr) = key_and_csr("evil.example", &mk_service("orders")).expect("CSR");
    let err = sign_now(&ca, "orders", csr).expect_err("refused");
    assert_eq!(
        err,
        SignError::WrongIdentity {
            expected: "spiffe://meshplane.local/service/orders".to_string(),
            found: "spiffe://evil.example/service/orders".to_string(),
        }
    );
}

#[test]
fn a_second_uri_for_another_identity_is_wrong_identity() {
    let ca = mk_authority();
    let key = KeyPair::generate().expect("key");
    let mut params = mk_params(TD, "orders");
    params
        .subject_alt_names
        .push(mk_uri("spiffe://meshplane.local/service/admin"));
    let err = sign_now(&ca, "orders", mk_csr(&params, &key)).expect_err("refused");
    assert!(
        matches!(err, SignError::WrongIdentity { ref found, .. } if found.ends_with("/admin")),
        "{err:?}"
    );
}

#[test]
fn extra_names_are_refused() {
    let ca = mk_authority();
    let key = KeyPair::generate().expect("key");

    let mut dns = mk_params(TD, "orders");
    dns.subject_alt_names
        .push(SanType::DnsName("orders.example".try_into().expect("IA5")));
    let err = sign_now(&ca, "orders", mk_csr(&dns, &key)).expect_err("refused");
    assert_eq!(
        err,
        SignError::ExtraNames {
            expected: "spiffe://meshplane.local/service/orders".to_string(),
            extra: vec!["DNSName(orders.example)".to_string()],
        }
    );
    assert!(err.to_string().contains("DNSName(orders.example)"));

    let mut ip = mk_params(TD, "orders");
    ip.subject_alt_names
        .push(SanType::IpAddress([10, 0, 0, 1].into()));
    assert!(matches!(
        sign_now(&ca, "orders", mk_csr(&ip, &key)),
        Err(SignError::ExtraNames { .. })
    ));

    let mut email = mk_params(TD, "orders");
    email.subject_alt_names.push(SanType::Rfc822Name(
        "a@example.org".try_into().expect("IA5"),
    ));
    assert!(matches!(
        sign_now(&ca, "orders", mk_csr(&email, &key)),
        Err(SignError::ExtraNames { .. })
    ));

    let mut twice = mk_params(TD, "orders");
    twice
        .subject_alt_names
        .push(twice.subject_alt_names[0].clone());
    assert!(matches!(
        sign_now(&ca, "orders", mk_csr(&twice, &key)),
        Err(SignError::ExtraNames { .. })
    ));
}

#[test]
fn csr_without_a_uri_san_is_missing_identity() {
    let ca = mk_authority();
    let key = KeyPair::generate().expect("key");
    let mut none = mk_params(TD, "orders");
    none.subject_alt_names.clear();
    let err = sign_now(&ca, "orders", mk_csr(&none, &key)).expect_err("refused");
    assert_eq!(
        err,
        SignError::MissingIdentity {
            expected: "spiffe://meshplane.local/service/orders".to_string()
        }
    );

    let mut dns_only = none.clone();
    dns_only
        .subject_alt_names
        .push(SanType::DnsName("orders".try_into().expect("IA5")));
    assert!(matches!(
        sign_now(&ca, "orders", mk_csr(&dns_only, &key)),
        Err(SignError::MissingIdentity { .. })
    ));
}

#[test]
fn csr_asking_to_be_a_ca_is_refused() {
    let ca = mk_authority();
    let key = KeyPair::generate().expect("key");
    for bc in [
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained(0),
    ] {
        let mut params = mk_params(TD, "orders");
        params.is_ca = IsCa::Ca(bc);
        assert_eq!(
            sign_now(&ca, "orders", mk_csr(&params, &key)),
            Err(SignError::RequestsCa)
        );
    }
}

#[test]
fn tampered_csrs_fail_the_signature_check() {
    let ca = mk_authority();
    let (_key, csr) = key_and_csr(TD, &mk_service("orders")).expect("CSR");
    let der = der_of(&csr);

    // Last byte: inside the signature value.
    let mut sig = der.clone();
    *sig.last_mut().expect("non-empty") ^= 0x01;
    assert_eq!(
        sign_now(&ca, "orders", reencode("CERTIFICATE REQUEST", sig)),
        Err(SignError::BadSignature)
    );

    // First "orders": the subject CN, inside the signed body.
    let at = der
        .windows(6)
        .position(|w| w == b"orders")
        .expect("CN in DER");
    let mut body = der.clone();
    body[at + 5] = b'z';
    assert_eq!(
        sign_now(&ca, "orders", reencode("CERTIFICATE REQUEST", body)),
        Err(SignError::BadSignature)
    );
}

#[test]
fn a_csr_signed_by_another_key_fails_the_signature_check() {
    // The body (with its public key) of one CSR and the signature of another: a well-formed
    // signature, made by a key the requester does not show it holds.
    let ca = mk_authority();
    let params = mk_params(TD, "orders");
    let a = der_of(&mk_csr(&params, &KeyPair::generate().expect("key")));
    let b = der_of(&mk_csr(&params, &KeyPair::generate().expect("key")));
    let (a_body, _) = split_csr(&a);
    let (_, b_signature) = split_csr(&b);
    let spliced = der_sequence(&[a_body, b_signature].concat());
    assert_eq!(
        sign_now(&ca, "orders", reencode("CERTIFICATE REQUEST", spliced)),
        Err(SignError::BadSignature)
    );
}

/// A DER CSR's (request info, signature algorithm + signature) encodings.
fn split_csr(der: &[u8]) -> (&[u8], &[u8]) {
    use x509_parser::{certification_request::X509CertificationRequest, prelude::FromDer};
    let (_, csr) = X509CertificationRequest::from_der(der).expect("CSR");
    let body = csr.certification_request_info.raw;
    let at = der
        .windows(body.len())
        .position(|w| w == body)
        .expect("body in DER");
    (body, &der[at + body.len()..])
}

fn der_sequence(content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![0x30];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

#[test]
fn malformed_csrs_are_refused() {
    let ca = mk_authority();
    let (_key, csr) = key_and_csr(TD, &mk_service("orders")).expect("CSR");
    let malformed = |text: String| {
        let result = sign_now(&ca, "orders", text.clone());
        assert!(
            matches!(result, Err(SignError::Malformed { .. })),
            "{text:?} gave {result:?}"
        );
        result.expect_err("refused").to_string()
    };

    malformed(String::new());
    malformed("   \n".to_string());
    malformed("not a csr".to_string());
    malformed(reencode("CERTIFICATE REQUEST", b"garbage".to_vec()));
    malformed(format!("{csr}trailing text"));
    malformed(format!("leading text\n{csr}"));
    malformed(format!("{csr}{csr}"));
    let mut trailing_der = der_of(&csr);
    trailing_der.extend_from_slice(&[0, 0]);
    let msg = malformed(reencode("CERTIFICATE REQUEST", trailing_der));
    assert!(msg.contains("after the DER"), "{msg}");
    let msg = malformed(csr.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"));
    assert!(msg.contains("NEW CERTIFICATE REQUEST"), "{msg}");

    // A certificate is not a CSR, even one from this CA.
    let msg = malformed(ca.ca_pem().to_string());
    assert!(msg.contains("`CERTIFICATE` block"), "{msg}");

    // Whitespace around a single block is fine.
    sign_now(&ca, "orders", format!("\n\n  {csr}\n\n")).expect("whitespace is fine");
}

#[test]
fn invalid_service_names_are_refused() {
    let ca = mk_authority();
    let (_key, csr) = key_and_csr(TD, &mk_service("orders")).expect("CSR");
    for service in ["", "orders/admin", "orders service", "..", ".", "ördërs"] {
        let err = sign_now(&ca, service, csr.clone()).expect_err("refused");
        assert!(
            matches!(err, SignError::InvalidService { .. }),
            "{service:?}: {err:?}"
        );
        assert!(
            err.to_string().contains("not a valid service name"),
            "{err}"
        );
    }
}

#[test]
fn other_keys_are_unsupported() {
    let ca = mk_authority();
    let unsupported = |csr: String| match sign_now(&ca, "orders", csr) {
        Err(SignError::UnsupportedKey { key }) => key,
        other => panic!("expected UnsupportedKey, got {other:?}"),
    };
    assert_eq!(
        unsupported(include_str!("fixtures/rsa1024-orders.csr").to_string()),
        "RSA of 1024 bits"
    );
    assert!(
        unsupported(include_str!("fixtures/dsa-orders.csr").to_string())
            .contains("1.2.840.10040.4.1")
    );
    let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).expect("P-521");
    assert!(unsupported(mk_csr(&mk_params(TD, "orders"), &p521)).contains("1.3.132.0.35"));
}

#[test]
fn errors_never_show_the_csr() {
    // Error text is shown to users and logged; it names what is wrong, not the input.
    let ca = mk_authority();
    let (_key, csr) = key_and_csr(TD, &mk_service("billing")).expect("CSR");
    let body_line = csr.lines().nth(1).expect("base64 line");
    let err = sign_now(&ca, "orders", csr.clone()).expect_err("refused");
    assert!(!err.to_string().contains(body_line));
    assert!(!format!("{err:?}").contains(body_line));
}
