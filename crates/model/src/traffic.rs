//! Traffic reports: what each sidecar tells the control planes about its app's recent calls
//! to mesh services, so the migration view can show the share sent through Envoy and a dry
//! run can name the callers a proposed `incoming` section would deny.
//!
//! Every [`REPORT_INTERVAL`] a sidecar posts a [`Report`] to each control plane
//! (`POST /api/traffic/reports`, authorised like its certificate requests): per mesh service
//! its app called since the previous report, the requests its Envoy forwarded (`proxy`: the
//! egress virtual cluster `vhost.outbound|<service>.vcluster.<caller>.upstream_rq_total`)
//! and the requests the app says it sent straight to the callee (`direct`: what an
//! interceptor posts to the sidecar, [`AppReport`] on [`APP_REPORT_PATH`]). Counts are the
//! increase since the previous report, so a control plane that missed some (down, restarted)
//! only misses those; each keeps the reports of a recent window.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ServiceName;

/// How often a sidecar reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// Where a sidecar posts its reports, on each control plane's admin address.
pub const REPORTS_PATH: &str = "/api/traffic/reports";

/// Where the app posts its direct calls, on its egress port (beside
/// [`crate::egress_flags::PATH`]).
pub const APP_REPORT_PATH: &str = "/.meshplane/egress/report";

/// The most services one report (or one app report) may name: a wildcard proxy calling a
/// thousand services fits; a runaway one is refused, not stored.
pub const MAX_SERVICES: usize = 4096;

/// Calls from one instance to one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calls {
    /// Forwarded by the instance's Envoy (its egress proxy).
    #[serde(default)]
    pub proxy: u64,
    /// Sent by the app straight to the callee, as its interceptor reported.
    #[serde(default)]
    pub direct: u64,
}

impl Calls {
    /// Both counts added.
    pub fn add(&mut self, other: Calls) {
        self.proxy = self.proxy.saturating_add(other.proxy);
        self.direct = self.direct.saturating_add(other.direct);
    }

    /// Whether nothing was called.
    pub fn is_empty(&self) -> bool {
        self.proxy == 0 && self.direct == 0
    }
}

/// One sidecar's report: its instance, and its app's calls since its previous report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The reporting instance's service.
    pub service: ServiceName,
    /// Its instance id.
    pub instance: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Calls per called service since the previous report (services not called are left out).
    pub calls: BTreeMap<ServiceName, Calls>,
}

impl Report {
    /// Why the report cannot be kept, if it cannot: an instance id or datacenter that is
    /// empty or longer than 253 bytes, or more than [`MAX_SERVICES`] services.
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("instance", &self.instance),
            ("datacenter", &self.datacenter),
        ] {
            if value.is_empty() || value.len() > 253 {
                return Err(format!("{field}: 1 to 253 bytes"));
            }
        }
        if self.calls.len() > MAX_SERVICES {
            return Err(format!(
                "calls: at most {MAX_SERVICES} services, got {}",
                self.calls.len()
            ));
        }
        Ok(())
    }
}

/// What an app (its interceptor) posts to its sidecar: the calls it sent straight to each
/// mesh service since its previous post. Names that are not service names (domains, IP
/// addresses) are ignored, not counted: only calls to mesh services are compared with
/// Envoy's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppReport {
    /// Direct calls per service, as the app names it.
    pub direct: BTreeMap<String, u64>,
}
