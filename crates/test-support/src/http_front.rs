//! An HTTP front that injects faults a TCP proxy cannot: answers delayed, refused with 429,
//! or replaced with garbage. Put it in front of a registry's HTTP API (plain HTTP/1.1), point
//! the client at [`HttpFront::addr`], and [`HttpFront::set`] the [`Answer`].
//!
//! Every request is forwarded as it came (method, path and query, headers, body) unless the
//! answer in force when it arrives refuses it; an answer is altered by the one in force when
//! it comes back from the target; the front counts the requests it received, so a test can bound a
//! client's request rate under rate limiting. [`crate::fault::FaultProxy`] is the tool for
//! faults below HTTP (hangs, resets, bandwidth).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the front answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Forward the request and its answer unchanged.
    Pass,
    /// Forward, and hold each answer this long before sending it (a slow server).
    Delay(Duration),
    /// Answer every `every`th request (counting from the start) with `429 Too Many Requests`
    /// without forwarding it; forward the others.
    RateLimit {
        /// 2: every other request is refused.
        every: u64,
    },
    /// Forward, and send only the first half of each successful answer's body.
    Truncated,
    /// Forward, and replace each successful answer's body with valid JSON of no shape an API
    /// answers: `[1, "two", {"three": 3}]`.
    WrongShape,
    /// Forward, and send `X-Consul-Index: 1` with each answer (an index going backwards).
    IndexBackwards,
    /// Forward, and replace each successful answer's body with a JSON array this many bytes
    /// long.
    Huge(usize),
}

/// A running HTTP front on 127.0.0.1 (ephemeral port) in front of one target.
#[derive(Debug)]
pub struct HttpFront {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    answer: watch::Sender<Answer>,
    requests: AtomicU64,
    refused: AtomicU64,
    client: reqwest::Client,
}

// === impl HttpFront ===

impl HttpFront {
    /// Starts a front to `target` that passes requests until told otherwise.
    pub async fn start(target: SocketAddr) -> io::Result<HttpFront> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            target,
            answer: watch::channel(Answer::Pass).0,
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            client,
        });
        let router = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(HttpFront { addr, shared, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the answer, from the next request on.
    pub fn set(&self, answer: Answer) {
        self.shared.answer.send_replace(answer);
    }

    /// Requests received since the start, refused ones included.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with 429 since the start.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for HttpFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === the front's handler ===

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let answer = *shared.answer.borrow();
    if let Answer::RateLimit { every } = answer
        && every > 0
        && n % every == 0
    {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::TOO_MANY_REQUESTS, "rate limited (test front)\n").into_response();
    }
    let (status, mut headers, body) = match upstream(&shared, request).await {
        Ok(answered) => answered,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    };
    let ok = status.is_success();
    // An answer is altered by the fault in force when it comes back, not when its request
    // arrived: a blocking query may wait minutes upstream.
    let answer = *shared.answer.borrow();
    let body = match answer {
        Answer::Delay(delay) => {
            tokio::time::sleep(delay).await;
            body
        }
        Answer::Truncated if ok => body.slice(..body.len() / 2),
        Answer::WrongShape if ok => Bytes::from_static(b"[1, \"two\", {\"three\": 3}]"),
        Answer::IndexBackwards => {
            headers.insert("x-consul-index", HeaderValue::from_static("1"));
            body
        }
        Answer::Huge(size) if ok => huge(size),
        _ => body,
    };
    headers.remove("content-length");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Sends `request` on to the target; its status, headers and whole body.
async fn upstream(
    shared: &Shared,
    request: Request,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{}{path}", shared.target);
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    let mut headers = parts.headers;
    headers.remove("host");
    let response = shared
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, headers, body))
}

/// A valid JSON array of `size` bytes (at least `[0]`): `[0,0,…,0]`, padded with a space.
fn huge(size: usize) -> Bytes {
    let mut body = Vec::with_capacity(size.max(3));
    body.push(b'[');
    while body.len() + 4 <= size {
        body.extend_from_slice(b"0,");
    }
    body.push(b'0');
    let padded = size.saturating_sub(1).max(body.len());
    body.resize(padded, b' ');
    body.push(b']');
    Bytes::from(body)
}

#[cfg(test)]
mod tests;
