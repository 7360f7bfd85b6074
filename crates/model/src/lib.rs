//! Meshplane's domain model: the vocabulary every other crate speaks.
//!
//! This crate owns plain data types only — no I/O, no async, no Envoy or Consul types. Registries
//! produce [`Instance`]s grouped by [`ServiceName`]; the translator turns them into Envoy
//! resources. Start with [`Instance`], then [`ServiceName`].
//!
//! The sidecar's `Descriptor` (`meshplane.yaml`) lives in [`descriptor`]; the identity
//! vocabulary (SPIFFE ids, secret names, the CA's wire shapes) in [`identity`]; the keys the
//! sidecar adds to Envoy's node metadata in [`node_metadata`]; what the mesh writes into
//! registry entries in [`registration`].

mod instance;
mod name;

pub use instance::{Health, Instance, InstanceId, Locality};
pub use name::{NameError, ServiceName};

pub mod descriptor;
pub use descriptor::{AccessLog, Descriptor, DescriptorError, Protocol, Stats, StatsPattern};

pub mod egress_flags;
pub mod identity;
pub mod node_metadata;
pub mod registration;
pub mod traffic;
