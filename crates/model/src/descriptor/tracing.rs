//! `tracing` in the descriptor: how many of the service's requests its Envoy traces.

use serde::Serialize;

use super::DescriptorError;

/// What the sidecar's Envoy traces, when the control plane has a tracing collector
/// (`--tracing-collector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Tracing {
    /// Share of the requests that start a trace here, replacing the control plane's
    /// `--tracing-sampling`; `None`: the control plane's.
    pub sampling: Option<Percent>,
}

/// A percentage from 0 to 100, kept in millionths of a percent so that it compares and
/// hashes exactly (it is part of a proxy group's identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "f64")]
pub struct Percent(u32);

impl<'de> serde::Deserialize<'de> for Percent {
    /// A number from 0 to 100.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(d)?;
        Percent::new(value).ok_or_else(|| {
            serde::de::Error::custom(format!("{value} is not a percentage from 0 to 100"))
        })
    }
}

impl Percent {
    const SCALE: f64 = 1_000_000.0;

    /// 100 %.
    pub const ALL: Percent = Percent(100_000_000);

    /// `value` percent, if it is a number from 0 to 100.
    pub fn new(value: f64) -> Option<Percent> {
        (value.is_finite() && (0.0..=100.0).contains(&value))
            // In range, so the product fits in u32 (at most 10^8).
            .then(|| Percent((value * Self::SCALE).round() as u32))
    }

    /// Millionths of a percent: 0 to 100,000,000.
    pub fn millionths(self) -> u32 {
        self.0
    }

    /// The percentage.
    pub fn value(self) -> f64 {
        f64::from(self.0) / Self::SCALE
    }

    /// Parses a flag's or a file's text (`1`, `0.5`, `100`).
    pub fn parse(text: &str) -> Result<Percent, String> {
        text.trim()
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
            .and_then(Percent::new)
            .ok_or_else(|| format!("`{text}` is not a percentage from 0 to 100"))
    }
}

impl From<Percent> for f64 {
    fn from(p: Percent) -> f64 {
        p.value()
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.value())
    }
}

/// `tracing` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTracing {
    #[serde(default)]
    sampling: Option<f64>,
}

impl RawTracing {
    pub(super) fn validate(self) -> Result<Tracing, DescriptorError> {
        let sampling = self
            .sampling
            .map(|s| {
                Percent::new(s).ok_or_else(|| {
                    DescriptorError::field(
                        "tracing.sampling",
                        format!(
                            "{s} is not a percentage: use a number from 0 to 100, e.g. 1 or 0.5"
                        ),
                    )
                })
            })
            .transpose()?;
        Ok(Tracing { sampling })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(Percent::new(100.0), Some(Percent::ALL));
        assert_eq!(Percent::new(0.5).map(Percent::value), Some(0.5));
        assert_eq!(Percent::new(0.000_001).map(Percent::value), Some(0.000_001));
        assert_eq!(Percent::new(-1.0), None);
        assert_eq!(Percent::new(100.1), None);
        assert_eq!(Percent::new(f64::NAN), None);
        assert_eq!(Percent::parse("12.5%").map(Percent::value), Ok(12.5));
        assert!(Percent::parse("lots").is_err());
    }
}
