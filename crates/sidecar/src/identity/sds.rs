//! The SDS server on this sidecar's private Unix socket, and the one place secrets are
//! published.
//!
//! The socket is created with mode 0600: only this user (Envoy runs as the sidecar's user)
//! can fetch the private key. Every node shares one group, since only this sidecar's Envoy
//! can connect.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use meshplane_xds::{
    GroupError, GroupKey, NodeGrouper, PeerInfo, Resource, ServerConfig, Snapshot, SnapshotCache,
    XdsServer,
};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use super::CertInfo;
use super::error::IdentityError;
use super::material::{Leaf, Material};

/// The one group every node on the socket belongs to.
const GROUP: &str = "local";

/// Puts every node in [`GROUP`]: the socket is private to this sidecar's Envoy, and the
/// secrets do not depend on what the node says about itself.
struct OneGroup;

impl NodeGrouper for OneGroup {
    fn group(&self, _node: &Node, _peer: &PeerInfo) -> Result<GroupKey, GroupError> {
        Ok(GroupKey::new(GROUP))
    }
}

/// Publishes checked material as the served secrets and as [`CertInfo`].
#[derive(Debug, Clone)]
pub(super) struct Publisher {
    cache: SnapshotCache,
    info_tx: Arc<watch::Sender<CertInfo>>,
}

// === impl Publisher ===

impl Publisher {
    /// A publisher serving `material` (generation 1).
    pub(super) fn new(material: &Material, leaf: &Leaf) -> Result<Self, IdentityError> {
        let cache = SnapshotCache::new();
        cache.set_snapshot(&GroupKey::new(GROUP), snapshot(material)?)?;
        let (info_tx, _) = watch::channel(cert_info(leaf, 1));
        Ok(Publisher {
            cache,
            info_tx: Arc::new(info_tx),
        })
    }

    /// Serves `material` from now on; returns the new generation.
    pub(super) fn publish(&self, material: &Material, leaf: &Leaf) -> Result<u64, IdentityError> {
        self.cache
            .set_snapshot(&GroupKey::new(GROUP), snapshot(material)?)?;
        let generation = self.info_tx.borrow().generation + 1;
        self.info_tx.send_replace(cert_info(leaf, generation));
        Ok(generation)
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<CertInfo> {
        self.info_tx.subscribe()
    }

    /// Expiry of the certificate served now.
    pub(super) fn not_after(&self) -> SystemTime {
        self.info_tx.borrow().not_after
    }
}

impl super::Sink for Publisher {
    fn publish(&self, material: &Material, leaf: &Leaf) -> Result<u64, IdentityError> {
        Publisher::publish(self, material, leaf)
    }
}

fn snapshot(material: &Material) -> Result<Snapshot, IdentityError> {
    Ok(Snapshot::new([
        Resource::secret(&material.identity_secret()),
        Resource::secret(&material.trust_secret()),
    ])?)
}

fn cert_info(leaf: &Leaf, generation: u64) -> CertInfo {
    CertInfo {
        identity: leaf.identity.clone(),
        not_after: leaf.not_after,
        serial_hex: leaf.serial_hex.clone(),
        generation,
    }
}

// === socket ===

/// Binds the socket with mode 0600, replacing a stale socket file (one no server answers
/// on). Refuses to replace anything that is not a socket, or a socket still in use.
///
/// The socket is bound inside a fresh 0700 directory, restricted, then renamed into place:
/// nobody can connect while it still has the umask's permissions.
pub(super) fn bind(path: &Path) -> Result<BoundSocket, IdentityError> {
    let fail = |error: io::Error| IdentityError::Socket {
        path: path.to_owned(),
        error,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(file_name) = path.file_name() else {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket path has no file name",
        )));
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(fail)?;
    check_replaceable(path).map_err(fail)?;

    let staging = parent.join(format!(
        ".{}.bind-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(fail)?;
    let bound = bind_staged(&staging.join("sds.sock"), path);
    let _ = std::fs::remove_dir_all(&staging);
    let listener = bound.map_err(fail)?;
    let inode = std::fs::symlink_metadata(path).map_err(fail)?.ino();
    Ok(BoundSocket {
        listener,
        path: path.to_owned(),
        inode,
    })
}

/// Whether `path` may be replaced: absent, or a socket nobody serves on.
fn check_replaceable(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; remove it or choose another path",
        )),
        Ok(_) if std::os::unix::net::UnixStream::connect(path).is_ok() => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process serves on this socket (a second sidecar with the same socket path?)",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn bind_staged(staged: &Path, path: &Path) -> io::Result<UnixListener> {
    let listener = UnixListener::bind(staged)?;
    std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(staged, path)?;
    Ok(listener)
}

/// A bound socket and what identifies its file, so only this socket's file is removed.
#[derive(Debug)]
pub(super) struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
    inode: u64,
}

/// Serves SDS (and the other discovery services, which have nothing) on `listener` until
/// `shutdown`, then removes the socket file.
pub(super) fn spawn_server(
    socket: BoundSocket,
    publisher: &Publisher,
    shutdown: CancellationToken,
) {
    let server = XdsServer::new(
        publisher.cache.clone(),
        Arc::new(OneGroup),
        ServerConfig::default(),
        shutdown.clone(),
    );
    tokio::spawn(async move {
        let BoundSocket {
            listener,
            path,
            inode,
        } = socket;
        let mut builder = tonic::transport::Server::builder();
        let served = server
            .router(&mut builder)
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            tracing::error!(
                socket = %path.display(),
                error = %e,
                "SDS server failed; Envoy keeps the certificate it has"
            );
        }
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == inode);
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    });
}
