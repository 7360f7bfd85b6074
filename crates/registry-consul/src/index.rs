//! Consul's blocking-query index rules and retry backoff, as pure functions.

use std::{
    hash::{BuildHasher, RandomState},
    time::{Duration, Instant},
};

/// The index to send next, given the one sent and the `X-Consul-Index` returned:
/// - an index that went backwards (Consul restored a snapshot, a different server answered,
///   the registry was reset) resets to 0, so the next query returns at once with fresh data;
/// - an index below 1 is treated as 1, since blocking on 0 returns immediately and would spin.
pub fn next_index(sent: u64, returned: u64) -> u64 {
    if returned < sent { 0 } else { returned.max(1) }
}

/// Exponential backoff with full jitter: each delay is random in `[d/2, d]`, where `d` doubles
/// from `min` up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `min`, capped at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_millis() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            RandomState::new().hash_one(Instant::now()) % (spread + 1)
        };
        half + Duration::from_millis(jitter)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules_follow_consul_docs() {
        assert_eq!(next_index(0, 10), 10);
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 10), 10);
        assert_eq!(next_index(12, 5), 0, "went backwards: reset");
        assert_eq!(next_index(0, 0), 1, "never block on 0");
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(Duration::from_millis(1000));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
