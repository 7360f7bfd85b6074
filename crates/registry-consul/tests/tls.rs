//! HTTPS to Consul with a private CA: trusted through `ca_file`, refused without it. The server
//! is a minimal TLS fake of the two watched endpoints (certificates from `meshplane_test_support::pki`).

use meshplane_test_support::poll::{eventually, eventually_watch};
use std::future::ready;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use meshplane_registry::{RegistrySource, Store, event_channel, store};
use meshplane_registry_consul::{ConsulConfig, ConsulSource};
use meshplane_test_support::pki::TestPki;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::{TlsAcceptor, rustls};
use tokio_util::sync::CancellationToken;

const HEALTH: &str = r#"[{"Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
  "Service": {"ID": "web-1", "Service": "web", "Port": 443}, "Checks": []}]"#;

/// A CA certificate (PEM) and an HTTP/1.1-only server configuration for 127.0.0.1 signed by
/// it (the fake speaks HTTP/1.1, so it offers no `h2` in ALPN).
fn mk_pki() -> (String, rustls::ServerConfig) {
    let pki = TestPki::new(&["127.0.0.1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pki.write(dir.path());
    let tls = meshplane_https::TlsFiles {
        cert: files.cert,
        key: files.key,
    }
    .load()
    .expect("server config");
    let mut server = (*tls).clone();
    server.alpn_protocols.clear();
    (pki.ca_pem, server)
}

/// Serves the catalog and one health entry over TLS; blocking queries never answer. Counts
/// failed handshakes.
async fn start_tls_fake(server: rustls::ServerConfig) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let failed = Arc::new(AtomicUsize::new(0));
    let failed_handshakes = failed.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, failed) = (acceptor.clone(), failed.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => answer(tls).await,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (addr, failed_handshakes)
}

async fn answer(tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
    let (read, mut write) = tokio::io::split(tls);
    let mut reader = BufReader::new(read);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header).await {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if query.split('&').any(|kv| kv.starts_with("index=")) {
        std::future::pending::<()>().await; // a blocking query with no change
    }
    let (index, body) = match path {
        "/v1/catalog/services" => (1, r#"{"web": []}"#),
        "/v1/health/service/web" => (2, HEALTH),
        _ => (1, "[]"),
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: {index}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = write.write_all(response.as_bytes()).await;
    let _ = write.shutdown().await;
}

fn run(config: ConsulConfig) -> (Store, CancellationToken) {
    let (reader, writer) = store();
    let (sink, events) = event_channel(16);
    let shutdown = CancellationToken::new();
    let source = ConsulSource::new(config).expect("config");
    tokio::spawn(writer.run(events, shutdown.clone()));
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move { source.run(sink, shutdown).await.expect("source") }
    });
    (reader, shutdown)
}

fn tls_config(addr: SocketAddr, ca_file: Option<std::path::PathBuf>) -> ConsulConfig {
    ConsulConfig {
        address: format!("https://{addr}"),
        ca_file,
        min_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(100),
        ..ConsulConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_file() {
    let (ca_pem, server) = mk_pki();
    let (addr, _) = start_tls_fake(server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("consul-ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write CA");

    let (store, shutdown) = run(tls_config(addr, Some(ca_file)));
    eventually_watch(
        &mut store.subscribe(),
        "a sync over HTTPS with the CA file",
        Duration::from_secs(10),
        |s| s.service("web").is_some(),
    )
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_the_ca_is_refused() {
    let (_, server) = mk_pki();
    let (addr, failed_handshakes) = start_tls_fake(server).await;
    let (store, shutdown) = run(tls_config(addr, None));
    eventually(
        "three failed TLS handshakes",
        Duration::from_secs(10),
        || {
            let failed = failed_handshakes.load(Ordering::SeqCst);
            ready(if failed >= 3 {
                Ok(())
            } else {
                Err(format!("{failed} failed handshakes"))
            })
        },
    )
    .await;
    let snap = store.snapshot();
    assert!(
        snap.services.is_empty() && !snap.is_synced(),
        "an untrusted server must not feed the store"
    );
    shutdown.cancel();
}
