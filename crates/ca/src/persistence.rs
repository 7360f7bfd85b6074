//! The built-in CA on disk: `ca.crt` and `ca.key` in one directory, generated on first start.
//! This is the crate's only I/O.

use std::{
    fs,
    io::{self, Write},
    path::Path,
    time::{Duration, SystemTime},
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

use crate::{
    Authority, CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY, CLOCK_SKEW, CaError, armor,
    authority::{check_trust_domain, check_ttl},
    certificate,
};

// === impl Authority ===

impl Authority {
    /// Loads the CA from `dir/ca.crt` and `dir/ca.key`, or, when both are absent, generates a
    /// self-signed ECDSA P-256 CA valid for [`CA_VALIDITY`] and writes it there (creating
    /// `dir`; the key with mode 0600; each file through a temporary file and a rename, so a
    /// crash never leaves a half-written file). One file without the other is an error
    /// naming the missing one.
    ///
    /// Assumes one control plane per directory: two processes generating at once could each
    /// write one of the files.
    pub fn load_or_generate(
        dir: &Path,
        trust_domain: &str,
        cert_ttl: Duration,
    ) -> Result<Self, CaError> {
        // Checked before anything is written.
        check_trust_domain(trust_domain)?;
        check_ttl(cert_ttl)?;

        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => {
                let cert_pem = read(&cert_path)?;
                let key_pem = read(&key_path)?;
                Self::from_pem(&cert_pem, &key_pem, trust_domain, cert_ttl)
            }
            (false, false) => {
                let (cert_pem, key_pem) = generate(trust_domain, SystemTime::now())?;
                fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
                // Key first: a crash in between leaves `ca.key` alone, which is reported,
                // rather than a certificate whose key is lost.
                write_atomic(&key_path, &key_pem, 0o600)?;
                write_atomic(&cert_path, &cert_pem, 0o644)?;
                Self::from_pem(&cert_pem, &key_pem, trust_domain, cert_ttl)
            }
            (true, false) => Err(CaError::MissingFile {
                missing: key_path,
                present: cert_path,
            }),
            (false, true) => Err(CaError::MissingFile {
                missing: cert_path,
                present: key_path,
            }),
        }
    }
}

/// A new self-signed CA for `trust_domain`: (certificate PEM, key PEM).
fn generate(trust_domain: &str, now: SystemTime) -> Result<(String, String), CaError> {
    let failed = |reason: String| CaError::Generate {
        what: "the CA certificate",
        reason,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| failed(format!("key generation failed: {e}")))?;
    let (not_before, not_after) =
        certificate::validity(now, CLOCK_SKEW, CA_VALIDITY).map_err(failed)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = certificate::subject(&format!("Meshplane CA {trust_domain}"));
    // Pathlen 0: this CA signs workloads only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(certificate::random_serial().map_err(failed)?);
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .self_signed(&key)
        .map_err(|e| failed(format!("signing failed: {e}")))?;
    Ok((
        armor::encode("CERTIFICATE", cert.der()),
        key.serialize_pem(),
    ))
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(io_error("check", path))
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(io_error("read", path))
}

/// Writes `contents` to `path` through a temporary file in the same directory created with
/// `mode`, then renames it into place.
fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover from a crash is ours to replace; `create_new` below then refuses to follow
    // a planted symlink.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove stale", &tmp)(e));
        }
        _ => {}
    }
    let written = (|| {
        let mut file = open_new(&tmp, mode)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", &tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_error("rename into", path))?;
    // Make the rename itself durable; not every platform can sync a directory.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CaError {
    let path = path.to_path_buf();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}
