//! Which group a connecting proxy belongs to.
//!
//! The server asks a [`NodeGrouper`] once per stream, with the node from the first request
//! and what the connection proves about the peer. The runtime supplies a grouper that
//! understands service descriptors; [`MetadataGrouper`] is the protocol-level default.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use xxhash_rust::xxh3::Xxh3;

use crate::cache::GroupKey;

/// What the transport proves about the peer.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The remote socket address.
    pub remote_addr: Option<SocketAddr>,
    /// URI SANs of the verified client certificate (empty without client TLS).
    pub uri_sans: Vec<String>,
}

/// What the connection proves: the remote address and, over TLS with a verified client
/// certificate, that certificate's URI SANs (SPIFFE ids).
pub(crate) fn peer_from_extensions(ext: &http::Extensions) -> PeerInfo {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let uri_sans = tls
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| uri_sans(c.as_ref())))
            .unwrap_or_default();
        return PeerInfo {
            remote_addr: tls.get_ref().remote_addr,
            uri_sans,
        };
    }
    PeerInfo {
        remote_addr: ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr),
        uri_sans: Vec::new(),
    }
}

/// URI SANs of a DER certificate (empty if it cannot be parsed).
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

/// Why a proxy cannot be served. Mapped to a gRPC status on that stream only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The node or its metadata is malformed (`INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidArgument(String),
    /// The proxy asks for configuration its credentials do not allow (`PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
}

impl From<GroupError> for tonic::Status {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            GroupError::PermissionDenied(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// Maps a proxy's node to its group.
pub trait NodeGrouper: Send + Sync + 'static {
    /// The group for this node, or why it cannot be served.
    fn group(&self, node: &Node, peer: &PeerInfo) -> Result<GroupKey, GroupError>;
}

/// Groups proxies by `node.cluster` and a canonical hash of `node.metadata`, after checking
/// that the node is well-formed: a non-empty id and cluster, and metadata within size and
/// nesting limits (hostile metadata must not cost the server memory or stack).
#[derive(Debug, Clone)]
pub struct MetadataGrouper {
    /// Maximum nesting depth of metadata values.
    pub max_depth: usize,
    /// Maximum number of values (all levels) in metadata.
    pub max_values: usize,
}

impl Default for MetadataGrouper {
    fn default() -> Self {
        MetadataGrouper {
            max_depth: 16,
            max_values: 10_000,
        }
    }
}

impl NodeGrouper for MetadataGrouper {
    fn group(&self, node: &Node, _peer: &PeerInfo) -> Result<GroupKey, GroupError> {
        check_node_identity(node)?;
        let mut hasher = Xxh3::new();
        hasher.update(node.cluster.as_bytes());
        if let Some(metadata) = &node.metadata {
            let mut budget = self.max_values;
            hash_struct(metadata, &mut hasher, self.max_depth, &mut budget)?;
        }
        Ok(GroupKey::new(format!(
            "{}-{:016x}",
            node.cluster,
            hasher.digest()
        )))
    }
}

/// Checks the parts of a node every grouper needs: `node.id` and `node.cluster`.
pub fn check_node_identity(node: &Node) -> Result<(), GroupError> {
    if node.id.trim().is_empty() {
        return Err(GroupError::InvalidArgument(
            "node.id is empty: set it to the proxy's instance id (Envoy: --service-node or bootstrap node.id)".into(),
        ));
    }
    if node.cluster.trim().is_empty() {
        return Err(GroupError::InvalidArgument(format!(
            "node.cluster is empty for node `{}`: set it to the service name (Envoy: --service-cluster or bootstrap node.cluster)",
            node.id
        )));
    }
    Ok(())
}

fn hash_struct(
    s: &Struct,
    hasher: &mut Xxh3,
    depth: usize,
    budget: &mut usize,
) -> Result<(), GroupError> {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    hasher.update(b"{");
    for key in keys {
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        hash_value(&s.fields[key], hasher, depth, budget)?;
    }
    hasher.update(b"}");
    Ok(())
}

fn hash_value(
    v: &Value,
    hasher: &mut Xxh3,
    depth: usize,
    budget: &mut usize,
) -> Result<(), GroupError> {
    if depth == 0 {
        return Err(GroupError::InvalidArgument(
            "node.metadata is nested too deeply; a service descriptor needs only a few levels"
                .into(),
        ));
    }
    if *budget == 0 {
        return Err(GroupError::InvalidArgument(
            "node.metadata has too many values; send only the service descriptor".into(),
        ));
    }
    *budget -= 1;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => hasher.update(b"n"),
        Some(Kind::NumberValue(n)) => {
            hasher.update(b"d");
            hasher.update(&n.to_bits().to_le_bytes());
        }
        Some(Kind::StringValue(s)) => {
            hasher.update(b"s");
            hasher.update(&(s.len() as u64).to_le_bytes());
            hasher.update(s.as_bytes());
        }
        Some(Kind::BoolValue(b)) => hasher.update(if *b { b"t" } else { b"f" }),
        Some(Kind::StructValue(s)) => hash_struct(s, hasher, depth - 1, budget)?,
        Some(Kind::ListValue(l)) => {
            hasher.update(b"[");
            for item in &l.values {
                hash_value(item, hasher, depth - 1, budget)?;
            }
            hasher.update(b"]");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    fn mk_node(id: &str, cluster: &str, metadata: Option<Struct>) -> Node {
        Node {
            id: id.into(),
            cluster: cluster.into(),
            metadata,
            ..Default::default()
        }
    }

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn mk_struct(pairs: &[(&str, Value)]) -> Struct {
        Struct {
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn identical_metadata_shares_a_group_whatever_the_key_order() {
        let g = MetadataGrouper::default();
        let peer = PeerInfo::default();
        let m1 = mk_struct(&[("a", string("1")), ("b", string("2"))]);
        let m2 = mk_struct(&[("b", string("2")), ("a", string("1"))]);
        let k1 = g
            .group(&mk_node("i1", "orders", Some(m1)), &peer)
            .expect("ok");
        let k2 = g
            .group(&mk_node("i2", "orders", Some(m2)), &peer)
            .expect("ok");
        assert_eq!(k1, k2);
        let k3 = g
            .group(
                &mk_node("i3", "orders", Some(mk_struct(&[("a", string("9"))]))),
                &peer,
            )
            .expect("ok");
        assert_ne!(k1, k3);
    }

    #[test]
    fn hostile_nodes_get_clear_errors() {
        let g = MetadataGrouper::default();
        let peer = PeerInfo::default();
        let err = g
            .group(&mk_node("", "orders", None), &peer)
            .expect_err("no id");
        assert!(err.to_string().contains("node.id"), "{err}");
        let err = g
            .group(&mk_node("i1", " ", None), &peer)
            .expect_err("no cluster");
        assert!(err.to_string().contains("node.cluster"), "{err}");

        let mut deep = string("x");
        for _ in 0..100 {
            deep = Value {
                kind: Some(Kind::ListValue(ListValue { values: vec![deep] })),
            };
        }
        let err = g
            .group(
                &mk_node("i1", "orders", Some(mk_struct(&[("deep", deep)]))),
                &peer,
            )
            .expect_err("too deep");
        assert!(err.to_string().contains("nested too deeply"), "{err}");

        let wide = Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![string("x"); 20_000],
            })),
        };
        let err = g
            .group(
                &mk_node("i1", "orders", Some(mk_struct(&[("wide", wide)]))),
                &peer,
            )
            .expect_err("too many");
        assert!(err.to_string().contains("too many values"), "{err}");
    }
}
