//! What the benchmark reads from the operating system: a clock both processes share, the
//! resident memory of this process, and the open-files limit.

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
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/self/status (is this Linux?)")?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("parsing VmRSS")?;
    Ok(kib * 1024)
}

/// Memory the kernel reports as available for new work (`MemAvailable`), in bytes.
pub fn mem_available_bytes() -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let line = info
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .context("no MemAvailable line in /proc/meminfo")?;
    let kib: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .context("parsing MemAvailable")?;
    Ok(kib * 1024)
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
