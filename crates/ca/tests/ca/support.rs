//! Builders shared by the CA tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshplane_ca::{Authority, DEFAULT_CERT_TTL, SignError};
use meshplane_model::{
    ServiceName,
    identity::{SignRequest, SignResponse, spiffe_id},
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

pub const TD: &str = "meshplane.local";

/// A fixed "now" with whole seconds, so validity bounds can be compared exactly.
pub fn mk_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

pub fn mk_service(name: &str) -> ServiceName {
    ServiceName::new(name).expect("valid service name")
}

/// A self-signed CA made with rcgen directly: (certificate PEM, key PEM).
pub fn mk_ca_files(is_ca: IsCa) -> (String, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Test CA");
    params.is_ca = is_ca;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), key.serialize_pem())
}

pub fn mk_authority() -> Authority {
    let (cert, key) = mk_ca_files(IsCa::Ca(BasicConstraints::Constrained(0)));
    Authority::from_pem(&cert, &key, TD, DEFAULT_CERT_TTL).expect("authority")
}

/// CSR params whose only SAN is the SPIFFE id of `service` in `td`.
pub fn mk_params(td: &str, service: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, service);
    params.subject_alt_names = vec![mk_uri(&spiffe_id(td, &mk_service(service)))];
    params
}

pub fn mk_uri(uri: &str) -> SanType {
    SanType::URI(uri.try_into().expect("IA5 URI"))
}

pub fn mk_csr(params: &CertificateParams, key: &KeyPair) -> String {
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .expect("CSR")
}

/// Signs `csr` for `service` at [`mk_now`].
pub fn sign_now(
    authority: &Authority,
    service: &str,
    csr: String,
) -> Result<SignResponse, SignError> {
    authority.sign(&mk_request(service, csr), mk_now())
}

pub fn mk_request(service: &str, csr: String) -> SignRequest {
    SignRequest {
        service: service.to_string(),
        csr,
    }
}

/// The DER of the single PEM block in `pem_text`.
pub fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("PEM").into_contents()
}

pub fn reencode(label: &str, der: Vec<u8>) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

pub fn parse_cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("certificate");
    assert!(rest.is_empty());
    cert
}

/// The raw SubjectPublicKeyInfo of a PEM CSR.
pub fn csr_spki(csr_pem: &str) -> Vec<u8> {
    let der = der_of(csr_pem);
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).expect("CSR");
    csr.certification_request_info.subject_pki.raw.to_vec()
}

/// OID of the P-256 curve.
pub const P256: &str = "1.2.840.10045.3.1.7";

/// The named curve of a certificate's EC public key, as a dotted OID.
pub fn curve_oid(cert: &X509Certificate<'_>) -> Option<String> {
    cert.public_key()
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|c| c.to_id_string())
}
