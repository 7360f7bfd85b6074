//! Figures out of a [`ScenarioResult`], as Markdown table rows.

use crate::bench::{Placement, ScenarioResult, ServerKind};

const MIB: f64 = 1024.0 * 1024.0;

/// The header of the table [`row`] fills.
pub const HEADER: &str = "| layout | mode | streams | server | groups | conns | affected per round | connect+sync (s) | server emitted all (ms) | change→all affected ACKed, worst round (ms) | ACK p50 / p99 / max (ms) | × floor: all ACKed / p99 | CPU per change, server / client (ms) | server RSS before → synced (MiB) | MiB per stream | unaffected that got a response | status ACKed |\n\
|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

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
    result.rss_synced().saturating_sub(result.rss_before) as f64
        / MIB
        / result.config.streams.max(1) as f64
}

/// Server memory per stream of each connection phase, MiB (for `mixed`: the non-wildcard
/// streams, then the wildcard ones).
pub fn mib_per_stream_by_phase(result: &ScenarioResult) -> Vec<f64> {
    let c = &result.config;
    let mut before = result.rss_before;
    c.layout
        .phases(c.streams)
        .iter()
        .zip(&result.rss_phases)
        .map(|(phase, &after)| {
            let mib = after.saturating_sub(before) as f64 / MIB / phase.len().max(1) as f64;
            before = after;
            mib
        })
        .collect()
}

/// Meshplane's latency as a multiple of the floor's: change→all ACKed, then ACK p99.
pub fn floor_ratio(meshplane: &Latency, floor: &Latency) -> (f64, f64) {
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    (
        ratio(meshplane.worst_round, floor.worst_round),
        ratio(meshplane.p99, floor.p99),
    )
}

/// The "× floor" cell of a row of `server` whose latency is `own`.
pub fn floor_cell(server: ServerKind, own: Option<&Latency>, floor: Option<&Latency>) -> String {
    match (server, own, floor) {
        (ServerKind::Meshplane | ServerKind::ControlPlane(_), Some(m), Some(f)) => {
            let (all, p99) = floor_ratio(m, f);
            format!("{all:.1}× / {p99:.1}×")
        }
        _ => "—".to_owned(),
    }
}

/// One table row; `floor` is the floor's latency in the same scenario, if it was measured.
pub fn row(result: &ScenarioResult, floor: Option<&Latency>) -> String {
    let (head, tail) = row_parts(result);
    let cell = floor_cell(result.config.server, Some(&latency(result)), floor);
    format!("{head} {cell} {tail}")
}

/// `LATENCY` line a scenario process prints for the parent: p50, p99, max, worst round (ns).
pub fn latency_line(l: &Latency) -> String {
    format!("{} {} {} {}", l.p50, l.p99, l.max, l.worst_round)
}

/// Parses [`latency_line`].
pub fn parse_latency_line(line: &str) -> Option<Latency> {
    let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
    let mut next = || fields.next().flatten();
    Some(Latency {
        p50: next()?,
        p99: next()?,
        max: next()?,
        worst_round: next()?,
    })
}

/// A row in two halves, around the "× floor" cell (filled in by whoever ran the floor).
pub fn row_parts(result: &ScenarioResult) -> (String, String) {
    let c = &result.config;
    let l = latency(result);
    let memory_note = match c.placement {
        Placement::Child => "",
        Placement::InProcess => " (incl. client)",
    };
    let affected: Vec<usize> = result.rounds.iter().map(Vec::len).collect();
    let (lo, hi) = (
        affected.iter().min().copied().unwrap_or_default(),
        affected.iter().max().copied().unwrap_or_default(),
    );
    let affected = if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    };
    let phases = mib_per_stream_by_phase(result);
    let per_stream = match phases.as_slice() {
        [others, wildcard] => format!(
            "{:.4} (others {others:.4}, wildcard {wildcard:.3})",
            mib_per_stream(result)
        ),
        _ => format!("{:.4}", mib_per_stream(result)),
    };
    let (unaffected, touched) = result
        .unaffected
        .iter()
        .fold((0, 0), |(u, t), (du, dt)| (u + du, t + dt));
    let unaffected = if unaffected == 0 {
        "—".to_owned()
    } else {
        format!("{touched}/{unaffected}")
    };
    let status = match result.status_acked {
        Some(n) => format!("{n}/{}", c.streams),
        None => "—".to_owned(),
    };
    let head = format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} |",
        c.layout,
        c.mode,
        c.streams,
        c.server,
        result.groups,
        result.connections,
        affected,
        result.sync.as_secs_f64(),
        ms(median(&result.emitted)),
        ms(l.worst_round),
        ms(l.p50),
        ms(l.p99),
        ms(l.max),
    );
    let tail = format!(
        "| {:.0} / {} | {:.0} → {:.0}{} | {} | {} | {} |",
        ms(median(&result.server_cpu)),
        if result.client_cpu.is_empty() {
            "in process".to_owned()
        } else {
            format!("{:.0}", ms(median(&result.client_cpu)))
        },
        result.rss_before as f64 / MIB,
        result.rss_synced() as f64 / MIB,
        memory_note,
        per_stream,
        unaffected,
        status,
    );
    (head, tail)
}

/// The header of the table [`storm_row`] fills.
pub const STORM_HEADER: &str = "| storm | mode | streams | server | groups | conns | writes (sent in, ms) | restarted server had every stream (s) | every stream back (s) | last response (s) | → every proxy at the final state (s) | responses per proxy, avg / max: CDS · EDS · LDS · RDS | resources received / already held: CDS · EDS · LDS · RDS | proxies exact | server RSS synced → storm peak (MiB) |\n\
|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|";

/// One storm as a Markdown table row (seconds from the storm's zero: the restarted server
/// accepting, or the last write acknowledged).
pub fn storm_row(result: &crate::storm::StormResult) -> String {
    let (c, r) = (&result.config, &result.report);
    let since = |t: u64| {
        if t == 0 {
            "—".to_owned()
        } else {
            format!("{:.2}", t.saturating_sub(result.start) as f64 / 1e9)
        }
    };
    let streams = r.streams.max(1) as f64;
    let responses = r
        .responses
        .iter()
        .map(|(sum, max)| format!("{:.1} / {max}", *sum as f64 / streams))
        .collect::<Vec<_>>()
        .join(" · ");
    let resources = r
        .resources
        .iter()
        .map(|(got, held)| format!("{got} / {held}"))
        .collect::<Vec<_>>()
        .join(" · ");
    let writes = match result.writes {
        (0, _) => "—".to_owned(),
        (n, ns) => format!("{n} ({:.0})", ms(ns)),
    };
    let back = match c.storm {
        crate::storm::Storm::Reconnect => {
            format!(
                "{} ({}/{})",
                since(r.reconnected.1),
                r.reconnected.0,
                r.streams
            )
        }
        crate::storm::Storm::Registry => "—".to_owned(),
    };
    format!(
        "| {} | {} | {} | control-plane | {} | {} | {writes} | {} | {back} | {} | {:.2} | {responses} | {resources} | {}/{} | {:.0} → {:.0} |",
        c.storm,
        c.mode,
        c.streams,
        result.groups,
        result.connections,
        result.server_ready.map_or("—".to_owned(), since),
        since(r.last_response),
        result.final_state() as f64 / 1e9,
        r.exact,
        r.streams,
        result.rss.0 as f64 / MIB,
        result.rss.1 as f64 / MIB,
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

    #[test]
    fn latency_lines_round_trip_and_ratios_divide_by_the_floor() {
        let m = Latency {
            p50: 1,
            p99: 300,
            max: 400,
            worst_round: 500,
        };
        let line = latency_line(&m);
        assert_eq!(parse_latency_line(&line), Some(m));
        assert_eq!(parse_latency_line("1 2"), None);
        let f = Latency {
            p99: 100,
            worst_round: 250,
            ..m
        };
        assert_eq!(floor_ratio(&m, &f), (2.0, 3.0));
        assert_eq!(
            floor_cell(ServerKind::Meshplane, Some(&m), Some(&f)),
            "2.0× / 3.0×"
        );
        assert_eq!(floor_cell(ServerKind::Floor, Some(&f), None), "—");
    }
}
