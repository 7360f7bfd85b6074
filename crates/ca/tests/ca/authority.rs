//! Building the CA: operator files (`from_pem`) and the generated, persisted CA
//! (`load_or_generate`).

use std::{fs, time::Duration};

use meshplane_ca::{
    Authority, CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY, CaError, DEFAULT_CERT_TTL, key_and_csr,
};
use rcgen::{BasicConstraints, IsCa, KeyPair};

use crate::support::*;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn generates_once_then_reloads_the_same_ca() {
    let tmp = tempdir();
    let dir = tmp.path().join("ca"); // does not exist yet
    let first = Authority::load_or_generate(&dir, TD, DEFAULT_CERT_TTL).expect("generated");
    let cert_on_disk = fs::read_to_string(dir.join(CA_CERT_FILE)).expect("ca.crt");
    let key_on_disk = fs::read_to_string(dir.join(CA_KEY_FILE)).expect("ca.key");
    assert_eq!(first.ca_pem(), cert_on_disk);
    assert!(key_on_disk.contains("-----BEGIN PRIVATE KEY-----"));

    let second = Authority::load_or_generate(&dir, TD, DEFAULT_CERT_TTL).expect("reloaded");
    assert_eq!(second.ca_pem(), first.ca_pem());
    assert_eq!(
        fs::read_to_string(dir.join(CA_KEY_FILE)).expect("ca.key"),
        key_on_disk
    );
    assert_eq!(second.trust_domain(), TD);

    // The reloaded CA signs with the key of the certificate it serves.
    let (_key, csr) = key_and_csr(TD, &mk_service("orders")).expect("CSR");
    let resp = second
        .sign(&mk_request("orders", csr), mk_now())
        .expect("signed");
    let ca_der = der_of(first.ca_pem());
    let leaf_der = der_of(&resp.certificate_chain);
    parse_cert(&leaf_der)
        .verify_signature(Some(parse_cert(&ca_der).public_key()))
        .expect("leaf verifies against the generated CA");

    // No temporary files left behind.
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    assert_eq!(names, [CA_CERT_FILE, CA_KEY_FILE]);
}

#[test]
fn generated_ca_is_a_ten_year_p256_ca_with_pathlen_zero() {
    let tmp = tempdir();
    let ca = Authority::load_or_generate(tmp.path(), TD, DEFAULT_CERT_TTL).expect("generated");
    let der = der_of(ca.ca_pem());
    let cert = parse_cert(&der);
    let cns: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().expect("utf8"))
        .collect();
    assert_eq!(cns, ["Meshplane CA meshplane.local"]);
    assert_eq!(cert.subject(), cert.issuer());
    cert.verify_signature(None).expect("self-signed");
    let bc = cert
        .basic_constraints()
        .expect("BC")
        .expect("BC present")
        .value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().expect("KU").expect("KU present").value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    assert_eq!(curve_oid(&cert).as_deref(), Some(P256));
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime as u64, CA_VALIDITY.as_secs() + 60);
}

#[cfg(unix)]
#[test]
fn key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempdir();
    Authority::load_or_generate(tmp.path(), TD, DEFAULT_CERT_TTL).expect("generated");
    let mode = fs::metadata(tmp.path().join(CA_KEY_FILE))
        .expect("ca.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn one_file_without_the_other_names_the_missing_one() {
    let tmp = tempdir();
    Authority::load_or_generate(tmp.path(), TD, DEFAULT_CERT_TTL).expect("generated");
    let cert = tmp.path().join(CA_CERT_FILE);
    let key = tmp.path().join(CA_KEY_FILE);
    let saved_key = fs::read(&key).expect("key");

    fs::remove_file(&key).expect("rm key");
    let err = Authority::load_or_generate(tmp.path(), TD, DEFAULT_CERT_TTL).expect_err("refused");
    assert!(
        matches!(&err, CaError::MissingFile { missing, .. } if *missing == key),
        "{err:?}"
    );
    assert!(err.to_string().contains("ca.key` is missing"), "{err}");
    assert!(!key.exists(), "nothing generated over a half-present CA");

    fs::write(&key, saved_key).expect("restore key");
    fs::remove_file(&cert).expect("rm cert");
    let err = Authority::load_or_generate(tmp.path(), TD, DEFAULT_CERT_TTL).expect_err("refused");
    assert!(
        matches!(&err, CaError::MissingFile { missing, .. } if *missing == cert),
        "{err:?}"
    );
    assert!(err.to_string().contains("ca.crt` is missing"), "{err}");
}

#[test]
fn invalid_settings_write_nothing() {
    let tmp = tempdir();
    let dir = tmp.path().join("ca");
    let err =
        Authority::load_or_generate(&dir, "Bad/Domain", DEFAULT_CERT_TTL).expect_err("refused");
    assert!(matches!(err, CaError::InvalidTrustDomain(_)), "{err:?}");
    let err = Authority::load_or_generate(&dir, TD, Duration::ZERO).expect_err("refused");
    assert!(matches!(err, CaError::InvalidTtl { .. }), "{err:?}");
    assert!(!dir.exists());
}

#[test]
fn from_pem_accepts_a_ca_and_its_key() {
    let (cert, key) = mk_ca_files(IsCa::Ca(BasicConstraints::Unconstrained));
    let ca = Authority::from_pem(&cert, &key, TD, DEFAULT_CERT_TTL).expect("authority");
    assert_eq!(der_of(ca.ca_pem()), der_of(&cert));

    // `openssl` text dumps and other blocks around the PEM are tolerated in operator files.
    let noisy_cert = format!("Certificate:\n    Data: ...\n{cert}");
    let noisy_key = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{key}"
    );
    Authority::from_pem(&noisy_cert, &noisy_key, TD, DEFAULT_CERT_TTL).expect("noisy files");
}

#[test]
fn from_pem_accepts_an_openssl_ca_with_a_sec1_key() {
    // `openssl ecparam -genkey` writes `EC PARAMETERS` and a SEC1 `EC PRIVATE KEY`.
    let cert = include_str!("fixtures/openssl-ca.crt");
    let key = include_str!("fixtures/openssl-ca.key");
    let ca = Authority::from_pem(cert, key, TD, DEFAULT_CERT_TTL).expect("authority");
    let (_key, csr) = key_and_csr(TD, &mk_service("orders")).expect("CSR");
    let resp = sign_now(&ca, "orders", csr).expect("signed");
    let (ca_der, leaf_der) = (der_of(cert), der_of(&resp.certificate_chain));
    parse_cert(&leaf_der)
        .verify_signature(Some(parse_cert(&ca_der).public_key()))
        .expect("leaf verifies against the operator's CA");
}

#[test]
fn from_pem_refuses_a_key_that_does_not_match() {
    let (cert, _key) = mk_ca_files(IsCa::Ca(BasicConstraints::Unconstrained));
    let other_key = KeyPair::generate().expect("key").serialize_pem();
    let err = Authority::from_pem(&cert, &other_key, TD, DEFAULT_CERT_TTL).expect_err("refused");
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn from_pem_refuses_a_certificate_that_is_not_a_ca() {
    for is_ca in [IsCa::NoCa, IsCa::ExplicitNoCa] {
        let (cert, key) = mk_ca_files(is_ca);
        let err = Authority::from_pem(&cert, &key, TD, DEFAULT_CERT_TTL).expect_err("refused");
        assert!(matches!(err, CaError::NotCa { .. }), "{err:?}");
        assert!(err.to_string().contains("CA:TRUE"), "{err}");
    }
}

#[test]
fn from_pem_refuses_bad_pem() {
    let (cert, key) = mk_ca_files(IsCa::Ca(BasicConstraints::Unconstrained));
    let bad_cert = |text: &str| {
        let err = Authority::from_pem(text, &key, TD, DEFAULT_CERT_TTL).expect_err("refused");
        assert!(matches!(err, CaError::BadCertificate { .. }), "{err:?}");
    };
    bad_cert("");
    bad_cert("not pem");
    bad_cert(&key);
    bad_cert(&format!("{cert}{cert}"));
    bad_cert(&reencode("CERTIFICATE", b"garbage".to_vec()));

    for text in ["", "not pem", &cert] {
        let err = Authority::from_pem(&cert, text, TD, DEFAULT_CERT_TTL).expect_err("refused");
        assert!(matches!(err, CaError::BadKey { .. }), "{err:?}");
    }
    let encrypted = reencode("ENCRYPTED PRIVATE KEY", vec![1, 2, 3]);
    let err = Authority::from_pem(&cert, &encrypted, TD, DEFAULT_CERT_TTL).expect_err("refused");
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[test]
fn from_pem_refuses_invalid_trust_domains_and_ttls() {
    let (cert, key) = mk_ca_files(IsCa::Ca(BasicConstraints::Unconstrained));
    for td in ["", "Upper.case", "a/b", "td:1", "dömain"] {
        let err = Authority::from_pem(&cert, &key, td, DEFAULT_CERT_TTL).expect_err("refused");
        assert!(
            matches!(err, CaError::InvalidTrustDomain(_)),
            "{td:?}: {err:?}"
        );
    }
    for ttl in [Duration::ZERO, CA_VALIDITY + Duration::from_secs(1)] {
        let err = Authority::from_pem(&cert, &key, TD, ttl).expect_err("refused");
        assert!(
            matches!(err, CaError::InvalidTtl { .. }),
            "{ttl:?}: {err:?}"
        );
    }
}

#[test]
fn debug_output_has_no_key() {
    let ca = mk_authority();
    let debug = format!("{ca:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(
        debug.contains("meshplane.local") && debug.contains("Test CA"),
        "{debug}"
    );

    let tmp = tempdir();
    let generated =
        Authority::load_or_generate(tmp.path(), TD, DEFAULT_CERT_TTL).expect("generated");
    let key_pem = fs::read_to_string(tmp.path().join(CA_KEY_FILE)).expect("key");
    let key_body = key_pem.lines().nth(1).expect("base64 line");
    let debug = format!("{generated:?} {generated:#?}");
    assert!(
        !debug.contains("PRIVATE KEY") && !debug.contains(key_body),
        "{debug}"
    );
}

#[test]
fn authority_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Authority>();
}
