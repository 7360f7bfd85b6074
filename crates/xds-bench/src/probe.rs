//! What the benchmark reads from the operating system: a clock both processes share, the
//! resident memory of this process (and the peak of another), and the open-files limit.

use anyhow::Context;
use rustix::process::{Resource, getrlimit, setrlimit};
use rustix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_MONOTONIC`. The server and the client child are separate processes
/// on one machine, so they share this clock: the client reports ACK times in it and the
/// server subtracts its publish time.
pub fn mono_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// Resident set size of this process in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> anyhow::Result<u64> {
    kib_field("/proc/self/status", "VmRSS").map(|kib| kib * 1024)
}

/// Peak resident set size of process `pid` over its life so far, in bytes (`VmHWM` in
/// `/proc/<pid>/status`): what a control-plane process needed at most.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmHWM").map(|kib| kib * 1024)
}

/// The `field:   N kB` line of a `/proc` file, in KiB.
fn kib_field(path: &str, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no {field} line in {path} (is this Linux?)"))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing {field} in {path}"))
}

/// Memory the kernel reports as available for new work (`MemAvailable`), in bytes.
pub fn mem_available_bytes() -> anyhow::Result<u64> {
    kib_field("/proc/meminfo", "MemAvailable").map(|kib| kib * 1024)
}

/// CPU time (user + system, every thread) this process has used, in nanoseconds, from
/// `/proc/self/stat` (clock-tick resolution, usually 10 ms).
pub fn cpu_ns() -> anyhow::Result<u64> {
    cpu_ns_of("self")
}

/// [`cpu_ns`] of another process (`pid`, or `self`).
pub fn cpu_ns_of(pid: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/self/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()
        .context("parsing CPU ticks")?;
    Ok(ticks * 1_000_000_000 / rustix::param::clock_ticks_per_second().max(1))
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
/// Each HTTP/2 connection costs one descriptor on each side.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).context("raising RLIMIT_NOFILE")?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_sensible_values() {
        let a = mono_ns();
        assert!(mono_ns() >= a);
        assert!(rss_bytes().expect("rss") > 1024 * 1024);
        assert!(cpu_ns().is_ok());
        assert!(mem_available_bytes().expect("meminfo") > 0);
        assert!(raise_nofile_limit().expect("limit") >= 64);
    }
}
