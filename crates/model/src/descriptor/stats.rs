//! `stats`: which Envoy statistics a service's sidecar keeps. Only the sidecar reads it (it
//! becomes the bootstrap's stats matcher); the control plane accepts and ignores it.
//!
//! The mesh keeps a fixed list (the sidecar's `stats` module) that everything Meshplane reads
//! relies on, so a service can add to it or keep everything, never remove from it.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::DescriptorError;

/// Which statistics Envoy creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stats {
    /// The mesh's list, plus these patterns (the default: the mesh's list alone).
    Mesh(Vec<StatsPattern>),
    /// Every statistic, created as Envoy does without a matcher (`include: all`).
    All,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::Mesh(Vec::new())
    }
}

/// A statistic-name pattern (Envoy's `StringMatcher`, over the full name such as
/// `cluster.payments.upstream_rq_total`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsPattern {
    /// Names starting with this.
    Prefix(String),
    /// Names ending with this.
    Suffix(String),
    /// Exactly this name.
    Exact(String),
    /// Names containing this.
    Contains(String),
    /// Names matching this RE2 regular expression (whole name).
    Regex(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStats {
    #[serde(default)]
    include: Option<RawInclude>,
}

/// `include: all`, or a list of patterns.
enum RawInclude {
    Keyword(String),
    Patterns(Vec<RawPattern>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    contains: Option<String>,
    #[serde(default)]
    regex: Option<String>,
}

// A hand-written visitor rather than `#[serde(untagged)]`: an untagged enum loses the field
// path and says only "did not match any variant"; this one names what it expected.
impl<'de> Deserialize<'de> for RawInclude {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IncludeVisitor;
        impl<'de> Visitor<'de> for IncludeVisitor {
            type Value = RawInclude;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`all` or a list of patterns")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawInclude, E> {
                Ok(RawInclude::Keyword(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawInclude, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(RawInclude::Patterns)
            }
        }
        deserializer.deserialize_any(IncludeVisitor)
    }
}

impl RawStats {
    pub(super) fn validate(self) -> Result<Stats, DescriptorError> {
        match self.include {
            None => Ok(Stats::default()),
            Some(RawInclude::Keyword(k)) if k == "all" => Ok(Stats::All),
            Some(RawInclude::Keyword(k)) => Err(DescriptorError::field(
                "stats.include",
                format!(
                    "`{k}` is not a choice; use `all` (every statistic Envoy has) or a list of \
                     patterns kept on top of the mesh's list, e.g. [{{ prefix: \"vhost.\" }}]"
                ),
            )),
            Some(RawInclude::Patterns(patterns)) => patterns
                .into_iter()
                .enumerate()
                .map(|(i, p)| p.validate(&format!("stats.include[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Stats::Mesh),
        }
    }
}

impl RawPattern {
    fn validate(self, at: &str) -> Result<StatsPattern, DescriptorError> {
        let pattern = match (
            self.prefix,
            self.suffix,
            self.exact,
            self.contains,
            self.regex,
        ) {
            (Some(p), None, None, None, None) => StatsPattern::Prefix(p),
            (None, Some(s), None, None, None) => StatsPattern::Suffix(s),
            (None, None, Some(e), None, None) => StatsPattern::Exact(e),
            (None, None, None, Some(c), None) => StatsPattern::Contains(c),
            (None, None, None, None, Some(r)) => {
                // Envoy compiles it with RE2, whose syntax is (nearly) `regex-syntax`'s: a typo
                // is reported here rather than as an Envoy that refuses its bootstrap.
                if let Err(e) = regex_syntax::Parser::new().parse(&r) {
                    return Err(DescriptorError::field(
                        format!("{at}.regex"),
                        format!(
                            "not a valid regular expression: {}",
                            super::raw::last_line(&e.to_string())
                        ),
                    ));
                }
                StatsPattern::Regex(r)
            }
            _ => {
                return Err(DescriptorError::field(
                    at,
                    "set exactly one of `prefix`, `suffix`, `exact`, `contains` or `regex`",
                ));
            }
        };
        let text = match &pattern {
            StatsPattern::Prefix(t)
            | StatsPattern::Suffix(t)
            | StatsPattern::Exact(t)
            | StatsPattern::Contains(t)
            | StatsPattern::Regex(t) => t,
        };
        if text.is_empty() {
            return Err(DescriptorError::field(
                at,
                "an empty pattern matches every statistic; write `include: all` for that",
            ));
        }
        Ok(pattern)
    }
}
