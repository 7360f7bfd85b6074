//! Traffic reports from the sidecars (`meshplane_model::traffic`): `POST /api/traffic/reports`
//! keeps each instance's reports of the last [`WINDOW`]; `GET /api/traffic` sums them per
//! service pair. The migration view reads the share of each service's calls sent through its
//! egress proxy from them, and a dry run the callers a proposed `incoming` would deny.
//!
//! Memory is bounded: a report names at most `MAX_SERVICES` services, an instance keeps
//! only the reports of the window, instances that stopped reporting are forgotten after it,
//! and at most [`MAX_INSTANCES`] instances are kept (more are refused with 503).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use meshplane_model::ServiceName;
use meshplane_model::traffic::{Calls, Report};
use serde::Serialize;
use tokio::time::Instant;

use crate::AdminState;
use crate::relay::ApiError;

/// How far back "recent traffic" goes.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The most instances kept (a mesh of 5,000 proxies fits ten times over).
pub const MAX_INSTANCES: usize = 50_000;
/// Largest report body: 4,096 services with their counts.
pub(crate) const MAX_REPORT_BODY: usize = 512 * 1024;

/// The reports of the last [`WINDOW`], per instance, with their running sums. Cheap to clone
/// (shared).
#[derive(Clone, Default)]
pub struct TrafficLog(Arc<Mutex<Log>>);

/// One instance's reports: when each arrived, and its calls per service.
type Reports = VecDeque<(Instant, BTreeMap<ServiceName, Calls>)>;

#[derive(Default)]
struct Log {
    instances: HashMap<(ServiceName, String), Reports>,
    /// What [`TrafficLog::recent`] answers, kept up to date as reports come and go.
    sums: Recent,
}

/// Recent calls summed per caller service and callee service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recent {
    /// caller → callee → calls.
    pub pairs: BTreeMap<ServiceName, BTreeMap<ServiceName, Calls>>,
    /// caller → instances that reported in the window.
    pub reporting: BTreeMap<ServiceName, usize>,
}

impl Recent {
    /// Every caller of `callee` in the window, with its calls.
    pub fn callers_of(&self, callee: &ServiceName) -> Vec<(ServiceName, Calls)> {
        self.pairs
            .iter()
            .filter_map(|(caller, callees)| callees.get(callee).map(|c| (caller.clone(), *c)))
            .filter(|(_, c)| !c.is_empty())
            .collect()
    }

    fn add(&mut self, caller: &ServiceName, calls: &BTreeMap<ServiceName, Calls>) {
        let callees = self.pairs.entry(caller.clone()).or_default();
        for (callee, c) in calls {
            callees.entry(callee.clone()).or_default().add(*c);
        }
    }

    fn remove(&mut self, caller: &ServiceName, calls: &BTreeMap<ServiceName, Calls>) {
        let Some(callees) = self.pairs.get_mut(caller) else {
            return;
        };
        for (callee, c) in calls {
            if let Some(sum) = callees.get_mut(callee) {
                sum.proxy = sum.proxy.saturating_sub(c.proxy);
                sum.direct = sum.direct.saturating_sub(c.direct);
                if sum.is_empty() {
                    callees.remove(callee);
                }
            }
        }
        if callees.is_empty() {
            self.pairs.remove(caller);
        }
    }
}

impl TrafficLog {
    /// Keeps `report`, received at `now`. Refused when the log is full of other instances.
    pub fn record(&self, report: Report, now: Instant) -> Result<(), String> {
        let mut log = self.0.lock().expect("traffic log");
        let log = &mut *log;
        let key = (report.service, report.instance);
        if !log.instances.contains_key(&key) && log.instances.len() >= MAX_INSTANCES {
            // Instances gone quiet make room; the whole log is swept only then (and when
            // read), not on every report.
            log.prune(now);
            if log.instances.len() >= MAX_INSTANCES {
                return Err(format!(
                    "already keeping the reports of {MAX_INSTANCES} instances"
                ));
            }
        }
        let reports = log.instances.entry(key.clone()).or_insert_with(|| {
            *log.sums.reporting.entry(key.0.clone()).or_default() += 1;
            VecDeque::new()
        });
        log.sums.add(&key.0, &report.calls);
        reports.push_back((now, report.calls));
        if let Some(oldest) = now.checked_sub(WINDOW) {
            drop_before(reports, oldest, &key.0, &mut log.sums);
        }
        Ok(())
    }

    /// The reports of the window ending at `now`, summed.
    pub fn recent(&self, now: Instant) -> Recent {
        let mut log = self.0.lock().expect("traffic log");
        log.prune(now);
        log.sums.clone()
    }
}

impl Log {
    /// Drops the reports older than the window, and instances left with none.
    fn prune(&mut self, now: Instant) {
        let Some(oldest) = now.checked_sub(WINDOW) else {
            return;
        };
        let sums = &mut self.sums;
        self.instances.retain(|(caller, _), reports| {
            drop_before(reports, oldest, caller, sums);
            if !reports.is_empty() {
                return true;
            }
            if let Some(n) = sums.reporting.get_mut(caller) {
                *n -= 1;
                if *n == 0 {
                    sums.reporting.remove(caller);
                }
            }
            false
        });
    }
}

fn drop_before(reports: &mut Reports, oldest: Instant, caller: &ServiceName, sums: &mut Recent) {
    while reports.front().is_some_and(|(at, _)| *at < oldest) {
        if let Some((_, calls)) = reports.pop_front() {
            sums.remove(caller, &calls);
        }
    }
}

/// `POST /api/traffic/reports`: one sidecar's report, authorised like its certificate
/// requests (the control plane's token, or its service's enrolment token).
pub(crate) async fn record(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let report: Report = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not a traffic report: {e}"),
        )
    })?;
    report
        .check()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    crate::ca::authorize(&s, &headers, report.service.as_str())?;
    s.traffic
        .record(report, Instant::now())
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/traffic`.
#[derive(Debug, Serialize)]
pub struct TrafficView {
    /// The window the counts cover, in seconds.
    pub window_s: u64,
    /// One per caller and callee with calls in the window.
    pub pairs: Vec<PairView>,
}

/// Calls from one service to another.
#[derive(Debug, Serialize)]
pub struct PairView {
    pub caller: String,
    pub callee: String,
    /// Instances of the caller that reported.
    pub reporting: usize,
    #[serde(flatten)]
    pub calls: Calls,
}

pub(crate) async fn view(State(s): State<AdminState>) -> Response {
    let recent = s.traffic.recent(Instant::now());
    let pairs = recent
        .pairs
        .iter()
        .flat_map(|(caller, callees)| {
            let reporting = recent.reporting.get(caller).copied().unwrap_or_default();
            callees
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(move |(callee, calls)| PairView {
                    caller: caller.to_string(),
                    callee: callee.to_string(),
                    reporting,
                    calls: *calls,
                })
        })
        .collect();
    Json(TrafficView {
        window_s: WINDOW.as_secs(),
        pairs,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).expect("name")
    }

    fn report(service: &str, instance: &str, calls: &[(&str, u64, u64)]) -> Report {
        Report {
            service: name(service),
            instance: instance.to_owned(),
            datacenter: "dc1".to_owned(),
            calls: calls
                .iter()
                .map(|(callee, proxy, direct)| {
                    (
                        name(callee),
                        Calls {
                            proxy: *proxy,
                            direct: *direct,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn reports_of_the_window_are_summed_per_pair_and_older_ones_forgotten() {
        let log = TrafficLog::default();
        let t0 = Instant::now();
        log.record(report("orders", "orders-1", &[("payments", 10, 2)]), t0)
            .expect("kept");
        let t1 = t0 + Duration::from_secs(300);
        log.record(report("orders", "orders-1", &[("payments", 5, 0)]), t1)
            .expect("kept");
        log.record(
            report(
                "orders",
                "orders-2",
                &[("payments", 1, 1), ("ledger", 3, 0)],
            ),
            t1,
        )
        .expect("kept");
        let recent = log.recent(t1);
        assert_eq!(recent.reporting[&name("orders")], 2);
        assert_eq!(
            recent.callers_of(&name("payments")),
            vec![(
                name("orders"),
                Calls {
                    proxy: 16,
                    direct: 3
                }
            )]
        );
        // The first report leaves the window; an instance with none left is forgotten.
        let t2 = t0 + WINDOW + Duration::from_secs(1);
        assert_eq!(
            log.recent(t2).callers_of(&name("payments")),
            vec![(
                name("orders"),
                Calls {
                    proxy: 6,
                    direct: 1
                }
            )]
        );
        let t3 = t1 + WINDOW + Duration::from_secs(1);
        assert_eq!(log.recent(t3), Recent::default());
    }
}
