//! The test grouper: every proxy joins the group named after its service (`node.cluster`),
//! so a test publishes a snapshot to the group of the service its proxy claims to be. The
//! real control plane groups by the whole descriptor (`runtime`'s `DescriptorGrouper`);
//! xDS-level tests need no descriptor.

use envoy_types::pb::envoy::config::core::v3::Node;
use meshplane_xds::server::node::check_node_identity;
use meshplane_xds::{GroupError, GroupKey, MetadataGrouper, NodeGrouper, PeerInfo};

/// Groups proxies by service after the standard node identity checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceGrouper {
    metadata_limits: bool,
}

impl ServiceGrouper {
    /// Also refuses node metadata the default [`MetadataGrouper`] refuses (too large, too
    /// deep), for tests of those limits.
    pub fn with_metadata_limits() -> ServiceGrouper {
        ServiceGrouper {
            metadata_limits: true,
        }
    }
}

impl NodeGrouper for ServiceGrouper {
    fn group(&self, node: &Node, peer: &PeerInfo) -> Result<GroupKey, GroupError> {
        check_node_identity(node)?;
        if self.metadata_limits {
            MetadataGrouper::default().group(node, peer)?;
        }
        Ok(GroupKey::new(node.cluster.clone()))
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    use super::*;

    fn mk_node(id: &str, service: &str, metadata: Option<Struct>) -> Node {
        Node {
            id: id.into(),
            cluster: service.into(),
            metadata,
            ..Default::default()
        }
    }

    /// Metadata nested deeper than the default grouper allows.
    fn too_deep() -> Struct {
        let mut value = Value {
            kind: Some(Kind::StringValue("leaf".into())),
        };
        for _ in 0..20 {
            let inner = Struct {
                fields: [("k".to_owned(), value)].into(),
            };
            value = Value {
                kind: Some(Kind::StructValue(inner)),
            };
        }
        Struct {
            fields: [("deep".to_owned(), value)].into(),
        }
    }

    #[test]
    fn proxies_of_one_service_share_its_group_whatever_their_metadata() {
        let g = ServiceGrouper::default();
        let peer = PeerInfo::default();
        let a = g.group(&mk_node("orders-1", "orders", None), &peer);
        let b = g.group(&mk_node("orders-2", "orders", Some(too_deep())), &peer);
        assert_eq!(a, Ok(GroupKey::new("orders")));
        assert_eq!(b, Ok(GroupKey::new("orders")));
    }

    #[test]
    fn node_identity_is_checked_and_metadata_limits_on_request() {
        let peer = PeerInfo::default();
        let plain = ServiceGrouper::default();
        assert!(matches!(
            plain.group(&mk_node("", "orders", None), &peer),
            Err(GroupError::InvalidArgument(_))
        ));
        let limited = ServiceGrouper::with_metadata_limits();
        assert_eq!(
            limited.group(&mk_node("orders-1", "orders", None), &peer),
            Ok(GroupKey::new("orders"))
        );
        assert!(matches!(
            limited.group(&mk_node("orders-1", "orders", Some(too_deep())), &peer),
            Err(GroupError::InvalidArgument(_))
        ));
    }
}
