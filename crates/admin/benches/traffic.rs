//! What the sidecars' traffic reports cost a control plane at the size of our users' mesh:
//! 5,000 sidecars reporting every 30 s (167 reports/s), each naming the 5 services its app
//! called, out of 1,000; a full window (10 min: 20 reports per sidecar) kept. Prints the time
//! to keep one report, and to sum the window (what `GET /api/migration`, `GET /api/traffic`
//! and a dry run do once per request).
//!
//! `cargo bench -p meshplane-admin --bench traffic`

use std::time::{Duration, Instant};

use meshplane_admin::traffic::TrafficLog;
use meshplane_model::ServiceName;
use meshplane_model::traffic::{Calls, Report};

const SIDECARS: usize = 5_000;
const SERVICES: usize = 1_000;
const CALLEES: usize = 5;
const REPORTS_PER_WINDOW: usize = 20;

fn report(i: usize, round: usize) -> Report {
    let service = |n: usize| ServiceName::new(format!("service-{}", n % SERVICES)).expect("name");
    Report {
        service: service(i),
        instance: format!("service-{}-{i}", i % SERVICES),
        datacenter: "dc1".to_owned(),
        calls: (1..=CALLEES)
            .map(|k| {
                let calls = Calls {
                    proxy: (i + round + k) as u64 % 500,
                    direct: (i * k) as u64 % 50,
                };
                (service(i + k * 37), calls)
            })
            .collect(),
    }
}

fn main() {
    let log = TrafficLog::default();
    let start = tokio::time::Instant::now();
    let reports: Vec<Vec<Report>> = (0..REPORTS_PER_WINDOW)
        .map(|round| (0..SIDECARS).map(|i| report(i, round)).collect())
        .collect();
    let n = SIDECARS * REPORTS_PER_WINDOW;
    let began = Instant::now();
    for (round, batch) in reports.into_iter().enumerate() {
        let at = start + Duration::from_secs(30 * round as u64);
        for r in batch {
            log.record(r, at).expect("kept");
        }
    }
    let recording = began.elapsed();
    println!(
        "kept {n} reports ({SIDECARS} sidecars x {REPORTS_PER_WINDOW}, {CALLEES} services each) in {recording:.2?}: {:.1} µs per report ({:.2} % of one core at {} reports/s)",
        recording.as_secs_f64() * 1e6 / n as f64,
        recording.as_secs_f64() / n as f64 * (SIDECARS as f64 / 30.0) * 100.0,
        SIDECARS / 30
    );
    let now = start + Duration::from_secs(30 * (REPORTS_PER_WINDOW as u64 - 1));
    let rounds = 10;
    let began = Instant::now();
    let mut pairs = 0;
    for _ in 0..rounds {
        pairs = log
            .recent(now)
            .pairs
            .values()
            .map(|c| c.len())
            .sum::<usize>();
    }
    println!(
        "summed the window ({pairs} service pairs) in {:.2?} per request",
        began.elapsed() / rounds
    );
}
