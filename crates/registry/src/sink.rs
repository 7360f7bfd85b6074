use tokio::sync::mpsc;

use crate::RegistryEvent;

/// The sending half sources write events into; cheap to clone, one per source.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::Sender<RegistryEvent>,
}

/// The receiving half, consumed by [`Writer::run`](crate::Writer::run).
#[derive(Debug)]
pub struct EventStream {
    pub(crate) rx: mpsc::Receiver<RegistryEvent>,
}

/// The store's writer task has stopped, so events can no longer be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the registry store has shut down; stop the source")]
pub struct SinkClosed;

/// A bounded channel from sources to the writer. A full channel applies backpressure to sources
/// instead of buffering without limit.
pub fn event_channel(capacity: usize) -> (EventSink, EventStream) {
    let (tx, rx) = mpsc::channel(capacity);
    (EventSink { tx }, EventStream { rx })
}

// === impl EventSink ===

impl EventSink {
    /// Delivers one event, waiting if the writer is behind.
    pub async fn send(&self, event: RegistryEvent) -> Result<(), SinkClosed> {
        self.tx.send(event).await.map_err(|_| SinkClosed)
    }

    /// Delivers one event from synchronous code (a non-async thread), waiting if needed.
    /// Must not be called from inside an async task.
    pub fn blocking_send(&self, event: RegistryEvent) -> Result<(), SinkClosed> {
        self.tx.blocking_send(event).map_err(|_| SinkClosed)
    }
}

// === impl EventStream ===

impl EventStream {
    /// Receives the next event; `None` once every sink is dropped.
    pub async fn recv(&mut self) -> Option<RegistryEvent> {
        self.rx.recv().await
    }
}
