//! The registry store: what every registry source feeds and what the translator reads.
//!
//! This crate owns the merged view of services and instances across sources, the
//! [`RegistryEvent`]s sources emit (with per-source full-resync semantics), and the
//! [`RegistrySource`] trait. It does no network or disk I/O.
//!
//! Start reading at [`store()`]: it returns a cloneable read-only [`Store`] and the single
//! [`Writer`]. The writer's [`Writer::apply`] is a pure synchronous state transition, so tests
//! apply events and assert on snapshots and watchers without a runtime. In production the writer
//! is driven by [`Writer::run`] from an [`EventSink`] channel that sources send into.

mod event;
mod sink;
mod snapshot;
mod source;
mod store;

pub use event::{RegistryEvent, SourceId, SourceStatus};
pub use sink::{EventSink, EventStream, SinkClosed, event_channel};
pub use snapshot::{Changes, ServiceEntry, Snapshot};
pub use source::RegistrySource;
pub use store::{Store, Writer, store};

/// How many removed services the store remembers for [`Snapshot::changed_since`]; a consumer
/// further behind than this gets [`Changes::All`] and recomputes everything.
pub const TOMBSTONE_CAPACITY: usize = 4096;
