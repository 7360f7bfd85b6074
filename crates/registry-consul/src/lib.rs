//! Registry source that follows a Consul cluster (or anything speaking Consul's HTTP API, such
//! as Meshplane's embedded registry) with blocking queries.
//!
//! This crate owns the Consul protocol rules: `/v1/catalog/services` and
//! `/v1/health/service/<name>` watches, or `/v1/health/state/any` as the change signal once
//! services outnumber the connection slots, index sanity rules, backoff, the connection budget,
//! staleness reporting, and the conversion of Consul's JSON (whose shapes
//! `meshplane-consul-api` owns) into domain [`Instance`]s.
//!
//! Start reading at [`ConsulSource`] (the coordinator) and [`ConsulConfig`]; then `watch` (one
//! blocking-query loop), `signals` (which services a checks answer says changed), `index` (Consul's index rules and backoff) and `wire` (responses into
//! instances).
//!
//! [`Instance`]: meshplane_model::Instance

mod client;
mod config;
mod index;
pub mod signals;
mod source;
mod watch;
pub mod wire;

pub use client::{ConsulClient, ConsulError, ErrorObserver};
pub use config::{ConfigError, ConnectionPlan, ConsulConfig};
pub use index::{Backoff, next_index};
pub use source::ConsulSource;
