//! When to restart a crashed Envoy, and when to stop trying: exponential backoff and a
//! sliding window of crashes. Pure: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::CrashPolicy;

/// Exponential backoff: `initial`, doubling on each attempt, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.attempt = self.attempt.saturating_add(1);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Counts crashes in a sliding window and says when there were too many.
#[derive(Debug, Clone)]
pub struct CrashWindow {
    policy: CrashPolicy,
    crashes: VecDeque<Instant>,
    backoff: Backoff,
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCrash {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many crashes in the window: stop.
    GiveUp,
}

impl CrashWindow {
    /// A window applying `policy`.
    pub fn new(policy: CrashPolicy) -> Self {
        CrashWindow {
            policy,
            crashes: VecDeque::new(),
            backoff: Backoff::new(policy.backoff_initial, policy.backoff_max),
        }
    }

    /// Records a crash at `now` and decides.
    pub fn record(&mut self, now: Instant) -> AfterCrash {
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.crashes.pop_front();
        }
        if self.crashes.is_empty() {
            // A quiet window means the last restart worked: start the backoff over.
            self.backoff.reset();
        }
        self.crashes.push_back(now);
        if self.crashes.len() > self.policy.max_crashes as usize {
            AfterCrash::GiveUp
        } else {
            AfterCrash::RestartAfter(self.backoff.next_delay())
        }
    }

    /// Crashes currently in the window.
    pub fn count(&self) -> usize {
        self.crashes.len()
    }
}
