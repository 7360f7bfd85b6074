//! Several registry addresses (`--registry a,b`): calls go to the address that answered
//! last and move on only when one does not answer.

mod support;

use axum::http::StatusCode;
use meshplane_sidecar::registration::{RegistryClient, RegistryError, ServiceRegistration};
use support::registry::FakeRegistry;

fn mk_registration(id: &str) -> ServiceRegistration {
    ServiceRegistration {
        id: Some(id.to_owned()),
        name: "orders".to_owned(),
        address: "127.0.0.1".to_owned(),
        port: 21000,
        ..ServiceRegistration::default()
    }
}

/// A registry URL nothing listens on.
async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    url
}

/// A registry that refuses every call.
async fn refusing_url() -> String {
    let app = axum::Router::new().fallback(|| async { (StatusCode::FORBIDDEN, "ACL not found") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_unreachable_registry_address_is_passed_over_and_the_next_one_kept() {
    let live = FakeRegistry::default();
    let live_url = format!("http://{}", live.serve_on(0).await);
    let client = RegistryClient::with_roots(&[closed_url().await, live_url], None, None);

    client
        .register(&mk_registration("orders-1"))
        .await
        .expect("registered at the live address");
    client.deregister("orders-1").await.expect("deregistered");
    assert_eq!(live.registrations().len(), 1);
    assert_eq!(live.deregistrations(), vec!["orders-1".to_owned()]);
}

#[tokio::test]
async fn a_deregistration_reaches_every_address() {
    let (first, second) = (FakeRegistry::default(), FakeRegistry::default());
    let first_url = format!("http://{}", first.serve_on(0).await);
    let second_url = format!("http://{}", second.serve_on(0).await);
    let client = RegistryClient::with_roots(&[first_url, second_url], None, None);
    client
        .register(&mk_registration("orders-1"))
        .await
        .expect("registered at the first");
    client.deregister("orders-1").await.expect("deregistered");
    assert_eq!(first.registrations().len(), 1);
    assert!(second.registrations().is_empty(), "registered once");
    for registry in [&first, &second] {
        assert_eq!(registry.deregistrations(), vec!["orders-1".to_owned()]);
    }
}

#[tokio::test]
async fn a_refusal_is_final_and_no_address_answering_is_an_error() {
    let live = FakeRegistry::default();
    let live_url = format!("http://{}", live.serve_on(0).await);
    let client = RegistryClient::with_roots(&[refusing_url().await, live_url], None, None);
    let err = client
        .register(&mk_registration("orders-1"))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, RegistryError::Refused { status: 403, .. }),
        "{err}"
    );
    assert!(live.calls().is_empty(), "the other address was not asked");

    let (a, b) = (closed_url().await, closed_url().await);
    let client = RegistryClient::with_roots(&[a, b.clone()], None, None);
    let err = client
        .register(&mk_registration("orders-1"))
        .await
        .expect_err("nothing answers");
    assert!(
        err.to_string().contains(&b),
        "names the last address tried: {err}"
    );
}
