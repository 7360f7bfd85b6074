//! gRPC unary latency through two sidecars against the same calls made directly: a client
//! on `orders`' host calls `payments` (`protocol: grpc`) through orders' egress port, so each
//! call crosses the caller's Envoy, HTTP/2 over mTLS, and the callee's Envoy; the direct calls
//! go from the same client to the same gRPC server. One HTTP/2 connection each (as a gRPC
//! channel), calls one after the other, paced.
//!
//!     cargo bench -p meshplane --bench envoy_grpc
//!     cargo bench -p meshplane --bench envoy_grpc -- --rate 250 --seconds 6 --rounds 3
//!
//! The server is a minimal gRPC server over h2c (hyper): it answers each call with the
//! request's message and `grpc-status: 0`, and the standard health check with SERVING (the
//! callee's sidecar checks it). The client checks every answer (HTTP 200, `grpc-status: 0`,
//! the message echoed); a call that fails is counted, not timed. The rounds alternate which
//! path runs first. Per path: p50 and p99 of the client's latency; for the mesh, the CPU time
//! of each Envoy per call (`/proc/<pid>/stat`). The control plane runs in this process, the
//! two `meshplane sidecar` processes are the binary built with this bench, running the real
//! Envoy (`MESHPLANE_ENVOY`, `PATH`, or `.tools/envoy`); every process started is reaped.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshplane_runtime::control_plane;
use support::{
    DEADLINE, LoadArgs, Sidecar, clock_ticks, cpu_ticks, free_port, load_average, loopback_config,
    machine, quantile, spread, us,
};
use tokio_util::sync::CancellationToken;

/// Sidecar processes, CPU time, quantiles (shared with the observability benchmark).
mod support;

/// The method called; the server answers any path but the health check the same way.
const METHOD: &str = "/meshplane.bench.Echo/Unary";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
/// The request message's payload (the answer carries it back).
const PAYLOAD: &[u8] = b"0123456789abcdef0123456789abcdef";

fn main() {
    support::block_on(run(LoadArgs::parse()));
}

/// A gRPC message: the 5-byte prefix (not compressed, length) and `payload`.
fn frame(payload: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(5 + payload.len());
    message.push(0);
    message.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    message.extend_from_slice(payload);
    message.into()
}

type Body = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// The gRPC server: the request's message back, or SERVING to the health check.
async fn answer(req: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let health = req.uri().path() == HEALTH;
    let message = req.into_body().collect().await?.to_bytes();
    // HealthCheckResponse { status: SERVING }: field 1, varint 1.
    let message = if health {
        frame(&[0x08, 0x01])
    } else {
        message
    };
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("header value"));
    let frames = vec![Ok(Frame::data(message)), Ok(Frame::trailers(trailers))];
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .expect("response"))
}

/// Serves gRPC over h2c on 127.0.0.1; its port.
async fn server(shutdown: CancellationToken) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(answer)),
            );
        }
    });
    port
}

/// One HTTP/2 connection to `port`, calling with `authority` (a gRPC channel's).
struct Channel {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Channel {
    /// `None` while nothing listens there (an Envoy not configured yet).
    async fn connect(port: u16, authority: &str) -> Option<Channel> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        tcp.set_nodelay(true).ok()?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .ok()?;
        tokio::spawn(connection);
        Some(Channel {
            sender,
            authority: authority.to_owned(),
        })
    }

    /// One unary call; whether it succeeded (HTTP 200, `grpc-status: 0`, the message back).
    async fn call(&mut self) -> bool {
        let message = frame(PAYLOAD);
        let req = Request::post(format!("http://{}{METHOD}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(message.clone()))
            .expect("request");
        let Ok(()) = self.sender.ready().await else {
            return false;
        };
        let Ok(response) = self.sender.send_request(req).await else {
            return false;
        };
        let ok_status = response.status() == 200;
        let Ok(body) = response.into_body().collect().await else {
            return false;
        };
        let status = body
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.as_bytes().to_vec());
        ok_status && status.as_deref() == Some(b"0") && body.to_bytes() == message
    }

    /// `rate` calls a second, one at a time, for `length`: each one's latency, and how many
    /// failed.
    async fn load(&mut self, rate: u32, length: Duration) -> (Vec<Duration>, u64) {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let end = Instant::now() + length;
        let (mut latencies, mut failed) = (Vec::new(), 0);
        while Instant::now() < end {
            tick.tick().await;
            let start = Instant::now();
            if self.call().await {
                latencies.push(start.elapsed());
            } else {
                failed += 1;
            }
        }
        (latencies, failed)
    }
}

/// What one run of one path measured.
struct Run {
    calls: u64,
    failed: u64,
    p50: Duration,
    p99: Duration,
    /// Envoy CPU per call (µs): caller's, callee's; 0 for the direct path.
    caller_us: f64,
    callee_us: f64,
}

async fn run(args: LoadArgs) {
    let envoy = meshplane_test_support::envoy::envoy_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    println!("machine: {}", machine());
    let cp = control_plane::start(loopback_config(&dir.path().join("data")), shutdown.clone())
        .await
        .expect("control plane starts");
    let app = server(shutdown.clone()).await;
    let payments = format!(
        "service: payments\nport: {app}\nprotocol: grpc\ningress: {{ port: {} }}\n",
        free_port()
    );
    let egress = free_port();
    let orders = format!(
        "service: orders\nport: {}\ningress: {{ port: {} }}\negress: {{ port: {egress} }}\ndependencies:\n  - service: payments\n",
        free_port(),
        free_port()
    );
    let callee = Sidecar::spawn(&envoy, dir.path(), &cp, "payments-1", &payments).await;
    let caller = Sidecar::spawn(&envoy, dir.path(), &cp, "orders-1", &orders).await;

    let mut direct = Channel::connect(app, &format!("127.0.0.1:{app}"))
        .await
        .expect("the gRPC server listens");
    assert!(direct.call().await, "the gRPC server answers directly");
    let end = Instant::now() + DEADLINE;
    let mut mesh = loop {
        if let Some(mut channel) = Channel::connect(egress, "payments").await
            && channel.call().await
        {
            break channel;
        }
        assert!(
            Instant::now() < end,
            "orders never reached payments; logs in {}",
            dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Warm-up: connections, TLS sessions, first-use statistics.
    direct.load(args.rate, Duration::from_secs(1)).await;
    mesh.load(args.rate, Duration::from_secs(1)).await;

    // Calls that failed as orders' Envoy counts them (the waiting above made some).
    let failed_before = stat(caller.admin, "cluster.payments.grpc.failure").await;
    let ticks = clock_ticks();
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        for path in [round % 2, (round + 1) % 2] {
            let channel = if path == 0 { &mut direct } else { &mut mesh };
            let before = [cpu_ticks(caller.envoy_pid), cpu_ticks(callee.envoy_pid)];
            let (mut latencies, failed) = channel
                .load(args.rate, Duration::from_secs(args.seconds))
                .await;
            let after = [cpu_ticks(caller.envoy_pid), cpu_ticks(callee.envoy_pid)];
            let calls = latencies.len() as u64;
            let per_call =
                |k: usize| (after[k] - before[k]) as f64 / ticks * 1e6 / (calls + failed) as f64;
            latencies.sort();
            runs[path].push(Run {
                calls,
                failed,
                p50: quantile(&latencies, 0.50),
                p99: quantile(&latencies, 0.99),
                caller_us: if path == 1 { per_call(0) } else { 0.0 },
                callee_us: if path == 1 { per_call(1) } else { 0.0 },
            });
            eprintln!("round {} path {path}: {calls} calls", round + 1);
        }
    }
    report(&runs);
    let handshakes = stat(caller.admin, "cluster.payments.ssl.handshake").await;
    let connections = stat(caller.admin, "cluster.payments.upstream_cx_total").await;
    let grpc_ok = stat(caller.admin, "cluster.payments.grpc.0").await;
    let failed_after = stat(caller.admin, "cluster.payments.grpc.failure").await;
    println!();
    println!(
        "checks: orders → payments connections {connections}, mTLS handshakes {handshakes}; orders' Envoy counted {grpc_ok} gRPC calls OK, failed calls {failed_before} before the runs and {failed_after} after; load average after {}",
        load_average()
    );
    drop(caller);
    drop(callee);
    shutdown.cancel();
}

/// One statistic of an Envoy's admin (for the checks line).
async fn stat(admin: u16, name: &str) -> String {
    let url = format!("/stats?filter={name}");
    let body = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(connection);
        let req = Request::get(url)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let response = sender.send_request(req).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let prefix = format!("{name}: ");
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            // Envoy creates a counter when first counted.
            .or_else(|| Some("0".to_owned()))
    };
    body.await.unwrap_or_else(|| "?".to_owned())
}

fn report(runs: &[Vec<Run>; 2]) {
    println!();
    println!(
        "| path | calls (failed) | latency p50 / p99 (µs) | added p50 / p99 vs direct (µs) | CPU per call, caller's Envoy (µs) | callee's Envoy (µs) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let direct = &runs[0];
    for (name, rs) in ["direct", "through two sidecars (mTLS)"].iter().zip(runs) {
        let col = |f: &dyn Fn(&Run) -> f64| spread(rs.iter().map(f).collect());
        let added = |f: &dyn Fn(&Run) -> f64| {
            spread(rs.iter().zip(direct).map(|(r, d)| f(r) - f(d)).collect())
        };
        let calls: u64 = rs.iter().map(|r| r.calls).sum();
        let failed: u64 = rs.iter().map(|r| r.failed).sum();
        println!(
            "| {name} | {calls} ({failed}) | {} / {} | {} / {} | {} | {} |",
            col(&|r| us(r.p50)),
            col(&|r| us(r.p99)),
            added(&|r| us(r.p50)),
            added(&|r| us(r.p99)),
            col(&|r| r.caller_us),
            col(&|r| r.callee_us),
        );
    }
    println!();
    println!("Each cell: median over the rounds (min–max).");
}
