//! Traffic reports from the sidecars (`meshplane_model::traffic`): `POST /api/traffic/reports`
//! adds each report's calls to per-pair sums over the last [`WINDOW`]; `GET /api/traffic`
//! lists them. The migration view reads the share of each service's calls sent through its
//! egress proxy from them, and a dry run the callers a proposed `incoming` would deny.
//!
//! Memory is bounded whatever is posted and how often: calls are summed per caller and callee
//! service into [`BUCKET`]-long buckets (at most `WINDOW / BUCKET` per pair), at most
//! [`MAX_PAIRS`] pairs, [`MAX_INSTANCES`] reporting instances and
//! [`MAX_INSTANCES_PER_SERVICE`] per service are kept (more are refused with 503, naming the
//! limit, so one service's reports never crowd out another's beyond its share), and what
//! leaves the window is forgotten.

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
/// The window's resolution: calls are summed per pair in buckets this long.
pub const BUCKET: Duration = Duration::from_secs(30);
/// The most reporting instances kept (a mesh of 5,000 proxies fits ten times over)...
pub const MAX_INSTANCES: usize = 50_000;
/// ...and per service.
pub const MAX_INSTANCES_PER_SERVICE: usize = 5_000;
/// The most caller → callee pairs kept (1,000 services calling 100 each).
pub const MAX_PAIRS: usize = 100_000;
/// Largest report body: 4,096 services with their counts.
pub(crate) const MAX_REPORT_BODY: usize = 512 * 1024;

/// Buckets kept per pair.
const BUCKETS: u64 = WINDOW.as_secs() / BUCKET.as_secs();

/// Recent calls per pair of services. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct TrafficLog(Arc<Mutex<Log>>);

#[derive(Default)]
struct Log {
    /// Bucket 0 starts here (the first report).
    origin: Option<Instant>,
    /// (service, datacenter, instance) → when it last reported.
    instances: HashMap<(ServiceName, String, String), Instant>,
    /// Instances kept per service.
    per_service: HashMap<ServiceName, usize>,
    /// (caller, callee) → calls per bucket, and their sum.
    pairs: HashMap<(ServiceName, ServiceName), Pair>,
}

#[derive(Default)]
struct Pair {
    buckets: VecDeque<(u64, Calls)>,
    sum: Calls,
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
}

impl TrafficLog {
    /// Adds `report`, received at `now`. Refused, with nothing added, when keeping it would
    /// pass a limit.
    pub fn record(&self, report: Report, now: Instant) -> Result<(), String> {
        let mut log = self.0.lock().expect("traffic log");
        let instance = (report.service.clone(), report.datacenter, report.instance);
        let calls: Vec<(ServiceName, Calls)> = report
            .calls
            .into_iter()
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if let Err(full) = log.room_for(&instance, &calls) {
            // What left the window makes room; the whole log is swept only then (and when
            // read), not on every report.
            log.prune(now);
            log.room_for(&instance, &calls).map_err(|_| full)?;
        }
        if log.instances.insert(instance, now).is_none() {
            *log.per_service.entry(report.service.clone()).or_default() += 1;
        }
        let bucket = log.bucket(now);
        for (callee, c) in calls {
            let pair = log
                .pairs
                .entry((report.service.clone(), callee))
                .or_default();
            match pair.buckets.back_mut() {
                Some((b, sum)) if *b == bucket => sum.add(c),
                _ => pair.buckets.push_back((bucket, c)),
            }
            pair.sum.add(c);
            pair.expire(bucket);
        }
        Ok(())
    }

    /// The calls of the window ending at `now`, summed per pair.
    pub fn recent(&self, now: Instant) -> Recent {
        let mut log = self.0.lock().expect("traffic log");
        log.prune(now);
        let mut out = Recent::default();
        for ((caller, callee), pair) in &log.pairs {
            out.pairs
                .entry(caller.clone())
                .or_default()
                .insert(callee.clone(), pair.sum);
        }
        out.reporting = log
            .per_service
            .iter()
            .map(|(s, n)| (s.clone(), *n))
            .collect();
        out
    }
}

impl Log {
    fn bucket(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        (now.saturating_duration_since(origin).as_secs() / BUCKET.as_secs()) + BUCKETS
    }

    /// `Err` naming the limit a report from `instance` naming `calls` would pass.
    fn room_for(
        &self,
        instance: &(ServiceName, String, String),
        calls: &[(ServiceName, Calls)],
    ) -> Result<(), String> {
        if !self.instances.contains_key(instance) {
            if self.instances.len() >= MAX_INSTANCES {
                return Err(format!(
                    "already keeping the reports of {MAX_INSTANCES} instances"
                ));
            }
            let service = &instance.0;
            if self.per_service.get(service).copied().unwrap_or_default()
                >= MAX_INSTANCES_PER_SERVICE
            {
                return Err(format!(
                    "already keeping the reports of {MAX_INSTANCES_PER_SERVICE} instances of `{service}`"
                ));
            }
        }
        let new_pairs = calls
            .iter()
            .filter(|(callee, _)| {
                !self
                    .pairs
                    .contains_key(&(instance.0.clone(), callee.clone()))
            })
            .count();
        if self.pairs.len() + new_pairs > MAX_PAIRS {
            return Err(format!(
                "already keeping the calls of {MAX_PAIRS} pairs of services"
            ));
        }
        Ok(())
    }

    /// Forgets the buckets, pairs and instances that left the window.
    fn prune(&mut self, now: Instant) {
        let bucket = self.bucket(now);
        self.pairs.retain(|_, pair| {
            pair.expire(bucket);
            !pair.buckets.is_empty()
        });
        let Some(oldest) = now.checked_sub(WINDOW) else {
            return;
        };
        let per_service = &mut self.per_service;
        self.instances.retain(|(service, _, _), last| {
            if *last >= oldest {
                return true;
            }
            if let Some(n) = per_service.get_mut(service) {
                *n -= 1;
                if *n == 0 {
                    per_service.remove(service);
                }
            }
            false
        });
    }
}

impl Pair {
    /// Drops the buckets older than the window ending in `bucket`.
    fn expire(&mut self, bucket: u64) {
        while let Some((b, c)) = self.buckets.front()
            && *b + BUCKETS <= bucket
        {
            self.sum.proxy = self.sum.proxy.saturating_sub(c.proxy);
            self.sum.direct = self.sum.direct.saturating_sub(c.direct);
            self.buckets.pop_front();
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
    crate::ca::authorize(
        &s,
        &headers,
        report.service.as_str(),
        crate::ca::OnBehalf::Report,
    )?;
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

    #[test]
    fn one_service_cannot_crowd_out_another_and_a_busy_reporter_keeps_only_the_window() {
        let log = TrafficLog::default();
        let t0 = Instant::now();
        for i in 0..MAX_INSTANCES_PER_SERVICE {
            log.record(
                report("noisy", &format!("noisy-{i}"), &[("payments", 1, 0)]),
                t0,
            )
            .expect("kept");
        }
        let refused = log
            .record(report("noisy", "noisy-extra", &[("payments", 1, 0)]), t0)
            .expect_err("past the per-service limit");
        assert!(refused.contains("of `noisy`"), "{refused}");
        log.record(report("orders", "orders-1", &[("payments", 1, 0)]), t0)
            .expect("another service is still kept");
        // A report every second for an hour: only the last window's buckets are summed.
        let busy = TrafficLog::default();
        for s in 0..3600 {
            busy.record(
                report("orders", "orders-1", &[("payments", 1, 0)]),
                t0 + Duration::from_secs(s),
            )
            .expect("kept");
        }
        let recent = busy.recent(t0 + Duration::from_secs(3599));
        let proxied = recent.callers_of(&name("payments"))[0].1.proxy;
        assert!(
            (WINDOW.as_secs() - BUCKET.as_secs()..=WINDOW.as_secs()).contains(&proxied),
            "{proxied} calls in the window"
        );
        let pairs = busy.0.lock().expect("log");
        let pair = pairs.pairs.values().next().expect("the pair");
        assert!(
            pair.buckets.len() as u64 <= BUCKETS,
            "{} buckets",
            pair.buckets.len()
        );
    }
}
