//! One blocking-query loop: request, apply Consul's index rules, hand the result over, and
//! never spin — requests are spaced by a minimum interval, and errors back off with jitter.

use std::{sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use tokio::{
    sync::{Semaphore, mpsc},
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use crate::{Backoff, ConsulClient, ConsulConfig, ConsulError, next_index};

/// Timing knobs shared by every watch of one source.
#[derive(Clone, Debug)]
pub struct Timing {
    pub min_request_interval: Duration,
    pub min_retry: Duration,
    pub max_retry: Duration,
}

/// One request's outcome: the body and `X-Consul-Index`.
pub type Answer<T> = Result<(T, u64), ConsulError>;

/// Turns an outcome into the coordinator's message type.
pub type Convert<T, U> = Box<dyn Fn(Answer<T>) -> U + Send>;

/// Where a watch's results go.
pub struct Deliver<T, U> {
    pub tx: mpsc::Sender<U>,
    pub convert: Convert<T, U>,
}

// === impl Timing ===

impl From<&ConsulConfig> for Timing {
    fn from(c: &ConsulConfig) -> Self {
        Self {
            min_request_interval: c.min_request_interval,
            min_retry: c.min_retry,
            max_retry: c.max_retry,
        }
    }
}

/// Runs until `shutdown` is cancelled or the receiver is gone. When `permits` is given, each
/// request holds one for its duration — that is what bounds the number of connections.
pub async fn run<T: DeserializeOwned, U>(
    client: ConsulClient,
    path: String,
    timing: Timing,
    permits: Option<Arc<Semaphore>>,
    wait: Duration,
    deliver: Deliver<T, U>,
    shutdown: CancellationToken,
) {
    let decode: fn(&[u8]) -> Result<T, serde_json::Error> = |body| serde_json::from_slice(body);
    run_with(
        client, path, decode, timing, permits, wait, deliver, shutdown,
    )
    .await;
}

/// [`run`], each answer read by `decode` (see [`ConsulClient::get_with`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_with<T, U>(
    client: ConsulClient,
    path: String,
    decode: fn(&[u8]) -> Result<T, serde_json::Error>,
    timing: Timing,
    permits: Option<Arc<Semaphore>>,
    wait: Duration,
    deliver: Deliver<T, U>,
    shutdown: CancellationToken,
) {
    let mut index = 0u64;
    let mut backoff = Backoff::new(timing.min_retry, timing.max_retry);
    let mut next_request = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep_until(next_request) => {}
        }
        let permit = match &permits {
            Some(p) => tokio::select! {
                () = shutdown.cancelled() => return,
                permit = p.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                },
            },
            None => None,
        };
        let started = Instant::now();
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = client.get_with(&path, index, wait, decode) => result,
        };
        drop(permit);
        next_request = started + timing.min_request_interval;
        match &result {
            Ok((_, returned)) => {
                let sent = index;
                index = next_index(sent, *returned);
                if index == 0 {
                    tracing::info!(%path, sent, returned, "Consul index went backwards; re-reading from scratch");
                }
                backoff.reset();
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::debug!(%path, error = %e, ?delay, "Consul request failed; retrying");
                next_request = Instant::now() + delay;
            }
        }
        let update = (deliver.convert)(result);
        if deliver.tx.send(update).await.is_err() {
            return;
        }
    }
}
