//! Do all control-plane instances compute the same thing? Each serves digests of its
//! registry (per service, and per datacenter and service) and its snapshots (per group);
//! `/api/consistency` compares this instance's with every peer's and lists the differences.
//! Peers in this datacenter must agree on everything; control planes of other datacenters
//! serve other proxies from another local state, so with them only the state both hold is
//! compared: the instances of each datacenter both have (theirs as they export it, and as this
//! one follows it).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::Json;
use serde::{Deserialize, Serialize};

use crate::AdminState;

/// `/api/state/digest`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Digests {
    /// The answering control plane's datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Service → digest of its instances.
    pub services: BTreeMap<String, String>,
    /// Group → digest of its snapshot.
    pub groups: BTreeMap<String, String>,
    /// Datacenter → its instances' digests per service.
    #[serde(default)]
    pub datacenters: BTreeMap<String, DatacenterDigests>,
}

/// One datacenter's instances, per service.
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct DatacenterDigests {
    /// Service → digest of its instances in that datacenter.
    pub services: BTreeMap<String, String>,
}

/// One peer's comparison.
#[derive(Debug, Serialize)]
pub struct PeerReport {
    /// The peer's admin URL.
    pub address: String,
    /// The peer's datacenter (`null` when it did not answer).
    pub datacenter: Option<String>,
    /// No differences and the peer answered.
    pub consistent: bool,
    /// What differs.
    pub differences: Vec<String>,
    /// Why the peer could not be compared.
    pub error: Option<String>,
}

/// `/api/consistency`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Every peer agrees.
    pub consistent: bool,
    /// This instance's digest of everything.
    #[serde(rename = "self")]
    pub this: SelfView,
    /// Per peer.
    pub peers: Vec<PeerReport>,
}

/// This instance.
#[derive(Debug, Serialize)]
pub struct SelfView {
    /// Its xDS address.
    pub address: String,
    /// Digest over all services and groups.
    pub digest: String,
}

/// This instance's digests.
pub fn digests(s: &AdminState) -> Digests {
    let registry = s.store.snapshot();
    let digest = |instances: &[&meshplane_model::Instance]| {
        let text = serde_json::to_string(instances).unwrap_or_default();
        format!("{:016x}", xxhash(text.as_bytes()))
    };
    let mut services = BTreeMap::new();
    let mut datacenters: BTreeMap<String, DatacenterDigests> = BTreeMap::new();
    for e in registry.services.values() {
        let all: Vec<&meshplane_model::Instance> = e.instances.iter().collect();
        services.insert(e.name.to_string(), digest(&all));
        let mut by_dc: BTreeMap<&str, Vec<&meshplane_model::Instance>> = BTreeMap::new();
        for i in e.instances.iter() {
            by_dc.entry(&i.locality.datacenter).or_default().push(i);
        }
        for (dc, instances) in by_dc {
            datacenters
                .entry(dc.to_owned())
                .or_default()
                .services
                .insert(e.name.to_string(), digest(&instances));
        }
    }
    let groups = s
        .cache
        .groups()
        .into_iter()
        .filter_map(|(k, _)| {
            s.cache
                .snapshot(&k)
                .map(|snap| (k.to_string(), snap.digest().to_owned()))
        })
        .collect();
    Digests {
        datacenter: s.datacenter.clone(),
        services,
        groups,
        datacenters,
    }
}

fn xxhash(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable digest for comparison across instances and versions.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Differences with a control plane of another datacenter, on the datacenters both hold
/// instances of.
pub fn compare_shared(mine: &Digests, theirs: &Digests) -> Vec<String> {
    let mut out = Vec::new();
    for (dc, ours) in &mine.datacenters {
        let Some(other) = theirs.datacenters.get(dc) else {
            continue;
        };
        for (name, d) in &ours.services {
            match other.services.get(name) {
                None => out.push(format!(
                    "datacenter `{dc}`, service `{name}`: missing on the peer"
                )),
                Some(t) if t != d => out.push(format!(
                    "datacenter `{dc}`, service `{name}`: instances differ"
                )),
                _ => {}
            }
        }
        for name in other
            .services
            .keys()
            .filter(|n| !ours.services.contains_key(*n))
        {
            out.push(format!(
                "datacenter `{dc}`, service `{name}`: only on the peer"
            ));
        }
    }
    out
}

/// Differences between two instances' digests. Groups present on only one side are not
/// differences: which groups exist depends on which proxies are connected where.
pub fn compare(mine: &Digests, theirs: &Digests) -> Vec<String> {
    let mut out = Vec::new();
    for (name, d) in &mine.services {
        match theirs.services.get(name) {
            None => out.push(format!("service `{name}`: missing on the peer")),
            Some(t) if t != d => out.push(format!("service `{name}`: instances differ")),
            _ => {}
        }
    }
    for name in theirs
        .services
        .keys()
        .filter(|n| !mine.services.contains_key(*n))
    {
        out.push(format!("service `{name}`: only on the peer"));
    }
    for (key, d) in &mine.groups {
        if let Some(t) = theirs.groups.get(key)
            && t != d
        {
            out.push(format!("group `{key}`: translated configuration differs"));
        }
    }
    out
}

pub(crate) async fn digest_route(State(s): State<AdminState>) -> Json<Digests> {
    Json(digests(&s))
}

pub use meshplane_model::registration::CONTROL_PLANE_SERVICE;

/// Peers from configuration plus control-plane instances found in the registry, without this
/// instance and without duplicates. Those of other datacenters (learned through
/// `--remote-datacenters`) are compared on the state both hold only (see the module docs).
pub fn peers(s: &AdminState, own_admin: Option<&str>) -> Vec<String> {
    let registry = s.store.snapshot();
    let registered = registry
        .service(CONTROL_PLANE_SERVICE)
        .map(|e| {
            e.instances
                .iter()
                .filter_map(|i| {
                    i.meta
                        .get(meshplane_model::registration::ADMIN_URL_META_KEY)
                        .cloned()
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for url in s.peers.iter().cloned().chain(registered) {
        let url = url.trim_end_matches('/').to_owned();
        if Some(url.as_str()) != own_admin && !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

pub(crate) async fn report(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
) -> Json<Report> {
    let mine = digests(&s);
    let own = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"));
    let mut peers = Vec::new();
    for peer in self::peers(&s, own.as_deref()).iter() {
        let url = format!("{}/api/state/digest", peer.trim_end_matches('/'));
        let fetched = async {
            s.http
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .error_for_status()?
                .json::<Digests>()
                .await
        }
        .await;
        peers.push(match fetched {
            Ok(theirs) => {
                // A peer that does not say its datacenter predates them: it is one of ours.
                let same = theirs.datacenter.is_empty() || theirs.datacenter == mine.datacenter;
                let differences = if same {
                    compare(&mine, &theirs)
                } else {
                    compare_shared(&mine, &theirs)
                };
                PeerReport {
                    address: peer.clone(),
                    datacenter: Some(theirs.datacenter),
                    consistent: differences.is_empty(),
                    differences,
                    error: None,
                }
            }
            Err(e) => PeerReport {
                address: peer.clone(),
                datacenter: None,
                consistent: false,
                differences: Vec::new(),
                error: Some(e.to_string()),
            },
        });
    }
    let all = serde_json::to_string(&mine).unwrap_or_default();
    Json(Report {
        consistent: peers.iter().all(|p| p.consistent),
        this: SelfView {
            address: s.xds_addr.to_string(),
            digest: format!("{:016x}", xxhash(all.as_bytes())),
        },
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let mut a = Digests::default();
        a.services.insert("payments".into(), "1".into());
        a.services.insert("orders".into(), "2".into());
        a.groups.insert("g1".into(), "x".into());
        a.groups.insert("only-here".into(), "y".into());
        let mut b = Digests::default();
        b.services.insert("payments".into(), "9".into());
        b.services.insert("billing".into(), "3".into());
        b.groups.insert("g1".into(), "z".into());
        let d = compare(&a, &b);
        assert_eq!(
            d,
            vec![
                "service `orders`: missing on the peer",
                "service `payments`: instances differ",
                "service `billing`: only on the peer",
                "group `g1`: translated configuration differs",
            ]
        );
        assert!(compare(&a, &a).is_empty());
    }

    #[test]
    fn another_datacenter_is_compared_on_the_datacenters_both_hold() {
        let dc = |pairs: &[(&str, &str)]| DatacenterDigests {
            services: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let mut dc1 = Digests {
            datacenter: "dc1".into(),
            ..Digests::default()
        };
        dc1.datacenters.insert("dc1".into(), dc(&[("orders", "1")]));
        dc1.datacenters
            .insert("dc2".into(), dc(&[("payments", "2"), ("ledger", "3")]));
        let mut dc2 = Digests {
            datacenter: "dc2".into(),
            ..Digests::default()
        };
        // dc2 does not follow dc1: only dc2's instances are shared; its own groups and
        // registry differ from dc1's and are not compared.
        dc2.datacenters
            .insert("dc2".into(), dc(&[("payments", "2"), ("billing", "4")]));
        dc2.services.insert("payments".into(), "9".into());
        dc2.groups.insert("g".into(), "x".into());
        assert_eq!(
            compare_shared(&dc1, &dc2),
            vec![
                "datacenter `dc2`, service `ledger`: missing on the peer",
                "datacenter `dc2`, service `billing`: only on the peer",
            ]
        );
        dc2.datacenters
            .insert("dc2".into(), dc(&[("payments", "2"), ("ledger", "3")]));
        assert!(compare_shared(&dc1, &dc2).is_empty());
    }
}
