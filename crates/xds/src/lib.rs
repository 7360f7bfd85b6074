//! Meshplane's xDS layer: a snapshot cache keyed by group and an ADS server speaking
//! state-of-the-world and delta xDS to Envoy.
//!
//! It owns nothing about registries or service descriptors: callers publish [`Snapshot`]s
//! into the [`SnapshotCache`] and supply a [`NodeGrouper`] that maps a connecting proxy to
//! its group. Start reading at [`resource`] (encoded-once resources with content versions),
//! then [`snapshot`] and [`cache`], then [`server`] (`stream.rs` drives a stream; `sotw.rs`
//! and `delta.rs` hold each flavour's protocol rules). [`status`] defines what streams report
//! ([`XdsObserver`]) and records what every proxy was sent, acknowledged and rejected
//! ([`StatusBoard`], always registered); callers add their own observers (metrics) with
//! [`XdsServer::with_observer`].

pub mod cache;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod resource;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod wire;

pub use cache::{GroupKey, SnapshotCache, SnapshotRx};
pub use resource::{Resource, ResourceType};
pub use server::node::{GroupError, MetadataGrouper, NodeGrouper, PeerInfo};
pub use server::{ServerConfig, XdsServer, XdsTls};
pub use snapshot::{Fallback, Snapshot, SnapshotError};
pub use status::{
    Nack, ProxyStatus, StatusBoard, StreamInfo, StreamKind, StreamObserver, TypeStatus, XdsObserver,
};
