//! Keys the sidecar adds to Envoy's node metadata beside the descriptor's own fields, and the
//! control plane reads back (and strips before parsing the descriptor). Defined once here so
//! the two sides cannot drift apart.

/// The proxy's Envoy admin address (`{address, port}`, always loopback).
pub const ADMIN_KEY: &str = "admin";

/// The sidecar's admin relay (`{address, port}`), through which the control plane reaches the
/// proxy's admin API. Absent when the relay is off.
pub const ADMIN_RELAY_KEY: &str = "admin_relay";

/// The address Envoy's listeners bind (the registered address). Absent means all interfaces.
pub const LISTEN_ADDRESS_KEY: &str = "address";

/// Set by `meshplane bootstrap --grpc` to [`PROXYLESS_GRPC`]: the node is a proxyless gRPC
/// client (gRPC's own xDS client, no Envoy), which gets gRPC's subset of xDS.
pub const PROXYLESS_KEY: &str = "proxyless";

/// The value of [`PROXYLESS_KEY`] for gRPC's xDS clients.
pub const PROXYLESS_GRPC: &str = "grpc";

/// Every key above: none of them is a descriptor field.
pub const SIDECAR_KEYS: [&str; 4] = [
    ADMIN_KEY,
    ADMIN_RELAY_KEY,
    LISTEN_ADDRESS_KEY,
    PROXYLESS_KEY,
];
