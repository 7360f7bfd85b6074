//! Several datacenters: what a control plane exports of its own datacenter, and how it follows
//! the others.
//!
//! Each control plane serves its *local* instances (those its registry places in its own
//! datacenter, never ones learned from elsewhere, so nothing loops) on
//! `GET /api/datacenters/local-state` ([`export`]), versioned by content, answering
//! "not modified" cheaply, holding a request until the state changes, and sending a follower
//! only the services changed since the version it holds. A control plane
//! follows every other datacenter with a [`RemoteSource`] per datacenter, which feeds that
//! datacenter's instances into the store like any other registry source; the translator then
//! serves them to proxies as failover priorities.
//!
//! With Consul, [`discover`] finds the other datacenters and their control planes instead of
//! `--remote-datacenters`.
//!
//! [`status`] keeps what this control plane knows of each followed datacenter (fresh, stale,
//! dropped; since when), served with the export by [`router`] on `GET /api/datacenters`.
//!
//! Start at [`wire`] (the format and its checks), then [`export`] and [`source`].

pub mod discover;
pub mod export;
pub mod source;
pub mod status;
pub mod wire;

pub use export::{LocalState, router};
pub use source::{ControlPlanes, RemoteConfig, RemoteError, RemoteSource};
pub use status::{DatacenterView, FollowState, Followed};
