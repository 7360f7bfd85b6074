//! The few calls of Consul's KV HTTP API the flags need: read one key (optionally blocking on
//! the KV index), list a prefix, and write with check-and-set. Spoken the same way to Consul
//! and to Meshplane's embedded registry, which serves the same API.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::StoreError;

/// Where the KV API is and how to reach it.
#[derive(Clone)]
pub struct KvConfig {
    /// Base URL, e.g. `http://127.0.0.1:8500`.
    pub address: String,
    /// Sent as `X-Consul-Token` (the registry's or Consul's ACL token).
    pub token: Option<String>,
    /// A CA bundle (PEM) to trust for `https://`.
    pub ca_pem: Option<Vec<u8>>,
    /// The exact certificate (PEM) the server presents, trusted instead of a CA: the control
    /// plane's own embedded registry (`--registry-tls-cert`).
    pub pinned_cert_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for KvConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("KvConfig")
            .field("address", &self.address)
            .field("token_set", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// One key's value and the index of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvValue {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) modify_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

/// A Consul KV client.
#[derive(Debug, Clone)]
pub(crate) struct Kv {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// How long a request may take beyond a blocking query's own wait.
const REQUEST_SLACK: Duration = Duration::from_secs(10);

impl Kv {
    pub(crate) fn new(config: KvConfig) -> Result<Kv, StoreError> {
        let base = config.address.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(StoreError::Config(format!(
                "KV address {base:?}: use a URL such as http://127.0.0.1:8500"
            )));
        }
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(pem) = &config.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| StoreError::Config(format!("KV CA bundle: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &config.pinned_cert_pem {
            builder = builder.tls_backend_preconfigured(crate::pinned::client_config(pem)?);
        }
        let http = builder
            .build()
            .map_err(|e| StoreError::Config(format!("KV client: {e}")))?;
        Ok(Kv {
            base,
            token: config.token,
            http,
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}/v1/kv/{key}", self.base)
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.header("X-Consul-Token", t),
            None => r,
        }
    }

    /// `key`'s value (`None` when absent) and the KV index; with `block`, waits up to its
    /// duration for the index to move past the given one.
    pub(crate) async fn get(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(Option<KvValue>, u64), StoreError> {
        let mut url = self.url(key);
        let mut timeout = REQUEST_SLACK;
        if let Some((index, wait)) = block {
            url = format!("{url}?index={index}&wait={}ms", wait.as_millis());
            timeout += wait + wait / 16;
        }
        let resp = self
            .request(reqwest::Method::GET, url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| StoreError::Kv(format!("reading {key}: {e}")))?;
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok((None, index));
        }
        let entries: Vec<Entry> = checked(resp, key)
            .await?
            .json()
            .await
            .map_err(|e| StoreError::Kv(format!("reading {key}: not Consul's KV JSON: {e}")))?;
        let value = entries
            .into_iter()
            .find(|e| e.key == key)
            .map(decode)
            .transpose()?;
        Ok((value, index))
    }

    /// Every key under `prefix`, in key order.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<KvValue>, StoreError> {
        let resp = self
            .request(
                reqwest::Method::GET,
                format!("{}?recurse", self.url(prefix)),
            )
            .timeout(REQUEST_SLACK)
            .send()
            .await
            .map_err(|e| StoreError::Kv(format!("listing {prefix}: {e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let entries: Vec<Entry> =
            checked(resp, prefix).await?.json().await.map_err(|e| {
                StoreError::Kv(format!("listing {prefix}: not Consul's KV JSON: {e}"))
            })?;
        let mut values = entries
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        values.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(values)
    }

    /// Writes `value` at `key` if its modify index is still `cas` (`0`: only if absent);
    /// `false` when it is not.
    pub(crate) async fn put_cas(
        &self,
        key: &str,
        value: Vec<u8>,
        cas: u64,
    ) -> Result<bool, StoreError> {
        let resp = self
            .request(reqwest::Method::PUT, format!("{}?cas={cas}", self.url(key)))
            .timeout(REQUEST_SLACK)
            .body(value)
            .send()
            .await
            .map_err(|e| StoreError::Kv(format!("writing {key}: {e}")))?;
        let body = checked(resp, key)
            .await?
            .text()
            .await
            .map_err(|e| StoreError::Kv(format!("writing {key}: {e}")))?;
        match body.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(StoreError::Kv(format!(
                "writing {key}: expected true or false, got {other:?}"
            ))),
        }
    }
}

async fn checked(resp: reqwest::Response, key: &str) -> Result<reqwest::Response, StoreError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(StoreError::Kv(format!(
        "{key}: the KV API answered {status}: {}",
        body.trim()
    )))
}

fn decode(e: Entry) -> Result<KvValue, StoreError> {
    let value = match e.value {
        Some(v) => base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|err| StoreError::Kv(format!("{}: value is not base64: {err}", e.key)))?,
        None => Vec::new(),
    };
    Ok(KvValue {
        key: e.key,
        value,
        modify_index: e.modify_index,
    })
}
