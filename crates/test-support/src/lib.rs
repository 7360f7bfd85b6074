//! Test-only helpers shared by every crate's tests, so each exists once: waiting for a
//! condition with a deadline ([`poll::eventually`]) and holding one for a whole fault window
//! ([`poll::hold`], [`poll::fault_window`]); the fault toolkit — a TCP proxy that passes,
//! delays, drops, black-holes, resets or throttles connections ([`fault::FaultProxy`]), an
//! HTTP front that delays answers, refuses with 429 or answers garbage
//! ([`http_front::HttpFront`]) and pausing a process with SIGSTOP ([`process::pause`]); finding the Envoy the tests run
//! ([`envoy::envoy_binary`]); the test grouper ([`grouper::ServiceGrouper`], feature `xds`);
//! a private CA and a server certificate for HTTPS tests ([`pki::TestPki`]); and the
//! fenced-block extractor that checks documentation examples ([`docs`]).
//!
//! Start at `poll.rs`. This crate is a dev-dependency only (and a dependency of the
//! `tests/e2e` harness); nothing that ships in the `meshplane` binary depends on it, which is
//! why its helpers may panic: a panic is how a test fails.

pub mod docs;
pub mod envoy;
pub mod fault;
#[cfg(feature = "xds")]
pub mod grouper;
pub mod http_front;
pub mod pki;
pub mod poll;
pub mod process;

pub use poll::{eventually, eventually_blocking, fault_window, hold, hold_during};
