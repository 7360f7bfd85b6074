//! Waiting for a condition with a deadline: the only way tests synchronise with Envoy. The
//! polling itself is `meshplane-test-support`'s; this adds the harness's error type.

use std::future::Future;
use std::time::Duration;

use meshplane_test_support::poll::try_eventually;

use crate::error::Result;

/// How long a test waits for Envoy to converge before failing. Generous for a loaded
/// 2-core CI machine; a passing test never waits this long.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// Calls `check` until it returns `Ok`, or fails with [`Error::Timeout`](crate::Error::Timeout)
/// after `timeout`. `check` returns `Err(observation)` while the condition does not hold; the
/// last observation is reported on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    Ok(try_eventually(what, timeout, check).await?)
}
