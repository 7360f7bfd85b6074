//! Meshplane's xDS server against a real Envoy, for both state-of-the-world (`GRPC`) and
//! delta (`DELTA_GRPC`) ADS. Each scenario is one module; [`both_flavours!`] turns a
//! scenario `async fn(Flavour)` into a `sotw` and a `delta` test.

mod bootstrap;
mod endpoints;
mod make_before_break;
mod nack;
mod removal;
mod restart;

use std::collections::BTreeMap;

use meshplane_e2e::{
    Client, ControlPlane, Envoy, EnvoyConfig, Flavour, Upstream, egress, free_port,
};
use meshplane_xds::{ProxyStatus, ResourceType};

/// The service of the Envoy under test (its `node.cluster`, hence its group).
pub const SERVICE: &str = "web";
/// Its instance id (`node.id`).
pub const NODE: &str = "web-1";

/// Runs a scenario once per ADS flavour.
#[macro_export]
macro_rules! both_flavours {
    ($scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sotw() {
            $scenario(meshplane_e2e::Flavour::Sotw).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn delta() {
            $scenario(meshplane_e2e::Flavour::Delta).await
        }
    };
}

/// A control plane, one upstream `payments-1` and an Envoy for `web` whose egress
/// listener routes `Host: payments` to cluster `payments`, already serving.
pub struct Web {
    pub cp: ControlPlane,
    pub envoy: Envoy,
    pub client: Client,
    pub port: u16,
    pub payments_1: Upstream,
}

impl Web {
    pub async fn start(flavour: Flavour) -> Web {
        let cp = ControlPlane::start()
            .await
            .expect("start the control plane");
        let payments_1 = Upstream::start("payments-1").await.expect("start upstream");
        let port = free_port().expect("free port");
        cp.publish(
            SERVICE,
            egress(
                port,
                &[("payments", "payments")],
                &[("payments", &[payments_1.port()])],
            ),
        )
        .expect("publish the first snapshot");
        let envoy = start_envoy(&cp, flavour).await;
        let client = Client::new(port);
        client
            .wait_served_by("payments", "payments-1")
            .await
            .expect("Envoy proxies Host: payments to payments-1");
        Web {
            cp,
            envoy,
            client,
            port,
            payments_1,
        }
    }

    /// This Envoy's status on the control plane (it must be connected).
    pub fn status(&self) -> ProxyStatus {
        self.cp.proxy(NODE).expect("the Envoy is connected")
    }

    /// Responses sent to this Envoy, per type.
    pub fn responses(&self) -> BTreeMap<ResourceType, u64> {
        responses(&self.status())
    }
}

/// Responses sent on a stream, per type.
pub fn responses(status: &ProxyStatus) -> BTreeMap<ResourceType, u64> {
    ResourceType::ALL
        .into_iter()
        .map(|t| (t, status.type_status(t).responses))
        .collect()
}

pub async fn start_envoy(cp: &ControlPlane, flavour: Flavour) -> Envoy {
    Envoy::start(EnvoyConfig {
        node_id: NODE.into(),
        service: SERVICE.into(),
        xds_addr: cp.addr(),
        flavour,
    })
    .await
    .expect("start Envoy")
}

/// `Ok` when every type the proxy was sent is acknowledged at the version sent, with no
/// rejection pending.
pub fn all_acked(status: &ProxyStatus) -> Result<(), String> {
    for kind in ResourceType::ALL {
        let t = status.type_status(kind);
        if t.sent_version.is_some() && t.acked_version != t.sent_version {
            return Err(format!(
                "{kind}: sent {:?}, acked {:?}",
                t.sent_version, t.acked_version
            ));
        }
        if let Some(nack) = &t.last_nack {
            return Err(format!("{kind}: NACK {nack:?}"));
        }
    }
    Ok(())
}
