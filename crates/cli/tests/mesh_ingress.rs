//! Ingress through a real Envoy sidecar, and HTTP/1.1 header-case preservation.

mod support;

use support::{Mesh, free_port, poll, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn ingress_forwards_to_the_app_and_serves_the_health_path() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let app = upstream("payments-app").await;
    let ingress = free_port();
    let d = format!(
        "service: payments\nport: {app}\ningress: {{ port: {ingress}, health_path: /healthz }}\n"
    );
    mesh.sidecar("payments-1", &d, 1).await;
    for path in ["/", "/api/pay", "/healthz"] {
        let url = format!("http://127.0.0.1:{ingress}{path}");
        assert!(
            poll(|| async {
                match mesh.http.get(&url).send().await {
                    Ok(r) => {
                        r.status() == 200 && r.text().await.unwrap_or_default() == "payments-app"
                    }
                    Err(_) => false,
                }
            })
            .await,
            "{url} reaches the app"
        );
    }
}

/// A raw TCP upstream that answers 200 with the request head it received, verbatim.
async fn echo_head_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nX-Upstream-Said: Hi\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    head.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.write_all(&head).await;
            });
        }
    });
    port
}

async fn raw_get(port: u16) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.write_all(
        b"GET /x HTTP/1.1\r\nHost: legacy\r\nX-MiXeD-CaSe: yes\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn header_case_is_preserved_when_the_service_asks_for_it() {
    let legacy = echo_head_upstream().await;
    let mut mesh = Mesh::start(|_, _| {}).await;
    mesh.register("legacy-1", "legacy", legacy, &[], 1).await;
    for (id, preserve) in [("monolith-1", true), ("modern-1", false)] {
        let egress = free_port();
        let service = id.trim_end_matches("-1");
        let d = format!(
            "service: {service}\nport: {}\ningress: {{ port: {} }}\negress: {{ port: {egress} }}\npreserve_header_case: {preserve}\ndependencies:\n  - service: legacy\n",
            free_port(),
            free_port()
        );
        mesh.sidecar(id, &d, 2).await;
        assert!(poll(|| async { raw_get(egress).await.starts_with("HTTP/1.1 200") }).await);
        let response = raw_get(egress).await;
        assert_eq!(
            response.contains("X-MiXeD-CaSe: yes"),
            preserve,
            "request header as the app wrote it: {response}"
        );
        // Responses keep the upstream's case either way: every cluster records it.
        assert!(
            response.contains("X-Upstream-Said: Hi"),
            "response header as the upstream wrote it: {response}"
        );
        if !preserve {
            assert!(response.contains("x-mixed-case: yes"), "{response}");
        }
    }
}
