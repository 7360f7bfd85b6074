//! External domains through real Envoy: TLS origination with SAN checks against a test CA,
//! and `CONNECT` tunnels to declared domains only.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use support::{Mesh, caller, free_port, poll, via_egress};

struct TestPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(host: &str) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A CA with an empty subject cannot be chained to by BoringSSL.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "meshplane test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![host.to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    TestPki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// An HTTPS server on 127.0.0.1 answering `body`, with `pki`'s certificate.
async fn https_server(pki: &TestPki, body: &'static str) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("pem");
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let router =
                    axum::Router::new().fallback(axum::routing::get(move || async move { body }));
                let svc = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}

async fn mesh_for(host: &str, ca_pem: &str, deps: &str) -> (Mesh, u16) {
    let host = host.to_owned();
    let ca_pem = ca_pem.to_owned();
    let mut mesh = Mesh::start(move |config, dir| {
        let ca = dir.join("test-ca.pem");
        std::fs::write(&ca, ca_pem).expect("write ca");
        config.domain_ca_file = Some(ca.display().to_string());
        config
            .domain_addresses
            .insert(host.clone(), "127.0.0.1".parse().expect("ip"));
        config
            .domain_addresses
            .insert("impostor.test".into(), "127.0.0.1".parse().expect("ip"));
    })
    .await;
    let egress = free_port();
    let app = free_port();
    mesh.sidecar(
        "orders-1",
        &caller("orders", app, free_port(), egress, deps),
        2,
    )
    .await;
    (mesh, egress)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_domain_gets_tls_origination_verified_against_the_ca_and_san() {
    let pki = pki("secure.test");
    let server = https_server(&pki, "secret rates").await;
    // `impostor.test` is served by the same certificate (SAN secure.test): must be refused.
    let deps = format!(
        "  - domain: https://secure.test:{port}\n  - domain: https://impostor.test:{port}\n",
        port = server.port()
    );
    let (mesh, egress) = mesh_for("secure.test", &pki.ca_pem, &deps).await;
    let ok = poll(|| async {
        via_egress(&mesh.http, egress, "secure.test", None).await == (200, "secret rates".into())
    })
    .await;
    if !ok {
        let admin = mesh.sidecar_admin("orders-1");
        let stats = mesh
            .http
            .get(format!("http://127.0.0.1:{admin}/stats?filter=domain"))
            .send()
            .await
            .expect("stats")
            .text()
            .await
            .expect("text");
        panic!(
            "plain HTTP from the app must become verified TLS to the domain: {:?}\n{stats}",
            via_egress(&mesh.http, egress, "secure.test", None).await
        );
    }
    let (status, body) = via_egress(&mesh.http, egress, "impostor.test", None).await;
    assert_eq!(
        status, 503,
        "a certificate for another name must fail verification: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_tunnels_only_to_declared_domains() {
    let pki = pki("secure.test");
    let server = https_server(&pki, "tunnelled").await;
    let deps = format!("  - domain: https://secure.test:{}\n", server.port());
    let (mesh, egress) = mesh_for("secure.test", &pki.ca_pem, &deps).await;
    assert!(
        poll(|| async { via_egress(&mesh.http, egress, "secure.test", None).await.0 == 200 }).await
    );

    // reqwest sends `CONNECT secure.test:<port>` to an HTTPS proxy URL and does TLS itself.
    let client = |host_ca: &str| {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::https(format!("http://127.0.0.1:{egress}")).expect("proxy"))
            .add_root_certificate(reqwest::Certificate::from_pem(host_ca.as_bytes()).expect("ca"))
            .build()
            .expect("client")
    };
    let c = client(&pki.ca_pem);
    let r = c
        .get(format!("https://secure.test:{}/x", server.port()))
        .send()
        .await
        .expect("tunnel works");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "tunnelled");

    let refused = c
        .get(format!("https://undeclared.test:{}/x", server.port()))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "CONNECT to an undeclared host must be refused: {refused:?}"
    );
}

/// Opens a `CONNECT host:port` tunnel through `egress` and sends one HTTP request inside it.
async fn connect_and_get(egress: u16, authority: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", egress))
        .await
        .expect("egress");
    let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        return head;
    }
    let get = format!("GET /inside HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(get.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn domain_patterns_tunnel_through_the_dynamic_forward_proxy() {
    let upstream = support::upstream("pattern-upstream").await;
    let mut mesh = Mesh::start(|_, _| {}).await;
    let egress = free_port();
    // `*.0.0.1` matches the IP literal 127.0.0.1, so no DNS is needed in the test.
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - domain_pattern: \"*.0.0.1\"\n",
    );
    mesh.sidecar("orders-1", &d, 2).await;
    let ok = poll(|| async {
        connect_and_get(egress, &format!("127.0.0.1:{upstream}"))
            .await
            .contains("pattern-upstream")
    })
    .await;
    assert!(
        ok,
        "CONNECT to a host matching the pattern: {}",
        connect_and_get(egress, &format!("127.0.0.1:{upstream}")).await
    );
    let refused = connect_and_get(egress, &format!("localhost:{upstream}")).await;
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "a host outside the pattern is refused: {refused}"
    );
}
