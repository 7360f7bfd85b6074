//! Figures out of a [`ScenarioResult`], as Markdown table rows.

use crate::bench::{Placement, ScenarioResult};

const MIB: f64 = 1024.0 * 1024.0;

/// The header of the table [`row`] fills.
pub const HEADER: &str = "| layout | mode | streams | groups | conns | connect+sync (s) | server emitted all (ms) | change→all ACKed, worst round (ms) | ACK p50 / p99 / max (ms) | CPU per change, server / client (ms) | server RSS before → synced (MiB) | MiB per stream | status ACKed |\n\
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// Percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Summary of ACK latencies over every round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median ACK latency, ns.
    pub p50: u64,
    /// 99th percentile, ns.
    pub p99: u64,
    /// Slowest, ns.
    pub max: u64,
    /// Slowest round: publish start to its last ACK, ns.
    pub worst_round: u64,
}

/// ACK latencies pooled over the rounds.
pub fn latency(result: &ScenarioResult) -> Latency {
    let mut all: Vec<u64> = result.rounds.iter().flatten().copied().collect();
    all.sort_unstable();
    let worst_round = result
        .rounds
        .iter()
        .map(|r| r.iter().copied().max().unwrap_or_default())
        .max()
        .unwrap_or_default();
    Latency {
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
        max: percentile(&all, 100.0),
        worst_round,
    }
}

/// Median of unsorted values.
fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    percentile(&v, 50.0)
}

/// Server memory per stream, MiB (RSS growth from no stream to all synced, over N).
pub fn mib_per_stream(result: &ScenarioResult) -> f64 {
    result.rss_synced.saturating_sub(result.rss_before) as f64
        / MIB
        / result.config.streams.max(1) as f64
}

/// One table row.
pub fn row(result: &ScenarioResult) -> String {
    let c = &result.config;
    let l = latency(result);
    let memory_note = match c.placement {
        Placement::Child => "",
        Placement::InProcess => " (incl. client)",
    };
    format!(
        "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {:.0} / {} | {:.0} → {:.0}{} | {:.4} | {}/{} |",
        c.layout,
        c.mode,
        c.streams,
        result.groups,
        result.connections,
        result.sync.as_secs_f64(),
        ms(median(&result.emitted)),
        ms(l.worst_round),
        ms(l.p50),
        ms(l.p99),
        ms(l.max),
        ms(median(&result.server_cpu)),
        if result.client_cpu.is_empty() {
            "in process".to_owned()
        } else {
            format!("{:.0}", ms(median(&result.client_cpu)))
        },
        result.rss_before as f64 / MIB,
        result.rss_synced as f64 / MIB,
        memory_note,
        mib_per_stream(result),
        result.status_acked,
        c.streams,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
