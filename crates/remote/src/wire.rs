//! The sync format: one datacenter's local instances as JSON, per service, versioned by
//! content, as a full state or as the changes since a version the follower holds.
//!
//! ```json
//! {"datacenter":"dc2","version":"5f0c…","services":{"payments":[{"id":"payments-1",…}]}}
//! {"datacenter":"dc2","version":"77ab…","since":"5f0c…","services":{"payments":[…]},"removed":["ledger"]}
//! ```
//!
//! Each service's instances are [`Instance`]s in their usual JSON shape, sorted by id. A
//! service's hash is the xxh3-128 of its array's bytes; the state's version is the xxh3-128 of
//! every service's name and hash in name order. So every control plane of a datacenter holding
//! the same state answers the same version (a follower can move between them and keep its
//! `If-None-Match`), and a follower checks a change set against the version it announces:
//! applied to the hashes it holds, it must give exactly that version.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use meshplane_model::{Instance, ServiceName};
use meshplane_registry::{Changes, Snapshot};
use serde::Deserialize;

/// One service's local instances, encoded.
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceExport {
    /// xxh3-128 of `json`.
    hash: u128,
    /// The JSON array of its instances.
    json: Bytes,
}

/// A datacenter's local state, ready to serve in full or as changes since an older one.
#[derive(Debug)]
pub struct Export {
    /// The store index it was built from.
    pub(crate) index: u64,
    /// Content version (hex), also the `ETag`.
    pub version: String,
    datacenter: Arc<str>,
    services: BTreeMap<ServiceName, Arc<ServiceExport>>,
    /// The full JSON body (built on first use).
    json: OnceLock<Bytes>,
    /// The same, gzip-compressed (built on first use).
    gzip: OnceLock<Bytes>,
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
    /// An instance is listed under another service than its own.
    #[error("instance `{id}` of `{service}` is listed under `{listed}`")]
    MisplacedInstance {
        /// The instance.
        id: String,
        /// Its service.
        service: String,
        /// Where it was listed.
        listed: String,
    },
    /// A change set for a version the follower does not hold.
    #[error("changes since {since}, but this follower holds {held}")]
    WrongBase {
        /// The version the changes start from.
        since: String,
        /// What the follower holds.
        held: String,
    },
    /// The version does not match the content (corrupted, or a change set that does not
    /// apply to what the follower holds).
    #[error("version {got} does not match the content ({computed})")]
    Version {
        /// Announced.
        got: String,
        /// Computed.
        computed: String,
    },
}

/// What a follower holds of a remote datacenter: every service's hash, and the version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Held {
    /// Version of the whole state.
    pub version: String,
    hashes: BTreeMap<ServiceName, u128>,
}

/// A checked answer: the services to replace (an empty list removes one) and the version the
/// follower holds once they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Whether this is the full state (every other service of the datacenter is gone).
    pub full: bool,
    /// Services and their complete instance lists; an empty list removes the service.
    pub services: BTreeMap<ServiceName, Vec<Instance>>,
    /// What the follower holds afterwards.
    pub held: Held,
}

// === impl Export ===

impl Export {
    /// The instances of `datacenter` in `snapshot` (instances the registry places in other
    /// datacenters, e.g. learned from them, are never re-exported). With `previous`, only the
    /// services changed since it are encoded again.
    pub fn build(datacenter: &str, snapshot: &Snapshot, previous: Option<&Export>) -> Export {
        let changed = match previous {
            Some(p) if &*p.datacenter == datacenter => match snapshot.changed_since(p.index) {
                Changes::Services(names) => Some((p, names)),
                Changes::All => None,
            },
            _ => None,
        };
        let encode = |name: &ServiceName| {
            let entry = snapshot.services.get(name)?;
            let local: Vec<&Instance> = entry
                .instances
                .iter()
                .filter(|i| i.locality.datacenter == datacenter)
                .collect();
            if local.is_empty() {
                return None;
            }
            // Serializing model types to a Vec cannot fail (string keys, no custom serializers).
            let json = serde_json::to_vec(&local).unwrap_or_else(|_| b"[]".to_vec());
            Some(Arc::new(ServiceExport {
                hash: xxhash_rust::xxh3::xxh3_128(&json),
                json: Bytes::from(json),
            }))
        };
        let services = match changed {
            Some((previous, names)) => {
                let mut services = previous.services.clone();
                for name in &names {
                    match encode(name) {
                        Some(s) => services.insert(name.clone(), s),
                        None => services.remove(name),
                    };
                }
                services
            }
            None => snapshot
                .services
                .keys()
                .filter_map(|name| Some((name.clone(), encode(name)?)))
                .collect(),
        };
        let version = version_of(services.iter().map(|(n, s)| (n, s.hash)));
        Export {
            index: snapshot.index,
            version,
            datacenter: Arc::from(datacenter),
            services,
            json: OnceLock::new(),
            gzip: OnceLock::new(),
        }
    }

    /// Takes over `older`'s encoded bodies when it is the same state (only other
    /// datacenters' instances changed), so they are not encoded and compressed again.
    pub(crate) fn keep_bodies_of(&self, older: &Export) {
        if older.version != self.version {
            return;
        }
        if let Some(json) = older.json.get() {
            let _ = self.json.set(json.clone());
        }
        if let Some(gzip) = older.gzip.get() {
            let _ = self.gzip.set(gzip.clone());
        }
    }

    /// Number of services in it.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The full state's JSON body.
    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| self.body(None, self.services.iter(), &[]))
            .clone()
    }

    /// The full body gzip-compressed, compressed once per state.
    pub fn gzip(&self) -> Bytes {
        self.gzip.get_or_init(|| gzip(&self.json())).clone()
    }

    /// The changes from `older` to this one, as a body, or `None` when they are the same
    /// state.
    pub fn changes_since(&self, older: &Export) -> Option<Bytes> {
        if older.version == self.version {
            return None;
        }
        let changed = self
            .services
            .iter()
            .filter(|(n, s)| older.services.get(*n).is_none_or(|o| o.hash != s.hash));
        let removed: Vec<&ServiceName> = older
            .services
            .keys()
            .filter(|n| !self.services.contains_key(*n))
            .collect();
        Some(self.body(Some(&older.version), changed, &removed))
    }

    fn body<'a>(
        &self,
        since: Option<&str>,
        services: impl Iterator<Item = (&'a ServiceName, &'a Arc<ServiceExport>)>,
        removed: &[&ServiceName],
    ) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"datacenter\":");
        push_json(&mut out, &*self.datacenter);
        out.extend_from_slice(format!(",\"version\":\"{}\"", self.version).as_bytes());
        if let Some(since) = since {
            out.extend_from_slice(format!(",\"since\":\"{since}\"").as_bytes());
        }
        out.extend_from_slice(b",\"services\":{");
        for (n, (name, service)) in services.enumerate() {
            if n > 0 {
                out.push(b',');
            }
            push_json(&mut out, name);
            out.push(b':');
            out.extend_from_slice(&service.json);
        }
        out.push(b'}');
        if since.is_some() {
            out.extend_from_slice(b",\"removed\":");
            push_json(&mut out, &removed);
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings and lists of names always serialize.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// gzip, fast: the body is compressed once and sent to every follower.
pub fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

fn version_of<'a>(services: impl Iterator<Item = (&'a ServiceName, u128)>) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, hash) in services {
        hasher.update(name.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(&hash.to_le_bytes());
    }
    format!("{:032x}", hasher.digest128())
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
    since: Option<String>,
    #[serde(borrow)]
    services: BTreeMap<ServiceName, &'a serde_json::value::RawValue>,
    #[serde(default)]
    removed: Vec<ServiceName>,
}

/// Parses and checks `datacenter`'s answer (already inflated) against what the follower
/// `held`.
pub fn decode(datacenter: &str, held: &Held, json: &[u8]) -> Result<Update, WireError> {
    let body: Body<'_> = serde_json::from_slice(json)?;
    if body.datacenter != datacenter {
        return Err(WireError::WrongDatacenter {
            expected: datacenter.to_owned(),
            got: body.datacenter,
        });
    }
    let full = body.since.is_none();
    let mut hashes = match &body.since {
        None => BTreeMap::new(),
        Some(since) if *since == held.version => held.hashes.clone(),
        Some(since) => {
            return Err(WireError::WrongBase {
                since: since.clone(),
                held: held.version.clone(),
            });
        }
    };
    let mut services = BTreeMap::new();
    for (name, raw) in body.services {
        let instances: Vec<Instance> = serde_json::from_str(raw.get())?;
        for i in &instances {
            if i.service != name {
                return Err(WireError::MisplacedInstance {
                    id: i.id.to_string(),
                    service: i.service.to_string(),
                    listed: name.to_string(),
                });
            }
            if i.locality.datacenter != datacenter {
                return Err(WireError::ForeignInstance {
                    id: i.id.to_string(),
                    service: i.service.to_string(),
                    got: i.locality.datacenter.clone(),
                    expected: datacenter.to_owned(),
                });
            }
        }
        hashes.insert(
            name.clone(),
            xxhash_rust::xxh3::xxh3_128(raw.get().as_bytes()),
        );
        services.insert(name, instances);
    }
    for name in body.removed {
        hashes.remove(&name);
        services.insert(name, Vec::new());
    }
    let computed = version_of(hashes.iter().map(|(n, h)| (n, *h)));
    if computed != body.version {
        return Err(WireError::Version {
            got: body.version,
            computed,
        });
    }
    Ok(Update {
        full,
        services,
        held: Held {
            version: body.version,
            hashes,
        },
    })
}

#[cfg(test)]
mod tests;
