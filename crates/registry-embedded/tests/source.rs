//! The embedded registry feeds the shared store: full state first, then changes.

mod support;

use std::time::Duration;

use meshplane_registry::{RegistrySource, event_channel, store};
use meshplane_test_support::eventually;
use serde_json::json;
use support::{client, start};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn registrations_and_health_reach_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    let http = client();
    http.put(&reg)
        .json(&json!({"Name": "web", "ID": "web-1", "Port": 80, "Address": "10.0.0.1"}))
        .send()
        .await
        .expect("put");

    let (reader, writer) = store();
    let (sink, events) = event_channel(64);
    let shutdown = CancellationToken::new();
    let writer_task = tokio::spawn(writer.run(events, shutdown.clone()));
    let source_task = tokio::spawn(s.source.clone().run(sink, shutdown.clone()));

    eventually("initial state", Duration::from_secs(2), || async {
        reader.snapshot().service("web").map(|_| ())
    })
    .await;
    assert!(reader.snapshot().is_synced());

    http.put(&reg)
        .json(&json!({"Name": "api", "ID": "api-1", "Port": 81, "Check": {"TTL": "1h"}}))
        .send()
        .await
        .expect("put");
    let api = eventually("new service", Duration::from_secs(2), || async {
        reader.snapshot().service("api").cloned()
    })
    .await;
    assert_eq!(api.instances[0].health, meshplane_model::Health::Critical);
    assert_eq!(
        api.instances[0].address, "127.0.0.1",
        "no address: the node's"
    );

    http.put(format!("{}/v1/agent/check/pass/service:api-1", s.url))
        .send()
        .await
        .expect("pass");
    eventually("health change", Duration::from_secs(2), || async {
        let snap = reader.snapshot();
        (snap.service("api")?.instances[0].health == meshplane_model::Health::Passing).then_some(())
    })
    .await;

    http.put(format!("{}/v1/agent/service/deregister/web-1", s.url))
        .send()
        .await
        .expect("dereg");
    eventually("removal", Duration::from_secs(2), || async {
        reader.snapshot().service("web").is_none().then_some(())
    })
    .await;

    shutdown.cancel();
    source_task.await.expect("source").expect("source ok");
    writer_task.await.expect("writer");
    s.stop().await;
}
