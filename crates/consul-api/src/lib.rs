//! Consul's HTTP API as JSON, for exactly the endpoints Meshplane speaks, written once: the
//! Consul source reads them (`registry-consul`), the embedded registry answers them and
//! decodes registrations (`registry-embedded`), and the sidecar registers with them
//! (`sidecar`).
//!
//! The types keep Consul's field names (PascalCase, `ID`-style acronyms) and its semantics:
//! what a request may leave out is an `Option` (or an empty list or map) and is left out when
//! written, so a request says only what its sender set; what a response may carry as `null`
//! (tags, meta, checks and weights on some Consul versions) reads as empty, or as Consul's
//! default for weights (1/1). Unknown fields are ignored, as Consul's clients do. Each type
//! names the endpoint it belongs to.
//!
//! Start reading at [`agent::ServiceRegistration`] (`PUT /v1/agent/service/register`), then
//! [`health::ServiceEntry`] (`GET /v1/health/service/:name`), [`health::CheckState`]
//! (`GET /v1/health/state/:state`) and [`catalog`]. [`duration`] is
//! the Go duration text Consul uses for TTLs, intervals and the `wait` parameter.
//!
//! The crate depends on serde only and knows nothing of Meshplane's domain model: converting
//! to and from `Instance`s and registrations is each user's job, next to the rules it applies.

pub mod agent;
pub mod catalog;
pub mod duration;
pub mod health;
mod null;

pub use agent::{AgentService, CheckDefinition, ServiceRegistration, Weights};
pub use catalog::{CatalogService, CatalogServices};
pub use health::{CheckState, HealthCheck, Node, ServiceEntry};
