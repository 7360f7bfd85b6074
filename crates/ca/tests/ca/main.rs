//! Behaviour of the CA through its public API, in one test binary: `sign` is what a good CSR
//! gets, `refusals` every way one is refused, `authority` building and persisting the CA,
//! `properties` the proptests.

mod authority;
mod properties;
mod refusals;
mod sign;
mod support;
