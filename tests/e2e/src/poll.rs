//! Waiting for a condition with a deadline: the only way tests synchronise with Envoy.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a test waits for Envoy to converge before failing. Generous for a loaded
/// 2-core CI machine; a passing test never waits this long.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// Pause between attempts: short, so the wait ends soon after the condition holds.
const INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok`, or fails with [`Error::Timeout`] after `timeout`.
/// `check` returns `Err(observation)` while the condition does not hold; the last
/// observation is reported on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(observation) => observation,
        };
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited_ms: start.elapsed().as_millis(),
                last,
            });
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
