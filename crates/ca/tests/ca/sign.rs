//! `Authority::sign`: what a good CSR gets.

use std::time::Duration;

use meshplane_ca::{Authority, CLOCK_SKEW, DEFAULT_CERT_TTL, certificate_identity, key_and_csr};
use meshplane_model::identity::spiffe_id;
use rcgen::{
    BasicConstraints, CustomExtension, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::support::*;

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn good_csr_gets_a_leaf_for_its_key_and_identity_only() {
    let ca = mk_authority();
    let (key, csr) = key_and_csr(TD, &mk_service("orders")).expect("key and CSR");
    let resp = sign_now(&ca, "orders", csr.clone()).expect("signed");
    let id = "spiffe://meshplane.local/service/orders";

    assert_eq!(resp.identity, id);
    assert_eq!(resp.ca_bundle, ca.ca_pem());
    let chain = pem::parse_many(&resp.certificate_chain).expect("PEM chain");
    assert_eq!(chain.len(), 1, "chain is the leaf alone");
    let leaf = parse_cert(chain[0].contents());
    let ca_der = der_of(ca.ca_pem());
    let ca_cert = parse_cert(&ca_der);

    // Chains to the CA.
    assert_eq!(leaf.issuer(), ca_cert.subject());
    leaf.verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA key");
    let ski = ca_cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0),
            _ => None,
        })
        .expect("CA has a subject key id");
    let aki = leaf
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
        .expect("leaf names its issuer's key");
    assert_eq!(aki, ski);

    // Exactly the URI SAN; CN is the service.
    let san = leaf
        .subject_alternative_name()
        .expect("SAN parses")
        .expect("SAN present");
    assert_eq!(san.value.general_names, vec![GeneralName::URI(id)]);
    let cns: Vec<_> = leaf
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().expect("utf8"))
        .collect();
    assert_eq!(cns, vec!["orders"]);
    assert_eq!(leaf.subject().iter().count(), 1, "subject is CN only");

    // A TLS client+server leaf, not a CA.
    let eku = leaf
        .extended_key_usage()
        .expect("EKU parses")
        .expect("EKU present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(
        !(eku.any
            || eku.code_signing
            || eku.email_protection
            || eku.time_stamping
            || eku.ocsp_signing)
    );
    assert!(eku.other.is_empty());
    let ku = leaf
        .key_usage()
        .expect("KU parses")
        .expect("KU present")
        .value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let bc = leaf
        .basic_constraints()
        .expect("BC parses")
        .expect("BC present")
        .value;
    assert!(!bc.ca);
    assert!(!leaf.is_ca());

    // Valid from now - skew to now + ttl, and the response says so.
    let now = unix(mk_now());
    let not_before = leaf.validity().not_before.timestamp() as u64;
    let not_after = leaf.validity().not_after.timestamp() as u64;
    assert_eq!(not_before, now - CLOCK_SKEW.as_secs());
    assert_eq!(not_after, now + DEFAULT_CERT_TTL.as_secs());
    assert_eq!(
        (resp.not_before_unix, resp.not_after_unix),
        (not_before, not_after)
    );

    // The requester's key, not one the CA made up; and the key `key_and_csr` hands back
    // (the one the sidecar gives Envoy) is that key.
    assert_eq!(leaf.public_key().raw, csr_spki(&csr).as_slice());
    assert!(!csr.contains("PRIVATE KEY"), "only the CSR is sent");
    let key = KeyPair::from_pem(&key).expect("a PKCS#8 key PEM");
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );

    // 16-byte positive serial, fresh each time.
    assert_eq!(leaf.raw_serial().len(), 16);
    assert_eq!(leaf.raw_serial()[0] & 0x80, 0);
    let again = sign_now(&ca, "orders", csr).expect("signed again");
    let again_der = der_of(&again.certificate_chain);
    assert_ne!(parse_cert(&again_der).raw_serial(), leaf.raw_serial());

    // The parse helper agrees.
    let (uri, expiry) = certificate_identity(&resp.certificate_chain).expect("identity");
    assert_eq!(uri, id);
    assert_eq!(unix(expiry), not_after);
}

#[test]
fn ttl_is_the_authoritys() {
    let (cert, key) = mk_ca_files(IsCa::Ca(BasicConstraints::Unconstrained));
    let ttl = Duration::from_secs(3600);
    let ca = Authority::from_pem(&cert, &key, TD, ttl).expect("authority");
    assert_eq!(ca.cert_ttl(), ttl);
    let (_key, csr) = key_and_csr(TD, &mk_service("orders")).expect("CSR");
    let resp = sign_now(&ca, "orders", csr).expect("signed");
    assert_eq!(resp.not_after_unix - resp.not_before_unix, 3600 + 60);
}

#[test]
fn requested_subject_and_extensions_are_not_copied() {
    let ca = mk_authority();
    let key = KeyPair::generate().expect("key");
    let mut params = mk_params(TD, "orders");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Root Admins");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 99999, 1],
        vec![0x05, 0x00],
    )];
    params.is_ca = IsCa::ExplicitNoCa;

    let resp = sign_now(&ca, "orders", mk_csr(&params, &key)).expect("signed");
    let der = der_of(&resp.certificate_chain);
    let leaf = parse_cert(&der);
    assert_eq!(leaf.subject().iter().count(), 1, "only CN, no O");
    let ku = leaf.key_usage().expect("KU").expect("KU present").value;
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let eku = leaf
        .extended_key_usage()
        .expect("EKU")
        .expect("EKU present")
        .value;
    assert!(!eku.code_signing && eku.server_auth && eku.client_auth);
    let mut oids: Vec<String> = leaf
        .extensions()
        .iter()
        .map(|e| e.oid.to_id_string())
        .collect();
    oids.sort();
    assert_eq!(
        oids,
        [
            "2.5.29.14",
            "2.5.29.15",
            "2.5.29.17",
            "2.5.29.19",
            "2.5.29.35",
            "2.5.29.37"
        ],
        "SKI, KU, SAN, BC, AKI, EKU and nothing the CSR asked for"
    );
}

#[test]
fn long_service_names_get_an_empty_subject_and_a_critical_san() {
    let ca = mk_authority();
    let name = "s".repeat(200);
    let (_key, csr) = key_and_csr(TD, &mk_service(&name)).expect("CSR");
    let resp = sign_now(&ca, &name, csr).expect("signed");
    let der = der_of(&resp.certificate_chain);
    let leaf = parse_cert(&der);
    assert_eq!(leaf.subject().iter().count(), 0);
    let san = leaf
        .subject_alternative_name()
        .expect("SAN")
        .expect("SAN present");
    assert!(san.critical);
    assert_eq!(resp.identity, spiffe_id(TD, &mk_service(&name)));
}

#[test]
fn accepted_key_types_keep_their_key() {
    let ca = mk_authority();
    let keys = [
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384"),
        KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519"),
        KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("RSA"),
    ];
    for key in keys {
        let csr = mk_csr(&mk_params(TD, "orders"), &key);
        let resp = sign_now(&ca, "orders", csr.clone())
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.algorithm()));
        let der = der_of(&resp.certificate_chain);
        assert_eq!(parse_cert(&der).public_key().raw, csr_spki(&csr).as_slice());
    }
}

#[test]
fn p256_key_signed_with_sha384_is_certified_as_p256() {
    // rcgen's own CSR parser would take the key for P-384 from the signature algorithm.
    let ca = mk_authority();
    let csr = include_str!("fixtures/p256-sha384-orders.csr");
    let resp = sign_now(&ca, "orders", csr.to_string()).expect("signed");
    let der = der_of(&resp.certificate_chain);
    let leaf = parse_cert(&der);
    assert_eq!(leaf.public_key().raw, csr_spki(csr).as_slice());
    assert_eq!(curve_oid(&leaf).as_deref(), Some(P256));
}
