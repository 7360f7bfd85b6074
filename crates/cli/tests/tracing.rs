//! Tracing without library changes: the control plane configures every sidecar's Envoy to
//! trace with OpenTelemetry (`--tracing-collector`), and a real OTLP/gRPC receiver
//! (`tests/otlp/receiver.py`: grpcio and opentelemetry-proto from PyPI) gets the spans of a
//! request web → orders → payments, whose apps only copy `traceparent` and `x-request-id`
//! from their request onto their outgoing call: one trace, linked hop by hop, each span
//! named after its mesh service. A collector that cannot be reached costs no request.

mod support;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use meshplane_test_support::poll::eventually;
use parking_lot::Mutex;
use serde_json::Value;
use support::otlp::Receiver;
use support::{DEADLINE, Mesh, caller, free_port};

/// OTLP's span kinds.
const SERVER: u64 = 2;
const CLIENT: u64 = 3;

/// The trace headers each app received, in arrival order: (app, traceparent, x-request-id).
type Seen = Arc<Mutex<Vec<(&'static str, String, String)>>>;

#[derive(Clone)]
struct App {
    name: &'static str,
    /// The next hop: (egress port, service), if the app calls one.
    next: Option<(u16, &'static str)>,
    seen: Seen,
    http: reqwest::Client,
}

/// An app of the chain: records its trace headers and, if it has a next hop, calls it through
/// its sidecar's egress with the same `traceparent` and `x-request-id` (all a traced app does).
async fn app(name: &'static str, next: Option<(u16, &'static str)>, seen: &Seen) -> u16 {
    let state = App {
        name,
        next,
        seen: seen.clone(),
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
    };
    let router = Router::new().fallback(get(handle)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

async fn handle(State(app): State<App>, headers: HeaderMap) -> (axum::http::StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (traceparent, request_id) = (header("traceparent"), header("x-request-id"));
    app.seen
        .lock()
        .push((app.name, traceparent.clone(), request_id.clone()));
    let Some((egress, service)) = app.next else {
        return (axum::http::StatusCode::OK, app.name.to_owned());
    };
    let mut request = app
        .http
        .get(format!("http://127.0.0.1:{egress}/"))
        .header("host", service);
    for (name, value) in [("traceparent", &traceparent), ("x-request-id", &request_id)] {
        if !value.is_empty() {
            request = request.header(name, value.as_str());
        }
    }
    match request.send().await {
        Ok(r) => (
            r.status(),
            format!("{} > {}", app.name, r.text().await.unwrap_or_default()),
        ),
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// web → orders → payments, each with a sidecar; returns web's ingress port and what the
/// apps saw.
async fn chain(mesh: &mut Mesh) -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let payments_app = app("payments", None, &seen).await;
    let payments = format!(
        "service: payments\nport: {payments_app}\ningress: {{ port: {} }}\n",
        free_port()
    );
    mesh.sidecar("payments-1", &payments, 1).await;
    let orders_egress = free_port();
    let orders_app = app("orders", Some((orders_egress, "payments")), &seen).await;
    let orders = caller(
        "orders",
        orders_app,
        free_port(),
        orders_egress,
        "  - service: payments\n",
    );
    mesh.sidecar("orders-1", &orders, 2).await;
    let web_egress = free_port();
    let web_app = app("web", Some((web_egress, "orders")), &seen).await;
    let web_ingress = free_port();
    let web = caller(
        "web",
        web_app,
        web_ingress,
        web_egress,
        "  - service: orders\n",
    );
    mesh.sidecar("web-1", &web, 2).await;
    (web_ingress, seen)
}

async fn call(mesh: &Mesh, web_ingress: u16) -> (u16, String) {
    match mesh
        .http
        .get(format!("http://127.0.0.1:{web_ingress}/checkout"))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connected_trace_from_web_through_orders_to_payments() {
    let receiver = Receiver::start();
    let collector = format!("127.0.0.1:{}", receiver.port);
    let mut mesh = Mesh::start(|c, _| {
        c.tracing_collector = Some(collector);
        c.tracing_sampling = "100".to_owned();
    })
    .await;
    let (web_ingress, seen) = chain(&mut mesh).await;
    let body = eventually("web → orders → payments", DEADLINE, || async {
        match call(&mesh, web_ingress).await {
            (200, body) => Ok(body),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(body, "web > orders > payments");
    // The first request that went all the way through: its trace id, from payments' headers.
    let (traceparent, request_id) = {
        let seen = seen.lock();
        let (_, traceparent, request_id) = seen
            .iter()
            .rfind(|(app, _, _)| *app == "payments")
            .expect("payments was called")
            .clone();
        (traceparent, request_id)
    };
    let trace_id = traceparent
        .split('-')
        .nth(1)
        .unwrap_or_else(|| panic!("payments got no W3C traceparent: `{traceparent}`"))
        .to_owned();
    // The request id the first sidecar made is the one every app of the chain saw.
    assert!(!request_id.is_empty());
    let hops: Vec<&'static str> = seen
        .lock()
        .iter()
        .filter(|(_, tp, id)| tp.contains(&trace_id) && *id == request_id)
        .map(|(app, _, _)| *app)
        .collect();
    assert_eq!(hops, ["web", "orders", "payments"], "{:?}", seen.lock());

    // Five spans in one trace: web's ingress (root) → web's egress → orders' ingress →
    // orders' egress → payments' ingress, each the child of the one before.
    let spans = eventually(
        "the trace's five spans at the receiver",
        DEADLINE,
        || async {
            let spans: Vec<Value> = receiver
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id.as_str())
                .collect();
            if spans.len() >= 5 {
                Ok(spans)
            } else {
                Err(format!("{} spans: {spans:?}", spans.len()))
            }
        },
    )
    .await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent_span_id"] == "").collect();
    assert_eq!(roots.len(), 1, "one root: {spans:#?}");
    let mut path = Vec::new();
    let mut current = roots[0];
    loop {
        path.push((
            current["service"].as_str().unwrap_or_default().to_owned(),
            current["kind"].as_u64().unwrap_or_default(),
        ));
        let children: Vec<&Value> = spans
            .iter()
            .filter(|s| s["parent_span_id"] == current["span_id"])
            .collect();
        match children.as_slice() {
            [] => break,
            [child] => current = child,
            many => panic!("a span with {} children: {spans:#?}", many.len()),
        }
    }
    let expected: Vec<(String, u64)> = [
        ("web", SERVER),
        ("web", CLIENT),
        ("orders", SERVER),
        ("orders", CLIENT),
        ("payments", SERVER),
    ]
    .into_iter()
    .map(|(s, k)| (s.to_owned(), k))
    .collect();
    assert_eq!(path, expected, "{spans:#?}");
    // payments' app was handed the context of payments' own span.
    let last = &spans
        .iter()
        .find(|s| s["service"] == "payments")
        .expect("payments' span")["span_id"];
    assert!(
        traceparent.contains(last.as_str().unwrap_or("?")),
        "{traceparent} vs {last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_collector_costs_no_request() {
    // Nothing listens there (a port handed out once, never bound).
    let collector = format!("127.0.0.1:{}", free_port());
    let mut mesh = Mesh::start(|c, _| {
        c.tracing_collector = Some(collector);
        c.tracing_sampling = "100".to_owned();
    })
    .await;
    let (web_ingress, _) = chain(&mut mesh).await;
    eventually("the chain answers", DEADLINE, || async {
        call(&mesh, web_ingress).await.0 == 200
    })
    .await;
    for i in 0..50 {
        let (status, body) = call(&mesh, web_ingress).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "web > orders > payments"),
            "request {i}"
        );
    }
}
