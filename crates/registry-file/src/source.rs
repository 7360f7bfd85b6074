use std::{path::PathBuf, time::Duration};

use meshplane_registry::{
    EventSink, RegistryEvent, RegistrySource, SinkClosed, SourceId, SourceStatus,
};
use tokio_util::sync::CancellationToken;

use crate::{ParseError, parse};

/// Where the file is and how often to look at it.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// The services file.
    pub path: PathBuf,
    /// How often the file is re-read and compared (default 500ms). Polling works on every
    /// filesystem, including network mounts and editors that replace files by rename.
    pub poll_interval: Duration,
    /// Datacenter of instances that do not name one (default `dc1`).
    pub datacenter: String,
    /// Source id the events carry (default `file`).
    pub source_id: String,
}

/// Why the file source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("cannot read services file {path}: {source}; check --services-file")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's first version is invalid.
    #[error("services file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        source: ParseError,
    },
    /// The store stopped.
    #[error(transparent)]
    SinkClosed(#[from] SinkClosed),
}

/// Follows a services file. Construct with [`FileSource::new`], which reads and validates the
/// file once so a wrong path or a broken file fails at startup, not later.
#[derive(Debug)]
pub struct FileSource {
    config: FileConfig,
    initial: String,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("services.yaml"),
            poll_interval: Duration::from_millis(500),
            datacenter: "dc1".into(),
            source_id: "file".into(),
        }
    }
}

// === impl FileSource ===

impl FileSource {
    /// Reads and validates the file.
    pub async fn new(config: FileConfig) -> Result<Self, FileError> {
        let path = config.path.display().to_string();
        let initial = tokio::fs::read_to_string(&config.path)
            .await
            .map_err(|source| FileError::Read {
                path: path.clone(),
                source,
            })?;
        parse(&initial, &config.datacenter).map_err(|source| FileError::Parse { path, source })?;
        Ok(Self { config, initial })
    }
}

impl RegistrySource for FileSource {
    type Error = FileError;

    fn id(&self) -> SourceId {
        SourceId::new(&self.config.source_id)
    }

    async fn run(self, sink: EventSink, shutdown: CancellationToken) -> Result<(), FileError> {
        let source = self.id();
        let path = self.config.path.display().to_string();
        let mut last = self.initial;
        let services =
            parse(&last, &self.config.datacenter).map_err(|source| FileError::Parse {
                path: path.clone(),
                source,
            })?;
        sink.send(RegistryEvent::Replace {
            source: source.clone(),
            services,
        })
        .await?;
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let text = match tokio::fs::read_to_string(&self.config.path).await {
                Ok(text) => text,
                Err(e) => {
                    if last_error_changed(&mut last, &format!("\0read:{e}")) {
                        tracing::error!(%path, error = %e, "cannot read services file; keeping the previous services");
                        let status = SourceStatus::Stale {
                            reason: format!("cannot read {path}: {e}"),
                        };
                        sink.send(RegistryEvent::Status {
                            source: source.clone(),
                            status,
                        })
                        .await?;
                    }
                    continue;
                }
            };
            if text == last {
                continue;
            }
            last = text;
            match parse(&last, &self.config.datacenter) {
                Ok(services) => {
                    tracing::info!(%path, services = services.len(), "services file reloaded");
                    sink.send(RegistryEvent::Replace {
                        source: source.clone(),
                        services,
                    })
                    .await?;
                }
                Err(e) => {
                    tracing::error!(%path, error = %e, "services file is invalid; keeping the previous services until it is fixed");
                    let status = SourceStatus::Stale {
                        reason: format!("{path}: {e}"),
                    };
                    sink.send(RegistryEvent::Status {
                        source: source.clone(),
                        status,
                    })
                    .await?;
                }
            }
        }
    }
}

/// Remembers a read error in `last` (as a marker that cannot be file content) so it is logged
/// once, and a later successful read is always treated as a change.
fn last_error_changed(last: &mut String, marker: &str) -> bool {
    if last == marker {
        return false;
    }
    *last = marker.to_string();
    true
}
