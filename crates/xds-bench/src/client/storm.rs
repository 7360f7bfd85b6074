//! The fleet's side of a storm ([`crate::storm`]): every response counted per stream and
//! type, streams re-opened on a restarted server, and at the end each proxy's endpoints
//! compared with the registry's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use super::{EventKind, Fleet, connect_all, sotw::slot};
use crate::scenario::service_name;

/// How long no stream may receive anything before a storm counts as over.
const QUIET: Duration = Duration::from_secs(1);
/// How often the fleet's endpoints are compared with the expected ones while settling.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// What the fleet saw of a storm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StormReport {
    /// Streams in the fleet.
    pub streams: usize,
    /// Streams re-established after the restart, and when the last one was (monotonic ns).
    pub reconnected: (usize, u64),
    /// When the last response of the storm arrived (monotonic ns; 0: none arrived).
    pub last_response: u64,
    /// Per type (CDS, EDS, LDS, RDS): responses over all streams, and the most one stream got.
    pub responses: [(u64, u64); 4],
    /// Per type: resources received, and of those the ones the proxy already held.
    pub resources: [(u64, u64); 4],
    /// Streams holding exactly the registry's routable endpoints for every service they see.
    pub exact: usize,
}

impl StormReport {
    /// The report as one line of numbers (the child's `SETTLED` line).
    pub fn to_line(&self) -> String {
        let mut fields = vec![
            self.streams as u64,
            self.reconnected.0 as u64,
            self.reconnected.1,
            self.last_response,
            self.exact as u64,
        ];
        for i in 0..4 {
            fields.extend([
                self.responses[i].0,
                self.responses[i].1,
                self.resources[i].0,
                self.resources[i].1,
            ]);
        }
        fields
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads [`StormReport::to_line`]'s output.
    pub fn from_line(line: &str) -> anyhow::Result<StormReport> {
        let fields = line
            .split_whitespace()
            .map(|f| f.parse::<u64>().context("SETTLED field"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(fields.len() == 21, "SETTLED with {} fields", fields.len());
        let mut report = StormReport {
            streams: fields[0] as usize,
            reconnected: (fields[1] as usize, fields[2]),
            last_response: fields[3],
            exact: fields[4] as usize,
            ..Default::default()
        };
        for i in 0..4 {
            let f = &fields[5 + 4 * i..9 + 4 * i];
            report.responses[i] = (f[0], f[1]);
            report.resources[i] = (f[2], f[3]);
        }
        Ok(report)
    }
}

// === impl Fleet ===

impl Fleet {
    /// From now on every response is counted; what arrived before is dropped.
    pub fn storm_arm(&mut self) {
        while self.events_rx.try_recv().is_ok() {}
        self.storm.store(true, Ordering::SeqCst);
    }

    /// The server is about to stop: streams that end wait for [`Fleet::reconnect`].
    pub fn expect_restart(&self) {
        self.restarting.store(true, Ordering::SeqCst);
    }

    /// Connects to the restarted server at `addr`; every waiting stream re-opens on it at
    /// once, reporting what it holds.
    pub async fn reconnect(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let channels = connect_all(addr, self.config.connections()).await?;
        self.channels_tx.send_replace(Arc::new(channels));
        Ok(())
    }

    /// Counts the storm's responses until every stream holds the `expected` endpoints (name
    /// → digest of the routable `address:port`s) and has been quiet for a second (and, if
    /// `reconnecting`, was re-established); gives up after `timeout` and reports what it has.
    pub async fn settle(
        &mut self,
        expected: &BTreeMap<String, u64>,
        reconnecting: bool,
        timeout: Duration,
    ) -> anyhow::Result<StormReport> {
        let streams = self.config.streams;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut per_stream = vec![[0u64; 4]; streams];
        let mut reconnected = vec![false; streams];
        let mut report = StormReport {
            streams,
            ..Default::default()
        };
        let mut last_event = tokio::time::Instant::now();
        let mut next_check = last_event;
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_check {
                report.exact = self.exact_streams(expected);
                next_check = now + CHECK_EVERY;
            }
            let all_back = !reconnecting || report.reconnected.0 == streams;
            if (all_back && report.exact == streams && now >= last_event + QUIET) || now >= deadline
            {
                break;
            }
            let wait = (now + CHECK_EVERY).min(deadline);
            let Ok(event) = tokio::time::timeout_at(wait, self.events_rx.recv()).await else {
                continue;
            };
            let event = event.context("every stream task ended")?;
            match event.kind {
                EventKind::Storm(r) => {
                    let i = slot(r.kind)?;
                    per_stream[event.stream][i] += 1;
                    report.resources[i].0 += r.resources as u64;
                    report.resources[i].1 += r.held as u64;
                    report.last_response = report.last_response.max(event.at_ns);
                    last_event = tokio::time::Instant::now();
                }
                EventKind::Reconnected if !reconnected[event.stream] => {
                    reconnected[event.stream] = true;
                    report.reconnected.0 += 1;
                    report.reconnected.1 = report.reconnected.1.max(event.at_ns);
                    last_event = tokio::time::Instant::now();
                }
                EventKind::Failed(e) => anyhow::bail!("stream {} failed: {e}", event.stream),
                _ => {}
            }
        }
        report.exact = self.exact_streams(expected);
        for (i, total) in report.responses.iter_mut().enumerate() {
            *total = per_stream
                .iter()
                .fold((0, 0), |(sum, max), s| (sum + s[i], max.max(s[i])));
        }
        self.storm.store(false, Ordering::SeqCst);
        Ok(report)
    }

    /// Streams whose endpoints are exactly `expected` for every service they see (and no
    /// other assignment).
    fn exact_streams(&self, expected: &BTreeMap<String, u64>) -> usize {
        let (layout, streams) = (self.config.layout, self.config.streams);
        self.digests
            .iter()
            .enumerate()
            .filter(|(i, digests)| {
                let held = digests.lock();
                match layout.seen_services(*i, streams) {
                    None => *held == *expected,
                    Some(seen) => {
                        held.len() == seen.len()
                            && seen.iter().all(|&s| {
                                let name = service_name(s);
                                held.get(&name)
                                    .is_some_and(|d| expected.get(&name) == Some(d))
                            })
                    }
                }
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_its_line() {
        let report = StormReport {
            streams: 20,
            reconnected: (20, 123),
            last_response: 456,
            responses: [(1, 2), (3, 4), (5, 6), (7, 8)],
            resources: [(9, 0), (10, 1), (11, 2), (12, 3)],
            exact: 19,
        };
        assert_eq!(
            StormReport::from_line(&report.to_line()).expect("parses"),
            report
        );
    }
}
