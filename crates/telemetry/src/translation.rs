//! The translator task's metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::LATENCY_BUCKETS;

/// What the translator task records. `Default` gives unregistered metrics, for a translator
/// nobody scrapes (tests).
#[derive(Clone, Debug)]
pub struct TranslationMetrics {
    duration: Histogram,
    errors: Counter,
    published: Counter,
    /// Read by the scrape-time collector, which exports it as a lag behind the registry.
    translated_index: Arc<AtomicU64>,
}

impl Default for TranslationMetrics {
    fn default() -> Self {
        TranslationMetrics {
            duration: Histogram::new(LATENCY_BUCKETS),
            errors: Counter::default(),
            published: Counter::default(),
            translated_index: Arc::default(),
        }
    }
}

impl TranslationMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = TranslationMetrics::default();
        registry.register(
            "meshplane_translation_seconds",
            "Time to translate a registry change or a newly demanded group",
            m.duration.clone(),
        );
        registry.register(
            "meshplane_translation_errors",
            "Groups that could not be translated or published",
            m.errors.clone(),
        );
        registry.register(
            "meshplane_snapshots_published",
            "Group snapshots published",
            m.published.clone(),
        );
        m
    }

    pub(crate) fn translated_index(&self) -> Arc<AtomicU64> {
        self.translated_index.clone()
    }

    /// One registry change or one newly demanded group took `elapsed` to translate.
    pub fn translated(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// A group could not be translated or published.
    pub fn error(&self) {
        self.errors.inc();
    }

    /// A group snapshot was published.
    pub fn published(&self) {
        self.published.inc();
    }

    /// The translator has caught up with registry index `index`.
    pub fn caught_up(&self, index: u64) {
        self.translated_index.store(index, Ordering::Relaxed);
    }
}
