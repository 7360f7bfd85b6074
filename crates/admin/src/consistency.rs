//! Do all control-plane instances compute the same thing? Each serves digests of its
//! registry (per service) and its snapshots (per group); `/api/consistency` compares this
//! instance's with every peer's and lists the differences.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::Json;
use serde::{Deserialize, Serialize};

use crate::AdminState;

/// `/api/state/digest`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Digests {
    /// Service → digest of its instances.
    pub services: BTreeMap<String, String>,
    /// Group → digest of its snapshot.
    pub groups: BTreeMap<String, String>,
}

/// One peer's comparison.
#[derive(Debug, Serialize)]
pub struct PeerReport {
    /// The peer's admin URL.
    pub address: String,
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
    let services = registry
        .services
        .values()
        .map(|e| {
            let text = serde_json::to_string(&*e.instances).unwrap_or_default();
            (
                e.name.to_string(),
                format!("{:016x}", xxhash(text.as_bytes())),
            )
        })
        .collect();
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
    Digests { services, groups }
}

fn xxhash(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable digest for comparison across instances and versions.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
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

/// Service under which control-plane instances may be registered; each instance's
/// `meta.admin_url` is its admin API (e.g. `http://10.0.0.4:18080`).
pub const CONTROL_PLANE_SERVICE: &str = "meshplane-control-plane";

/// Peers from configuration plus control-plane instances found in the registry in this
/// datacenter (another datacenter's control planes serve other proxies from another local
/// state), without this instance and without duplicates.
pub fn peers(s: &AdminState, own_admin: Option<&str>) -> Vec<String> {
    let registry = s.store.snapshot();
    let registered = registry
        .service(CONTROL_PLANE_SERVICE)
        .map(|e| {
            e.instances
                .iter()
                .filter(|i| i.locality.datacenter == s.datacenter)
                .filter_map(|i| i.meta.get("admin_url").cloned())
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
                let differences = compare(&mine, &theirs);
                PeerReport {
                    address: peer.clone(),
                    consistent: differences.is_empty(),
                    differences,
                    error: None,
                }
            }
            Err(e) => PeerReport {
                address: peer.clone(),
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
}
