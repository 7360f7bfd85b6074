//! The last certificate the control plane's CA issued, kept on disk so a sidecar that
//! (re)starts while the CA is unavailable can serve it until the CA is back.
//!
//! One file, `identity.pem`: a header naming the mesh the certificate belongs to (trust
//! domain and CA URL), then the certificate chain, the private key and the CA bundle, in
//! that order, as PEM. One file rather than several so a replacement is atomic (written to
//! a temporary file, then renamed over): a crash can never leave a certificate next to the
//! key of another, or under another mesh's header. The file is 0600 and its directory, when
//! created here, 0700: it holds the private key, exactly like the SDS socket that serves it.
//!
//! The cache is bound to its mesh: a work directory reused by the same instance id in
//! another mesh (another trust domain or CA) must never serve that mesh's certificate, so a
//! cache whose header differs (or is missing) is discarded before enrolling.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::material::{Leaf, Material, Origins};

/// The file in the cache directory.
pub(super) const CACHE_FILE: &str = "identity.pem";

/// Tells apart the temporary files of overlapping writes in one process (an identity
/// shutting down while its successor already caches).
static WRITES: AtomicU64 = AtomicU64::new(0);

/// First line of the header.
const HEADER: &str = "# meshplane identity cache: certificate chain, private key, CA bundle";
const TRUST_DOMAIN_KEY: &str = "# trust-domain: ";
const CA_URL_KEY: &str = "# ca-url: ";

/// The mesh a cached certificate belongs to: who issued it, for which trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MeshBinding {
    pub(super) trust_domain: String,
    /// The CA's signing URL.
    pub(super) ca_url: String,
}

/// What [`CertCache::discard_foreign`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sweep {
    /// No cache (or one `load` will explain).
    Nothing,
    /// This mesh's cache, kept; its CA bundle, to notice a CA replaced behind the same URL.
    Ours { ca_bundle: Vec<u8> },
    /// Another mesh's cache, removed, and why it is another mesh's.
    Discarded { reason: String },
}

/// A decoded cache file.
#[derive(Debug)]
pub(super) struct Cached {
    /// `None` for a file without a header (written before caches were bound to a mesh).
    pub(super) binding: Option<MeshBinding>,
    pub(super) material: Material,
}

/// The cached identity of one sidecar, in one mesh.
#[derive(Debug, Clone)]
pub(super) struct CertCache {
    dir: PathBuf,
    path: PathBuf,
    binding: MeshBinding,
    /// Signing URLs of the other instances of this mesh's CA: a cache bound to one of them
    /// is this mesh's too (the `--ca-url` list reordered, or an older list's first entry).
    instances: Vec<String>,
}

// === impl CertCache ===

impl CertCache {
    pub(super) fn new(dir: &Path, binding: MeshBinding) -> Self {
        CertCache {
            dir: dir.to_owned(),
            path: dir.join(CACHE_FILE),
            binding,
            instances: Vec::new(),
        }
    }

    /// The cache, also taking as this mesh's a certificate bound to any of `urls` (the
    /// signing URLs of every instance sharing the CA).
    pub(super) fn with_instances(mut self, urls: &[String]) -> Self {
        self.instances = urls.to_vec();
        self
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the cached identity with `material`. A failure is logged, not returned: the
    /// certificate is served either way, only a restart during a CA outage would miss it.
    pub(super) async fn store(&self, material: &Material) {
        let cache = self.clone();
        let material = material.clone();
        let written = tokio::task::spawn_blocking(move || cache.write(&material))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Err(e) = written {
            tracing::warn!(
                cache = %self.path.display(),
                error = %e,
                "cannot cache the service certificate; it is served, but a restart while the control plane's CA is unavailable will fail"
            );
        }
    }

    fn write(&self, material: &Material) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let tmp = self.dir.join(format!(
            ".{CACHE_FILE}.tmp-{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_new(&tmp, &encode(material, &self.binding)).and_then(|()| {
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself reaches the disk only with its directory.
            File::open(&self.dir)?.sync_all()
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// The cached identity if it can stand in for one from the CA: it parses, the key is
    /// the certificate's, it has not expired at `now` and it names `identity` (so the same
    /// service in the same trust domain). Otherwise why not, for the start error.
    pub(super) async fn load(
        &self,
        identity: &str,
        now: SystemTime,
    ) -> Result<(Material, Leaf), String> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err("none has been cached yet".to_owned());
            }
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let cached = decode(&bytes).ok_or_else(|| {
            "it is not a cached identity (a certificate chain, a private key and a CA bundle, as PEM)"
                .to_owned()
        })?;
        if let Some(foreign) = self.foreign(cached.binding.as_ref()) {
            return Err(foreign);
        }
        let material = cached.material;
        let origins = Origins {
            cert: "the cache file".to_owned(),
            key: "the cache file".to_owned(),
            ca: "the cache file".to_owned(),
        };
        let leaf = material.check(&origins, now).map_err(|e| e.to_string())?;
        let cached = leaf.identity.as_deref().unwrap_or("no URI SAN");
        if cached != identity {
            return Err(match (trust_domain_of(cached), trust_domain_of(identity)) {
                (Some(theirs), Some(ours)) if theirs != ours => format!(
                    "its certificate (serial {}) was issued in trust domain `{theirs}`, not `{ours}`",
                    leaf.serial_hex
                ),
                _ => format!(
                    "its certificate (serial {}) names {cached}, not {identity}",
                    leaf.serial_hex
                ),
            });
        }
        Ok((material, leaf))
    }
}

impl CertCache {
    /// Why a cache bound to `binding` is not this mesh's, or `None` when it is.
    fn foreign(&self, binding: Option<&MeshBinding>) -> Option<String> {
        let ours = &self.binding;
        match binding {
            None => Some(
                "it does not say which mesh it belongs to (cached by an older version)".to_owned(),
            ),
            Some(b) if b.trust_domain != ours.trust_domain => Some(format!(
                "it belongs to another mesh: trust domain `{}`, not `{}`",
                b.trust_domain, ours.trust_domain
            )),
            Some(b) if b.ca_url != ours.ca_url && !self.instances.contains(&b.ca_url) => {
                Some(format!(
                    "it belongs to another mesh: issued by the CA at {}, not {}",
                    b.ca_url, ours.ca_url
                ))
            }
            Some(_) => None,
        }
    }

    /// Removes a cached identity that belongs to another mesh (logging why), so it can never
    /// be served.
    pub(super) async fn discard_foreign(&self) -> Sweep {
        let Ok(bytes) = tokio::fs::read(&self.path).await else {
            return Sweep::Nothing;
        };
        // An unreadable file is left for `load` to explain, should it be needed.
        let Some(cached) = decode(&bytes) else {
            return Sweep::Nothing;
        };
        let Some(reason) = self.foreign(cached.binding.as_ref()) else {
            return Sweep::Ours {
                ca_bundle: cached.material.parts().2.to_vec(),
            };
        };
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => tracing::warn!(
                cache = %self.path.display(),
                reason = %reason,
                "discarded the cached service certificate: it is never served in this mesh; enrolling anew"
            ),
            Err(e) => tracing::warn!(
                cache = %self.path.display(),
                reason = %reason,
                error = %e,
                "cannot remove the cached service certificate of another mesh; it is not served"
            ),
        }
        Sweep::Discarded { reason }
    }
}

/// Creates `path` (which must not exist) with mode 0600 and `content`, on disk.
fn write_new(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The umask may only have narrowed the mode; make it exactly 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(content)?;
    file.sync_all()
}

// === file format ===

/// The header, then chain, key and bundle, each ending with a newline so PEM blocks never
/// share a line.
pub(super) fn encode(material: &Material, binding: &MeshBinding) -> Vec<u8> {
    let (chain, key, ca) = material.parts();
    let mut out = format!(
        "{HEADER}\n{TRUST_DOMAIN_KEY}{}\n{CA_URL_KEY}{}\n",
        one_line(&binding.trust_domain),
        one_line(&binding.ca_url)
    )
    .into_bytes();
    for part in [chain, key, ca] {
        out.extend_from_slice(part);
        if !part.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    out
}

/// A header value on one line (a newline would forge another key).
fn one_line(value: &str) -> String {
    value.replace(['\n', '\r'], " ")
}

/// Reads the header's `#` lines, then splits the rest around its (first) private key
/// block: what precedes it is the chain, what follows the bundle. `None` without a
/// complete private key block; the parts themselves are checked by [`Material::check`].
pub(super) fn decode(bytes: &[u8]) -> Option<Cached> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (mut trust_domain, mut ca_url) = (None, None);
    let mut body = 0;
    for line in text.split_inclusive('\n') {
        if !line.starts_with('#') {
            break;
        }
        let line_value = |key: &str| line.strip_prefix(key).map(|v| v.trim_end().to_owned());
        trust_domain = trust_domain.or_else(|| line_value(TRUST_DOMAIN_KEY));
        ca_url = ca_url.or_else(|| line_value(CA_URL_KEY));
        body += line.len();
    }
    let binding = match (trust_domain, ca_url) {
        (Some(trust_domain), Some(ca_url)) => Some(MeshBinding {
            trust_domain,
            ca_url,
        }),
        _ => None,
    };
    let material = split_material(&bytes[body..])?;
    Some(Cached { binding, material })
}

fn split_material(bytes: &[u8]) -> Option<Material> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut offset = 0;
    let mut key_start = None;
    for line in text.split_inclusive('\n') {
        let label = line.trim_end();
        let is_key = |prefix: &str| {
            label
                .strip_prefix(prefix)
                .and_then(|l| l.strip_suffix("-----"))
                .is_some_and(|l| l.ends_with("PRIVATE KEY"))
        };
        match key_start {
            None if is_key("-----BEGIN ") => key_start = Some(offset),
            Some(start) if is_key("-----END ") => {
                let end = offset + line.len();
                return Some(Material::new(
                    bytes[..start].to_vec(),
                    bytes[start..end].to_vec(),
                    bytes[end..].to_vec(),
                ));
            }
            _ => {}
        }
        offset += line.len();
    }
    None
}

/// `example.org` in `spiffe://example.org/service/orders`.
fn trust_domain_of(uri: &str) -> Option<&str> {
    uri.strip_prefix("spiffe://")?.split('/').next()
}
