//! Traffic reports (`meshplane_model::traffic`): every interval, what the app called through
//! its Envoy (the egress virtual clusters' `upstream_rq_total`, read from Envoy's admin) and
//! what it reported sending straight to the callee (posted by its interceptor to
//! `POST /.meshplane/egress/report` on the egress port, kept in [`DirectCalls`]), as the
//! increase since the previous report, posted to every control plane. A control plane that
//! does not answer misses that report; nothing is retried or queued, so a long outage costs
//! no memory. Nothing called, nothing sent.
//!
//! Envoy's counters and restarts ([`Counters`]): an Envoy started after a crash counts from
//! zero, so all it counted is new; one started by a hot restart takes over its parent's
//! counts a little after it starts (Envoy merges the parent's statistics into its own), so
//! until its counters pass what was reported nothing is new, and nothing is counted twice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshplane_model::ServiceName;
use meshplane_model::traffic::{AppReport, Calls, MAX_SERVICES, REPORTS_PATH, Report};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::SidecarStatus;

/// The app's direct calls reported since the last traffic report. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct DirectCalls(Arc<Mutex<BTreeMap<ServiceName, u64>>>);

impl DirectCalls {
    /// Adds an app's report. Names that are not service names, and services past
    /// `MAX_SERVICES` between two traffic reports, are not counted: they are returned.
    pub fn add(&self, report: AppReport) -> Vec<String> {
        let mut calls = self.0.lock().expect("direct calls");
        let mut ignored = Vec::new();
        for (name, n) in report.direct {
            let Ok(service) = ServiceName::new(name.clone()) else {
                ignored.push(name);
                continue;
            };
            if !calls.contains_key(&service) && calls.len() >= MAX_SERVICES {
                ignored.push(name);
                continue;
            }
            let count = calls.entry(service).or_default();
            *count = count.saturating_add(n);
        }
        ignored
    }

    fn take(&self) -> BTreeMap<ServiceName, u64> {
        std::mem::take(&mut *self.0.lock().expect("direct calls"))
    }
}

/// Where and what [`run`] reports.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    /// The control planes' admin URLs: each gets every report.
    pub admin_urls: Vec<String>,
    /// Sent as `Authorization: Bearer` (the CA's token).
    pub token: Option<String>,
    /// The client (with the control plane's CA bundle, if any).
    pub http: reqwest::Client,
    /// Envoy's admin address.
    pub envoy_admin: SocketAddr,
    /// The reporting instance.
    pub service: ServiceName,
    pub instance: String,
    pub datacenter: String,
    /// How often.
    pub interval: Duration,
    /// What the app reports.
    pub direct: DirectCalls,
    /// The sidecar's state: which Envoy is current (its restarts).
    pub status: watch::Receiver<SidecarStatus>,
}

/// Which Envoy counts: its pid and hot-restart epoch, and the sidecar's crash restarts so
/// far (a fresh Envoy after a crash counts from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Envoy {
    pid: u32,
    epoch: u32,
    crash_restarts: u32,
}

impl Envoy {
    fn current(status: &watch::Receiver<SidecarStatus>) -> Option<Envoy> {
        let s = status.borrow();
        s.current.map(|p| Envoy {
            pid: p.pid,
            epoch: p.epoch,
            crash_restarts: s.crash_restarts,
        })
    }
}

/// What has been reported of Envoy's egress counters, across Envoy restarts.
#[derive(Debug, Default)]
struct Counters {
    /// The Envoy whose counters were last read.
    envoy: Option<Envoy>,
    /// The values last read from that Envoy.
    last: BTreeMap<ServiceName, u64>,
    /// The highest value reported per counter.
    reported: BTreeMap<ServiceName, u64>,
}

impl Counters {
    /// The calls counted since the last read, given what `envoy` counts `now`.
    fn read(
        &mut self,
        envoy: Envoy,
        now: BTreeMap<ServiceName, u64>,
    ) -> BTreeMap<ServiceName, u64> {
        match self.envoy {
            Some(was) if was.crash_restarts != envoy.crash_restarts => {
                // A fresh Envoy since (after a crash): it counts from zero.
                self.reported.clear();
                self.last.clear();
            }
            // A hot restart: the new Envoy takes over its parent's counters a little after
            // it starts; until they pass what was reported, nothing is new.
            Some(was) if was.pid != envoy.pid => self.last.clear(),
            _ => {}
        }
        self.envoy = Some(envoy);
        let mut increase = BTreeMap::new();
        for (service, n) in now {
            let reported = self.reported.entry(service.clone()).or_default();
            // Lower than this Envoy's own last reading: the counter was dropped and made
            // again (its dependency removed, then back), counting from zero.
            if self.last.get(&service).is_some_and(|last| n < *last) {
                *reported = 0;
            }
            self.last.insert(service.clone(), n);
            if n > *reported {
                increase.insert(service, n - *reported);
                *reported = n;
            }
        }
        // A counter missing from a read is kept: a hot-restarted Envoy lists it only once
        // used or merged.
        increase
    }
}

/// Reports every `spec.interval` until `shutdown`.
pub async fn run(spec: ReportSpec, shutdown: CancellationToken) {
    let mut counters = Counters::default();
    let mut failing = vec![false; spec.admin_urls.len()];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(spec.interval) => {}
        }
        let envoy = Envoy::current(&spec.status);
        let read = match envoy {
            Some(envoy) => envoy_counts(&spec.http, spec.envoy_admin, &spec.service)
                .await
                .map(|now| (envoy, now)),
            None => Err("no Envoy running".to_owned()),
        };
        let proxied = match read {
            // Still the same Envoy after the read: its counts are its own.
            Ok((envoy, now)) if Envoy::current(&spec.status) == Some(envoy) => {
                counters.read(envoy, now)
            }
            Ok(_) => BTreeMap::new(),
            Err(e) => {
                // Envoy restarting: its calls are counted at the next report.
                tracing::debug!(error = %e, "cannot read Envoy's egress counters");
                BTreeMap::new()
            }
        };
        let report = Report {
            service: spec.service.clone(),
            instance: spec.instance.clone(),
            datacenter: spec.datacenter.clone(),
            calls: merge(proxied, spec.direct.take()),
        };
        if report.calls.is_empty() {
            continue;
        }
        for (at, base) in spec.admin_urls.iter().enumerate() {
            let outcome = post(&spec, base, &report).await;
            match (&outcome, failing[at]) {
                (Err(e), false) => {
                    tracing::warn!(control_plane = %base, error = %e, "cannot send the traffic report; later ones are sent as usual");
                }
                (Ok(()), true) => {
                    tracing::info!(control_plane = %base, "traffic reports accepted again");
                }
                _ => {}
            }
            failing[at] = outcome.is_err();
        }
    }
}

async fn post(spec: &ReportSpec, base: &str, report: &Report) -> Result<(), String> {
    let mut request = spec
        .http
        .post(format!("{base}{REPORTS_PATH}"))
        .json(report)
        .timeout(Duration::from_secs(5));
    if let Some(token) = &spec.token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(format!("{status}: {}", body.trim()))
}

/// The egress virtual clusters' request counters, by called service: Envoy names them
/// `vhost.outbound|<callee>.vcluster.<caller>.upstream_rq_total`.
async fn envoy_counts(
    http: &reqwest::Client,
    admin: SocketAddr,
    caller: &ServiceName,
) -> Result<BTreeMap<ServiceName, u64>, String> {
    let suffix = format!(".vcluster.{caller}.upstream_rq_total");
    let filter = format!("^vhost\\.outbound\\|.+{}$", regex_escape(&suffix));
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("format", "json")
        .append_pair("usedonly", "")
        .append_pair("filter", &filter)
        .finish();
    let resp = http
        .get(format!("http://{admin}/stats?{query}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("Envoy's /stats answered {}", resp.status()));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    Ok(parse_counts(&body, &suffix))
}

/// The counters named `vhost.outbound|<callee><suffix>` in Envoy's `/stats?format=json`.
fn parse_counts(body: &serde_json::Value, suffix: &str) -> BTreeMap<ServiceName, u64> {
    let stats = body["stats"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    stats
        .iter()
        .filter_map(|stat| {
            let name = stat["name"].as_str()?;
            let callee = name.strip_prefix("vhost.outbound|")?.strip_suffix(suffix)?;
            Some((ServiceName::new(callee).ok()?, stat["value"].as_u64()?))
        })
        .collect()
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(
            |c| match c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                true => vec![c],
                false => vec!['\\', c],
            },
        )
        .collect()
}

/// One report's calls: Envoy's, then the app's direct calls as far as a report may name
/// services (`MAX_SERVICES`), so the control plane never refuses it.
fn merge(
    proxied: BTreeMap<ServiceName, u64>,
    direct: BTreeMap<ServiceName, u64>,
) -> BTreeMap<ServiceName, Calls> {
    let mut calls: BTreeMap<ServiceName, Calls> = BTreeMap::new();
    for (service, n) in proxied.into_iter().filter(|(_, n)| *n > 0) {
        calls.entry(service).or_default().proxy = n;
    }
    for (service, n) in direct.into_iter().filter(|(_, n)| *n > 0) {
        if calls.len() >= MAX_SERVICES && !calls.contains_key(&service) {
            continue;
        }
        calls.entry(service).or_default().direct = n;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).expect("name")
    }

    #[test]
    fn envoys_counters_are_read_by_callee_for_this_caller_only() {
        let body = json!({"stats": [
            {"name": "vhost.outbound|payments.vcluster.orders.upstream_rq_total", "value": 12},
            {"name": "vhost.outbound|pay.v2.vcluster.orders.upstream_rq_total", "value": 3},
            {"name": "vhost.inbound|orders.vcluster.other.upstream_rq_total", "value": 9},
            {"name": "vhost.outbound|ledger.vcluster.orders.upstream_rq_200", "value": 4},
        ]});
        let counts = parse_counts(&body, ".vcluster.orders.upstream_rq_total");
        assert_eq!(
            counts,
            BTreeMap::from([(name("pay.v2"), 3), (name("payments"), 12)])
        );
        assert_eq!(regex_escape(".vcluster.a.b"), "\\.vcluster\\.a\\.b");
    }

    #[test]
    fn reports_carry_increases_across_hot_restarts_and_crashes_without_counting_twice() {
        let counts = |pairs: &[(&str, u64)]| -> BTreeMap<ServiceName, u64> {
            pairs.iter().map(|(s, n)| (name(s), *n)).collect()
        };
        let envoy = |pid, epoch, crash_restarts| Envoy {
            pid,
            epoch,
            crash_restarts,
        };
        let mut c = Counters::default();
        let first = envoy(100, 0, 0);
        assert_eq!(
            c.read(first, counts(&[("payments", 10), ("ledger", 0)])),
            counts(&[("payments", 10)])
        );
        assert_eq!(
            c.read(first, counts(&[("payments", 15), ("ledger", 2)])),
            counts(&[("ledger", 2), ("payments", 5)])
        );
        // Hot restart: the new Envoy starts low, lists a counter only once used or merged,
        // then merges its parent's counts.
        let child = envoy(200, 1, 0);
        assert_eq!(c.read(child, counts(&[("payments", 3)])), counts(&[]));
        assert_eq!(
            c.read(child, counts(&[("payments", 19), ("ledger", 2)])),
            counts(&[("payments", 4)])
        );
        // A counter dropped and made again within one Envoy counts from zero.
        assert_eq!(
            c.read(child, counts(&[("payments", 19), ("ledger", 1)])),
            counts(&[("ledger", 1)])
        );
        // A crash, then a hot restart, between two reads: a fresh count, all of it new.
        let after_crash = envoy(400, 1, 1);
        assert_eq!(
            c.read(after_crash, counts(&[("payments", 2)])),
            counts(&[("payments", 2)])
        );
        let merged = merge(
            BTreeMap::from([(name("payments"), 5)]),
            BTreeMap::from([(name("payments"), 2), (name("ledger"), 1)]),
        );
        assert_eq!(
            merged[&name("payments")],
            Calls {
                proxy: 5,
                direct: 2
            }
        );
        assert_eq!(
            merged[&name("ledger")],
            Calls {
                proxy: 0,
                direct: 1
            }
        );
    }

    #[test]
    fn the_apps_reports_add_up_until_taken_and_what_is_not_a_service_is_left_out() {
        let direct = DirectCalls::default();
        let report = |pairs: &[(&str, u64)]| AppReport {
            direct: pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        };
        assert!(direct.add(report(&[("payments", 2)])).is_empty());
        assert_eq!(
            direct.add(report(&[
                ("payments", 3),
                ("ledger", 1),
                ("::1", 4),
                ("", 1)
            ])),
            vec!["".to_owned(), "::1".to_owned()]
        );
        assert_eq!(
            direct.take(),
            BTreeMap::from([(name("ledger"), 1), (name("payments"), 5)])
        );
        assert!(direct.take().is_empty());
        let many: Vec<(String, u64)> = (0..=MAX_SERVICES)
            .map(|i| (format!("s{i:05}"), 1))
            .collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        assert_eq!(direct.add(report(&many)).len(), 1, "past the limit");
        assert_eq!(direct.take().len(), MAX_SERVICES);
        // A report never names more services than the control plane keeps.
        let proxied = (0..MAX_SERVICES)
            .map(|i| (name(&format!("p{i}")), 1))
            .collect();
        let merged = merge(proxied, BTreeMap::from([(name("extra"), 1)]));
        assert_eq!(merged.len(), MAX_SERVICES);
    }
}
