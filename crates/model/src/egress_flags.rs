//! The sidecar's egress flags endpoint: the app asks its egress port for its egress rollout
//! decisions (`GET /.meshplane/egress`), and Envoy routes that path to the `meshplane
//! sidecar` process. Named here because two crates build the two halves: the translator's
//! egress route and the sidecar's bootstrap cluster.

/// The path the app asks on its egress port.
pub const PATH: &str = "/.meshplane/egress";

/// The bootstrap cluster that reaches the sidecar process's flags server; a proxy started
/// without `meshplane sidecar` has no such cluster, and the path answers Envoy's 503.
pub const CLUSTER: &str = "meshplane:egress-flags";
