//! Egress rollout flags: for each service and each of its dependencies, whether the app sends
//! its calls through its sidecar's egress proxy or straight to the callee. Teams migrate a
//! fleet into the mesh one dependency and one instance at a time with them; the control plane
//! stores them, and each sidecar serves its own instance's decisions to the app's HTTP-client
//! interceptor.
//!
//! This crate is the pure core: the flags document ([`Flags`]), its validation, and the
//! decision for one instance ([`Flags::decide`], [`Flags::decisions`]). A setting is
//! `proxy: true|false`, with an optional `rollout` percentage that sends only a share of the
//! instances through the proxy: an instance's share is a hash of the service, the dependency
//! and the instance id, so it is stable across restarts and raising the percentage only adds
//! instances.
//!
//! Which setting applies, the most specific first:
//!
//! 1. the dependency's overrides: by instance, then by tag, then by datacenter;
//! 2. the dependency's own setting;
//! 3. the service's default overrides, in the same order;
//! 4. the service's default;
//! 5. the mesh's default (`proxy: false` unless set: a service is migrated on purpose).
//!
//! ```yaml
//! default: { proxy: false }
//! services:
//!   orders:
//!     default: { proxy: true, rollout: 10 }
//!     dependencies:
//!       payments:
//!         proxy: true
//!         overrides:
//!           - { datacenter: dc2, proxy: false }
//!           - { tag: canary, proxy: true }
//!       "https://api.partner.example": { proxy: false }
//! ```

mod decide;
mod flags;

pub use decide::{Decision, Decisions, InstanceInfo, Source};
pub use flags::{Flags, FlagsError, Override, Rule, Selector, ServiceFlags, Setting};
