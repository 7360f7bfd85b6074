use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::{EventSink, SourceId};

/// A registry backend that feeds the store (embedded registry, Consul, a YAML file).
///
/// `run` owns the source until `shutdown` is cancelled. It must begin with a full
/// [`RegistryEvent::Replace`](crate::RegistryEvent::Replace) once it knows its complete state,
/// and must never empty its services because the backend is failing: it reports
/// [`SourceStatus::Stale`](crate::SourceStatus::Stale) instead and keeps retrying.
pub trait RegistrySource: Send + 'static {
    /// Why the source stopped for good (configuration errors, closed sink); transient backend
    /// failures are retried inside `run`, never returned.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The id this source's events carry.
    fn id(&self) -> SourceId;

    /// Runs until `shutdown` is cancelled or the sink closes.
    fn run(
        self,
        sink: EventSink,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
