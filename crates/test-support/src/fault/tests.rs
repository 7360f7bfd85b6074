//! Each fault through the proxy against a real TCP server on 127.0.0.1.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

/// Long enough to tell "no answer" from a slow answer on a loaded machine.
const SILENCE: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(5);

/// A server that echoes everything back.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let (mut rx, mut tx) = stream.split();
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
            });
        }
    });
    (addr, task)
}

/// A server that sends `len` bytes to each client, then closes.
async fn source_server(len: usize) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let _ = stream.write_all(&vec![7u8; len]).await;
            });
        }
    });
    (addr, task)
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    TcpStream::connect(proxy.addr()).await.expect("connect")
}

/// A proxy in front of an echo server and a connection through it that has carried data:
/// the proxy, the connection and the server's task.
async fn open_through_proxy() -> (FaultProxy, TcpStream, JoinHandle<()>) {
    let (echo, server) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.expect("proxy");
    let mut open = connect(&proxy).await;
    assert_eq!(round_trip(&mut open, "ping").await, "ping");
    (proxy, open, server)
}

/// Sends `text` and reads the echo.
async fn round_trip(stream: &mut TcpStream, text: &str) -> String {
    stream.write_all(text.as_bytes()).await.expect("write");
    read_exactly(stream, text.len()).await
}

async fn read_exactly(stream: &mut TcpStream, len: usize) -> String {
    let mut buf = vec![0u8; len];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8(buf).expect("utf-8")
}

/// Asserts nothing arrives for a while, and that the connection is still open.
async fn expect_silence(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    if let Ok(read) = tokio::time::timeout(SILENCE, stream.read(&mut buf)).await {
        panic!("expected silence on an open connection, got {read:?}");
    }
}

/// The next read: `Ok(0)` for a close, or the error.
async fn next_read(stream: &mut TcpStream) -> std::io::Result<usize> {
    let mut buf = [0u8; 64];
    tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("the connection ends in time")
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts_connections() {
    let (echo, _server) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.expect("proxy");
    assert_eq!(proxy.target(), echo);
    assert_eq!(proxy.fault(), Fault::Pass);
    let mut a = connect(&proxy).await;
    let mut b = connect(&proxy).await;
    assert_eq!(round_trip(&mut a, "ping").await, "ping");
    assert_eq!(round_trip(&mut b, "pong").await, "pong");
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(proxy.peak_open(), 2);
    // Closed connections leave the open count; the peak stays.
    drop((a, b));
    crate::poll::eventually("both connections closed", Duration::from_secs(5), || {
        std::future::ready(if proxy.open() == 0 {
            Ok(())
        } else {
            Err(format!("{} open", proxy.open()))
        })
    })
    .await;
    let mut c = connect(&proxy).await;
    assert_eq!(round_trip(&mut c, "again").await, "again");
    assert_eq!((proxy.open(), proxy.peak_open()), (1, 2));
}

#[tokio::test]
async fn delay_holds_each_chunk_in_each_direction() {
    let (echo, _server) = echo_server().await;
    let proxy = FaultProxy::start(echo).await.expect("proxy");
    let mut stream = connect(&proxy).await;
    assert_eq!(round_trip(&mut stream, "warm").await, "warm");
    let delay = Duration::from_millis(100);
    proxy.set(Fault::Delay(delay));
    let start = Instant::now();
    assert_eq!(round_trip(&mut stream, "slow").await, "slow");
    let took = start.elapsed();
    assert!(took >= 2 * delay, "a round trip took {took:?}");
    proxy.set(Fault::Pass);
    let start = Instant::now();
    assert_eq!(round_trip(&mut stream, "fast").await, "fast");
    assert!(
        start.elapsed() < delay,
        "the delay is lifted on the open connection"
    );
}

#[tokio::test]
async fn drop_closes_open_connections_and_new_ones() {
    let (proxy, mut open, _server) = open_through_proxy().await;
    proxy.set(Fault::Drop);
    assert_eq!(next_read(&mut open).await.expect("a clean close"), 0);
    let mut new = connect(&proxy).await;
    assert_eq!(next_read(&mut new).await.expect("a clean close"), 0);
    assert_eq!(proxy.accepted(), 2, "dropped connections are counted");
}

#[tokio::test]
async fn black_hole_accepts_and_never_answers_until_lifted() {
    let (proxy, mut open, _server) = open_through_proxy().await;

    proxy.set(Fault::BlackHole);
    open.write_all(b"held").await.expect("write");
    expect_silence(&mut open).await;
    let mut new = connect(&proxy).await;
    new.write_all(b"also").await.expect("write");
    expect_silence(&mut new).await;
    assert_eq!(proxy.accepted(), 2);

    // Both connections were open all along: lifting the fault delivers what was held.
    proxy.set(Fault::Pass);
    assert_eq!(read_exactly(&mut open, 4).await, "held");
    assert_eq!(read_exactly(&mut new, 4).await, "also");
}

#[tokio::test]
async fn reset_sends_rst_to_open_and_new_connections() {
    let (proxy, mut open, _server) = open_through_proxy().await;
    proxy.set(Fault::Reset);
    let err = next_read(&mut open).await.expect_err("a reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let mut new = connect(&proxy).await;
    let err = next_read(&mut new).await.expect_err("a reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn bandwidth_caps_the_transfer_rate() {
    let len = 96 * 1024;
    let rate = 64 * 1024;
    let (source, _server) = source_server(len).await;
    let proxy = FaultProxy::start(source).await.expect("proxy");
    proxy.set(Fault::Bandwidth(rate));
    let mut stream = connect(&proxy).await;
    let start = Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received))
        .await
        .expect("the transfer ends")
        .expect("read");
    let took = start.elapsed();
    assert_eq!(received.len(), len);
    // 1.5 s at the cap; without it, well under 100 ms.
    assert!(
        took >= Duration::from_millis(1300),
        "96 KiB at 64 KiB/s took {took:?}"
    );
}

#[tokio::test]
async fn dropping_the_proxy_closes_the_listener_and_connections() {
    let (proxy, mut open, _server) = open_through_proxy().await;
    let addr = proxy.addr();
    drop(proxy);
    assert_eq!(next_read(&mut open).await.expect("a clean close"), 0);
    let refused = crate::poll::try_eventually("the listener to close", WAIT, || async {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("connect: {other:?}")),
        }
    })
    .await;
    assert!(refused.is_ok(), "{refused:?}");
}
