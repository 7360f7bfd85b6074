use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;

use super::*;

/// An upstream that answers `{"a":[1,2,3]}` with `X-Consul-Index: 7`.
async fn mk_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Router::new().fallback(get(|| async {
        ([("x-consul-index", "7")], "{\"a\":[1,2,3]}")
    }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

async fn fetch(front: &HttpFront) -> (u16, Option<String>, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{}/v1/x?index=3", front.addr()))
        .send()
        .await
        .expect("front answers");
    let index = r
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (r.status().as_u16(), index, r.text().await.expect("body"))
}

#[tokio::test]
async fn passes_refuses_every_other_request_and_counts() {
    let front = HttpFront::start(mk_upstream().await).await.expect("front");
    let ok = (200, Some("7".to_owned()), "{\"a\":[1,2,3]}".to_owned());
    assert_eq!(fetch(&front).await, ok);
    front.set(Answer::RateLimit { every: 2 });
    let statuses = [
        fetch(&front).await.0,
        fetch(&front).await.0,
        fetch(&front).await.0,
    ];
    assert_eq!(statuses, [429, 200, 429]);
    assert_eq!((front.requests(), front.refused()), (4, 2));
}

#[tokio::test]
async fn delays_and_garbles_answers() {
    let front = HttpFront::start(mk_upstream().await).await.expect("front");
    front.set(Answer::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    assert_eq!(fetch(&front).await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    front.set(Answer::Truncated);
    assert_eq!(fetch(&front).await.2, "{\"a\":[");
    front.set(Answer::WrongShape);
    assert_eq!(fetch(&front).await.2, "[1, \"two\", {\"three\": 3}]");
    front.set(Answer::IndexBackwards);
    assert_eq!(fetch(&front).await.1.as_deref(), Some("1"));
    front.set(Answer::Huge(1 << 20));
    let body = fetch(&front).await.2;
    assert_eq!(body.len(), 1 << 20);
    assert!(body.starts_with("[0,") && body.trim_end_matches("]").trim_end().ends_with(",0"));
}
