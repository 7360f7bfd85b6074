//! Waiting for a condition with a deadline, and holding one for a whole fault window: how
//! tests synchronise with servers and processes, never with bare sleeps.
//!
//! A check reports an [`Observation`]: `Some(v)`/`Ok(v)`/`true` when the condition holds,
//! `None`/`Err(seen)`/`false` when it does not. Return `Err` with what was seen (a status, a
//! count, a body): that text is what a failing test prints.
//!
//! - [`eventually`] (async), [`eventually_blocking`] (sync tests) and [`eventually_watch`]
//!   (a `tokio::sync::watch` value, woken on change rather than polled) wait until a check
//!   holds and return its value, or panic with the description and the last thing seen.
//!   [`try_eventually`] returns the [`Timeout`] instead, for harnesses with their own errors.
//! - [`hold`] re-checks an assertion continuously for a whole window (while a fault is
//!   injected) and panics on the first violation with what was seen and when;
//!   [`hold_during`] does so for as long as a future runs (a restart and the storm after it).
//! - [`fault_window`] is how long a fault lasts: `MESHPLANE_FAULT_WINDOW` (`3s`, `2m`;
//!   minutes for a soak), [`DEFAULT_FAULT_WINDOW`] otherwise.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The variable that sets [`fault_window`].
pub const FAULT_WINDOW_VAR: &str = "MESHPLANE_FAULT_WINDOW";

/// The fault window when `MESHPLANE_FAULT_WINDOW` is unset: long enough for retries, backoff
/// and keepalives to act a few times, short enough for CI.
pub const DEFAULT_FAULT_WINDOW: Duration = Duration::from_secs(3);

/// First pause between attempts of `eventually`: short, so a wait ends soon after the
/// condition holds.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// Longest pause between attempts: pauses double up to this, so a slow condition (Envoy
/// converging) is not hammered with requests.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Pause between checks of [`hold`]: a violation shorter than this may go unseen.
const HOLD_INTERVAL: Duration = Duration::from_millis(10);

/// What a check reports: the condition holds (with a value), or not yet (with what was seen).
pub trait Observation {
    /// What the wait returns once the condition holds.
    type Value;
    /// `Ok(value)` when the condition holds, `Err(what was seen)` otherwise.
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Observation for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition was false".to_owned())
        }
    }
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet (None)".to_owned())
    }
}

impl<T, E: fmt::Display> Observation for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    /// What was waited for.
    pub what: String,
    /// How long the wait lasted.
    pub waited: Duration,
    /// What the last check saw.
    pub last: String,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}; last seen: {}",
            self.waited, self.what, self.last
        )
    }
}

impl std::error::Error for Timeout {}

/// An assertion stopped holding during its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The assertion.
    pub what: String,
    /// When in the window it failed.
    pub at: Duration,
    /// The whole window.
    pub window: Duration,
    /// Checks that passed before this one.
    pub passed: u64,
    /// What the failing check saw.
    pub seen: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` stopped holding {:?} into the {:?} window (after {} passing checks): {}",
            self.what, self.at, self.window, self.passed, self.seen
        )
    }
}

impl std::error::Error for Violation {}

/// Calls `check` until it holds and returns its value, or fails with the last observation
/// once `within` has passed. The check always runs at least once.
pub async fn try_eventually<C, Fut>(
    what: &str,
    within: Duration,
    mut check: C,
) -> Result<<Fut::Output as Observation>::Value, Timeout>
where
    C: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let last = match check().await.into_result() {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        let waited = start.elapsed();
        if waited >= within {
            return Err(Timeout {
                what: what.to_owned(),
                waited,
                last,
            });
        }
        tokio::time::sleep(pause.min(within - waited)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Calls `check` until it holds and returns its value; panics with `what` and the last
/// observation once `within` has passed.
pub async fn eventually<C, Fut>(
    what: &str,
    within: Duration,
    check: C,
) -> <Fut::Output as Observation>::Value
where
    C: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    match try_eventually(what, within, check).await {
        Ok(value) => value,
        Err(timeout) => panic!("{timeout}"),
    }
}

/// [`eventually`] for synchronous tests: sleeps the thread between checks. Never call it
/// from async code, where it would block the runtime the condition may depend on.
pub fn eventually_blocking<O: Observation>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> O,
) -> O::Value {
    let start = std::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let last = match check().into_result() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        let waited = start.elapsed();
        if waited >= within {
            panic!(
                "{}",
                Timeout {
                    what: what.to_owned(),
                    waited,
                    last
                }
            );
        }
        std::thread::sleep(pause.min(within - waited));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Waits until `check` holds for the value in `rx` (checked now and on every change, not
/// polled) and returns its result; panics with `what` and the last observation after
/// `within`, or when the sender is gone.
pub async fn eventually_watch<T, O: Observation>(
    rx: &mut watch::Receiver<T>,
    what: &str,
    within: Duration,
    mut check: impl FnMut(&T) -> O,
) -> O::Value {
    let mut last = "no value checked".to_owned();
    let mut found = None;
    let waited = tokio::time::timeout(
        within,
        rx.wait_for(|value| match check(value).into_result() {
            Ok(v) => {
                found = Some(v);
                true
            }
            Err(seen) => {
                last = seen;
                false
            }
        }),
    )
    .await;
    match (waited, found) {
        (Ok(Ok(_)), Some(value)) => value,
        (Ok(_), _) => {
            panic!("waiting for {what}: the watched value's sender is gone; last seen: {last}")
        }
        (Err(_), _) => panic!(
            "{}",
            Timeout {
                what: what.to_owned(),
                waited: within,
                last
            }
        ),
    }
}

/// Runs `check` continuously (every few milliseconds, each run awaited) for the whole
/// `window`, and fails on the first run that does not hold, with what it saw and when.
/// Returns how many checks passed, which is at least one (the last check starts once the
/// window has passed).
pub async fn try_hold<C, Fut>(window: Duration, what: &str, mut check: C) -> Result<u64, Violation>
where
    C: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    let start = Instant::now();
    let mut passed = 0;
    loop {
        let at = start.elapsed();
        if let Err(seen) = check().await.into_result() {
            return Err(Violation {
                what: what.to_owned(),
                at,
                window,
                passed,
                seen,
            });
        }
        passed += 1;
        if at >= window {
            return Ok(passed);
        }
        tokio::time::sleep(HOLD_INTERVAL.min(window - at)).await;
    }
}

/// [`try_hold`] that panics on the violation: asserts `what` holds for the whole `window`.
pub async fn hold<C, Fut>(window: Duration, what: &str, check: C) -> u64
where
    C: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    match try_hold(window, what, check).await {
        Ok(passed) => passed,
        Err(violation) => panic!("{violation}"),
    }
}

/// [`hold`] for as long as `during` runs rather than for a fixed window: re-checks `what`
/// continuously while `during` (a fault and the recovery it sets off, whose length is itself
/// what is measured) runs, once more after it ends, and panics on the first run that does
/// not hold. Returns `during`'s output and how many checks passed (at least one).
pub async fn hold_during<D, C, Fut>(during: D, what: &str, mut check: C) -> (D::Output, u64)
where
    D: Future,
    C: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Observation,
{
    let start = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let during = async {
        let output = during.await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        output
    };
    let checking = async {
        let mut passed = 0;
        loop {
            let last = done.load(std::sync::atomic::Ordering::SeqCst);
            if let Err(seen) = check().await.into_result() {
                let at = start.elapsed();
                let violation = Violation {
                    what: what.to_owned(),
                    at,
                    window: at,
                    passed,
                    seen,
                };
                panic!("{violation}");
            }
            passed += 1;
            if last {
                return passed;
            }
            tokio::time::sleep(HOLD_INTERVAL).await;
        }
    };
    tokio::join!(during, checking)
}

/// How long a test keeps a fault injected: `MESHPLANE_FAULT_WINDOW` (`3s`, `2m`, `1m30s`),
/// else [`DEFAULT_FAULT_WINDOW`]. Panics, naming the variable, on a malformed value, so a
/// soak run never silently falls back to the short default.
pub fn fault_window() -> Duration {
    let value = std::env::var_os(FAULT_WINDOW_VAR);
    let text = value.as_ref().map(|v| {
        v.to_str()
            .unwrap_or_else(|| panic!("{FAULT_WINDOW_VAR} is not UTF-8: {v:?}"))
    });
    parse_fault_window(text).unwrap_or_else(|e| panic!("{e}"))
}

/// [`fault_window`] for a given value of the variable (`None`: unset).
pub fn parse_fault_window(value: Option<&str>) -> Result<Duration, String> {
    let Some(text) = value else {
        return Ok(DEFAULT_FAULT_WINDOW);
    };
    match meshplane_model::descriptor::parse_duration(text) {
        Ok(window) if window > Duration::ZERO => Ok(window),
        Ok(_) => Err(format!(
            "{FAULT_WINDOW_VAR}=`{text}`: the fault window must be longer than zero"
        )),
        Err(e) => Err(format!("{FAULT_WINDOW_VAR}: {e}")),
    }
}

#[cfg(test)]
mod tests;
