//! Gauges read from the registry store and the snapshot cache at scrape time, so a scrape
//! shows exactly what they hold then, with no task keeping copies current.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meshplane_registry::{SourceStatus, Store};
use meshplane_xds::SnapshotCache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub(crate) struct StateCollector {
    store: Store,
    cache: SnapshotCache,
    translated_index: Arc<AtomicU64>,
}

impl StateCollector {
    pub(crate) fn new(
        store: Store,
        cache: SnapshotCache,
        translated_index: Arc<AtomicU64>,
    ) -> Self {
        StateCollector {
            store,
            cache,
            translated_index,
        }
    }
}

/// Writes one unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let registry = self.store.snapshot();
        let e = &mut encoder;
        gauge(
            e,
            "meshplane_groups",
            "Groups with a snapshot",
            self.cache.groups().len() as u64,
        )?;
        gauge(
            e,
            "meshplane_registry_services",
            "Services in the registry",
            registry.services.len() as u64,
        )?;
        gauge(
            e,
            "meshplane_registry_instances",
            "Instances in the registry",
            registry.instance_count() as u64,
        )?;
        gauge(
            e,
            "meshplane_registry_index",
            "Registry index",
            registry.index,
        )?;
        let lag = registry
            .index
            .saturating_sub(self.translated_index.load(Ordering::Relaxed));
        gauge(
            e,
            "meshplane_registry_translation_lag",
            "Registry index steps not yet translated",
            lag,
        )?;
        gauge(
            e,
            "meshplane_registry_stale",
            "1 while a registry source serves possibly outdated data",
            u64::from(registry.is_stale()),
        )?;
        let up = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "meshplane_registry_source_up",
            "1 when a registry source is synced, 0 while syncing or stale",
            None,
            up.metric_type(),
        )?;
        for (source, status) in &registry.sources {
            let value = i64::from(matches!(status, SourceStatus::Synced));
            let labels = [("source", source.as_str())];
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
