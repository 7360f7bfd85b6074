//! The mesh: proxies are grouped by their descriptor ([`grouper`]), and each active group's
//! snapshot is kept current from the registry by the [`translator`].

pub mod dry_run;
pub mod grouper;
pub mod metadata;
pub mod translator;

pub use dry_run::DryRunPlanner;
pub use grouper::{DescriptorGrouper, Groups, RelayDirectory};
pub use translator::Translator;

#[cfg(test)]
mod locality_tests;
#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod proxyless_tests;
#[cfg(test)]
mod tests;
