//! The sync format: one datacenter's local instances as JSON, versioned by their content.
//!
//! ```json
//! {"datacenter":"dc2","version":"5f0c…","instances":[{"id":"payments-1","service":"payments",…}]}
//! ```
//!
//! `instances` are [`Instance`]s in their usual JSON shape, sorted by service then id; the
//! version is the xxh3-128 of that array's bytes, so every control plane of a datacenter
//! that holds the same state answers the same version (a follower can move between them and
//! keep its `If-None-Match`).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use bytes::Bytes;
use meshplane_model::{Instance, ServiceName};
use meshplane_registry::Snapshot;
use serde::Deserialize;

/// A datacenter's local state, ready to serve.
#[derive(Debug)]
pub struct Export {
    /// The store index it was built from.
    pub(crate) index: u64,
    /// Content version (hex), also the `ETag`.
    pub version: String,
    /// Number of instances in it.
    pub instances: usize,
    /// The JSON body.
    pub json: Bytes,
    /// The same, gzip-compressed (built on first use).
    gzip: std::sync::OnceLock<Bytes>,
}

/// Why an answer from a remote datacenter was refused. Its previous state is kept.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The body is larger than the configured limit (compressed or inflated).
    #[error("answer larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not gzip, or truncated.
    #[error("cannot inflate the gzip body: {0}")]
    Gzip(std::io::Error),
    /// Not the sync format.
    #[error("not a datacenter state: {0}")]
    Json(#[from] serde_json::Error),
    /// The answer is another datacenter's.
    #[error("the answer is datacenter `{got}`'s, expected `{expected}`")]
    WrongDatacenter {
        /// The datacenter configured for this URL.
        expected: String,
        /// The one the answer names.
        got: String,
    },
    /// An instance is not in the answering datacenter: only local state is exported, so this
    /// would be re-exported state (a loop) or a broken peer.
    #[error("instance `{id}` of `{service}` is in datacenter `{got}`, not `{expected}`")]
    ForeignInstance {
        /// The instance.
        id: String,
        /// Its service.
        service: String,
        /// The datacenter it names.
        got: String,
        /// The answering datacenter.
        expected: String,
    },
    /// The version does not match the content (corrupted or hand-made).
    #[error("version {got} does not match the content ({computed})")]
    Version {
        /// Announced.
        got: String,
        /// Computed from the instances.
        computed: String,
    },
}

/// A remote datacenter's state, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteState {
    /// Content version.
    pub version: String,
    /// Its services and their instances.
    pub services: BTreeMap<ServiceName, Vec<Instance>>,
}

// === impl Export ===

impl Export {
    /// The instances of `datacenter` in `snapshot` (instances the registry places in other
    /// datacenters, e.g. learned from them, are never re-exported).
    pub fn build(datacenter: &str, snapshot: &Snapshot) -> Export {
        let local: Vec<&Instance> = snapshot
            .services
            .values()
            .flat_map(|entry| entry.instances.iter())
            .filter(|i| i.locality.datacenter == datacenter)
            .collect();
        // Serializing model types to a Vec cannot fail (string keys, no custom serializers).
        let instances = serde_json::to_vec(&local).unwrap_or_else(|_| b"[]".to_vec());
        let version = version_of(&instances);
        let mut json = Vec::with_capacity(instances.len() + 128);
        json.extend_from_slice(b"{\"datacenter\":");
        json.extend_from_slice(
            serde_json::to_string(datacenter)
                .unwrap_or_default()
                .as_bytes(),
        );
        json.extend_from_slice(format!(",\"version\":\"{version}\",\"instances\":").as_bytes());
        json.extend_from_slice(&instances);
        json.push(b'}');
        Export {
            index: snapshot.index,
            version,
            instances: local.len(),
            json: Bytes::from(json),
            gzip: std::sync::OnceLock::new(),
        }
    }

    /// The body gzip-compressed, compressed once per state.
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                // Writing into a Vec cannot fail.
                let _ = encoder.write_all(&self.json);
                Bytes::from(encoder.finish().unwrap_or_default())
            })
            .clone()
    }

    /// The same content under a newer store index.
    pub(crate) fn reindexed(&self, index: u64) -> Export {
        let gzip = std::sync::OnceLock::new();
        if let Some(g) = self.gzip.get() {
            let _ = gzip.set(g.clone());
        }
        Export {
            index,
            version: self.version.clone(),
            instances: self.instances,
            json: self.json.clone(),
            gzip,
        }
    }
}

fn version_of(instances: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(instances))
}

/// Inflates a gzip body, refusing to grow past `limit` bytes.
pub fn inflate(body: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(WireError::Gzip)?;
    if out.len() > limit {
        return Err(WireError::TooLarge { limit });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    datacenter: String,
    version: String,
    #[serde(borrow)]
    instances: &'a serde_json::value::RawValue,
}

/// Parses and checks `datacenter`'s answer (already inflated).
pub fn decode(datacenter: &str, json: &[u8]) -> Result<RemoteState, WireError> {
    let body: Body<'_> = serde_json::from_slice(json)?;
    if body.datacenter != datacenter {
        return Err(WireError::WrongDatacenter {
            expected: datacenter.to_owned(),
            got: body.datacenter,
        });
    }
    let computed = version_of(body.instances.get().as_bytes());
    if computed != body.version {
        return Err(WireError::Version {
            got: body.version,
            computed,
        });
    }
    let instances: Vec<Instance> = serde_json::from_str(body.instances.get())?;
    let mut services: BTreeMap<ServiceName, Vec<Instance>> = BTreeMap::new();
    for instance in instances {
        if instance.locality.datacenter != datacenter {
            return Err(WireError::ForeignInstance {
                id: instance.id.to_string(),
                service: instance.service.to_string(),
                got: instance.locality.datacenter,
                expected: datacenter.to_owned(),
            });
        }
        services
            .entry(instance.service.clone())
            .or_default()
            .push(instance);
    }
    Ok(RemoteState {
        version: body.version,
        services,
    })
}

#[cfg(test)]
mod tests;
