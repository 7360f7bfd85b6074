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

/// Set by `meshplane bootstrap --grpc --certs-dir` to [`GRPC_CERTIFICATE_PROVIDER`]: the
/// proxyless client's bootstrap defines that certificate provider instance (gRFC A29,
/// `certificate_providers`) with the service's certificate, so its clusters can ask for
/// mTLS. Only meaningful with [`PROXYLESS_KEY`].
pub const CERTIFICATE_PROVIDER_KEY: &str = "certificate_provider";

/// The certificate provider instance a proxyless gRPC client's bootstrap defines (its
/// certificate, key and CA bundle) and its clusters name: one name for every client, so
/// their clusters stay shared.
pub const GRPC_CERTIFICATE_PROVIDER: &str = "meshplane";

/// Every key above: none of them is a descriptor field.
pub const SIDECAR_KEYS: [&str; 5] = [
    ADMIN_KEY,
    ADMIN_RELAY_KEY,
    LISTEN_ADDRESS_KEY,
    PROXYLESS_KEY,
    CERTIFICATE_PROVIDER_KEY,
];
