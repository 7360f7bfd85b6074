//! The service's certificate as files, for a proxyless gRPC client (`meshplane bootstrap
//! --grpc --certs-dir DIR`): gRPC's `file_watcher` certificate provider (gRFC A29) reads
//! them itself, re-reading them every `refresh_interval`.
//!
//! Layout: `DIR/current` is a symlink to a directory `DIR/.certs-<serial>-…` holding
//! `cert.pem` (chain, leaf first), `key.pem` (0600) and `ca.pem`. A renewal writes a new
//! directory, then renames a new symlink over `current`, so a reader going through
//! `current` sees the old set or the new one, never a certificate next to another's key
//! (three files replaced one by one would leave such a moment, and gRPC would present a
//! pair that fails every handshake until its next refresh). Older directories are removed
//! after the swap; a reader that had opened their files keeps reading them. `DIR` is 0700:
//! the app reading the key must run as the same user.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::IdentityError;
use super::material::{Leaf, Material};
use super::{CertInfo, Sink};

/// The symlink the bootstrap's paths go through.
const CURRENT: &str = "current";
/// Prefix of the directories holding one certificate each.
const GENERATION_PREFIX: &str = ".certs-";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
const CA_FILE: &str = "ca.pem";

/// Where the files are, as a gRPC bootstrap names them (through `DIR/current`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// The CA bundle peers are verified against.
    pub ca: PathBuf,
}

/// Writes checked material into one directory.
#[derive(Debug)]
pub(super) struct CertFiles {
    dir: PathBuf,
    /// Generation of the set written last (1 for the first).
    generation: AtomicU64,
}

// === impl CertPaths ===

impl CertPaths {
    /// The paths under `dir`.
    pub fn under(dir: &Path) -> Self {
        let current = dir.join(CURRENT);
        CertPaths {
            cert: current.join(CERT_FILE),
            key: current.join(KEY_FILE),
            ca: current.join(CA_FILE),
        }
    }
}

// === impl CertFiles ===

impl CertFiles {
    pub(super) fn new(dir: PathBuf) -> Self {
        CertFiles {
            dir,
            generation: AtomicU64::new(0),
        }
    }

    /// Writes `material` as the current set, then removes the older sets. Blocking file
    /// operations, a few KiB once per renewal.
    pub(super) fn write(&self, material: &Material, leaf: &Leaf) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        private_dir(&self.dir)?;
        // A new directory every time, even for the certificate `current` names already (a
        // restart writing the cached one, maybe with the same pid in a container): a set
        // being read is never rewritten in place.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{GENERATION_PREFIX}{}-{}-{}-{nanos}",
            leaf.serial_hex,
            std::process::id(),
            self.generation.load(Ordering::Relaxed) + 1
        );
        let generation = self.dir.join(&name);
        DirBuilder::new().mode(0o700).create(&generation)?;
        let (chain, key, ca) = material.parts();
        write_file(&generation.join(CERT_FILE), chain, 0o644)?;
        write_file(&generation.join(KEY_FILE), key, 0o600)?;
        write_file(&generation.join(CA_FILE), ca, 0o644)?;
        std::fs::File::open(&generation)?.sync_all()?;
        // A relative target, so the directory can be moved or mounted elsewhere.
        let link = self
            .dir
            .join(format!(".{CURRENT}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&name, &link)?;
        std::fs::rename(&link, self.dir.join(CURRENT))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let old = file_name.to_string_lossy();
            if old.starts_with(GENERATION_PREFIX)
                && old != name.as_str()
                && let Err(e) = std::fs::remove_dir_all(entry.path())
            {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove an old certificate directory");
            }
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn fail(&self, error: io::Error) -> IdentityError {
        IdentityError::Files {
            dir: self.dir.clone(),
            error,
        }
    }
}

/// `dir` must be a directory of this user's that no one else can read or write (the key and
/// the trusted CA bundle are in it): one created here is; one that was already there and is
/// this user's is made so; anything else is refused.
fn private_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a symlink is refused)",
            dir.display()
        )));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to another user", dir.display()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl Sink for CertFiles {
    fn publish(&self, material: &Material, leaf: &Leaf) -> Result<u64, IdentityError> {
        self.write(material, leaf).map_err(|e| self.fail(e))?;
        Ok(self.generation.load(Ordering::Relaxed))
    }
}

/// Creates `path` with `mode` and `content`, on disk.
fn write_file(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may only have narrowed the mode; make it exact.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(content)?;
    file.sync_all()
}

/// What a [`CertInfo`] says of `leaf`, as `generation`.
pub(super) fn info(leaf: &Leaf, generation: u64) -> CertInfo {
    CertInfo {
        identity: leaf.identity.clone(),
        not_after: leaf.not_after,
        serial_hex: leaf.serial_hex.clone(),
        generation,
    }
}
