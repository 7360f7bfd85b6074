//! One round of demo traffic and its summary table.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What a route measured.
pub struct RouteStats {
    /// Route label.
    pub name: String,
    /// Requests sent.
    pub requests: usize,
    /// Responses by class.
    pub ok: usize,
    /// 5xx responses.
    pub server_errors: usize,
    /// Other outcomes (4xx, transport errors).
    pub other: usize,
    /// Latencies through the mesh.
    pub mesh: Vec<Duration>,
    /// Latencies calling the app directly, if measured.
    pub direct: Vec<Duration>,
    /// A note (e.g. which instances answered).
    pub note: String,
    /// One response body, for the reader.
    pub sample: String,
}

/// Sends `n` GETs with `client` to `url` (optionally with a header) and records outcomes.
pub async fn measure(
    client: &reqwest::Client,
    url: &str,
    header: Option<(&str, &str)>,
    n: usize,
) -> (Vec<(u16, String)>, Vec<Duration>) {
    let mut outcomes = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = client.get(url);
        if let Some((k, v)) = header {
            request = request.header(k, v);
        }
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        };
        latencies.push(started.elapsed());
        outcomes.push(outcome);
    }
    (outcomes, latencies)
}

impl RouteStats {
    /// Builds stats from outcomes.
    pub fn new(
        name: &str,
        outcomes: &[(u16, String)],
        mesh: Vec<Duration>,
        direct: Vec<Duration>,
    ) -> Self {
        let ok = outcomes
            .iter()
            .filter(|(s, _)| (200..300).contains(s))
            .count();
        let server_errors = outcomes
            .iter()
            .filter(|(s, _)| (500..600).contains(s))
            .count();
        RouteStats {
            name: name.to_owned(),
            requests: outcomes.len(),
            ok,
            server_errors,
            other: outcomes.len() - ok - server_errors,
            mesh,
            direct,
            note: String::new(),
            sample: outcomes
                .first()
                .map(|(_, b)| b.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted.get(rank).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".to_owned())
}

/// A table a person can read.
pub fn table(routes: &[RouteStats]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<52} {:>5} {:>5} {:>5} {:>5} {:>9} {:>9} {:>11} {:>11}  note",
        "route", "reqs", "2xx", "5xx", "other", "p50 ms", "p99 ms", "direct p50", "direct p99"
    );
    for r in routes {
        let _ = writeln!(
            out,
            "{:<52} {:>5} {:>5} {:>5} {:>5} {:>9} {:>9} {:>11} {:>11}  {}",
            r.name,
            r.requests,
            r.ok,
            r.server_errors,
            r.other,
            ms(percentile(&r.mesh, 50.0)),
            ms(percentile(&r.mesh, 99.0)),
            ms(percentile(&r.direct, 50.0)),
            ms(percentile(&r.direct, 99.0)),
            r.note
        );
    }
    out
}
