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
    /// Adds an app's report; refused (nothing added) when it would make more than
    /// `MAX_SERVICES` services.
    pub fn add(&self, report: AppReport) -> Result<(), String> {
        let mut calls = self.0.lock().expect("direct calls");
        let new = report
            .direct
            .keys()
            .filter(|s| !calls.contains_key(*s))
            .count();
        if calls.len() + new > MAX_SERVICES {
            return Err(format!(
                "direct: at most {MAX_SERVICES} services between two reports"
            ));
        }
        for (service, n) in report.direct {
            let count = calls.entry(service).or_default();
            *count = count.saturating_add(n);
        }
        Ok(())
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

/// What has been reported of Envoy's egress counters, across Envoy restarts.
#[derive(Debug, Default)]
struct Counters {
    /// The Envoy whose counters were last read: (pid, hot-restart epoch).
    envoy: Option<(u32, u32)>,
    /// The highest value reported per counter.
    reported: BTreeMap<ServiceName, u64>,
}

impl Counters {
    /// The calls counted since the last read, given what `envoy` counts `now`.
    fn read(
        &mut self,
        envoy: (u32, u32),
        now: BTreeMap<ServiceName, u64>,
    ) -> BTreeMap<ServiceName, u64> {
        let (pid, epoch) = envoy;
        if self.envoy.is_some_and(|(was, _)| was != pid) && epoch == 0 {
            // A fresh Envoy (after a crash): it counts from zero.
            self.reported.clear();
        }
        // A counter missing from the read is kept: a hot-restarted Envoy lists it only once
        // used or merged. (One dropped and recreated by a running Envoy, its dependency
        // removed and added back, is under-counted until it passes what was reported: never
        // counted twice.)
        self.envoy = Some(envoy);
        let mut increase = BTreeMap::new();
        for (service, n) in now {
            let reported = self.reported.entry(service.clone()).or_default();
            if n > *reported {
                increase.insert(service, n - *reported);
                *reported = n;
            }
        }
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
        let envoy = spec.status.borrow().current.map(|p| (p.pid, p.epoch));
        let read = match envoy {
            Some(envoy) => envoy_counts(&spec.http, spec.envoy_admin, &spec.service)
                .await
                .map(|now| (envoy, now)),
            None => Err("no Envoy running".to_owned()),
        };
        let proxied = match read {
            // Still the same Envoy after the read: its counts are its own.
            Ok((envoy, now))
                if spec.status.borrow().current.map(|p| (p.pid, p.epoch)) == Some(envoy) =>
            {
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

fn merge(
    proxied: BTreeMap<ServiceName, u64>,
    direct: BTreeMap<ServiceName, u64>,
) -> BTreeMap<ServiceName, Calls> {
    let mut calls: BTreeMap<ServiceName, Calls> = BTreeMap::new();
    for (service, n) in proxied {
        calls.entry(service).or_default().proxy = n;
    }
    for (service, n) in direct {
        calls.entry(service).or_default().direct = n;
    }
    calls.retain(|_, c| !c.is_empty());
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
        let mut c = Counters::default();
        assert_eq!(
            c.read((100, 0), counts(&[("payments", 10), ("ledger", 0)])),
            counts(&[("payments", 10)])
        );
        assert_eq!(
            c.read((100, 0), counts(&[("payments", 15), ("ledger", 2)])),
            counts(&[("ledger", 2), ("payments", 5)])
        );
        // Hot restart: the new Envoy starts low, then merges its parent's counts.
        assert_eq!(c.read((200, 1), counts(&[("payments", 3)])), counts(&[]));
        assert_eq!(
            c.read((200, 1), counts(&[("payments", 19)])),
            counts(&[("payments", 4)])
        );
        // Crash: a fresh Envoy at epoch 0 counts from zero; all of it is new.
        assert_eq!(
            c.read((300, 0), counts(&[("payments", 2)])),
            counts(&[("payments", 2)])
        );
        // A hot-restarted Envoy lists a counter only once merged: not counted twice.
        assert_eq!(
            c.read((300, 0), counts(&[("ledger", 1)])),
            counts(&[("ledger", 1)])
        );
        assert_eq!(c.read((400, 1), counts(&[])), counts(&[]));
        assert_eq!(
            c.read((400, 1), counts(&[("ledger", 1), ("payments", 2)])),
            counts(&[])
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
    fn the_apps_reports_add_up_until_taken_and_are_bounded() {
        let direct = DirectCalls::default();
        let report = |pairs: &[(&str, u64)]| AppReport {
            direct: pairs.iter().map(|(s, n)| (name(s), *n)).collect(),
        };
        direct.add(report(&[("payments", 2)])).expect("added");
        direct
            .add(report(&[("payments", 3), ("ledger", 1)]))
            .expect("added");
        assert_eq!(
            direct.take(),
            BTreeMap::from([(name("ledger"), 1), (name("payments"), 5)])
        );
        assert!(direct.take().is_empty());
        let many: Vec<(String, u64)> = (0..=MAX_SERVICES).map(|i| (format!("s{i}"), 1)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        assert!(direct.add(report(&many)).is_err());
        assert!(direct.take().is_empty(), "a refused report adds nothing");
    }
}
