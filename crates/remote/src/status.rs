//! What this control plane knows of each remote datacenter it follows, for the admin API
//! (`GET /api/datacenters`) and the panel: whether it is fresh, since when it has not
//! answered, what it holds of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

/// The state of one followed datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowState {
    /// No answer yet since this control plane started.
    Connecting,
    /// Its last request was answered: what is held is current.
    Fresh,
    /// No usable answer lately: its last state is kept (until `keep_stale` has passed).
    Stale,
    /// No answer for longer than `keep_stale`: its instances were dropped.
    Dropped,
}

#[derive(Debug, Clone)]
struct Entry {
    urls: Vec<String>,
    url: String,
    state: FollowState,
    reason: Option<String>,
    version: Option<String>,
    services: usize,
    instances: usize,
    last_answer: Option<Instant>,
    keep_stale: Duration,
}

/// Every followed datacenter's status; cloned into each [`crate::RemoteSource`] and the
/// routes.
#[derive(Debug, Clone, Default)]
pub struct Followed(Arc<Mutex<BTreeMap<String, Entry>>>);

/// One followed datacenter, as `GET /api/datacenters` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatacenterView {
    /// Its name.
    pub datacenter: String,
    /// Fresh, stale, dropped, or not answered yet.
    pub state: FollowState,
    /// Why it is not fresh (the last error).
    pub reason: Option<String>,
    /// The control plane asked now (or next).
    pub url: String,
    /// Every control plane of it this one may ask.
    pub urls: Vec<String>,
    /// Version of the state held.
    pub version: Option<String>,
    /// Services and instances held of it.
    pub services: usize,
    /// Instances held.
    pub instances: usize,
    /// Seconds since its last answer (`null`: none yet).
    pub last_answer_seconds: Option<f64>,
    /// How long its state is kept without an answer.
    pub keep_stale_seconds: f64,
}

impl Followed {
    pub(crate) fn register(&self, datacenter: &str, urls: &[String], keep_stale: Duration) {
        self.0.lock().insert(
            datacenter.to_owned(),
            Entry {
                urls: urls.to_vec(),
                url: urls.first().cloned().unwrap_or_default(),
                state: FollowState::Connecting,
                reason: None,
                version: None,
                services: 0,
                instances: 0,
                last_answer: None,
                keep_stale,
            },
        );
    }

    pub(crate) fn set_urls(&self, datacenter: &str, urls: &[String]) {
        if let Some(entry) = self.0.lock().get_mut(datacenter) {
            entry.urls = urls.to_vec();
        }
    }

    pub(crate) fn update(&self, datacenter: &str, change: impl FnOnce(&mut EntryUpdate<'_>)) {
        if let Some(entry) = self.0.lock().get_mut(datacenter) {
            change(&mut EntryUpdate(entry));
        }
    }

    /// Every followed datacenter, by name.
    pub fn views(&self) -> Vec<DatacenterView> {
        self.0
            .lock()
            .iter()
            .map(|(dc, e)| DatacenterView {
                datacenter: dc.clone(),
                state: e.state,
                reason: e.reason.clone(),
                url: e.url.clone(),
                urls: e.urls.clone(),
                version: e.version.clone(),
                services: e.services,
                instances: e.instances,
                last_answer_seconds: e.last_answer.map(|t| t.elapsed().as_secs_f64()),
                keep_stale_seconds: e.keep_stale.as_secs_f64(),
            })
            .collect()
    }
}

/// A source's changes to its own entry.
pub(crate) struct EntryUpdate<'a>(&'a mut Entry);

impl EntryUpdate<'_> {
    /// An answer came from `url`.
    pub(crate) fn answered(&mut self, url: &str) {
        self.0.url = url.to_owned();
        self.0.state = FollowState::Fresh;
        self.0.reason = None;
        self.0.last_answer = Some(Instant::now());
    }

    /// What is held after an update.
    pub(crate) fn holds(&mut self, version: &str, services: usize, instances: usize) {
        self.0.version = Some(version.to_owned());
        self.0.services = services;
        self.0.instances = instances;
    }

    /// A request failed; `next` is asked next.
    pub(crate) fn failed(&mut self, reason: String, next: &str) {
        self.0.url = next.to_owned();
        self.0.reason = Some(reason);
        if self.0.state == FollowState::Fresh {
            self.0.state = FollowState::Stale;
        }
    }

    /// Its instances were dropped.
    pub(crate) fn dropped(&mut self) {
        self.0.state = FollowState::Dropped;
        self.0.version = None;
        self.0.services = 0;
        self.0.instances = 0;
    }
}
