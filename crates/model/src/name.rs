use std::{borrow::Borrow, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize};

/// The longest service name accepted, in bytes (a DNS label chain stays within this).
pub const MAX_SERVICE_NAME_LEN: usize = 253;

/// A validated service name: 1–253 bytes of ASCII letters, digits, `-`, `_` and `.`.
///
/// The same character set Consul recommends for DNS-compatible names; anything else would
/// produce Envoy cluster names and SPIFFE ids that do not round-trip.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

/// Why a string is not a valid [`ServiceName`] or instance id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("service name is empty: give the service a name such as `payments`")]
    Empty,
    /// The name is longer than [`MAX_SERVICE_NAME_LEN`].
    #[error("service name `{name}` is {len} bytes long; use at most {MAX_SERVICE_NAME_LEN}")]
    TooLong {
        /// The rejected name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains a character outside `[A-Za-z0-9._-]`.
    #[error(
        "service name `{name}` contains {found:?}; use only ASCII letters, digits, `-`, `_` and `.`"
    )]
    InvalidChar {
        /// The rejected name.
        name: String,
        /// The first offending character.
        found: char,
    },
    /// An instance id was empty.
    #[error("instance id is empty: give every instance a unique id")]
    EmptyInstanceId,
}

// === impl ServiceName ===

impl ServiceName {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_SERVICE_NAME_LEN {
            let len = name.len();
            return Err(NameError::TooLong { name, len });
        }
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(NameError::InvalidChar { name, found });
        }
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ServiceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_like_names() {
        for ok in ["payments", "a", "web-1", "orders_v2", "api.internal"] {
            assert_eq!(
                ServiceName::new(ok).map(|n| n.to_string()),
                Ok(ok.to_string())
            );
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        assert_eq!(ServiceName::new(""), Err(NameError::Empty));
        assert!(matches!(
            ServiceName::new("has space"),
            Err(NameError::InvalidChar { found: ' ', .. })
        ));
        assert!(matches!(
            ServiceName::new("x".repeat(254)),
            Err(NameError::TooLong { len: 254, .. })
        ));
    }

    #[test]
    fn deserialize_validates() {
        let err = serde_json_like("\"a/b\"");
        assert!(err.is_err());
    }

    fn serde_json_like(s: &str) -> Result<ServiceName, String> {
        // A minimal deserializer so this crate needs no JSON dependency.
        let inner = s.trim_matches('"').to_string();
        let de = serde::de::value::StringDeserializer::<serde::de::value::Error>::new(inner);
        ServiceName::deserialize(de).map_err(|e| e.to_string())
    }
}
