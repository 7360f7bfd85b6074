//! The file source follows edits; a broken edit keeps the previous state.

use meshplane_test_support::poll::eventually_watch;
use std::time::Duration;

use meshplane_registry::{RegistrySource, Snapshot, SourceStatus, Store, event_channel, store};
use meshplane_registry_file::{FileConfig, FileError, FileSource};
use tokio_util::sync::CancellationToken;

const ONE: &str = "services:\n  - name: web\n    instances:\n      - { id: web-1, address: 10.0.0.1, port: 80 }\n";
const TWO: &str = "services:\n  - name: web\n    instances:\n      - { id: web-1, address: 10.0.0.1, port: 80 }\n      - { id: web-2, address: 10.0.0.2, port: 80, tags: [canary] }\n";
const BROKEN: &str = "services:\n  - name: web\n    instances:\n      - { id: web-1, address: 10.0.0.1, port: eighty }\n";

async fn until(store: &Store, what: &str, pred: impl Fn(&Snapshot) -> bool) {
    eventually_watch(&mut store.subscribe(), what, Duration::from_secs(5), |s| {
        pred(s)
    })
    .await;
}

fn count(s: &Snapshot) -> usize {
    s.service("web").map_or(0, |e| e.instances.len())
}

#[tokio::test]
async fn edits_are_followed_and_broken_edits_keep_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("services.yaml");
    std::fs::write(&path, ONE).expect("write");
    let config = FileConfig {
        path: path.clone(),
        poll_interval: Duration::from_millis(20),
        ..FileConfig::default()
    };
    let source = FileSource::new(config).await.expect("valid file");

    let (reader, writer) = store();
    let (sink, events) = event_channel(16);
    let shutdown = CancellationToken::new();
    let writer_task = tokio::spawn(writer.run(events, shutdown.clone()));
    let source_task = tokio::spawn(source.run(sink, shutdown.clone()));

    until(&reader, "initial state", |s| count(s) == 1 && s.is_synced()).await;

    std::fs::write(&path, TWO).expect("write");
    until(&reader, "second instance", |s| count(s) == 2).await;

    std::fs::write(&path, BROKEN).expect("write");
    until(&reader, "stale flag", Snapshot::is_stale).await;
    let snap = reader.snapshot();
    assert_eq!(count(&snap), 2, "a broken edit keeps the previous state");
    let reason = match snap.sources.values().next() {
        Some(SourceStatus::Stale { reason }) => reason.clone(),
        other => panic!("expected stale, got {other:?}"),
    };
    assert!(reason.contains("line 4, column"), "{reason}");

    std::fs::write(&path, ONE).expect("write");
    until(&reader, "fixed file applied", |s| {
        count(s) == 1 && !s.is_stale()
    })
    .await;

    shutdown.cancel();
    source_task.await.expect("join").expect("source ok");
    writer_task.await.expect("join");
}

#[tokio::test]
async fn a_missing_or_broken_file_fails_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = FileConfig {
        path: dir.path().join("nope.yaml"),
        ..FileConfig::default()
    };
    assert!(matches!(
        FileSource::new(missing).await,
        Err(FileError::Read { .. })
    ));
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, BROKEN).expect("write");
    let err = FileSource::new(FileConfig {
        path,
        ..FileConfig::default()
    })
    .await
    .expect_err("broken");
    assert!(err.to_string().contains("line 4"), "{err}");
}
