//! Go-style durations (`10s`, `1m30s`, `500ms`), the format Consul uses for `TTL`, `Interval`,
//! `Timeout`, `DeregisterCriticalServiceAfter` and the `wait` query parameter.
//!
//! Deliberately not `meshplane_model::descriptor::parse_duration` (the one parser for
//! Meshplane's own flags, config and descriptor): this is Consul's wire format, which clients
//! write with fractions (`1.5s`), `ns`/`us` units and bare seconds (`wait=10`), and which must
//! be echoed back the way Go prints it. Meshplane's own text (`10s`, `1500ms`) is a subset of
//! it, so the sidecar writes its check times with `meshplane_model`'s `format_duration`.

use std::time::Duration;

/// Parses a Go duration string. A bare number is taken as seconds (Consul accepts that for
/// `wait`). Returns `None` for anything else.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_nanos((value * nanos_per_unit) as u64);
    }
    Some(total)
}

/// Formats a duration the way Go's `time.Duration.String()` does for whole units (`10s`,
/// `1m30s`, `500ms`), which is how Consul echoes check definitions back.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = ms % 1000;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac > 0 {
        let frac = format!("{frac:03}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse(""), None);
        assert_eq!(parse("10x"), None);
        assert_eq!(parse("s"), None);
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_millis(10_500)), "10.5s");
    }
}
