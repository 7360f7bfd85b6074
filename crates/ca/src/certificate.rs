//! Building and reading certificates: the fields every certificate the CA writes shares
//! (serial, validity), and reading an issued certificate back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{DistinguishedName, DnType, SerialNumber};
use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

use crate::{CaError, armor};

/// X.520 upper bound on a common name (RFC 5280 `ub-common-name`).
const MAX_COMMON_NAME_LEN: usize = 64;

/// The SPIFFE id (the single URI SAN) and expiry of the first certificate in `cert_pem`, such
/// as a [`meshplane_model::identity::SignResponse::certificate_chain`]. Does not check the
/// signature or the dates.
pub fn certificate_identity(cert_pem: &str) -> Result<(String, SystemTime), CaError> {
    let bad = |reason: String| CaError::BadCertificate {
        what: "certificate",
        reason,
    };
    let ders = armor::blocks_labelled(cert_pem, "CERTIFICATE").map_err(bad)?;
    let der = ders
        .first()
        .ok_or_else(|| bad("no `-----BEGIN CERTIFICATE-----` block found".to_string()))?;
    let cert = parse(der, "certificate")?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("unreadable subjectAltName: {e}")))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|san| &san.value.general_names)
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let [uri] = uris.as_slice() else {
        return Err(CaError::NoSingleIdentity { found: uris.len() });
    };
    let not_after = from_unix(cert.validity().not_after.timestamp());
    Ok(((*uri).to_string(), not_after))
}

/// Parses one DER certificate, refusing trailing bytes.
pub(crate) fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, CaError> {
    let bad = |reason: String| CaError::BadCertificate { what, reason };
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| bad(format!("invalid DER: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!(
            "{} unexpected bytes after the DER certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// A subject whose only attribute is `CN=<name>`, or an empty subject when `name` is longer
/// than a common name may be (the SAN then carries the identity alone, and rcgen marks it
/// critical as RFC 5280 requires).
pub(crate) fn subject(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if name.len() <= MAX_COMMON_NAME_LEN {
        dn.push(DnType::CommonName, name);
    }
    dn
}

/// A random, positive, 16-byte serial number.
pub(crate) fn random_serial() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a serial number: {e}"))?;
    // Clear the sign bit (serials are positive) and set the next one, so the DER INTEGER is
    // always exactly 16 bytes and never zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The validity window `[now - skew, now + lifetime]`, in whole seconds, both between 1970
/// and 9999.
pub(crate) fn validity(
    now: SystemTime,
    skew: Duration,
    lifetime: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), String> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_string())?;
    let secs = |d: Duration| i64::try_from(d.as_secs()).ok();
    let (not_before, not_after) = secs(now)
        .zip(secs(skew))
        .zip(secs(lifetime))
        .and_then(|((now, skew), lifetime)| {
            Some((now.checked_sub(skew)?, now.checked_add(lifetime)?))
        })
        .ok_or_else(|| "validity window out of range".to_string())?;
    // Before 1970 cannot be reported in a `SignResponse`; after 9999 cannot be encoded.
    let at = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .filter(|dt| t >= 0 && dt.year() <= 9999)
            .ok_or_else(|| format!("unix time {t} cannot be written in a certificate"))
    };
    Ok((at(not_before)?, at(not_after)?))
}

/// `t` seconds since the Unix epoch as a [`SystemTime`].
pub(crate) fn from_unix(t: i64) -> SystemTime {
    let offset = Duration::from_secs(t.unsigned_abs());
    if t >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_sixteen_bytes_and_differ() {
        let a = random_serial().expect("serial").to_bytes();
        let b = random_serial().expect("serial").to_bytes();
        assert_eq!(a.len(), 16);
        assert_eq!(a[0] & 0xc0, 0x40);
        assert_ne!(a, b);
    }

    #[test]
    fn validity_is_whole_seconds_around_now() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        let (nb, na) =
            validity(now, Duration::from_secs(60), Duration::from_secs(3600)).expect("validity");
        assert_eq!(nb.unix_timestamp(), 1_700_000_000 - 60);
        assert_eq!(na.unix_timestamp(), 1_700_000_000 + 3600);
        assert!(
            validity(
                UNIX_EPOCH - Duration::from_secs(1),
                Duration::ZERO,
                Duration::ZERO
            )
            .is_err()
        );
        assert!(
            validity(
                now,
                Duration::ZERO,
                Duration::from_secs(10_000 * 366 * 86_400)
            )
            .is_err()
        );
    }

    #[test]
    fn long_names_get_no_common_name() {
        assert_eq!(subject(&"a".repeat(64)).iter().count(), 1);
        assert_eq!(subject(&"a".repeat(65)).iter().count(), 0);
    }
}
