//! `GET /api/prometheus/targets`: what Prometheus scrapes in this datacenter, in its HTTP
//! service-discovery format (`http_sd_configs`), so one scrape job finds every sidecar and
//! every control plane with no per-host configuration (`deploy/prometheus/http-sd.yml`).
//!
//! - Every instance of this datacenter registered with a scrape port
//!   (`Meta.metrics_port`, written by the sidecar): `address:metrics_port`, path
//!   `/stats/prometheus` (Envoy's statistics; the port serves nothing else).
//! - Every control plane: this one (at the address the request reached it by) and those
//!   registered as `meshplane-control-plane` with `Meta.admin_url`: their `/metrics`.
//!
//! Each target is its own group, labelled `meshplane_component` (`sidecar` or
//! `control-plane`), `service`, `instance_id`, `datacenter` and, for sidecars, `health`
//! (the registry's; a critical instance is still scraped: its Envoy is what to look at).
//! Other datacenters' instances are not listed: each datacenter's Prometheus scrapes its own.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Json;
use meshplane_model::Instance;
use meshplane_model::registration::{
    ADMIN_URL_META_KEY, CONTROL_PLANE_SERVICE, METRICS_PATH, METRICS_PORT_META_KEY,
};
use serde::Serialize;

use crate::AdminState;

/// One target group of Prometheus's HTTP service discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    /// `host:port` to scrape.
    pub targets: Vec<String>,
    /// Labels of the target (`__scheme__` and `__metrics_path__` tell Prometheus how).
    pub labels: BTreeMap<String, String>,
}

pub(crate) async fn route(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> Json<Vec<TargetGroup>> {
    let own = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("{}://{host}", if s.admin_tls { "https" } else { "http" }));
    let registry = s.store.snapshot();
    let instances = registry.services.values().flat_map(|e| e.instances.iter());
    Json(targets(instances, own.as_deref(), &s.datacenter))
}

/// The targets among `instances` (plus this control plane at `own_url`) for `datacenter`.
pub fn targets<'a>(
    instances: impl Iterator<Item = &'a Instance>,
    own_url: Option<&str>,
    datacenter: &str,
) -> Vec<TargetGroup> {
    let mut sidecars = Vec::new();
    let mut control_planes: BTreeMap<String, TargetGroup> = BTreeMap::new();
    let mut add_control_plane = |url: &str, id: Option<&str>| {
        let Some((scheme, host)) = split_url(url) else {
            return;
        };
        let group = control_planes
            .entry(host.clone())
            .or_insert_with(|| TargetGroup {
                targets: vec![host],
                labels: BTreeMap::from([
                    ("__scheme__".to_owned(), scheme.to_owned()),
                    ("__metrics_path__".to_owned(), "/metrics".to_owned()),
                    ("meshplane_component".to_owned(), "control-plane".to_owned()),
                    ("service".to_owned(), CONTROL_PLANE_SERVICE.to_owned()),
                    ("datacenter".to_owned(), datacenter.to_owned()),
                ]),
            });
        if let Some(id) = id {
            group.labels.insert("instance_id".to_owned(), id.to_owned());
        }
    };
    if let Some(url) = own_url {
        add_control_plane(url, None);
    }
    for i in instances.filter(|i| i.locality.datacenter == datacenter) {
        if i.service.as_ref() == CONTROL_PLANE_SERVICE {
            if let Some(url) = i.meta.get(ADMIN_URL_META_KEY) {
                add_control_plane(url, Some(i.id.as_str()));
            }
            continue;
        }
        let Some(port) = i
            .meta
            .get(METRICS_PORT_META_KEY)
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        let host = if i.address.contains(':') {
            format!("[{}]:{port}", i.address)
        } else {
            format!("{}:{port}", i.address)
        };
        sidecars.push(TargetGroup {
            targets: vec![host],
            labels: BTreeMap::from([
                ("__metrics_path__".to_owned(), METRICS_PATH.to_owned()),
                ("meshplane_component".to_owned(), "sidecar".to_owned()),
                ("service".to_owned(), i.service.to_string()),
                ("instance_id".to_owned(), i.id.as_str().to_owned()),
                ("datacenter".to_owned(), datacenter.to_owned()),
                ("health".to_owned(), i.health.to_string()),
            ]),
        });
    }
    control_planes.into_values().chain(sidecars).collect()
}

/// `("https", "10.0.0.4:18080")` of `https://10.0.0.4:18080/`; `None` for anything that is
/// not an http(s) URL with a host.
fn split_url(url: &str) -> Option<(&'static str, String)> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest)
    } else {
        ("http", url.strip_prefix("http://")?)
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return None;
    }
    let host = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !host.ends_with(']')
    {
        host.to_owned()
    } else {
        format!("{host}:{}", if scheme == "https" { 443 } else { 80 })
    };
    Some((scheme, host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshplane_model::{Health, InstanceId, Locality, ServiceName};

    fn instance(service: &str, id: &str, dc: &str, meta: &[(&str, &str)]) -> Instance {
        Instance {
            id: InstanceId::new(id).expect("id"),
            service: ServiceName::new(service).expect("name"),
            node: "node-1".to_owned(),
            address: "10.0.0.5".to_owned(),
            port: 31001,
            tags: Vec::new(),
            meta: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            weight: 100,
            health: Health::Critical,
            locality: Locality {
                datacenter: dc.to_owned(),
                zone: None,
            },
        }
    }

    #[test]
    fn sidecars_with_a_scrape_port_and_every_control_plane_of_the_datacenter() {
        let instances = [
            instance(
                "payments",
                "payments-1",
                "dc1",
                &[("metrics_port", "31002")],
            ),
            // Registered without a sidecar (or by an older one): nothing to scrape.
            instance("legacy", "legacy-1", "dc1", &[]),
            instance(
                "payments",
                "payments-9",
                "dc2",
                &[("metrics_port", "31002")],
            ),
            instance(
                "orders",
                "orders-1",
                "dc1",
                &[("metrics_port", "not-a-port")],
            ),
            instance(
                "meshplane-control-plane",
                "cp-b",
                "dc1",
                &[("admin_url", "https://10.0.0.2:18080/")],
            ),
            instance(
                "meshplane-control-plane",
                "cp-a",
                "dc1",
                &[("admin_url", "http://10.0.0.1:18080")],
            ),
        ];
        let got = targets(instances.iter(), Some("http://10.0.0.1:18080"), "dc1");
        let json = serde_json::to_value(&got).expect("json");
        assert_eq!(
            json,
            serde_json::json!([
                { "targets": ["10.0.0.1:18080"], "labels": {
                    "__metrics_path__": "/metrics", "__scheme__": "http", "datacenter": "dc1",
                    "instance_id": "cp-a", "meshplane_component": "control-plane",
                    "service": "meshplane-control-plane" } },
                { "targets": ["10.0.0.2:18080"], "labels": {
                    "__metrics_path__": "/metrics", "__scheme__": "https", "datacenter": "dc1",
                    "instance_id": "cp-b", "meshplane_component": "control-plane",
                    "service": "meshplane-control-plane" } },
                { "targets": ["10.0.0.5:31002"], "labels": {
                    "__metrics_path__": "/stats/prometheus", "datacenter": "dc1",
                    "health": "critical", "instance_id": "payments-1",
                    "meshplane_component": "sidecar", "service": "payments" } },
            ])
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://cp:18080/x"),
            Some(("http", "cp:18080".to_owned()))
        );
        assert_eq!(
            split_url("https://cp"),
            Some(("https", "cp:443".to_owned()))
        );
        assert_eq!(
            split_url("http://[fd00::1]:18080"),
            Some(("http", "[fd00::1]:18080".to_owned()))
        );
        assert_eq!(
            split_url("http://[fd00::1]"),
            Some(("http", "[fd00::1]:80".to_owned()))
        );
        assert_eq!(split_url("ftp://cp"), None);
        assert_eq!(split_url("http://user@cp"), None);
        assert_eq!(split_url("http://"), None);
    }
}
