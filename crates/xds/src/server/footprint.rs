//! What one stream's protocol state keeps on the heap once its proxy is in sync: a wildcard
//! proxy of a 1,000-service mesh (every cluster and every endpoint assignment) over SotW and
//! delta, driven like Envoy drives it (wildcard CDS and LDS, EDS and RDS for the names they
//! carry, every response ACKed). Issue 11 allows 0.2 MiB of control-plane memory per wildcard
//! stream; the transport's own share (HTTP/2 stream, task, channel: ~0.02 MiB, what an
//! ordinary proxy costs in all) comes on top, so the protocol state must stay well below.
//!
//! Heap is counted per thread (`allocation-counter`), so tests running alongside do not
//! disturb the figures. `cargo test -p meshplane-xds --lib footprint -- --nocapture` prints
//! the breakdown.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use super::delta::DeltaState;
use super::sotw::SotwState;
use super::stream::Protocol;
use crate::cache::GroupKey;
use crate::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::Snapshot;
use crate::status::{StatusBoard, StatusEntry, StreamInfo, StreamKind, XdsObserver};
use crate::wire::{DeltaResponse, SotwResponse};

const SERVICES: usize = 1_000;
const INSTANCES: usize = 20;
/// What the protocol state of one in-sync wildcard stream may keep (the target is 0.2 MiB
/// per wildcard stream with the transport; see the module docs).
const BUDGET: i64 = 128 * 1024;

fn service(i: usize) -> String {
    format!("svc-{i:05}")
}

/// 1,000 clusters with 20 endpoints each, one listener and its routes.
fn mk_mesh(changed: Option<usize>) -> Snapshot {
    let ips: Vec<String> = (0..INSTANCES)
        .map(|i| format!("10.0.0.{}", i + 1))
        .collect();
    let mut resources: Vec<Arc<Resource>> = Vec::new();
    for s in 0..SERVICES {
        let name = service(s);
        let port = if changed == Some(s) { 9090 } else { 8080 };
        let endpoints: Vec<(&str, u16, u32)> =
            ips.iter().map(|ip| (ip.as_str(), port, 1)).collect();
        resources.push(mk_eds_cluster(&name));
        resources.push(mk_endpoints(&name, &endpoints));
    }
    let hosts: Vec<(String, String)> = (0..SERVICES).map(|s| (service(s), service(s))).collect();
    let hosts: Vec<(&str, &str)> = hosts
        .iter()
        .map(|(d, c)| (d.as_str(), c.as_str()))
        .collect();
    resources.push(mk_http_listener("egress", 31000, "egress-routes"));
    resources.push(mk_routes("egress-routes", &hosts));
    Snapshot::new(resources).expect("consistent")
}

fn mk_status() -> StatusEntry {
    let board: Arc<dyn XdsObserver> = Arc::new(StatusBoard::new());
    StatusEntry::open(
        &[board],
        &StreamInfo {
            stream_id: 1,
            node_id: "batch-1".into(),
            service: "batch".into(),
            group: GroupKey::new("batch"),
            kind: StreamKind::Sotw,
            remote_addr: None,
            connected_since: SystemTime::now(),
            user_agent: String::new(),
        },
    )
}

fn node() -> Option<Node> {
    Some(Node {
        id: "batch-1".into(),
        cluster: "batch".into(),
        ..Default::default()
    })
}

/// The names a response makes Envoy watch next: EDS for clusters, RDS for listeners.
fn watched(kind: ResourceType, resources: &[Arc<Resource>]) -> Option<(ResourceType, Vec<String>)> {
    let next = match kind {
        ResourceType::Cluster => ResourceType::Endpoint,
        ResourceType::Listener => ResourceType::Route,
        _ => return None,
    };
    let names: BTreeSet<String> = resources
        .iter()
        .flat_map(|r| r.references())
        .filter(|r| r.kind == next)
        .map(|r| r.name.to_string())
        .collect();
    Some((next, names.into_iter().collect()))
}

/// A simulated Envoy: answers every response (an ACK) and watches the names each CDS/LDS
/// response carries (EDS, RDS), until nothing is left to answer.
trait Envoy<P: Protocol> {
    /// The stream's planner, to take its parts out one by one.
    fn planner(state: &mut P) -> &mut super::planner::Planner;

    /// The requests of a new stream: wildcard CDS and LDS, the node on the first.
    fn connect(&mut self) -> VecDeque<P::Request>;
    /// The requests that answer `r`.
    fn answer(&mut self, r: P::Response) -> Vec<P::Request>;

    fn run(
        &mut self,
        state: &mut P,
        snapshot: &Snapshot,
        status: &StatusEntry,
        mut requests: VecDeque<P::Request>,
    ) {
        while let Some(req) = requests.pop_front() {
            let responses = state
                .on_request(req, Some(snapshot), status)
                .expect("accepted");
            for r in responses {
                requests.extend(self.answer(r));
            }
        }
    }
}

#[derive(Default)]
struct SotwEnvoy {
    names: [Vec<String>; 5],
    versions: [String; 5],
}

impl Envoy<SotwState> for SotwEnvoy {
    fn planner(state: &mut SotwState) -> &mut super::planner::Planner {
        state.planner_mut()
    }

    fn connect(&mut self) -> VecDeque<DiscoveryRequest> {
        [ResourceType::Cluster, ResourceType::Listener]
            .into_iter()
            .enumerate()
            .map(|(i, kind)| DiscoveryRequest {
                node: if i == 0 { node() } else { None },
                type_url: kind.type_url().into(),
                ..Default::default()
            })
            .collect()
    }

    fn answer(&mut self, r: SotwResponse) -> Vec<DiscoveryRequest> {
        self.versions[r.kind.index()].clone_from(&r.version);
        let mut out = vec![DiscoveryRequest {
            type_url: r.kind.type_url().into(),
            version_info: r.version.clone(),
            response_nonce: r.nonce.clone(),
            resource_names: self.names[r.kind.index()].clone(),
            ..Default::default()
        }];
        if let Some((kind, watch)) = watched(r.kind, &r.resources)
            && watch != self.names[kind.index()]
        {
            self.names[kind.index()] = watch;
            out.push(DiscoveryRequest {
                type_url: kind.type_url().into(),
                version_info: self.versions[kind.index()].clone(),
                resource_names: self.names[kind.index()].clone(),
                ..Default::default()
            });
        }
        out
    }
}

#[derive(Default)]
struct DeltaEnvoy {
    names: [BTreeSet<String>; 5],
}

impl Envoy<DeltaState> for DeltaEnvoy {
    fn planner(state: &mut DeltaState) -> &mut super::planner::Planner {
        state.planner_mut()
    }

    fn connect(&mut self) -> VecDeque<DeltaDiscoveryRequest> {
        [ResourceType::Cluster, ResourceType::Listener]
            .into_iter()
            .enumerate()
            .map(|(i, kind)| DeltaDiscoveryRequest {
                node: if i == 0 { node() } else { None },
                type_url: kind.type_url().into(),
                ..Default::default()
            })
            .collect()
    }

    fn answer(&mut self, r: DeltaResponse) -> Vec<DeltaDiscoveryRequest> {
        let mut out = vec![DeltaDiscoveryRequest {
            type_url: r.kind.type_url().into(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        }];
        if let Some((kind, watch)) = watched(r.kind, &r.resources) {
            let new: Vec<String> = watch
                .into_iter()
                .filter(|n| self.names[kind.index()].insert(n.clone()))
                .collect();
            if !new.is_empty() {
                out.push(DeltaDiscoveryRequest {
                    type_url: kind.type_url().into(),
                    resource_names_subscribe: new,
                    ..Default::default()
                });
            }
        }
        out
    }
}

/// Heap kept by the code `f` runs (bytes requested, allocations): what it built and left
/// alive, or (negative) what it freed.
fn kept(f: impl FnOnce()) -> (i64, i64) {
    let info = allocation_counter::measure(f);
    (info.bytes_current, info.count_current)
}

fn neg((bytes, count): (i64, i64)) -> (i64, i64) {
    (-bytes, -count)
}

fn report(label: &str, (bytes, count): (i64, i64)) {
    // glibc adds 8 bytes per chunk and rounds to 16 (32 at least): ~12 bytes per allocation.
    println!(
        "{label:<44} {:>8.1} KiB in {count:>5} allocations (~{:.1} KiB with malloc overhead)",
        bytes as f64 / 1024.0,
        (bytes + 12 * count) as f64 / 1024.0
    );
}

/// Syncs a wildcard stream and delivers a one-service change; returns what the stream's state
/// holds (bytes requested, allocations: measured by freeing it part by part) and what the
/// change added to it, and prints the breakdown.
fn wildcard_footprint<P: Protocol, E: Envoy<P>>(
    label: &str,
    new: impl FnOnce() -> P,
    mut envoy: E,
) -> ((i64, i64), (i64, i64)) {
    let before = mk_mesh(None);
    let after = before
        .with_upserts(
            mk_mesh(Some(7))
                .get(ResourceType::Endpoint, &service(7))
                .cloned(),
        )
        .expect("consistent");
    let status = mk_status();
    let mut state = new();
    let sync = allocation_counter::measure(|| {
        let requests = envoy.connect();
        envoy.run(&mut state, &before, &status, requests);
    });
    println!(
        "{label}: the sync allocated {:.1} KiB in {} allocations, at most {:.1} KiB at once",
        sync.bytes_total as f64 / 1024.0,
        sync.count_total,
        sync.bytes_max as f64 / 1024.0
    );
    let change = kept(|| {
        let responses = state.on_snapshot(&after, &status);
        assert!(!responses.is_empty(), "the change is pushed");
        let requests = responses
            .into_iter()
            .flat_map(|r| envoy.answer(r))
            .collect();
        envoy.run(&mut state, &after, &status, requests);
    });
    println!("{label}:");
    report("  kept by one change", change);
    let mut total = (0, 0);
    let mut add = |part: (i64, i64)| {
        total.0 -= part.0;
        total.1 -= part.1;
        neg(part)
    };
    let mut parts = Vec::new();
    for kind in ResourceType::ALL {
        let (names, held) = E::planner(&mut state).take_parts(kind);
        parts.push((
            format!("  {kind} subscription (names)"),
            add(kept(|| drop(names))),
        ));
        parts.push((
            format!("  {kind} held (name → version)"),
            add(kept(|| drop(held))),
        ));
    }
    parts.push(("  the rest".to_owned(), add(kept(|| drop(state)))));
    report("  the stream's protocol state, in all", total);
    for (label, part) in parts.into_iter().filter(|(_, p)| p.1 > 1) {
        report(&label, part);
    }
    (total, change)
}

#[test]
fn a_wildcard_sotw_stream_keeps_little_beyond_the_shared_snapshot() {
    let (held, change) = wildcard_footprint(
        "SotW wildcard stream",
        || SotwState::new(None),
        SotwEnvoy::default(),
    );
    assert!(
        held.0 + 12 * held.1 <= BUDGET,
        "holds {held:?}, budget {BUDGET} bytes"
    );
    assert!(
        change.0 <= 4 * 1024,
        "a change made the stream keep {change:?} more"
    );
}

#[test]
fn a_wildcard_delta_stream_keeps_little_beyond_the_shared_snapshot() {
    let (held, change) = wildcard_footprint(
        "delta wildcard stream",
        || DeltaState::new(None),
        DeltaEnvoy::default(),
    );
    assert!(
        held.0 + 12 * held.1 <= BUDGET,
        "holds {held:?}, budget {BUDGET} bytes"
    );
    assert!(
        change.0 <= 4 * 1024,
        "a change made the stream keep {change:?} more"
    );
}
