//! Feeds the embedded registry's catalog into the shared store as a [`RegistrySource`].

use std::{collections::BTreeMap, sync::Arc};

use meshplane_model::{Instance, ServiceName};
use meshplane_registry::{EventSink, RegistryEvent, RegistrySource, SinkClosed, SourceId};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;

/// The embedded registry as a store source: a full [`RegistryEvent::Replace`] at start, then one
/// [`RegistryEvent::Service`] per service that changed, coalesced per catalog index.
#[derive(Clone, Debug)]
pub struct EmbeddedSource {
    pub(crate) catalog: Arc<RwLock<Catalog>>,
    pub(crate) index_rx: watch::Receiver<u64>,
}

/// The source id the embedded registry's events carry.
pub const SOURCE_ID: &str = "embedded";

impl RegistrySource for EmbeddedSource {
    type Error = SinkClosed;

    fn id(&self) -> SourceId {
        SourceId::new(SOURCE_ID)
    }

    async fn run(self, sink: EventSink, shutdown: CancellationToken) -> Result<(), SinkClosed> {
        let source = self.id();
        let mut index_rx = self.index_rx.clone();
        index_rx.borrow_and_update();
        let (mut seen, services) = {
            let catalog = self.catalog.read();
            let names: Vec<ServiceName> = catalog.services().into_keys().cloned().collect();
            let services: BTreeMap<ServiceName, Vec<Instance>> = names
                .into_iter()
                .map(|n| {
                    let i = instances(&catalog, &n);
                    (n, i)
                })
                .collect();
            (catalog.index(), services)
        };
        sink.send(RegistryEvent::Replace {
            source: source.clone(),
            services,
        })
        .await?;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                changed = index_rx.changed() => if changed.is_err() { return Ok(()) },
            }
            index_rx.borrow_and_update();
            let updates: Vec<(ServiceName, Vec<Instance>)> = {
                let catalog = self.catalog.read();
                let updates = catalog
                    .names_changed_since(seen)
                    .into_iter()
                    .map(|n| {
                        let i = instances(&catalog, &n);
                        (n, i)
                    })
                    .collect();
                seen = catalog.index();
                updates
            };
            for (name, instances) in updates {
                sink.send(RegistryEvent::Service {
                    source: source.clone(),
                    name,
                    instances,
                })
                .await?;
            }
        }
    }
}

fn instances(catalog: &Catalog, name: &ServiceName) -> Vec<Instance> {
    catalog
        .instances(name.as_str())
        .map(|r| r.to_instance(catalog.node()))
        .collect()
}
