//! Meshplane's domain model: the vocabulary every other crate speaks.
//!
//! This crate owns plain data types only — no I/O, no async, no Envoy or Consul types. Registries
//! produce [`Instance`]s grouped by [`ServiceName`]; the translator turns them into Envoy
//! resources. Start with [`Instance`], then [`ServiceName`].
//!
//! A later addition will put the sidecar `Descriptor` (`meshplane.yaml`) here as well; it belongs
//! in its own module next to `instance`.

mod instance;
mod name;

pub use instance::{Health, Instance, InstanceId, Locality};
pub use name::{NameError, ServiceName};

pub mod descriptor;
pub use descriptor::{Descriptor, DescriptorError};
