//! JSON shapes of the admin API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use meshplane_model::{Health, Instance};
use meshplane_registry::Snapshot as RegistrySnapshot;
use meshplane_xds::{
    ProxyStatus, ResourceType, SnapshotCache, StatusBoard, StreamKind, TypeStatus,
};
use serde::Serialize;

/// One line of `/api/services`.
#[derive(Debug, Serialize)]
pub struct ServiceSummary {
    /// Service name.
    pub name: String,
    /// Instances in the registry.
    pub instances: usize,
    /// Instances whose checks pass.
    pub passing: usize,
    /// Union of the instances' tags.
    pub tags: Vec<String>,
}

/// An instance as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// Instance id.
    pub id: String,
    /// Registering node.
    pub node: String,
    /// Address.
    pub address: String,
    /// Port (the sidecar's ingress port for meshed services).
    pub port: u16,
    /// Tags.
    pub tags: Vec<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Load-balancing weight.
    pub weight: u32,
    /// passing | warning | critical.
    pub health: Health,
    /// Datacenter.
    pub datacenter: String,
}

/// `/api/services/:name`.
#[derive(Debug, Serialize)]
pub struct ServiceDetail {
    /// Service name.
    pub name: String,
    /// Registry index of its last change.
    pub modify_index: u64,
    /// Its instances.
    pub instances: Vec<InstanceView>,
    /// Connected proxies of this service.
    pub proxies: Vec<ProxyView>,
    /// The service's Grafana dashboard, when the control plane knows Grafana
    /// (`--grafana-url`).
    pub dashboard: Option<String>,
    /// An instance's Grafana dashboard, less the instance id (query-escaped) at the end.
    pub instance_dashboard: Option<String>,
}

/// `text` escaped for a URL's query string: everything but unreserved characters as `%XX`.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sync state of one resource type on one proxy (like `istioctl proxy-status`).
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Sync {
    /// Nothing sent for this type.
    NotSent,
    /// The last version sent was acknowledged.
    Synced,
    /// Sent, not acknowledged yet.
    Stale,
    /// The proxy rejected the last version sent.
    Nacked,
}

/// Per-type status of a proxy.
#[derive(Debug, Serialize)]
pub struct TypeView {
    /// Sync state.
    pub sync: Sync,
    /// Last version sent.
    pub sent_version: Option<String>,
    /// Last nonce sent.
    pub sent_nonce: Option<String>,
    /// Last version acknowledged.
    pub acked_version: Option<String>,
    /// Last rejection: Envoy's message.
    pub last_nack: Option<NackView>,
    /// Responses sent on this stream.
    pub responses: u64,
    /// NACKs received on this stream.
    pub nacks: u64,
}

/// A NACK.
#[derive(Debug, Serialize)]
pub struct NackView {
    /// Rejected version.
    pub version: String,
    /// Envoy's error message.
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

/// One connected proxy.
#[derive(Debug, Serialize)]
pub struct ProxyView {
    /// `node.id` (the instance id).
    pub node_id: String,
    /// Service.
    pub service: String,
    /// Group key.
    pub group: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// Remote address of the xDS connection.
    pub remote_addr: Option<String>,
    /// The control-plane instance (xDS address) it is connected to.
    pub connected_to: String,
    /// Unix seconds.
    pub connected_since: u64,
    /// The xDS client as it names itself: `envoy 1.36.2` for a sidecar's Envoy, e.g.
    /// `gRPC Python 1.85.1` for a proxyless gRPC client (whose group is
    /// `<service>-grpc-<hash>`).
    pub client: String,
    /// SYNCED when every type is synced, NACKED if any is, otherwise STALE.
    pub sync: Sync,
    /// Per type: CDS, EDS, LDS, RDS, SDS.
    pub types: BTreeMap<&'static str, TypeView>,
}

/// `/api/state`: the registry before translation.
#[derive(Debug, Serialize)]
pub struct RegistryState {
    /// Registry index.
    pub index: u64,
    /// Every source has completed a full sync.
    pub synced: bool,
    /// Some source serves possibly outdated data.
    pub stale: bool,
    /// Source statuses.
    pub sources: BTreeMap<String, String>,
    /// Services and instances.
    pub services: BTreeMap<String, Vec<InstanceView>>,
}

/// `/api/groups`.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// Group key.
    pub key: String,
    /// Streams subscribed.
    pub proxies: usize,
    /// Content digest of the snapshot (equal digests ⇔ equal content).
    pub digest: Option<String>,
    /// Resources per type.
    pub resources: BTreeMap<&'static str, usize>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn instance(i: &Instance) -> InstanceView {
    InstanceView {
        id: i.id.to_string(),
        node: i.node.clone(),
        address: i.address.clone(),
        port: i.port,
        tags: i.tags.clone(),
        meta: i.meta.clone(),
        weight: i.weight,
        health: i.health,
        datacenter: i.locality.datacenter.clone(),
    }
}

/// `/api/services`.
pub fn services(snapshot: &RegistrySnapshot) -> Vec<ServiceSummary> {
    snapshot
        .services
        .values()
        .map(|entry| {
            let mut tags: Vec<String> = entry
                .instances
                .iter()
                .flat_map(|i| i.tags.iter().cloned())
                .collect();
            tags.sort();
            tags.dedup();
            ServiceSummary {
                name: entry.name.to_string(),
                instances: entry.instances.len(),
                passing: entry
                    .instances
                    .iter()
                    .filter(|i| i.health == Health::Passing)
                    .count(),
                tags,
            }
        })
        .collect()
}

/// `/api/services/:name`, or `None` for an unknown service.
pub fn service(
    snapshot: &RegistrySnapshot,
    status: &StatusBoard,
    name: &str,
    xds: SocketAddr,
) -> Option<ServiceDetail> {
    let entry = snapshot.service(name)?;
    let proxies = status
        .proxies()
        .iter()
        .filter(|p| p.stream.service == name)
        .map(|p| proxy(p, xds))
        .collect();
    Some(ServiceDetail {
        name: entry.name.to_string(),
        modify_index: entry.modify_index,
        instances: entry.instances.iter().map(instance).collect(),
        proxies,
        dashboard: None,
        instance_dashboard: None,
    })
}

fn type_view(t: &TypeStatus) -> TypeView {
    let sync = match (&t.sent_version, &t.acked_version, &t.last_nack) {
        (None, None, _) => Sync::NotSent,
        (_, _, Some(nack))
            if t.acked_version.as_deref() != Some(nack.version.as_str())
                && t.sent_version.as_deref() == Some(nack.version.as_str()) =>
        {
            Sync::Nacked
        }
        (Some(sent), Some(acked), _) if sent == acked => Sync::Synced,
        (None, Some(_), _) => Sync::Synced,
        _ => Sync::Stale,
    };
    TypeView {
        sync,
        sent_version: t.sent_version.clone(),
        sent_nonce: t.sent_nonce.clone(),
        acked_version: t.acked_version.clone(),
        last_nack: t.last_nack.as_ref().map(|n| NackView {
            version: n.version.clone(),
            message: n.message.clone(),
            at: unix(n.at),
        }),
        responses: t.responses,
        nacks: t.nacks,
    }
}

/// One proxy's view.
pub fn proxy(p: &ProxyStatus, xds: SocketAddr) -> ProxyView {
    let types: BTreeMap<&'static str, TypeView> = ResourceType::ALL
        .iter()
        .map(|k| (k.short_name(), type_view(p.type_status(*k))))
        .collect();
    let sync = if types.values().any(|t| t.sync == Sync::Nacked) {
        Sync::Nacked
    } else if types
        .values()
        .all(|t| matches!(t.sync, Sync::Synced | Sync::NotSent))
    {
        Sync::Synced
    } else {
        Sync::Stale
    };
    ProxyView {
        node_id: p.stream.node_id.clone(),
        service: p.stream.service.clone(),
        group: p.stream.group.to_string(),
        protocol: match p.stream.kind {
            StreamKind::Sotw => "sotw",
            StreamKind::Delta => "delta",
        },
        remote_addr: p.stream.remote_addr.map(|a| a.to_string()),
        connected_to: xds.to_string(),
        connected_since: unix(p.stream.connected_since),
        client: p.stream.user_agent.clone(),
        sync,
        types,
    }
}

/// `/api/state`.
pub fn registry_state(snapshot: &RegistrySnapshot) -> RegistryState {
    RegistryState {
        index: snapshot.index,
        synced: snapshot.is_synced(),
        stale: snapshot.is_stale(),
        sources: snapshot
            .sources
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), format!("{v:?}")))
            .collect(),
        services: snapshot
            .services
            .values()
            .map(|e| {
                (
                    e.name.to_string(),
                    e.instances.iter().map(instance).collect(),
                )
            })
            .collect(),
    }
}

/// `/api/groups`.
pub fn groups(cache: &SnapshotCache) -> Vec<GroupView> {
    cache
        .groups()
        .into_iter()
        .map(|(key, proxies)| {
            let snapshot = cache.snapshot(&key);
            GroupView {
                key: key.to_string(),
                proxies,
                digest: snapshot.as_ref().map(|s| s.digest().to_owned()),
                resources: ResourceType::ALL
                    .iter()
                    .map(|k| {
                        (
                            k.short_name(),
                            snapshot
                                .as_ref()
                                .map(|s| s.resources(*k).len())
                                .unwrap_or(0),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}
