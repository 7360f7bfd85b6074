//! Consul writes empty lists and maps as `null` in some responses and versions (Go's nil
//! slices and maps); these read them as empty.

use serde::{Deserialize, Deserializer};

/// `null` (or an absent field, with `#[serde(default)]`) reads as `T::default()`.
pub fn as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A weight given as `null` reads as Consul's default weight, 1.
pub fn as_one<'de, D>(deserializer: D) -> Result<u32, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<u32>::deserialize(deserializer)?.unwrap_or(1))
}
