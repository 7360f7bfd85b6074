//! Stream observers: the status board and a registered observer both see a stream's
//! responses, ACKs and NACKs, its failures and its end.

mod support;

use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc;
use meshplane_test_support::eventually;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints};
use meshplane_xds::{
    GroupKey, Nack, ResourceType, Snapshot, StreamInfo, StreamObserver, XdsObserver,
};
use support::{Harness, SotwClient, WAIT, mk_node};
use tonic::Code;

const CDS: ResourceType = ResourceType::Cluster;

/// Writes every event it sees as one line.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().expect("lock").clone()
    }

    fn saw(&self, event: &str) -> bool {
        self.events().iter().any(|e| e == event)
    }
}

struct RecordedStream {
    node: String,
    events: Arc<Mutex<Vec<String>>>,
}

impl RecordedStream {
    fn push(&self, event: String) {
        self.events.lock().expect("lock").push(event);
    }
}

impl XdsObserver for Recorder {
    fn stream_opened(&self, stream: &StreamInfo) -> Box<dyn StreamObserver> {
        self.events.lock().expect("lock").push(format!(
            "opened {} {} {:?} group={}",
            stream.node_id, stream.service, stream.kind, stream.group
        ));
        Box::new(RecordedStream {
            node: stream.node_id.clone(),
            events: self.events.clone(),
        })
    }

    fn stream_refused(&self, error: &str) {
        self.events
            .lock()
            .expect("lock")
            .push(format!("refused: {error}"));
    }
}

impl StreamObserver for RecordedStream {
    fn sent(&self, kind: ResourceType, version: &str, nonce: &str) {
        self.push(format!("{} sent {kind} {version} nonce={nonce}", self.node));
    }

    fn acked(&self, kind: ResourceType, version: &str, push_to_ack: Option<Duration>) {
        let timed = if push_to_ack.is_some() { " timed" } else { "" };
        self.push(format!("{} acked {kind} {version}{timed}", self.node));
    }

    fn nacked(&self, kind: ResourceType, nack: &Nack) {
        self.push(format!(
            "{} nacked {kind} {}: {}",
            self.node, nack.version, nack.message
        ));
    }

    fn failed(&self, error: &str) {
        self.push(format!("{} failed: {error}", self.node));
    }

    fn closed(&self) {
        self.push(format!("{} closed", self.node));
    }
}

async fn observed() -> (Harness, Recorder) {
    let recorder = Recorder::default();
    let h = Harness::start_observed(Some(Arc::new(recorder.clone()))).await;
    (h, recorder)
}

fn publish(h: &Harness, clusters: &[&str]) {
    let resources = clusters
        .iter()
        .flat_map(|c| [mk_eds_cluster(c), mk_endpoints(c, &[])]);
    let snapshot = Snapshot::new(resources).expect("consistent");
    h.cache
        .set_snapshot(&GroupKey::new("orders"), snapshot)
        .expect("published");
}

/// A SotW stream of `orders-1` that asked for clusters, and its first response.
async fn orders_asking_for_clusters(h: &Harness) -> (SotwClient, DiscoveryResponse) {
    let mut c = h.sotw().await;
    c.send(DiscoveryRequest {
        node: Some(mk_node("orders-1", "orders")),
        type_url: CDS.type_url().into(),
        ..Default::default()
    })
    .await;
    let first = c.expect().await;
    (c, first)
}

#[tokio::test]
async fn both_observers_see_sent_acked_nacked_and_closed() {
    let (h, recorder) = observed().await;
    publish(&h, &["payments"]);
    let (mut c, first) = orders_asking_for_clusters(&h).await;
    c.ack(&first, &[]).await;
    let acked = format!("orders-1 acked CDS {} timed", first.version_info);
    eventually("the ACK observed", WAIT, || ready(recorder.saw(&acked))).await;

    publish(&h, &["payments", "billing"]);
    let second = c.expect().await;
    assert_ne!(second.version_info, first.version_info);
    c.send(DiscoveryRequest {
        version_info: first.version_info.clone(),
        response_nonce: second.nonce.clone(),
        type_url: CDS.type_url().into(),
        error_detail: Some(rpc::Status {
            code: Code::InvalidArgument as i32,
            message: "billing: unknown field".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let nacked = format!(
        "orders-1 nacked CDS {}: billing: unknown field",
        second.version_info
    );
    eventually("the NACK observed", WAIT, || ready(recorder.saw(&nacked))).await;

    assert_eq!(
        recorder.events(),
        vec![
            "opened orders-1 orders Sotw group=orders".to_string(),
            format!(
                "orders-1 sent CDS {} nonce={}",
                first.version_info, first.nonce
            ),
            acked,
            format!(
                "orders-1 sent CDS {} nonce={}",
                second.version_info, second.nonce
            ),
            nacked,
        ]
    );
    // The status board, the other observer, saw the same stream.
    let proxies = h.server.status().proxies();
    assert_eq!(proxies.len(), 1);
    let cds = proxies[0].type_status(CDS);
    assert_eq!(
        cds.sent_version.as_deref(),
        Some(second.version_info.as_str())
    );
    assert_eq!(
        cds.acked_version.as_deref(),
        Some(first.version_info.as_str())
    );
    assert_eq!(cds.responses, 2);
    assert_eq!(cds.nacks, 1);
    assert_eq!(
        cds.last_nack.as_ref().map(|n| n.message.as_str()),
        Some("billing: unknown field")
    );

    drop(c);
    eventually("the close observed", WAIT, || {
        ready(recorder.saw("orders-1 closed"))
    })
    .await;
    eventually("an empty status board", WAIT, || {
        ready(h.server.status().is_empty())
    })
    .await;
}

#[tokio::test]
async fn a_refused_stream_is_reported_and_never_opened() {
    let (h, recorder) = observed().await;
    publish(&h, &["payments"]);
    let mut bad = h.sotw().await;
    bad.send(DiscoveryRequest {
        type_url: CDS.type_url().into(),
        ..Default::default()
    })
    .await;
    let status = bad.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let events = recorder.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with("refused: the first request on an xDS stream must carry `node`"),
        "{events:?}"
    );
    assert!(h.server.status().is_empty());
}

#[tokio::test]
async fn a_stream_ended_by_an_error_reports_failed_then_closed() {
    let (h, recorder) = observed().await;
    publish(&h, &["payments"]);
    let (mut c, _) = orders_asking_for_clusters(&h).await;
    c.send(DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.core.v3.Nonsense".into(),
        ..Default::default()
    })
    .await;
    let status = c.next().await.expect_err("ended");
    assert_eq!(status.code(), Code::InvalidArgument);
    eventually("the close observed", WAIT, || {
        ready(recorder.saw("orders-1 closed"))
    })
    .await;
    let events = recorder.events();
    let tail = &events[events.len() - 2..];
    assert!(
        tail[0].starts_with("orders-1 failed: unsupported type_url"),
        "{events:?}"
    );
}
